"""Acting on what comes back: bounced rows, suppressed readers, complaints, unsubscribes by mail.

A report names its row by the row's own bounce address (VERP, its MAC
checked); failing that, by the quoted Message-ID, but only when the report
also names that row's reader: a Message-ID alone is recorded "unverified"
and changes nothing, since anyone who got the message can quote it.
A hard bounce marks its row `bounced`; a 5.1.x (no such mailbox) bounces the
reader at once, another permanent code after three messages failed in thirty
days (reports repeating one message's failure count once). Soft
bounces are kept and counted, never suppressing on their own. A complaint
marks the reader `complained`: never mailed again, never reactivated. A
report about a message sent before the reader subscribed again changes
nothing about them. Each report is acted on once, however often it is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from .reports import Report, ReportReader
from .store import Store, deliveries, dialect_insert, reports, subscribers
from .subscribers import Subscribers
from .tokens import BadToken, Signer

HARD_BOUNCES_TO_SUPPRESS = 3  # permanent failures other than "no such mailbox", within...
HARD_BOUNCE_WINDOW = timedelta(days=30)
log = logging.getLogger("feedpub")


@dataclass
class ReadReport:
    counts: Counter = field(default_factory=Counter)  # kind -> reports acted on
    suppressed: list[str] = field(default_factory=list)  # addresses that will not be mailed again
    repeated: int = 0  # read before: nothing done again
    not_understood: int = 0  # left in the mailbox
    unverified: int = 0  # quoted a Message-ID without naming its reader: recorded, not acted on


class Bounces:
    def __init__(self, store: Store, reader: ReportReader, signer: Signer) -> None:
        self.store, self.engine, self.reader, self.signer = store, store.engine, reader, signer
        self.book = Subscribers(store)

    def act(self, report: Report, now: datetime) -> str | None:
        """Record REPORT and do what it asks; the address suppressed, if any. False-y when already read."""
        row = self._delivery(report)
        if row is _UNVERIFIED:
            with self.engine.begin() as db:
                self._record(db, replace(report, kind="unverified", reason=f"{report.kind}: {report.reason}"),
                             None, now)
            raise _Unverified
        with self.engine.begin() as db:
            self._record(db, report, row, now)
            if row is None:
                return None
            reader = db.execute(select(subscribers).where(subscribers.c.id == row.subscriber_id)).first()
            if report.kind == "hard":
                db.execute(update(deliveries).where(deliveries.c.id == row.id).values(
                    status="bounced", last_reply=report.reason or report.status))
            if reader is None or (reader.confirmed_at and row.sent_at and reader.confirmed_at > row.sent_at):
                return None  # they subscribed again after this message: the report is about the past
            if report.kind == "complaint" and reader.status != "complained":
                db.execute(update(subscribers).where(subscribers.c.id == reader.id)
                           .values(status="complained", complained_at=now))
                return reader.email
            if report.kind == "hard" and reader.status in ("active", "pending") and self._enough(db, report,
                                                                                                  reader.id, now):
                db.execute(update(subscribers).where(subscribers.c.id == reader.id)
                           .values(status="bounced", bounced_at=now))
                return reader.email
        return None

    @staticmethod
    def _record(db, report: Report, row, now: datetime) -> None:
        recorded = db.execute(dialect_insert(db)(reports).values(
            key=report.key[:400], kind=report.kind, delivery_id=row.id if row else None,
            subscriber_id=row.subscriber_id if row else None, status=report.status, reason=report.reason,
            received_at=now).on_conflict_do_nothing().returning(reports.c.id)).scalar()
        if recorded is None:
            raise _AlreadyRead

    @staticmethod
    def _enough(db, report: Report, subscriber_id: int, now: datetime) -> bool:
        if report.status.startswith("5.1."):  # the mailbox does not exist
            return True
        # One message that failed is one failure, however many reports say so.
        recent = db.execute(select(func.count(func.distinct(reports.c.delivery_id))).where(
            reports.c.subscriber_id == subscriber_id, reports.c.kind == "hard",
            reports.c.received_at >= now - HARD_BOUNCE_WINDOW)).scalar()
        return recent >= HARD_BOUNCES_TO_SUPPRESS

    def _delivery(self, report: Report):
        """The delivery row REPORT is about: by its bounce address, else by the quoted Message-ID
        when the report names that row's reader too; _UNVERIFIED when it does not."""
        c = deliveries.c
        with self.engine.connect() as db:
            if report.row is not None:
                found = db.execute(select(c.id, c.subscriber_id, c.sent_at).where(c.id == report.row)).first()
                if found is not None:
                    return found
            if report.message_id:
                found = db.execute(select(c.id, c.subscriber_id, c.sent_at, subscribers.c.email)
                                   .join(subscribers, subscribers.c.id == c.subscriber_id)
                                   .where(c.message_id == report.message_id)).first()
                if found is not None:
                    return found if found.email.lower() in report.recipients else _UNVERIFIED
        return None

    def _email_of(self, subscriber_id: int) -> str | None:
        subscriber = self.book.by_id(subscriber_id)
        return subscriber.email if subscriber else None

    def unsubscribe(self, report: Report, now: datetime) -> bool:
        """An unsubscribe by mail, when its token is valid; False for a forged or missing one."""
        try:
            claim = self.signer.read("unsubscribe", report.token or "", email_of=self._email_of)
        except BadToken:
            return False
        # Done before it is recorded: a crash between the two repeats it, harmlessly, instead of losing it.
        self.book.unsubscribe(claim.subscriber_id, claim.list, now)
        with self.engine.begin() as db:
            recorded = db.execute(dialect_insert(db)(reports).values(
                key=report.key[:400], kind="unsubscribe", subscriber_id=claim.subscriber_id, status="",
                reason=f"by mail, from {claim.list}", received_at=now)
                .on_conflict_do_nothing().returning(reports.c.id)).scalar()
        if recorded is None:
            raise _AlreadyRead
        return True

    def read(self, source, now: datetime) -> ReadReport:
        """Act on every message SOURCE holds (mailboxes.py); what was understood moves to `processed`."""
        outcome = ReadReport()
        try:
            for key, raw in source.messages():
                try:
                    report = self.reader.read(raw)
                except Exception as exc:  # noqa: BLE001 (one odd message must never stop the reading)
                    log.warning("bounces: message %s not understood: %s: %s", key, type(exc).__name__,
                                " ".join(str(exc).split())[:200])
                    outcome.not_understood += 1
                    continue
                if report.kind == "unknown" or (report.kind == "unsubscribe" and not report.token):
                    outcome.not_understood += 1
                    continue
                try:
                    if report.kind == "unsubscribe":
                        if not self.unsubscribe(report, now):
                            outcome.not_understood += 1  # a forged or stale token: left for a person to see
                            continue
                    elif (address := self.act(report, now)) is not None:
                        outcome.suppressed.append(address)
                    outcome.counts[report.kind] += 1
                except _Unverified:
                    outcome.unverified += 1
                except _AlreadyRead:
                    outcome.repeated += 1
                source.processed(key, raw)
        finally:
            source.close()
        return outcome


