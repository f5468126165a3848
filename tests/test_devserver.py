"""`feedpub serve --dev` as a writer runs it: a real process on a free port, files edited under it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import feedparser
import httpx
import pytest

from feedpub.config import load_site
from feedpub.store import Store
from tests.conftest import write_article
from tests.test_service import outbox, wait_for

ENV = {k: v for k, v in os.environ.items() if k != "FEEDPUB_SECRET_KEY"}  # dev needs no key


class DevServed:
    """`feedpub serve --dev --port 0`: the URL it prints is the one it got."""

    def __init__(self, site_dir: Path) -> None:
        self.log_path = site_dir.parent / "dev.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "feedpub", "serve", "--dev", "--port", "0", "--site", str(site_dir)],
            env=ENV, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        found = wait_for(lambda: self.process.poll() is None and re.search(
            r"^(http://127\.0\.0\.1:(\d+)/)$", self.log_path.read_text(), re.M), 30)
        self.url, self.port = found.group(1), int(found.group(2))
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def version(self) -> int:
        return self.client.get("/healthz").json()["version"]

    def after_change(self, change) -> None:
        """Make CHANGE, and wait for the rebuild it causes."""
        before = self.version()
        change()
        wait_for(lambda: self.version() > before, 15)

    def stop(self) -> str:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self._log.close()
        return self.log_path.read_text()


@pytest.fixture
def dev(site_dir):
    server = DevServed(site_dir)
    yield server
    server.stop()


def hrefs(page: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]+)"', page)


def test_prints_its_url_and_every_link_points_to_it(dev):
    page = dev.client.get("/")
    assert page.status_code == 200
    links = [h for h in hrefs(page.text) if h.startswith("http")]
    assert links and all(h.startswith(dev.url) for h in links), links
    assert "/_dev/reload.js" in page.text
    feed = feedparser.parse(dev.client.get("/feed.xml").content)
    assert all(e.link.startswith(dev.url) for e in feed.entries)


def test_new_article_and_template_change_show_without_restart(dev, site_dir):
    dev.after_change(lambda: write_article(site_dir, "fresh.md", "title: Tout frais\ndate: 2026-11-30"))
    assert "Tout frais" in dev.client.get("/").text
    assert dev.client.get("/fresh/").status_code == 200
    base = site_dir / "templates" / "base.html.j2"
    dev.after_change(lambda: base.write_text(base.read_text().replace("<main>", "<main><p>NOUVEAU GABARIT</p>")))
    assert "NOUVEAU GABARIT" in dev.client.get("/").text
    assert "Tout frais" in dev.client.get("/_preview/daily/").text


def test_a_draft_is_shown_marked_and_never_published(dev, site_dir):
    write_article(site_dir, "secret.md", "title: Brouillon secret\ndate: 2026-11-29\ndraft: true")
    dev.after_change(lambda: write_article(site_dir, "later.md", "title: Pour plus tard\ndate: 2099-01-01"))
    home = dev.client.get("/").text
    assert re.search(r"Brouillon secret</a> <span class=\"preview-mark\"[^>]*>draft<", home)
    assert re.search(r"Pour plus tard</a> <span class=\"preview-mark\"[^>]*>scheduled<", home)
    assert "preview-mark" in dev.client.get("/secret/").text
    built = subprocess.run([sys.executable, "-m", "feedpub", "build", "--site", str(site_dir)], env=ENV,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    public = site_dir / "public"
    assert not (public / "secret").exists() and not (public / "later").exists()
    titles = [e.title for e in feedparser.parse((public / "feed.xml").read_bytes()).entries]
    assert titles and "Brouillon secret" not in titles and "Pour plus tard" not in titles
    assert "preview-mark" not in (public / "index.html").read_text()


def test_events_announce_each_rebuild(dev, site_dir):
    with dev.client.stream("GET", "/_dev/events") as events:
        lines = events.iter_lines()
        assert "event: hello" in [next(lines) for _ in range(3)]
        write_article(site_dir, "ping.md", "title: Ping\ndate: 2026-11-30")
        assert "event: rebuild" in wait_for(lambda: next(lines), 15)


def test_a_broken_article_is_shown_and_fixing_it_recovers(dev, site_dir):
    bad = site_dir / "content" / "bad.md"
    dev.after_change(lambda: bad.write_text("---\ntitle: [unclosed\n---\nBody\n"))
    page = dev.client.get("/")
    assert page.status_code == 200 and "feedpub-dev-errors" in page.text and "bad.md" in page.text
    dev.after_change(lambda: bad.write_text("---\ntitle: Réparé\ndate: 2026-11-30\n---\nBody\n"))
    page = dev.client.get("/")
    assert "feedpub-dev-errors" not in page.text and "Réparé" in page.text


def test_nothing_is_sent_and_no_state_is_written(dev, site_dir):
    form = dev.client.get("/subscribe")
    assert f'action="{dev.url}subscribe"' in form.text
    answer = dev.client.post("/subscribe", data={"email": "a@example.net", "lists": "daily", "form_token": "x"})
    assert "Preview: not sent" in answer.text
    time.sleep(0.5)  # give a wrongly queued confirmation its chance to appear
    assert outbox(site_dir) == []
    output = dev.stop()
    assert "Traceback" not in output
    database = site_dir / "state" / "feedpub.sqlite"
    if database.exists():
        store = Store(load_site(site_dir).storage_url)
        with store.engine.connect() as db:
            from sqlalchemy import text

            assert db.execute(text("SELECT count(*) FROM subscribers")).scalar() == 0
            assert db.execute(text("SELECT count(*) FROM issues")).scalar() == 0
    assert not (site_dir / "public").exists()
    dev.process.poll()
    dev.stop = lambda: ""  # stopped already
