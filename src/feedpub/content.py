"""Articles: Markdown files with YAML front matter, read into `Article` values."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePosixPath
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import yaml

from . import extract
from ._html import clean, forbidden_characters, fragment, plain, sanitize, squash, strip_tags
from .config import Site, yaml_problem
from .errors import ContentError
from .extract import Question
from .markdown_html import to_html
from .references import missing_images



class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML without implicit timestamps: dates stay text and are read with
    our own rules (site time zone, clear errors) instead of failing inside YAML."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


KNOWN_KEYS = frozenset(
    "title date updated author tags summary key_points faq slug draft image".split()
)
# Every tag is a channel of feeds and a page, each listing the article's tags: keep the
# count small enough that one article cannot make a build quadratic.
MAX_TAGS = 50
MAX_NESTING = 8  # front matter is flat keys, lists and a list of {q, a}: deeper is an attack
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o"})


@dataclass(frozen=True)
class Article:
    """One published or publishable article, its body already sanitized.

    `html` is left empty when an article is listed without its body.
    """

    source: str  # path relative to the content folder, with "/" separators
    slug: str
    title: str
    date: datetime
    updated: datetime | None
    author: str | None
    tags: tuple[str, ...]
    draft: bool
    image: str | None
    summary: str
    key_points: tuple[str, ...]
    faq: tuple[Question, ...]
    html: str = field(default="", repr=False)

    @property
    def path(self) -> str:
        """Where the article's page lives, relative to the site's root URL."""
        return f"{self.slug}/"


class Listing(NamedTuple):
    """What lists and publishing need of an article: no body, no extracts.

    A build reads one of these for every article, so it is kept small and cheap.
    """

    source: str
    slug: str
    title: str
    date: datetime
    updated: datetime | None
    tags: tuple[str, ...]
    draft: bool
    summary: str

    @property
    def path(self) -> str:
        return f"{self.slug}/"


def listing(article: Article) -> Listing:
    return Listing(article.source, article.slug, article.title, article.date, article.updated,
                   article.tags, article.draft, article.summary)


@lru_cache(maxsize=65536)
def slugify(text: str) -> str:
    """An ASCII, lower-case, hyphenated form of TEXT: "Éthique & IA" → "ethique-ia"."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    ascii_text = text.encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")


def slug_for(source: str) -> str:
    path = PurePosixPath(source)
    stem = path.parent.name if path.stem == "index" and path.parent.name else path.stem
    return slugify(stem)


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ContentError(source, line, f"byte 0x{raw[exc.start]:02x} is not UTF-8 text") from None


