"""Reports that come back after a message was accepted: bounces, complaints, unsubscribes by mail.

The reports are written here in the shapes Postfix, Exim, Microsoft's and
Gmail's servers and a feedback loop send them (our own text), around the
real bounce addresses and Message-IDs of a real send, and dropped into a
Maildir that `feedpub bounces` reads.
"""

from __future__ import annotations

import email
import imaplib
import mailbox
import os
import socket
import ssl
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.delivery import send_queued
from feedpub.store import deliveries, subscribers
from feedpub.subscribers import Subscribers

from . import dovecot, postfix
from .conftest import mail_settings
from .test_delivery import ENV, NOW, subscribe
from .test_delivery_faults import compose, open_world
from .test_real_mta import need_postfix
from .test_service import wait_for

RETURN_PATH = "bounces@ia-insights.example.org"


def dsn(to: str, recipient: str, status: str, action: str, diagnostic: str, *, original: str = "",
        headers_only: bool = False, mta: str = "mx.example.net") -> bytes:
    kind = "text/rfc822-headers" if headers_only else "message/rfc822"
    return (f"From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\nTo: {to}\r\nDelivered-To: {to}\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{status}-{recipient}@{mta}>\r\n"
            f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
            f"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
            f"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {mta}\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
            f"--b1\r\nContent-Type: {kind}\r\n\r\n{original}\r\n--b1--\r\n").encode()


def complaint(to: str, original: str) -> bytes:
    return (f"From: Feedback Loop <fbl@feedback.example.com>\r\nTo: {to}\r\nSubject: Complaint about message\r\n"
            f"Message-ID: <arf-1@feedback.example.com>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="b2"\r\n\r\n'
            f"--b2\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\r\n"
            f"--b2\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\n"
            f"Version: 1\r\n\r\n--b2\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--b2--\r\n").encode()


def plain(to: str, subject: str, body: str, *, extra: str = "", message_id: str = "") -> bytes:
    return (f"From: someone@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
            f"Message-ID: <{message_id or subject.replace(' ', '-')}@example.net>\r\n\r\n{body}\r\n").encode()


def bounce_site(site_dir, port: int, mailbox: str = "bounces"):
    """The example site mailing through PORT with a bounce address, reading reports from MAILBOX."""
    mail_settings(site_dir, port, extra=f"  return_path: {RETURN_PATH}\n")
    with open(site_dir / "feedpub.yaml", "a", encoding="utf-8") as settings:
        settings.write(f"bounces:\n  mailbox: {mailbox}\n")
    return open_world(site_dir)


