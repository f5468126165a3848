"""The delivery ledger: one row per (issue, subscriber), and the only place rows change state.

    pending ──claim──▶ sending ──accepted──▶ sent
       ▲                  │
       │                  ├──4xx, dropped, timeout──▶ retry ──(later)──▶ sending …
       │                  │                              └──too many attempts──▶ failed
       │                  └──5xx──▶ failed  (5.1.x also marks the subscriber bounced)
       └── rows found in `sending` when a sender starts (it crashed, or was killed)

A row becomes `sent` only after the server accepted the message, one row at a
time, so a crash resends at most the messages that were in flight.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, deliveries, issues, subscribers, subscriptions

# Waits before the next attempt after a temporary failure: 1, 5, 15, 60 minutes, then hourly.
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))


@dataclass(frozen=True)
class Job:
    """One message to send: a claimed delivery row and who it goes to."""

    delivery_id: int
    issue_id: int
    subscriber_id: int
    email: str
    name: str
    list: str
    attempts: int


@dataclass(frozen=True)
class IssueCounts:
    issue_id: int
    digest: str
    slug: str
    subject: str
    counts: dict[str, int]


class _GroupCommit:
    """Marks rows sent, each committed before its sending thread takes another message.

    The statement is compiled once by SQLAlchemy and run on a plain DB-API
    connection: going through SQLAlchemy for every message costs ten times the
    statement itself. Threads that finish while a commit is under way have
    their rows written together by the next commit (a group commit), so a
    commit per message does not become the limit on throughput.
    """

    class _Batch:
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.done = False
            self.error: BaseException | None = None

    def __init__(self, engine, statement) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql, self.order = str(compiled), compiled.positiontup if compiled.positional else None
        self.fixed = dict(compiled.params)  # the statement's literal values
        self.engine, self.connection = engine, None
        self._changed = threading.Condition()
        self._open, self._busy = self._Batch(), False

    def write(self, **params) -> None:
        """Return once the row is committed."""
        with self._changed:
            batch = self._open
            batch.rows.append({**self.fixed, **params})
            while not batch.done:
                if not self._busy:  # lead: commit the open batch, which holds this row
                    self._busy, self._open = True, self._Batch()
                    break
                self._changed.wait()
            else:
                if batch.error:
                    raise batch.error
                return
        try:
            self._commit(batch.rows)
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            with self._changed:
                batch.done, self._busy = True, False
                self._changed.notify_all()

    def _commit(self, rows: list[dict]) -> None:
        if self.connection is None:
            self.connection = self.engine.raw_connection()
        cursor = self.connection.cursor()
        try:
            if self.order:
                cursor.executemany(self.sql, [[row[name] for name in self.order] for row in rows])
            else:
                cursor.executemany(self.sql, rows)
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Ledger:
    def __init__(self, store: Store, *, max_attempts: int = 5,
                 retry_delays: tuple[timedelta, ...] = RETRY_DELAYS) -> None:
        self.engine = store.engine
        self.max_attempts, self.retry_delays = max_attempts, retry_delays
        self._write = threading.Lock()  # sending threads record results one at a time
        statement = (update(deliveries).where(deliveries.c.id == bindparam("row"))
                     .values(status="sent", sent_at=func.now(), last_reply=bindparam("reply"),
                             attempts=bindparam("attempts")))
        self._mark_sent = _GroupCommit(self.engine, statement)

    def close(self) -> None:
        self._mark_sent.close()

    def queue(self, issue_id: int, list_name: str) -> int:
        """One pending row per active subscriber of LIST_NAME, in one statement; rows that exist stay."""
        audience = (
            select(literal(issue_id), subscribers.c.id, literal("pending"), literal(0))
            .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
            .where(subscriptions.c.list == list_name, subscribers.c.status == "active")
        )
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        statement = dialect.insert(deliveries).from_select(
            ["issue_id", "subscriber_id", "status", "attempts"], audience
        ).on_conflict_do_nothing(index_elements=["issue_id", "subscriber_id"])
        with self.engine.begin() as db:
            return db.execute(statement).rowcount

    def recover(self) -> int:
        """Rows left in `sending` by a sender that died: they go out again."""
        with self.engine.begin() as db:
            return db.execute(update(deliveries).where(deliveries.c.status == "sending")
                              .values(status="pending")).rowcount

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Take up to LIMIT due rows for sending; rows whose reader left the list are skipped."""
        due = or_(deliveries.c.status == "pending",
                  and_(deliveries.c.status == "retry", deliveries.c.next_attempt_at <= now))
        query = (
            select(deliveries.c.id, deliveries.c.issue_id, deliveries.c.subscriber_id, deliveries.c.attempts,
                   subscribers.c.email, subscribers.c.name, subscribers.c.status, issues.c.list,
                   subscriptions.c.list.label("on_list"))
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .join(issues, issues.c.id == deliveries.c.issue_id)
            .outerjoin(subscriptions, and_(subscriptions.c.subscriber_id == deliveries.c.subscriber_id,
                                           subscriptions.c.list == issues.c.list))
            .where(due)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        with self._write, self.engine.begin() as db:
            rows = db.execute(query).all()
            jobs = [Job(r.id, r.issue_id, r.subscriber_id, r.email, r.name, r.list, r.attempts)
                    for r in rows if r.status == "active" and r.on_list is not None]
            skipped = [r.id for r in rows if r.status != "active" or r.on_list is None]
            if jobs:
                # The status lock: a row another sender took in the meantime is not taken again.
                taken = set(db.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_([j.delivery_id for j in jobs]),
                           deliveries.c.status.in_(["pending", "retry"]))
                    .values(status="sending")
                    .returning(deliveries.c.id)).scalars())
                jobs = [job for job in jobs if job.delivery_id in taken]
            if skipped:
                db.execute(update(deliveries).where(deliveries.c.id.in_(skipped))
                           .values(status="skipped", last_reply="no longer subscribed"))
        return jobs

    def release(self, jobs: list[Job]) -> None:
        """Claimed rows that were never tried (the sender is stopping) go back to pending."""
        if jobs:
            with self._write, self.engine.begin() as db:
                db.execute(update(deliveries).where(deliveries.c.id.in_([j.delivery_id for j in jobs]),
                                                    deliveries.c.status == "sending").values(status="pending"))

    def sent(self, job: Job, reply: str) -> None:
        """The server accepted the message: committed before the thread takes another."""
        self._mark_sent.write(row=job.delivery_id, reply=reply, attempts=job.attempts + 1)

    def failed(self, job: Job, reply: str, *, bounced: bool, now: datetime) -> None:
        self._set(job, status="failed", last_reply=reply, attempts=job.attempts + 1)
        if bounced:
            with self._write, self.engine.begin() as db:
                db.execute(update(subscribers).where(subscribers.c.id == job.subscriber_id)
                           .values(status="bounced", bounced_at=now))

    def retry(self, job: Job, reply: str, now: datetime) -> str:
        """Schedule another attempt, or fail the row when attempts run out; returns the new status."""
        attempts = job.attempts + 1
        if attempts >= self.max_attempts:
            self._set(job, status="failed", last_reply=f"gave up after {attempts} attempts: {reply}",
                      attempts=attempts)
            return "failed"
        delay = self.retry_delays[min(attempts, len(self.retry_delays)) - 1]
        self._set(job, status="retry", last_reply=reply, attempts=attempts, next_attempt_at=now + delay)
        return "retry"

    def _set(self, job: Job, **values) -> None:
        with self._write, self.engine.begin() as db:
            db.execute(update(deliveries).where(deliveries.c.id == job.delivery_id).values(**values))

    def next_retry(self) -> datetime | None:
        with self.engine.connect() as db:
            return db.execute(select(func.min(deliveries.c.next_attempt_at))
                              .where(deliveries.c.status == "retry")).scalar()

    def waiting(self) -> int:
        """Rows not yet sent, failed or skipped."""
        with self.engine.connect() as db:
            return db.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.status.in_(["pending", "retry", "sending"]))).scalar()

    def counts(self, limit: int = 20) -> list[IssueCounts]:
        """Delivery counts by status for the newest issues."""
        statuses = ("pending", "sending", "sent", "retry", "failed", "skipped")
        columns = [func.sum(case((deliveries.c.status == s, 1), else_=0)).label(s) for s in statuses]
        query = (
            select(issues.c.id, issues.c.digest, issues.c.slug, issues.c.subject, *columns)
            .outerjoin(deliveries, deliveries.c.issue_id == issues.c.id)
            .group_by(issues.c.id, issues.c.digest, issues.c.slug, issues.c.subject)
            .order_by(issues.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as db:
            return [IssueCounts(r.id, r.digest, r.slug, r.subject, {s: int(getattr(r, s) or 0) for s in statuses})
                    for r in db.execute(query)]
