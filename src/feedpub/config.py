"""Site settings from feedpub.yaml, checked once and turned into typed values."""

from __future__ import annotations

import hashlib
import re
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .mailboxes import MailboxSettings, mailbox_settings
from .settings import Section, read_yaml, yaml_problem  # noqa: F401  (schedule and content read them here)
from .webconfig import WebSettings, web_settings

SETTINGS_FILE = "feedpub.yaml"


@dataclass(frozen=True)
class Author:
    name: str
    email: str | None = None


@dataclass(frozen=True)
class FeedOptions:
    items: int = 20
    full_content: bool = True
    tag_feeds: bool = True


@dataclass(frozen=True)
class ExtractOptions:
    summary_length: int = 300
    key_points: int = 5


@dataclass(frozen=True)
class ContentOptions:
    max_bytes: int = 5_000_000  # a larger article is reported and left out, never read whole


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int = 587
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password_env: str = "FEEDPUB_SMTP_PASSWORD"
    connections: int = 4
    per_connection: int = 100
    rate: float = 0.0  # messages per second over all connections; 0 = no limit
    timeout: float = 30.0


@dataclass(frozen=True)
class DKIMSettings:
    selector: str
    key_file: Path
    domain: str
    ed25519_key_file: Path | None = None  # a second signature, RFC 8463
    ed25519_selector: str | None = None


@dataclass(frozen=True)
class EmailSettings:
    from_name: str
    from_address: str
    reply_to: str | None = None
    return_path: str | None = None  # where bounces go, each message with its own tag (verp.py); default From
    smtp: SMTPSettings | None = None  # None: messages go to the Maildir outbox
    outbox: Path = Path("outbox")
    dkim: DKIMSettings | None = None
    max_html_bytes: int = 100_000  # Gmail clips messages whose HTML part passes about 102 KB as mailed
    max_attempts: int = 5

    @property
    def domain(self) -> str:
        return self.from_address.rpartition("@")[2]


@dataclass(frozen=True)
class Site:
    """Everything the build needs to know about a site, with paths made absolute."""

    root: Path
    title: str
    description: str
    base_url: str  # always ends with "/"
    language: str
    timezone: str
    author: Author
    feeds: FeedOptions = field(default_factory=FeedOptions)
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    content: ContentOptions = field(default_factory=ContentOptions)
    content_dir: Path = Path("content")
    output_dir: Path = Path("public")
    state_dir: Path = Path("state")
    templates_dir: Path = Path("templates")
    email: EmailSettings | None = None
    web: WebSettings = field(default_factory=WebSettings)
    bounces_mailbox: MailboxSettings | None = None  # where bounces and complaints arrive
    storage_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "localhost"

    def url(self, path: str = "") -> str:
        """The absolute URL of a path inside the published site."""
        return self.base_url + path.lstrip("/")

    def fingerprint(self) -> str:
        """Changes whenever a setting that shapes the output changes."""
        data = {k: v for k, v in asdict(self).items() if k not in {"raw", "root", "email", "web", "storage_url",
                                                                     "bounces_mailbox"}}
        blob = json.dumps(data, default=str, sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=12).hexdigest()


def _base_url(section: Section) -> str:
    url = section.str("base_url", required=True)
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise section.error("base_url", f"{url!r} is not an absolute http(s) URL")
    return url if url.endswith("/") else url + "/"


