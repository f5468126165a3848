"""Send one 20-article digest to N subscribers through the whole path into a counting SMTP sink.

Measures, in one run:
- queueing the issue for N subscribers (one INSERT … SELECT);
- the whole `feedpub send` process: ledger, per-reader message, SMTP, C connections;
- the sink's own ceiling: a minimal smtplib client sending one prebuilt message
  over the same C connections;
and prints both rates, their ratio, and the peak memory of the send process.

    python bench/send_speed.py                 # N = 100,000, C = 4
    python bench/send_speed.py -n 20000 -c 8
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="subscribers")
    parser.add_argument("-c", type=int, default=4, help="SMTP connections")
    parser.add_argument("--ceiling-messages", type=int, default=20_000)
    args = parser.parse_args()

    from feedpub.config import load_site
    from feedpub.jobs import compose_digest
    from feedpub.ledger import Ledger
    from feedpub.schedule import load_schedule
    from feedpub.store import Store, subscribers

    root = Path(tempfile.mkdtemp(prefix="feedpub-send-bench-"))
    port = free_port()
    sink = start_sink(port)
    try:
        make_site(root, 20)
        with open(root / "feedpub.yaml", "a", encoding="utf-8") as settings:
            settings.write(f"\nemail:\n  from: Bench <bench@example.org>\n  smtp:\n    host: 127.0.0.1\n"
                           f"    port: {port}\n    security: none\n    connections: {args.c}\n"
                           f"    per_connection: 100\n")
        site = load_site(root)
        store = Store(site.storage_url)
        now = datetime.now(timezone.utc)
        with store.engine.begin() as db:
            db.execute(subscribers.insert(), [
                {"email": f"reader{n}@example.net", "name": f"Reader {n}", "status": "active", "source": "bench",
                 "created_at": now} for n in range(args.n)])
            db.exec_driver_sql("INSERT INTO subscriptions (subscriber_id, list) SELECT id, 'bench' FROM subscribers")
        issue = compose_digest(site, load_schedule(root, site.timezone), "bench", store).issue
        size = len(issue.html.encode()) + len(issue.text.encode())

        # Composing queued the issue already; queue it again, alone, to time the statement.
        with store.engine.begin() as db:
            db.exec_driver_sql("DELETE FROM deliveries")
            started = time.perf_counter()
            queued = Ledger(store).queue(db, issue.id, "bench")
        queue_seconds = time.perf_counter() - started
        store.close()

        env = {**os.environ, "FEEDPUB_SECRET_KEY": "bench"}
        started = time.perf_counter()
        sender = subprocess.Popen([sys.executable, "-m", "feedpub", "send", "--site", str(root)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = high_water_mark(sender)
        output = sender.stdout.read()
        assert sender.wait() == 0, output
        send_seconds = time.perf_counter() - started
        from feedpub.mail import IssueMessage, Letter, Recipient

        # One reader's copy, the size of what the whole path sent, for the ceiling run.
        letter = Letter(issue.id, "bench", "Bench", issue.subject, issue.html, issue.text)
        prebuilt = IssueMessage(site, letter, date=now, unsubscribe_url=site.url("u?t={token}")).render(
            Recipient(1, "reader@example.net", "Reader"), "x" * 100, f"<{'0' * 32}@{site.email.domain}>")
        top = ceiling(port, prebuilt, args.ceiling_messages, args.c)
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(root)

    whole = queued / send_seconds
    print(f"{queued} subscribers, message of {len(prebuilt) / 1024:.0f} KB ({size / 1024:.0f} KB of HTML and text), "
          f"{args.c} connections")
    print(f"queueing:            {queue_seconds:8.2f} s")
    print(f"whole path:          {whole:8.0f} messages/s   ({send_seconds:.1f} s)  {output.strip()}")
    print(f"sink ceiling:        {top:8.0f} messages/s   (minimal client, {args.ceiling_messages} messages)")
    print(f"ratio:               {whole / top:8.0%}")
    print(f"peak memory (send):  {peak:8.0f} MB")


if __name__ == "__main__":
    main()
