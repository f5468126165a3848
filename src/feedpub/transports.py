"""Where messages go: an SMTP server, or a Maildir outbox any mail client can open.

Each transport sends one message at a time over one connection; the delivery
loop runs several of them side by side. SMTP errors are translated here into
two kinds: a temporary failure (try again later) and a permanent one.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .config import EmailSettings, SMTPSettings
from .errors import FeedpubError

_UNKNOWN_USER = re.compile(r"\b5\.1\.\d{1,3}\b")


class DeliveryFailure(FeedpubError):
    """The server did not take a message; `reply` is what it said."""

    def __init__(self, code: int | None, reply: str) -> None:
        self.code, self.reply = code, reply
        super().__init__(f"{code} {reply}" if code else reply)


class TemporaryFailure(DeliveryFailure):
    """A 4xx reply, a dropped connection or a timeout: the message may be sent again later."""


class PermanentFailure(DeliveryFailure):
    """A 5xx reply: sending the same message again will not help."""

    @property
    def unknown_recipient(self) -> bool:
        """The mailbox does not exist (enhanced status 5.1.x): stop writing to it."""
        return bool(_UNKNOWN_USER.search(self.reply)) or self.code in {550, 551, 553} and "5.1." in self.reply


class Transport(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> None: ...

    def close(self) -> None: ...


def _failure(code: int, reply: bytes | str) -> DeliveryFailure:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    text = " ".join(text.split())
    return (TemporaryFailure if 400 <= code < 500 else PermanentFailure)(code, text)


class SMTPTransport:
    """One SMTP connection, opened on first use and renewed every `per_connection` messages."""

    def __init__(self, settings: SMTPSettings, password: str | None) -> None:
        self.settings, self.password = settings, password
        self._smtp: smtplib.SMTP | None = None
        self._sent_here = 0

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.username:
                smtp.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentFailure(exc.smtp_code, f"login refused: {exc.smtp_error!r}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(None, f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self._sent_here = 0
        return smtp

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        if self._smtp is not None and self._sent_here >= self.settings.per_connection:
            self.close()
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            if message.startswith(b".") or b"\n." in message:
                self._smtp.sendmail(sender, [recipient], message)
            else:
                self._send_unstuffed(sender, recipient, message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient, (550, b"recipient refused"))
            self._reset()
            raise _failure(code, reply) from exc
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            self._reset()
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise _failure(exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPServerDisconnected, OSError, socket.timeout) as exc:
            self._drop()
            raise TemporaryFailure(None, f"connection lost: {exc or type(exc).__name__}") from exc
        self._sent_here += 1

    def _send_unstuffed(self, sender: str, recipient: str, message: bytes) -> None:
        """smtplib's sendmail for one recipient, less the dot-stuffing.

        sendmail runs a regular expression over the whole message to double
        leading dots; feedpub's messages have none (checked by the caller),
        and skipping that scan is a sixth of the CPU time of a bulk send.
        """
        smtp = self._smtp
        smtp.ehlo_or_helo_if_needed()
        code, reply = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        smtp.send(message)
        smtp.send(b".\r\n" if message.endswith(b"\r\n") else b"\r\n.\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _reset(self) -> None:
        """Clear the failed transaction so the connection serves the next message."""
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()


class MaildirTransport:
    """Delivers into a Maildir folder: written to tmp/, then renamed into new/."""

    def __init__(self, path: Path) -> None:
        self.box = mailbox.Maildir(path, create=True)

    def send(self, sender: str, recipient: str, message: bytes) -> None:
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
