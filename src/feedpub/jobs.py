"""The jobs the command line, the scheduler and the web app share: each idempotent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .build import CATALOG_FILE, BuildReport, Published, build
from .catalog import Catalog
from .config import Site
from .cron import latest_fire
from .digest import Composition, compose, personalize, select
from .ledger import Ledger
from .languages import count
from .mail import IssueMessage, Letter, Recipient
from .output import write_atomic
from .pages import digest_archive_index
from .schedule import Digest, Schedule
from .store import Issue, Store

ARCHIVE = "archive/"
PREVIEW = "preview/"


def open_store(site: Site) -> Store:
    return Store(site.storage_url)


@dataclass
class DigestOutcome:
    """What a digest run did, and a sentence saying so."""

    message: str
    build: BuildReport
    chosen: list[Published] = field(default_factory=list)
    composition: Composition | None = None
    issue: Issue | None = None
    preview_files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds spent in each step


def _issue_slug(when: datetime, taken: set[str]) -> str:
    """The issue's folder in the archive: its date, with a number when one day has several."""
    base = when.strftime("%Y-%m-%d")
    slug, number = base, 2
    while slug in taken:
        slug, number = f"{base}-{number}", number + 1
    return slug


def archive_folder(digest: Digest) -> str:
    return f"{ARCHIVE}{digest.name}/"


def compose_digest(site: Site, schedule: Schedule, name: str, store: Store, *,
                   now: datetime | None = None, window_end: datetime | None = None,
                   preview: bool = False, preview_dir: Path | None = None) -> DigestOutcome:
    """Publish, then compose digest NAME from the articles first published since its last issue.

    WINDOW_END (default: now) ends the window the issue covers; an issue that
    exists for it is never composed again. With PREVIEW, the issue is written
    to PREVIEW_DIR (default state/preview/NAME/) and nothing is stored.
    """
    digest = schedule.digest(name)
    now = now or datetime.now(site.tz)
    window_end = window_end or now
    clock = _Stopwatch()
    report = build(site, now=now)
    clock.lap("build")
    since = store.last_window(name)
    if since is not None and window_end <= since:
        return DigestOutcome(f"{name}: the window ending {window_end.isoformat()} is already covered", report)
    chosen = select(report.published, digest, since, window_end)
    latest_instead = preview and not chosen
    if latest_instead:  # a preview with nothing new still shows how an issue looks
        chosen = select(report.published, digest, None, window_end)
    if not chosen and digest.skip_if_empty:
        after = f" since {since.astimezone(site.tz):%Y-%m-%d %H:%M}" if since else ""
        return DigestOutcome(f"{name}: no new article{after}; no issue composed", report)

    with Catalog(site.state_dir / CATALOG_FILE) as catalog:
        articles = [catalog.article(p.key) for p in chosen]
    slug = _issue_slug(window_end.astimezone(site.tz), store.issue_slugs(name))
    clock.lap("select")
    archive_url = site.url(archive_folder(digest))
    composition = compose(site, digest, articles, when=window_end.astimezone(site.tz),
                          browser_url=f"{archive_url}{slug}/", archive_url=archive_url)
    clock.lap("setup", **composition.timings)
    if preview:
        files = _write_preview(site, digest, composition, now, preview_dir)
        clock.lap("preview")
        note = " (nothing new since the last issue: these are the latest articles)" if latest_instead else ""
        return DigestOutcome(f"{name}: preview of {count(len(articles), 'article')} written{note}", report, chosen,
                             composition, preview_files=files, timings=clock.laps)

    # The issue and its rows are one transaction: after a crash there is either no
    # issue, or an issue queued for every subscriber its list had.
    with store.engine.begin() as db:
        issue_id = store.add_issue(
            db, digest=name, slug=slug, list=digest.list, window_end=window_end, subject=composition.subject,
            preheader=composition.preheader, html=composition.html, text=composition.text,
            articles=[{"id": p.id, "slug": p.article.slug, "title": p.article.title} for p in chosen],
            created_at=now,
        )
        queued = Ledger(store).queue(db, issue_id, digest.list) if issue_id is not None else 0
    clock.lap("store")
    if issue_id is None:
        return DigestOutcome(f"{name}: an issue for this window exists already", report, chosen)
    issue = store.issue(issue_id)
    publish_archive(site, digest, store)
    clock.lap("archive")
    return DigestOutcome(f"{name}: issue {issue.slug} composed with {count(len(articles), 'article')}: "
                         f"{issue.subject}; {count(queued, 'message')} queued for list {issue.list}",
                         report, chosen, composition, issue, timings=clock.laps)


