"""Send one 20-article digest to N subscribers through the whole path, beside each server's own ceiling.

Two servers, each measured in the same run, feedpub alternating with the yardstick:
- a real Postfix (Debian's package, installed when missing; a private instance on
  127.0.0.1 that discards what it accepts), against Postfix's own load generator
  `smtp-source` with the same number of sessions and the same message size,
  feedpub with DKIM off and with DKIM on (RSA-2048);
- a counting sink that speaks just enough SMTP, against a minimal smtplib client
  sending one prebuilt copy over the same connections.
Prints the median rates of R rounds, the ratios, and the peak memory of a send.

    python bench/send_speed.py                     # N = 3,000, C = 4, R = 3
    python bench/send_speed.py -n 20000 -c 8 -r 5
    python bench/send_speed.py --no-postfix        # the counting sink only
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from digest_speed import make_site  # noqa: E402

# A counting sink that speaks just enough SMTP, so that the bench measures the
# sender rather than a full server's parsing (aiosmtpd takes ~200 messages/s of 100 KB).
SINK = textwrap.dedent("""
    import asyncio, sys

    async def session(reader, writer):
        writer.write(b"220 sink ESMTP\\r\\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\\r\\n250 8BITMIME\\r\\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\\r\\n")
                await reader.readuntil(b"\\r\\n.\\r\\n")
                writer.write(b"250 OK\\r\\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\\r\\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 OK\\r\\n")
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(session, "127.0.0.1", int(sys.argv[1]), limit=2**24)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen:
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "ready"
    return sink


def high_water_mark(process: subprocess.Popen) -> float:
    """The peak resident memory of PROCESS in MB, read from /proc while it runs.

    (getrusage would also count the memory this bench held when it forked.)
    """
    peak = 0.0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
            peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, StopIteration):
            pass
        time.sleep(0.05)
    return peak


def ceiling(port: int, message: bytes, count: int, connections: int) -> float:
    """Messages a second the sink takes from a client that does nothing else."""
    share = [count // connections + (1 if n < count % connections else 0) for n in range(connections)]

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for index in range(n):
                if index and index % 100 == 0:  # the same reconnect rhythm as feedpub
                    smtp.quit()
                    smtp.connect("127.0.0.1", port)
                smtp.sendmail("bench@example.org", ["reader@example.net"], message)

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started)


