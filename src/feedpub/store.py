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
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.dialects import postgresql, sqlite


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
    # Set in the transaction that queued its rows; NULL only on issues of an older
    # version, whose rows are queued when the ledger is opened.
    Column("queued_at", UTCDateTime),
    UniqueConstraint("digest", "window_end"),
    UniqueConstraint("digest", "slug"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("status", String(20), nullable=False),  # pending, active, unsubscribed, bounced, complained
    Column("source", String(100), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("bounced_at", UTCDateTime),
    Column("complained_at", UTCDateTime),
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
    Column("kind", String(20), nullable=False, default="digest"),  # digest, confirm
    Column("issue_id", ForeignKey("issues.id"), index=True),  # NULL for a confirmation
    Column("subscriber_id", ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("payload", Text),  # JSON: what a confirmation is for ({"lists": [...]})
    Column("status", String(20), nullable=False, index=True),  # pending, sending, sent, retry, failed, skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("last_reply", Text),
    Column("sent_at", UTCDateTime),
    Column("message_id", String(200)),  # chosen at the first claim, kept for every retry
    Column("lease_owner", String(64)),  # the sender holding a row in `sending`
    Column("lease_until", UTCDateTime),  # ... until then, unless it renews the lease
    UniqueConstraint("issue_id", "subscriber_id"),
)

# Every report read back from the bounce mailbox, once: bounces, complaints, unsubscribes by mail.
reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(400), nullable=False, unique=True),  # its Message-ID, or a hash of it
    Column("kind", String(20), nullable=False),  # hard, soft, complaint, unsubscribe, auto-reply
    Column("delivery_id", ForeignKey("deliveries.id", ondelete="SET NULL"), index=True),
    Column("subscriber_id", ForeignKey("subscribers.id", ondelete="SET NULL"), index=True),
    Column("status", String(40), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("received_at", UTCDateTime, nullable=False),
)

# What the senders know of each transport: its last fault and when to try it again.
transport_health = Table(
    "transport_health",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("faults", Integer, nullable=False, default=0),  # consecutive, reset by a success
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
    Column("retry_at", UTCDateTime),  # the breaker stays open until then
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
    queued_at: datetime | None = None


def dialect_insert(db):
    """INSERT with ON CONFLICT for the database behind DB (SQLite or PostgreSQL)."""
    return (sqlite if db.dialect.name == "sqlite" else postgresql).insert


def _issue(row) -> Issue:
    data = row._asdict()
    data["articles"] = json.loads(data["articles"])
    return Issue(**data)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the sender
    # Commits survive the process being killed; only a power cut may lose the last ones.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
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
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # issues
    def last_window(self, digest: str) -> datetime | None:
        """The end of the newest window this digest has covered."""
        with self.engine.connect() as db:
            query = select(func.max(issues.c.window_end)).where(issues.c.digest == digest)
            value = db.execute(query).scalar()
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    def add_issue(self, db, *, digest: str, slug: str, list: str, window_end: datetime, subject: str,
                  preheader: str, html: str, text: str, articles: list[dict], created_at: datetime) -> int | None:
        """Store a composed issue in the transaction DB; its id, or None when this digest has one for WINDOW_END.

        The caller queues its rows in the same transaction (see Ledger.queue),
        so an issue never exists without its audience.
        """
        values = dict(digest=digest, slug=slug, list=list, window_end=window_end, subject=subject, preheader=preheader,
                      html=html, text=text, articles=json.dumps(articles, ensure_ascii=False),
                      created_at=created_at, queued_at=created_at)
        statement = dialect_insert(db)(issues).values(**values).on_conflict_do_nothing().returning(issues.c.id)
        return db.execute(statement).scalar()

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


def upgrade(engine: Engine) -> None:
    """Bring a database made by an older version up to the tables above, keeping every row."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    if "complained_at" not in {c["name"] for c in inspector.get_columns("subscribers")}:
        with engine.begin() as db:
            db.exec_driver_sql("ALTER TABLE subscribers ADD COLUMN complained_at TIMESTAMP")
    found = {c["name"] for c in inspector.get_columns("deliveries")}
    issue_columns = {c["name"] for c in inspector.get_columns("issues")}
    with engine.begin() as db:
        if "queued_at" not in issue_columns:
            db.exec_driver_sql("ALTER TABLE issues ADD COLUMN queued_at TIMESTAMP")
            # Issues that already have rows were queued; only those without are left to repair.
            db.exec_driver_sql("UPDATE issues SET queued_at = created_at WHERE id IN "
                               "(SELECT DISTINCT issue_id FROM deliveries)")
        if "kind" in found:
            return
        if engine.dialect.name == "sqlite":
            # SQLite cannot make a column nullable: rebuild the table, rows and ids kept.
            db.exec_driver_sql("ALTER TABLE deliveries RENAME TO deliveries_old")
            for index in ("ix_deliveries_issue_id", "ix_deliveries_status"):
                db.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
            deliveries.create(db)
            db.exec_driver_sql(
                "INSERT INTO deliveries (id, kind, issue_id, subscriber_id, status, attempts, next_attempt_at, "
                "last_reply, sent_at) SELECT id, 'digest', issue_id, subscriber_id, status, attempts, "
                "next_attempt_at, last_reply, sent_at FROM deliveries_old")
            db.exec_driver_sql("DROP TABLE deliveries_old")
        else:
            for ddl in ("ADD COLUMN kind VARCHAR(20) NOT NULL DEFAULT 'digest'", "ADD COLUMN payload TEXT",
                        "ADD COLUMN message_id VARCHAR(200)", "ADD COLUMN lease_owner VARCHAR(64)",
                        "ADD COLUMN lease_until TIMESTAMP", "ALTER COLUMN issue_id DROP NOT NULL"):
                db.exec_driver_sql(f"ALTER TABLE deliveries {ddl}")
