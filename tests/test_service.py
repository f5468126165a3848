"""The service: a real `feedpub serve` on 127.0.0.1, its schedule, and subscribers using it."""

from __future__ import annotations

import email
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from feedpub.build import build
from feedpub.config import load_site
from feedpub.cron import next_fire
from feedpub.ledger import Ledger
from feedpub.scheduler import Service
from feedpub.schedule import load_schedule
from feedpub.store import Store
from feedpub.subscribers import Subscribers
from tests.conftest import _free_port, write_article

PARIS = ZoneInfo("Europe/Paris")
ENV = {**os.environ, "FEEDPUB_SECRET_KEY": "service-test-key"}


class Served:
    """`feedpub serve` in its own process, on a free port of 127.0.0.1; PREFIX runs it under another command."""

    def __init__(self, site_dir: Path, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = site_dir.parent / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "feedpub", "serve", "--port", str(self.port), "--site", str(site_dir),
             *args], env=ENV if env is None else env, stdout=self._log, stderr=subprocess.STDOUT, text=True)
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

    def local(self, url: str) -> str:
        """A link as mailed (on the public base URL), pointed at this server."""
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def stop(self) -> tuple[int, str]:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()
        return self.process.returncode, self.log()


@pytest.fixture
def serve(site_dir):
    started = []

    def start(*args: str, folder: Path = site_dir) -> Served:
        server = Served(folder, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def outbox(site_dir: Path) -> list[email.message.EmailMessage]:
    folder = site_dir / "outbox" / "new"
    if not folder.exists():
        return []
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def wait_for(predicate, seconds: float = 10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def test_feeds_are_served_with_types_validators_and_gzip(serve):
    server = serve()
    client = server.client
    feed = client.get("/feed.xml")
    assert feed.status_code == 200
    assert feed.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert client.get("/atom.xml").headers["content-type"].startswith("application/atom+xml")
    assert client.get("/feed.json").headers["content-type"].startswith("application/feed+json")
    assert client.get("/tags/ethique/feed.xml").headers["content-type"].startswith("application/rss+xml")
    again = client.get("/feed.xml", headers={"If-None-Match": feed.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    since = client.get("/feed.xml", headers={"If-Modified-Since": feed.headers["last-modified"]})
    assert since.status_code == 304
    page = client.get("/cofondateur-xai-quitte-entreprise/", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    assert "Un tremblement de terre" in page.text
    assert client.get("/no-such-page/").status_code == 404


def test_subscribe_confirm_receive_unsubscribe(serve, site_dir):
    server = serve()
    client = server.client
    form = client.get("/subscribe")
    assert form.status_code == 200 and 'name="lists" value="weekly"' in form.text
    answer = client.post("/subscribe", data={"email": "Reader@Example.net", "name": "Reader",
                                             "lists": "weekly", "form_token": form_token(form.text)})
    assert answer.status_code == 200
    confirmation = wait_for(lambda: [m for m in outbox(site_dir) if m["To"] == "reader@example.net"])[0]
    assert confirmation["Subject"] == "Confirmez votre abonnement à IA-insights"
    body = confirmation.get_content()
    link = re.search(r"http://127\.0\.0\.1:8080/confirm\?token=\S+", body).group(0)
    store = Store(load_site(site_dir).storage_url)
    book = Subscribers(store)
    assert book.get("reader@example.net").status == "pending"
    confirmed = client.get(server.local(link))
    assert confirmed.status_code == 200 and "Merci" in confirmed.text
    assert book.get("reader@example.net").status == "active"
    assert book.get("reader@example.net").lists == ("weekly",)

    # The next digest reaches the new subscriber.
    subprocess.run([sys.executable, "-m", "feedpub", "run", "weekly", "--site", str(site_dir)],
                   env=ENV, check=True, capture_output=True)
    digest = wait_for(lambda: [m for m in outbox(site_dir) if m["List-Id"]])[0]
    assert digest["To"].addresses[0].addr_spec == "reader@example.net"
    one_click = digest["List-Unsubscribe"].split(",")[0].strip(" <>")
    assert client.get(server.local(one_click)).status_code == 200  # a link scanner's GET
    assert book.get("reader@example.net").status == "active"
    # RFC 8058: a POST with only the token in the URL and this body, no cookie, no form token.
    done = httpx.post(server.base + server.local(one_click), content=b"List-Unsubscribe=One-Click",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200
    assert book.get("reader@example.net").status == "unsubscribed"

    # The next digest does not reach them.
    write_article(site_dir, "later-news.md", "title: Later news\ndate: 2026-11-29")
    result = subprocess.run([sys.executable, "-m", "feedpub", "run", "weekly", "--site", str(site_dir)],
                            env=ENV, check=True, capture_output=True, text=True)
    assert "0 messages queued" in result.stderr
    assert len([m for m in outbox(site_dir) if m["List-Id"]]) == 1
    store.close()


def test_forged_and_foreign_tokens_are_refused(serve, site_dir):
    from feedpub.tokens import Signer, TokenSubject

    site = load_site(site_dir)
    store = Store(site.storage_url)
    book = Subscribers(store)
    now = datetime.now(PARIS)
    a = book.upsert("a@example.net", lists=["weekly"], source="test", now=now)[1]
    b = book.upsert("b@example.net", lists=["weekly"], source="test", now=now)[1]
    signer = Signer("service-test-key")
    for_a = signer.make("unsubscribe", TokenSubject(a.id, a.email, "weekly"))
    a_as_b = signer.make("unsubscribe", TokenSubject(b.id, a.email, "weekly"))
    server = serve()
    for token in (for_a[:-3] + "xyz", a_as_b, Signer("other key").make("unsubscribe", TokenSubject(b.id, b.email, "weekly"))):
        response = server.client.post(f"/unsubscribe?token={token}", content=b"List-Unsubscribe=One-Click")
        assert response.status_code == 400
    assert server.client.get(f"/confirm?token={for_a}").status_code == 400  # made for another purpose
    assert book.get("b@example.net").status == "active" and book.get("a@example.net").status == "active"
    assert server.client.post(f"/unsubscribe?token={for_a}").status_code == 200
    assert book.get("a@example.net").status == "unsubscribed"
    assert book.get("b@example.net").status == "active"
    store.close()


def test_subscribe_form_is_protected_and_answers_alike(serve, site_dir):
    server = serve()
    client = server.client
    token = form_token(client.get("/subscribe").text)
    assert client.post("/subscribe", data={"email": "x@example.net", "lists": "weekly"}).status_code == 403
    foreign = client.post("/subscribe", data={"email": "x@example.net", "lists": "weekly", "form_token": token},
                          headers={"Origin": "https://evil.example.com"})
    assert foreign.status_code == 403
    first = client.post("/subscribe", data={"email": "new@example.net", "lists": "weekly", "form_token": token})
    known = client.post("/subscribe", data={"email": "new@example.net", "lists": "weekly", "form_token": token})
    assert first.status_code == known.status_code == 200 and first.text == known.text
    assert client.post("/subscribe", data={"email": "new@example.net", "lists": "weekly",
                                           "form_token": token}).status_code == 200
    assert client.post("/subscribe", data={"email": "new@example.net", "lists": "weekly",
                                           "form_token": token}).status_code == 429
    bad = client.post("/subscribe", data={"email": "not an address", "lists": "weekly", "form_token": token})
    assert bad.status_code == 400


def test_one_scheduler_per_state(serve, site_dir):
    serve()
    second = subprocess.run([sys.executable, "-m", "feedpub", "serve", "--port", str(_free_port()),
                             "--site", str(site_dir)], env=ENV, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert "feedpub serve is already running on" in second.stderr and "--web-only" in second.stderr
    web = serve("--web-only")
    health = web.client.get("/healthz").json()
    assert health["scheduler"] == "off (web only)" and health["database"] == "ok"


def test_healthz_reports_the_jobs(serve):
    health = serve().client.get("/healthz")
    assert health.status_code == 200
    report = health.json()
    assert report["scheduler"] == "running" and report["database"] == "ok"
    assert {"build", "send", "digest:daily", "digest:weekly"} <= set(report["jobs"])


def _schedule_due(site_dir: Path, minutes_ago: int, *, grace: int = 60) -> datetime:
    """A weekly digest whose cron time was MINUTES_AGO minutes ago; returns that time."""
    due = (datetime.now(PARIS) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    (site_dir / "schedule.yaml").write_text(
        f"timezone: Europe/Paris\ngrace_minutes: {grace}\ndigests:\n  weekly:\n    title: La semaine\n"
        f"    list: weekly\n    cron: \"{due.minute} {due.hour} * * *\"\n", encoding="utf-8")
    return due


def test_controlled_clock_fires_a_due_digest_exactly_once(site_dir):
    due = _schedule_due(site_dir, 0)
    site = load_site(site_dir)
    store = Store(site.storage_url)
    Subscribers(store).upsert("r@example.net", lists=["weekly"], source="test", now=due)
    schedule = load_schedule(site_dir, site.timezone)
    clock = {"now": due - timedelta(minutes=1)}
    service = Service(site, schedule, store, environ=ENV, clock=lambda: clock["now"])
    service.digest("weekly")
    assert store.issues() == []  # yesterday's time is past the grace, today's not yet come
    for minutes in (0, 1, 5, 30):
        clock["now"] = due + timedelta(minutes=minutes)
        service.digest("weekly")
    issues = store.issues("weekly")
    assert len(issues) == 1 and issues[0].window_end == due
    assert len(outbox(site_dir)) == 1
    clock["now"] = due + timedelta(days=1, minutes=2)  # the next day: a new window, nothing new in it
    service.digest("weekly")
    assert len(store.issues("weekly")) == 1
    store.close()


def test_service_down_over_a_digest_time_sends_once_within_grace(serve, site_dir):
    due = _schedule_due(site_dir, 20)
    site = load_site(site_dir)
    build(site, now=due - timedelta(hours=1))  # the articles were out before the digest's time
    store = Store(site.storage_url)
    Subscribers(store).upsert("r@example.net", lists=["weekly"], source="test", now=due)
    server = serve()
    wait_for(lambda: store.issues("weekly"))
    wait_for(lambda: len(outbox(site_dir)) == 1)
    server.stop()
    again = serve()  # a second restart: the window is covered
    wait_for(lambda: "digest weekly: up to date" in again.log())
    assert len(store.issues("weekly")) == 1 and len(outbox(site_dir)) == 1
    assert store.issues("weekly")[0].window_end == due
    store.close()


def test_service_down_past_the_grace_time_sends_nothing(serve, site_dir):
    _schedule_due(site_dir, 90, grace=60)
    site = load_site(site_dir)
    store = Store(site.storage_url)
    Subscribers(store).upsert("r@example.net", lists=["weekly"], source="test", now=datetime.now(PARIS))
    server = serve()
    wait_for(lambda: "digest weekly: skipped the issue due" in server.log())
    code, output = server.stop()
    assert code == 0
    assert store.issues() == [] and outbox(site_dir) == []
    assert "digest weekly: skipped the issue due" in output and "past the grace time of 60 minutes" in output
    store.close()


def test_sigterm_during_a_send_leaves_no_row_sending(serve, smtp_site_dir, sink):
    due = _schedule_due(smtp_site_dir, 5)
    site = load_site(smtp_site_dir)
    build(site, now=due - timedelta(hours=1))
    store = Store(site.storage_url)
    book = Subscribers(store)
    with store.engine.begin() as db:
        for n in range(300):
            book.upsert(f"r{n}@example.net", lists=["weekly"], source="test", now=datetime.now(PARIS), db=db)
    sink.delay = 0.01
    server = serve(folder=smtp_site_dir)
    wait_for(lambda: len(sink.received) >= 20, seconds=30)
    code, output = server.stop()
    assert code == 0, output
    counts = Ledger(store).counts()[0].counts
    assert counts["sending"] == 0
    assert counts["sent"] == len(sink.received) < 300
    assert counts["pending"] == 300 - counts["sent"]
    assert "stopped" in output
    store.close()


@pytest.mark.parametrize(("start", "local_times"), [
    (datetime(2027, 3, 26, 12, tzinfo=PARIS), ["2027-03-27T07:30:00+01:00", "2027-03-28T07:30:00+02:00",
                                               "2027-03-29T07:30:00+02:00"]),
    (datetime(2027, 10, 29, 12, tzinfo=PARIS), ["2027-10-30T07:30:00+02:00", "2027-10-31T07:30:00+01:00",
                                                "2027-11-01T07:30:00+01:00"]),
])
def test_cron_times_follow_the_time_zone_across_daylight_saving(start, local_times):
    times, moment = [], start
    for _ in range(3):
        moment = next_fire("30 7 * * *", PARIS, moment)
        times.append(moment.isoformat())
    assert times == local_times


def test_an_hour_that_repeats_fires_once_and_one_that_is_skipped_fires_once():
    fall_back = [next_fire("30 2 * * *", PARIS, datetime(2027, 10, 30, 12, tzinfo=PARIS))]
    fall_back.append(next_fire("30 2 * * *", PARIS, fall_back[0]))
    assert [t.date().isoformat() for t in fall_back] == ["2027-10-31", "2027-11-01"]
    spring = next_fire("30 2 * * *", PARIS, datetime(2027, 3, 27, 12, tzinfo=PARIS))
    assert spring.date().isoformat() == "2027-03-28"
    assert next_fire("30 2 * * *", PARIS, spring).date().isoformat() == "2027-03-29"


def test_cron_weekdays_count_sunday_as_zero():
    monday = next_fire("0 9 * * 1", PARIS, datetime(2026, 11, 30, 10, tzinfo=PARIS))
    sunday = next_fire("0 9 * * 0", PARIS, datetime(2026, 11, 30, 10, tzinfo=PARIS))
    assert (monday.strftime("%A"), sunday.strftime("%A")) == ("Monday", "Sunday")
    assert next_fire("0 9 * * 7", PARIS, datetime(2026, 11, 30, 10, tzinfo=PARIS)) == sunday


def test_healthz_is_503_when_the_scheduler_is_not_running(site_dir):
    import asyncio

    from feedpub.web import create_app

    site = load_site(site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(site_dir, site.timezone)
    service = Service(site, schedule, store, environ=ENV)  # never started
    app = create_app(site, schedule, store, service=service, environ=ENV)

    async def ask():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/healthz")

    answer = asyncio.run(ask())
    assert answer.status_code == 503
    assert answer.json()["scheduler"] == "stopped" and answer.json()["database"] == "ok"
    store.close()
