"""Sending what the ledger holds: several connections, a pace, a circuit breaker, clean stops.

The main thread leases batches of due rows; sending threads, each with its own
connection, build each reader's copy, send it and record the outcome before
taking the next. Whose fault a refusal is decides what happens: a reply about
the reader stays on that reader's row; a fault of the server opens the breaker
and every untried row goes back to the queue, charged nothing. A stop request
(SIGTERM) lets every thread finish the message in its hands.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import SQLAlchemyError

from .config import Site
from .dkim import make_signer
from .health import Breaker, Pace
from .ledger import LEASE, Job, Ledger
from .mail import IssueMessage, Letter, Recipient, envelope_address
from .notices import confirmation
from .schedule import Schedule
from .store import Store
from .tokens import Signer, TokenSubject, secret_key
from .transports import (DeliveryFailure, PermanentFailure, TemporaryFailure, Throttled, TransportFault,
                         transport_factory)
from .verp import Verp

UNSUBSCRIBE_PATH = "unsubscribe?token={token}"
JOURNAL_FILE = "accepted.journal"


@dataclass
class SendReport:
    recovered: int = 0  # rows a dead sender had left under an expired lease
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    bounced: int = 0
    stopped: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # what stopped the sender itself
    refusals: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> addresses
    transport_error: str | None = None  # the fault that opened the breaker
    retry_at: datetime | None = None  # ... and when the transport is tried again
    slowed_to: float | None = None  # messages a second, after the server throttled

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Messages:
    """Builds each job's bytes; each issue's message is serialized once and shared by the threads."""

    def __init__(self, site: Site, store: Store, schedule: Schedule | None, signer: Signer, now: datetime) -> None:
        self.site, self.store, self.schedule, self.signer, self.now = site, store, schedule, signer, now
        self._issues: dict[int, IssueMessage] = {}
        self._lock = threading.Lock()

    def _issue(self, issue_id: int) -> IssueMessage:
        with self._lock:
            if issue_id not in self._issues:
                issue = self.store.issue(issue_id)
                digest = self.schedule.digests.get(issue.digest) if self.schedule else None
                letter = Letter(issue.id, issue.digest, digest.title if digest else issue.digest,
                                issue.subject, issue.html, issue.text)
                self._issues[issue_id] = IssueMessage(self.site, letter, date=self.now,
                                                      unsubscribe_url=self.site.url(UNSUBSCRIBE_PATH))
            return self._issues[issue_id]

    def __call__(self, job: Job) -> bytes:
        if job.kind == "confirm":
            lists = [n for n in job.list.split(",") if n]
            token = self.signer.make("confirm", TokenSubject(job.subscriber_id, job.email, job.list))
            return confirmation(self.site, self.schedule, to=job.email, token=token, lists=lists,
                                date=self.now, message_id=job.message_id)
        token = self.signer.make("unsubscribe", TokenSubject(job.subscriber_id, job.email, job.list))
        return self._issue(job.issue_id).render(Recipient(job.subscriber_id, job.email, job.name), token,
                                                job.message_id)


class _Ahead:
    """One sending thread's next job, made into bytes while the server is still answering the last.

    The server's answer to a message's end takes it a few milliseconds (it
    writes the message to disk first); building the next copy in that time
    rather than after it keeps each connection busy.
    """

    _EMPTY = object()

    def __init__(self, jobs: queue.Queue, build: Callable[[Job], bytes]) -> None:
        self.jobs, self.build = jobs, build
        self.job: object = self._EMPTY
        self.data: bytes | None = None

    def prepare(self) -> None:
        if self.job is not self._EMPTY:
            return
        try:
            self.job = self.jobs.get_nowait()
        except queue.Empty:
            return
        if self.job is not None:
            try:
                self.data = self.build(self.job)
            except Exception:  # noqa: BLE001 - its own turn meets the error again, and records it
                self.data = None

    def next(self) -> Job | None:
        if self.job is self._EMPTY:
            return self.jobs.get()
        job, self.job = self.job, self._EMPTY
        return job

    def made_for(self, job: Job) -> bytes | None:
        data, self.data = self.data, None
        return data


class _Unrecorded(Exception):
    """The server accepted a message but the database did not take the fact."""


class _Heartbeat:
    """Renews the sender's leases while it lives, so no other sender takes its rows."""

    def __init__(self, ledger: Ledger, clock: Callable[[], datetime]) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(ledger, clock), name="feedpub-lease",
                                        daemon=True)
        self._thread.start()

    def _beat(self, ledger: Ledger, clock) -> None:
        while not self._done.wait(ledger.lease.total_seconds() / 3):
            try:
                ledger.renew(clock())
            except SQLAlchemyError:
                pass  # a busy database: the next beat tries again, well before the lease ends

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def send_queued(site: Site, store: Store, *, environ: Mapping[str, str], schedule: Schedule | None = None,
                stop: threading.Event | None = None, clock: Callable[[], datetime] = _utcnow,
                on_progress: Callable[[SendReport], None] | None = None,
                retry_delays: tuple[timedelta, ...] | None = None, lease: timedelta = LEASE,
                wait_for_retries: timedelta = timedelta(0),
                give_up_throttled: timedelta = timedelta(seconds=Pace.STALLED_AFTER)) -> SendReport:
    """Send every due row of the ledger; return what happened.

    Rows in retry whose next attempt comes within WAIT_FOR_RETRIES are waited
    for; later ones are left for the next run.
    """
    stop = stop or threading.Event()
    make_transport, connections = transport_factory(site.email, environ)
    ledger = Ledger(store, max_attempts=site.email.max_attempts, lease=lease, domain=site.email.domain,
                    journal=site.state_dir / JOURNAL_FILE,
                    **({"retry_delays": retry_delays} if retry_delays else {}))
    signing_key = secret_key(site, environ)
    messages = _Messages(site, store, schedule, Signer(signing_key), clock())
    signer = make_signer(site.email.dkim)
    sign = signer.sign if signer else (lambda message: message)
    pace = Pace(site.email.smtp.rate if site.email.smtp else 0, stalled_after=give_up_throttled.total_seconds())
    ledger.replay_journal()
    ledger.repair(clock())
    report = SendReport(recovered=ledger.expired(clock()))
    breaker = Breaker(store, make_transport().name)
    halt = threading.Event()  # the breaker opened, or the database failed: stop taking rows
    started = time.perf_counter()
    # Bounded, so the next batch is leased while the threads still have work: no pause between batches.
    jobs: queue.Queue[Job | None] = queue.Queue(maxsize=connections * 16)
    untried: list[Job] = []
    lock = threading.Lock()

    def refused(job: Job, exc: DeliveryFailure) -> None:
        if isinstance(exc, PermanentFailure):
            ledger.failed(job, str(exc), bounced=exc.unknown_recipient, now=clock())
            outcome = "failed"
        else:
            outcome = ledger.retry(job, str(exc), clock())
        with lock:
            if outcome == "failed":
                report.failed += 1
                report.bounced += isinstance(exc, PermanentFailure) and exc.unknown_recipient
                report.refusals[str(exc)].append(job.email)
            else:
                report.retrying += 1

    def attempt(transport, job: Job, ahead: _Ahead) -> bool:
        """Send JOB until it is accepted or refused; False when the transport failed instead."""
        try:
            address = envelope_address(job.email)
            data = ahead.made_for(job) or build(job)
        except (ValueError, UnicodeError, LookupError) as exc:  # this row cannot become a message
            refused(job, PermanentFailure(None, f"cannot be sent: {exc}"))
            return True
        throttles = 0
        while True:
            try:
                if not pace.take(stop):
                    return False
                transport.send(envelope_sender(job), address.text, data, smtputf8=address.smtputf8,
                               while_waiting=ahead.prepare)
            except Throttled as exc:
                throttles += 1
                with lock:
                    report.slowed_to = pace.slow_down()
                if pace.stalled() and breaker.fault(f"throttled for {pace.stalled_after:.0f} s: {exc}", clock()):
                    return False
                if stop.wait(min(float(throttles), 5.0)) or halt.is_set():
                    return False  # the pace spaces the messages; this only spaces one message's tries
                continue
            except TransportFault as exc:
                if breaker.fault(str(exc), clock(), lasting=exc.lasting):
                    return False
                continue  # a dropped connection: once more, on a new one
            except (TemporaryFailure, PermanentFailure) as exc:
                refused(job, exc)
                return True
            breaker.success()
            pace.accepted()
            try:
                ledger.sent(job, "accepted")
            except SQLAlchemyError as exc:
                raise _Unrecorded(exc) from exc
            with lock:
                report.sent += 1
            return True

    verp = Verp(site.email.return_path, signing_key) if site.email.return_path else None

    def envelope_sender(job: Job) -> str:
        return verp.address(job.delivery_id) if verp else site.email.from_address

    def build(job: Job) -> bytes:
        return sign(messages(job))

    def work() -> None:
        transport = make_transport()
        ahead = _Ahead(jobs, build)
        try:
            while (job := ahead.next()) is not None:
                try:
                    if stop.is_set() or halt.is_set() or not attempt(transport, job, ahead):
                        with lock:
                            untried.append(job)
                        halt.set()
                        continue
                    if on_progress:
                        on_progress(report)
                except _Unrecorded as exc:  # sent, and kept in the journal: not to be sent again
                    with lock:
                        report.problems.append(f"the database did not record a sent message (kept in "
                                               f"{JOURNAL_FILE}): {_reason(exc.__cause__)}")
                    halt.set()
                except Exception as exc:  # a broken database, or a bug: stop cleanly, then report it
                    with lock:
                        report.problems.append(f"{type(exc).__name__}: {_reason(exc)}")
                        untried.append(job)
                    halt.set()
                finally:
                    jobs.task_done()
        finally:
            transport.close()

    threads = [threading.Thread(target=work, name=f"feedpub-send-{n}", daemon=True) for n in range(connections)]
    for thread in threads:
        thread.start()
    heartbeat = _Heartbeat(ledger, clock)
    try:
        while not stop.is_set() and not halt.is_set():
            try:
                ledger.replay_journal()
                batch = ledger.claim(connections * 32, clock())
            except SQLAlchemyError as exc:  # what is leased goes on; the rest waits for a database that answers
                report.problems.append(f"could not take rows from the queue: {_reason(exc)}")
                break
            if not batch:
                jobs.join()  # what is in flight may yet come due again, as a retry
                if not _wait_for_retry(ledger, clock, wait_for_retries, stop):
                    break
                continue
            for job in batch:
                if stop.is_set() or halt.is_set():
                    with lock:
                        untried.append(job)
                else:
                    jobs.put(job)
    finally:
        for _ in threads:
            jobs.put(None)
        for thread in threads:
            thread.join()
        heartbeat.stop()
        try:
            ledger.release(untried)
        except SQLAlchemyError as exc:  # their leases run out, and another run takes them back
            report.problems.append(f"could not put {len(untried)} rows back in the queue: {_reason(exc)}")
        ledger.close()
    report.transport_error, report.retry_at = breaker.error, breaker.retry_at
    report.stopped = stop.is_set() or halt.is_set()
    report.seconds = time.perf_counter() - started
    return report


def _reason(exc: BaseException) -> str:
    """One line: the driver's message for a database error, without SQLAlchemy's statement and parameters."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _wait_for_retry(ledger: Ledger, clock, limit: timedelta, stop: threading.Event) -> bool:
    """Sleep until the next row comes due if that is within LIMIT; False when there is nothing to wait for."""
    upcoming = ledger.next_retry()
    if upcoming is None:
        return False
    wait = (upcoming - clock()).total_seconds()
    if wait > limit.total_seconds():
        return False
    stop.wait(max(wait, 0.0))
    return True
