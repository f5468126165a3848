"""The HTTP server under the web app: uvicorn, with a deadline for every request and a bound on connections.

uvicorn's h11 protocol waits for ever for a request's headers and counts
half-open connections against no limit, so a few hundred idle sockets lock
everyone else out. The protocol below gives each connection `header_timeout`
seconds to send its headers and `body_timeout` more for its body, and keeps
at most `max_connections` open: past that, the connection idle longest
without a request makes room, so a flood of silent sockets cannot starve a
client that speaks.
"""

from __future__ import annotations

import logging
import resource
import socket
import time
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .webconfig import WebSettings
from .webguard import SECURITY_HEADERS

log = logging.getLogger("feedpub")


def _answer(status: bytes) -> bytes:
    """A whole response written by the server itself, with the headers the app's responses carry."""
    headers = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n" + headers + b"\r\n"


_TIMEOUT_ANSWER = _answer(b"408 Request Timeout")
_FULL_ANSWER = _answer(b"503 Service Unavailable")
BACKLOG = 128  # asyncio accepts up to this many at once, before any of them can be turned away
# Descriptors kept beyond max_connections: the database, templates and logs, one
# burst of accepts, and connections closed but not yet released.
FILES_SPARED = 64 + 2 * BACKLOG


def protocol_for(settings: WebSettings, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol class enforcing SETTINGS' deadlines and MAX_CONNECTIONS."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline_timer, self._deadline_for = None, None
            self._idle_since = time.monotonic()
            if len(self.connections) > max_connections and not _make_room(self):
                self._answer_and_close(_FULL_ANSWER)
                return
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = time.monotonic()
            self._watch()

        def connection_lost(self, exc) -> None:
            self._cancel()
            super().connection_lost(exc)

        def waiting_for_request(self) -> bool:
            """Between requests or before the first: no headers in yet, nothing of ours running."""
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _watch(self) -> None:
            """One deadline at a time: for the headers while they are awaited, then for the body."""
            if self.transport.is_closing():
                return self._cancel()
            state = self.conn.their_state
            wanted = ("headers" if state is h11.IDLE and self.timeout_keep_alive_task is None
                      else "body" if state is h11.SEND_BODY else None)
            if wanted == self._deadline_for and self._deadline_timer is not None:
                return
            self._cancel()
            if wanted is not None:
                seconds = settings.header_timeout if wanted == "headers" else settings.body_timeout
                self._deadline_for = wanted
                self._deadline_timer = self.loop.call_later(seconds, self._too_slow)

        def _cancel(self) -> None:
            if getattr(self, "_deadline_timer", None) is not None:
                self._deadline_timer.cancel()
            self._deadline_timer, self._deadline_for = None, None

        def _too_slow(self) -> None:
            self._deadline_timer = None
            if self.waiting_for_request():
                self._answer_and_close(_TIMEOUT_ANSWER)
            else:  # the app is reading the body: cutting the line makes it see a disconnect
                self.transport.close()

        def _answer_and_close(self, answer: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return GuardedH11Protocol


def _make_room(newcomer) -> bool:
    """Close the connection idle longest without a request; False when every other one is busy."""
    idle = [c for c in newcomer.connections
            if c is not newcomer and hasattr(c, "waiting_for_request") and c.waiting_for_request()
            and not c.transport.is_closing()]
    if not idle:
        return False
    oldest = min(idle, key=lambda c: c._idle_since)
    oldest._answer_and_close(_TIMEOUT_ANSWER)
    return True


def open_files_allowed() -> int:
    """Raise this process's limit on open files to the hard limit (systemd: LimitNOFILE); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class _Throttled(logging.Filter):
    """At most BURST records of one message per minute: a flood of bad requests must not fill the disk."""

    def __init__(self, burst: int = 10, seconds: float = 60.0) -> None:
        super().__init__()
        self.burst, self.seconds = burst, seconds
        self.seen: dict[str, list] = {}  # message -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        entry = self.seen.setdefault(str(record.msg), [now, 0])
        if now - entry[0] >= self.seconds:
            if entry[1] > self.burst:
                record.msg = f"{record.msg} (and {entry[1] - self.burst} more like it in the last minute)"
            entry[0], entry[1] = now, 0
        entry[1] += 1
        if len(self.seen) > 1000:
            self.seen.clear()
        return entry[1] <= self.burst


class _Server(uvicorn.Server):
    """uvicorn's server, telling ON_READY the port it listens on once it does (with port 0, the one it got),
    and ON_STOP when it begins to stop (responses that stream for ever must end then, or it waits)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[int], None] | None,
                 on_stop: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_ready, self.on_stop = on_ready, on_stop

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_ready is not None and self.servers:
            self.on_ready(self.servers[0].sockets[0].getsockname()[1])

    async def shutdown(self, sockets=None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        await super().shutdown(sockets=sockets)


def serve(app, *, host: str, port: int, settings: WebSettings, sock: socket.socket | None = None,
          on_ready: Callable[[int], None] | None = None, on_stop: Callable[[], None] | None = None) -> None:
    """Run APP until SIGTERM or SIGINT, on SOCK when given (bound already), else on HOST:PORT."""
    files = open_files_allowed()
    max_connections = max(10, min(settings.max_connections, files - FILES_SPARED))
    if max_connections < settings.max_connections:
        log.warning("web: at most %d connections: the limit on open files is %d (raise LimitNOFILE)",
                    max_connections, files)
    for name in ("uvicorn.error", "asyncio"):  # asyncio: "Too many open files" on accept, with a traceback
        logging.getLogger(name).addFilter(_Throttled())
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        # X-Forwarded-For is read by the app, from web.trusted_proxies only.
        proxy_headers=False, server_header=False,
        http=protocol_for(settings, max_connections),
        # The connection bound above holds first; this one bounds requests in flight.
        limit_concurrency=max_connections + 1, backlog=BACKLOG,
        timeout_keep_alive=5, h11_max_incomplete_event_size=16_384,
    )
    server = _Server(config, on_ready, on_stop)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    except KeyboardInterrupt:
        pass
    if not server.started:  # the port is taken, say: uvicorn has logged why
        raise SystemExit(3)
