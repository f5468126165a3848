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

import yaml

from .errors import ConfigError
from .mailboxes import MailboxSettings, mailbox_settings
from .webconfig import WebSettings, web_settings

SETTINGS_FILE = "feedpub.yaml"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(0-based line, description) of a YAML error.

    Where an unclosed bracket or quote began says more than where YAML gave up.
    """
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    return (mark.line if mark else None), getattr(exc, "problem", None) or "syntax error"


def read_yaml(path: Path, label: str) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(label, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(label, "", f"cannot be read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        where = f"line {line + 1}: " if line is not None else ""
        raise ConfigError(label, "", f"{where}not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(label, "", "must be a mapping of settings")
    return data


class Section:
    """Typed access to one mapping of a settings file, with errors naming the key."""

    def __init__(self, data: Any, file: str, prefix: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, prefix.rstrip("."), "must be a mapping")
        self.data, self.file, self.prefix = data, file, prefix
        self.used: set[str] = set()

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.prefix + key, reason)

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return default
        return value

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(key, default, required)
        if value is default:
            return value
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.error(key, f"{value!r} is not text")
        return str(value).strip()

    def int(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"{value!r} is not a whole number")
        if value < minimum:
            raise self.error(key, f"{value} is below the minimum of {minimum}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            raise self.error(key, f"{value!r} is not true or false")
        return value

    def section(self, key: str) -> Section:
        self.used.add(key)
        return Section(self.data.get(key), self.file, f"{self.prefix}{key}.")

    def check_unknown(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown setting")


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


def load_site(root: Path | str = ".") -> Site:
    """Read and check ROOT/feedpub.yaml."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(str(root), "", "site folder not found")
    top = Section(read_yaml(root / SETTINGS_FILE, SETTINGS_FILE), SETTINGS_FILE)
    feeds = top.section("feeds")
    extract = top.section("extract")
    content_folder, content_options = _content(top)
    site = Site(
        root=root,
        title=top.str("title", required=True),
        description=top.str("description", ""),
        base_url=_base_url(top),
        language=top.str("language", "en"),
        timezone=_timezone(top),
        author=_author(top),
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
        email=_email(top, root, title=top.data.get("title")),
        web=web_settings(top.section("web")),
        bounces_mailbox=mailbox_settings(top.section("bounces"), root),
        storage_url=_storage_url(top, root),
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
        raise section.error("from", "must be an address such as 'Name <news@example.org>'")
    name, address = mailbox
    smtp = None
    if "smtp" in section.data:
        block = section.section("smtp")
        security = block.str("security", "starttls")
        if security not in {"starttls", "tls", "none"}:
            raise block.error("security", f"{security!r} is not one of starttls, tls, none")
        smtp = SMTPSettings(
            host=block.str("host", required=True),
            port=block.int("port", 465 if security == "tls" else 587, minimum=1),
            security=security,
            username=block.str("username"),
            password_env=block.str("password_env", "FEEDPUB_SMTP_PASSWORD"),
            connections=block.int("connections", 4, minimum=1),
            per_connection=block.int("per_connection", 100, minimum=1),
            rate=_rate(block),
            timeout=float(block.int("timeout", 30, minimum=1)),
        )
        block.check_unknown()
    dkim = None
    if "dkim" in section.data:
        block = section.section("dkim")
        dkim = DKIMSettings(
            selector=block.str("selector", required=True),
            key_file=root / block.str("key_file", required=True),
            domain=block.str("domain", address.rpartition("@")[2]),
            ed25519_key_file=root / block.str("ed25519_key_file") if block.str("ed25519_key_file") else None,
            ed25519_selector=block.str("ed25519_selector", required="ed25519_key_file" in block.data),
        )
        block.check_unknown()
    return_path = section.str("return_path")
    if return_path is not None and _mailbox(return_path) is None:
        raise section.error("return_path", f"{return_path!r} is not an email address")
    if return_path is not None:
        from .verp import local_part_problem

        problem = ("" if _mailbox(return_path)[1].isascii() else f"{return_path!r}: write it in ASCII (IDNA)"
                   ) or local_part_problem(_mailbox(return_path)[1])
        if problem:
            raise section.error("return_path", problem)
    reply_to = section.str("reply_to")
    if reply_to is not None and _mailbox(reply_to) is None:
        raise section.error("reply_to", f"{reply_to!r} is not an email address")
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
