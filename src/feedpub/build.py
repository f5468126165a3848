"""The build: content/ in, feeds and pages out, doing only the work that changed.

Read every source (re-reading only files whose size or mtime moved), parse the
articles not yet in the cache (on all cores when there are many), decide what
is published, then render each output whose inputs changed and write it only
if its bytes changed.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from . import __version__, templating
from .catalog import Catalog, Publication
from .config import Site
from .content import Article, from_record, parse_article, to_record
from .errors import ContentError
from .feeds import FEED_FILES, Channel, FeedItem, render_feeds
from .output import Writer
from .pages import ALL_ARTICLES, archive_page, article_page, list_page, tag_folder

CATALOG_FILE = "build.sqlite"
# Top-level names the site itself uses; an article slug may not take them.
RESERVED_SLUGS = frozenset(
    {"tags", "articles", "archive", "preview", "subscribe", "confirm", "unsubscribe", "healthz", "static"}
)
# Below this many articles to parse, starting worker processes costs more than it saves.
POOL_THRESHOLD = 64


@dataclass(frozen=True)
class Published:
    """A published article (without its body) and what the publication log knows of it."""

    article: Article
    id: str
    first_published: datetime
    updated: datetime
    key: str  # the parse cache key, to fetch the body


@dataclass
class BuildReport:
    published: list[Published] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parsed: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def code_fingerprint() -> str:
    """Changes with feedpub's own code, so an upgrade re-parses and re-renders."""
    package = Path(__file__).parent
    stats = ((p.name, p.stat()) for p in sorted(package.glob("*.py")))
    return _digest(__version__, *(f"{name}:{s.st_size}:{s.st_mtime_ns}" for name, s in stats))


