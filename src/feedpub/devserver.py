"""`feedpub serve --dev`: the writer's live preview.

The site is built into its own folder (state/dev/, with its own build memory),
drafts and future articles included and marked, every link pointing to the
address it is served on. Changes to content/, templates/, feedpub.yaml or
schedule.yaml rebuild it in this process, and the open pages reload. No
schedule runs, no mail is sent, and the state database is never opened.
"""

from __future__ import annotations

import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import click

from .build import CATALOG_FILE, Published, build
from .catalog import Catalog
from .config import SETTINGS_FILE, Site, load_site
from .errors import FeedpubError
from .schedule import SCHEDULE_FILE, Schedule, load_schedule

DEV_FOLDER = "dev"  # under the site's state folder: the preview's output and memory
WILDCARDS = {"", "0.0.0.0", "::"}


def local_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server listening on HOST:PORT."""
    host = "127.0.0.1" if host in WILDCARDS else host
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def dev_site(site: Site, base_url: str) -> Site:
    """SITE as the preview builds it: linked to BASE_URL, written under state/dev/, never to public/."""
    folder = site.state_dir / DEV_FOLDER
    return replace(site, base_url=base_url, output_dir=folder / "public", state_dir=folder, storage_url="")


def problem_line(exc: BaseException, root: Path) -> str:
    """One line for an error a rebuild raised, naming the file and line where we can."""
    import jinja2

    if isinstance(exc, FeedpubError):
        return str(exc)
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"templates/{exc.name or exc.filename}:{exc.lineno}: {exc.message}"
    # A template failing as it renders: Jinja puts the template's own lines in the traceback.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    where = ""
    if frames:
        path = Path(frames[-1].filename)
        shown = path.relative_to(root) if path.is_relative_to(root) else Path("templates", path.name)
        where = f"{shown}:{frames[-1].lineno}: "
    return f"{where}{type(exc).__name__}: {' '.join(str(exc).split())}"


@dataclass
class Preview:
    """The preview's state: the latest build, its errors, and whoever waits to hear of the next one."""

    root: Path
    base_url: str
    site: Site
    schedule: Schedule | None = None
    published: list[Published] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    version: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    listeners: set[Callable[[int | None], None]] = field(default_factory=set)

    def rebuild(self, *, quiet_warnings: bool = True) -> None:
        """Read the settings again and build; a failure is reported and the last good site kept."""
        started = time.perf_counter()
        with self.lock:
            errors, warnings = [], []
            try:
                site = dev_site(load_site(self.root), self.base_url)
                self._mark_unpublished(site)
                schedule = load_schedule(site.root, site.timezone)
                report = build(site, unpublished=True)
                self.site, self.schedule, self.published = site, schedule, report.published
                errors, warnings = report.errors, report.warnings
            except Exception as exc:  # whatever it is, the writer sees it and the server goes on
                errors = [problem_line(exc, self.root)]
            self.errors, self.seconds = errors, time.perf_counter() - started
            self.version += 1
            version = self.version
        if not quiet_warnings:
            for line in warnings:
                click.echo(f"warning: {line}", err=True)
        for line in errors:
            click.echo(f"error: {line}", err=True)
        state = f"{len(errors)} {'error' if len(errors) == 1 else 'errors'}" if errors else "ok"
        click.echo(f"built in {self.seconds * 1000:.0f} ms: {len(self.published)} articles, {state}")
        for listener in list(self.listeners):
            listener(version)

    def _mark_unpublished(self, site: Site) -> None:
        """Let the templates badge drafts and future articles; only this site's environment has it."""
        from . import templating

        templating._words.cache_clear()  # the i18n files may have changed too
        env = templating.site_environment(site)
        env.globals["preview_mark"] = lambda article: (
            "draft" if article.draft else "scheduled" if article.date > datetime.now(article.date.tzinfo) else "")

    def close(self) -> None:
        """Tell the open event streams to end, so that the server can stop."""
        for listener in list(self.listeners):
            listener(None)

    def digest_html(self, name: str) -> str | None:
        """What digest NAME would look like now, with the newest articles; None when it has none."""
        from .digest import compose, personalize, select
        from .jobs import archive_folder

        with self.lock:
            site, digest = self.site, self.schedule.digest(name)
            when = datetime.now(site.tz)
            chosen = select(self.published, digest, None, when)
            with Catalog(site.state_dir / CATALOG_FILE) as catalog:
                articles = [catalog.article(p.key) for p in chosen]
        if not articles:
            return None
        archive_url = site.url(archive_folder(digest))
        composition = compose(site, digest, articles, when=when, browser_url=archive_url,
                              archive_url=archive_url)
        values = {"unsubscribe_url": site.url("unsubscribe?token=preview"), "name": "Camille Exemple"}
        return personalize(composition.html, values, html=True)


def watch(preview: Preview, stop: threading.Event) -> list[threading.Thread]:
    """Rebuild PREVIEW after each batch of changes to the files the site is made of."""
    from watchfiles import watch as changes_of

    site, wanted = preview.site, threading.Event()
    names = {SETTINGS_FILE, SCHEDULE_FILE}

    def follow(paths: list[Path], recursive: bool, only: Callable[[str], bool] | None = None) -> None:
        for _batch in changes_of(*paths, stop_event=stop, recursive=recursive, raise_interrupt=False,
                                 watch_filter=(lambda _change, path: only(path)) if only else None):
            wanted.set()

    def builder() -> None:
        while not stop.is_set():
            if wanted.wait(0.5):
                wanted.clear()
                preview.rebuild()

    folders = [p for p in (site.content_dir, site.templates_dir) if p.is_dir()]
    threads = [threading.Thread(target=builder, daemon=True),
               threading.Thread(target=follow, args=([site.root], False, lambda p: Path(p).name in names),
                                daemon=True)]
    if folders:
        threads.append(threading.Thread(target=follow, args=(folders, True), daemon=True))
    for thread in threads:
        thread.start()
    return threads


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on HOST:PORT (0: any free port), made before the build needs its address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def serve_dev(site: Site, *, host: str, port: int) -> None:
    """Build, watch and serve the preview until SIGTERM or Ctrl-C."""
    import signal

    from .devweb import create_dev_app
    from .webserver import serve as serve_http

    sock = bind(host, port)
    url = local_url(host, sock.getsockname()[1])
    preview = Preview(root=site.root, base_url=url, site=dev_site(site, url))
    preview.rebuild(quiet_warnings=False)
    stop = threading.Event()
    watch(preview, stop)
    for signum in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises them again once it has stopped
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve_http(create_dev_app(preview), host=host, port=port, settings=site.web, sock=sock,
                   on_ready=lambda _port: click.echo(url), on_stop=preview.close)
    finally:
        stop.set()
