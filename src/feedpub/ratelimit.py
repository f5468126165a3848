"""A sliding-window rate limit whose memory is bounded and whose keys expire."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class RateLimit:
    """At most LIMIT events per key in a sliding window of SECONDS, in memory.

    Keys are kept in order of last use: a key idle for a whole window has
    nothing left to count and is forgotten, and when MAX_KEYS are held the
    least recently used goes first, so no stream of new keys grows it.
    """

    def __init__(self, limit: int, seconds: float, *, max_keys: int = 10_000, clock=time.monotonic) -> None:
        self.limit, self.seconds, self.max_keys, self.clock = limit, seconds, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            self._expire(now)
            events = self._events.pop(key, None) or deque()
            while events and events[0] <= now - self.seconds:
                events.popleft()
            self._events[key] = events  # now the most recently used
            if len(events) >= self.limit:
                return False
            events.append(now)
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return True

    def _expire(self, now: float) -> None:
        """Forget the keys not used for a whole window: the oldest are at the front."""
        while self._events:
            _key, events = next(iter(self._events.items()))
            if events and events[-1] > now - self.seconds:
                break
            self._events.popitem(last=False)
