"""Running a task over many items on all cores, in workers that never outlive the build.

A build killed with SIGKILL cannot stop its worker processes itself; left
alone they would wait for work for ever. Each worker therefore ends when its
parent does.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, Iterator, TypeVar

Item = TypeVar("Item")
# Below this many items, starting worker processes costs more than it saves.
POOL_THRESHOLD = 64
_shared: Any = None  # what each task of a worker receives besides its item


def shared() -> Any:
    """In a worker process, the value `run_all` was given for every task."""
    return _shared


def _init_worker(value: Any, parent: int) -> None:
    global _shared
    _shared = value
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this process when PARENT ends, even when it was killed.

    On Linux the kernel sends the signal (PR_SET_PDEATHSIG); elsewhere, and
    for a parent that died before that was set, a thread watches the parent's id.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_all(task: Callable[[Item, Any], Any], items: list[Item], value: Any) -> Iterator[tuple[Item, Any]]:
    """Yield (item, task(item, value)) for ITEMS, in order; in worker processes when there are many.

    A task that runs in a worker is called with None for VALUE and reads `shared()`.
    """
    if len(items) < POOL_THRESHOLD:
        for item in items:
            yield item, task(item, value)
        return
    from concurrent.futures import ProcessPoolExecutor  # costs an import a small rebuild can skip

    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(value, os.getpid())) as pool:
        chunk = max(1, min(64, len(items) // (workers * 8)))
        yield from zip(items, pool.map(task, items, chunksize=chunk))
