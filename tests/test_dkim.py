"""DKIM: every mail feedpub sends is signed over the headers readers trust, checked by dkimpy.

Keys are made by the openssl command and the public records are read back
from openssl, so neither the keys nor the verification depend on feedpub.
"""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import datetime
from zoneinfo import ZoneInfo

import dkim
import pytest
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.delivery import send_queued
from feedpub.dkim import OVERSIGNED, SIGNED, split_headers
from feedpub.jobs import compose_digest
from feedpub.ledger import Ledger
from feedpub.schedule import load_schedule
from feedpub.store import Store
from feedpub.subscribers import Subscribers

from .conftest import mail_settings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
ENV = {"FEEDPUB_SECRET_KEY": "test-secret"}
DOMAIN = "ia-insights.example.org"


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An RSA and an Ed25519 key, and the DNS answers a verifier would get for them."""
    folder = tmp_path_factory.mktemp("keys")
    rsa, ed = folder / "rsa.pem", folder / "ed25519.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(rsa))
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(ed))
    rsa_public = openssl("pkey", "-in", str(rsa), "-pubout", "-outform", "DER")
    ed_public = openssl("pkey", "-in", str(ed), "-pubout", "-outform", "DER")[-32:]  # the raw key ends the DER
    records = {
        f"news._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
        f"news-ed._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public),
    }
    return rsa, ed, records


def dkim_block(rsa, ed=None) -> str:
    block = f"  reply_to: editors@{DOMAIN}\n  dkim:\n    selector: news\n    key_file: {rsa}\n"
    if ed:
        block += f"    ed25519_key_file: {ed}\n    ed25519_selector: news-ed\n"
    return block


@pytest.fixture
def signed_mail(site_dir, sink, smtp_server, keys):
    """What the SMTP server received for one digest and one confirmation mail, signed with both keys."""
    rsa, ed, _records = keys
    mail_settings(site_dir, smtp_server.port, extra=dkim_block(rsa, ed))
    site = load_site(site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(site_dir, "Europe/Paris")
    book = Subscribers(store)
    with store.engine.begin() as db:
        book.upsert("reader@example.net", name="Reader", lists=["weekly"], source="test", now=NOW, db=db)
    book.request("new@example.net", name="New", lists=["weekly"], source="web", now=NOW)
    compose_digest(site, schedule, "weekly", store, now=NOW)
    report = send_queued(site, store, environ=ENV, schedule=schedule)
    store.close()
    assert report.sent == 2
    return {recipients[0]: data for _sender, recipients, data in sink.received}


def verifier(records):
    def dns(name, timeout=5):
        return records.get(name)
    return dns


def valid(data: bytes, index: int, dns) -> bool:
    try:
        return dkim.DKIM(data).verify(idx=index, dnsfunc=dns)
    except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
        return False


def signatures(data: bytes) -> list[dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0]
    found = []
    for name, value in split_headers(head + b"\r\n"):
        if name.lower() == b"dkim-signature":
            text = re.sub(r"\s+", "", value.decode())
            found.append(dict(tag.split("=", 1) for tag in text.split(";") if tag))
    return found


def test_digests_and_confirmations_carry_an_rsa_and_an_ed25519_signature_that_verify(signed_mail, keys):
    dns = verifier(keys[2])
    for data in signed_mail.values():
        assert [s["a"] for s in signatures(data)] == ["rsa-sha256", "ed25519-sha256"]
        checker = dkim.DKIM(data)
        assert checker.verify(idx=0, dnsfunc=dns)
        assert checker.verify(idx=1, dnsfunc=dns)


def test_the_signature_covers_every_trusted_header_and_oversigns_the_ones_forgers_add(signed_mail):
    data = signed_mail["reader@example.net"]
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    present = [name.decode().lower() for name, _ in split_headers(head)]
    for signature in signatures(data):
        names = signature["h"].lower().split(":")
        for name in SIGNED:
            expected = max(present.count(name), 1) + (name in OVERSIGNED and name in present)
            assert names.count(name) == expected, name
        assert signature["c"] == "relaxed/relaxed"
        assert signature["d"] == DOMAIN
    assert {"list-unsubscribe", "list-unsubscribe-post", "reply-to", "mime-version"} <= set(present)


@pytest.mark.parametrize("forgery", [
    pytest.param(lambda m: m.replace(f"Reply-To: editors@{DOMAIN}".encode(), b"Reply-To: thief@evil.example"),
                 id="changed Reply-To"),
    pytest.param(lambda m: m.replace(b"\r\nSubject:", b"\r\nSubject: Your account is locked\r\nSubject:", 1),
                 id="added Subject"),
    pytest.param(lambda m: m.replace(b"\r\nFrom:", b"\r\nFrom: bank@evil.example\r\nFrom:", 1), id="added From"),
    pytest.param(lambda m: m.replace(b"\r\nList-Unsubscribe:", b"\r\nList-Unsubscribe: <https://evil.example/>"
                                     b"\r\nList-Unsubscribe:", 1), id="added List-Unsubscribe"),
    pytest.param(lambda m: m.replace(b"\r\nMIME-Version:", b"\r\nReply-To: x@evil.example\r\nMIME-Version:", 1)
                 .replace(f"Reply-To: editors@{DOMAIN}\r\n".encode(), b""), id="Reply-To moved"),
    pytest.param(lambda m: m.replace(b"Content-Type: multipart/alternative", b"Content-Type: multipart/mixed", 1),
                 id="changed Content-Type"),
    pytest.param(lambda m: m[:-40] + b"X" + m[-39:], id="changed body"),
])
def test_a_forged_copy_fails_both_signatures(signed_mail, keys, forgery):
    dns = verifier(keys[2])
    data = signed_mail["reader@example.net"]
    forged = forgery(data)
    assert forged != data
    assert not valid(forged, 0, dns)
    assert not valid(forged, 1, dns)


def test_a_relay_that_refolds_headers_and_trailing_spaces_keeps_the_signatures_valid(signed_mail, keys):
    # relaxed/relaxed: what relays commonly do to whitespace must not break the signature
    data = signed_mail["new@example.net"]
    head, body = data.split(b"\r\n\r\n", 1)
    head = head.replace(b"Subject: ", b"Subject:   \r\n\t", 1)
    body = body.replace(b"\r\n", b"  \r\n") + b"\r\n\r\n"
    checker = dkim.DKIM(head + b"\r\n\r\n" + body)
    dns = verifier(keys[2])
    assert checker.verify(idx=0, dnsfunc=dns) and checker.verify(idx=1, dnsfunc=dns)


def bad_keys(folder, rsa):
    missing = folder / "missing.pem"
    garbage = folder / "garbage.pem"
    garbage.write_text("not a key\n")
    locked = folder / "locked.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes256", "-pass", "pass:secret",
            "-out", str(locked))
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(folder / "ed.pem"))
    public = folder / "public.pem"
    public.write_bytes(openssl("pkey", "-in", str(rsa), "-pubout"))
    return [
        (dkim_block(missing), "email.dkim.key_file: missing.pem: no such file"),
        (dkim_block(garbage), "email.dkim.key_file: garbage.pem: not a PEM private key"),
        (dkim_block(locked), "email.dkim.key_file: locked.pem: the key is protected by a password"),
        (dkim_block(public), "email.dkim.key_file: public.pem: not a PEM private key"),
        (dkim_block(rsa, rsa), "email.dkim.ed25519_key_file: rsa.pem: not an Ed25519 key"),
        (dkim_block(folder / "ed.pem"), "email.dkim.key_file: ed.pem: an Ed25519 key"),
    ]


def test_check_and_send_name_what_is_wrong_with_a_key_in_one_line(site_dir, sink, smtp_server, keys, tmp_path):
    original = (site_dir / "feedpub.yaml").read_text(encoding="utf-8")
    store = Store(load_site(site_dir).storage_url)
    Subscribers(store).request("someone@example.net", name="", lists=["weekly"], source="web", now=NOW)
    for block, expected in bad_keys(tmp_path, keys[0]):
        (site_dir / "feedpub.yaml").write_text(original, encoding="utf-8")
        mail_settings(site_dir, smtp_server.port, extra=block)
        for command in ("check", "send"):
            result = CliRunner().invoke(main, [command, "--site", str(site_dir)], env=ENV)
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert result.exit_code == 1, command
            assert expected in lines[0] and "Traceback" not in result.output, command
            assert command == "check" or len(lines) == 1
        assert sink.received == []
        assert Ledger(store).waiting() == 1  # the confirmation stays queued for the fixed key
    store.close()
