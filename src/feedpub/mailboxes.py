"""Where reports arrive: a Maildir folder, or an IMAP mailbox over TLS.

Both give the messages waiting in them and take back each one that was acted
on: moved to a `processed` folder, so a person can still read it and the
next read does not see it again. What is not understood stays where it is.
"""

from __future__ import annotations

import base64
import mailbox
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .errors import FeedpubError

PROCESSED_FOLDER = "processed"
# The user may be an email address itself: it ends at the last "@" before the host.
_IMAP_URL = re.compile(r"^imaps://(?P<user>[^/]+)@(?P<host>[^@:/]+)(?::(?P<port>\d+))?(?:/(?P<folder>.*))?$")


@dataclass(frozen=True)
class MailboxSettings:
    maildir: Path | None = None
    host: str = ""
    port: int = 993
    user: str = ""
    folder: str = "INBOX"
    password_env: str = "FEEDPUB_BOUNCES_PASSWORD"
    ca_file: Path | None = None  # a private CA to trust, beside the system's

    def __str__(self) -> str:
        return str(self.maildir) if self.maildir else f"imaps://{self.user}@{self.host}:{self.port}/{self.folder}"


def mailbox_settings(section, root: Path) -> MailboxSettings | None:
    """The `bounces:` Section of feedpub.yaml (a config.Section) as MailboxSettings; None when not set."""
    where = section.str("mailbox")
    password_env = section.str("password_env", "FEEDPUB_BOUNCES_PASSWORD")
    ca_file = section.str("ca_file")
    section.check_unknown()
    if not where:
        return None
    if not where.startswith("imaps://"):
        if "://" in where:
            raise section.error("mailbox", f"{where!r}: a Maildir folder, or imaps://USER@HOST[:PORT]/FOLDER")
        return MailboxSettings(maildir=root / where)
    match = _IMAP_URL.match(where)
    if match is None:
        raise section.error("mailbox", f"{where!r}: write it imaps://USER@HOST[:PORT]/FOLDER")
    return MailboxSettings(host=match["host"], port=int(match["port"] or 993), user=unquote(match["user"]),
                           folder=match["folder"] or "INBOX", password_env=password_env,
                           ca_file=root / ca_file if ca_file else None)


def imap_utf7(name: str) -> str:
    """NAME in IMAP's modified UTF-7 (RFC 3501 5.1.3): what a server expects for a folder not in ASCII."""
    out, pending = [], []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


class MaildirSource:
    def __init__(self, path: Path) -> None:
        # Never made here: a mistyped path would otherwise read an empty new folder for ever.
        if not ((path / "cur").is_dir() and (path / "new").is_dir()):
            raise FeedpubError(f"bounces.mailbox: no Maildir at {path} (no cur/ new/)")
        self.box = mailbox.Maildir(path, factory=None, create=False)
        self.done = (self.box.get_folder(PROCESSED_FOLDER) if PROCESSED_FOLDER in self.box.list_folders()
                     else self.box.add_folder(PROCESSED_FOLDER))

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for key in list(self.box.keys()):
            try:
                yield key, self.box.get_bytes(key)
            except (KeyError, OSError):
                continue  # taken meanwhile by another reader

    def processed(self, key: str, raw: bytes) -> None:
        self.done.add(raw)  # copied first, then removed: a crash between leaves a copy read once only
        self.box.discard(key)

    def close(self) -> None:
        pass


class IMAPSource:
    def __init__(self, settings: MailboxSettings, environ: Mapping[str, str]) -> None:
        import imaplib

        self.imaplib, self.settings = imaplib, settings
        where = f"{settings.host}:{settings.port}"
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        try:
            self.imap = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=context, timeout=30)
        except ssl.SSLCertVerificationError as exc:
            raise FeedpubError(f"bounces: the certificate of {where} is not trusted ({exc.verify_message}); "
                               f"for a private CA, set bounces.ca_file") from None
        except (OSError, ssl.SSLError) as exc:
            raise FeedpubError(f"bounces: cannot reach the IMAP server {where}: {exc}") from None
        self.where = where
        password = environ.get(settings.password_env)
        if not password:
            self.imap.logout()
            raise FeedpubError(f"bounces: {settings.password_env} is not set: it holds the password of "
                               f"{settings.user} on {where}")
        try:
            self.imap.login(settings.user, password)
            status, _ = self.imap.select(self._quoted(settings.folder))
        except imaplib.IMAP4.error as exc:
            self.imap.logout()
            raise FeedpubError(f"bounces: {where} refused {settings.user} (password in "
                               f"{settings.password_env}): {exc}") from None
        if status != "OK":
            self.imap.logout()
            raise FeedpubError(f"bounces: no folder {settings.folder!r} on {where}")
        self._processed_exists = False

    @staticmethod
    def _quoted(name: str) -> str:
        name = imap_utf7(name)
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _lost(self, exc: Exception) -> FeedpubError:
        return FeedpubError(f"bounces: the connection to {self.where} was lost while reading "
                            f"({type(exc).__name__}: {exc}); the next read goes on from there")

    def messages(self) -> Iterator[tuple[str, bytes]]:
        try:
            status, found = self.imap.uid("SEARCH", None, "UNDELETED")
            for uid in (found[0].split() if status == "OK" and found and found[0] else []):
                status, data = self.imap.uid("FETCH", uid, "(BODY.PEEK[])")
                parts = [item for item in data if isinstance(item, tuple)] if status == "OK" else []
                if parts:
                    yield uid.decode(), parts[0][1]
        except (self.imaplib.IMAP4.abort, OSError) as exc:
            raise self._lost(exc) from None

    def processed(self, key: str, raw: bytes) -> None:
        try:
            self._move(key)
        except (self.imaplib.IMAP4.abort, OSError) as exc:
            raise self._lost(exc) from None

    def _move(self, key: str) -> None:
        if not self._processed_exists:
            self.imap.create(self._quoted(PROCESSED_FOLDER))  # "already exists" is fine
            self._processed_exists = True
        status, _ = self.imap.uid("COPY", key, self._quoted(PROCESSED_FOLDER))
        if status == "OK":
            self.imap.uid("STORE", key, "+FLAGS.SILENT", r"(\Deleted)")

    def close(self) -> None:
        try:
            self.imap.expunge()
            self.imap.logout()
        except (self.imaplib.IMAP4.error, OSError):
            try:
                self.imap.shutdown()  # a dropped line: close our end of it too
            except OSError:
                pass


def open_source(settings: MailboxSettings, environ: Mapping[str, str]):
    return MaildirSource(settings.maildir) if settings.maildir else IMAPSource(settings, environ)
