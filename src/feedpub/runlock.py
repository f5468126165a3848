"""One scheduler per state database: an exclusive lock on a file beside it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import FeedpubError

LOCK_FILE = "feedpub.lock"


class AlreadyRunning(FeedpubError):
    """Another process holds the lock on this state."""


class RunLock:
    """Held from `acquire` to `release` (or to the process's end, whatever ends it)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyRunning(
                f"feedpub serve is already running on {self.path.parent} (pid {holder}); stop it first, "
                f"or start this one with --web-only to serve HTTP without scheduling") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
