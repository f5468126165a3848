"""A private Dovecot IMAP server on 127.0.0.1, over TLS, with one test user and its Maildir.

Started by the tests in a fresh folder on a free port, beside any Dovecot the
machine runs: its own configuration, a self-signed certificate (the client
trusts it by its CA file), a password file, and mail kept as a Maildir the
test can fill directly. Debian's `dovecot-imapd` package provides the server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from .postfix import free_port

DOVECOT = Path("/usr/sbin/dovecot")
USER, PASSWORD = "reports@ia-insights.example.org", "a-test-password"  # a login that is an address


def available() -> str | None:
    if not DOVECOT.exists():
        return f"{DOVECOT} is missing: apt-get install dovecot-imapd"
    if os.geteuid() != 0:
        return "Dovecot's master process must start as root"
    return None


class Dovecot:
    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="feedpub-dovecot-"))
        os.chmod(self.folder, 0o755)
        self.ca_file = self.folder / "cert.pem"
        self.maildir = self.folder / "mail" / USER

    def start(self) -> Dovecot:
        folder, owner = self.folder, pwd.getpwnam("dovecot")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(folder / "key.pem"), "-out", str(self.ca_file)],
                       check=True, capture_output=True)
        (folder / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.maildir.mkdir(parents=True)
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir()
        for path in [folder / "mail", *(folder / "mail").rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        (folder / "dovecot.conf").write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
ssl = required
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
mail_location = maildir:{folder}/mail/%u
first_valid_uid = {owner.pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={folder}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
""")
        # Its daemon keeps whatever output it was given: no pipes, or run() would wait for ever.
        started = subprocess.run([str(DOVECOT), "-c", str(folder / "dovecot.conf")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if started.returncode != 0:
            raise RuntimeError(f"dovecot failed to start: {self.log()[-500:]}")
        self._wait()
        return self

    def _wait(self, seconds: float = 20) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + seconds
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    if tls.recv(100).startswith(b"* OK"):
                        return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot did not answer: {self.log()[-500:]}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def deliver(self, raw: bytes) -> None:
        """Put RAW in the user's inbox, as the delivery agent would."""
        name = f"{time.time_ns()}.{os.getpid()}.test"
        (self.maildir / "tmp" / name).write_bytes(raw)
        owner = pwd.getpwnam("dovecot")
        os.chown(self.maildir / "tmp" / name, owner.pw_uid, owner.pw_gid)
        os.replace(self.maildir / "tmp" / name, self.maildir / "new" / name)

    def stop(self) -> None:
        subprocess.run([str(DOVECOT), "-c", str(self.folder / "dovecot.conf"), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
