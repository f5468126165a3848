"""One reader's copy of an issue: spliced bytes that decode to exactly the personalized issue."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy

from feedpub.digest import PERSONAL, personalize
from feedpub.dkim import relaxed_body
from feedpub.mail import CleanMessage, IssueMessage, Letter, Recipient


def test_copies_decode_to_the_personalized_issue(site):
    placeholder = PERSONAL["unsubscribe_url"]
    html = (
        "<!DOCTYPE html>\n<p>Caf\u00e9 \u00ab\u00a0citation\u00a0\u00bb " + "long line " * 40 + "</p>\n"
        f'<p><a href="{placeholder}">Se d\u00e9sabonner</a> {PERSONAL["name"]}</p>\n'
        ".dot at the start of a line\n"
    )
    text = f"Bonjour {PERSONAL['name']},\n.NET and dots\nSe d\u00e9sabonner : {placeholder}\n"
    letter = Letter(7, "weekly", "La semaine", "Sujet \u00e9t\u00e9", html, text)
    message = IssueMessage(site, letter, date=datetime(2026, 11, 30, tzinfo=timezone.utc),
                           unsubscribe_url=site.url("unsubscribe?token={token}"))
    reader = Recipient(42, "zo\u00e9@example.org".replace("\u00e9", "e"), "Zo\u00e9 <\u00ab & \u00bb>")
    data = message.render(reader, "tok.en-_" * 30, "<a1b2c3@ia-insights.example.org>")
    for line in data.split(b"\r\n"):
        assert not line.startswith(b".")
        assert b"\n" not in line
    body = data.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    parsed = email.message_from_bytes(data, policy=policy.default)
    link = site.url("unsubscribe?token=" + "tok.en-_" * 30)
    values = {"unsubscribe_url": link, "name": reader.name}
    def decoded(kind: str) -> str:  # lines end with CRLF on the wire, as the email package writes them
        return parsed.get_body((kind,)).get_content().replace("\r\n", "\n")

    assert decoded("html") == personalize(html, values, html=True)
    assert decoded("plain") == personalize(text, values, html=False)
    assert parsed["To"].addresses[0].display_name == reader.name
    assert parsed["Message-ID"] == "<a1b2c3@ia-insights.example.org>"
    assert parsed["Subject"] == "Sujet \u00e9t\u00e9"


def test_quoted_printable_lines_stay_within_76_characters_whatever_falls_on_a_break(site):
    # Dots, '=' and multibyte characters at every offset around the 76-character
    # soft break, long lines that start with a dot, and a reader's value
    # right after a full line: the places a re-encoded dot or a soft break
    # could push a line to 77 or 78 characters.
    lines = []
    for width in range(66, 80):
        for tail in (".", ". .", "=", "\u00e9.", ".\u00e9", " ."):
            lines.append("a" * width + tail + "b" * 80)
            lines.append("." + "c" * width + tail)
    lines.append("d" * 75 + PERSONAL["name"])
    text = "\n".join(lines) + "\n"
    html = "<p>" + "\n".join(lines) + "</p>\n"
    letter = Letter(3, "weekly", "Weekly", "Subject", html, text)
    message = IssueMessage(site, letter, date=datetime(2026, 11, 30, tzinfo=timezone.utc),
                           unsubscribe_url=site.url("unsubscribe?token={token}"))
    reader = Recipient(1, "reader@example.org", "R" * 90)
    data = message.render(reader, "token", "<id@example.org>")
    body = data.split(b"\r\n\r\n", 1)[1]
    too_long = [line for line in body.split(b"\r\n") if len(line) > 76]
    assert too_long == []
    assert isinstance(data, CleanMessage) and relaxed_body(body) == body  # what CleanMessage promises
    assert not any(line.startswith(b".") for line in data.split(b"\r\n"))
    parsed = email.message_from_bytes(data, policy=policy.default)
    values = {"unsubscribe_url": site.url("unsubscribe?token=token"), "name": reader.name}
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == personalize(text, values, html=False)
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == personalize(html, values, html=True)