def test_reports_bounce_suppress_and_unsubscribe_each_once(site_dir, sink, smtp_server):
    site, store, schedule = bounce_site(site_dir, smtp_server.port)
    addresses = subscribe(store, 9)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    copies = {recipients[0]: (sender, email.message_from_bytes(data, policy=policy.default))
              for sender, recipients, data in sink.received}
    bounce_to = {a: copies[a][0] for a in addresses}
    message_id = {a: copies[a][1]["Message-ID"] for a in addresses}
    mailto = copies[addresses[4]][1]["List-Unsubscribe"].split(",")[1].strip(" <>")
    token = unquote(parse_qs(urlsplit(mailto).query)["subject"][0]).split()[1]
    quoted = {a: f"Return-Path: <{bounce_to[a]}>\r\nMessage-ID: {message_id[a]}\r\nTo: {a}\r\nSubject: x\r\n"
              for a in addresses}
    # reader6 subscribed again after the message a report will be about
    with store.engine.begin() as db:
        db.execute(subscribers.update().where(subscribers.c.email == addresses[6])
                   .values(confirmed_at=datetime.now(NOW.tzinfo) + timedelta(days=1)))

    box = mailbox.Maildir(site_dir / "bounces", create=True)
    samples = {
        "postfix 5.1.1": dsn(bounce_to[addresses[0]], addresses[0], "5.1.1", "failed",
                             "550 5.1.1 <reader0@example.net>: Recipient address rejected: User unknown",
                             original=quoted[addresses[0]]),
        "microsoft 5.7.1, no bounce address, quoted headers only": dsn(
            RETURN_PATH, addresses[1], "5.7.1", "failed", "550 5.7.1 Delivery not authorized, message refused",
            original=f"Message-ID: {message_id[addresses[1]]}\r\nSubject: x\r\n", headers_only=True,
            mta="outlook.example.com"),
        "gmail delayed": dsn(bounce_to[addresses[2]], addresses[2], "4.2.2", "delayed",
                             "452 4.2.2 The email account that you tried to reach is over quota"),
        "complaint": complaint("fbl-reports@ia-insights.example.org", quoted[addresses[3]]),
        "mailto unsubscribe": plain("unsubscribe@ia-insights.example.org", f"unsubscribe {token}", ""),
        "forged mailto unsubscribe": plain("unsubscribe@ia-insights.example.org", "unsubscribe AAAA.BBBB.CCCC", ""),
        "out of office": plain(bounce_to[addresses[5]], "Out of office: back on Monday", "I am away.",
                               extra="Auto-Submitted: auto-replied\r\n"),
        "exim plain, auto-submitted": plain(
            bounce_to[addresses[7]], "Mail delivery failed: returning message to sender",
            f"  {addresses[7]}\r\n    host mx.example.net [192.0.2.1]\r\n    SMTP error from remote mail server "
            f"after RCPT TO:<{addresses[7]}>:\r\n    550 5.1.1 User unknown", extra="Auto-Submitted: auto-generated\r\n"
        ).replace(b"From: someone@example.net", b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>"),
        "after re-subscribing": dsn(bounce_to[addresses[6]], addresses[6], "5.1.1", "failed", "550 5.1.1 unknown"),
        "garbage": b"\x00\xff not a message at all \r\n\r\n\x00",
        "an IP address is not a status": plain(bounce_to[addresses[8]], "Hello", "from 10.5.1.1, version 5.1.1.2"),
    }
    for sample in samples.values():
        box.add(sample)

    first = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert first.exit_code == 0, first.output
    assert "1 auto-reply, 1 complaint, 4 hard, 1 soft, 1 unsubscribe" in first.output
    book = Subscribers(store)
    status = {a: book.get(a).status for a in addresses}
    assert status == {addresses[0]: "bounced", addresses[1]: "active", addresses[2]: "active",
                      addresses[3]: "complained", addresses[4]: "unsubscribed", addresses[5]: "active",
                      addresses[6]: "active", addresses[7]: "bounced", addresses[8]: "active"}
    with store.engine.connect() as db:
        rows = dict(db.execute(select(subscribers.c.email, deliveries.c.status)
                               .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)).all())
    assert [a for a in addresses if rows[a] == "bounced"] == [addresses[0], addresses[1], addresses[6], addresses[7]]
    assert "not understood" in first.output and "3 not understood" in first.output  # forged, garbage, the IP
    left = [box.get_bytes(key) for key in box.keys()]
    assert len(left) == 3 and samples["garbage"] in left

    status_result = CliRunner().invoke(main, ["status", "--site", str(site_dir)], env=ENV)
    assert status_result.exception is None, repr(status_result.exception)
    status_out = status_result.output
    assert ("9 sent, 0 retrying, 0 failed, 0 skipped; 4 hard / 1 soft bounces (44.44 %), "
            "1 complaint (11.11 %), 1 unsubscribed") in status_out
    assert "warning: complaint rate 11.11 % is over 0.1 %" in status_out
    assert "warning: hard-bounce rate 44.44 % is over 2 %" in status_out
    listed = CliRunner().invoke(main, ["subscribers", "list", "--status", "bounced", "--site", str(site_dir)]).output
    assert f"{addresses[0]}\t" in listed and "hard 5.1.1: smtp; 550 5.1.1 <reader0@example.net>" in listed
    listed = CliRunner().invoke(main, ["subscribers", "list", "--status", "complained", "--site",
                                       str(site_dir)]).output
    assert "complaint abuse: feedback report: abuse" in listed and "1 subscriber" in listed

    # Read again, and one report delivered twice: nothing is done again.
    box.add(samples["postfix 5.1.1"])
    second = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert "1 read before" in second.output and "nothing new" in second.output
    assert book.get(addresses[0]).status == "bounced" and len(box.get_folder("processed")) == 9

    # A complaint is final: neither an import nor a new sign-up brings the reader back.
    with store.engine.begin() as db:
        assert book.upsert(addresses[3], name="", lists=["weekly"], source="import", now=NOW, db=db)[0] == "refused"
    book.request(addresses[3], name="", lists=["weekly"], source="web", now=NOW)
    assert book.get(addresses[3]).status == "complained"
    store.close()


