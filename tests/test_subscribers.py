"""Managing subscribers from the command line, and importing them from CSV."""

from __future__ import annotations

import csv
import io

from click.testing import CliRunner

from feedpub.cli import main


def run(site_dir, *args: str):
    return CliRunner().invoke(main, [*args, "--site", str(site_dir)], catch_exceptions=False)


def test_add_list_remove_and_export(site_dir):
    assert run(site_dir, "subscribers", "add", "Ada@Example.ORG", "--name", "Ada", "--list", "weekly").output == (
        "added: ada@example.org (active) on weekly\n")
    assert run(site_dir, "subscribers", "add", "ada@example.org", "--list", "daily").output == (
        "updated: ada@example.org (active) on daily, weekly\n")
    run(site_dir, "subscribers", "add", "bob@example.org", "--list", "daily")
    listing = run(site_dir, "subscribers", "list", "--list", "weekly")
    assert listing.output == "ada@example.org\tAda\tactive\tdaily weekly\n1 subscriber\n"
    assert run(site_dir, "subscribers", "list").output.endswith("2 subscribers\n")
    exported = list(csv.DictReader(io.StringIO(run(site_dir, "subscribers", "export").output)))
    assert [(r["email"], r["lists"], r["status"]) for r in exported] == [
        ("ada@example.org", "daily weekly", "active"), ("bob@example.org", "daily", "active")]
    assert run(site_dir, "subscribers", "remove", "BOB@example.org").output == "removed: BOB@example.org\n"
    assert run(site_dir, "subscribers", "list").output.endswith("1 subscriber\n")
    bad = CliRunner().invoke(main, ["subscribers", "add", "not-an-address", "--site", str(site_dir)])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: not-an-address: ")


def test_csv_import_reports_bad_rows_and_never_reactivates(site_dir, tmp_path):
    run(site_dir, "subscribers", "add", "left@example.org", "--list", "weekly")
    from feedpub.config import load_site
    from feedpub.store import Store
    from feedpub.subscribers import Subscribers
    from datetime import datetime, timezone

    site = load_site(site_dir)
    store = Store(site.storage_url)
    book = Subscribers(store)
    book.unsubscribe(book.get("left@example.org").id, "weekly", datetime.now(timezone.utc))
    store.close()
    readers = tmp_path / "readers.csv"
    readers.write_text(
        "email,name,lists\n"
        "one@example.org,One,weekly\n"
        "not an address,Broken,weekly\n"
        "two@example.org,Two,daily;weekly\n"
        "ONE@example.org,One,weekly\n"
        "left@example.org,Left,weekly\n"
        "three@example.org,Three,bad list!\n"
        ",Nobody,weekly\n",
        encoding="utf-8")
    first = CliRunner().invoke(main, ["subscribers", "import", str(readers), "--list", "news", "--site", str(site_dir)])
    assert first.exit_code == 1
    lines = first.output.splitlines()
    assert lines[0] == "warning: --list news: no digest in schedule.yaml sends to this list"
    assert lines[1].startswith("error: readers.csv:3: not an address: ")
    assert lines[2] == "warning: readers.csv:5: one@example.org: already on line 2; the first is kept"
    assert lines[3] == "error: readers.csv:7: list 'list!' may only hold letters, digits, - and _"
    assert lines[4] == "error: readers.csv:8: no address: the email column is empty"
    assert lines[5] == ("2 added, 0 updated, 0 unchanged, 1 not reactivated (unsubscribed or bounced), 3 bad rows, "
                        "1 duplicate row skipped")
    second = CliRunner().invoke(main, ["subscribers", "import", str(readers), "--list", "news", "--site", str(site_dir)])
    assert second.output.splitlines()[-1] == (
        "0 added, 0 updated, 2 unchanged, 1 not reactivated (unsubscribed or bounced), 3 bad rows, "
        "1 duplicate row skipped")
    listing = run(site_dir, "subscribers", "list").output.splitlines()
    assert listing == [
        "left@example.org\t\tunsubscribed\t",
        "one@example.org\tOne\tactive\tnews weekly",
        "two@example.org\tTwo\tactive\tdaily news weekly",
        "3 subscribers",
    ]


def test_status_shows_delivery_counts(site_dir):
    run(site_dir, "subscribers", "add", "ada@example.org", "--list", "weekly")
    before = run(site_dir, "status").output.splitlines()
    assert before[:2] == ["jobs:", "  build: every 10 minutes"]
    assert before[2].startswith("  daily: list daily, next ") and before[2].endswith(", last window none")
    assert before[-2:] == ["issues:", "  no issue yet"]
    result = run(site_dir, "digest", "weekly", "--send")
    assert "; 1 message queued for list weekly\n" in result.output
    assert "done: 1 sent" in result.output
    status = run(site_dir, "status").output
    assert "\n  weekly 2" in status
    assert (": 0 queued, 1 sent, 0 retrying, 0 failed, 0 skipped; 0 hard / 0 soft bounces (0.00 %), "
            "0 complaints (0.00 %), 0 unsubscribed — IA-insights — la semaine du ") in status
    assert len(list((site_dir / "outbox" / "new").iterdir())) == 1
