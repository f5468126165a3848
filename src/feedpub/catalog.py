"""What the build remembers between runs, in state/build.sqlite.

- sources: each content file's size, mtime and content hash, so an unchanged
  file is not even read again;
- parsed and bodies: each parsed article keyed by a hash of its bytes and of
  everything that shapes it, so an unchanged article is never parsed again;
- published: each article's permanent id and the times it was first published
  (what digests call new) and last changed (its feed "updated" date);
- outputs: a fingerprint of the inputs of each output file, so an output
  whose inputs did not change is neither rendered nor read.

It is a cache and a log local to the site folder, kept with the stdlib's
sqlite3 and read in a few bulk queries: a build that changes one article out
of ten thousand must start and finish fast.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from .content import Article, Listing, from_record, to_record

# The cache tables are dropped and rebuilt when this number changes; the
# publication log (`published`) is kept whatever happens.
CACHE_VERSION = 2
CACHE_TABLES = ("sources", "parsed", "bodies", "outputs")
SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parsed (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, slug TEXT NOT NULL, title TEXT NOT NULL,
    date TEXT NOT NULL, updated TEXT, tags TEXT NOT NULL, draft INTEGER NOT NULL,
    summary TEXT NOT NULL, warnings TEXT NOT NULL);
-- Bodies apart: every build reads all of `parsed`, and small rows keep that read small.
CREATE TABLE IF NOT EXISTS bodies (key TEXT PRIMARY KEY, record TEXT NOT NULL, html TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS published (
    slug TEXT PRIMARY KEY, source TEXT NOT NULL, id TEXT NOT NULL,
    first_published TEXT NOT NULL, hash TEXT NOT NULL, changed TEXT);
CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, fingerprint TEXT NOT NULL);
"""
_SEPARATOR = "\x1f"  # between tags, and between warnings


class Publication(NamedTuple):
    slug: str
    source: str
    id: str
    first_published: datetime
    hash: str  # of the source bytes when last published or changed
    changed: datetime | None


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Another process (a digest job, a second build) may hold the write lock for a while.
        self.db = sqlite3.connect(path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if self.db.execute("PRAGMA user_version").fetchone()[0] != CACHE_VERSION:
            for table in CACHE_TABLES:
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
            self.db.execute(f"PRAGMA user_version = {CACHE_VERSION}")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def commit(self) -> None:
        self.db.commit()

    # sources
    def sources(self) -> dict[str, tuple[int, int, str]]:
        rows = self.db.execute("SELECT path, mtime_ns, size, hash FROM sources")
        return {path: (mtime, size, digest) for path, mtime, size, digest in rows}

    def save_sources(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?)", rows)

    def forget_sources(self, paths: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM sources WHERE path = ?", ((p,) for p in paths))

    # parsed articles
    def parsed_keys(self) -> set[str]:
        return {key for (key,) in self.db.execute("SELECT key FROM parsed")}

    @staticmethod
    def parsed_row(article: Article, warnings: list[str]) -> tuple:
        """An article as a row of `parsed`, less its key.

        Made where the article was parsed: in a worker process, the encoding
        then runs on all cores, and what crosses back is plain text.
        """
        return (article.source, article.slug, article.title, article.date.isoformat(),
                article.updated.isoformat() if article.updated else None,
                _SEPARATOR.join(article.tags), article.draft, article.summary,
                _SEPARATOR.join(warnings), json.dumps(to_record(article), ensure_ascii=False), article.html)

    def save_parsed(self, rows: list[tuple]) -> None:
        """Store (key, *parsed_row) rows."""
        self.db.executemany("INSERT OR REPLACE INTO parsed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [row[:10] for row in rows])
        self.db.executemany("INSERT OR REPLACE INTO bodies VALUES (?, ?, ?)",
                            [(row[0], *row[10:]) for row in rows])

    def listings(self, keys: set[str]) -> Iterator[tuple[str, Listing, list[str]]]:
        """(key, listing, warnings) of the parsed articles among KEYS."""
        rows = self.db.execute(
            "SELECT key, source, slug, title, date, updated, tags, draft, summary, warnings FROM parsed"
        )
        for key, source, slug, title, date, updated, tags, draft, summary, warnings in rows:
            if key in keys:
                listed = Listing(source, slug, title, datetime.fromisoformat(date), _moment(updated),
                                 tuple(tags.split(_SEPARATOR)) if tags else (), bool(draft), summary)
                yield key, listed, warnings.split(_SEPARATOR) if warnings else []

    def linking_keys(self, keys: set[str]) -> set[str]:
        """The KEYS whose body may link to another article's source (a cheap over-estimate)."""
        rows = self.db.execute("SELECT key FROM bodies WHERE html LIKE '%.md%'")
        return {key for (key,) in rows if key in keys}

    def article(self, key: str) -> Article:
        """The whole parsed article, body included."""
        record, html = self.db.execute("SELECT record, html FROM bodies WHERE key = ?", (key,)).fetchone()
        return from_record(json.loads(record), html)

    def forget_parsed(self, stale: set[str]) -> None:
        self.db.executemany("DELETE FROM parsed WHERE key = ?", ((k,) for k in stale))
        self.db.executemany("DELETE FROM bodies WHERE key = ?", ((k,) for k in stale))

    # publication log
    def publications(self) -> dict[str, Publication]:
        rows = self.db.execute("SELECT slug, source, id, first_published, hash, changed FROM published")
        return {
            slug: Publication(slug, source, id_, datetime.fromisoformat(first), digest, _moment(changed))
            for slug, source, id_, first, digest, changed in rows
        }

    def save_publication(self, p: Publication) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?, ?, ?)",
            (p.slug, p.source, p.id, p.first_published.isoformat(), p.hash,
             p.changed.isoformat() if p.changed else None),
        )

    # output fingerprints
    def outputs(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, fingerprint FROM outputs"))

    def update_outputs(self, changed: dict[str, str], removed: Iterable[str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?)", changed.items())
        self.db.executemany("DELETE FROM outputs WHERE path = ?", ((p,) for p in removed))