def test_three_other_permanent_failures_within_thirty_days_suppress_a_reader(site_dir, sink, smtp_server):
    from feedpub.verp import Verp

    site, store, schedule = bounce_site(site_dir, smtp_server.port)
    (address,) = subscribe(store, 1)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    # Two more messages sent to the same reader (confirmations, outside any issue): three ledger rows.
    with store.engine.begin() as db:
        first = db.execute(select(deliveries)).one()._asdict()
        again = [{**first, "id": None, "kind": "confirm", "issue_id": None,
                  "message_id": f"<again-{n}@ia-insights.example.org>"} for n in (1, 2)]
        rows = [first["id"]] + [db.execute(deliveries.insert().values(row)).inserted_primary_key[0] for row in again]
    verp = Verp(RETURN_PATH, ENV["FEEDPUB_SECRET_KEY"])
    box = mailbox.Maildir(site_dir / "bounces", create=True)
    book = Subscribers(store)
    # The first message's failure reported twice, by two reports: one failed message, not two.
    for n, row in enumerate([rows[0], rows[0], rows[1], rows[2]]):
        box.add(dsn(verp.address(row), address, "5.7.1", "failed", f"550 5.7.1 policy refusal {n}").replace(
            b"<dsn-", f"<dsn{n}-".encode()))
        result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
        assert "1 hard" in result.output
        assert book.get(address).status == ("bounced" if n == 3 else "active")
    status = CliRunner().invoke(main, ["status", "--site", str(site_dir)], env=ENV).output
    assert "1 sent" in status and "1 hard / 0 soft bounces (100.00 %)" in status  # its row, not its 2 reports
    store.close()


