"""`feedpub check`: every problem of a site in one run, one line each, writing nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .config import SETTINGS_FILE, Site, load_site
from .errors import ConfigError, FeedpubError
from .schedule import SCHEDULE_FILE, Schedule, load_schedule
from .settings import key_lines, locate

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was tried and worked, such as the SMTP login

    def settings(self, path: Path, problems: list[ConfigError]) -> None:
        lines = key_lines(path)
        located = sorted((locate(p, lines) for p in problems), key=lambda p: p.line or 0)
        self.errors.extend(p.located() for p in located)


def check_site(root: Path, environ: Mapping[str, str], *, now: datetime | None = None,
               smtp: bool = False) -> Findings:
    """Every problem of the site at ROOT; with SMTP, then a login to its mail server too."""
    found = Findings()
    site = _check_files(Path(root).resolve(), environ, now, found)
    if smtp:
        if site is None:  # the server settings themselves may be what is wrong
            found.warnings.append("smtp: not tried until the errors of feedpub.yaml are fixed")
        else:
            from .smtpcheck import probe_smtp

            probe = probe_smtp(site, environ)
            {"note": found.notes, "warning": found.warnings, "error": found.errors}[probe.level].append(probe.line)
    return found


def _check_files(root: Path, environ: Mapping[str, str], now: datetime | None, found: Findings) -> Site | None:
    """Check settings, schedule, content, templates and mail setup; the Site when its settings are sound."""
    problems: list[ConfigError] = []
    try:
        site = load_site(root, problems)
    except ConfigError as exc:
        found.errors.append(exc.located())
        return None
    found.settings(root / SETTINGS_FILE, problems)
    schedule_problems: list[ConfigError] = []
    try:
        schedule = load_schedule(root, site.timezone, schedule_problems)
    except ConfigError as exc:
        found.errors.append(exc.located())
        schedule = None
    found.settings(root / SCHEDULE_FILE, schedule_problems)
    if problems:  # the rest needs settings that mean what they say
        return None
    now = now or datetime.now(site.tz)
    from .build import check as content_check

    errors, warnings = content_check(site, now=now)
    found.errors.extend(errors)
    found.warnings.extend(warnings)
    if not any(e.startswith(site.templates_dir.name + "/") for e in errors):
        _trial_render(site, schedule, now, found, root)
    from .dkim import make_signer
    from .tokens import key_problem

    if problem := key_problem(site, environ):
        found.errors.append(problem)
    try:
        make_signer(site.email.dkim)
    except ConfigError as exc:
        found.errors.append(locate(exc, key_lines(root / SETTINGS_FILE)).located())
    if "email" in site.raw:
        _mail(site, found)
    return site


def _trial_render(site: Site, schedule: Schedule | None, now: datetime, found: Findings, root: Path) -> None:
    """Render every page and digest in memory with the site's own articles, or a made-up one."""
    from .build import content_files, parse_all
    from .content import listing, parse_article
    from .digest import compose, subject_template
    from .pages import ALL_ARTICLES, archive_page, article_page, list_page

    articles = [r[0] for _s, r in parse_all(site, content_files(site).articles) if not isinstance(r, str)]
    if not articles:
        example = b"---\ntitle: An example\ndate: 2026-01-05\ntags: [example]\n---\n\nA lede.\n\n- one\n- two\n"
        articles = [parse_article(site, "example.md", example)[0]]
    seen: set[str] = set()

    def attempt(render, *args, **kwargs) -> None:
        try:
            render(*args, **kwargs)
        except FeedpubError as exc:
            text = exc.located() if isinstance(exc, ConfigError) else str(exc)
            if text not in seen:
                seen.add(text)
                found.errors.append(text)

    for article in articles:
        attempt(article_page, site, article, article.updated or article.date)
    listings = [listing(a) for a in articles]
    attempt(list_page, site, title=site.title, folder="", articles=listings, more=ALL_ARTICLES)
    attempt(list_page, site, title=articles[0].date, folder=ALL_ARTICLES, articles=listings, month=True)
    attempt(archive_page, site, ALL_ARTICLES, [("2026/01/", articles[0].date, len(articles))])
    lines = key_lines(root / SCHEDULE_FILE)
    for digest in (schedule.digests.values() if schedule else ()):
        try:
            subject_template(site, digest, now, len(articles))
        except ConfigError as exc:
            found.errors.append(locate(exc, lines).located())
            continue
        attempt(compose, site, digest, articles[: digest.max_articles], when=now,
                browser_url=site.url("preview/"), archive_url=site.url("archive/"))


def _mail(site: Site, found: Findings) -> None:
    """What makes mail from this site go wrong, when feedpub.yaml sets up email."""
    from urllib.parse import urlsplit

    email = site.email
    lines = key_lines(site.root / SETTINGS_FILE)
    domain = email.domain.lower()
    from_line = locate(ConfigError(SETTINGS_FILE, "email.from", ""), lines).line
    where = f"{SETTINGS_FILE}:{from_line}" if from_line else SETTINGS_FILE
    if domain in LOOPBACK or ("." not in domain and not _is_ip(domain)):
        found.errors.append(f"{where}: email.from: {email.from_address!r} is not on a real domain; "
                            f"set email.from to an address readers can answer")
    elif domain.split(".")[-2:-1] == ["example"] or domain.startswith("example."):
        found.warnings.append(f"{where}: email.from: {email.from_address!r} is on an example domain")
    base = urlsplit(site.base_url)
    url_line = key_lines(site.root / SETTINGS_FILE).get("base_url")
    url_where = f"{SETTINGS_FILE}:{url_line}" if url_line else SETTINGS_FILE
    if base.scheme != "https":
        message = f"{url_where}: base_url: {site.base_url!r}: one-click unsubscribe needs https"
        (found.warnings if base.hostname in LOOPBACK else found.errors).append(message)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False
