"""`feedpub send --test ADDRESS [DIGEST]`: the digest as a preview would compose it now, mailed to one address.

Sent through the configured transport and signed like real mail, but
recorded nowhere: no issue, no ledger row, no subscriber, no transport
health. Its unsubscribe links carry a token no signature matches, so the
unsubscribe page answers that the link is not valid, and no one is
unsubscribed by it.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from .config import Site
from .dkim import make_signer
from .errors import FeedpubError
from .jobs import compose_digest
from .mail import IssueMessage, Letter, Recipient, envelope_address
from .schedule import Schedule
from .store import Store
from .subscribers import normalize_address
from .transports import DeliveryFailure, transport_factory

SUBJECT_PREFIX = "[test] "
INERT_TOKEN = "test-mail"


def pick_digest(schedule: Schedule, name: str | None) -> str | None:
    """NAME, or the only digest of schedule.yaml; None when there are several to choose from."""
    if name is not None:
        return schedule.digest(name).name
    if len(schedule.digests) == 1:
        return next(iter(schedule.digests))
    if not schedule.digests:
        raise FeedpubError("schedule.yaml: digests: none is declared, so there is nothing to test")
    return None


def send_test(site: Site, schedule: Schedule, store: Store, address: str, name: str, *,
              environ: Mapping[str, str], now: datetime) -> str:
    """Mail ADDRESS the current preview of digest NAME; a sentence saying what went where."""
    try:
        address = normalize_address(address)
        envelope = envelope_address(address)
    except ValueError as exc:
        raise FeedpubError(f"--test {address}: {exc}") from None
    digest = schedule.digest(name)
    # The preview's own files go to a folder thrown away: what counts is the composition.
    with tempfile.TemporaryDirectory(prefix="feedpub-test-") as scratch:
        outcome = compose_digest(site, schedule, name, store, now=now, preview=True, preview_dir=Path(scratch))
    if outcome.composition is None:
        raise FeedpubError(f"nothing to send: {outcome.message}")
    composition = outcome.composition
    letter = Letter(issue_id=0, digest=name, digest_title=digest.title,
                    subject=SUBJECT_PREFIX + composition.subject, html=composition.html, text=composition.text)
    message = IssueMessage(site, letter, date=now, unsubscribe_url=site.url("unsubscribe?token={token}"))
    data = message.render(Recipient(0, address), INERT_TOKEN, f"<test.{uuid.uuid4().hex}@{site.email.domain}>")
    signer = make_signer(site.email.dkim)
    if signer:
        data = signer.sign(data)
    make_transport, _connections = transport_factory(site.email, environ)
    transport = make_transport()
    try:
        transport.send(site.email.from_address, envelope.text, data, smtputf8=envelope.smtputf8)
    except DeliveryFailure as exc:
        raise FeedpubError(f"test mail to {address} not sent: {exc}") from None
    finally:
        transport.close()
    return (f"test mail of {name} ({len(composition.articles)} articles) sent to {address} "
            f"through {transport.name}: {letter.subject}")


def run_test_send(site: Site, address: str, name: str | None) -> None:
    """The command's side: ask for the digest on a terminal when there are several."""
    import os
    import sys

    import click

    from .jobs import open_store
    from .schedule import load_schedule

    schedule = load_schedule(site.root, site.timezone)
    chosen = pick_digest(schedule, name)
    if chosen is None:
        names = sorted(schedule.digests)
        if not sys.stdin.isatty():
            raise click.UsageError(f"name the digest to test: one of {', '.join(names)}")
        chosen = click.prompt("digest", type=click.Choice(names))
    store = open_store(site)
    try:
        click.echo(send_test(site, schedule, store, address, chosen, environ=os.environ,
                             now=datetime.now(site.tz)))
    finally:
        store.close()