def test_reports_are_read_from_a_real_imap_server_over_tls(site_dir, sink, smtp_server):
    reason = dovecot.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)
    with dovecot.Dovecot() as server:
        mail_settings(site_dir, smtp_server.port, extra=f"  return_path: {RETURN_PATH}\n")
        with open(site_dir / "feedpub.yaml", "a", encoding="utf-8") as settings:
            settings.write(f"bounces:\n  mailbox: imaps://{dovecot.USER}@127.0.0.1:{server.port}/INBOX\n"
                           f"  ca_file: {server.ca_file}\n")
        site, store, schedule = open_world(site_dir)
        addresses = subscribe(store, 2)
        compose(site, store, schedule)
        send_queued(site, store, environ=ENV, schedule=schedule)
        bounce_to = {recipients[0]: sender for sender, recipients, _data in sink.received}
        server.deliver(dsn(bounce_to[addresses[0]], addresses[0], "5.1.1", "failed", "550 5.1.1 no such user"))
        quoted = f"Return-Path: <{bounce_to[addresses[1]]}>\r\nSubject: x\r\n"
        server.deliver(complaint("fbl@ia-insights.example.org", quoted))
        server.deliver(b"Subject: what is this\r\n\r\nnothing feedpub knows\r\n")

        unset = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
        assert unset.exit_code == 1 and "Error: bounces: FEEDPUB_BOUNCES_PASSWORD is not set" in unset.output
        wrong = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)],
                                   env={**ENV, "FEEDPUB_BOUNCES_PASSWORD": "wrong"})
        assert wrong.exit_code == 1
        assert f"refused {dovecot.USER} (password in FEEDPUB_BOUNCES_PASSWORD)" in wrong.output
        env = {**ENV, "FEEDPUB_BOUNCES_PASSWORD": dovecot.PASSWORD}
        first = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=env)
        assert first.exit_code == 0, first.output
        assert "1 complaint, 1 hard" in first.output and "1 not understood" in first.output
        book = Subscribers(store)
        assert [book.get(a).status for a in addresses] == ["bounced", "complained"]
        again = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=env)
        assert "nothing new" in again.output and "read before" not in again.output

        imap = imaplib.IMAP4_SSL("127.0.0.1", server.port,
                                 ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
        imap.login(dovecot.USER, dovecot.PASSWORD)
        assert imap.select("INBOX")[1] == [b"1"]  # only the one not understood
        assert imap.select("processed")[1] == [b"2"]
        imap.logout()
        store.close()


def test_a_real_postfix_bounce_for_an_unknown_user_suppresses_the_reader(site_dir, sink, smtp_server):
    need_postfix()
    sink.unknown.add("nobody@mail.example.net")  # the destination behind Postfix has no such mailbox
    with postfix.Postfix(relay_to=smtp_server.port) as mta:
        site, store, schedule = bounce_site(site_dir, mta.port)
        book = Subscribers(store)
        with store.engine.begin() as db:
            book.upsert("nobody@mail.example.net", name="", lists=["weekly"], source="test", now=NOW, db=db)
        compose(site, store, schedule)
        assert send_queued(site, store, environ=ENV, schedule=schedule).sent == 1  # accepted, then bounced
        sender, recipients, report = wait_for(lambda: next(iter(sink.received), None), seconds=60)
    assert sender in ("", "<>") and recipients[0].startswith("bounces+")  # Postfix's own DSN, to the row's address
    mailbox.Maildir(site_dir / "bounces", create=True).add(
        b"Delivered-To: " + recipients[0].encode() + b"\r\n" + report)
    result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert "1 hard" in result.output and "nobody@mail.example.net" in result.output, result.output
    assert book.get("nobody@mail.example.net").status == "bounced"
    store.close()


def test_the_service_reads_the_mailbox_on_its_own_and_rides_out_a_mailbox_that_is_down(site_dir, sink, smtp_server,
                                                                                      caplog):
    from feedpub.schedule import load_schedule
    from feedpub.scheduler import Service

    site, store, schedule = bounce_site(site_dir, smtp_server.port)
    (address,) = subscribe(store, 1)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    mailbox.Maildir(site_dir / "bounces", create=True).add(
        dsn(sink.received[0][0], address, "5.1.1", "failed", "550 5.1.1 no such user"))
    service = Service(site, load_schedule(site_dir, "Europe/Paris"), store, environ=ENV)
    assert service.schedule.bounces_every == timedelta(minutes=5)
    with caplog.at_level("INFO", logger="feedpub"):
        service.bounces()
    assert Subscribers(store).get(address).status == "bounced"
    assert "bounces: 1 hard" in caplog.text

    (site_dir / "feedpub.yaml").write_text((site_dir / "feedpub.yaml").read_text(encoding="utf-8").replace(
        "mailbox: bounces", f"mailbox: imaps://nobody@127.0.0.1:{smtp_server.port + 1}/INBOX"), encoding="utf-8")
    down = Service(load_site(site_dir), load_schedule(site_dir, "Europe/Paris"), store, environ=ENV)
    with caplog.at_level("WARNING", logger="feedpub"):
        down.bounces()  # no exception: the next turn tries again
    assert "bounces: cannot reach the IMAP server 127.0.0.1" in caplog.text
    store.close()


def test_a_success_notice_and_a_forged_bounce_change_nothing():
    from feedpub.reports import ReportReader
    from feedpub.verp import Verp

    reader = ReportReader(Verp(RETURN_PATH, "key"), "ia-insights.example.org")
    ours = Verp(RETURN_PATH, "key").address(7)
    delivered = reader.read(dsn(ours, "reader@example.net", "2.0.0", "delivered", "250 2.0.0 OK"))
    assert delivered.kind == "unknown"
    relayed = reader.read(dsn(ours, "reader@example.net", "2.0.0", "relayed", "250 OK"))
    assert relayed.kind == "unknown"
    # A bounce naming someone, but neither their bounce address nor one of our Message-IDs: no row.
    forged = reader.read(dsn(RETURN_PATH, "victim@example.net", "5.1.1", "failed", "550 5.1.1 unknown"))
    assert forged.kind == "hard" and forged.row is None and forged.message_id is None
    tampered = reader.read(dsn(ours.replace("+7.", "+8."), "reader@example.net", "5.1.1", "failed", "550"))
    assert tampered.row is None
    assert reader.read(dsn(ours.upper(), "reader@example.net", "5.1.1", "failed", "550")).row == 7
    # Several recipients: the one that failed is the one that counts.
    two = dsn(ours, "reader@example.net", "2.0.0", "delivered", "250 OK").replace(
        b"\r\n--b1\r\nContent-Type: message/rfc822",
        b"\r\nFinal-Recipient: rfc822; reader@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b1\r\nContent-Type: message/rfc822")
    assert (reader.read(two).kind, reader.read(two).status) == ("hard", "5.1.1")


def test_replies_by_people_and_their_robots_are_never_bounces():
    from feedpub.reports import ReportReader
    from feedpub.verp import Verp

    reader = ReportReader(Verp(RETURN_PATH, "key"), "ia-insights.example.org")
    ours = Verp(RETURN_PATH, "key").address(7)
    vacation = plain(ours, "Abwesenheitsnotiz", "Ich bin ab 5.1.26 wieder im Buero.",
                     extra="Auto-Submitted: auto-replied\r\n")
    challenge = plain(ours, "Please confirm", "Your message could not be delivered until you confirm you are human.",
                      extra="Auto-Submitted: auto-replied\r\n")
    dated = plain(ours, "Re: la semaine", "Merci ! Rendez-vous le 5.1.26, version 4.5.1 du logiciel.")
    assert [reader.read(m).kind for m in (vacation, challenge)] == ["auto-reply", "auto-reply"]
    assert reader.read(dated).kind == "unknown"
    exim = plain(ours, "Mail delivery failed: returning message to sender", "550 5.1.1 User unknown",
                 extra="Auto-Submitted: auto-generated\r\n").replace(
        b"From: someone@example.net", b"From: Mail Delivery System <Mailer-Daemon@mx.example>")
    qmail = plain(ours, "failure notice", "Sorry, no mailbox here by that name. (#5.1.1)").replace(
        b"From: someone@example.net", b"From: MAILER-DAEMON@mx.example")
    assert [(reader.read(m).kind, reader.read(m).status) for m in (exim, qmail)] == [("hard", "5.1.1")] * 2


def test_an_imap_login_that_is_an_address_is_split_at_its_last_at_and_decoded():
    from feedpub.settings import Section
    from feedpub.mailboxes import imap_utf7, mailbox_settings

    def settings(url: str):
        return mailbox_settings(Section({"mailbox": url}, "feedpub.yaml", "bounces."), Path("."))

    for url in ("imaps://bounces@example.org@mail.example.org:993/INBOX",
                "imaps://bounces%40example.org@mail.example.org/INBOX"):
        found = settings(url)
        assert (found.user, found.host, found.port, found.folder) == ("bounces@example.org", "mail.example.org",
                                                                      993, "INBOX")
    # RFC 3501's own example, and an ampersand
    assert imap_utf7("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert imap_utf7("R\u00fcckl\u00e4ufer & co") == "R&APw-ckl&AOQ-ufer &- co"


def test_a_folder_not_in_ascii_and_a_connection_dropped_midway_on_a_real_imap_server(site_dir, sink, smtp_server):
    from feedpub.errors import FeedpubError
    from feedpub.mailboxes import IMAPSource, mailbox_settings
    from feedpub.settings import Section

    reason = dovecot.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)
    folder = "R\u00fcckl\u00e4ufer"
    with dovecot.Dovecot() as server:
        mail_settings(site_dir, smtp_server.port, extra=f"  return_path: {RETURN_PATH}\n")
        url = f"imaps://{dovecot.USER.replace('@', '%40')}@127.0.0.1:{server.port}/{folder}"
        with open(site_dir / "feedpub.yaml", "a", encoding="utf-8") as settings:
            settings.write(f"bounces:\n  mailbox: {url}\n  ca_file: {server.ca_file}\n")
        site, store, schedule = open_world(site_dir)
        addresses = subscribe(store, 2)
        compose(site, store, schedule)
        send_queued(site, store, environ=ENV, schedule=schedule)
        bounce_to = {recipients[0]: sender for sender, recipients, _data in sink.received}
        imap = imaplib.IMAP4_SSL("127.0.0.1", server.port,
                                 ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
        imap.login(dovecot.USER, dovecot.PASSWORD)
        assert imap.create('"R&APw-ckl&AOQ-ufer"')[0] == "OK"
        for n, address in enumerate(addresses):
            imap.append('"R&APw-ckl&AOQ-ufer"', None, None,
                        dsn(bounce_to[address], address, "5.1.1", "failed", f"550 5.1.1 no such user {n}"))
        imap.logout()
        env = {**ENV, "FEEDPUB_BOUNCES_PASSWORD": dovecot.PASSWORD}

        # Dropped after the first message: one line, and nothing taken that was not acted on.
        source = IMAPSource(mailbox_settings(Section({"mailbox": url, "ca_file": str(server.ca_file)},
                                                     "feedpub.yaml", "bounces."), site_dir), env)
        messages = source.messages()
        next(messages)
        source.imap.sock.shutdown(socket.SHUT_RDWR)  # the line goes dead under the reader
        with pytest.raises(FeedpubError, match="connection to 127.0.0.1:.* was lost while reading"):
            next(messages)
        source.close()

        result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=env)
        assert result.exit_code == 0, result.output
        assert "2 hard" in result.output
        assert [Subscribers(store).get(a).status for a in addresses] == ["bounced", "bounced"]
        store.close()


def test_header_bytes_that_are_not_utf8_and_deep_nesting_never_stop_a_read(site_dir, sink, smtp_server, caplog):
    site, store, schedule = bounce_site(site_dir, smtp_server.port)
    addresses = subscribe(store, 2)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    bounce_to = {recipients[0]: sender for sender, recipients, _data in sink.received}
    ours = bounce_to[addresses[0]]
    good = dsn(ours, addresses[0], "5.1.1", "failed", "550 5.1.1 no such user")
    odd = [good.replace(b"<dsn-", f"<odd{n}-".encode()).replace(field, field[:-1] + b"\xff" + field[-1:])
           for n, field in enumerate([b"Action: failed", b"Status: 5.1.1", b"Final-Recipient: rfc822;"])]
    odd.append(complaint(bounce_to[addresses[1]], "Subject: x\r\n").replace(b"Feedback-Type: abuse",
                                                                            b"Feedback-Type: ab\xffuse"))
    for header in (b"Auto-Submitted: auto-\xffreplied", b"Precedence: bu\xfflk", b"Original-Recipient: rfc822;\xff"):
        odd.append(plain(ours, "Mail delivery failed", "550 5.1.1 User unknown", extra=header.decode("latin-1")
                         + "\r\n", message_id=f"plain-{len(odd)}").replace(b"\xc3\xbf", b"\xff"))
    nested_multipart = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (n, n)
                                for n in range(1000)) + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    nested_message = b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"Subject: x\r\n\r\nhi\r\n"
    box = mailbox.Maildir(site_dir / "bounces", create=True)
    for raw in [*odd, nested_multipart, nested_message, good]:
        box.add(raw)

    with caplog.at_level("WARNING", logger="feedpub"):
        result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert result.exit_code == 0 and result.exception is None, result.output
    # Each message too deep to parse: one line, then the next message.
    assert caplog.text.count("not understood: RecursionError") == 2 and "Traceback" not in caplog.text
    # The good one was read, whatever came first; the odd bytes are read as text where they can be.
    assert [Subscribers(store).get(a).status for a in addresses] == ["bounced", "complained"]
    assert "Traceback" not in result.output and "not understood" in result.output
    store.close()


