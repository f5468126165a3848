"""A private Postfix instance on 127.0.0.1 that throws away what it accepts, or relays it on.

Tests and the send bench start one in a fresh folder on a free port, beside
any Postfix the machine already runs: its own main.cf, master.cf, queue and
log, no chroot, every transport set to `discard`, or to SMTP towards one
server on 127.0.0.1 (a test's sink, to read what came through a real MTA).
Debian's `postfix` package provides the programs; `available()` says why
they cannot be used.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SBIN = Path("/usr/sbin")
MASTER_CF = Path("/etc/postfix/master.cf")


def available() -> str | None:
    """None when a private Postfix can be started here, else the reason it cannot."""
    for program in ("postfix", "postconf", "smtp-source"):
        if not (SBIN / program).exists():
            return f"{SBIN / program} is missing: apt-get install postfix"
    if not MASTER_CF.exists():
        return f"{MASTER_CF} is missing: apt-get install postfix"
    if os.geteuid() != 0:
        return "Postfix's master process must start as root"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _master_cf(port: int) -> str:
    """The machine's master.cf without its port-25 listener, without chroot, plus ours."""
    lines = []
    for line in MASTER_CF.read_text().splitlines():
        fields = line.split()
        if fields and not line[0].isspace() and not line.startswith("#"):
            if fields[1] == "inet":
                continue  # the machine's listeners: ours replaces them
            if len(fields) >= 5:
                fields[4] = "n"  # chroot would need copies of /etc files in the queue folder
                line = " ".join(fields)
        lines.append(line)
    lines.append(f"127.0.0.1:{port} inet n - n - - smtpd")
    return "\n".join(lines) + "\n"


class Postfix:
    """`with Postfix() as server:` ... server.port; the mail it accepts is discarded."""

    def __init__(self, *, smtputf8: bool = True, processes: int = 100, relay_to: int | None = None) -> None:
        self.port = free_port()
        self.smtputf8, self.processes, self.relay_to = smtputf8, processes, relay_to
        # Not under pytest's private temporary folder: Postfix's own users must reach the queue.
        self.folder = Path(tempfile.mkdtemp(prefix="feedpub-postfix-"))
        os.chmod(self.folder, 0o755)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SBIN / "postfix"), "-c", str(self.folder / "etc"), *args],
                              capture_output=True, text=True, timeout=60)

    def start(self) -> Postfix:
        etc = self.folder / "etc"
        etc.mkdir()
        (etc / "master.cf").write_text(_master_cf(self.port))
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.folder / "queue",
            "data_directory": self.folder / "data",
            "maillog_file": self.folder / "maillog",
            "maillog_file_prefixes": self.folder,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.test",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "default_transport": self._transport,
            "local_transport": self._transport,
            "relay_transport": self._transport,
            "virtual_transport": self._transport,
            "smtp_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "smtputf8_enable": "yes" if self.smtputf8 else "no",
            "default_process_limit": self.processes,
            "smtpd_client_connection_count_limit": 0,
            "smtpd_client_connection_rate_limit": 0,
            "in_flow_delay": "0s",
            "message_size_limit": 0,
            "alias_maps": "",
            "alias_database": "",
        }
        (self.folder / "queue").mkdir()  # the rest Postfix creates itself, with its owners
        (etc / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        started = self._postfix("start")
        if started.returncode != 0:
            # Postfix tells syslog, which a test machine may lack, unless it talks to a terminal.
            told = subprocess.run(["script", "-qc", f"{SBIN / 'postfix'} -c {etc} start", "/dev/null"],
                                  capture_output=True, text=True, timeout=60).stdout
            raise RuntimeError(f"postfix start failed: {told.strip() or self.log()[-300:]}")
        self._wait_for_greeting()
        return self

    @property
    def _transport(self) -> str:
        return f"smtp:[127.0.0.1]:{self.relay_to}" if self.relay_to else "discard"

    def _wait_for_greeting(self, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                    if connection.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix did not answer on port {self.port}: {self.log()[-500:]}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def accepted(self) -> int:
        """How many messages the server queued (and so will discard), from its log."""
        return len(re.findall(r": message-id=", self.log()))

    def stop(self) -> None:
        self._postfix("stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def smtp_source(port: int, *, sessions: int, messages: int, size: int) -> float:
    """Seconds Postfix's own load generator takes to send MESSAGES of SIZE bytes over SESSIONS."""
    started = time.perf_counter()
    subprocess.run([str(SBIN / "smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@example.org", "-t", "reader@example.net", f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started
