"""`feedpub check --smtp`: log in to the configured SMTP server as sending would, and send nothing.

The connection is the delivery transport's own (same TLS, timeout and
login), so a server that passes here takes the first message's login too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import SETTINGS_FILE, Site
from .errors import ConfigError
from .settings import key_lines, locate
from .transports import LoginRefused, SMTPTransport, TransportFault

_OVER = {"starttls": "over STARTTLS", "tls": "over TLS", "none": "without TLS"}


@dataclass(frozen=True)
class Probe:
    """What trying the server showed: one line, and how serious it is."""

    level: str  # "note" | "warning" | "error"
    line: str


def probe_smtp(site: Site, environ: Mapping[str, str]) -> Probe:
    """Connect, greet, STARTTLS and log in to SITE's SMTP server, then QUIT."""
    smtp = site.email.smtp
    lines = key_lines(site.root / SETTINGS_FILE)

    def setting(level: str, key: str, reason: str) -> Probe:
        return Probe(level, locate(ConfigError(SETTINGS_FILE, key, reason), lines).located())

    if smtp is None:
        return setting("warning", "email.smtp", f"not set: mail goes to the outbox folder "
                                                f"{site.email.outbox.name}/, so there is no server to try")
    server = f"{smtp.host}:{smtp.port}"
    password = environ.get(smtp.password_env)
    if smtp.username and not password:
        return setting("error", "email.smtp.username", f"logging in as {smtp.username} needs the password in "
                                                       f"{smtp.password_env}, which is not set")
    try:
        SMTPTransport(smtp, password).try_connection()
    except LoginRefused as exc:
        return setting("error", "email.smtp", f"{server} refused the login for {smtp.username}: "
                                              f"{exc.server_reply}")
    except TransportFault as exc:
        # A fault without a code already names the server; one with a code is only the server's words.
        return setting("error", "email.smtp", f"{server} answered {exc}" if exc.code else str(exc))
    login = f"accepts the login of {smtp.username}" if smtp.username else "answers (no login is set)"
    return Probe("note", f"smtp: {server} {login} {_OVER[smtp.security]}; nothing was sent")
