"""CSV import: physical line numbers, open quotes, duplicates, encodings, unknown lists; progress on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from click.testing import CliRunner

from feedpub.cli import main


def run(site_dir, *args: str):
    return CliRunner().invoke(main, [*args, "--site", str(site_dir)])


def listing(site_dir) -> list[str]:
    return run(site_dir, "subscribers", "list").output.splitlines()


def test_open_quote_is_reported_where_it_opened_and_the_rows_after_it_are_read(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_text('email,name,lists\n'
                       'ada@example.org,Ada,weekly\n'
                       'bob@example.org,"Bob, weekly\n'
                       'cy@example.org,Cy,weekly\n'
                       'dee@example.org,Dee,weekly\n', encoding="utf-8")
    result = run(site_dir, "subscribers", "import", str(members))
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "error: members.csv:3: unterminated quote: it would swallow every line to the end of the file (4-5); "
        "this row is skipped, the lines after it are read on their own")
    assert [line.split("\t")[0] for line in listing(site_dir)[:-1]] == [
        "ada@example.org", "cy@example.org", "dee@example.org"]


def test_empty_address_and_duplicates_first_wins(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_text("email,name,lists\n"
                       "ada@Bücher.example,Ada,weekly\n"
                       ",Nobody,weekly\n"
                       "ADA@xn--bcher-kva.example,Other Ada,daily\n", encoding="utf-8")
    result = run(site_dir, "subscribers", "import", str(members))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: members.csv:3: no address: the email column is empty",
        "warning: members.csv:4: ada@bücher.example: already on line 2; the first is kept",
        "1 added, 0 updated, 0 unchanged, 0 not reactivated (unsubscribed or bounced), 1 bad row, "
        "1 duplicate row skipped",
    ]
    assert listing(site_dir)[0] == "ada@bücher.example\tAda\tactive\tweekly"


def test_latin1_and_cp1252_with_encoding(site_dir, tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email,name,lists\nzoe@example.org,Zoé Dupré,weekly\n".encode("latin-1"))
    windows = tmp_path / "windows.csv"
    windows.write_bytes("email,name,lists\r\neuro@example.org,Prix 5 €,weekly\r\n".encode("cp1252"))
    assert run(site_dir, "subscribers", "import", str(latin), "--encoding", "latin-1").exit_code == 0
    assert run(site_dir, "subscribers", "import", str(windows), "--encoding", "cp1252").exit_code == 0
    assert listing(site_dir)[:2] == ["euro@example.org\tPrix 5 €\tactive\tweekly",
                                     "zoe@example.org\tZoé Dupré\tactive\tweekly"]


def test_utf8_with_bom(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_bytes(b"\xef\xbb\xbf" + "email,name\nzoe@example.org,Zoé\n".encode("utf-8"))
    assert run(site_dir, "subscribers", "import", str(members)).exit_code == 0
    assert listing(site_dir)[0] == "zoe@example.org\tZoé\tactive\t"


def test_not_utf8_names_the_line_and_imports_no_one(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_bytes("email,name\nada@example.org,Ada\nzoe@example.org,Zoé\n".encode("latin-1"))
    result = run(site_dir, "subscribers", "import", str(members))
    assert result.exit_code == 1
    assert result.output == ("Error: members.csv:3: not UTF-8 (byte 0xe9); for a file saved as Latin-1 or "
                             "Windows-1252, add --encoding latin-1 (or cp1252)\n")
    assert listing(site_dir) == ["0 subscribers"]
    unknown = run(site_dir, "subscribers", "import", str(members), "--encoding", "klingon")
    assert unknown.exit_code == 2 and "'klingon' is not an encoding Python knows" in unknown.output


def test_lists_no_digest_sends_to_are_warned_about(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_text("email,lists\na@example.org,weekly monthly\nb@example.org,monthly\n", encoding="utf-8")
    result = run(site_dir, "subscribers", "import", str(members), "--list", "weekli")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "warning: --list weekli: no digest in schedule.yaml sends to this list",
        "warning: members.csv:2: list 'monthly': no digest in schedule.yaml sends to this list",
        "2 added, 0 updated, 0 unchanged, 0 not reactivated (unsubscribed or bounced), 0 bad rows",
    ]


def _import_command(site_dir, members) -> list[str]:
    return [sys.executable, "-m", "feedpub", "subscribers", "import", str(members), "--site", str(site_dir)]


def under_terminal(command: list[str], env: dict[str, str] | None = None) -> str:
    """What COMMAND writes to a pseudo terminal, as a user at a terminal would see it."""
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100", **(env or {})}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(command[0], command, env)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    return output.decode("utf-8", "replace")


def test_progress_on_a_terminal_only(site_dir, tmp_path):
    members = tmp_path / "members.csv"
    members.write_text("email\n" + "".join(f"r{n}@example.org\n" for n in range(300)), encoding="utf-8")
    # On a pipe: the output of old.
    piped = subprocess.run(_import_command(site_dir, members), capture_output=True, text=True)
    assert piped.stderr == ""
    assert piped.stdout == "300 added, 0 updated, 0 unchanged, 0 not reactivated (unsubscribed or bounced), 0 bad rows\n"
    # Under a pseudo terminal: a bar with the counts.
    members.write_text("email\n" + "".join(f"s{n}@example.org\n" for n in range(300)), encoding="utf-8")
    text = under_terminal(_import_command(site_dir, members))
    assert "importing" in text and "300/300" in text
    assert "300 added" in text


def _state_dump(site_dir) -> list:
    import sqlite3

    db = sqlite3.connect(site_dir / "state" / "feedpub.sqlite")
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return [(table, db.execute(f"SELECT * FROM {table}").fetchall()) for table in tables]
    finally:
        db.close()


def test_send_test_mails_one_signed_copy_and_records_nothing(site_dir, sink, smtp_server, tmp_path):
    import base64
    import email

    import dkim

    from .conftest import mail_settings
    from .test_dkim import DOMAIN, dkim_block, openssl

    key = tmp_path / "rsa.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    public = openssl("pkey", "-in", str(key), "-pubout", "-outform", "DER")
    records = {f"news._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)}
    mail_settings(site_dir, smtp_server.port, extra=dkim_block(key))
    run(site_dir, "subscribers", "add", "ada@example.org", "--list", "weekly")
    before_status, before_state = run(site_dir, "status").output, _state_dump(site_dir)

    result = run(site_dir, "send", "--test", "you@example.org", "weekly")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test mail of weekly (")
    assert [recipients for _sender, recipients, _data in sink.received] == [["you@example.org"]]
    data = sink.received[0][2]
    parsed = email.message_from_bytes(data)
    assert parsed["Subject"].startswith("[test] ")
    assert parsed["To"] == "you@example.org"
    assert "token=test-mail" in parsed["List-Unsubscribe"]
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: records.get(name))
    assert run(site_dir, "status").output == before_status
    assert _state_dump(site_dir) == before_state


def test_send_test_needs_a_name_when_there_are_several_digests(site_dir):
    result = run(site_dir, "send", "--test", "you@example.org")
    assert result.exit_code == 2
    assert "name the digest to test: one of daily, weekly" in result.output


def test_send_progress_on_a_terminal_only(site_dir):
    for n in range(3):
        run(site_dir, "subscribers", "add", f"r{n}@example.org", "--list", "weekly")
    env = {**os.environ, "FEEDPUB_SECRET_KEY": "test-secret"}
    command = [sys.executable, "-m", "feedpub", "digest", "weekly", "--send", "--site", str(site_dir)]
    piped = subprocess.run(command, capture_output=True, text=True, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "sending" not in piped.stdout + piped.stderr
    assert "done: 3 sent" in piped.stdout
    run(site_dir, "subscribers", "add", "late@example.org", "--list", "weekly")
    (site_dir / "content" / "extra.md").write_text(
        "---\ntitle: Un de plus\ndate: 2026-11-30\n---\n\nCorps.\n", encoding="utf-8")
    text = under_terminal(command, {"FEEDPUB_SECRET_KEY": "test-secret"})
    assert "sending" in text and "4/4" in text
    assert "done: 4 sent" in text