def split_front_matter(text: str, source: str) -> tuple[str, str, int]:
    """Return (front matter, body, line number where the body starts)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ContentError(source, 1, "no front matter: the file must start with a line '---'")
    for index, line in enumerate(lines[1:], start=1):
        if line.rstrip() in {"---", "..."}:
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :]), index + 2
    raise ContentError(source, 1, "front matter is not closed by a line '---'")


class _FrontMatter:
    """The front matter mapping, with errors that point at the key's line."""

    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source
        self.removed = 0  # characters XML cannot carry, written as YAML escapes ("\f")
        try:
            _refuse_expansion(text, source)
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            line, problem = yaml_problem(exc)
            line = line + 2 if line is not None else 1
            raise ContentError(source, line, f"front matter is not valid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise ContentError(source, 2, "front matter must be a mapping of keys")
        self.data: dict[str, Any] = data

    def line(self, key: str) -> int:
        pattern = re.compile(rf"^['\"]?{re.escape(key)}['\"]?\s*:", re.M)
        match = pattern.search(self.text)
        return self.text.count("\n", 0, match.start()) + 2 if match else 1

    def error(self, key: str, reason: str) -> ContentError:
        return ContentError(self.source, self.line(key), f"{key}: {reason}")

    def _clean(self, value: object) -> str:
        text = str(value)
        found = len(forbidden_characters(text))
        if found:
            self.removed += found
            text = clean(text)
        return text

    def text_value(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise self.error(key, "is required")
            return None
        if isinstance(value, (dict, list)):
            raise self.error(key, "must be text")
        return re.sub(r"\s+", " ", self._clean(value)).strip() or None

    def plain_value(self, key: str, *, required: bool = False) -> str | None:
        """A value that feeds carry as text (a title, a name): markup in it is reduced to its words."""
        value = self.text_value(key, required=required)
        text = plain(value) if value else value
        if required and not text:
            raise self.error(key, "has no text once its markup is removed")
        return text or None

    def text_list(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = value.split(",") if key == "tags" else [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise self.error(key, "must be a list of texts")
        items = (re.sub(r"\s+", " ", self._clean(v)).strip() for v in value)
        if key == "tags":
            items = (plain(item) for item in items)
        return tuple(dict.fromkeys(item for item in items if item))

    def moment(self, key: str, tz, *, required: bool = False) -> datetime | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                shown = repr(value[:40] + "…" if len(value) > 40 else value)
                raise self.error(key, f"{shown} is not a date (write 2026-11-30 or 2026-11-30T09:00:00+01:00)") from None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=tz)
        if isinstance(value, date):
            return datetime.combine(value, time(), tzinfo=tz)
        raise self.error(key, f"{_shown(value)} is not a date")

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, f"{_shown(value)} is not true or false")
        return value

    def questions(self) -> tuple[Question, ...]:
        value = self.data.get("faq")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error("faq", "must be a list of {q: question, a: answer}")
        pairs = []
        for item in value:
            if not isinstance(item, dict) or not item.get("q") or not item.get("a"):
                raise self.error("faq", "each entry needs a question 'q' and an answer 'a'")
            pairs.append(Question(self._clean(item["q"]).strip(), self._clean(item["a"]).strip()))
        return tuple(pairs)

    def unknown_keys(self) -> list[str]:
        return [str(k) for k in self.data if k not in KNOWN_KEYS]


def _image_url(meta: _FrontMatter, base: str) -> str | None:
    """The article's image as an absolute http(s) URL; any other scheme is refused."""
    image = meta.text_value("image")
    if not image:
        return None
    url = urljoin(base, image)
    if any(ord(c) < 32 or ord(c) == 127 for c in image) or urlsplit(url).scheme not in {"http", "https"}:
        raise meta.error("image", f"{_shown(image)} is not an http(s) or relative URL")
    return url


def _shown(value: object) -> str:
    """A value for an error message, never more than a line."""
    text = repr(value) if isinstance(value, (str, int, float)) else type(value).__name__
    return text if len(text) <= 40 else text[:39] + "…"


def _refuse_expansion(text: str, source: str) -> None:
    """Refuse anchors, aliases and deep nesting before YAML builds anything.

    An alias repeats a value without copying it, and a few nested ones stand
    for billions of values ("billion laughs"): reading the events alone costs
    time in proportion to the text, and nothing is expanded.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ContentError(source, event.start_mark.line + 2,
                               "front matter: anchors and aliases are not allowed")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise ContentError(source, event.start_mark.line + 2,
                                   f"front matter: nested deeper than {MAX_NESTING} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


_LEADING_H1 = re.compile(r"^\s*<h1[^>]*>(.*?)</h1>\s*", re.S)


def _without_title_heading(html: str, title: str) -> str:
    """The body less an opening <h1> that repeats the title: pages and feeds show the title already."""
    match = _LEADING_H1.match(html)
    if match and squash(strip_tags(match.group(1))).casefold() == squash(title).casefold():
        return html[match.end():]
    return html


def _distinct_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """Tags that name one tag page once: "IA", "ia" and "Ia" keep the first spelling."""
    seen: dict[str, str] = {}
    for tag in tags:
        seen.setdefault(slugify(tag) or tag, tag)
    return tuple(seen.values())


def parse_article(site: Site, source: str, raw: bytes) -> tuple[Article, list[str]]:
    """Read one article from its bytes; return it with warnings about its front matter.

    SOURCE is the file's path relative to the content folder; it names the
    file in error messages and places relative links and images.
    """
    label = f"{site.content_dir.name}/{source}"
    text = _decode(raw, label)
    forbidden = forbidden_characters(text)
    where = (text.count("\n", 0, forbidden[0]) + 1, ord(text[forbidden[0]])) if forbidden else None
    if forbidden:
        text = clean(text)
    meta_text, body, body_line = split_front_matter(text, label)
    meta = _FrontMatter(meta_text, label)
    warnings = [f"{label}:{meta.line(k)}: unknown key '{k}' (ignored)" for k in meta.unknown_keys()]

    title = meta.plain_value("title", required=True)
    published = meta.moment("date", site.tz, required=True)
    slug = slugify(meta.text_value("slug") or "") or slug_for(source)
    if not slug:
        raise meta.error("slug", "cannot make an ASCII slug from this name; set 'slug'")
    folder = str(PurePosixPath(source).parent)
    base = site.url("" if folder == "." else folder + "/")
    page = site.url(slug + "/")

    html = _without_title_heading(sanitize(to_html(body, slugify), base=base, page=page), title)
    tree = fragment(html)
    tags = _distinct_tags(meta.text_list("tags"))
    if len(tags) > MAX_TAGS:
        warnings.append(f"{label}:{meta.line('tags')}: {len(tags)} tags; only the first {MAX_TAGS} are kept")
        tags = tags[:MAX_TAGS]
    article = Article(
        source=source,
        slug=slug,
        title=title,
        date=published,
        updated=meta.moment("updated", site.tz),
        author=meta.plain_value("author"),
        tags=tags,
        draft=meta.flag("draft"),
        image=_image_url(meta, base),
        summary=meta.text_value("summary") or extract.lede(tree, site.extract.summary_length),
        key_points=meta.text_list("key_points")[: site.extract.key_points]
        or extract.key_points(tree, site.extract.key_points),
        faq=meta.questions() or extract.faq(tree),
        html=html,
    )
    image = meta.text_value("image")
    warnings += missing_images(site.content_dir, label, source, body, body_line,
                               (meta.line("image"), image) if image else None)
    if count := len(forbidden) + meta.removed:
        line, code = where or (2, 0)
        first = f", the first U+{code:04X}" if where else ""
        warnings.append(f"{label}:{line}: {count} control character{'s' * (count > 1)} removed "
                        f"(feeds cannot carry them{first})")
    return article, warnings


def to_record(article: Article) -> dict[str, Any]:
    """The article without its body, as JSON-ready data."""
    return {
        "source": article.source,
        "slug": article.slug,
        "title": article.title,
        "date": article.date.isoformat(),
        "updated": article.updated.isoformat() if article.updated else None,
        "author": article.author,
        "tags": list(article.tags),
        "draft": article.draft,
        "image": article.image,
        "summary": article.summary,
        "key_points": list(article.key_points),
        "faq": [[q.question, q.answer] for q in article.faq],
    }


def from_record(record: dict[str, Any], html: str = "") -> Article:
    return Article(
        source=record["source"],
        slug=record["slug"],
        title=record["title"],
        date=datetime.fromisoformat(record["date"]),
        updated=datetime.fromisoformat(record["updated"]) if record["updated"] else None,
        author=record["author"],
        tags=tuple(record["tags"]),
        draft=record["draft"],
        image=record["image"],
        summary=record["summary"],
        key_points=tuple(record["key_points"]),
        faq=tuple(Question(q, a) for q, a in record["faq"]),
        html=html,
    )
