"""The files of the content folder, and reading them without ever leaving it.

The content folder is written by people and tools the site does not control
(a synced folder, a pasted archive), so nothing found there is trusted:

- a symbolic link is followed only when its target stays inside the folder;
- only regular files are read: a FIFO, a device or a socket is never opened;
- a file is opened one path component at a time with O_NOFOLLOW, so a link
  swapped in after the walk cannot lead outside either;
- at most a given number of bytes is ever read from one file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .errors import ContentError

ARTICLE_SUFFIX = ".md"
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
          stat.S_IFSOCK: "a socket"}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class Source(NamedTuple):
    """One file found under the content folder."""

    name: str  # its path as listed, relative to the content folder, "/"-separated
    real: str  # the same file's path with every link resolved; equal to `name` but for links
    mtime_ns: int
    size: int


@dataclass
class ContentFiles:
    """What the walk of the content folder found: articles, other files, and what it left out."""

    articles: list[Source] = field(default_factory=list)
    assets: list[Source] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def walk(content_dir: Path) -> ContentFiles:
    """Every regular file under CONTENT_DIR, sorted by name; dot-files are skipped."""
    found = ContentFiles()
    if not content_dir.is_dir():
        return found
    root = os.path.realpath(content_dir)
    _Walker(root, content_dir.name, found).folder(root, "", "", {_identity(os.stat(root))})
    found.articles.sort()
    found.assets.sort()
    return found


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _Walker:
    def __init__(self, root: str, label: str, found: ContentFiles) -> None:
        self.root, self.label, self.found = root, label, found

    def warn(self, name: str, reason: str) -> None:
        self.found.warnings.append(f"{self.label}/{name}: {reason}; skipped")

    def folder(self, path: str, name: str, real: str, ancestors: set[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.warn(name.rstrip("/") or ".", f"folder cannot be read ({exc.strerror})")
            return
        for entry in entries:
            if not entry.name.startswith("."):
                self.entry(entry, name + entry.name, real + entry.name, ancestors)

    def entry(self, entry: os.DirEntry, name: str, real: str, ancestors: set[tuple[int, int]]) -> None:
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(entry.path)
                if os.path.commonpath([self.root, target]) != self.root:
                    self.warn(name, "a link to a file outside the content folder")
                    return
                st = os.stat(target)  # a loop realpath could not resolve fails here with ELOOP
                real = os.path.relpath(target, self.root).replace(os.sep, "/")
                if real == ".":
                    real = ""
        except OSError as exc:
            reason = "a link that loops" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
            self.warn(name, reason)
            return
        if stat.S_ISDIR(st.st_mode):
            if _identity(st) in ancestors:
                self.warn(name, "a link to a folder that holds it (a loop)")
                return
            prefix = real + "/" if real else ""
            self.folder(os.path.join(self.root, real), name + "/", prefix, ancestors | {_identity(st)})
        elif stat.S_ISREG(st.st_mode):
            source = Source(name, real, st.st_mtime_ns, st.st_size)
            (self.found.articles if name.endswith(ARTICLE_SUFFIX) else self.found.assets).append(source)
        else:
            self.warn(name, f"{_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, never read")


def read(content_dir: Path, source: Source, limit: int | None = None) -> bytes:
    """The bytes of SOURCE, read from inside CONTENT_DIR only.

    Raises ContentError when the file grew past LIMIT bytes or stopped being a
    regular file inside the folder since the walk.
    """
    label = f"{content_dir.name}/{source.name}"
    try:
        fd = _open_inside(os.path.realpath(content_dir), source.real)
    except OSError as exc:
        reason = "is a link now" if exc.errno in {errno.ELOOP, errno.ENOTDIR} else exc.strerror
        raise ContentError(label, 1, f"cannot be read ({reason})") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContentError(label, 1, "is not a regular file any more; skipped")
        os.set_blocking(fd, True)
        data = file.read() if limit is None else file.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ContentError(label, 1, f"larger than content.max_bytes ({limit} bytes); left out")
    return data


def _open_inside(root: str, real: str) -> int:
    """A descriptor of ROOT/REAL, opened without following any link on the way."""
    parts = real.split("/")
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        # O_NONBLOCK: should a FIFO have taken the file's place, open returns at once.
        return os.open(parts[-1], _OPEN_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)
