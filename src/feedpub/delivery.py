"""Sending what the ledger holds: several connections, a rate limit, retries, clean stops.

The main thread claims batches of due rows; sending threads, each with its own
connection, render each reader's copy, send it and record the outcome before
taking the next. A stop request (SIGTERM) lets every thread finish and record
the message in its hands, and puts the untried rows back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .config import Site
from .ledger import Job, Ledger
from .mail import IssueMessage, Letter, Recipient
from .schedule import Schedule
from .store import Store
from .tokens import Signer, TokenSubject, secret_key
from .transports import PermanentFailure, TemporaryFailure, transport_factory

UNSUBSCRIBE_PATH = "unsubscribe?token={token}"


@dataclass
class SendReport:
    recovered: int = 0  # rows a previous sender left in `sending`
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    bounced: int = 0
    stopped: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class RateLimiter:
    """At most RATE messages a second over all threads (a token bucket one second deep)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._tokens, self._stamp = max(rate, 1.0), time.monotonic()

    def take(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            wait = (1 - self._tokens) / self.rate if self._tokens < 1 else 0.0
            self._tokens -= 1
        if wait > 0:
            time.sleep(wait)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Messages:
    """Each issue's serialized message, built once, shared by the sending threads."""

    def __init__(self, site: Site, store: Store, schedule: Schedule | None, now: datetime) -> None:
        self.site, self.store, self.schedule, self.now = site, store, schedule, now
        self._cache: dict[int, IssueMessage] = {}
        self._lock = threading.Lock()

    def __call__(self, issue_id: int) -> IssueMessage:
        with self._lock:
            if issue_id not in self._cache:
                issue = self.store.issue(issue_id)
                digest = self.schedule.digests.get(issue.digest) if self.schedule else None
                letter = Letter(issue.id, issue.digest, digest.title if digest else issue.digest,
                                issue.subject, issue.html, issue.text)
                self._cache[issue_id] = IssueMessage(self.site, letter, date=self.now,
                                                     unsubscribe_url=self.site.url(UNSUBSCRIBE_PATH))
            return self._cache[issue_id]


def _dkim_signer(site: Site) -> Callable[[bytes], bytes]:
    settings = site.email.dkim
    if settings is None:
        return lambda message: message
    import dkim  # only sites that sign pay for the import

    key = settings.key_file.read_bytes()
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
               b"list-unsubscribe", b"list-unsubscribe-post"]

    def sign(message: bytes) -> bytes:
        return dkim.sign(message, settings.selector.encode(), settings.domain.encode(), key,
                         include_headers=headers) + message

    return sign


def send_queued(site: Site, store: Store, *, environ: Mapping[str, str], schedule: Schedule | None = None,
                stop: threading.Event | None = None, clock: Callable[[], datetime] = _utcnow,
                on_progress: Callable[[SendReport], None] | None = None,
                retry_delays: tuple[timedelta, ...] | None = None,
                wait_for_retries: timedelta = timedelta(0)) -> SendReport:
    """Send every due row of the ledger; return what happened.

    Rows in retry whose next attempt comes within WAIT_FOR_RETRIES are waited
    for; later ones are left for the next run.
    """
    stop = stop or threading.Event()
    make_transport, connections = transport_factory(site.email, environ)
    signer = Signer(secret_key(site, environ))
    ledger = Ledger(store, max_attempts=site.email.max_attempts,
                    **({"retry_delays": retry_delays} if retry_delays else {}))
    messages = _Messages(site, store, schedule, clock())
    sign = _dkim_signer(site)
    limiter = RateLimiter(site.email.smtp.rate if site.email.smtp else 0)
    report = SendReport(recovered=ledger.recover())
    started = time.perf_counter()
    jobs: queue.Queue[Job | None] = queue.Queue()
    untried: list[Job] = []
    lock = threading.Lock()

    def deliver(transport, job: Job) -> None:
        token = signer.make("unsubscribe", TokenSubject(job.subscriber_id, job.email, job.list))
        data = sign(messages(job.issue_id).render(Recipient(job.subscriber_id, job.email, job.name), token))
        try:
            transport.send(site.email.from_address, job.email, data)
        except TemporaryFailure as exc:
            gave_up = ledger.retry(job, str(exc), clock()) == "failed"
            with lock:
                if gave_up:
                    report.failed += 1
                else:
                    report.retrying += 1
        except PermanentFailure as exc:
            ledger.failed(job, str(exc), bounced=exc.unknown_recipient, now=clock())
            with lock:
                report.failed += 1
                report.bounced += exc.unknown_recipient
        else:
            ledger.sent(job, "accepted")
            with lock:
                report.sent += 1

    def work() -> None:
        transport = make_transport()
        try:
            while (job := jobs.get()) is not None:
                try:
                    if stop.is_set():
                        with lock:
                            untried.append(job)
                        continue
                    limiter.take()
                    deliver(transport, job)
                    if on_progress:
                        on_progress(report)
                except Exception as exc:  # a bug or a broken database: stop cleanly, then report it
                    with lock:
                        report.problems.append(f"{type(exc).__name__}: {exc}")
                        untried.append(job)
                    stop.set()
                finally:
                    jobs.task_done()
        finally:
            transport.close()

    threads = [threading.Thread(target=work, name=f"feedpub-send-{n}", daemon=True) for n in range(connections)]
    for thread in threads:
        thread.start()
    try:
        while not stop.is_set():
            batch = ledger.claim(connections * 32, clock())
            if not batch:
                if not _wait_for_retry(ledger, clock, wait_for_retries, stop):
                    break
                continue
            for job in batch:
                jobs.put(job)
            jobs.join()
    finally:
        for _ in threads:
            jobs.put(None)
        for thread in threads:
            thread.join()
        ledger.release(untried)
        ledger.close()
    report.stopped = stop.is_set()
    report.seconds = time.perf_counter() - started
    return report


def _wait_for_retry(ledger: Ledger, clock, limit: timedelta, stop: threading.Event) -> bool:
    """Sleep until the next retry if it comes within LIMIT; False when there is nothing to wait for."""
    upcoming = ledger.next_retry()
    if upcoming is None:
        return False
    wait = (upcoming - clock()).total_seconds()
    if wait > limit.total_seconds():
        return False
    stop.wait(max(wait, 0.0))
    return True