def test_a_quoted_message_id_alone_marks_nobody(site_dir, sink, smtp_server):
    site, store, schedule = bounce_site(site_dir, smtp_server.port)
    addresses = subscribe(store, 4)
    compose(site, store, schedule)
    send_queued(site, store, environ=ENV, schedule=schedule)
    message_id = {recipients[0]: email.message_from_bytes(data, policy=policy.default)["Message-ID"]
                  for _sender, recipients, data in sink.received}
    box = mailbox.Maildir(site_dir / "bounces", create=True)
    # Unsigned, to the bare return path, quoting a reader's Message-ID but naming someone else.
    box.add(dsn(RETURN_PATH, "attacker@example.com", "5.1.1", "failed", "550 5.1.1 unknown",
                original=f"Message-ID: {message_id[addresses[0]]}\r\nSubject: x\r\n"))
    box.add(complaint(RETURN_PATH, f"Message-ID: {message_id[addresses[1]]}\r\nSubject: x\r\n"))
    box.add(complaint(RETURN_PATH, f"Message-ID: {message_id[addresses[2]]}\r\nTo: other@example.com\r\n")
            .replace(b"<arf-1@", b"<arf-3@"))
    # A provider's feedback loop quotes the original with its To: that names the reader.
    box.add(complaint(RETURN_PATH, f"Message-ID: {message_id[addresses[3]]}\r\nTo: {addresses[3].upper()}\r\n"
                                   f"Subject: x\r\n").replace(b"<arf-1@", b"<arf-2@"))
    result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "bounces: 1 complaint" in result.output and "3 unverified" in result.output
    book = Subscribers(store)
    assert [book.get(a).status for a in addresses] == ["active", "active", "active", "complained"]
    with store.engine.connect() as db:
        assert [row.status for row in db.execute(select(deliveries.c.status))] == ["sent"] * 4
    again = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert "nothing new" in again.output and "unverified" not in again.output
    store.close()


