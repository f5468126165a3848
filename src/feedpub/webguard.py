"""What every request and response of the web app passes through: size limits, security headers, the client's address.

Plain ASGI middleware, so it covers the pages, the feeds, the forms and the
errors alike, whichever route answers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from http import HTTPStatus

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response

from .webconfig import IPNetwork, WebSettings

# No script runs on the site; styles are inline, and images may come from anywhere (articles
# and the digest archive carry both); nothing may frame a page.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src * data:; media-src *; "
                           "style-src 'self' 'unsafe-inline'; font-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Personal links carry tokens in their query: never hand them on as a referrer.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class BodyTooLarge(Exception):
    """A body sent without a length grew past web.max_body while it was read."""


def refusal(status: int) -> Response:
    """A short plain answer that closes the connection: the body we did not read is still on its way."""
    return PlainTextResponse(f"{HTTPStatus(status).phrase}\n", status_code=status, headers={"Connection": "close"})


class Guard:
    """Refuses bodies over `max_body` before reading them; adds the security headers to every response."""

    def __init__(self, app, settings: WebSettings) -> None:
        self.app, self.max_body = app, settings.max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_guarded(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                   *(h for h in SECURITY_HEADERS if h[0] not in present)]}
            await send(message)

        length = _content_length(scope["headers"])
        if length is not None and length > self.max_body:
            return await refusal(413)(scope, receive, send_guarded)
        received = 0

        async def receive_counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # a chunked body that said no length
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, receive_counted, send_guarded)
        except BodyTooLarge:
            if not started:
                await refusal(413)(scope, receive, send_guarded)
        except ClientDisconnect:
            pass  # the client left (or was cut off for being too slow): no one to answer


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The address a request came from, believing X-Forwarded-For only as far as trusted proxies go.

    Walking the header from the right, each hop added by a trusted proxy is
    believed; the first address not of a trusted proxy is the client. From a
    peer that is not a trusted proxy the header is ignored altogether.
    """
    address = peer or "unknown"
    if not forwarded_for or not _trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbage in the header: keep the last address we could believe
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def _trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
