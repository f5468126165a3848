"""Delivery through a real Postfix, and senders side by side with a real `feedpub serve`.

Postfix relays what it accepts to the test's aiosmtpd sink, so each copy is
read after a real MTA has handled it: pipelined commands, its own Received
header, its own queue. Without Postfix the tests that need it skip, and say
why, on a developer's machine; in CI (where .ci/run installs it) they fail.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import dkim
import httpx
import pytest

from feedpub.config import load_site
from feedpub.jobs import compose_digest
from feedpub.ledger import Ledger
from feedpub.schedule import load_schedule
from feedpub.store import Store
from feedpub.subscribers import Subscribers

from . import postfix
from .conftest import mail_settings
from .test_service import Served, form_token, wait_for

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
ENV = {**os.environ, "FEEDPUB_SECRET_KEY": "service-test-key"}
SEND = [sys.executable, "-m", "feedpub", "send", "--site"]
DOMAIN = "ia-insights.example.org"


def need_postfix() -> None:
    reason = postfix.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dkim")
    rsa, ed = folder / "rsa.pem", folder / "ed.pem"
    for path, algorithm in ((rsa, "RSA"), (ed, "ed25519")):
        subprocess.run(["openssl", "genpkey", "-algorithm", algorithm, "-out", str(path)], check=True,
                       capture_output=True)

    def public(path):
        return subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                              capture_output=True).stdout

    records = {f"news._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(public(rsa)),
               f"news-ed._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p="
               + base64.b64encode(public(ed)[-32:])}
    block = (f"  dkim:\n    selector: news\n    key_file: {rsa}\n"
             f"    ed25519_key_file: {ed}\n    ed25519_selector: news-ed\n")
    return block, lambda name, timeout=5: records.get(name)


def subscribe(store, addresses: list[str]) -> None:
    book = Subscribers(store)
    with store.engine.begin() as db:
        for address in addresses:
            book.upsert(address, name="", lists=["weekly"], source="test", now=NOW, db=db)


def test_every_copy_crosses_postfix_once_with_both_signatures_intact(site_dir, sink, smtp_server, keys):
    need_postfix()
    block, dns = keys
    with postfix.Postfix(relay_to=smtp_server.port) as mta:
        mail_settings(site_dir, mta.port, extra=block, connections=4)
        site = load_site(site_dir)
        store = Store(site.storage_url)
        addresses = [f"reader{n}@example.net" for n in range(200)]
        subscribe(store, addresses)
        Subscribers(store).request("new@example.net", name="New", lists=["weekly"], source="web", now=NOW)
        compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "weekly", store, now=NOW)
        store.close()
        sent = subprocess.run([*SEND, str(site_dir)], env=ENV, capture_output=True, text=True, timeout=300)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: len(sink.received) >= 201, seconds=60)
        time.sleep(0.5)  # nothing more is on its way
    assert sink.copies() == {address: 1 for address in [*addresses, "new@example.net"]}
    for _sender, _recipients, data in sink.received:
        assert data.startswith(b"Received:")  # it did go through Postfix
        checker = dkim.DKIM(data)
        assert checker.verify(idx=0, dnsfunc=dns) and checker.verify(idx=1, dnsfunc=dns)


def test_a_server_without_smtputf8_fails_only_the_reader_who_needs_it(site_dir, sink, smtp_server):
    need_postfix()
    with postfix.Postfix(relay_to=smtp_server.port, smtputf8=False) as mta:
        mail_settings(site_dir, mta.port)
        site = load_site(site_dir)
        store = Store(site.storage_url)
        subscribe(store, ["before@example.net", "jörg@example.net", "after@bücher.example"])
        compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "weekly", store, now=NOW)
        sent = subprocess.run([*SEND, str(site_dir)], env=ENV, capture_output=True, text=True, timeout=120)
        wait_for(lambda: len(sink.received) >= 2, seconds=60)
        time.sleep(0.5)
    assert sent.returncode == 1
    assert "does not offer SMTPUTF8" in sent.stderr and "jörg@example.net" in sent.stderr
    assert sink.copies() == {"before@example.net": 1, "after@xn--bcher-kva.example": 1}
    assert Ledger(store).counts()[0].counts["failed"] == 1
    store.close()


def test_a_sender_beside_serve_sends_each_row_once(site_dir, sink, smtp_server):
    mail_settings(site_dir, smtp_server.port)
    site = load_site(site_dir)
    store = Store(site.storage_url)
    addresses = [f"reader{n}@example.net" for n in range(400)]
    subscribe(store, addresses)
    compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "weekly", store, now=NOW)
    sink.delay = 0.02  # long enough for both to be sending at once
    sender = subprocess.Popen([*SEND, str(site_dir)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    server = Served(site_dir)  # its start-up catch-up sends what is queued
    try:
        out, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
        wait_for(lambda: Ledger(store).waiting() == 0 and Ledger(store).counts()[0].counts["sending"] == 0,
                 seconds=60)
    finally:
        code, log = server.stop()
    by_sender = int(re.search(r"done: (\d+) sent", out).group(1))
    by_serve = sum(int(n) for n in re.findall(r"send: (\d+) sent", log))
    assert by_sender > 0 and by_serve > 0 and by_sender + by_serve == 400  # both took part
    assert sink.copies() == {address: 1 for address in addresses}
    assert "links point to base_url http://127.0.0.1:8080/" in log  # serve runs on another port here
    store.close()


def test_a_confirmation_answered_then_killed_is_still_sent_and_signed(site_dir, sink, smtp_server, keys):
    block, dns = keys
    mail_settings(site_dir, smtp_server.port, extra=block)
    sink.delay = 2.0  # the service's own send is still in DATA when it dies
    server = Served(site_dir)
    form = server.client.get("/subscribe")
    answer = server.client.post("/subscribe", data={"email": "reader@example.net", "name": "Reader",
                                                    "lists": "weekly", "form_token": form_token(form.text)})
    assert answer.status_code == 200
    server.process.send_signal(signal.SIGKILL)
    assert server.stop()[0] == -signal.SIGKILL
    assert sink.received == []
    sink.delay = 0
    sent = subprocess.run([*SEND, str(site_dir)], env=ENV, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert sink.copies() == {"reader@example.net": 1}
    data = sink.received[0][2]
    assert b"confirm?token=" in data.replace(b"=\r\n", b"")
    checker = dkim.DKIM(data)
    assert checker.verify(idx=0, dnsfunc=dns) and checker.verify(idx=1, dnsfunc=dns)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.base + "/healthz", timeout=1)
