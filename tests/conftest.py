from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from feedpub.config import load_site

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = ["feedpub.yaml", "schedule.yaml", "content", "templates"]


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A fresh copy of the bundled example site."""
    root = tmp_path / "site"
    root.mkdir()
    for name in EXAMPLE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    return root


@pytest.fixture
def site(site_dir: Path):
    return load_site(site_dir)


def write_article(site_dir: Path, name: str, front: str, body: str = "Body text.\n") -> Path:
    path = site_dir / "content" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front.strip()}\n---\n\n{body}", encoding="utf-8")
    return path


class SinkHandler:
    """An SMTP server's behaviour, set by each test: what to refuse, when to hang up."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.received: list[tuple[str, list[str], bytes]] = []
        self.temporary: dict[str, int] = {}  # address -> how many more times to answer 451
        self.unknown: set[str] = set()  # addresses answered 550 5.1.1
        self.hang_up: dict[str, int] = {}  # address -> how many more times to drop the line at end of DATA
        self.delay = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            if address in self.unknown:
                return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
            if self.temporary.get(address, 0) > 0:
                self.temporary[address] -= 1
                return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            address = envelope.rcpt_tos[0]
            if self.hang_up.get(address, 0) > 0:
                self.hang_up[address] -= 1
                server.transport.close()
                return "421 closing"
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"

    def copies(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for _sender, recipients, _data in self.received:
                for address in recipients:
                    counts[address] = counts.get(address, 0) + 1
        return counts


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def smtp_server():
    """One real aiosmtpd server on 127.0.0.1 for the whole test session."""
    from aiosmtpd.controller import Controller

    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), data_size_limit=0)
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def sink(smtp_server):
    smtp_server.handler.reset()
    return smtp_server.handler


def mail_settings(site_dir: Path, port: int, *, extra: str = "", connections: int = 2, timeout: int = 10) -> None:
    """Make the site at SITE_DIR mail through the SMTP server on 127.0.0.1:PORT."""
    settings = site_dir / "feedpub.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        + f"\nemail:\n  from: IA-insights <lettre@ia-insights.example.org>\n  smtp:\n"
        f"    host: 127.0.0.1\n    port: {port}\n    security: none\n    connections: {connections}\n"
        f"    per_connection: 50\n    timeout: {timeout}\n{extra}",
        encoding="utf-8",
    )


@pytest.fixture
def smtp_site_dir(site_dir, smtp_server):
    """The example site, mailing through the test SMTP server with two connections."""
    mail_settings(site_dir, smtp_server.port)
    return site_dir
