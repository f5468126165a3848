"""The service's clock: APScheduler runs the jobs of schedule.yaml in background threads.

Jobs live in memory and are declared again from schedule.yaml at every start,
so a job removed from the file no longer runs. What a restart must not forget
lives in the state database instead: each digest's last covered window. At
start, and at each of its cron times, a digest job looks for a due window and
composes it once; a window that passed more than the grace time ago is skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from .build import build
from .config import Site
from .cron import cron_trigger
from .delivery import send_queued
from .health import read_health
from .jobs import compose_digest, run_scheduled_digest
from .ledger import Ledger
from .schedule import Schedule
from .store import Store

log = logging.getLogger("feedpub")
SEND_EVERY_SECONDS = 60  # how often retries and leftovers are looked at


class Service:
    """The scheduled jobs of one site. `start`, then `stop` (which waits for the job in flight)."""

    def __init__(self, site: Site, schedule: Schedule, store: Store, *,
                 environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.site, self.schedule, self.store, self.environ = site, schedule, store, environ
        self.clock = clock or (lambda: datetime.now(schedule.tz))
        self.stopping = threading.Event()  # asks a send in progress to finish its messages and stop
        self._sending = threading.Lock()  # one send loop at a time in this process
        self._scheduler = None

    # the jobs
    def build(self) -> None:
        report = build(self.site, now=self.clock())
        for line in report.errors:
            log.warning("build: %s", line)
        log.info("build: %d articles published, %d parsed, %d files written, %d removed",
                 len(report.published), report.parsed, len(report.written), len(report.removed))

    def digest(self, name: str) -> None:
        message = run_scheduled_digest(self.site, self.schedule, name, self.store, now=self.clock(),
                                       send=self.send)
        log.info("digest %s", message)

    def digest_now(self, name: str) -> None:
        """Compose digest NAME now, whatever its cron time, then send it."""
        outcome = compose_digest(self.site, self.schedule, name, self.store, now=self.clock())
        log.info("digest %s", outcome.message)
        if outcome.issue is not None:
            self.send()

    def send(self) -> None:
        if self.stopping.is_set() or not self._sending.acquire(blocking=False):
            return
        try:
            if not Ledger(self.store).waiting():
                return
            now = self.clock()
            resting = [h for h in read_health(self.store) if h.open(now)]
            if resting:  # the breaker is open: the transport is tried again at its time, not before
                log.info("send: waiting until %s: %s", f"{resting[0].retry_at.astimezone(self.schedule.tz):%H:%M:%S %Z}",
                         resting[0].last_error)
                return
            report = send_queued(self.site, self.store, environ=self.environ, schedule=self.schedule,
                                 stop=self.stopping)
            log.info("send: %d sent, %d to retry, %d failed (%d bounced), %d resumed, %.0f messages/s%s",
                     report.sent, report.retrying, report.failed, report.bounced, report.recovered, report.rate,
                     ", stopped" if report.stopped else "")
            for problem in report.problems:
                log.error("send: %s", problem)
            for reason, addresses in report.refusals.items():
                log.warning("send: %d not sent: %s", len(addresses), reason)
            if report.transport_error:
                log.warning("send: transport down, messages stay queued: %s", report.transport_error)
        finally:
            self._sending.release()

    def bounces(self) -> None:
        from .bounces import for_site, one_reader, summary
        from .errors import FeedpubError
        from .mailboxes import open_source

        if self.stopping.is_set() or self.site.bounces_mailbox is None:
            return
        try:
            source = open_source(self.site.bounces_mailbox, self.environ)
            with one_reader(self.site):
                outcome = for_site(self.site, self.store, self.environ).read(source, self.clock())
        except FeedpubError as exc:  # the mailbox is down, or dropped us midway: read it next time
            log.warning("%s", exc)
            return
        if outcome.counts or outcome.not_understood or outcome.unverified:
            log.info("%s", summary(outcome, self.site.bounces_mailbox))

    def send_soon(self) -> None:
        """Send what is queued now, in the background, unless a send is already under way."""
        threading.Thread(target=self.send, name="feedpub-send-soon", daemon=True).start()

    def catch_up(self) -> None:
        """Run every digest once: a window due while the service was down is composed now."""
        for name in self.schedule.digests:
            if self.schedule.digests[name].cron:
                self.digest(name)
        self.send()  # what a killed sender left in the ledger

    # the scheduler
    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        tz = self.schedule.tz
        scheduler = BackgroundScheduler(timezone=tz, job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(self.schedule.grace.total_seconds()),
        })
        if self.schedule.build_cron:
            build_trigger = cron_trigger(self.schedule.build_cron, tz)
        else:
            build_trigger = IntervalTrigger(seconds=self.schedule.build_every.total_seconds(), timezone=tz)
        scheduler.add_job(self.build, build_trigger, id="build", replace_existing=True)
        for name, digest in self.schedule.digests.items():
            if digest.cron:
                scheduler.add_job(self.digest, cron_trigger(digest.cron, tz), args=[name], id=f"digest:{name}",
                                  replace_existing=True)
        if self.site.bounces_mailbox is not None:
            scheduler.add_job(self.bounces, IntervalTrigger(seconds=self.schedule.bounces_every.total_seconds(),
                                                            timezone=tz),
                              id="bounces", replace_existing=True)
        scheduler.add_job(self.send, IntervalTrigger(seconds=SEND_EVERY_SECONDS, timezone=tz), id="send",
                          replace_existing=True)
        scheduler.add_job(self.catch_up, id="catch-up")  # once, right away
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler started: %s", ", ".join(f"{job} next at {when:%Y-%m-%d %H:%M %Z}"
                                                    for job, when in self.next_runs().items()))

    def stop(self) -> None:
        """Finish the job in flight (a send records the messages in its hands), then stop."""
        self.stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
            log.info("scheduler stopped")

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def next_runs(self) -> dict[str, datetime]:
        if self._scheduler is None:
            return {}
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs() if job.next_run_time}