COMPLAINT_RATE_WARNING = 0.001  # mailbox providers want complaints well under 0.3 %
HARD_BOUNCE_RATE_WARNING = 0.02
UNSUBSCRIBED_WITHIN = timedelta(days=7)  # an unsubscribe this soon after an issue is counted against it


def issue_outcomes(store: Store, issue_ids: list[int]) -> dict[int, Counter]:
    """For each issue: its hard and soft bounces, complaints, and readers who left within a week."""
    outcomes: dict[int, Counter] = {issue_id: Counter() for issue_id in issue_ids}
    if not issue_ids:
        return outcomes
    d, r, s = deliveries.c, reports.c, subscribers.c
    with store.engine.connect() as db:
        for issue_id, kind, count in db.execute(  # messages, not reports: a repeated one counts once
                select(d.issue_id, r.kind, func.count(func.distinct(d.id))).join(reports, r.delivery_id == d.id)
                .where(d.issue_id.in_(issue_ids), r.kind.in_(("hard", "soft", "complaint")))
                .group_by(d.issue_id, r.kind)):
            outcomes[issue_id][kind] = count
        left = db.execute(select(d.issue_id, d.sent_at, s.unsubscribed_at).join(subscribers, s.id == d.subscriber_id)
                          .where(d.issue_id.in_(issue_ids), s.status == "unsubscribed", d.sent_at.is_not(None)))
        for issue_id, sent_at, unsubscribed_at in left:
            if unsubscribed_at and sent_at <= unsubscribed_at <= sent_at + UNSUBSCRIBED_WITHIN:
                outcomes[issue_id]["unsubscribed"] += 1
    return outcomes


