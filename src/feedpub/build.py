"""The build: content/ in, feeds and pages out, doing only the work that changed.

Read every source (re-reading only files whose size or mtime moved), parse the
articles not yet in the cache (on all cores when there are many), decide what
is published, then render each output whose inputs changed and write it only
if its bytes changed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from . import __version__, templating
from .catalog import Catalog, Publication
from .config import Site
from .content import Listing, listing, parse_article
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


class Published(NamedTuple):
    """A published article and what the publication log knows of it."""

    article: Listing
    id: str
    first_published: datetime
    updated: datetime
    key: str  # the parse cache key: Catalog.article(key) gives the whole article


@dataclass
class BuildReport:
    published: list[Published] = field(default_factory=list)  # newest first
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parsed: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


def code_fingerprint() -> str:
    """Changes with feedpub's own code, so an upgrade re-parses and re-renders."""
    package = Path(__file__).parent
    stats = ((p.name, p.stat()) for p in sorted(package.glob("*.py")))
    return _digest(__version__, *(f"{name}:{s.st_size}:{s.st_mtime_ns}" for name, s in stats))


def content_files(site: Site) -> tuple[list[str], list[str]]:
    """(articles, other files) under the content folder, as sorted relative paths."""
    articles, assets = [], []

    def walk(folder: str, prefix: str) -> None:
        for entry in os.scandir(folder):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                walk(entry.path, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".md"):
                articles.append(prefix + entry.name)
            else:
                assets.append(prefix + entry.name)

    if site.content_dir.is_dir():
        walk(str(site.content_dir), "")
    return sorted(articles), sorted(assets)


def _source_hashes(site: Site, catalog: Catalog, sources: list[str]) -> dict[str, str]:
    """Each source's content hash, reading only files whose size or mtime changed."""
    known = catalog.sources()
    folder = str(site.content_dir) + os.sep
    hashes, changed = {}, []
    for source in sources:
        stat = os.stat(folder + source)
        old = known.get(source)
        if old and old[0] == stat.st_mtime_ns and old[1] == stat.st_size:
            hashes[source] = old[2]
            continue
        with open(folder + source, "rb") as file:
            hashes[source] = hashlib.blake2b(file.read(), digest_size=16).hexdigest()
        changed.append((source, stat.st_mtime_ns, stat.st_size, hashes[source]))
    catalog.save_sources(changed)
    catalog.forget_sources(set(known) - set(sources))
    return hashes


_worker_site: Site | None = None


def _init_worker(site: Site) -> None:
    global _worker_site
    _worker_site = site


def _parse_file(source: str, site: Site | None = None):
    """(article, warnings), or the one-line message of why SOURCE cannot be published."""
    site = site or _worker_site
    try:
        return parse_article(site, source, (site.content_dir / source).read_bytes())
    except ContentError as exc:
        return str(exc)
    except OSError as exc:
        return f"{site.content_dir.name}/{source}:1: cannot be read ({exc.strerror})"


def _parse_for_catalog(source: str, site: Site | None = None):
    """A row for the catalog's `parsed` table, or the message of why SOURCE cannot be published."""
    result = _parse_file(source, site)
    return result if isinstance(result, str) else Catalog.parsed_row(*result)


