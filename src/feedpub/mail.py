"""One subscriber's copy of an issue, as the bytes of an RFC 5322 message.

The email package builds and serializes the issue's message once, with
sentinels where the reader's parts go; each copy is then that serialization
with the reader's address, Message-ID, personal links and bodies spliced in.
That is a few string operations per reader instead of building a 60 KB
MIME message each time.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from .config import Site
from .digest import one_line, personalize

_TO = "feedpub-recipient@feedpub.invalid"
_MESSAGE_ID = "feedpub-message-id"
_UNSUBSCRIBE_HEADER = "FEEDPUBLISTUNSUBSCRIBE"
_TEXT_BODY = "FEEDPUBTEXTBODY"
_HTML_BODY = "FEEDPUBHTMLBODY"
# A long List-Unsubscribe folded by the serializer can become an encoded
# word, which breaks one-click unsubscribe; it is spliced in on one line.
_POLICY = policy.SMTP


@dataclass(frozen=True)
class Recipient:
    id: int
    email: str
    name: str = ""


@dataclass(frozen=True)
class Letter:
    """What every copy of one issue shares."""

    issue_id: int
    digest: str
    digest_title: str
    subject: str
    html: str
    text: str


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends, as the rest of the message has."""
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    return binascii.b2a_qp(body.encode("utf-8"), istext=True)


class IssueMessage:
    """Serializes LETTER once; `render` gives one recipient's copy."""

    def __init__(self, site: Site, letter: Letter, *, date: datetime, unsubscribe_url: str) -> None:
        email = site.email
        self.site, self.letter, self.domain = site, letter, email.domain
        self.unsubscribe_url = unsubscribe_url  # with "{token}" where the token goes
        message = EmailMessage(policy=_POLICY)
        message["From"] = Address(display_name=one_line(email.from_name), addr_spec=email.from_address)
        message["To"] = _TO
        if email.reply_to:
            message["Reply-To"] = email.reply_to
        message["Subject"] = one_line(letter.subject)
        message["Date"] = format_datetime(date)
        message["Message-ID"] = f"<{_MESSAGE_ID}@{self.domain}>"
        message["List-Id"] = f"{one_line(letter.digest_title)} <{letter.digest}.{self.domain}>"
        message["List-Unsubscribe"] = _UNSUBSCRIBE_HEADER
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Precedence"] = "bulk"
        message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
        message.set_content(_TEXT_BODY, subtype="plain", charset="utf-8", cte="quoted-printable")
        message.add_alternative(_HTML_BODY, subtype="html", charset="utf-8", cte="quoted-printable")
        raw = message.as_bytes()
        head, _, rest = raw.partition(b"\r\n\r\n")
        # Cut the serialization at each sentinel once; `render` only joins pieces.
        self._head = head.split(_TO.encode())
        self._body = rest.replace(_TEXT_BODY.encode() + b"\r\n", b"\0TEXT\0").replace(
            _HTML_BODY.encode() + b"\r\n", b"\0HTML\0").split(b"\0")

    def message_id(self, recipient: Recipient) -> str:
        """Stable for one (issue, recipient): a resent copy is recognisably the same message."""
        tag = hashlib.blake2b(f"{self.letter.issue_id}:{recipient.id}:{recipient.email}".encode(),
                              digest_size=6).hexdigest()
        return f"<{self.letter.issue_id}.{recipient.id}.{tag}@{self.domain}>"

    def render(self, recipient: Recipient, token: str) -> bytes:
        """One recipient's copy, ready for SMTP."""
        link = self.unsubscribe_url.format(token=quote(token, safe=""))
        mailto = f"mailto:unsubscribe@{self.domain}?subject=unsubscribe%20{quote(token, safe='')}"
        to = formataddr((one_line(recipient.name), recipient.email), charset="utf-8")
        head = to.encode("ascii").join(self._head)
        head = head.replace(f"<{_MESSAGE_ID}@{self.domain}>".encode(), self.message_id(recipient).encode())
        head = head.replace(_UNSUBSCRIBE_HEADER.encode(), f"<{link}>, <{mailto}>".encode("ascii"))
        values = {"unsubscribe_url": link, "name": recipient.name}
        parts = {
            b"TEXT": _qp(personalize(self.letter.text, values, html=False)),
            b"HTML": _qp(personalize(self.letter.html, values, html=True)),
        }
        body = b"".join(parts.get(piece, piece) for piece in self._body)
        return head + b"\r\n\r\n" + body
