"""Where messages go: an SMTP server, or a Maildir outbox any mail client can open.

Each transport sends one message at a time over one connection; the delivery
loop runs several of them side by side. SMTP errors are translated here by
whose they are: the recipient's (TemporaryFailure, PermanentFailure), which
stay on that reader's row, or the server's (TransportFault, Throttled), which
stop or slow the transport and charge no row.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from .config import EmailSettings, SMTPSettings
from .errors import FeedpubError
from .mail import CleanMessage

_UNKNOWN_USER = re.compile(r"\b5\.1\.\d{1,3}\b")
# Enhanced status codes that speak of one mailbox: its address (x.1.x) or its state (x.2.x).
_ABOUT_MAILBOX = re.compile(r"\b[45]\.[12]\.\d{1,3}\b")
_POLICY_CODE = re.compile(r"\b4\.7\.\d{1,3}\b")
_UNSAFE_IN_ADDRESS = re.compile(r"[\r\n<>\s]")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_THROTTLE_WORDS = re.compile(r"rate|too (?:much|many)|throttl|limit|slow down|exceed", re.I)


class DeliveryFailure(FeedpubError):
    """The server did not take a message; `reply` is what it said."""

    def __init__(self, code: int | None, reply: str) -> None:
        self.code, self.reply = code, reply
        super().__init__(f"{code} {reply}" if code else reply)


class TemporaryFailure(DeliveryFailure):
    """A 4xx reply about this recipient (greylisting, mailbox busy): try this one again later."""


class PermanentFailure(DeliveryFailure):
    """A 5xx reply about this recipient: sending the same message again will not help."""

    @property
    def unknown_recipient(self) -> bool:
        """The mailbox does not exist (enhanced status 5.1.x): stop writing to it."""
        return bool(_UNKNOWN_USER.search(self.reply)) or self.code in {550, 551, 553} and "5.1." in self.reply


class TransportFault(DeliveryFailure):
    """The server or the account failed, not the recipient: no row is charged for it.

    `lasting` faults (refused connection, timeout, refused login, a 5xx to
    MAIL FROM) stop the transport at once; a dropped connection is worth one
    more try first.
    """

    def __init__(self, code: int | None, reply: str, *, lasting: bool = True) -> None:
        super().__init__(code, reply)
        self.lasting = lasting


class LoginRefused(TransportFault):
    """The server refused the account's login; `server_reply` is its own words, code first."""

    def __init__(self, code: int, server_reply: str, where: str) -> None:
        super().__init__(code, f"login refused by {where}: {server_reply}")
        self.server_reply = f"{code} {server_reply}"


class Throttled(TransportFault):
    """The server asks us to slow down (421, or 450/451 4.7.x with words of rate or volume)."""


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _is_throttling(code: int, text: str) -> bool:
    if code == 421:
        return True
    return code in {450, 451, 452} and bool(_POLICY_CODE.search(text)) and bool(_THROTTLE_WORDS.search(text)) \
        and "greylist" not in text.lower()


def _server_reply(code: int, reply: bytes | str) -> TransportFault:
    """A refusal of the whole transaction (greeting, MAIL FROM, DATA): the server's or the account's."""
    text = _text(reply)
    return Throttled(code, text) if _is_throttling(code, text) else TransportFault(code, text)


def _recipient_reply(code: int, reply: bytes | str) -> DeliveryFailure:
    """A refusal of one recipient: theirs, unless the server is telling us to slow down."""
    text = _text(reply)
    if _is_throttling(code, text):
        return Throttled(code, text)
    return (TemporaryFailure if 400 <= code < 500 else PermanentFailure)(code, text)


def _data_reply(code: int, reply: bytes | str, recipient: str) -> DeliveryFailure:
    """A refusal at the end of DATA: the recipient's when it names them or their mailbox."""
    text = _text(reply)
    if recipient.lower() in text.lower() or _ABOUT_MAILBOX.search(text):
        return _recipient_reply(code, text)
    return _server_reply(code, text)


class Transport(Protocol):
    def send(self, sender: str, recipient: str, message: bytes, *, smtputf8: bool = False,
             while_waiting: Callable[[], None] | None = None) -> None: ...

    def close(self) -> None: ...


