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

from . import __version__, _workers, sources as content_folder, templating
from .buildlock import BuildLock
from .catalog import Catalog, Publication
from .config import Site
from .content import Listing, listing, parse_article
from .errors import ContentError
from .languages import language_warnings
from . import links as article_links
from .feeds import FEED_FILES, Channel, FeedItem, render_feeds
from .output import Writer
from .pages import ALL_ARTICLES, archive_page, article_page, list_page, tag_folder
from .sources import ContentFiles, Source

CATALOG_FILE = "build.sqlite"
# Top-level names the site itself uses; an article slug may not take them.
RESERVED_SLUGS = frozenset(
    {"tags", "articles", "archive", "preview", "subscribe", "confirm", "unsubscribe", "healthz", "static"}
)


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


def content_files(site: Site) -> ContentFiles:
    """The articles and other files under the content folder, and what was left out of them."""
    return content_folder.walk(site.content_dir)


def _source_hashes(site: Site, catalog: Catalog, sources: list[Source],
                   report: BuildReport) -> dict[str, str]:
    """Each readable source's content hash, reading only files whose size or mtime changed.

    A source that cannot be read is reported and left out of the result.
    """
    known = catalog.sources()
    hashes, changed = {}, []
    for source in sources:
        old = known.get(source.name)
        if old and old[0] == source.mtime_ns and old[1] == source.size:
            hashes[source.name] = old[2]
            continue
        try:
            data = _read_article(site, source)
        except ContentError as exc:
            report.errors.append(str(exc))
            continue
        hashes[source.name] = hashlib.blake2b(data, digest_size=16).hexdigest()
        changed.append((source.name, source.mtime_ns, source.size, hashes[source.name]))
    catalog.save_sources(changed)
    catalog.forget_sources(set(known) - set(hashes))
    return hashes


def _read_article(site: Site, source: Source) -> bytes:
    limit = site.content.max_bytes
    if source.size > limit:  # known from the walk: not even opened
        raise ContentError(f"{site.content_dir.name}/{source.name}", 1,
                           f"{source.size} bytes, larger than content.max_bytes ({limit}); left out")
    return content_folder.read(site.content_dir, source, limit)


def _parse_file(source: Source, site: Site | None = None):
    """(article, warnings), or the one-line message of why SOURCE cannot be published."""
    site = site or _workers.shared()
    try:
        return parse_article(site, source.name, _read_article(site, source))
    except ContentError as exc:
        return str(exc)
    except OSError as exc:
        return f"{site.content_dir.name}/{source.name}:1: cannot be read ({exc.strerror})"


def _parse_for_catalog(source: Source, site: Site | None = None):
    """A row for the catalog's `parsed` table, or the message of why SOURCE cannot be published."""
    result = _parse_file(source, site)
    return result if isinstance(result, str) else Catalog.parsed_row(*result)


def parse_all(site: Site, sources: list[Source], task=_parse_file) -> Iterator[tuple[Source, object]]:
    """Run TASK on SOURCES, in worker processes when there are many; yield (source, result)."""
    return _workers.run_all(task, sources, site)


def choose_slugs(site: Site, articles: dict[str, Listing], log: dict[str, Publication],
                 now: datetime, *, unpublished: bool = False) -> tuple[dict[str, str], list[str]]:
    """Which source publishes under each slug, and the errors of those left out.

    Drafts and articles dated in the future are not published yet, unless
    UNPUBLISHED (the writer's preview shows them). When two sources claim one
    slug, the one the log already knows keeps it; otherwise the first by path.
    """
    label = site.content_dir.name
    owners: dict[str, str] = {}
    errors = []
    now = now.astimezone(timezone.utc)  # fixed offsets compare faster than a zone's rules
    due = [(s, a.slug) for s, a in articles.items() if unpublished or (not a.draft and a.date <= now)]
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
             hashes: dict[str, str], now: datetime, report: BuildReport,
             unpublished: bool = False) -> list[Published]:
    """Decide which articles are published, and record new and changed ones in the log."""
    log = catalog.publications()
    owners, errors = choose_slugs(site, articles, log, now, unpublished=unpublished)
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


def _render_outputs(site: Site, catalog: article_links.LinkedCatalog, published: list[Published],
                    assets: list[Source], outputs: _Outputs, report: BuildReport) -> None:
    # Anything that shapes every output: settings, templates, feedpub's code.
    context = _digest(site.fingerprint(), templating.fingerprint(site.templates_dir), code_fingerprint())

    for p in published:  # the hottest loop of a rebuild: no closure per article
        path, fingerprint = f"{p.article.slug}/index.html", f"{context}|{catalog.fingerprint(p.key)}|{p.updated.isoformat()}"
        if outputs.fresh(path, fingerprint):
            outputs.keep(path, fingerprint)
        else:
            outputs.put(path, fingerprint, article_page(site, catalog.article(p.key), p.updated))

    for channel, members in _channels(site, published):
        newest = members[: site.feeds.items]
        fingerprint = _digest(context, *(f"{catalog.fingerprint(p.key)}|{p.id}|{p.updated.isoformat()}" for p in newest))
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
        if asset.name in outputs.current:
            report.errors.append(f"{site.content_dir.name}/{asset.name}:1: the site writes {asset.name} "
                                 f"itself; rename or move this file")
            continue
        try:
            outputs.add(asset.name, f"{asset.size}:{asset.mtime_ns}:{asset.real}",
                        lambda a=asset: content_folder.read(site.content_dir, a))
        except ContentError as exc:
            report.errors.append(str(exc))


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