def test_a_robot_reply_is_not_a_bounce_whoever_it_says_it_is():
    from feedpub.reports import ReportReader
    from feedpub.verp import Verp

    reader = ReportReader(Verp(RETURN_PATH, "key"), "ia-insights.example.org")
    ours = Verp(RETURN_PATH, "key").address(7)
    marks = ("Auto-Submitted: auto-replied", "X-Autoreply: yes", "X-Autorespond: yes", "Precedence: auto_reply")
    for mark in marks:
        reply = plain(ours, "Mail delivery failed", "550 5.1.1 User unknown, undeliverable",
                      extra=mark + "\r\n").replace(b"From: someone@example.net",
                                                    b"From: Mail Delivery System <MAILER-DAEMON@mx.example>")
        assert reader.read(reply).kind == "auto-reply", mark


@pytest.mark.parametrize("where", ["missing", "no/parent", "a-file", "plain-folder"])
def test_a_maildir_that_is_not_there_is_said_in_one_line_and_never_made(site_dir, sink, smtp_server, where):
    bounce_site(site_dir, smtp_server.port, mailbox=where)[1].close()
    if where == "a-file":
        (site_dir / where).write_text("not a folder")
    if where == "plain-folder":
        (site_dir / where).mkdir()
    before = sorted(str(p) for p in site_dir.rglob("*") if "state" not in p.parts)
    result = CliRunner().invoke(main, ["bounces", "--site", str(site_dir)], env=ENV)
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip() == f"Error: bounces.mailbox: no Maildir at {site_dir / where} (no cur/ new/)"
    assert sorted(str(p) for p in site_dir.rglob("*") if "state" not in p.parts) == before