def content_files(site: Site) -> tuple[list[str], list[str]]:
    """(articles, other files) under the content folder, as sorted relative paths."""
    articles, assets = [], []
    for folder, dirs, files in os.walk(site.content_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(folder).relative_to(site.content_dir)
        for name in files:
            if name.startswith("."):
                continue
            path = (relative / name).as_posix()
            (articles if name.endswith(".md") else assets).append(path)
    return sorted(articles), sorted(assets)


def _source_hashes(site: Site, catalog: Catalog, sources: list[str]) -> dict[str, str]:
    """Each source's content hash, reading only files whose size or mtime changed."""
    known = catalog.sources()
    hashes, changed = {}, []
    for source in sources:
        stat = (site.content_dir / source).stat()
        old = known.get(source)
        if old and old[0] == stat.st_mtime_ns and old[1] == stat.st_size:
            hashes[source] = old[2]
            continue
        hashes[source] = _digest((site.content_dir / source).read_bytes())
        changed.append((source, stat.st_mtime_ns, stat.st_size, hashes[source]))
    catalog.save_sources(changed)
    catalog.forget_sources(set(known) - set(sources))
    return hashes


_worker_site: Site | None = None


def _init_worker(site: Site) -> None:
    global _worker_site
    _worker_site = site


def _parse_file(source: str, site: Site | None = None) -> tuple[str, dict | str, str, list[str]]:
    """('ok', record, html, warnings) or ('error', message, '', [])."""
    site = site or _worker_site
    try:
        raw = (site.content_dir / source).read_bytes()
        article, warnings = parse_article(site, source, raw)
    except ContentError as exc:
        return "error", str(exc), "", []
    except OSError as exc:
        return "error", f"{site.content_dir.name}/{source}:1: cannot be read ({exc.strerror})", "", []
    return "ok", to_record(article), article.html, warnings


def parse_all(site: Site, sources: list[str]) -> Iterator[tuple[str, tuple]]:
    """Parse SOURCES, in worker processes when there are many; yield (source, result)."""
    if len(sources) < POOL_THRESHOLD:
        for source in sources:
            yield source, _parse_file(source, site)
        return
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(site,)) as pool:
        chunk = max(1, min(64, len(sources) // (workers * 8)))
        yield from zip(sources, pool.map(_parse_file, sources, chunksize=chunk))


def choose_slugs(site: Site, articles: dict[str, Article], log: dict[str, Publication],
                 now: datetime) -> tuple[dict[str, str], list[str]]:
    """Which source publishes under each slug, and the errors of those left out.

    Drafts and articles dated in the future are not published yet. When two
    sources claim one slug, the one the log already knows keeps it; otherwise
    the first by path.
    """
    label = site.content_dir.name

    def priority(item: tuple[str, Article]) -> tuple[int, str]:
        source, article = item
        logged = log.get(article.slug)
        return (0 if logged and logged.source == source else 1, source)

    due = [(s, a) for s, a in articles.items() if not a.draft and a.date <= now]
    owners: dict[str, str] = {}
    errors = []
    for source, article in sorted(due, key=priority):
        if article.slug in RESERVED_SLUGS:
            errors.append(f"{label}/{source}:1: slug '{article.slug}' is reserved for the site's own pages")
        elif article.slug in owners:
            errors.append(f"{label}/{source}:1: slug '{article.slug}' is already taken by {label}/{owners[article.slug]}")
        else:
            owners[article.slug] = source
    return owners, errors


def _publish(site: Site, catalog: Catalog, articles: dict[str, Article], keys: dict[str, str],
             hashes: dict[str, str], now: datetime, report: BuildReport) -> list[Published]:
    """Decide which articles are published, and record new and changed ones in the log."""
    log = catalog.publications()
    owners, errors = choose_slugs(site, articles, log, now)
    report.errors.extend(errors)
    published = []
    for slug, source in owners.items():
        article, digest = articles[source], hashes[source]
        entry = log.get(slug)
        if entry is None:
            entry = Publication(slug, source, f"tag:{site.host},{article.date.date().isoformat()}:/{slug}/",
                                now, digest, None)
            catalog.save_publication(entry)
        elif entry.hash != digest or entry.source != source:
            entry = Publication(slug, source, entry.id, entry.first_published, digest, now)
            catalog.save_publication(entry)
        updated = max(filter(None, (article.date, article.updated, entry.changed)))
        published.append(Published(article, entry.id, entry.first_published, updated, keys[source]))
    published.sort(key=lambda p: (p.article.date, p.article.slug), reverse=True)
    return published


def _load_articles(catalog: Catalog, sources_by_key: dict[str, str], report: BuildReport) -> dict[str, Article]:
    """Every parsed article (without its body) by source path, sorted by path."""
    snapshot = catalog.snapshot()
    missing = [key for key in sources_by_key if key not in snapshot]
    for key, record, warnings in catalog.metas(missing):
        snapshot[key] = (from_record(record), warnings)
    current = {key: snapshot[key] for key in sources_by_key if key in snapshot}
    if missing or len(current) != len(snapshot):
        catalog.save_snapshot(current)
    articles = {}
    for key, (article, warnings) in current.items():
        articles[sources_by_key[key]] = article
        report.warnings.extend(warnings)
    return dict(sorted(articles.items()))


class _Outputs:
    """Renders an output only when the fingerprint of its inputs changed."""

    def __init__(self, writer: Writer, previous: dict[str, str]) -> None:
        self.writer, self.previous, self.current = writer, previous, {}

    def add(self, path: str, fingerprint: str, render: Callable[[], bytes]) -> None:
        self.current[path] = fingerprint
        if self.previous.get(path) == fingerprint and self.writer.exists(path):
            self.writer.keep(path)
        else:
            self.writer.write(path, render())

    def add_many(self, fingerprint: str, paths: list[str], render: Callable[[], dict[str, bytes]]) -> None:
        if all(self.previous.get(p) == fingerprint and self.writer.exists(p) for p in paths):
            for path in paths:
                self.current[path] = fingerprint
                self.writer.keep(path)
            return
        for path, data in render().items():
            self.current[path] = fingerprint
            self.writer.write(path, data)

    def remove_stale(self) -> list[str]:
        stale = sorted(set(self.previous) - set(self.current))
        for path in stale:
            self.writer.remove(path)
        return stale


def _render_outputs(site: Site, catalog: Catalog, published: list[Published],
                    assets: list[str], outputs: _Outputs) -> None:
    # Anything that shapes every output: settings, templates, feedpub's code.
    context = _digest(site.fingerprint(), templating.fingerprint(site.templates_dir), code_fingerprint())

    def with_body(p: Published) -> Article:
        return replace(p.article, html=catalog.html(p.key))

    for p in published:
        outputs.add(f"{p.article.path}index.html", f"{context}|{p.key}|{p.updated.isoformat()}",
                    lambda p=p: article_page(site, with_body(p), p.updated))

    for channel, members in _channels(site, published):
        newest = members[: site.feeds.items]
        fingerprint = _digest(context, *(f"{p.key}|{p.id}|{p.updated.isoformat()}" for p in newest))
        paths = [channel.folder + name for name in FEED_FILES.values()]
        outputs.add_many(fingerprint, paths, lambda c=channel, n=newest: render_feeds(
            site, c, [FeedItem(with_body(p), p.id, p.updated) for p in n]))
        # The home page shows the newest articles; a tag page, all of the tag's.
        listed = members if channel.folder else newest
        outputs.add(
            channel.folder + "index.html",
            _digest(context, *(p.key for p in listed)),
            lambda c=channel, ls=listed: list_page(
                site, title=c.title, folder=c.folder, articles=[p.article for p in ls],
                feeds_folder=c.folder, more=ALL_ARTICLES),
        )

    months: dict[str, list[Article]] = {}
    for p in published:
        months.setdefault(p.article.date.strftime("%Y/%m/"), []).append(p.article)
    for month, articles in months.items():
        outputs.add(ALL_ARTICLES + month + "index.html", _digest(context, *(a.source + a.title for a in articles)),
                    lambda m=month, a=articles: list_page(
                        site, title=a[0].date, folder=ALL_ARTICLES + m, articles=a, month=True))
    index = [(month, articles[0].date, len(articles)) for month, articles in months.items()]
    outputs.add(ALL_ARTICLES + "index.html", _digest(context, repr(index)),
                lambda: archive_page(site, ALL_ARTICLES, index))

    for asset in assets:
        stat = os.stat(os.path.join(site.content_dir, asset))
        outputs.add(asset, f"{stat.st_size}:{stat.st_mtime_ns}",
                    lambda a=asset: (site.content_dir / a).read_bytes())


def _channels(site: Site, published: list[Published]) -> list[tuple[Channel, list[Published]]]:
    """The site's own feed, then one per tag, each with its articles newest first."""
    channels = [(Channel(site.title, site.description, ""), published)]
    if site.feeds.tag_feeds:
        by_tag: dict[str, tuple[str, list[Published]]] = {}
        for p in published:
            for tag in p.article.tags:
                by_tag.setdefault(tag_folder(tag), (tag, []))[1].append(p)
        channels += [
            (Channel(f"{site.title} — {tag}", site.description, folder), members)
            for folder, (tag, members) in by_tag.items()
        ]
    return channels


def build(site: Site, *, now: datetime | None = None) -> BuildReport:
    """Publish the site; return what was published, written and found wrong."""
    now = now or datetime.now(site.tz)
    report = BuildReport()
    sources, assets = content_files(site)
    with Catalog(site.state_dir / CATALOG_FILE) as catalog:
        hashes = _source_hashes(site, catalog, sources)
        context = _digest(site.fingerprint(), code_fingerprint())
        keys = {s: _digest(hashes[s], context, s) for s in sources}
        cached = catalog.parsed_keys()
        todo = [s for s in sources if keys[s] not in cached]
        failed = set()
        for source, (status, record, html, warnings) in parse_all(site, todo):
            if status == "error":
                report.errors.append(record)
                failed.add(source)
            else:
                catalog.save_parsed(keys[source], record, html, warnings)
                report.parsed += 1
        catalog.prune_parsed(set(keys.values()))
        catalog.commit()

        articles = _load_articles(catalog, {keys[s]: s for s in sources if s not in failed}, report)
        report.published = _publish(site, catalog, articles, keys, hashes, now, report)
        writer = Writer(site.output_dir)
        outputs = _Outputs(writer, catalog.outputs())
        _render_outputs(site, catalog, report.published, assets, outputs)
        report.removed = outputs.remove_stale()
        catalog.save_outputs(outputs.current)
    report.written, report.unchanged = writer.written, writer.unchanged
    report.errors.sort()
    return report


def check(site: Site, *, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for the site's templates and content; writes nothing."""
    now = now or datetime.now(site.tz)
    errors, warnings = templating.check(site.templates_dir), []
    sources, _ = content_files(site)
    articles = {}
    for source, (status, record, _html, found) in parse_all(site, sources):
        if status == "error":
            errors.append(record)
        else:
            articles[source] = from_record(record)
            warnings.extend(found)
    errors.extend(choose_slugs(site, articles, {}, now)[1])
    return sorted(errors), warnings