def outcome_text(outcome: Counter, accepted: int) -> tuple[str, list[str]]:
    """The words `feedpub status` shows for an issue, and its warnings."""
    def rate(n: int) -> str:
        return f"{100 * n / accepted:.2f} %" if accepted else "0 %"

    text = (f"{outcome['hard']} hard / {outcome['soft']} soft bounces ({rate(outcome['hard'])}), "
            f"{outcome['complaint']} complaint{'s' if outcome['complaint'] != 1 else ''} "
            f"({rate(outcome['complaint'])}), "
            f"{outcome['unsubscribed']} unsubscribed")
    warnings = []
    if accepted and outcome["complaint"] / accepted > COMPLAINT_RATE_WARNING:
        warnings.append(f"complaint rate {rate(outcome['complaint'])} is over 0.1 %: mailbox providers start "
                        f"filtering at 0.3 %; check how readers joined")
    if accepted and outcome["hard"] / accepted > HARD_BOUNCE_RATE_WARNING:
        warnings.append(f"hard-bounce rate {rate(outcome['hard'])} is over 2 %: the list holds dead addresses")
    return text, warnings


def reasons(store: Store, subscriber_ids: list[int]) -> dict[int, str]:
    """The latest report's reason for each of SUBSCRIBER_IDS that has one."""
    if not subscriber_ids:
        return {}
    r = reports.c
    with store.engine.connect() as db:
        rows = db.execute(select(r.subscriber_id, r.kind, r.status, r.reason).where(
            r.subscriber_id.in_(subscriber_ids), r.kind.in_(("hard", "complaint"))).order_by(r.id))
        return {sid: f"{kind} {status}: {reason}".strip() for sid, kind, status, reason in rows}


@contextlib.contextmanager
def one_reader(site):
    """Hold state/bounces.lock while reading: a second reader waits instead of taking the same messages."""
    site.state_dir.mkdir(parents=True, exist_ok=True)
    with open(site.state_dir / "bounces.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def for_site(site, store: Store, environ) -> Bounces:
    """The site's reader of reports: its bounce addresses (when return_path is set) and its link key."""
    from .tokens import secret_key
    from .verp import Verp

    key = secret_key(site, environ)
    verp = Verp(site.email.return_path, key) if site.email.return_path else None
    return Bounces(store, ReportReader(verp, site.email.domain), Signer(key))


def summary(outcome: ReadReport, mailbox) -> str:
    """One line saying what a read of the mailbox did."""
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(outcome.counts.items())) or "nothing new"
    line = f"bounces: {kinds}"
    if outcome.suppressed:
        line += f"; not mailed again: {', '.join(outcome.suppressed)}"
    if outcome.unverified:
        line += f"; {outcome.unverified} unverified (a quoted Message-ID without its reader's address), not acted on"
    if outcome.repeated:
        line += f"; {outcome.repeated} read before"
    if outcome.not_understood:
        line += f"; {outcome.not_understood} not understood, left in {mailbox}"
    return line


class _AlreadyRead(Exception):
    """This report was acted on before."""


class _Unverified(Exception):
    """This report was recorded, but names its row only by a Message-ID."""


_UNVERIFIED = object()  # what _delivery finds for a Message-ID whose recipient does not match
