"""Importing subscribers from a CSV file: every bad row named by its physical line, nothing half-read.

The whole file is decoded before anything is written, so a file in the wrong
encoding imports no one. Each line is one row: no field of this file (an
address, a name, lists) may hold a line break, so a quote left open is
reported on the line where it opened, and the lines it would have swallowed
are read as the rows they are.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .subscribers import SubscriberError, Subscribers, _check_lists, normalize_address

IMPORT_BATCH = 250  # rows per transaction of a CSV import


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0  # rows naming an address an earlier row of the file named: skipped
    refused: list[str] = field(default_factory=list)  # unsubscribed or bounced: never reactivated
    messages: list[tuple[str, str]] = field(default_factory=list)  # ("error"|"warning", "FILE.csv:line: ...")

    @property
    def errors(self) -> list[str]:
        return [text for level, text in self.messages if level == "error"]

    @property
    def warnings(self) -> list[str]:
        return [text for level, text in self.messages if level == "warning"]


def read_text(path: Path, encoding: str | None) -> str:
    """The file's text; one line naming the first bad byte's line when it is not in ENCODING."""
    label = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SubscriberError(f"{label}: cannot be read ({exc.strerror})") from None
    name = codecs.lookup(encoding or "utf-8").name  # LookupError: the caller names the option
    if name == "utf-8":
        name = "utf-8-sig"  # a byte order mark is no part of the header
    try:
        return raw.decode(name)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        if encoding is None:
            raise SubscriberError(f"{label}:{line}: not UTF-8 (byte 0x{byte:02x}); for a file saved as "
                                  f"Latin-1 or Windows-1252, add --encoding latin-1 (or cp1252)") from None
        raise SubscriberError(f"{label}:{line}: not valid {encoding} (byte 0x{byte:02x})") from None


def _physical_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse(line: str) -> list[str] | None:
    """LINE's fields, or None when a quote opened in it is not closed on it."""
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error:
        return None


def _swallowed(lines: list[str], start: int) -> str:
    """What an open quote on line START (0-based) would have taken: up to its closing line, or the end."""
    reader = csv.reader(lines[start:])
    try:
        next(reader)
    except csv.Error:
        pass
    end = start + max(reader.line_num, 1)
    if end >= len(lines):
        return f"it would swallow every line to the end of the file ({start + 2}-{len(lines)})"
    return f"it would swallow lines {start + 2}-{end}" if end > start + 1 else "it is never closed"


def import_csv(book: Subscribers, path: Path, *, extra_lists: Iterable[str] = (), now: datetime,
               encoding: str | None = None, known_lists: set[str] | None = None,
               on_row: Callable[[int, int], None] | None = None) -> ImportReport:
    """Add the subscribers of a CSV file with a header row: email, name, lists.

    Lists in a cell are separated by spaces, commas or semicolons. Each bad row
    is reported and skipped; an address met twice keeps its first row;
    importing a file twice adds no one. With KNOWN_LISTS (the lists some
    digest sends to), a list outside them is warned about once.
    """
    report = ImportReport()
    label = path.name
    lines = _physical_lines(read_text(path, encoding))
    header = _parse(lines[0]) if lines else None
    fields = [f.strip().lower() for f in header or []]
    if "email" not in fields:
        raise SubscriberError(f"{label}:1: the header row must name an 'email' column")
    extra = _check_lists(extra_lists)
    state = _Rows(book, label, fields, extra, now, report, known_lists)
    numbered = [(number, line) for number, line in enumerate(lines[1:], start=2) if line.strip()]
    # Commits every IMPORT_BATCH rows: one transaction for a whole file would hold the
    # write lock for as long as the import runs, and every sign-up and send meanwhile
    # would wait on it, then fail. Importing twice adds no one, so a file cut short
    # by a crash is imported again whole.
    # Rows are checked before their transaction opens, so it holds the lock only for the writes.
    for first in range(0, len(numbered), IMPORT_BATCH):
        batch = [(number, state.check(number, line, lines)) for number, line in numbered[first:first + IMPORT_BATCH]]
        with book.engine.begin() as db:
            for done, (number, row) in enumerate(batch, start=first + 1):
                if row is not None:
                    state.save(db, *row)
                if on_row:
                    on_row(done, len(numbered))
    return report


class _Rows:
    """One import's memory: the addresses seen, on which line, and the lists already warned about."""

    def __init__(self, book, label, fields, extra, now, report, known_lists) -> None:
        self.book, self.label, self.fields, self.extra, self.now = book, label, fields, extra, now
        self.report, self.known = report, known_lists
        self.seen: dict[str, int] = {}
        self.warned: set[str] = set(extra)  # the --list names are the command's to warn about

    def say(self, level: str, number: int, text: str) -> None:
        self.report.messages.append((level, f"{self.label}:{number}: {text}"))

    def check(self, number: int, line: str, lines: list[str]) -> tuple[str, str, tuple[str, ...]] | None:
        """(address, name, lists) of the row on line NUMBER, or None when it is reported and skipped."""
        values = _parse(line)
        if values is None:
            self.say("error", number, f"unterminated quote: {_swallowed(lines, number - 1)}; this row is "
                                      f"skipped, the lines after it are read on their own")
            return None
        row = dict(zip(self.fields, values))
        address = (row.get("email") or "").strip()
        if not address:
            self.say("error", number, "no address: the email column is empty")
            return None
        try:
            email = normalize_address(address)
        except ValueError as exc:
            self.say("error", number, f"{address}: {exc}")
            return None
        try:
            lists = _check_lists(re.split(r"[\s,;]+", (row.get("lists") or "").strip()))
        except ValueError as exc:
            self.say("error", number, str(exc))
            return None
        if email in self.seen:
            self.report.duplicates += 1
            self.say("warning", number, f"{email}: already on line {self.seen[email]}; the first is kept")
            return None
        self.seen[email] = number
        for name in lists:
            if self.known is not None and name not in self.known and name not in self.warned:
                self.warned.add(name)
                self.say("warning", number, f"list {name!r}: no digest in schedule.yaml sends to this list")
        return email, row.get("name") or "", lists

    def save(self, db, email: str, name: str, lists: tuple[str, ...]) -> None:
        outcome, subscriber = self.book.upsert(email, name=name, lists=[*lists, *self.extra],
                                               source=f"import:{self.label}", now=self.now, db=db)
        if outcome == "refused":
            self.report.refused.append(subscriber.email)
        else:
            setattr(self.report, outcome, getattr(self.report, outcome) + 1)
