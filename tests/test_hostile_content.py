"""Content written to hurt: it must never leak a file, stop the feeds or stall the build."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest
from click.testing import CliRunner
from lxml import etree
from lxml import html as lxml_html

from feedpub.build import build, check
from feedpub.buildlock import BuildLock
from feedpub.cli import main
from feedpub.config import load_site
from feedpub.content import MAX_TAGS
from tests.conftest import write_article

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
SECRET = "subscriber-database-7f3a9c"
FEEDS = ("feed.xml", "atom.xml", "feed.json")


def published_bytes(site) -> bytes:
    return b"".join(p.read_bytes() for p in site.output_dir.rglob("*") if p.is_file())


def feedpub(site_dir: Path, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedpub", *args, "--site", str(site_dir)],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def many_articles(site_dir: Path, count: int) -> None:
    paragraph = "Des mots sur l'intelligence artificielle, expliqués sans jargon. " * 40
    for n in range(count):
        write_article(site_dir, f"gen/article-{n:04d}.md", f"title: Article {n}\ndate: 2026-10-01\ntags: [t{n % 7}]",
                      f"{paragraph}\n\n- point one\n- point two\n\n## FAQ\n\n### Why?\n\nBecause.\n")


# 1. Nothing outside content/ is read

def test_links_that_leave_the_content_folder_are_never_followed(site, site_dir):
    state = site_dir / "state"
    state.mkdir()
    (state / "feedpub.sqlite").write_text(SECRET)
    outside = site_dir.parent / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(f"---\ntitle: {SECRET}\ndate: 2026-11-01\n---\n\n{SECRET}\n")
    content = site_dir / "content"
    (content / "leak.sqlite").symlink_to("../state/feedpub.sqlite")
    (content / "passwd.md").symlink_to("/etc/passwd")
    (content / "settings.txt").symlink_to(site_dir / "feedpub.yaml")
    (content / "elsewhere").symlink_to(outside, target_is_directory=True)
    (content / "loop").symlink_to("loop")
    (content / "guides" / "up").symlink_to("..", target_is_directory=True)

    report = build(site, now=NOW)

    published = published_bytes(site)
    assert SECRET.encode() not in published
    assert b"root:x:0:0" not in published and b"base_url" not in published
    assert not (site.output_dir / "leak.sqlite").exists()
    assert not (site.output_dir / "elsewhere").exists()
    warnings = "\n".join(report.warnings)
    for name in ("leak.sqlite", "passwd.md", "settings.txt", "elsewhere"):
        assert f"content/{name}: a link to a file outside the content folder; skipped" in warnings
    assert "content/loop: a link that loops; skipped" in warnings
    assert "content/guides/up: a link to a folder that holds it (a loop); skipped" in warnings
    assert len(report.published) == 7 and report.errors == []
    assert check(site, now=NOW)[1] == report.warnings


def test_a_link_that_stays_inside_the_content_folder_is_followed(site, site_dir):
    content = site_dir / "content"
    (content / "pictures").mkdir()
    (content / "pictures" / "chart.png").write_bytes(b"\x89PNG chart")
    (content / "chart-link.png").symlink_to("pictures/chart.png")
    store = content / ".store"  # a dot-folder is not walked itself: only through the link
    store.mkdir()
    write_article(site_dir, ".store/kept.md", "title: Kept\ndate: 2026-11-01")
    (content / "shortcut").symlink_to(".store", target_is_directory=True)
    (content / "same.md").symlink_to("why-feeds-still-matter.md")

    report = build(site, now=NOW)

    assert report.warnings == [] and report.errors == []
    assert (site.output_dir / "chart-link.png").read_bytes() == b"\x89PNG chart"
    assert (site.output_dir / "pictures" / "chart.png").read_bytes() == b"\x89PNG chart"
    assert (site.output_dir / "same" / "index.html").is_file()
    assert (site.output_dir / "kept" / "index.html").is_file()
    assert {p.article.source for p in report.published} >= {"shortcut/kept.md", "same.md"}


def test_a_fifo_is_skipped_with_a_warning_and_the_build_finishes(site_dir):
    os.mkfifo(site_dir / "content" / "pipe.md")
    os.mkfifo(site_dir / "content" / "pipe.png")
    (site_dir / "content" / "to-pipe.md").symlink_to("pipe.md")

    result = feedpub(site_dir, "build", timeout=120)  # a FIFO that is opened blocks for ever

    assert result.returncode == 0, result.stderr
    assert "warning: content/pipe.md: a FIFO, never read; skipped" in result.stderr
    assert "warning: content/pipe.png: a FIFO, never read; skipped" in result.stderr
    assert "warning: content/to-pipe.md: a FIFO, never read; skipped" in result.stderr
    assert "Traceback" not in result.stderr
    assert "7 articles published" in result.stdout


def test_devices_and_sockets_are_never_opened(site, site_dir):
    content = site_dir / "content"
    (content / "zero.md").symlink_to("/dev/zero")  # outside: refused before its type matters
    try:
        os.mknod(content / "zero-here.md", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        device = True
    except (PermissionError, OSError):
        device = False  # no right to make device files here: the socket stands in for it
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(content / "socket.md"))
    try:
        report = build(site, now=NOW)
    finally:
        server.close()
    assert "content/zero.md: a link to a file outside the content folder; skipped" in report.warnings
    assert "content/socket.md: a socket, never read; skipped" in report.warnings
    if device:
        assert "content/zero-here.md: a device, never read; skipped" in report.warnings
    assert len(report.published) == 7 and report.errors == []


def test_an_article_over_max_bytes_is_reported_and_left_out(site_dir):
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8") + "content:\n  folder: content\n  max_bytes: 2000\n",
                        encoding="utf-8")
    site = load_site(site_dir)
    assert site.content.max_bytes == 2000 and site.content_dir == site_dir / "content"
    write_article(site_dir, "huge.md", "title: Huge\ndate: 2026-11-01", "word " * 1000)
    small = site_dir / "content" / "why-feeds-still-matter.md"
    small.write_bytes(small.read_bytes()[:1500])  # keep the others under the limit
    for path in (site_dir / "content").rglob("*.md"):
        if path.name != "huge.md" and path.stat().st_size > 2000:
            path.unlink()

    report = build(site, now=NOW)

    size = (site_dir / "content" / "huge.md").stat().st_size
    message = f"content/huge.md:1: {size} bytes, larger than content.max_bytes (2000); left out"
    assert message in report.errors
    assert not (site.output_dir / "huge").exists()
    assert report.published
    assert message in check(site)[0]


def test_the_default_limit_is_five_megabytes(site):
    assert site.content.max_bytes == 5_000_000


def test_a_file_that_grew_after_the_walk_is_still_read_only_up_to_the_limit(site_dir, tmp_path):
    from feedpub.sources import read, walk

    path = write_article(site_dir, "grows.md", "title: Grows\ndate: 2026-11-01", "x" * 100)
    found = {s.name: s for s in walk(site_dir / "content").articles}
    path.write_bytes(path.read_bytes() + b"y" * 10_000)
    with pytest.raises(Exception, match=r"content/grows.md:1: larger than content.max_bytes \(1000 bytes\)"):
        read(site_dir / "content", found["grows.md"], 1000)


# 2. Text reaching XML is clean and inert

HOSTILE_SUMMARY = "<img src=x onerror=alert(1)>"


def live_markup(html: str) -> list[str]:
    """Elements and event attributes a reader would bring to life in HTML."""
    if not html.strip():
        return []
    tree = lxml_html.fragment_fromstring(html, create_parent="div")
    found = [e.tag for e in tree.iter() if e.tag in {"img", "script", "svg", "iframe"}]
    return found + [name for e in tree.iter() for name in e.attrib if name.startswith("on")]


def test_control_characters_never_stop_the_feeds(site, site_dir):
    write_article(site_dir, "pasted.md",
                  'title: "Pasted \\0from\\x01 a PDF"\ndate: 2026-11-20\nauthor: "Ann\\x0c Lee"\n'
                  'tags: ["pdf\\x02", ok]\nfaq:\n  - q: "Why\\x0b?"\n    a: "Because\\x1f."',
                  "Page one.\x0cPage two\x01 ends.\n\nA reference &#12; too.\n\n- point\x07 one\n")
    report = build(site, now=NOW)

    assert report.errors == []
    assert any(p.article.slug == "pasted" for p in report.published)
    # Six written as YAML escapes, three in the body, whose first one is on line 11.
    assert "content/pasted.md:11: 9 control characters removed (feeds cannot carry them, the first U+000C)" \
        in report.warnings
    for name in ("feed.xml", "atom.xml"):
        data = (site.output_dir / name).read_bytes()
        etree.fromstring(data)  # well-formed: lxml refuses any character XML 1.0 forbids
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.get("bozo_exception")
        entry = next(e for e in parsed.entries if "Pasted" in e.title)
        assert entry.title == "Pasted from a PDF"
    feed = json.loads((site.output_dir / "feed.json").read_bytes())
    item = next(i for i in feed["items"] if i["title"] == "Pasted from a PDF")
    assert item["authors"] == [{"name": "Ann Lee"}] and item["tags"] == ["pdf", "ok"]
    assert "Page one.Page two ends." in item["content_html"]
    assert not any(chr(c) in json.dumps(feed, ensure_ascii=False) for c in (0, 1, 2, 7, 11, 12, 31))


def test_check_reports_what_the_build_would_remove(site_dir):
    write_article(site_dir, "pasted.md", "title: Pasted\ndate: 2026-11-20", "One\x0cTwo.\n")
    result = CliRunner().invoke(main, ["check", "--site", str(site_dir)], catch_exceptions=False)
    assert result.exit_code == 0  # a warning is told, and does not fail the check
    assert "warning: content/pasted.md:6: 1 control character removed (feeds cannot carry them, " \
           "the first U+000C)\n" in result.output
    assert "all clean" not in result.output


def test_a_hostile_summary_or_lede_stays_text_in_every_feed(site, site_dir):
    write_article(site_dir, "summary.md", f'title: Summary\ndate: 2026-11-20\nsummary: "{HOSTILE_SUMMARY}"')
    write_article(site_dir, "lede.md", "title: Lede\ndate: 2026-11-21",
                  "To show an image, write `<img src=x onerror=alert(1)>` and `<script>alert(2)</script>`.\n")
    report = build(site, now=NOW)
    assert report.errors == []

    rss = feedparser.parse((site.output_dir / "feed.xml").read_bytes())
    atom = feedparser.parse((site.output_dir / "atom.xml").read_bytes())
    for parsed in (rss, atom):
        assert not parsed.bozo
        for title in ("Summary", "Lede"):
            entry = next(e for e in parsed.entries if e.title == title)
            assert entry.summary_detail.type == "text/html"
            assert live_markup(entry.summary) == [], entry.summary
            # The reader shows the words as written.
            shown = lxml_html.fragment_fromstring(entry.summary, create_parent="div").text_content()
            assert "<img src=x onerror=alert(1)>" in shown
    # The raw XML carries the markup escaped twice: once for XML, once for HTML.
    for name in ("feed.xml", "atom.xml"):
        tree = etree.fromstring((site.output_dir / name).read_bytes())
        texts = [e.text or "" for e in tree.iter() if etree.QName(e).localname in {"description", "summary"}]
        assert any("&lt;img src=x onerror=alert(1)&gt;" in t for t in texts)
        assert all(live_markup(t) == [] for t in texts)


def test_html_in_a_title_author_or_tag_is_reduced_to_its_text(site, site_dir):
    write_article(site_dir, "bold.md",
                  'title: "<b>Bold</b> claim & <i>more</i>"\ndate: 2026-11-20\nauthor: "<em>Ann</em> Lee"\n'
                  'tags: ["<b>ia</b>", "x < y"]')
    report = build(site, now=NOW)
    assert report.errors == []
    for name in ("feed.xml", "atom.xml"):
        tree = etree.fromstring((site.output_dir / name).read_bytes())
        texts = {etree.QName(e).localname: [] for e in tree.iter()}
        for element in tree.iter():
            texts[etree.QName(element).localname].append(element.text or "")
            texts[etree.QName(element).localname] += list(element.attrib.values())
        assert "Bold claim & more" in texts["title"]
        for kind in ("title", "category", "creator", "name"):
            assert not any("<b>" in t or "<em>" in t or "<i>" in t for t in texts.get(kind, [])), kind
    entry = next(e for e in feedparser.parse((site.output_dir / "atom.xml").read_bytes()).entries
                 if e.title.startswith("Bold"))
    assert entry.title == "Bold claim & more" and entry.author == "Ann Lee"
    assert [t.term for t in entry.tags] == ["ia", "x < y"]
    page = (site.output_dir / "bold" / "index.html").read_text(encoding="utf-8")
    assert "<h1>Bold claim &amp; more</h1>" in page


@pytest.mark.parametrize("image", ["javascript:alert(1)", "data:image/png;base64,AAAA", "vbscript:x",
                                   "JaVaScRiPt:alert(1)", "ftp://example.org/a.png"])
def test_an_image_that_is_not_http_or_relative_is_refused(site, site_dir, image):
    write_article(site_dir, "pic.md", f'title: Pic\ndate: 2026-11-20\nimage: "{image}"')
    report = build(site, now=NOW)
    assert f"content/pic.md:4: image: {image!r} is not an http(s) or relative URL" in report.errors
    assert not (site.output_dir / "pic").exists()


def test_relative_and_http_images_are_kept(site, site_dir):
    write_article(site_dir, "pic.md", "title: Pic\ndate: 2026-11-20\nimage: img/a.png")
    write_article(site_dir, "far.md", "title: Far\ndate: 2026-11-20\nimage: https://cdn.example.org/b.png")
    build(site, now=NOW)
    items = {i["title"]: i for i in json.loads((site.output_dir / "feed.json").read_bytes())["items"]}
    assert items["Pic"]["image"] == "http://127.0.0.1:8080/img/a.png"
    assert items["Far"]["image"] == "https://cdn.example.org/b.png"


# 3. Front matter that costs too much is refused

BOMB = "\n".join(
    ["title: Bomb", "date: 2026-11-20", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    + ["draft: [*i,*i,*i,*i,*i,*i,*i,*i,*i]"]
)


def test_the_alias_bomb_is_refused_before_any_expansion(site, site_dir):
    write_article(site_dir, "bomb.md", BOMB)
    report = build(site, now=NOW)  # expanded, this front matter stands for 3 billion values
    assert "content/bomb.md:4: front matter: anchors and aliases are not allowed" in report.errors
    assert len(report.published) == 7


def test_any_anchor_or_alias_is_refused_and_deep_nesting_too(site, site_dir):
    write_article(site_dir, "alias.md", "title: &t Alias\ndate: 2026-11-20\nsummary: *t")
    write_article(site_dir, "deep.md", "title: Deep\ndate: 2026-11-20\nx: " + "[" * 30 + "]" * 30)
    errors = check(site)[0]
    assert "content/alias.md:2: front matter: anchors and aliases are not allowed" in errors
    assert "content/deep.md:4: front matter: nested deeper than 8 levels" in errors


def test_an_article_with_a_thousand_tags_builds_with_a_warning(site, site_dir):
    tags = "\n".join(f"  - tag {n}" for n in range(1000))
    write_article(site_dir, "many-tags.md", f"title: Tags\ndate: 2026-11-20\ntags:\n{tags}")
    report = build(site, now=NOW)
    assert f"content/many-tags.md:4: 1000 tags; only the first {MAX_TAGS} are kept" in report.warnings
    article = next(p.article for p in report.published if p.article.slug == "many-tags")
    assert article.tags == tuple(f"tag {n}" for n in range(MAX_TAGS))
    assert (site.output_dir / "tags" / f"tag-{MAX_TAGS - 1}" / "feed.xml").is_file()
    assert not (site.output_dir / "tags" / f"tag-{MAX_TAGS}").exists()


# 4. Concurrent and killed builds

def lock_is_held(site_dir: Path) -> bool:
    import fcntl

    path = site_dir / "state" / "build.lock"
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_two_builds_at_once_take_turns_and_both_succeed(site_dir, tmp_path):
    many_articles(site_dir, 200)
    command = [sys.executable, "-m", "feedpub", "build", "--site", str(site_dir)]
    # A third holder keeps the lock until both builds are waiting, so they surely meet.
    holder = BuildLock(site_dir / "state").__enter__()
    logs = [tmp_path / "first.err", tmp_path / "second.err"]
    processes = []
    for log in logs:
        with open(log, "w") as err:
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True))
    deadline = time.monotonic() + 120
    while not all("waiting" in log.read_text() for log in logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    holder.__exit__(None, None, None)
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    errors = [log.read_text() for log in logs]

    assert [p.returncode for p in processes] == [0, 0], (outputs, errors)
    for out, err in zip(outputs, errors):
        assert "Traceback" not in err and "database is locked" not in err
        assert err.count("waiting for the build running in process") == 1, err  # said once, not per retry
        assert "207 articles published" in out
    # One after the other: the second found every article already parsed by the first.
    assert sorted("parsed 208," in out for out in outputs) == [False, True], outputs  # drafts too
    assert any("parsed 0," in out for out in outputs), outputs


def test_a_build_in_the_same_process_waits_for_the_lock(site, site_dir):
    import threading

    lock = BuildLock(site.state_dir)
    lock.__enter__()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (build(site, now=NOW), done.set()))
    worker.start()
    try:
        assert not done.wait(1.0)  # no timing is measured: only that it did not go past the lock
    finally:
        lock.__exit__(None, None, None)
    worker.join(120)
    assert done.is_set()


def children_of(pid: int) -> set[int]:
    """The processes whose parent is PID, and theirs, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}  # a zombie has ended; only its parent's reaping is left


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_build_leaves_no_worker_and_no_temporary_file(site_dir):
    many_articles(site_dir, 400)
    build_process = subprocess.Popen([sys.executable, "-m", "feedpub", "build", "--site", str(site_dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < 2 and build_process.poll() is None and time.monotonic() < deadline:
        seen |= children_of(build_process.pid)  # the workers appear when parsing starts
        time.sleep(0.005)
    assert build_process.poll() is None and seen, "the build ended before its workers were seen"
    os.kill(build_process.pid, signal.SIGKILL)
    build_process.wait()

    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in seen if alive(pid)]
    for pid in left:  # so that a failure here leaves nothing running either
        os.kill(pid, signal.SIGKILL)
    assert not left

    # What a writer killed mid-write leaves behind, old style (beside its output) and new.
    writing = site_dir / "public" / ".writing"
    writing.mkdir(parents=True, exist_ok=True)
    stale = writing / f".feed.xml.{dead_pid()}.x1y2z3.tmp"
    stale.write_bytes(b"<half")
    result = feedpub(site_dir, "build")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert not list((site_dir / "public").rglob("*.tmp"))


def test_temporary_files_left_by_an_older_version_are_swept_once(site, site_dir):
    old = site.output_dir / "guides" / ".index.html.ab12cd34.tmp"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"<half")
    live = site.output_dir / ".writing" / f".feed.json.{os.getpid()}.abcdefgh.tmp"
    build(site, now=NOW)
    assert not old.exists()
    live.write_bytes(b"being written by a live process")
    build(site, now=NOW)
    assert live.exists()  # its writer, this process, is alive: it may still rename it
