"""What a message that comes back says: a bounce, a complaint, an unsubscribe by mail, or nothing to act on.

Understood, in this order:
- delivery status notifications (RFC 3464, multipart/report;
  report-type=delivery-status): permanent (5.x.x) or temporary (4.x.x);
- complaints from feedback loops (RFC 5965, report-type=feedback-report);
- mail to the List-Unsubscribe mailto address, with the token in the subject;
- auto-replies (RFC 3834 Auto-Submitted, and the usual out-of-office marks), ignored;
- plain-text bounces addressed to a message's own envelope sender (verp.py),
  whose text gives an enhanced status code or says the mail was undeliverable.
The row a report is about comes from that envelope sender, wherever the
report shows it, or from the Message-ID of the quoted original; that one is
acted on only when the report also names the row's reader (bounces.py).
Header values are read as text whatever bytes they hold, and nesting is
followed only MAX_DEPTH levels down.
"""

from __future__ import annotations

import email
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import collapse_rfc2231_value

from .verp import Verp

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# In free text, a failure code only where a server's reply puts one: after its reply code
# ("550 5.1.1", "550-5.1.1"), "#" (qmail) or "Status:"; never a date, an address or a version.
_FAILURE_IN_TEXT = re.compile(r"(?:\b[45]\d\d[ -]|#|Status: ?)([45])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery|mdaemon|bounce", re.IGNORECASE)
_UNDELIVERABLE = re.compile(r"undeliver|could not be delivered|delivery (?:status notification|has failed|failed)|"
                            r"returned mail|failure notice|mail delivery failed|permanent error", re.IGNORECASE)
_OUT_OF_OFFICE = re.compile(r"^(?:auto(?:matic)?[ -]?(?:reply|response)|out of (?:the )?office|absence)",
                            re.IGNORECASE)
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_ADDRESS = re.compile(r"[^\s<>,;\"]+@[^\s<>,;\"]+")
MAX_DEPTH = 20  # parts inside parts: real reports nest two or three deep


@dataclass(frozen=True)
class Report:
    kind: str  # hard, soft, complaint, unsubscribe, auto-reply, unknown
    key: str  # what makes it the same report when read twice: its Message-ID, or a hash
    status: str = ""  # the enhanced status code, e.g. 5.1.1
    reason: str = ""  # one line, from the report
    row: int | None = None  # the delivery row it is about
    message_id: str | None = None  # the quoted original's Message-ID
    recipient: str | None = None  # the address it is about, as the report gives it
    recipients: tuple[str, ...] = ()  # every address the report says it is about, lowercased
    token: str | None = None  # an unsubscribe-by-mail's token


def _one_line(text, limit: int = 300) -> str:
    return " ".join(_text(text).split())[:limit]


def _text(value) -> str:
    """A header's value as str: compat32 gives a Header object for bytes that are not ASCII."""
    if value is None:
        return ""
    if isinstance(value, Header):
        return str(value)  # undecodable bytes become U+FFFD
    return value if isinstance(value, str) else str(value)


def _get(message: Message, name: str) -> str:
    return _text(message.get(name))


def _get_all(message: Message, name: str) -> list[str]:
    return [_text(value) for value in message.get_all(name, [])]


def _addresses(*values: str) -> tuple[str, ...]:
    return tuple(a.lower() for value in values for a in _ADDRESS.findall(value))


def _walk(part: Message, depth: int = 0) -> Iterator[Message]:
    """PART and the parts inside it, like Message.walk, but never deeper than MAX_DEPTH."""
    yield part
    payload = part.get_payload() if depth < MAX_DEPTH else None
    if isinstance(payload, list):
        for inner in payload:
            if isinstance(inner, Message):
                yield from _walk(inner, depth + 1)


def _headers_of(part: Message) -> Message | None:
    """The header block inside PART: a message/* part's first message, or text/rfc822-headers parsed."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else None
    if isinstance(payload, Message):
        return payload
    raw = part.get_payload(decode=True) or b""
    return BytesHeaderParser(policy=policy.compat32).parsebytes(raw) if raw else None


def _field_blocks(part: Message) -> list[Message]:
    """The blocks of fields of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return payload
    text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return [HeaderParser(policy=policy.compat32).parsestr(block) for block in re.split(r"\r?\n\r?\n", text)
            if block.strip()]


