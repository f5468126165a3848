"""One subscriber's copy of an issue, as the bytes of an RFC 5322 message.

The email package builds and serializes the issue's message once, with
sentinels where the reader's parts go; each copy is then that serialization
with the reader's address, Message-ID, personal links and bodies spliced in.
That is a few string operations per reader instead of building a 60 KB
MIME message each time.
"""

from __future__ import annotations

import binascii
import html as html_lib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from urllib.parse import quote

import idna

from .config import Site
from .digest import PERSONAL, one_line

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


class CleanMessage(bytes):
    """A message feedpub encoded itself, with two promises that spare a 100 KB scan each.

    No line starts with a dot, so SMTP needs no dot-stuffing; and the body
    holds no tab, no run of spaces and no space before a line end, so it is
    already in DKIM's relaxed canonical form.
    """


@dataclass(frozen=True)
class Letter:
    """What every copy of one issue shares."""

    issue_id: int
    digest: str
    digest_title: str
    subject: str
    html: str
    text: str


MAX_QP_LINE = 76  # RFC 2045, soft line break included
_QP_TOKEN = re.compile(rb"=[0-9A-F]{2}|[^=]")
_SECOND_SPACE = re.compile(rb"(?<= ) ")


def _fit(line: bytes) -> bytes:
    """LINE of quoted-printable as one or more lines of at most 76 characters, none starting with a dot.

    An encoded dot at a line's start leaves SMTP's dot-stuffing nothing to do
    (see transports.py); the two characters it adds are why lines are re-cut.
    """
    if line.startswith(b"."):
        line = b"=2E" + line[1:]
    if len(line) <= MAX_QP_LINE:
        return line
    soft = line.endswith(b"=")
    lines, current = [], b""
    for token in _QP_TOKEN.findall(line[:-1] if soft else line):
        if len(current) + len(token) > MAX_QP_LINE - 1:  # room for the soft break
            lines.append(current + b"=")
            current = b"=2E" if token == b"." else token
        else:
            current += token
    lines.append(current + b"=" if soft else current)
    return b"\r\n".join(lines)


def _qp(text: str, *, continued: bool = False) -> bytes:
    """Quoted-printable with CRLF line ends, as the rest of the message has.

    CONTINUED ends the text with a soft line break, for a piece the next one
    continues on the same decoded line.
    """
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\r\n", b"\n")
    # No tab and no run of spaces is left literal: the body is then already in DKIM's
    # relaxed canonical form, which the signer checks in three scans instead of rewriting it.
    encoded = _SECOND_SPACE.sub(b"=20", encoded.replace(b"\t", b"=09"))
    lines = encoded.split(b"\n")
    if continued:
        lines[-1] += b"="
        lines.append(b"")
    return b"\r\n".join(_fit(line) for line in lines)


class _EncodedBody:
    """A body encoded once, with each reader's values encoded on their own lines.

    Every piece starts at the beginning of a line, followed by a soft line
    break, so no encoded line passes 76 characters whatever a value holds,
    and encoding a copy costs only its few short values.
    """

    def __init__(self, text: str, *, html: bool) -> None:
        self.html = html
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        pattern = "(" + "|".join(map(re.escape, PERSONAL.values())) + ")"
        keys = {placeholder: key for key, placeholder in PERSONAL.items()}
        self.pieces: list[bytes | str] = []  # encoded text, or the key of a reader's value
        for index, piece in enumerate(re.split(pattern, text)):
            if index % 2:
                self.pieces.append(keys[piece])
            elif piece:
                self.pieces.append(_qp(piece, continued=not piece.endswith("\r\n")))
        if not text.endswith("\r\n"):
            self.pieces.append(b"\r\n")

    def fill(self, values: dict[str, str]) -> bytes:
        encoded = {key: _qp(html_lib.escape(value) if self.html else value, continued=True)
                   for key, value in values.items()}
        return b"".join(encoded.get(piece, b"") if isinstance(piece, str) else piece for piece in self.pieces)


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
        self._text = _EncodedBody(letter.text, html=False)
        self._html = _EncodedBody(letter.html, html=True)
        self._body = rest.replace(_TEXT_BODY.encode() + b"\r\n", b"\0TEXT\0").replace(
            _HTML_BODY.encode() + b"\r\n", b"\0HTML\0").split(b"\0")

    def render(self, recipient: Recipient, token: str, message_id: str) -> CleanMessage:
        """One recipient's copy, ready for SMTP; MESSAGE_ID is the one its delivery row keeps."""
        link = self.unsubscribe_url.format(token=quote(token, safe=""))
        mailto = f"mailto:unsubscribe@{self.domain}?subject=unsubscribe%20{quote(token, safe='')}"
        address = envelope_address(recipient.email)
        to = _to_header(one_line(recipient.name), address.text)
        head = to.encode("utf-8").join(self._head)
        head = head.replace(f"<{_MESSAGE_ID}@{self.domain}>".encode(), one_line(message_id).encode("ascii"))
        head = head.replace(_UNSUBSCRIBE_HEADER.encode(), f"<{link}>, <{mailto}>".encode("ascii"))
        values = {"unsubscribe_url": link, "name": one_line(recipient.name)}
        parts = {b"TEXT": self._text.fill(values), b"HTML": self._html.fill(values)}
        body = b"".join(parts.get(piece, piece) for piece in self._body)
        return CleanMessage(head + b"\r\n\r\n" + body)


def _to_header(name: str, address: str) -> str:
    """The To header's value; formataddr refuses a non-ASCII local part, which SMTPUTF8 carries as is."""
    if address.isascii():
        return formataddr((name, address), charset="utf-8")
    return f"{formataddr((name, 'x@x'), charset='utf-8')[:-5]} <{address}>" if name else address


@dataclass(frozen=True)
class EnvelopeAddress:
    """An address as SMTP must carry it: the domain in IDNA (punycode), the local part as written."""

    text: str
    smtputf8: bool  # the local part is not ASCII: only a server offering SMTPUTF8 takes it


def envelope_address(address: str) -> EnvelopeAddress:
    """ADDRESS with a non-ASCII domain turned into its IDNA form; ValueError when it has no valid one."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"the domain of {address!r} has no IDNA form: {exc}") from None
    if not local or any(c in local for c in "\r\n<>"):
        raise ValueError(f"{address!r} is not an address that can be sent to")
    return EnvelopeAddress(f"{local}@{domain}", not local.isascii())


def simple_message(site: Site, *, to: str, subject: str, text: str, date: datetime, message_id: str) -> bytes:
    """A short plain-text message from the site, such as a subscription confirmation."""
    email = site.email
    address = envelope_address(to)
    message = EmailMessage(policy=_POLICY.clone(utf8=True) if address.smtputf8 else _POLICY)
    message["From"] = Address(display_name=one_line(email.from_name), addr_spec=email.from_address)
    message["To"] = address.text
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = one_line(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = one_line(message_id)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()
