"""The feedpub command as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from feedpub.cli import main
from tests.conftest import write_article


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_build_then_check_the_example_site(site_dir):
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 0, result.output
    assert "7 articles published; parsed 8" in result.output
    assert (site_dir / "public" / "feed.xml").is_file()
    result = run("check", "--site", str(site_dir))
    assert result.exit_code == 0
    assert result.output == "all clean\n"


def test_build_with_a_bad_article_exits_1_with_one_line_per_problem(site_dir):
    write_article(site_dir, "bad.md", "title: Bad\ndate: someday")
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 1
    assert (
        "error: content/bad.md:3: date: 'someday' is not a date (write 2026-11-30 or 2026-11-30T09:00:00+01:00)\n"
        in result.output
    )
    assert "Traceback" not in result.output
    assert "7 articles published" in result.output


def test_check_writes_nothing_and_reports_every_problem(site_dir):
    write_article(site_dir, "odd.md", "title: Odd\ndate: 2026-01-01\nmood: happy")
    (site_dir / "templates" / "list.html.j2").write_text("{% for x in %}", encoding="utf-8")
    result = run("check", "--site", str(site_dir))
    assert result.exit_code == 1
    assert "warning: content/odd.md:4: unknown key 'mood' (ignored)\n" in result.output
    assert "error: templates/list.html.j2:1: " in result.output
    assert not (site_dir / "public").exists() and not (site_dir / "state").exists()


def test_bad_settings_name_the_key(site_dir):
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("items: 20", "items: many"), encoding="utf-8")
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 1
    assert result.output == "Error: feedpub.yaml: feeds.items: 'many' is not a whole number\n"
    settings.write_text("title: x\nbase_url: ftp://nowhere\n", encoding="utf-8")
    assert run("check", "--site", str(site_dir)).output == (
        "error: feedpub.yaml:2: base_url: 'ftp://nowhere' is not an absolute http(s) URL\n1 error, 0 warnings\n"
    )
    settings.write_text("title: x\nbase_url: https://a.example/\ntimezone: Mars/Olympus\n", encoding="utf-8")
    assert "feedpub.yaml: timezone: 'Mars/Olympus' is not a known time zone" in run("build", "--site", str(site_dir)).output
    settings.write_text("title: [x\n", encoding="utf-8")
    assert run("build", "--site", str(site_dir)).output.startswith("Error: feedpub.yaml: line 1: not valid YAML")


def test_console_script_runs_in_the_site_folder(site_dir):
    result = subprocess.run(
        [sys.executable, "-m", "feedpub", "build"], cwd=site_dir, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (site_dir / "public" / "atom.xml").is_file()


def test_email_settings_are_checked(site_dir):
    settings = site_dir / "feedpub.yaml"
    base = settings.read_text(encoding="utf-8")
    settings.write_text(base + "email:\n  from: not an address\n", encoding="utf-8")
    assert "error: feedpub.yaml:24: email.from: must be an address such as 'Name <news@example.org>'\n" in run(
        "check", "--site", str(site_dir)).output
    settings.write_text(base + "email:\n  reply_to: \"a@example.org\\nBcc: b@example.org\"\n", encoding="utf-8")
    assert "error: feedpub.yaml:24: email.reply_to: " in run("check", "--site", str(site_dir)).output
    settings.write_text(base + "email:\n  smtp:\n    host: smtp.example.org\n    security: ssl\n", encoding="utf-8")
    assert "error: feedpub.yaml:26: email.smtp.security: 'ssl' is not one of starttls, tls, none\n" in run(
        "check", "--site", str(site_dir)).output