def parse_all(site: Site, sources: list[str], task=_parse_file) -> Iterator[tuple[str, object]]:
    """Run TASK on SOURCES, in worker processes when there are many; yield (source, result)."""
    if len(sources) < POOL_THRESHOLD:
        for source in sources:
            yield source, task(source, site)
        return
    from concurrent.futures import ProcessPoolExecutor  # costs an import a small rebuild can skip

    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(site,)) as pool:
        chunk = max(1, min(64, len(sources) // (workers * 8)))
        yield from zip(sources, pool.map(task, sources, chunksize=chunk))


def choose_slugs(site: Site, articles: dict[str, Listing], log: dict[str, Publication],
                 now: datetime) -> tuple[dict[str, str], list[str]]:
    """Which source publishes under each slug, and the errors of those left out.

    Drafts and articles dated in the future are not published yet. When two
    sources claim one slug, the one the log already knows keeps it; otherwise
    the first by path.
    """
    label = site.content_dir.name
    owners: dict[str, str] = {}
    errors = []
    now = now.astimezone(timezone.utc)  # fixed offsets compare faster than a zone's rules
    due = [(s, a.slug) for s, a in articles.items() if not a.draft and a.date <= now]
    known = [(s, slug) for s, slug in due if (p := log.get(slug)) is not None and p.source == s]
    for source, slug in known + sorted(set(due) - set(known)):
        if slug in RESERVED_SLUGS:
            errors.append(f"{label}/{source}:1: slug '{slug}' is reserved for the site's own pages")
        elif slug in owners:
            errors.append(f"{label}/{source}:1: slug '{slug}' is already taken by {label}/{owners[slug]}")
        else:
            owners[slug] = source
    return owners, errors


def _publish(site: Site, catalog: Catalog, articles: dict[str, Listing], keys: dict[str, str],
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
            entry = entry._replace(source=source, hash=digest, changed=now)
            catalog.save_publication(entry)
        updated = max(filter(None, (article.date, article.updated, entry.changed)))
        published.append(Published(article, entry.id, entry.first_published, updated, keys[source]))
    # Timestamps compare much faster than aware datetimes with differing zones.
    published.sort(key=lambda p: (p.article.date.timestamp(), p.article.slug), reverse=True)
    return published


class _Outputs:
    """Renders an output only when the fingerprint of its inputs changed."""

    def __init__(self, writer: Writer, previous: dict[str, str]) -> None:
        self.writer, self.previous = writer, previous
        self.current: dict[str, str] = {}
        self.root = str(writer.root) + os.sep

    def fresh(self, path: str, fingerprint: str) -> bool:
        return self.previous.get(path) == fingerprint and os.path.exists(self.root + path)

    def keep(self, path: str, fingerprint: str) -> None:
        self.current[path] = fingerprint
        self.writer.keep(path)

    def put(self, path: str, fingerprint: str, data: bytes) -> None:
        self.current[path] = fingerprint
        self.writer.write(path, data)

    def add(self, path: str, fingerprint: str, render: Callable[[], bytes]) -> None:
        if self.fresh(path, fingerprint):
            self.keep(path, fingerprint)
        else:
            self.put(path, fingerprint, render())

    def add_many(self, fingerprint: str, paths: list[str], render: Callable[[], dict[str, bytes]]) -> None:
        """Outputs rendered together (the three feeds of a channel) share one fingerprint."""
        if all(self.fresh(path, fingerprint) for path in paths):
            for path in paths:
                self.keep(path, fingerprint)
        else:
            for path, data in render().items():
                self.put(path, fingerprint, data)

    def finish(self, catalog: Catalog) -> list[str]:
        """Delete outputs no longer produced; record the fingerprints that changed."""
        stale = sorted(set(self.previous) - set(self.current))
        for path in stale:
            self.writer.remove(path)
        changed = {p: f for p, f in self.current.items() if self.previous.get(p) != f}
        catalog.update_outputs(changed, stale)
        return stale


def _render_outputs(site: Site, catalog: Catalog, published: list[Published],
                    assets: list[str], outputs: _Outputs, report: BuildReport) -> None:
    # Anything that shapes every output: settings, templates, feedpub's code.
    context = _digest(site.fingerprint(), templating.fingerprint(site.templates_dir), code_fingerprint())

    for p in published:  # the hottest loop of a rebuild: no closure per article
        path, fingerprint = f"{p.article.slug}/index.html", f"{context}|{p.key}|{p.updated.isoformat()}"
        if outputs.fresh(path, fingerprint):
            outputs.keep(path, fingerprint)
        else:
            outputs.put(path, fingerprint, article_page(site, catalog.article(p.key), p.updated))

    for channel, members in _channels(site, published):
        newest = members[: site.feeds.items]
        fingerprint = _digest(context, *(f"{p.key}|{p.id}|{p.updated.isoformat()}" for p in newest))
        paths = [channel.folder + name for name in FEED_FILES.values()]
        outputs.add_many(fingerprint, paths, lambda c=channel, n=newest: render_feeds(
            site, c, [FeedItem(catalog.article(p.key), p.id, p.updated) for p in n]))
        # The home page shows the newest articles; a tag page, all of the tag's.
        listed = members if channel.folder else newest
        outputs.add(
            channel.folder + "index.html",
            _digest(context, *(p.key for p in listed)),
            lambda c=channel, ls=listed: list_page(
                site, title=c.title, folder=c.folder, articles=[p.article for p in ls],
                feeds_folder=c.folder, more=ALL_ARTICLES),
        )

    months: dict[str, list[Listing]] = {}
    for p in published:
        date = p.article.date
        months.setdefault(f"{date.year:04d}/{date.month:02d}/", []).append(p.article)
    for month, articles in months.items():
        outputs.add(ALL_ARTICLES + month + "index.html", _digest(context, *(a.source + a.title for a in articles)),
                    lambda m=month, a=articles: list_page(
                        site, title=a[0].date, folder=ALL_ARTICLES + m, articles=a, month=True))
    index = [(month, articles[0].date, len(articles)) for month, articles in months.items()]
    outputs.add(ALL_ARTICLES + "index.html", _digest(context, repr(index)),
                lambda: archive_page(site, ALL_ARTICLES, index))

    for asset in assets:
        if asset in outputs.current:
            report.errors.append(f"{site.content_dir.name}/{asset}:1: the site writes {asset} itself; "
                                 f"rename or move this file")
            continue
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


def _parse_changed(site: Site, catalog: Catalog, sources: list[str], keys: dict[str, str],
                   report: BuildReport) -> set[str]:
    """Parse the sources whose key is not cached; return the sources that failed."""
    cached = catalog.parsed_keys()
    failed, rows = set(), []
    for source, result in parse_all(site, [s for s in sources if keys[s] not in cached], _parse_for_catalog):
        if isinstance(result, str):
            report.errors.append(result)
            failed.add(source)
        else:
            rows.append((keys[source], *result))
            report.parsed += 1
            if len(rows) >= 256:
                catalog.save_parsed(rows)
                rows.clear()
    catalog.save_parsed(rows)
    catalog.forget_parsed(cached - set(keys.values()))  # every key saved above is a current one
    catalog.commit()
    return failed


_one_build_at_a_time = threading.Lock()  # the service's build and digest jobs may overlap


def build(site: Site, *, now: datetime | None = None) -> BuildReport:
    """Publish the site; return what was published, written and found wrong."""
    with _one_build_at_a_time:
        return _build(site, now or datetime.now(site.tz))


def _build(site: Site, now: datetime) -> BuildReport:
    report = BuildReport()
    sources, assets = content_files(site)
    with Catalog(site.state_dir / CATALOG_FILE) as catalog:
        hashes = _source_hashes(site, catalog, sources)
        context = _digest(site.fingerprint(), code_fingerprint())
        keys = {s: _digest(hashes[s], context, s) for s in sources}
        failed = _parse_changed(site, catalog, sources, keys, report)

        wanted = {keys[s] for s in sources if s not in failed}
        found = {}
        for _key, listed, warnings in catalog.listings(wanted):
            found[listed.source] = (listed, warnings)
        articles = {}
        for source in sources:  # in path order, like the warnings
            if source in found:
                articles[source], warnings = found[source]
                report.warnings.extend(warnings)
        report.published = _publish(site, catalog, articles, keys, hashes, now, report)

        writer = Writer(site.output_dir)
        outputs = _Outputs(writer, catalog.outputs())
        _render_outputs(site, catalog, report.published, assets, outputs, report)
        report.removed = outputs.finish(catalog)
    report.written, report.unchanged = writer.written, writer.unchanged
    report.errors.sort()
    return report


def check(site: Site, *, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for the site's templates and content; writes nothing."""
    now = now or datetime.now(site.tz)
    errors, warnings = templating.check(site.templates_dir), []
    sources, _ = content_files(site)
    articles = {}
    for source, result in parse_all(site, sources):
        if isinstance(result, str):
            errors.append(result)
        else:
            article, found = result
            articles[source] = listing(article)
            warnings.extend(found)
    errors.extend(choose_slugs(site, articles, {}, now)[1])
    return sorted(errors), warnings
