"""One reader's copy of an issue: spliced bytes that decode to exactly the personalized issue."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy

from feedpub.digest import PERSONAL, personalize
from feedpub.mail import IssueMessage, Letter, Recipient


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