class SMTPTransport:
    """One SMTP connection, opened on first use and renewed every `per_connection` messages."""

    def __init__(self, settings: SMTPSettings, password: str | None) -> None:
        self.settings, self.password = settings, password
        self.name = f"{settings.host}:{settings.port}"
        self._smtp: smtplib.SMTP | None = None
        self._sent_here = 0
        self._while_waiting: Callable[[], None] | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        where = f"{s.host}:{s.port}"
        smtp = None
        try:
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo_or_helo_if_needed()  # here, so that a refused greeting is a connection fault too
            if s.username:
                smtp.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(smtp)
            raise LoginRefused(exc.smtp_code, _text(exc.smtp_error), where) from exc
        except smtplib.SMTPResponseException as exc:
            _close_quietly(smtp)
            raise _server_reply(exc.smtp_code, exc.smtp_error) from exc
        except ssl.SSLError as exc:
            _close_quietly(smtp)
            raise TransportFault(None, f"TLS with {where} failed: {exc}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            _close_quietly(smtp)
            if _timed_out(exc):
                raise TransportFault(None, f"no answer from {where} within {s.timeout:g} s") from exc
            raise TransportFault(None, f"cannot connect to {where}: {exc or type(exc).__name__}") from exc
        self._sent_here = 0
        return smtp

    def try_connection(self) -> None:
        """Connect, greet, STARTTLS and log in exactly as sending does, then QUIT: nothing is sent.

        Raises the TransportFault that the first message would have met.
        """
        self.close()
        self._smtp = self._connect()
        self.close()

    def send(self, sender: str, recipient: str, message: bytes, *, smtputf8: bool = False,
             while_waiting: Callable[[], None] | None = None) -> None:
        """Send MESSAGE; WHILE_WAITING runs while the server decides on it (it must not raise)."""
        self._while_waiting = while_waiting
        if self._smtp is not None and self._sent_here >= self.settings.per_connection:
            self.close()
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._transaction(sender, recipient, message, smtputf8)
        except DeliveryFailure as exc:
            if isinstance(exc, TransportFault) and exc.code in {421, None}:
                self._drop()  # the server is closing this connection
            else:
                self._reset()
            raise
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise _server_reply(exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            if _timed_out(exc):  # a server that stopped answering: no second try
                raise TransportFault(None, f"no answer from {self.name} within {self.settings.timeout:g} s") from exc
            raise TransportFault(None, f"connection to {self.name} lost: {exc or type(exc).__name__}",
                                 lasting=False) from exc
        except Exception:
            self._drop()  # the transaction is in an unknown state: never reuse the connection
            raise
        self._sent_here += 1

    def _transaction(self, sender: str, recipient: str, message: bytes, smtputf8: bool) -> None:
        """MAIL, RCPT, DATA for one recipient, each refusal sorted by whose it is.

        With PIPELINING (RFC 2920) the three commands go in one write and
        their replies are read together: one round trip instead of three,
        which saves the server as much work as the sender.
        """
        smtp = self._smtp
        smtp.ehlo_or_helo_if_needed()
        if smtputf8:
            if not smtp.has_extn("smtputf8"):
                raise PermanentFailure(None, f"{self.name} does not offer SMTPUTF8, which this address needs")
            self._one_by_one(sender, recipient, message, ["SMTPUTF8", "BODY=8BITMIME"])
        elif smtp.has_extn("pipelining"):
            self._pipelined(sender, recipient, message)
        else:
            self._one_by_one(sender, recipient, message, [])

    def _one_by_one(self, sender: str, recipient: str, message: bytes, options: list[str]) -> None:
        smtp = self._smtp
        code, reply = smtp.mail(sender, options)
        if code != 250:
            raise _server_reply(code, reply)
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise _recipient_reply(code, reply)
        self._start_data()
        self._content(message, recipient)

    def _pipelined(self, sender: str, recipient: str, message: bytes) -> None:
        smtp = self._smtp
        smtp.send(_envelope(sender, recipient) + b"DATA\r\n")
        (mail, mail_reply), (rcpt, rcpt_reply), (data, data_reply) = (smtp.getreply() for _ in range(3))
        if data == 354 and (mail != 250 or rcpt not in (250, 251)):
            smtp.send(b".\r\n")  # RFC 2920: end the empty message a careless server opened, then refuse
            smtp.getreply()
        if mail != 250:
            raise _server_reply(mail, mail_reply)
        if rcpt not in (250, 251):
            raise _recipient_reply(rcpt, rcpt_reply)
        if data != 354:
            raise _server_reply(data, data_reply)
        self._content(message, recipient)

    def _start_data(self) -> None:
        self._smtp.putcmd("data")
        code, reply = self._smtp.getreply()
        if code != 354:
            raise _server_reply(code, reply)

    def _content(self, message: bytes, recipient: str) -> None:
        """The message and its terminator in one write, dot-stuffed only if a line starts with a dot.

        feedpub's encoder writes a leading dot as =2E, so its own messages
        (CleanMessage) skip even the search for one.
        """
        if not isinstance(message, CleanMessage) and (message.startswith(b".") or b"\n." in message):
            message = _LEADING_DOT.sub(b"..", message)
        smtp = self._smtp
        smtp.send(message + (b".\r\n" if message.endswith(b"\r\n") else b"\r\n.\r\n"))
        if self._while_waiting is not None:
            self._while_waiting()
        code, reply = smtp.getreply()
        if code != 250:
            raise _data_reply(code, reply, recipient)

    def _reset(self) -> None:
        """Clear the failed transaction so the connection serves the next message."""
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            _close_quietly(self._smtp)
            self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()


def _envelope(sender: str, recipient: str) -> bytes:
    """MAIL and RCPT for bare ASCII addresses (the IDNA form), ready to be pipelined."""
    if _UNSAFE_IN_ADDRESS.search(sender + recipient):  # checked before; a command must never be split
        raise PermanentFailure(None, f"{recipient!r} cannot be sent to")
    # Not smtplib.quoteaddr: it runs a whole RFC 5322 parser over what is already a bare address.
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\n".encode("ascii")


def _timed_out(exc: BaseException) -> bool:
    """smtplib reports a read that timed out as a lost connection; the timeout is in its context."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


class MaildirTransport:
    """Delivers into a Maildir folder: written to tmp/, then renamed into new/."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.box = mailbox.Maildir(path, create=True)

    def send(self, sender: str, recipient: str, message: bytes, *, smtputf8: bool = False,
             while_waiting: Callable[[], None] | None = None) -> None:
        self.box.add(message)

    def close(self) -> None:
        pass


def transport_factory(email: EmailSettings, environ: Mapping[str, str]):
    """A function making one transport per sending thread, and how many threads to run."""
    if email.smtp is None:
        return (lambda: MaildirTransport(email.outbox)), 1
    password = environ.get(email.smtp.password_env)
    if email.smtp.username and not password:
        raise FeedpubError(f"feedpub.yaml: email.smtp.username is set but {email.smtp.password_env} is not in "
                           f"the environment")
    return (lambda: SMTPTransport(email.smtp, password)), email.smtp.connections