def _parse_changed(site: Site, catalog: Catalog, sources: list[Source], keys: dict[str, str],
                   report: BuildReport, on_progress: Callable[[int, int], None] | None = None) -> set[str]:
    """Parse the sources whose key is not cached; return the names of those that failed.

    ON_PROGRESS, when given, hears (parsed so far, to parse) after each one: parsing is the long step.
    """
    cached = catalog.parsed_keys()
    failed, rows = set(), []
    changed = [s for s in sources if keys[s.name] not in cached]
    for done, (source, result) in enumerate(parse_all(site, changed, _parse_for_catalog), start=1):
        if on_progress:
            on_progress(done, len(changed))
        if isinstance(result, str):
            report.errors.append(result)
            failed.add(source.name)
        else:
            rows.append((keys[source.name], *result))
            report.parsed += 1
            if len(rows) >= 256:
                catalog.save_parsed(rows)
                rows.clear()
    catalog.save_parsed(rows)
    catalog.forget_parsed(cached - set(keys.values()))  # every key saved above is a current one
    catalog.commit()
    return failed


_one_build_at_a_time = threading.Lock()  # the service's build and digest jobs may overlap


def build(site: Site, *, now: datetime | None = None, unpublished: bool = False,
          on_progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """Publish the site; return what was published, written and found wrong.

    With UNPUBLISHED, drafts and future articles are built too: only for a
    preview site with its own output and state folders.
    Another build of the same site, in this process or another, is waited for.
    """
    with _one_build_at_a_time, BuildLock(site.state_dir):
        return _build(site, now or datetime.now(site.tz), unpublished, on_progress)


def _build(site: Site, now: datetime, unpublished: bool = False,
           on_progress: Callable[[int, int], None] | None = None) -> BuildReport:
    report = BuildReport()
    found = content_files(site)
    report.warnings.extend(language_warnings(site))
    report.warnings.extend(found.warnings)
    writer = Writer(site.output_dir)
    writer.remove_leftovers()  # a killed build's temporary files: nobody else writes here now
    with Catalog(site.state_dir / CATALOG_FILE) as catalog:
        hashes = _source_hashes(site, catalog, found.articles, report)
        readable = [s for s in found.articles if s.name in hashes]
        context = _digest(site.fingerprint(), code_fingerprint())
        keys = {s.name: _digest(hashes[s.name], context, s.name) for s in readable}
        failed = _parse_changed(site, catalog, readable, keys, report, on_progress)

        wanted = {keys[s.name] for s in readable if s.name not in failed}
        listed = {}
        for _key, entry, warnings in catalog.listings(wanted):
            listed[entry.source] = (entry, warnings)
        articles = {}
        for source in readable:  # in path order, like the warnings
            if source.name in listed:
                articles[source.name], warnings = listed[source.name]
                report.warnings.extend(warnings)
        report.published = _publish(site, catalog, articles, keys, hashes, now, report, unpublished)
        links = article_links.permalinks(site, [p.article for p in report.published])
        linking = catalog.linking_keys({p.key for p in report.published})
        report.warnings.extend(article_links.source_problems(site, [p.article.source for p in report.published
                                                     if p.key in linking], links))

        outputs = _Outputs(writer, catalog.outputs())
        _render_outputs(site, article_links.LinkedCatalog(site, catalog, links, linking), report.published,
                        found.assets, outputs, report)
        report.removed = outputs.finish(catalog)
    report.written, report.unchanged = writer.written, writer.unchanged
    report.errors.sort()
    return report


def check(site: Site, *, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for the site's templates and content; writes nothing.

    What a build would leave out, refuse or change is reported the same way.
    """
    now = now or datetime.now(site.tz)
    errors, warnings = templating.check(site.templates_dir), language_warnings(site)
    found = content_files(site)
    warnings.extend(found.warnings)
    articles, linking = {}, set()
    for source, result in parse_all(site, found.articles):
        if isinstance(result, str):
            errors.append(result)
        else:
            article, article_warnings = result
            articles[source.name] = listing(article)
            warnings.extend(article_warnings)
            if article_links.has_links(article.html):
                linking.add(source.name)
    owners, slug_errors = choose_slugs(site, articles, {}, now)
    errors.extend(slug_errors)
    links = article_links.permalinks(site, [articles[source] for source in owners.values()])
    warnings.extend(article_links.source_problems(site, [s for s in owners.values() if s in linking], links))
    return sorted(errors), warnings
