"""`feedpub init` and `feedpub new`, as a newcomer with only the README runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import feedparser
import pytest
import yaml
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.content import parse_article, split_front_matter
from feedpub.schedule import load_schedule
from feedpub.templating import DEFAULT_TEMPLATES

REPO = Path(__file__).resolve().parents[1]
TRICKY = 'Tom & Jerry\'s "Notes": #1'


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def new_site(tmp_path, monkeypatch) -> Path:
    """A site made by `feedpub init my-site` in an empty folder, which is the current one."""
    monkeypatch.chdir(tmp_path)
    result = run("init", "my-site", "--timezone", "Europe/Paris")
    assert result.exit_code == 0, result.output
    return tmp_path / "my-site"


def test_init_then_build_then_check_are_clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init", "my-site")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Wrote a new site in my-site/:",
        "  feedpub.yaml", "  schedule.yaml", "  content/welcome.md", "  .gitignore",
        "Next:",
        "  cd my-site",
        "  feedpub serve            # build, then serve it at http://127.0.0.1:8080/",
        '  feedpub new "Title"      # start an article (a draft) in content/',
    ]
    site = tmp_path / "my-site"
    assert load_site(site).title == "My site"
    schedule = load_schedule(site)
    assert list(schedule.digests) == ["weekly"] and schedule.digests["weekly"].cron == "0 9 * * 1"
    assert (site / ".gitignore").read_text(encoding="utf-8").split() == ["public/", "state/", "outbox/"]
    assert not (site / "templates").exists()

    result = run("build", "--site", str(site))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1 article published")
    result = run("check", "--site", str(site))
    assert (result.exit_code, result.output) == (0, "all clean\n")


def test_the_example_article_shows_its_summary_key_points_and_faq(new_site):
    assert run("build", "--site", str(new_site)).exit_code == 0
    feed = feedparser.parse((new_site / "public" / "feed.xml").read_bytes())
    assert not feed.bozo
    [entry] = feed.entries
    assert entry.title == "Welcome to My site"
    assert entry.link == "http://127.0.0.1:8080/welcome/"
    assert entry.summary.startswith("What this site is for, and how one Markdown file becomes a page")
    body = entry.content[0].value
    assert ">FAQ</h2>" in body and "How do I start a new article?" in body
    page = (new_site / "public" / "welcome" / "index.html").read_text(encoding="utf-8")
    assert "Where does the mail go?" in page

    # The front matter's key points and questions are what the weekly email carries.
    result = run("digest", "weekly", "--preview", "--site", str(new_site))
    assert result.exit_code == 0, result.output
    issue = (new_site / "state" / "preview" / "weekly" / "issue.html").read_text(encoding="utf-8")
    for text in ("What this site is for", "A build publishes it as a page and in the feeds.",
                 "The weekly digest mails new articles to subscribers.", "How do I start a new article?",
                 "Into the outbox/ folder, until feedpub.yaml names an SMTP server."):
        assert text in issue


def test_the_commented_email_settings_work_once_uncommented(new_site):
    settings = new_site / "feedpub.yaml"
    text = settings.read_text(encoding="utf-8")
    assert "\nemail:" not in text and load_site(new_site).email.smtp is None
    start = text.index("# email:")
    settings.write_text(text[:start] + re.sub(r"(?m)^# ", "", text[start:]), encoding="utf-8")
    email = load_site(new_site).email
    assert (email.from_name, email.from_address, email.reply_to) == ("My site", "news@example.org",
                                                                     "editor@example.org")
    assert (email.smtp.host, email.smtp.port, email.smtp.security) == ("smtp.example.org", 587, "starttls")


def test_a_title_with_yaml_characters_reads_back_exactly(tmp_path):
    folder = tmp_path / "odd"
    result = run("init", str(folder), "--title", TRICKY, "--language", "fr")
    assert result.exit_code == 0, result.output
    site = load_site(folder)
    assert (site.title, site.author.name, site.language) == (TRICKY, TRICKY, "fr")
    assert load_schedule(folder).digests["weekly"].title == TRICKY + " — the week"
    assert run("build", "--site", str(folder)).exit_code == 0
    assert run("check", "--site", str(folder)).output == "all clean\n"
    feed = feedparser.parse((folder / "public" / "feed.xml").read_bytes())
    assert feed.feed.title == TRICKY and feed.entries[0].title == "Welcome to " + TRICKY


@pytest.mark.parametrize("existing", ["feedpub.yaml", "schedule.yaml", "content/notes/old.md"])
def test_init_refuses_an_existing_site_and_writes_nothing(tmp_path, existing):
    path = tmp_path / existing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine\n", encoding="utf-8")
    before = files_under(tmp_path)
    result = run("init", str(tmp_path), "--templates")
    assert result.exit_code == 1
    first = existing if "/" not in existing else "content/"
    assert result.output == f"Error: {tmp_path}: already holds a site ({first}); init writes nothing over it\n"
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({existing.split("/")[0]})


def test_init_in_the_current_folder_keeps_its_gitignore_and_an_empty_content_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "content").mkdir()
    (tmp_path / ".gitignore").write_text("*.pyc\nstate/\n", encoding="utf-8")
    result = run("init")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Wrote a new site here:\n") and "  cd " not in result.output
    assert (tmp_path / ".gitignore").read_text(encoding="utf-8") == "*.pyc\nstate/\npublic/\noutbox/\n"
    assert load_site(tmp_path).title == title_of(tmp_path)
    assert run("init").exit_code == 1


def title_of(folder: Path) -> str:
    words = re.sub(r"[-_.]+", " ", folder.name).strip()
    return words[:1].upper() + words[1:]


def test_init_templates_copies_them_and_the_build_uses_the_copies(tmp_path):
    folder = tmp_path / "site"
    result = run("init", str(folder), "--templates")
    assert result.exit_code == 0, result.output
    assert "  templates/" in result.output.splitlines()
    copied = files_under(folder / "templates")
    assert copied == files_under(DEFAULT_TEMPLATES) and "article.html.j2" in copied and "i18n/en.yaml" in copied
    page = folder / "templates" / "article.html.j2"
    page.write_text(page.read_text(encoding="utf-8").replace("<article>", "<article class=edited-here>"),
                    encoding="utf-8")
    assert run("build", "--site", str(folder)).exit_code == 0
    assert run("check", "--site", str(folder)).output == "all clean\n"
    assert "<article class=edited-here>" in (folder / "public" / "welcome" / "index.html").read_text(encoding="utf-8")


def test_init_refuses_an_unknown_time_zone(tmp_path):
    result = run("init", str(tmp_path / "s"), "--timezone", "Mars/Olympus")
    assert result.exit_code == 1
    assert result.output == "Error: --timezone: 'Mars/Olympus' is not a known time zone (e.g. Europe/Paris, UTC)\n"
    assert not (tmp_path / "s").exists()


def read_back(site_dir: Path, path: Path):
    site = load_site(site_dir)
    article, warnings = parse_article(site, path.relative_to(site.content_dir).as_posix(), path.read_bytes())
    return article, warnings


def test_new_writes_a_draft_that_reads_back_with_the_exact_title(new_site):
    before = datetime.now().astimezone()
    result = run("new", TRICKY, "--tags", "email, b: c,,email", "--site", str(new_site))
    assert result.exit_code == 0, result.output
    path = new_site / "content" / "tom-jerry-s-notes-1.md"
    assert result.output == "my-site/content/tom-jerry-s-notes-1.md\n"
    article, warnings = read_back(new_site, path)
    assert warnings == []
    assert article.title == TRICKY and article.draft is True and article.tags == ("email", "b: c")
    assert article.slug == "tom-jerry-s-notes-1"
    assert article.date.utcoffset() == article.date.astimezone(load_site(new_site).tz).utcoffset()
    assert before.replace(microsecond=0) <= article.date <= datetime.now().astimezone()
    front, _, _ = split_front_matter(path.read_text(encoding="utf-8"), path.name)
    date_line = next(line for line in front.splitlines() if line.startswith("date: "))
    assert re.fullmatch(r"date: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", date_line)
    for key in ("summary", "key_points", "faq", "slug", "image", "updated", "author"):
        assert re.search(rf"(?m)^# {key}:", front), key

    # A draft is not published...
    assert run("build", "--site", str(new_site)).exit_code == 0
    assert run("check", "--site", str(new_site)).output == "all clean\n"
    feed = feedparser.parse((new_site / "public" / "feed.xml").read_bytes())
    assert [e.title for e in feed.entries] == ["Welcome to My site"]
    assert not (new_site / "public" / article.slug).exists()
    # ...until its draft line goes; the optional fields work once uncommented.
    text = path.read_text(encoding="utf-8").replace("draft: true\n", "")
    text = re.sub(r"(?m)^# (summary|key_points|faq|  - q|    a|slug|updated|author):", r"\1:", text)
    path.write_text(text, encoding="utf-8")
    article, warnings = read_back(new_site, path)
    assert warnings == [] and article.summary == "One or two sentences."
    assert article.key_points == ("First point", "Second point") and article.faq[0].question == "A question?"
    assert run("build", "--site", str(new_site)).exit_code == 0
    feed = feedparser.parse((new_site / "public" / "feed.xml").read_bytes())
    assert TRICKY in [e.title for e in feed.entries]


def test_new_in_a_subfolder_names_the_file_by_the_build_slug_and_never_overwrites(new_site, monkeypatch):
    monkeypatch.chdir(new_site)
    result = run("new", "Été 2026", "--dir", "guides/summer")
    assert result.exit_code == 0, result.output
    path = new_site / "content" / "guides" / "summer" / "ete-2026.md"
    assert result.output == "content/guides/summer/ete-2026.md\n"
    article, _ = read_back(new_site, path)
    assert (article.title, article.slug, article.draft) == ("Été 2026", "ete-2026", True)
    written = path.read_bytes()
    # The same slug anywhere in content/ would be the same address: the next one gets -2, then -3.
    assert run("new", "Ete 2026!").output == "content/ete-2026-2.md\n"
    assert run("new", "Été 2026", "--dir", "guides/summer").output == "content/guides/summer/ete-2026-3.md\n"
    assert path.read_bytes() == written


def test_new_refuses_a_folder_outside_content(new_site, tmp_path, monkeypatch):
    monkeypatch.chdir(new_site)
    (new_site / "content" / "out").symlink_to(tmp_path, target_is_directory=True)
    before = files_under(tmp_path)
    for sub in ("../x", "guides/../../x", str(tmp_path / "x"), "out"):
        result = run("new", "Escape", "--dir", sub)
        assert result.exit_code == 1, sub
        assert result.output == f"Error: --dir {sub}: must be a folder inside content/\n"
    assert files_under(tmp_path) == before


def test_new_needs_an_ascii_name_or_a_slug(new_site, monkeypatch):
    monkeypatch.chdir(new_site)
    result = run("new", "日本語")
    assert result.exit_code == 1
    assert result.output == "Error: '日本語': no ASCII letters or digits to name the file; give one with --slug\n"
    assert run("new", "日本語", "--slug", "Nihongo").output == "content/nihongo.md\n"
    assert read_back(new_site, new_site / "content" / "nihongo.md")[0].title == "日本語"
    assert run("new", "   ").output == "Error: title: give some text\n"


def _fresh_venv(folder: Path) -> Path:
    """A new virtual environment, or a skip saying why one cannot be made here."""
    made = subprocess.run([sys.executable, "-m", "venv", str(folder)], capture_output=True, text=True)
    python = folder / "bin" / "python"
    if made.returncode != 0 or not python.exists():
        pytest.skip(f"cannot create a virtual environment: {(made.stderr or made.stdout).strip()[-200:]}")
    return python


def test_the_installed_wheel_makes_a_site_that_builds_and_checks(tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True)
    [wheel] = wheels.glob("feedpub-*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    feedpub = tmp_path / "venv" / "bin" / "feedpub"
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "FEEDPUB_SECRET_KEY"}}

    def sh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(feedpub), *args], cwd=cwd, env=env, capture_output=True, text=True)

    # The command comes from the wheel, not from the source tree.
    where = subprocess.run([str(python), "-c", "import feedpub; print(feedpub.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path / "venv"))
    result = sh("init", "my-site", "--templates", cwd=work)
    assert result.returncode == 0, result.stderr
    site = work / "my-site"
    assert (site / "content" / "welcome.md").is_file() and (site / "templates" / "digest.css").is_file()
    assert sh("new", "From the wheel", cwd=site).stdout == "content/from-the-wheel.md\n"
    result = sh("build", cwd=site)
    assert result.returncode == 0, result.stderr
    result = sh("check", cwd=site)
    assert (result.returncode, result.stdout, result.stderr) == (0, "all clean\n", "")
    feed = feedparser.parse((site / "public" / "feed.xml").read_bytes())
    assert [e.title for e in feed.entries] == ["Welcome to My site"]
    assert yaml.safe_load((site / "schedule.yaml").read_text(encoding="utf-8"))["digests"]["weekly"]["list"] == "weekly"
