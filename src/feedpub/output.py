"""Writing the site's outputs: atomically, and only when their bytes change."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write DATA to PATH through a temporary file and a rename.

    A reader sees the old file or the new one, never half of either.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        write_atomic(path, data)
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
