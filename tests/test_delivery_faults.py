"""Delivery when the mail server misbehaves: its faults cost no reader a message, and no row goes twice."""

from __future__ import annotations

import email
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from feedpub.config import load_site
from feedpub.delivery import send_queued
from feedpub.jobs import compose_digest
from feedpub.ledger import Ledger
from feedpub.schedule import load_schedule
from feedpub.store import Store, deliveries, issues
from feedpub.subscribers import Subscribers

from .conftest import SinkHandler, _free_port, mail_settings
from .test_delivery import ENV, NOW, NO_WAIT, subscribe

SEND = [sys.executable, "-m", "feedpub", "send"]


def open_world(site_dir: Path):
    site = load_site(site_dir)
    return site, Store(site.storage_url), load_schedule(site_dir, "Europe/Paris")


def compose(site, store, schedule):
    return compose_digest(site, schedule, "weekly", store, now=NOW).issue


def statuses(store) -> dict[str, int]:
    with store.engine.connect() as db:
        return dict(db.execute(text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())


def run_send(site_dir: Path, *args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run([*SEND, "--site", str(site_dir), *args], env={**os.environ, **ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


class RefusingSink(SinkHandler):
    """Refuses every MAIL FROM, as a relay does for an account it will not serve, until told otherwise."""

    def reset(self) -> None:
        super().reset()
        self.refuse = "530 5.7.0 Authentication required"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse:
            return self.refuse
        envelope.mail_from = address
        return "250 OK"


def test_a_relay_refusing_the_account_fails_no_row_and_exits_75_until_fixed(site_dir):
    handler = RefusingSink()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        mail_settings(site_dir, controller.port)
        site, store, schedule = open_world(site_dir)
        addresses = subscribe(store, 12)
        compose(site, store, schedule)
        for _ in range(3):  # more runs than a row has attempts
            result = run_send(site_dir)
            assert result.returncode == 75, result.stderr
            assert "transport down: 530 Authentication required" in result.stderr.replace("5.7.0 ", "")
        assert statuses(store) == {"pending": 12}
        with store.engine.connect() as db:
            assert set(db.execute(select(deliveries.c.attempts)).scalars()) == {0}
        status = subprocess.run([sys.executable, "-m", "feedpub", "status", "--site", str(site_dir)],
                                capture_output=True, text=True, env={**os.environ, **ENV})
        assert f"transport 127.0.0.1:{controller.port}: 530" in status.stdout and "next try at" in status.stdout
        handler.refuse = ""
        result = run_send(site_dir)
        assert result.returncode == 0, result.stderr
        assert handler.copies() == {address: 1 for address in addresses}
        status = subprocess.run([sys.executable, "-m", "feedpub", "status", "--site", str(site_dir)],
                                capture_output=True, text=True, env={**os.environ, **ENV})
        assert "transport " not in status.stdout  # a success closes the breaker
        store.close()
    finally:
        controller.stop()


def test_a_server_down_across_every_retry_delay_fails_nothing_then_delivers_once(site_dir):
    port = _free_port()  # nothing listens there yet
    mail_settings(site_dir, port)
    site, store, schedule = open_world(site_dir)
    addresses = subscribe(store, 10)
    compose(site, store, schedule)
    start = datetime.now(NOW.tzinfo)
    for hours in (0, 1, 3, 8, 30):  # past every retry delay, and the attempts a row is allowed
        clock = (lambda h=hours: start + timedelta(hours=h))
        report = send_queued(site, store, environ=ENV, schedule=schedule, clock=clock, retry_delays=NO_WAIT)
        assert report.transport_error and "cannot connect to 127.0.0.1" in report.transport_error
        assert (report.sent, report.failed, report.retrying) == (0, 0, 0)
    assert statuses(store) == {"pending": 10}
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        report = send_queued(site, store, environ=ENV, schedule=schedule)
    finally:
        controller.stop()
    assert (report.sent, report.failed, report.transport_error) == (10, 0, None)
    assert handler.copies() == {address: 1 for address in addresses}
    store.close()


class ThrottlingSink(SinkHandler):
    """Answers MAIL FROM with Postfix's "too much mail" for its first few transactions."""

    def reset(self) -> None:
        super().reset()
        self.throttle = 0  # transactions still to refuse
        self.per_second = 0  # then refuse any past this many in the last second, as Postfix's anvil does
        self.recent: list[float] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            now = time.monotonic()
            self.recent = [t for t in self.recent if now - t < 1.0]
            if self.throttle > 0 or (self.per_second and len(self.recent) >= self.per_second):
                self.throttle = max(self.throttle - 1, 0)
                return "450 4.7.1 Error: too much mail from 127.0.0.1"
            self.recent.append(now)
        envelope.mail_from = address
        return "250 OK"


@pytest.fixture
def throttling():
    handler = ThrottlingSink()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller
    controller.stop()


def test_throttling_slows_the_sender_and_fails_nothing(site_dir):
    handler = ThrottlingSink()
    handler.throttle = 4
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        mail_settings(site_dir, controller.port, connections=1)
        site, store, schedule = open_world(site_dir)
        addresses = subscribe(store, 8)
        compose(site, store, schedule)
        report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    finally:
        controller.stop()
    assert (report.sent, report.failed, report.retrying, report.transport_error) == (8, 0, 0, None)
    assert report.slowed_to is not None and report.slowed_to > 0
    assert handler.copies() == {address: 1 for address in addresses}
    with store.engine.connect() as db:
        assert set(db.execute(select(deliveries.c.attempts)).scalars()) == {1}
    store.close()


@pytest.fixture
def hung_server():
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_keeps_throttling_slows_the_sender_but_never_to_a_crawl(site_dir, throttling):
    throttling.handler.per_second = 25  # for the whole send
    mail_settings(site_dir, throttling.port, connections=4)
    site, store, schedule = open_world(site_dir)
    addresses = subscribe(store, 400)
    compose(site, store, schedule)
    started = time.monotonic()
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    seconds = time.monotonic() - started
    assert (report.sent, report.failed, report.transport_error) == (400, 0, None)
    assert report.slowed_to >= 1.0  # the floor
    # 16 s at the server's limit; the old pace, halving at every reply, fell to one a minute
    assert seconds < 60, f"{seconds:.0f} s"
    assert throttling.handler.copies() == {address: 1 for address in addresses}
    store.close()


def test_a_server_that_only_throttles_opens_the_breaker_and_sigterm_is_heard_at_once(site_dir, throttling):
    throttling.handler.throttle = 10**9
    mail_settings(site_dir, throttling.port, connections=2)
    site, store, schedule = open_world(site_dir)
    subscribe(store, 20)
    compose(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT,
                         give_up_throttled=timedelta(seconds=3))
    assert report.sent == 0 and report.failed == 0
    assert report.transport_error.startswith("throttled for 3 s")
    assert statuses(store) == {"pending": 20}
    store.close()
    sender = subprocess.Popen([*SEND, "--site", str(site_dir)], env={**os.environ, **ENV},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # deep in throttling (the breaker of the run above has let go: run it now)
    stopped_at = time.monotonic()
    sender.send_signal(signal.SIGTERM)
    _out, err = sender.communicate(timeout=30)
    assert time.monotonic() - stopped_at < 6
    assert sender.returncode == 75, err
    assert "stay queued" in err


def test_a_hung_server_costs_one_timeout_per_connection_not_one_per_message(site_dir, hung_server):
    mail_settings(site_dir, hung_server, connections=2, timeout=2)
    site, store, schedule = open_world(site_dir)
    subscribe(store, 40)
    compose(site, store, schedule)
    started = time.monotonic()
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    elapsed = time.monotonic() - started
    assert report.transport_error and "within 2 s" in report.transport_error
    assert (report.sent, report.failed) == (0, 0)
    assert statuses(store) == {"pending": 40}
    assert elapsed < 12, f"one pass took {elapsed:.1f} s; 40 timeouts would take 80"
    store.close()


def test_an_idn_domain_goes_as_punycode_and_a_utf8_local_part_goes_with_smtputf8(world_smtp):
    site, store, schedule, sink = world_smtp
    book = Subscribers(store)
    subscribe(store, 3)
    for address in ("hans@bücher.example", "jörg@example.net"):
        book.upsert(address, lists=["weekly"], source="test", now=NOW)
    compose(site, store, schedule)
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    assert (report.sent, report.failed) == (5, 0)  # the test server offers SMTPUTF8
    copies = sink.copies()
    assert copies["hans@xn--bcher-kva.example"] == 1 and copies["jörg@example.net"] == 1
    data = next(d for _f, to, d in sink.received if to == ["hans@xn--bcher-kva.example"])
    assert email.message_from_bytes(data, policy=policy.default)["To"].addresses[0].domain == \
        "xn--bcher-kva.example"


@pytest.fixture
def world_smtp(smtp_site_dir, sink):
    site, store, schedule = open_world(smtp_site_dir)
    yield site, store, schedule, sink
    store.close()


def test_each_row_has_its_own_message_id_across_fresh_states(tmp_path, site_dir, sink, smtp_server):
    ids = []
    for n in range(2):
        folder = tmp_path / f"copy{n}"
        subprocess.run(["cp", "-r", str(site_dir), str(folder)], check=True)
        mail_settings(folder, smtp_server.port)
        site, store, schedule = open_world(folder)
        subscribe(store, 3)
        compose(site, store, schedule)
        assert send_queued(site, store, environ=ENV, schedule=schedule).sent == 3
        with store.engine.connect() as db:
            ids += list(db.execute(select(deliveries.c.message_id)).scalars())
        store.close()
    sent_ids = [email.message_from_bytes(d, policy=policy.default)["Message-ID"] for _f, _t, d in sink.received]
    assert sorted(sent_ids) == sorted(ids) and len(set(ids)) == 6
    assert all(i.endswith("@ia-insights.example.org>") and len(i) > 40 for i in ids)


def test_a_retry_keeps_the_message_id_of_the_first_attempt(world_smtp):
    site, store, schedule, sink = world_smtp
    [address] = subscribe(store, 1)
    sink.temporary = {address: 1}
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    with store.engine.connect() as db:
        [kept] = db.execute(select(deliveries.c.message_id)).scalars()
    [(_f, _t, data)] = sink.received
    assert email.message_from_bytes(data, policy=policy.default)["Message-ID"] == kept


def test_retry_failed_requeues_failed_rows_but_never_bounced_readers(world_smtp, smtp_site_dir):
    site, store, schedule, sink = world_smtp
    addresses = subscribe(store, 4)
    sink.unknown = {addresses[0]}
    sink.temporary = {addresses[1]: 99}
    compose(site, store, schedule)
    for _ in range(5):
        send_queued(site, store, environ=ENV, schedule=schedule, retry_delays=NO_WAIT)
    assert statuses(store) == {"sent": 2, "failed": 2}
    sink.reset()
    result = run_send(smtp_site_dir, "--retry-failed")
    assert result.returncode == 0, result.stderr
    assert "1 failed message queued again" in result.stdout
    assert sink.copies() == {addresses[1]: 1}  # the bounced reader is never written to again
    assert statuses(store) == {"sent": 3, "failed": 1}


def test_a_failed_row_makes_send_exit_1_with_its_reason(world_smtp, smtp_site_dir):
    site, store, schedule, sink = world_smtp
    addresses = subscribe(store, 3)
    sink.unknown = {addresses[2]}
    compose(site, store, schedule)
    result = run_send(smtp_site_dir)
    assert result.returncode == 1
    assert f"not sent (1): 550 5.1.1 <{addresses[2]}>: Recipient address rejected: User unknown: " \
           f"{addresses[2]}" in result.stderr


def test_a_lease_keeps_rows_from_a_second_sender_until_it_expires(world_smtp):
    site, store, schedule, _sink = world_smtp
    subscribe(store, 5)
    compose(site, store, schedule)
    first, second = Ledger(store), Ledger(store)
    now = datetime.now(NOW.tzinfo)
    assert len(first.claim(10, now)) == 5
    assert second.claim(10, now) == []
    assert second.claim(10, now + timedelta(minutes=1)) == []  # still within the lease
    first.renew(now + timedelta(minutes=1))
    assert second.claim(10, now + timedelta(minutes=2, seconds=30)) == []  # renewed
    taken = second.claim(10, now + timedelta(minutes=4))
    assert len(taken) == 5 and second.expired(now) == 0


def test_two_senders_at_once_send_each_row_once(smtp_site_dir, sink):
    site, store, schedule = open_world(smtp_site_dir)
    addresses = subscribe(store, 300)
    compose(site, store, schedule)
    store.close()
    sink.delay = 0.003
    senders = [subprocess.Popen([*SEND, "--site", str(smtp_site_dir)], env={**os.environ, **ENV},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for sender in senders:
        _out, err = sender.communicate(timeout=180)
        assert sender.returncode == 0, err
    assert sink.copies() == {address: 1 for address in addresses}


def test_repeated_kills_while_composing_leave_no_issue_without_its_rows(site_dir):
    site, store, schedule = open_world(site_dir)
    subscribe(store, 2000)
    store.close()
    command = [sys.executable, "-m", "feedpub", "digest", "weekly", "--site", str(site_dir)]
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.5):
        process = subprocess.Popen(command, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        store = Store(site.storage_url)
        with store.engine.connect() as db:
            rows = dict(db.execute(select(issues.c.id, select(text("count(*)")).select_from(deliveries)
                                          .where(deliveries.c.issue_id == issues.c.id).scalar_subquery())).all())
        store.close()
        assert all(count == 2000 for count in rows.values()), rows
        if rows:
            break
    else:
        pytest.fail("no kill came late enough to find an issue; the test proves nothing")


def test_an_older_database_is_upgraded_and_its_unqueued_issue_repaired(site_dir, smtp_server, sink):
    mail_settings(site_dir, smtp_server.port)
    site = load_site(site_dir)
    path = Path(site.storage_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True)
    import sqlite3

    old = sqlite3.connect(path)
    old.executescript((Path(__file__).parent / "data" / "state-v1.sql").read_text(encoding="utf-8"))
    old.close()
    site, store, schedule = open_world(site_dir)
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    # Issue 1 was half sent: its sent row stays sent, its pending row goes. Issue 2 had no rows at all.
    assert report.sent == 3
    assert sink.copies() == {"b@example.net": 2, "a@example.net": 1}
    with store.engine.connect() as db:
        assert db.execute(select(text("count(*)")).select_from(deliveries)).scalar() == 4
    store.close()


def test_a_database_that_cannot_record_keeps_every_accepted_message_in_the_journal(smtp_site_dir, sink):
    # Another process holds the write lock past the 30 s busy timeout while the sender runs:
    # the server has accepted messages the database cannot record. They must be neither lost
    # nor sent again, and the sender must stop rather than go on sending blind.
    import sqlite3

    site, store, schedule = open_world(smtp_site_dir)
    addresses = subscribe(store, 40)
    compose(site, store, schedule)
    store.close()
    sink.delay = 0.2
    sender = subprocess.Popen([*SEND, "--site", str(smtp_site_dir)], env={**os.environ, **ENV},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(sink.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    blocker = sqlite3.connect(site.state_dir / "feedpub.sqlite", timeout=60, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, as a long import or a backup would hold it
    journal = site.state_dir / "accepted.journal"
    try:
        deadline = time.monotonic() + 90
        while not journal.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        blocker.execute("ROLLBACK")  # the sender puts back what it did not send, and stops
        blocker.close()
    _out, err = sender.communicate(timeout=120)
    assert sender.returncode != 0
    assert "did not record a sent message" in err and "Traceback" not in err
    journaled = journal.read_text().split("\n")
    assert len([line for line in journaled if line]) >= 1
    sink.delay = 0
    again = run_send(smtp_site_dir, timeout=180)
    assert again.returncode == 0, again.stderr
    assert sink.copies() == {address: 1 for address in addresses}
    assert not (site.state_dir / "accepted.journal").exists()
