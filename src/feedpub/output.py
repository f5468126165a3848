"""Writing the site's outputs: atomically, and only when their bytes change.

Temporary files carry the writer's process id in their name
(`.NAME.PID.RANDOM.tmp`), so a later build can tell the leftovers of a
killed process from the files a live one is writing.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

TEMP_FOLDER = ".writing"  # under the output folder: where a build's files are written before the rename
_TEMP_NAME = re.compile(r"^\..*\.tmp$")
_TEMP_PID = re.compile(r"\.(\d+)\.[^.]+\.tmp$")


def write_atomic(path: Path, data: bytes, *, temp_dir: Path | None = None) -> None:
    """Write DATA to PATH through a temporary file and a rename.

    A reader sees the old file or the new one, never half of either. The
    temporary file lives in TEMP_DIR (on PATH's file system), or beside PATH.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_dir or path.parent
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class Writer:
    """Writes the files of one build under ROOT and counts what changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / TEMP_FOLDER
        self.claimed: set[str] = set()
        self.written: list[str] = []
        self.unchanged = 0

    def claim(self, relative: str) -> None:
        """Reserve an output path; two outputs of one build may not share one."""
        if relative in self.claimed:
            raise ValueError(f"two outputs of this build would both be written to {relative}")
        self.claimed.add(relative)

    def write(self, relative: str, data: bytes) -> bool:
        """Write one output unless the file already holds DATA; True if written."""
        self.claim(relative)
        path = self.root / relative
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                self.unchanged += 1
                return False
        except FileNotFoundError:
            pass
        write_atomic(path, data, temp_dir=self.temp_dir)
        self.written.append(relative)
        return True

    def keep(self, relative: str) -> None:
        """Count an output that is known to be up to date without reading it."""
        self.claim(relative)
        self.unchanged += 1

    def remove(self, relative: str) -> None:
        """Delete an output that this build no longer produces, and empty folders left behind."""
        path = self.root / relative
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def remove_leftovers(self) -> list[str]:
        """Delete the temporary files of writers that died; return their paths.

        The first time, the whole output folder is swept (older versions left
        their temporary files beside the outputs); afterwards only TEMP_FOLDER,
        where every build writes.
        """
        if self.temp_dir.is_dir():
            candidates = [entry.path for entry in os.scandir(self.temp_dir)]
        else:
            candidates = [os.path.join(folder, name) for folder, _, names in os.walk(self.root)
                          for name in names if _TEMP_NAME.match(name)]
        removed = [path for path in candidates if _TEMP_NAME.match(os.path.basename(path))
                   and not _writer_alive(path) and _unlink(path)]
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        return sorted(os.path.relpath(path, self.root) for path in removed)


def _writer_alive(path: str) -> bool:
    """Whether the process named in a temporary file's name still runs (False when none is named)."""
    match = _TEMP_PID.search(os.path.basename(path))
    if not match:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False  # its writer renamed it in the meantime
    return True