def install_postfix() -> str | None:
    """Debian's postfix when it is missing and this is root; the reason it cannot be used, or None."""
    from postfix import available

    reason = available()
    if reason and "apt-get" in reason and os.geteuid() == 0:
        print("installing Debian's postfix ...", flush=True)
        subprocess.run("echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"
                       " && apt-get install -y -q postfix", shell=True, check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        reason = available()
    return reason


def mail_settings(root: Path, port: int, connections: int, key: Path | None) -> None:
    base = (root / "feedpub.base.yaml").read_text(encoding="utf-8")
    block = (f"\nemail:\n  from: Bench <bench@example.org>\n  smtp:\n    host: 127.0.0.1\n"
             f"    port: {port}\n    security: none\n    connections: {connections}\n    per_connection: 100\n")
    if key:
        block += f"  dkim:\n    selector: bench\n    key_file: {key}\n"
    (root / "feedpub.yaml").write_text(base + block, encoding="utf-8")


def requeue(root: Path, issue_id: int) -> int:
    """Every subscriber's row of the issue back in the queue, as composing left them."""
    from feedpub.config import load_site
    from feedpub.ledger import Ledger
    from feedpub.store import Store

    store = Store(load_site(root).storage_url)
    try:
        with store.engine.begin() as db:
            db.exec_driver_sql("DELETE FROM deliveries")
            return Ledger(store).queue(db, issue_id, "bench")
    finally:
        store.close()


def feedpub_send(root: Path) -> tuple[float, float, str]:
    """(seconds, peak MB, output) of one `feedpub send` process."""
    env = {**os.environ, "FEEDPUB_SECRET_KEY": "bench"}
    started = time.perf_counter()
    sender = subprocess.Popen([sys.executable, "-m", "feedpub", "send", "--site", str(root)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = high_water_mark(sender)
    output = sender.stdout.read()
    if sender.wait() != 0:
        raise SystemExit(f"feedpub send failed: {output}")
    return time.perf_counter() - started, peak, output.strip()


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def prepare(root: Path, n: int):
    """The bench site with N subscribers and one composed issue; (issue, one reader's copy)."""
    from feedpub.config import load_site
    from feedpub.jobs import compose_digest
    from feedpub.mail import IssueMessage, Letter, Recipient
    from feedpub.schedule import load_schedule
    from feedpub.store import Store, subscribers

    make_site(root, 20)
    shutil.copy(root / "feedpub.yaml", root / "feedpub.base.yaml")
    mail_settings(root, 25, 1, None)
    site = load_site(root)
    store = Store(site.storage_url)
    now = datetime.now(timezone.utc)
    with store.engine.begin() as db:
        db.execute(subscribers.insert(), [
            {"email": f"reader{i}@example.net", "name": f"Reader {i}", "status": "active", "source": "bench",
             "created_at": now} for i in range(n)])
        db.exec_driver_sql("INSERT INTO subscriptions (subscriber_id, list) SELECT id, 'bench' FROM subscribers")
    issue = compose_digest(site, load_schedule(root, site.timezone), "bench", store).issue
    store.close()
    letter = Letter(issue.id, "bench", "Bench", issue.subject, issue.html, issue.text)
    copy = IssueMessage(site, letter, date=now, unsubscribe_url=site.url("u?t={token}")).render(
        Recipient(1, "reader@example.net", "Reader"), "x" * 100, f"<{'0' * 32}@{site.email.domain}>")
    return issue, copy


def against_postfix(root: Path, issue_id: int, size: int, args) -> list[str]:
    from postfix import Postfix, smtp_source

    key = root / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                   check=True, capture_output=True)
    rates: dict[str, list[float]] = {"smtp-source": [], "DKIM off": [], "DKIM on": []}
    with Postfix() as server:
        for _round in range(args.r):
            rates["smtp-source"].append(args.n / smtp_source(server.port, sessions=args.c, messages=args.n,
                                                              size=size))
            for label, signing in (("DKIM off", None), ("DKIM on", key)):
                mail_settings(root, server.port, args.c, signing)
                queued = requeue(root, issue_id)
                seconds, _peak, _output = feedpub_send(root)
                rates[label].append(queued / seconds)
        accepted = server.accepted()
    top = median(rates["smtp-source"])
    lines = [f"Postfix, {args.c} sessions, {args.r} rounds (accepted {accepted} messages):"]
    for label, values in rates.items():
        shown = " ".join(f"{v:.0f}" for v in values)
        lines.append(f"  {label:12} {median(values):6.0f} messages/s  ratio {median(values) / top:5.2f}   [{shown}]")
    return lines


def against_sink(root: Path, issue_id: int, copy: bytes, args) -> list[str]:
    port = free_port()
    sink = start_sink(port)
    try:
        whole, tops, peaks = [], [], []
        mail_settings(root, port, args.c, None)
        for _round in range(args.r):
            queued = requeue(root, issue_id)
            seconds, peak, _output = feedpub_send(root)
            whole.append(queued / seconds)
            peaks.append(peak)
            tops.append(ceiling(port, copy, args.n, args.c))
    finally:
        sink.terminate()
        sink.wait()
    return [f"counting sink, {args.c} connections, {args.r} rounds:",
            f"  {'minimal client':12} {median(tops):6.0f} messages/s",
            f"  {'feedpub':12} {median(whole):6.0f} messages/s  ratio {median(whole) / median(tops):5.2f}",
            f"  peak memory of a send: {max(peaks):.0f} MB"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="subscribers (and smtp-source messages) per round")
    parser.add_argument("-c", type=int, default=4, help="SMTP connections / smtp-source sessions")
    parser.add_argument("-r", type=int, default=3, help="rounds, alternating feedpub and its yardstick")
    parser.add_argument("--no-postfix", action="store_true", help="measure against the counting sink only")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))

    reason = None if args.no_postfix else install_postfix()
    root = Path(tempfile.mkdtemp(prefix="feedpub-send-bench-"))
    try:
        issue, copy = prepare(root, args.n)
        print(f"{args.n} subscribers, a message of {len(copy) / 1024:.0f} KB")
        lines = []
        if not args.no_postfix:
            lines += against_postfix(root, issue.id, len(copy), args) if reason is None else [f"no Postfix: {reason}"]
        lines += against_sink(root, issue.id, copy, args)
    finally:
        shutil.rmtree(root)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
