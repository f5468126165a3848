"""Per-row envelope senders: each message's bounce address names its row, and only ours do."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.delivery import send_queued
from feedpub.errors import ConfigError
from feedpub.store import deliveries, subscribers
from feedpub.subscribers import Subscribers
from feedpub.verp import MAX_LOCAL_PART, Verp

from .conftest import mail_settings
from .test_delivery import ENV, NOW, subscribe
from .test_delivery_faults import compose, open_world


def test_an_address_names_its_row_and_a_changed_one_names_none():
    verp = Verp("bounces@news.example.org", "key")
    address = verp.address(41)
    assert address.startswith("bounces+29.") and address.endswith("@news.example.org")
    assert verp.row(address) == 41
    assert verp.row(f"<{address.upper()}>") == 41  # mail systems that change case or keep the brackets
    local, _, domain = address.partition("@")
    assert verp.row(local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain) is None
    assert verp.row(address.replace("+29.", "+2a.")) is None  # another row, same MAC
    assert verp.row(address.replace("news.example.org", "evil.example")) is None
    assert Verp("bounces@news.example.org", "another key").row(address) is None
    assert verp.row("bounces@news.example.org") is None and verp.row("garbage") is None
    assert len(verp.address(2**48 - 1).partition("@")[0]) <= MAX_LOCAL_PART


def test_every_message_leaves_with_its_own_bounce_address(site_dir, sink, smtp_server):
    mail_settings(site_dir, smtp_server.port, extra="  return_path: bounces@ia-insights.example.org\n")
    site, store, schedule = open_world(site_dir)
    subscribe(store, 3)
    Subscribers(store).request("new@example.net", name="", lists=["weekly"], source="web", now=NOW)
    compose(site, store, schedule)
    assert send_queued(site, store, environ=ENV, schedule=schedule).sent == 4
    verp = Verp("bounces@ia-insights.example.org", ENV["FEEDPUB_SECRET_KEY"])
    with store.engine.connect() as db:
        rows = dict(db.execute(select(subscribers.c.email, deliveries.c.id)
                               .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)).all())
    store.close()
    senders = {recipients[0]: sender for sender, recipients, _data in sink.received}
    assert len(set(senders.values())) == 4
    assert {address: verp.row(sender) for address, sender in senders.items()} == rows


def test_without_a_return_path_the_envelope_sender_is_the_from_address(site_dir, sink, smtp_server):
    mail_settings(site_dir, smtp_server.port)
    site, store, schedule = open_world(site_dir)
    subscribe(store, 2)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    store.close()
    assert {sender for sender, _recipients, _data in sink.received} == {"lettre@ia-insights.example.org"}


@pytest.mark.parametrize(("return_path", "reason"), [
    ("bounces+x@ia-insights.example.org", "must not hold '+'"),
    ("b" * 40 + "@ia-insights.example.org", "a local part of at most 37 characters"),
    ("rücklauf@ia-insights.example.org", "write it in ASCII"),
])
def test_a_return_path_without_room_for_the_tag_is_refused_in_one_line(site_dir, smtp_server, return_path, reason):
    mail_settings(site_dir, smtp_server.port, extra=f"  return_path: {return_path}\n")
    result = CliRunner().invoke(main, ["check", "--site", str(site_dir)])
    assert result.exit_code != 0
    assert f"email.return_path: {return_path!r}" in result.output and reason in result.output
    with pytest.raises(ConfigError, match="email.return_path"):
        load_site(site_dir)
