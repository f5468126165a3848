"""The web server under abuse: a real `feedpub serve` on 127.0.0.1, and hostile clients talking to it."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from feedpub.config import load_site
from feedpub.ratelimit import RateLimit
from feedpub.store import Store
from feedpub.subscribers import Subscribers
from feedpub.tokens import Signer, TokenSubject
from tests.conftest import _free_port

KEY = "hardening-test-key"
WITH_KEY = {**os.environ, "FEEDPUB_SECRET_KEY": KEY}
WITHOUT_KEY = {k: v for k, v in os.environ.items() if k != "FEEDPUB_SECRET_KEY"}
NOW = datetime.now(timezone.utc)


class Server:
    """`feedpub serve` in its own process, on a free port of 127.0.0.1."""

    def __init__(self, site_dir: Path, *args: str, env=WITH_KEY) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = site_dir.parent / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "feedpub", "serve", "--port", str(self.port), "--site", str(site_dir), *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(self.log())
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        self.client = httpx.Client(base_url=self.base, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()


@pytest.fixture
def serve(site_dir):
    started = []

    def start(*args: str, env=WITH_KEY) -> Server:
        started.append(Server(site_dir, *args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def settings(site_dir: Path, text: str) -> None:
    path = site_dir / "feedpub.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")


def form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def subscriber(site_dir: Path, address: str, status: str = "active"):
    store = Store(load_site(site_dir).storage_url)
    try:
        return Subscribers(store).upsert(address, lists=["weekly"], status=status, source="test", now=NOW)[1]
    finally:
        store.close()


def status_of(site_dir: Path, address: str) -> tuple[str, tuple[str, ...]]:
    store = Store(load_site(site_dir).storage_url)
    try:
        found = Subscribers(store).get(address)
        return found.status, found.lists
    finally:
        store.close()


def run(*args: str, env=WITH_KEY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedpub", *args], env=env, capture_output=True, text=True,
                          timeout=120)


# 1. Only POST changes state.

def test_head_and_get_on_an_unsubscribe_link_change_nothing(serve, site_dir):
    reader = subscriber(site_dir, "reader@example.net")
    token = Signer(KEY).make("unsubscribe", TokenSubject(reader.id, reader.email, "weekly"))
    server = serve("--web-only")
    assert server.client.head(f"/unsubscribe?token={token}").status_code == 200
    page = server.client.get(f"/unsubscribe?token={token}")
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert status_of(site_dir, reader.email) == ("active", ("weekly",))
    done = server.client.post(f"/unsubscribe?token={token}", content=b"List-Unsubscribe=One-Click",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200  # RFC 8058 one-click, no Origin, no cookie, no form token
    assert status_of(site_dir, reader.email) == ("unsubscribed", ())


def _next_second() -> None:
    """Tokens carry their time to the second: wait until a token made now is newer than anything so far."""
    time.sleep(1.05 - (time.time() % 1) + 0.01)


def test_a_confirm_link_works_once_and_never_brings_back_who_left(serve, site_dir):
    reader = subscriber(site_dir, "pending@example.net", status="pending")
    signer = Signer(KEY)
    old = signer.make("confirm", TokenSubject(reader.id, reader.email, "weekly"))
    unsubscribe = signer.make("unsubscribe", TokenSubject(reader.id, reader.email, "weekly"))
    server = serve("--web-only")
    assert server.client.head(f"/confirm?token={old}").status_code == 200
    assert status_of(site_dir, reader.email)[0] == "pending"  # HEAD changes nothing
    assert server.client.get(f"/confirm?token={old}").status_code == 200
    assert status_of(site_dir, reader.email) == ("active", ("weekly",))
    again = server.client.get(f"/confirm?token={old}")  # used: nothing happens, nothing is said about who
    assert again.status_code == 200 and "déjà confirmé" in again.text

    assert server.client.post(f"/unsubscribe?token={unsubscribe}").status_code == 200
    assert status_of(site_dir, reader.email)[0] == "unsubscribed"
    for method in ("GET", "POST", "HEAD"):  # the link made before they left never brings them back
        assert server.client.request(method, f"/confirm?token={old}").status_code == 400
    assert status_of(site_dir, reader.email) == ("unsubscribed", ())

    # They subscribe again: a new link. A GET only asks (link scanners GET); the POST confirms.
    _next_second()
    new = signer.make("confirm", TokenSubject(reader.id, reader.email, "weekly"))
    asked = server.client.get(f"/confirm?token={new}")
    assert asked.status_code == 200 and '<form method="post"' in asked.text
    assert status_of(site_dir, reader.email)[0] == "unsubscribed"
    null = server.client.post(f"/confirm?token={new}", headers={"Origin": "null"})
    assert null.status_code == 400 and status_of(site_dir, reader.email)[0] == "unsubscribed"
    assert server.client.post(f"/confirm?token={new}").status_code == 200
    assert status_of(site_dir, reader.email) == ("active", ("weekly",))
    assert "déjà confirmé" in server.client.post(f"/confirm?token={new}").text


# 3. Keys.

def test_the_example_site_keeps_a_random_key_and_refuses_the_old_derived_one(serve, site_dir):
    reader = subscriber(site_dir, "reader@example.net")
    server = serve("--web-only", env=WITHOUT_KEY)
    key_file = site_dir / "state" / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 40
    base_url = load_site(site_dir).base_url
    derived = "feedpub-example-key:" + hashlib.sha256(base_url.encode()).hexdigest()  # how it used to be made
    for forged_key in (derived, "feedpub-example-key"):
        forged = Signer(forged_key).make("unsubscribe", TokenSubject(reader.id, reader.email, "weekly"))
        assert server.client.post(f"/unsubscribe?token={forged}").status_code == 400
    assert status_of(site_dir, reader.email)[0] == "active"
    server.stop()
    again = serve("--web-only", env=WITHOUT_KEY)
    assert key_file.read_text().strip() == key  # made once, kept
    good = Signer(key).make("unsubscribe", TokenSubject(reader.id, reader.email, "weekly"))
    assert again.client.post(f"/unsubscribe?token={good}").status_code == 200
    assert status_of(site_dir, reader.email)[0] == "unsubscribed"


def test_a_real_site_refuses_to_start_without_a_key(site_dir):
    settings(site_dir, "")
    path = site_dir / "feedpub.yaml"
    path.write_text(path.read_text().replace("http://127.0.0.1:8080/", "https://news.acme.test/"))
    for command in (["serve", "--port", str(_free_port())], ["send"], ["digest", "weekly", "--send"]):
        result = run(*command, "--site", str(site_dir), env=WITHOUT_KEY)
        assert result.returncode == 1, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: FEEDPUB_SECRET_KEY is not set"), result.stderr
    assert not (site_dir / "state" / "signing.key").exists()
    assert not (site_dir / "public").exists()  # refused before doing anything
    check = run("check", "--site", str(site_dir), env=WITHOUT_KEY)
    assert check.returncode == 1 and "error: FEEDPUB_SECRET_KEY is not set" in check.stderr
    assert run("check", "--site", str(site_dir), env=WITH_KEY).returncode == 0


# 4. Previews.

def test_a_preview_is_written_to_state_and_never_served(serve, site_dir, tmp_path):
    result = run("digest", "weekly", "--preview", "--site", str(site_dir))
    assert result.returncode == 0, result.stderr
    folder = site_dir / "state" / "preview" / "weekly"
    assert {p.name for p in folder.iterdir()} == {"issue.html", "issue.txt", "issue.eml"}
    assert not (site_dir / "public" / "preview").exists()
    elsewhere = tmp_path / "looks"
    assert run("digest", "weekly", "--preview", "--out", str(elsewhere), "--site", str(site_dir)).returncode == 0
    assert (elsewhere / "issue.eml").is_file()
    server = serve()
    for name in ("issue.html", "issue.txt", "issue.eml"):
        assert server.client.get(f"/preview/weekly/{name}").status_code == 404