class _Stopwatch:
    """Seconds spent in each step of a job, for --timings and the benchmarks."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str, **parts: float) -> None:
        now = time.perf_counter()
        self.laps.update(parts)
        self.laps[name] = now - self._last - sum(parts.values())
        self._last = now


def public_html(site: Site, html: str) -> str:
    """An issue's HTML as anyone may see it: no reader's name or personal link."""
    return personalize(html, {"unsubscribe_url": site.url("unsubscribe"), "name": ""}, html=True)


def publish_archive(site: Site, digest: Digest, store: Store) -> None:
    """Write each issue of DIGEST as a page, and the digest's archive index."""
    folder = archive_folder(digest)
    issues = store.issues(digest.name)
    for issue in issues:
        path = site.output_dir / folder / issue.slug / "index.html"
        if not path.exists():
            write_atomic(path, public_html(site, issue.html).encode())
    index = digest_archive_index(site, title=digest.title, folder=folder, issues=issues)
    write_atomic(site.output_dir / folder / "index.html", index)


def _write_preview(site: Site, digest: Digest, composition: Composition, now: datetime,
                   folder: Path | None) -> list[Path]:
    """The sample reader's copy, kept out of public/: it is not for the world to read."""
    folder = folder or site.state_dir / PREVIEW / digest.name
    sample = Recipient(id=0, email="reader@example.org", name="Camille Exemple")
    letter = Letter(issue_id=0, digest=digest.name, digest_title=digest.title,
                    subject=composition.subject, html=composition.html, text=composition.text)
    message = IssueMessage(site, letter, date=now, unsubscribe_url=site.url("unsubscribe?token={token}"))
    values = {"unsubscribe_url": site.url("unsubscribe?token=preview"), "name": sample.name}
    files = {
        "issue.html": personalize(composition.html, values, html=True).encode(),
        "issue.txt": personalize(composition.text, values, html=False).encode(),
        "issue.eml": message.render(sample, "preview", f"<preview@{site.email.domain}>"),
    }
    for name, data in files.items():
        write_atomic(folder / name, data)
        # Older versions wrote previews into the published site: take those copies down.
        (site.output_dir / PREVIEW / digest.name / name).unlink(missing_ok=True)
    return [folder / name for name in files]


def run_scheduled_digest(site: Site, schedule: Schedule, name: str, store: Store, *, now: datetime,
                         send: Callable[[], object]) -> str:
    """Compose and send digest NAME for its latest scheduled time, if that is due.

    Due means: the time has come, no issue covers it yet, and it passed less
    than the schedule's grace time ago (a service that was down longer skips
    it, and the next issue covers those articles). Safe to call any number of
    times: an issue is unique per (digest, window).
    """
    digest = schedule.digest(name)
    if digest.cron is None:
        return f"{name}: no cron time in schedule.yaml"
    fire = latest_fire(digest.cron, schedule.tz, now)
    if fire is None:
        return f"{name}: not due yet"
    last = store.last_window(name)
    if last is not None and fire <= last:
        return f"{name}: up to date (last window {last.astimezone(schedule.tz):%Y-%m-%d %H:%M})"
    late = now - fire
    if late > schedule.grace:
        minutes = int(late.total_seconds() // 60)
        return (f"{name}: skipped the issue due {fire:%Y-%m-%d %H:%M}: {minutes} minutes late, past the grace "
                f"time of {int(schedule.grace.total_seconds() // 60)} minutes; the next issue covers its articles")
    outcome = compose_digest(site, schedule, name, store, now=now, window_end=fire)
    if outcome.issue is not None:
        send()
    return outcome.message
