"""The state database: digest issues, subscribers and the delivery ledger.

SQLAlchemy Core, so the same code runs on SQLite (the default, a file in
state/) and on PostgreSQL. Times are stored in UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData()

issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(100), nullable=False),
    Column("slug", String(100), nullable=False),  # its folder in the archive
    Column("list", String(100), nullable=False),  # who receives it
    Column("window_end", UTCDateTime, nullable=False),  # articles first published up to here
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False),
    Column("html", Text, nullable=False),  # inlined, with the personal placeholders
    Column("text", Text, nullable=False),
    Column("articles", Text, nullable=False),  # JSON: [{"id", "slug", "title"}]
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("digest", "window_end"),
    UniqueConstraint("digest", "slug"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("status", String(20), nullable=False),  # pending, active, unsubscribed, bounced
    Column("source", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("bounced_at", UTCDateTime),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscriber_id", ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("list", String(100), primary_key=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue_id", ForeignKey("issues.id"), nullable=False, index=True),
    Column("subscriber_id", ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(20), nullable=False, index=True),  # pending, sending, sent, retry, failed, skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("last_reply", Text),
    Column("sent_at", UTCDateTime),
    UniqueConstraint("issue_id", "subscriber_id"),
)


@dataclass(frozen=True)
class Issue:
    id: int
    digest: str
    slug: str
    list: str
    window_end: datetime
    subject: str
    preheader: str
    html: str
    text: str
    articles: list[dict]
    created_at: datetime


def _issue(row) -> Issue:
    data = row._asdict()
    data["articles"] = json.loads(data["articles"])
    return Issue(**data)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the sender
    # Commits survive the process being killed; only a power cut may lose the last ones.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """The state database; `Store(url)` creates the tables it lacks."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # issues
    def last_window(self, digest: str) -> datetime | None:
        """The end of the newest window this digest has covered."""
        with self.engine.connect() as db:
            query = select(func.max(issues.c.window_end)).where(issues.c.digest == digest)
            value = db.execute(query).scalar()
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    def add_issue(self, *, digest: str, slug: str, list: str, window_end: datetime, subject: str, preheader: str,
                  html: str, text: str, articles: list[dict], created_at: datetime) -> Issue | None:
        """Store a composed issue; None when this digest already has one for WINDOW_END."""
        values = dict(digest=digest, slug=slug, list=list, window_end=window_end, subject=subject, preheader=preheader,
                      html=html, text=text, articles=json.dumps(articles, ensure_ascii=False),
                      created_at=created_at)
        try:
            with self.engine.begin() as db:
                issue_id = db.execute(insert(issues).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            return None
        return self.issue(issue_id)

    def issue(self, issue_id: int) -> Issue | None:
        with self.engine.connect() as db:
            row = db.execute(select(issues).where(issues.c.id == issue_id)).first()
        return _issue(row) if row else None

    def issues(self, digest: str | None = None) -> list[Issue]:
        """Issues newest first, of one digest or of all."""
        query = select(issues).order_by(issues.c.window_end.desc(), issues.c.id.desc())
        if digest is not None:
            query = query.where(issues.c.digest == digest)
        with self.engine.connect() as db:
            return [_issue(row) for row in db.execute(query)]

    def issue_slugs(self, digest: str) -> set[str]:
        with self.engine.connect() as db:
            return set(db.execute(select(issues.c.slug).where(issues.c.digest == digest)).scalars())
