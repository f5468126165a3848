"""Subscribers: who receives which digests, and whether they still want to."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, insert, select, update

from .errors import FeedpubError
from .store import Store, deliveries, subscribers, subscriptions

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
_LIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class SubscriberError(FeedpubError):
    """A subscriber command that cannot be carried out as asked."""


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: str
    lists: tuple[str, ...]
    source: str
    created_at: datetime


def normalize_address(address: str) -> str:
    """The address as feedpub stores it, or ValueError saying why it is not one.

    Syntax only, no DNS look-up; lower case, so one person is one subscriber.
    """
    try:
        checked = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


def _clean_name(name: str) -> str:
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", name or "").split())[:200]


def _check_lists(lists: Iterable[str]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(item.strip() for item in lists if item and item.strip()))
    for name in found:
        if not _LIST_NAME.match(name):
            raise ValueError(f"list {name!r} may only hold letters, digits, - and _")
    return found


class Subscribers:
    """Subscriber records in the state database."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def _lists(self, db, subscriber_id: int) -> tuple[str, ...]:
        query = select(subscriptions.c.list).where(subscriptions.c.subscriber_id == subscriber_id)
        return tuple(sorted(db.execute(query).scalars()))

    def get(self, address: str) -> Subscriber | None:
        with self.engine.connect() as db:
            row = db.execute(select(subscribers).where(subscribers.c.email == address)).first()
            return self._subscriber(db, row) if row else None

    def by_id(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as db:
            row = db.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
            return self._subscriber(db, row) if row else None

    def _subscriber(self, db, row) -> Subscriber:
        return Subscriber(row.id, row.email, row.name, row.status, self._lists(db, row.id), row.source,
                          row.created_at)

    def upsert(self, address: str, *, name: str = "", lists: Iterable[str] = (), status: str = "active",
               source: str, now: datetime, db=None) -> tuple[str, Subscriber]:
        """Add a subscriber, or add lists to a known one; ('added'|'updated'|'refused', subscriber).

        A known address that unsubscribed or bounced is never reactivated here.
        """
        email, lists = normalize_address(address), _check_lists(lists)
        if db is None:
            with self.engine.begin() as db:
                return self.upsert(email, name=name, lists=lists, status=status, source=source, now=now, db=db)
        row = db.execute(select(subscribers).where(subscribers.c.email == email)).first()
        changed = False
        if row is None:
            values = dict(email=email, name=_clean_name(name), status=status, source=source, created_at=now,
                          confirmed_at=now if status == "active" else None)
            subscriber_id = db.execute(insert(subscribers).values(**values)).inserted_primary_key[0]
        elif row.status in {"unsubscribed", "bounced", "complained"}:
            return "refused", self._subscriber(db, row)
        else:
            subscriber_id = row.id
            if name and _clean_name(name) != row.name:
                db.execute(update(subscribers).where(subscribers.c.id == row.id).values(name=_clean_name(name)))
                changed = True
        known = set(self._lists(db, subscriber_id))
        new_lists = [item for item in lists if item not in known]
        if new_lists:
            db.execute(insert(subscriptions), [{"subscriber_id": subscriber_id, "list": item} for item in new_lists])
            changed = True
        outcome = "added" if row is None else "updated" if changed else "unchanged"
        saved = db.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return outcome, self._subscriber(db, saved)

    def request(self, address: str, *, name: str, lists: list[str], source: str, now: datetime) -> Subscriber:
        """Someone asked for LISTS: a pending subscriber, unless known, and a confirmation mail queued.

        Both in one transaction, so no request is ever recorded without its
        mail. Nothing is queued for an address that bounced or complained,
        nor when it already receives every list asked for.
        """
        from .ledger import Ledger

        with self.engine.begin() as db:
            subscriber = self._by_email(db, normalize_address(address))
            if subscriber is None:
                subscriber = self.upsert(address, name=name, status="pending", source=source, now=now, db=db)[1]
            if subscriber.status not in {"bounced", "complained"} and not set(lists) <= set(subscriber.lists):
                Ledger.queue_confirmation(db, subscriber.id, lists)
        return subscriber

    def _by_email(self, db, email: str) -> Subscriber | None:
        row = db.execute(select(subscribers).where(subscribers.c.email == email)).first()
        return self._subscriber(db, row) if row else None

    def remove(self, address: str) -> bool:
        """Delete a subscriber and their history; False when the address is unknown."""
        email = normalize_address(address)
        with self.engine.begin() as db:
            row = db.execute(select(subscribers.c.id).where(subscribers.c.email == email)).first()
            if row is None:
                return False
            db.execute(delete(deliveries).where(deliveries.c.subscriber_id == row.id))
            db.execute(delete(subscriptions).where(subscriptions.c.subscriber_id == row.id))
            db.execute(delete(subscribers).where(subscribers.c.id == row.id))
        return True

    def set_status(self, subscriber_id: int, status: str, now: datetime) -> None:
        stamp = {"active": "confirmed_at", "unsubscribed": "unsubscribed_at", "bounced": "bounced_at",
                 "complained": "complained_at"}.get(status)
        values = {"status": status, **({stamp: now} if stamp else {})}
        with self.engine.begin() as db:
            db.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(**values))

    def unsubscribe(self, subscriber_id: int, list_name: str, now: datetime) -> bool:
        """Take a subscriber off one list, and mark them unsubscribed when no list is left.

        True when something changed; doing it twice is harmless.
        """
        with self.engine.begin() as db:
            removed = db.execute(delete(subscriptions).where(
                subscriptions.c.subscriber_id == subscriber_id, subscriptions.c.list == list_name)).rowcount
            left = db.execute(select(func.count()).select_from(subscriptions).where(
                subscriptions.c.subscriber_id == subscriber_id)).scalar()
            if not left:
                db.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                     subscribers.c.status != "unsubscribed")
                           .values(status="unsubscribed", unsubscribed_at=now))
        return bool(removed)

    def confirm(self, subscriber_id: int, lists: Iterable[str], *, made_at: datetime, now: datetime,
                pending_only: bool, change: bool = True) -> str:
        """Carry out a confirmation link signed at MADE_AT; what happened, in one word.

        'confirmed': the subscriber is active on LISTS. 'used': they were
        confirmed after the link was made, so it has done its work. 'stale':
        they unsubscribed after it was made, and it never brings them back.
        'ask': PENDING_ONLY, and they are not pending (a returning reader, or
        one adding lists): only a deliberate POST may do that. 'refused':
        unknown, bounced or complained. A link made in the same second as the
        last change counts as older: a refusal is safe, a wrong reactivation
        is not. Without CHANGE, nothing is written ('ask' where it would confirm).
        """
        allowed = ("pending",) if pending_only else ("pending", "active", "unsubscribed")
        row = subscribers.c
        with self.engine.begin() as db:
            # The UPDATE first: it takes the write lock before anything is read.
            changed = db.execute(update(subscribers).where(
                row.id == subscriber_id, row.status.in_(allowed),
                (row.unsubscribed_at.is_(None)) | (row.unsubscribed_at < made_at),
                (row.confirmed_at.is_(None)) | (row.confirmed_at < made_at),
            ).values(status="active", confirmed_at=now)).rowcount if change else 0
            if changed:
                known = set(self._lists(db, subscriber_id))
                new = [name for name in _check_lists(lists) if name not in known]
                if new:
                    db.execute(insert(subscriptions), [{"subscriber_id": subscriber_id, "list": n} for n in new])
                return "confirmed"
            found = db.execute(select(subscribers).where(row.id == subscriber_id)).first()
        if found is None or found.status not in ("pending", "active", "unsubscribed"):
            return "refused"
        if found.unsubscribed_at is not None and found.unsubscribed_at >= made_at:
            return "stale"
        if found.confirmed_at is not None and found.confirmed_at >= made_at:
            return "used"
        return "ask"

    def all(self, *, list_name: str | None = None, status: str | None = None) -> Iterator[Subscriber]:
        """Subscribers by address, streamed: a large list is never held in memory."""
        query = select(subscribers).order_by(subscribers.c.email)
        if status:
            query = query.where(subscribers.c.status == status)
        if list_name:
            query = query.where(subscribers.c.id.in_(
                select(subscriptions.c.subscriber_id).where(subscriptions.c.list == list_name)))
        with self.engine.connect() as db:
            lists: dict[int, list[str]] = {}
            for subscriber_id, name in db.execute(select(subscriptions.c.subscriber_id, subscriptions.c.list)):
                lists.setdefault(subscriber_id, []).append(name)
            for row in db.execution_options(yield_per=1000).execute(query):
                yield Subscriber(row.id, row.email, row.name, row.status,
                                 tuple(sorted(lists.get(row.id, ()))), row.source, row.created_at)

    def export_csv(self, out) -> int:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "lists", "status", "source", "created_at"])
        count = 0
        for s in self.all():
            writer.writerow([s.email, s.name, " ".join(s.lists), s.status, s.source, s.created_at.isoformat()])
            count += 1
        return count
