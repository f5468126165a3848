"""What the build remembers between runs, in state/build.sqlite.

- sources: each content file's size, mtime and content hash, so an unchanged
  file is not even read again;
- parsed: each parsed article keyed by a hash of its bytes and of the settings
  that shape it, so an unchanged article is never parsed again;
- published: each article's permanent id and the time it was first published
  (what digests call new) and last changed (its feed "updated" date);
- outputs: a fingerprint of the inputs of each output file, so an output
  whose inputs did not change is neither rendered nor read.

This is a cache and a log local to the site folder, kept with the stdlib's
sqlite3: a build that changes one article must start fast.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parsed (
    key TEXT PRIMARY KEY, meta TEXT NOT NULL, html TEXT NOT NULL, warnings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS published (
    slug TEXT PRIMARY KEY, source TEXT NOT NULL, id TEXT NOT NULL,
    first_published TEXT NOT NULL, hash TEXT NOT NULL, changed TEXT);
CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, fingerprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
"""


@dataclass(frozen=True)
class Publication:
    slug: str
    source: str
    id: str
    first_published: datetime
    hash: str
    changed: datetime | None


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
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

    def save_parsed(self, key: str, meta: dict, html: str, warnings: list[str]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO parsed VALUES (?, ?, ?, ?)",
            (key, json.dumps(meta, ensure_ascii=False), html, json.dumps(warnings, ensure_ascii=False)),
        )

    def metas(self, keys: Iterable[str]) -> Iterator[tuple[str, dict, list[str]]]:
        """(key, meta, warnings) of the parsed articles among KEYS."""
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, meta, warnings FROM parsed WHERE key IN ({marks})"
            for key, meta, warnings in self.db.execute(query, chunk):
                yield key, json.loads(meta), json.loads(warnings)

    def snapshot(self) -> dict:
        """The articles of the last build, keyed like `parsed`, in one read.

        Decoding one blob is several times faster than decoding every row,
        which matters to a rebuild that changed one article out of thousands.
        """
        row = self.db.execute("SELECT data FROM snapshot WHERE id = 1").fetchone()
        if row is None:
            return {}
        try:
            return pickle.loads(row[0])
        except Exception:  # written by another version of feedpub: rebuild it from `parsed`
            return {}

    def save_snapshot(self, articles: dict) -> None:
        data = pickle.dumps(articles, protocol=pickle.HIGHEST_PROTOCOL)
        self.db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?)", (data,))

    def html(self, key: str) -> str:
        row = self.db.execute("SELECT html FROM parsed WHERE key = ?", (key,)).fetchone()
        return row[0] if row else ""

    def prune_parsed(self, keep: set[str]) -> None:
        stale = self.parsed_keys() - keep
        self.db.executemany("DELETE FROM parsed WHERE key = ?", ((k,) for k in stale))

    # publication log
    def publications(self) -> dict[str, Publication]:
        rows = self.db.execute("SELECT slug, source, id, first_published, hash, changed FROM published")
        return {
            slug: Publication(slug, source, id_, datetime.fromisoformat(first),
                              digest, datetime.fromisoformat(changed) if changed else None)
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

    def save_outputs(self, fingerprints: dict[str, str]) -> None:
        self.db.execute("DELETE FROM outputs")
        self.db.executemany("INSERT INTO outputs VALUES (?, ?)", fingerprints.items())
