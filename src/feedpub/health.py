"""How a transport is doing: its circuit breaker, kept in the state database, and its pace.

A fault of the server (refused connection, timeout, refused login) opens the
breaker: the senders stop using that transport, charge no row, and try again
after a wait that grows with each fault in a row, up to a quarter of an hour.
A message accepted closes it. Throttling replies lower the pace instead, and
a run of accepted messages raises it again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from .store import Store, dialect_insert, transport_health

FIRST_WAIT = timedelta(seconds=30)
LONGEST_WAIT = timedelta(minutes=15)
SOFT_FAULTS = 2  # dropped connections in a row before the breaker opens


@dataclass(frozen=True)
class Health:
    name: str
    faults: int
    last_error: str | None
    last_error_at: datetime | None
    retry_at: datetime | None

    def open(self, now: datetime) -> bool:
        return self.retry_at is not None and self.retry_at > now


def read_health(store: Store) -> list[Health]:
    with store.engine.connect() as db:
        return [Health(*row) for row in db.execute(select(
            transport_health.c.name, transport_health.c.faults, transport_health.c.last_error,
            transport_health.c.last_error_at, transport_health.c.retry_at))]


class Breaker:
    """The breaker of one transport, shared by the sending threads of one sender."""

    def __init__(self, store: Store, name: str) -> None:
        self.engine, self.name = store.engine, name
        self._lock = threading.Lock()
        self._soft = 0
        self._had_faults = any(h.name == name and h.faults for h in read_health(store))
        self.error: str | None = None  # why it opened in this run
        self.retry_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.error is not None

    def fault(self, reason: str, now: datetime, *, lasting: bool = True) -> bool:
        """Count a fault; True when the breaker is now open."""
        with self._lock:
            if self.error is not None:
                return True
            self._soft += 1
            if not lasting and self._soft < SOFT_FAULTS:
                return False
            with self.engine.begin() as db:
                faults = (db.execute(select(transport_health.c.faults)
                                     .where(transport_health.c.name == self.name)).scalar() or 0) + 1
                wait = min(FIRST_WAIT * 2 ** (faults - 1), LONGEST_WAIT)
                values = dict(faults=faults, last_error=reason, last_error_at=now, retry_at=now + wait)
                db.execute(dialect_insert(db)(transport_health).values(name=self.name, **values)
                           .on_conflict_do_update(index_elements=["name"], set_=values))
            self.error, self.retry_at, self._had_faults = reason, now + wait, True
            return True

    def success(self) -> None:
        """A message was accepted: the transport works, so its fault count starts again."""
        if self._soft or self._had_faults:
            with self._lock:
                self._soft = 0
                if self._had_faults:
                    with self.engine.begin() as db:
                        db.execute(update(transport_health).where(transport_health.c.name == self.name)
                                   .values(faults=0, retry_at=None))
                    self._had_faults = False


class Pace:
    """At most RATE messages a second over all threads, lowered while the server throttles.

    RATE 0 means no limit until the server first asks to slow down; the pace
    then starts from half the rate measured so far. Throttling replies within
    a couple of seconds of a slow-down are one signal (every connection hears
    it at once), the pace never falls below FLOOR, and it rises by a quarter
    after each RISE_AFTER seconds without throttling, back to no limit.
    """

    COOLDOWN = 2.0  # seconds during which further throttling replies change nothing
    FLOOR = 1.0  # messages a second: slower than this, a newsletter never ends
    RISE_AFTER = 5.0
    STALLED_AFTER = 120.0  # throttled this long with nothing accepted: the server will not take mail now

    def __init__(self, rate: float, *, stalled_after: float = STALLED_AFTER, clock=time.monotonic) -> None:
        self.ceiling = rate  # what the settings allow; 0 = none
        self.stalled_after = stalled_after
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._next = self._started = self._last_accepted = now
        self._taken = 0
        self._changed: float | None = None  # when a slow-down last changed the rate
        self._unthrottled = 0.0  # the measured rate before the first slow-down, when there was no limit

    def take(self, stop: threading.Event | None = None) -> bool:
        """Wait for this message's turn; False when STOP was set meanwhile."""
        with self._lock:
            self._taken += 1
            now = self.clock()
            self._rise(now)
            if self.rate <= 0:
                return True
            # A bucket one message deep for slow rates, a second deep for fast ones.
            self._next = max(self._next, now - (1.0 if self.rate >= 1 else 0.0))
            wait = self._next - now
            self._next += 1 / self.rate
        if wait <= 0:
            return True
        if stop is None:
            time.sleep(wait)
            return True
        return not stop.wait(wait)

    def _rise(self, now: float) -> None:
        if self._changed is None or now - self._changed < self.RISE_AFTER:
            return
        self._changed = now
        self.rate *= 1.25
        if self.ceiling and self.rate >= self.ceiling:
            self.rate, self._changed = self.ceiling, None
        elif not self.ceiling and self.rate >= self._unthrottled:
            self.rate, self._changed = 0.0, None  # as fast as before the server complained

    def slow_down(self) -> float:
        """Halve the pace (once per burst of replies); the new rate in messages a second."""
        with self._lock:
            now = self.clock()
            if self._changed is not None and now - self._changed < self.COOLDOWN:
                return self.rate
            if self.rate <= 0:
                elapsed = max(now - self._started, 1.0)
                self._unthrottled = max(self._taken / elapsed, self.FLOOR)
                self.rate = self._unthrottled
            self.rate = max(self.rate / 2, min(self.FLOOR, self.ceiling / 4) if self.ceiling else self.FLOOR)
            self._changed = now
            return self.rate

    def accepted(self) -> None:
        with self._lock:
            self._last_accepted = self.clock()

    def stalled(self) -> bool:
        """Throttled, and nothing accepted for `stalled_after` seconds."""
        with self._lock:
            return self._changed is not None and self.clock() - self._last_accepted >= self.stalled_after