class ReportReader:
    """Reads the reports that come back for one site."""

    def __init__(self, verp: Verp | None, domain: str) -> None:
        self.verp, self.domain = verp, domain.lower()

    def read(self, raw: bytes) -> Report:
        message = email.message_from_bytes(raw, policy=policy.compat32)
        key = _one_line(message.get("Message-ID")) or "sha256:" + hashlib.sha256(raw).hexdigest()
        # An RFC 2231 parameter comes back as a (charset, language, value) tuple.
        report_type = collapse_rfc2231_value(message.get_param("report-type", "", header="content-type") or "")
        report_type = _text(report_type).lower()
        original = self._original(message)
        row = self._row(message, original)
        # Two different reports may share a Message-ID (the sender chooses it): the row is part of the key.
        key = f"{key}|{row}" if row is not None else key
        found = {"key": key, "row": row,
                 "message_id": (_one_line(original.get("Message-ID")) or None) if original is not None else None}
        if message.get_content_type() == "multipart/report" and report_type == "delivery-status":
            return self._dsn(message, found)
        if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
            return self._complaint(message, found, original)
        if (token := self._unsubscribe_token(message)) is not None:
            return Report("unsubscribe", key, token=token)
        # An auto-reply's From is whatever its robot chose, "Mail Delivery" included: marked as
        # a reply, it is one. A plain notice marked only auto-generated may still be a bounce.
        out_of_office = bool(_OUT_OF_OFFICE.match(_one_line(message.get("Subject"))))
        if out_of_office or self._auto_reply(message) or (
                self._auto_submitted(message) and not _DAEMON.search(_get(message, "From"))):
            return Report("auto-reply", key, reason=_one_line(message.get("Subject")))
        return self._plain_bounce(message, found)

    # where the original is
    def _original(self, message: Message) -> Message | None:
        for part in _walk(message):
            if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
                return _headers_of(part)
        return None

    def _row(self, message: Message, original: Message | None) -> int | None:
        if self.verp is None:
            return None
        candidates = [value for name in _RECIPIENT_HEADERS for value in _get_all(message, name)]
        if original is not None:
            candidates += _get_all(original, "Return-Path")
        for value in candidates:
            for address in _ADDRESS.findall(value):
                if (row := self.verp.row(address)) is not None:
                    return row
        return None

    # the kinds
    def _dsn(self, message: Message, found: dict) -> Report:
        for part in _walk(message):
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _field_blocks(part)[1:] or _field_blocks(part):
                action = _get(block, "Action").strip().lower()
                code = _STATUS.search(_get(block, "Status"))
                if action in ("delivered", "relayed", "expanded") or (code and code.group(1) == "2") or (
                        action not in ("failed", "delayed") and not code):
                    continue  # a success, or no recipient's outcome: nothing to do
                status = ".".join(code.groups()) if code else ("5.0.0" if action == "failed" else "4.0.0")
                kind = "hard" if status.startswith("5") and action != "delayed" else "soft"
                reason = _get(block, "Diagnostic-Code") or _get(block, "Status") or action
                final, original = _get(block, "Final-Recipient"), _get(block, "Original-Recipient")
                recipient = (final or original).partition(";")
                return Report(kind, status=status, reason=_one_line(reason),
                              recipient=_one_line(recipient[2] or recipient[0]) or None,
                              recipients=_addresses(final, original), **found)
        return Report("unknown", found["key"], reason="a delivery report without a recipient's status")

    def _complaint(self, message: Message, found: dict, original: Message | None) -> Report:
        quoted_to = _addresses(*_get_all(original, "To")) if original is not None else ()
        for part in _walk(message):
            if part.get_content_type() == "message/feedback-report":
                fields = _field_blocks(part)[0] if _field_blocks(part) else Message()
                kind = (_get(fields, "Feedback-Type") or "abuse").strip().lower()
                recipient = _get(fields, "Original-Rcpt-To") or _get(fields, "Removal-Recipient")
                # Feedback loops often hide the rcpt field but quote the original, To included.
                return Report("complaint", status=kind, reason=f"feedback report: {kind}",
                              recipient=_one_line(recipient) or None,
                              recipients=_addresses(*_get_all(fields, "Original-Rcpt-To")) + quoted_to, **found)
        return Report("unknown", found["key"], reason="a feedback report without its fields")

    def _unsubscribe_token(self, message: Message) -> str | None:
        addressed = " ".join(v for name in _RECIPIENT_HEADERS for v in _get_all(message, name)).lower()
        if f"unsubscribe@{self.domain}" not in addressed:
            return None
        words = _one_line(message.get("Subject")).split()
        return words[1] if len(words) == 2 and words[0].lower() == "unsubscribe" else ""

    @staticmethod
    def _auto_reply(message: Message) -> bool:
        """Marked as a reply by a robot (RFC 3834 auto-replied, or the older vacation headers)."""
        return (_get(message, "Auto-Submitted").strip().lower().startswith("auto-replied")
                or message.get("X-Autoreply") is not None or message.get("X-Autorespond") is not None
                or _get(message, "Precedence").strip().lower() == "auto_reply")

    @staticmethod
    def _auto_submitted(message: Message) -> bool:
        return (_get(message, "Auto-Submitted") or "no").strip().lower() != "no"

    def _plain_bounce(self, message: Message, found: dict) -> Report:
        if found["row"] is None:
            return Report("unknown", found["key"], reason="not a report feedpub understands")
        subject = _one_line(message.get("Subject"))
        text = " ".join(part.get_payload(decode=True).decode("utf-8", "replace") for part in _walk(message)
                        if part.get_content_maintype() == "text" and part.get_payload(decode=True))
        code = _FAILURE_IN_TEXT.search(text)
        if code is None and not _UNDELIVERABLE.search(subject + " " + text[:2000]):
            return Report("unknown", found["key"], reason="mail to a message's bounce address, not a bounce")
        status = ".".join(code.groups()) if code else "5.0.0"
        line = next((ln for ln in text.splitlines() if status in ln), subject) if code else subject
        return Report("hard" if status.startswith("5") else "soft", status=status, reason=_one_line(line), **found)
