"""Delivery over real SMTP: every subscriber gets one copy, failures are sorted, crashes resume."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from email import policy
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from feedpub.config import load_site
from feedpub.delivery import send_queued
from feedpub.jobs import compose_digest
from feedpub.ledger import Ledger
from feedpub.schedule import load_schedule
from feedpub.store import Store
from feedpub.subscribers import Subscribers
from feedpub.tokens import BadToken, Signer, TokenSubject, secret_key

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=PARIS)
ENV = {"FEEDPUB_SECRET_KEY": "test-secret"}
NO_WAIT = (timedelta(0),)


@pytest.fixture
def world(smtp_site_dir):
    site = load_site(smtp_site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(smtp_site_dir, "Europe/Paris")
    yield site, store, schedule
    store.close()


def subscribe(store, count: int, *, list_name: str = "weekly", prefix: str = "reader") -> list[str]:
    book = Subscribers(store)
    addresses = [f"{prefix}{n}@example.net" for n in range(count)]
    with store.engine.begin() as db:
        for n, address in enumerate(addresses):
            book.upsert(address, name=f"Reader {n}", lists=[list_name], source="test", now=NOW, db=db)
    return addresses


def issue_for(site, store, schedule, name: str = "weekly"):
    return compose_digest(site, schedule, name, store, now=NOW).issue


def test_every_active_subscriber_gets_exactly_one_well_formed_message(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 25)
    subscribe(store, 3, list_name="daily", prefix="daily")  # another list: not this issue
    book = Subscribers(store)
    outsider = book.upsert("gone@example.net", lists=["weekly"], source="test", now=NOW)[1]
    book.set_status(outsider.id, "unsubscribed", NOW)
    issue = issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    assert (report.sent, report.failed, report.retrying) == (25, 0, 0)
    assert sink.copies() == {address: 1 for address in addresses}
    sender, recipients, data = sink.received[0]
    assert sender == "lettre@ia-insights.example.org"
    message = email.message_from_bytes(data, policy=policy.default)
    reader = recipients[0]
    assert message["To"].addresses[0].addr_spec == reader
    assert message["From"].addresses[0].display_name == "IA-insights"
    assert message["Subject"] == issue.subject
    assert message["Date"] and message["Message-ID"].endswith("@ia-insights.example.org>")
    assert message["List-Id"] == "IA-insights — la semaine <weekly.ia-insights.example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw_header = next(line for line in data.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert b"=?" not in raw_header  # one line, never an encoded word
    links = [part.strip(" <>") for part in message["List-Unsubscribe"].split(",")]
    assert links[0].startswith("http://127.0.0.1:8080/unsubscribe?token=")
    assert links[1].startswith("mailto:unsubscribe@ia-insights.example.org?subject=unsubscribe%20")
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    token = links[0].split("token=")[1]
    assert f"unsubscribe?token={token}" in html and f"unsubscribe?token={token}" in text
    assert "FEEDPUB" not in html and "FEEDPUB" not in text
    assert "Un tremblement de terre secoue l’industrie de l’IA." in html
    # The token names this reader and this list, and works for no one else.
    signer = Signer(secret_key(site, ENV))
    emails = {s.id: s.email for s in book.all()}
    claim = signer.read("unsubscribe", token, email_of=emails.get)
    assert (claim.email, claim.list) == (reader, "weekly")
    counts = Ledger(store).counts()[0].counts
    assert counts["sent"] == 25 and counts["pending"] == 0
    assert send_queued(site, store, environ=ENV, schedule=schedule).sent == 0  # nothing twice


def test_temporary_refusals_are_retried_until_accepted(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 6)
    sink.temporary = {addresses[1]: 2, addresses[4]: 1}
    issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    assert report.sent == 6 and report.retrying == 3 and report.failed == 0
    assert sink.copies() == {address: 1 for address in addresses}


def test_retries_end_in_failure_after_max_attempts(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 2)
    sink.temporary = {addresses[0]: 99}
    issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    assert report.sent == 1 and report.failed == 1
    with store.engine.connect() as db:
        reply = db.exec_driver_sql("SELECT last_reply FROM deliveries WHERE status = 'failed'").scalar()
    assert reply.startswith("gave up after 5 attempts: 451 4.7.1 Greylisted")


def test_retry_waits_for_its_time(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 2)
    sink.temporary = {addresses[0]: 1}
    issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule)  # default delays: one minute
    assert report.sent == 1 and report.retrying == 1
    assert Ledger(store).counts()[0].counts["retry"] == 1
    later = lambda: datetime.now(PARIS) + timedelta(minutes=2)  # noqa: E731
    report = send_queued(site, store, environ=ENV, schedule=schedule, clock=later)
    assert report.sent == 1
    assert sink.copies() == {address: 1 for address in addresses}


def test_connection_dropped_during_data_is_tried_again_on_a_new_connection_at_no_cost(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 5)
    sink.hang_up = {addresses[2]: 1}
    issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    assert (report.sent, report.retrying, report.failed, report.transport_error) == (5, 0, 0, None)
    assert sink.copies() == {address: 1 for address in addresses}
    with store.engine.connect() as db:
        attempts = dict(db.execute(text("SELECT s.email, d.attempts FROM deliveries d "
                                        "JOIN subscribers s ON s.id = d.subscriber_id")).all())
    assert attempts == {address: 1 for address in addresses}  # the dropped line was not the reader's fault


def test_unknown_user_fails_at_once_and_bounces_the_subscriber(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 3)
    sink.unknown = {addresses[0]}
    issue = issue_for(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    assert report.sent == 2 and report.failed == 1 and report.bounced == 1
    assert Subscribers(store).get(addresses[0]).status == "bounced"
    with store.engine.connect() as db:
        row = db.exec_driver_sql("SELECT status, attempts, last_reply FROM deliveries WHERE issue_id = ? "
                                 "AND status = 'failed'", (issue.id,)).one()
    assert row[0] == "failed" and row[1] == 1
    assert row[2].startswith("550 5.1.1")


def test_header_injection_through_a_title_adds_no_header(world, sink, smtp_site_dir):
    site, store, schedule = world
    (smtp_site_dir / "content" / "inject.md").write_text(
        '---\ntitle: "Breaking\\r\\nBcc: someone@example.org"\ndate: 2026-11-29\n---\n\nText.\n',
        encoding="utf-8")
    (smtp_site_dir / "schedule.yaml").write_text(
        "timezone: Europe/Paris\ndigests:\n  solo:\n    title: \"Solo\\nX-Evil: 1\"\n    list: weekly\n"
        "    max_articles: 1\n", encoding="utf-8")
    schedule = load_schedule(smtp_site_dir, "Europe/Paris")
    Subscribers(store).upsert("target@example.net", name="Eve\r\nBcc: x@example.org", lists=["weekly"],
                              source="test", now=NOW)
    issue_for(site, store, schedule, "solo")
    send_queued(site, store, environ=ENV, schedule=schedule)
    assert len(sink.received) == 1
    _sender, recipients, data = sink.received[0]
    assert recipients == ["target@example.net"]
    head = data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line and not line[:1].isspace()]
    assert b"bcc" not in names and b"x-evil" not in names
    message = email.message_from_bytes(data, policy=policy.default)
    assert message["Subject"] == "Breaking Bcc: someone@example.org"


def test_a_token_for_one_address_does_not_work_for_another(world):
    site, store, _schedule = world
    book = Subscribers(store)
    a = book.upsert("a@example.net", lists=["weekly"], source="test", now=NOW)[1]
    b = book.upsert("b@example.net", lists=["weekly"], source="test", now=NOW)[1]
    signer = Signer(secret_key(site, ENV))
    emails = {a.id: a.email, b.id: b.email}.get
    token = signer.make("unsubscribe", TokenSubject(a.id, a.email, "weekly"))
    assert signer.read("unsubscribe", token, email_of=emails).subscriber_id == a.id
    forged = signer.make("unsubscribe", TokenSubject(b.id, a.email, "weekly"))  # B's id, A's address
    with pytest.raises(BadToken):
        signer.read("unsubscribe", forged, email_of=emails)
    with pytest.raises(BadToken):
        signer.read("unsubscribe", token[:-2] + ("AA" if not token.endswith("AA") else "BB"), email_of=emails)
    with pytest.raises(BadToken):
        signer.read("confirm", token, email_of=emails)
    with pytest.raises(BadToken):
        Signer("another key").read("unsubscribe", token, email_of=emails)


def test_sending_without_a_key_refuses_outside_an_example_site(world):
    site, store, schedule = world
    from dataclasses import replace

    from feedpub.errors import FeedpubError

    real = replace(site, base_url="https://news.acme.test/")
    with pytest.raises(FeedpubError, match="FEEDPUB_SECRET_KEY is not set"):
        send_queued(real, store, environ={}, schedule=schedule)


def test_an_unsubscribe_after_queueing_is_skipped(world, sink):
    site, store, schedule = world
    addresses = subscribe(store, 3)
    issue_for(site, store, schedule)
    book = Subscribers(store)
    book.unsubscribe(book.get(addresses[1]).id, "weekly", NOW)
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    assert report.sent == 2
    assert addresses[1] not in sink.copies()
    assert Ledger(store).counts()[0].counts["skipped"] == 1


def test_sigkill_mid_send_then_resume_loses_nothing(smtp_site_dir, sink):
    site = load_site(smtp_site_dir)
    store = Store(site.storage_url)
    addresses = subscribe(store, 500)
    issue_for(site, store, load_schedule(smtp_site_dir, "Europe/Paris"))
    store.close()
    sink.delay = 0.002
    command = [sys.executable, "-m", "feedpub", "send", "--site", str(smtp_site_dir)]
    env = {**os.environ, **ENV}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(sink.received) < 150 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = len(sink.received)
    assert 150 <= killed_at < 500, "the sender should have been killed mid-way"
    sink.delay = 0
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    copies = sink.copies()
    assert set(copies) == set(addresses)  # nobody lost
    doubled = [address for address, count in copies.items() if count > 1]
    assert len(doubled) <= 2  # at most one in flight per connection
    assert all(count <= 2 for count in copies.values())
    assert "resumed" in result.stdout


def test_sigterm_finishes_in_flight_messages_and_leaves_no_row_sending(smtp_site_dir, sink):
    site = load_site(smtp_site_dir)
    store = Store(site.storage_url)
    addresses = subscribe(store, 300)
    issue_for(site, store, load_schedule(smtp_site_dir, "Europe/Paris"))
    sink.delay = 0.005
    command = [sys.executable, "-m", "feedpub", "send", "--site", str(smtp_site_dir)]
    process = subprocess.Popen(command, env={**os.environ, **ENV}, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(sink.received) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 75  # stopped before the end: the rest stays queued
    assert output.startswith("stopped:")
    counts = Ledger(store).counts()[0].counts
    assert counts["sending"] == 0
    assert counts["sent"] == len(sink.received) < 300
    assert counts["sent"] + counts["pending"] == 300
    store.close()
    assert max(sink.copies().values()) == 1
    del addresses