def _timezone(section: Section) -> str:
    name = section.str("timezone", "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise section.error("timezone", f"{name!r} is not a known time zone") from None
    return name


def _author(section: Section) -> Author:
    value = section.data.get("author")
    if isinstance(value, str) or value is None:
        section.used.add("author")
        return Author(name=(value or "").strip())
    author = section.section("author")
    result = Author(name=author.str("name", ""), email=author.str("email"))
    author.check_unknown()
    return result


def _content(top: Section) -> tuple[str, ContentOptions]:
    """`content:` is the folder's name, or a mapping with `folder` and `max_bytes`."""
    if not isinstance(top.data.get("content"), dict):
        return top.str("content", "content"), ContentOptions()
    section = top.section("content")
    folder = section.str("folder", "content")
    options = ContentOptions(max_bytes=section.int("max_bytes", ContentOptions.max_bytes, minimum=1_000))
    section.check_unknown()
    return folder, options


def load_site(root: Path | str = ".", problems: list[ConfigError] | None = None) -> Site:
    """Read and check ROOT/feedpub.yaml.

    Given PROBLEMS, every mistake is added there and a bad value is read as
    its default, instead of raising the first; a file that is not YAML still raises.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(str(root), "", "site folder not found")
    top = Section(read_yaml(root / SETTINGS_FILE, SETTINGS_FILE), SETTINGS_FILE, problems=problems)
    feeds = top.section("feeds")
    extract = top.section("extract")
    content_folder, content_options = top.guard(("content", ContentOptions()), _content, top)
    site = Site(
        root=root,
        title=top.str("title", required=True) or "",
        description=top.str("description", ""),
        base_url=top.guard("http://localhost/", _base_url, top),
        language=top.str("language", "en"),
        timezone=top.guard("UTC", _timezone, top),
        author=top.guard(Author(""), _author, top),
        feeds=FeedOptions(
            items=feeds.int("items", 20, minimum=1),
            full_content=feeds.bool("full_content", True),
            tag_feeds=feeds.bool("tag_feeds", True),
        ),
        extract=ExtractOptions(
            summary_length=extract.int("summary_length", 300, minimum=40),
            key_points=extract.int("key_points", 5, minimum=1),
        ),
        content=content_options,
        content_dir=root / content_folder,
        output_dir=root / top.str("output", "public"),
        state_dir=root / top.str("state", "state"),
        templates_dir=root / top.str("templates", "templates"),
        email=top.guard(None, _email, top, root, top.data.get("title")),
        web=top.guard(WebSettings(), web_settings, top.section("web")),
        bounces_mailbox=top.guard(None, mailbox_settings, top.section("bounces"), root),
        storage_url=top.guard("", _storage_url, top, root),
        raw=top.data,
    )
    for section in (feeds, extract):
        section.check_unknown()
    top.check_unknown()
    return site


def _storage_url(top: Section, root: Path) -> str:
    storage = top.section("storage")
    state = root / top.str("state", "state")
    url = storage.str("url", f"sqlite:///{state / 'feedpub.sqlite'}")
    storage.check_unknown()
    return url


# "Name <local@domain>" or "local@domain", on one line. A plain pattern, because
# the email package's parsers cost a build more to import than they check here.
_MAILBOX = re.compile(
    r'^\s*(?:"?(?P<name>[^"<>\r\n]*?)"?\s*<(?P<angled>[^<>\s@"]+@[^<>\s@"]+)>|(?P<bare>[^<>\s@"]+@[^<>\s@"]+))\s*$'
)


def _mailbox(text: str) -> tuple[str, str] | None:
    """(display name, address), or None when TEXT is not one mailbox."""
    match = _MAILBOX.match(text)
    if match is None:
        return None
    return (match["name"] or "").strip(), match["angled"] or match["bare"]


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$", re.I)
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def _rate(block: Section) -> float:
    """Messages per second from `12/s`, `30/min`, `2000/h`, `0.5` (per second); 0 means no limit."""
    value = block._get("rate", 0, False)
    match = _RATE.match(str(value)) if not isinstance(value, bool) else None
    if match is None:
        raise block.error("rate", f"{value!r} is not a rate such as 12/s, 30/min or 2000/h")
    return float(match[1]) / _PER[(match[2] or "s").lower()]


def _email(top: Section, root: Path, title: object) -> EmailSettings:
    """The email settings; by default mail from the site's author to the outbox."""
    section = top.section("email")
    author = top.data.get("author") if isinstance(top.data.get("author"), dict) else {}
    # A title may hold quotes or brackets that a display name cannot: the default leaves them out.
    name = re.sub(r'["<>\r\n]', "", str(title or ""))
    default_from = f"{name} <{author.get('email') or 'newsletter@localhost'}>"
    mailbox = _mailbox(section.str("from", default_from))
    if mailbox is None:
        section.fail(section.error("from", "must be an address such as 'Name <news@example.org>'"))
        mailbox = _mailbox(default_from) or ("", "newsletter@localhost")
    name, address = mailbox
    smtp = None
    if "smtp" in section.data:
        block = section.section("smtp")
        security = block.str("security", "starttls")
        if security not in {"starttls", "tls", "none"}:
            block.fail(block.error("security", f"{security!r} is not one of starttls, tls, none"))
            security = "starttls"
        smtp = SMTPSettings(
            host=block.str("host", required=True) or "",
            port=block.int("port", 465 if security == "tls" else 587, minimum=1),
            security=security,
            username=block.str("username"),
            password_env=block.str("password_env", "FEEDPUB_SMTP_PASSWORD"),
            connections=block.int("connections", 4, minimum=1),
            per_connection=block.int("per_connection", 100, minimum=1),
            rate=block.guard(0.0, _rate, block),
            timeout=float(block.int("timeout", 30, minimum=1)),
        )
        block.check_unknown()
    dkim = None
    if "dkim" in section.data:
        block = section.section("dkim")
        selector, key_file = block.str("selector", required=True), block.str("key_file", required=True)
        dkim = DKIMSettings(
            selector=selector,
            key_file=root / key_file,
            domain=block.str("domain", address.rpartition("@")[2]),
            ed25519_key_file=root / block.str("ed25519_key_file") if block.str("ed25519_key_file") else None,
            ed25519_selector=block.str("ed25519_selector", required="ed25519_key_file" in block.data),
        ) if selector and key_file else None  # only when collecting can either be missing here
        block.check_unknown()
    return_path = section.str("return_path")
    if return_path is not None and _mailbox(return_path) is None:
        section.fail(section.error("return_path", f"{return_path!r} is not an email address"))
        return_path = None
    if return_path is not None:
        from .verp import local_part_problem

        problem = ("" if _mailbox(return_path)[1].isascii() else f"{return_path!r}: write it in ASCII (IDNA)"
                   ) or local_part_problem(_mailbox(return_path)[1])
        if problem:
            section.fail(section.error("return_path", problem))
            return_path = None
    reply_to = section.str("reply_to")
    if reply_to is not None and _mailbox(reply_to) is None:
        section.fail(section.error("reply_to", f"{reply_to!r} is not an email address"))
        reply_to = None
    settings = EmailSettings(
        from_name=name,
        from_address=address,
        reply_to=reply_to,
        return_path=_mailbox(return_path)[1] if return_path else None,
        smtp=smtp,
        outbox=root / section.str("outbox", "outbox"),
        dkim=dkim,
        max_html_bytes=section.int("max_html_bytes", 100_000, minimum=10_000),
        max_attempts=section.int("max_attempts", 5, minimum=1),
    )
    section.check_unknown()
    return settings
