"""The `web:` settings of feedpub.yaml: how much the web server accepts, and whom it believes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebSettings:
    max_body: int = 65_536  # bytes of a request body; a form of ours is far smaller
    max_fields: int = 50  # fields of one form
    header_timeout: float = 10.0  # seconds a client has to send its request line and headers
    body_timeout: float = 30.0  # seconds a client has to send the body once the headers are in
    max_connections: int = 1000  # open at once; beyond, the oldest idle ones are closed
    # Proxies whose X-Forwarded-For is believed; none by default, so no client can
    # choose the address the rate limits count it under.
    trusted_proxies: tuple[IPNetwork, ...] = ()


def web_settings(section) -> WebSettings:
    """WebSettings from the `web:` Section of feedpub.yaml (a config.Section)."""
    defaults = WebSettings()
    proxies = section._get("trusted_proxies", [], False)
    if isinstance(proxies, str):
        proxies = [proxies]
    if not isinstance(proxies, list):
        raise section.error("trusted_proxies", "must be a list of IP addresses or networks (CIDR)")
    networks = []
    for item in proxies:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise section.error("trusted_proxies", f"{item!r} is not an IP address or network") from None
    settings = WebSettings(
        max_body=section.int("max_body", defaults.max_body, minimum=1024),
        max_fields=section.int("max_fields", defaults.max_fields, minimum=5),
        header_timeout=float(section.int("header_timeout", int(defaults.header_timeout), minimum=1)),
        body_timeout=float(section.int("body_timeout", int(defaults.body_timeout), minimum=1)),
        max_connections=section.int("max_connections", defaults.max_connections, minimum=10),
        trusted_proxies=tuple(networks),
    )
    section.check_unknown()
    return settings
