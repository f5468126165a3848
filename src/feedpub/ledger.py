"""The delivery ledger: one row per message to send, and the only place rows change state.

    pending ──claim──▶ sending ──accepted──▶ sent
       ▲               (leased)  │
       │                         ├──reply about the reader, 4xx──▶ retry ──(later)──▶ sending …
       │                         │                                   └──too many attempts──▶ failed
       │                         ├──reply about the reader, 5xx──▶ failed  (5.1.x: the reader bounced)
       └──────────── released ◀──┴──the transport's fault, or the sender stops: no attempt charged

A row is digest copy (an issue for one subscriber) or a confirmation mail. A
sender holds the rows it claimed under a lease that it renews while it lives;
another sender takes a row back only once its lease has expired, so any number
of senders may run on one database without sending a row twice. A row becomes
`sent` only after the server accepted the message, so a sender killed mid-way
resends at most the messages it had in flight.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, text, update
from sqlalchemy.exc import OperationalError

from .groupcommit import GroupCommit
from .store import Store, deliveries, dialect_insert, issues, subscribers, subscriptions

# Waits before the next attempt after a temporary refusal: 1, 5, 15, 60 minutes, then hourly.
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))
LEASE = timedelta(minutes=2)  # renewed every third of it while the sender lives
WAITING = ("pending", "retry", "sending")


@dataclass(frozen=True)
class Job:
    """One message to send: a claimed row and who it goes to."""

    delivery_id: int
    kind: str  # digest | confirm
    issue_id: int | None
    subscriber_id: int
    email: str
    name: str
    list: str  # the issue's list; for a confirmation, the lists asked for, comma-separated
    attempts: int
    message_id: str


@dataclass(frozen=True)
class IssueCounts:
    issue_id: int
    digest: str
    slug: str
    subject: str
    counts: dict[str, int]


def _due(now: datetime):
    """Rows a sender may take: waiting, due for a retry, or held under a lease that expired."""
    c = deliveries.c
    return or_(c.status == "pending", and_(c.status == "retry", c.next_attempt_at <= now),
               and_(c.status == "sending", c.lease_until < now))


def _new_message_id(dialect: str, domain: str):
    """A random Message-ID made by the database, so each row gets its own in the claiming statement."""
    if dialect == "sqlite":
        random = func.lower(func.hex(func.randomblob(16)))
    else:
        random = func.replace(text("gen_random_uuid()::text"), "-", "")
    return literal("<") + random + literal(f"@{domain}>")


def _process_alive(owner: str) -> bool:
    """Whether the sender named OWNER ("host:pid:nonce") still runs on this machine."""
    try:
        os.kill(int(owner.split(":")[1]), 0)
    except (ProcessLookupError, ValueError, IndexError):
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class Ledger:
    """The rows of one state database, seen by one sender (OWNER names it in the leases it takes)."""

    def __init__(self, store: Store, *, max_attempts: int = 5, retry_delays: tuple[timedelta, ...] = RETRY_DELAYS,
                 lease: timedelta = LEASE, domain: str = "localhost", journal: Path | None = None) -> None:
        self.engine = store.engine
        self.max_attempts, self.retry_delays, self.lease, self.domain = max_attempts, retry_delays, lease, domain
        self.owner = f"{os.uname().nodename[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.journal = journal  # accepted messages that could not be recorded yet
        self._write = threading.Lock()  # sending threads record results one at a time
        c = deliveries.c
        statement = (update(deliveries).where(c.id == bindparam("row"))
                     .values(status="sent", sent_at=func.now(), last_reply=bindparam("reply"),
                             attempts=bindparam("attempts"), lease_owner=None, lease_until=None))
        self._mark_sent = GroupCommit(self.engine, statement)

    def close(self) -> None:
        self._mark_sent.close()

    # queueing
    def queue(self, db, issue_id: int, list_name: str) -> int:
        """One pending row per active subscriber of LIST_NAME, in the transaction DB; rows that exist stay."""
        audience = (
            select(literal("digest"), literal(issue_id), subscribers.c.id, literal("pending"), literal(0))
            .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
            .where(subscriptions.c.list == list_name, subscribers.c.status == "active")
        )
        statement = dialect_insert(db)(deliveries).from_select(
            ["kind", "issue_id", "subscriber_id", "status", "attempts"], audience
        ).on_conflict_do_nothing(index_elements=["issue_id", "subscriber_id"])
        return db.execute(statement).rowcount

    @staticmethod
    def queue_confirmation(db, subscriber_id: int, lists: list[str]) -> None:
        """A confirmation mail for LISTS, queued in the transaction that recorded the request."""
        db.execute(deliveries.insert().values(kind="confirm", subscriber_id=subscriber_id, status="pending",
                                              attempts=0, payload=json.dumps({"lists": lists})))

    def repair(self, now: datetime) -> int:
        """Queue the issues an older version stored without rows; the number of rows queued."""
        queued = 0
        with self._write, self.engine.begin() as db:
            for issue_id, list_name in db.execute(select(issues.c.id, issues.c.list)
                                                  .where(issues.c.queued_at.is_(None))).all():
                queued += self.queue(db, issue_id, list_name)
                db.execute(update(issues).where(issues.c.id == issue_id).values(queued_at=now))
        return queued

    # taking and holding rows
    def expired(self, now: datetime) -> int:
        """Rows held under a lease that ran out, or by a sender of this machine that died."""
        with self._write, self.engine.begin() as db:
            self._expire_the_dead(db, now)
            return db.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.status == "sending", deliveries.c.lease_until < now)).scalar()

    def _expire_the_dead(self, db, now: datetime) -> None:
        """End at once the leases of senders on this machine whose process is gone.

        Their rows need not wait for the lease to run out. A sender on another
        machine cannot be seen from here: its lease decides.
        """
        c = deliveries.c
        host = self.owner.split(":")[0]
        owners = db.execute(select(c.lease_owner).distinct()
                            .where(c.status == "sending", c.lease_until >= now, c.lease_owner.like(f"{host}:%"),
                                   c.lease_owner != self.owner)).scalars()
        dead = [owner for owner in owners if not _process_alive(owner)]
        if dead:
            db.execute(update(deliveries).where(c.status == "sending", c.lease_owner.in_(dead))
                       .values(lease_until=now - timedelta(seconds=1)))

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Lease up to LIMIT due rows to this sender; rows whose reader left are skipped."""
        c = deliveries.c
        pick = select(c.id).where(_due(now)).order_by(c.id).limit(limit)
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        # One statement takes the rows, so two senders never both take one.
        take = (update(deliveries).where(c.id.in_(pick.scalar_subquery()), _due(now))
                .values(status="sending", lease_owner=self.owner, lease_until=now + self.lease,
                        message_id=func.coalesce(c.message_id, _new_message_id(self.engine.dialect.name,
                                                                               self.domain)))
                .returning(c.id))
        query = (
            select(c.id, c.kind, c.issue_id, c.subscriber_id, c.attempts, c.message_id, c.payload,
                   subscribers.c.email, subscribers.c.name, subscribers.c.status, issues.c.list,
                   subscriptions.c.list.label("on_list"))
            .join(subscribers, subscribers.c.id == c.subscriber_id)
            .outerjoin(issues, issues.c.id == c.issue_id)
            .outerjoin(subscriptions, and_(subscriptions.c.subscriber_id == c.subscriber_id,
                                           subscriptions.c.list == issues.c.list))
            .order_by(c.id)
        )
        with self._write, self.engine.begin() as db:
            self._expire_the_dead(db, now)
            taken = list(db.execute(take).scalars())
            if not taken:
                return []
            rows = db.execute(query.where(c.id.in_(taken))).all()
            jobs, skipped = [], []
            for r in rows:
                if r.kind == "confirm":
                    wanted = r.status in {"pending", "active"}
                    lists = ",".join(json.loads(r.payload or "{}").get("lists", []))
                else:
                    wanted, lists = r.status == "active" and r.on_list is not None, r.list
                if wanted:
                    jobs.append(Job(r.id, r.kind, r.issue_id, r.subscriber_id, r.email, r.name, lists,
                                    r.attempts, r.message_id))
                else:
                    skipped.append(r.id)
            if skipped:
                db.execute(update(deliveries).where(c.id.in_(skipped))
                           .values(status="skipped", last_reply="no longer subscribed", lease_owner=None,
                                   lease_until=None))
        return jobs

    def renew(self, now: datetime) -> int:
        """Extend the leases this sender holds; the number of rows it still holds."""
        with self._write, self.engine.begin() as db:
            return db.execute(update(deliveries).where(deliveries.c.lease_owner == self.owner,
                                                       deliveries.c.status == "sending")
                              .values(lease_until=now + self.lease)).rowcount

    def release(self, jobs: list[Job]) -> None:
        """Rows this sender took but did not finish go back to the queue, with no attempt charged."""
        if jobs:
            with self._write, self.engine.begin() as db:
                db.execute(update(deliveries).where(deliveries.c.id.in_([j.delivery_id for j in jobs]),
                                                    deliveries.c.lease_owner == self.owner,
                                                    deliveries.c.status == "sending")
                           .values(status="pending", lease_owner=None, lease_until=None))

    # outcomes
    def sent(self, job: Job, reply: str) -> None:
        """The server accepted the message: committed before the thread takes another.

        When the database cannot take the write, the fact is kept in the
        journal, read back by the next sender, and the error is raised.
        """
        try:
            self._mark_sent.write(row=job.delivery_id, reply=reply, attempts=job.attempts + 1)
        except OperationalError:
            if self.journal is not None:
                with self.journal.open("a", encoding="utf-8") as out:
                    out.write(f"{job.delivery_id} {job.attempts + 1}\n")
                    out.flush()
                    os.fsync(out.fileno())
            raise

    def replay_journal(self) -> int:
        """Mark sent the rows a sender saw accepted but could not record; the number of rows."""
        if self.journal is None or not self.journal.exists():
            return 0
        # Taken aside first: a sender appending meanwhile starts a new journal, read next time.
        taken = self.journal.with_name(f"{self.journal.name}.{self.owner.replace(':', '-')}")
        try:
            os.replace(self.journal, taken)
        except FileNotFoundError:
            return 0  # another sender took it
        lines = [line.split() for line in taken.read_text(encoding="utf-8", errors="replace").splitlines()]
        # A line cut short by a crash while it was written is skipped: its row is simply sent again.
        entries = [(int(a), int(b)) for a, b in (p for p in lines if len(p) == 2) if a.isdigit() and b.isdigit()]
        try:
            with self._write, self.engine.begin() as db:
                for row, attempts in entries:
                    db.execute(update(deliveries).where(deliveries.c.id == row)
                               .values(status="sent", sent_at=func.now(), attempts=attempts,
                                       last_reply="accepted", lease_owner=None, lease_until=None))
        except BaseException:
            with self.journal.open("a", encoding="utf-8") as out:  # back, for the next try
                out.write("".join(f"{row} {attempts}\n" for row, attempts in entries))
            taken.unlink()
            raise
        taken.unlink()
        return len(entries)

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
            db.execute(update(deliveries).where(deliveries.c.id == job.delivery_id)
                       .values(lease_owner=None, lease_until=None, **values))

    def retry_failed(self, issue_id: int | None = None) -> int:
        """Put failed rows back in the queue, for readers who still want them; the number of rows."""
        c = deliveries.c
        still_wanted = select(subscribers.c.id).where(subscribers.c.status.in_(["active", "pending"]))
        statement = (update(deliveries)
                     .where(c.status == "failed", c.subscriber_id.in_(still_wanted.scalar_subquery()))
                     .values(status="pending", attempts=0, next_attempt_at=None))
        if issue_id is not None:
            statement = statement.where(c.issue_id == issue_id)
        with self._write, self.engine.begin() as db:
            return db.execute(statement).rowcount

    # reading
    def next_retry(self) -> datetime | None:
        """When the next row comes due: a retry's time, or the expiry of a lease another sender holds."""
        with self.engine.connect() as db:
            retry = db.execute(select(func.min(deliveries.c.next_attempt_at))
                               .where(deliveries.c.status == "retry")).scalar()
            lease = db.execute(select(func.min(deliveries.c.lease_until))
                               .where(deliveries.c.status == "sending",
                                      deliveries.c.lease_owner != self.owner)).scalar()
        return min((t for t in (retry, lease) if t is not None), default=None)

    def waiting(self) -> int:
        """Rows not yet sent, failed or skipped."""
        with self.engine.connect() as db:
            return db.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.status.in_(WAITING))).scalar()

    def counts(self, limit: int = 20) -> list[IssueCounts]:
        """Delivery counts by status for the newest issues."""
        statuses = ("pending", "sending", "sent", "retry", "failed", "skipped", "bounced")
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
