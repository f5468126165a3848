"""The build end to end: example site in, feeds and pages out, parsed back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import feedparser
import pytest

from feedpub.build import build
from feedpub.config import load_site
from tests.conftest import write_article

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=PARIS)
FEEDS = ["feed.xml", "atom.xml"]


def local_file(site, url: str) -> Path:
    """The file in the output folder that serves URL."""
    assert url.startswith(site.base_url), url
    path = urlsplit(url).path.lstrip("/")
    target = site.output_dir / path
    return target / "index.html" if path == "" or path.endswith("/") else target


@pytest.mark.parametrize("name", FEEDS)
def test_feeds_parse_cleanly_with_every_article_newest_first(site, name):
    report = build(site, now=NOW)
    assert report.errors == []
    parsed = feedparser.parse((site.output_dir / name).read_bytes())
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.feed.title == "IA-insights"
    assert parsed.feed.language == "fr"
    self_links = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_links == [site.url(name)]
    titles = [entry.title for entry in parsed.entries]
    assert "Next steps for the archive (draft)" not in titles
    assert titles[0] == "Dix ans de lettre d’information : carnet de bord 📬"
    assert titles[-1] == "Un cofondateur de xAI (Elon Musk) quitte l’entreprise"
    assert len(titles) == 7
    dates = [entry.published_parsed for entry in parsed.entries]
    assert dates == sorted(dates, reverse=True)
    for entry in parsed.entries:
        assert entry.id.startswith("tag:127.0.0.1,")
        assert local_file(site, entry.link).is_file()
        assert entry.summary
        assert entry.content[0].value
        assert entry.tags


def test_feed_items_carry_tags_author_dates_and_full_content(site):
    build(site, now=NOW)
    atom = feedparser.parse((site.output_dir / "atom.xml").read_bytes())
    entry = next(e for e in atom.entries if e.title.startswith("Rate limits"))
    assert [t.term for t in entry.tags] == ["Email", "Engineering"]
    assert entry.author == "Ada Lindqvist"
    assert entry.published == "2026-11-12T09:00:00+01:00"
    assert entry.updated == "2026-11-14T17:45:00+01:00"
    assert "class TokenBucket" in entry.content[0].value
    rss = feedparser.parse((site.output_dir / "feed.xml").read_bytes())
    rss_entry = next(e for e in rss.entries if e.title.startswith("Rate limits"))
    assert rss_entry.id == entry.id
    assert rss_entry.guidislink is False
    assert rss_entry.author == "Ada Lindqvist"


def test_json_feed(site):
    build(site, now=NOW)
    feed = json.loads((site.output_dir / "feed.json").read_text(encoding="utf-8"))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == site.url("feed.json")
    assert feed["language"] == "fr"
    assert len(feed["items"]) == 7
    first = feed["items"][0]
    assert {"id", "url", "title", "content_html", "summary", "date_published", "date_modified"} <= set(first)
    assert local_file(site, first["url"]).is_file()


def test_tag_feeds_and_pages(site):
    build(site, now=NOW)
    folder = site.output_dir / "tags" / "ethique"
    assert {p.name for p in folder.iterdir()} == {"feed.xml", "atom.xml", "feed.json", "index.html"}
    parsed = feedparser.parse((folder / "feed.xml").read_bytes())
    assert parsed.bozo == 0
    assert parsed.feed.title == "IA-insights — Éthique"
    assert {e.title for e in parsed.entries} == {
        "« Écrire sans listes » : l’art du paragraphe",
        "Un cofondateur de xAI (Elon Musk) quitte l’entreprise",
    }
    assert [link.href for link in parsed.feed.links if link.rel == "self"] == [site.url("tags/ethique/feed.xml")]


def test_pages_discover_their_feeds(site):
    build(site, now=NOW)
    home = (site.output_dir / "index.html").read_text(encoding="utf-8")
    page = (site.output_dir / "cofondateur-xai-quitte-entreprise" / "index.html").read_text(encoding="utf-8")
    tag = (site.output_dir / "tags" / "grok" / "index.html").read_text(encoding="utf-8")
    for html in (home, page):
        assert f'<link rel="alternate" type="application/rss+xml" title="IA-insights (RSS)" href="{site.url("feed.xml")}">' in html
        assert 'type="application/atom+xml"' in html and 'type="application/feed+json"' in html
    assert site.url("tags/grok/feed.xml") in tag
    assert '<html lang="fr">' in page
    assert "14 août 2025" in page


def test_items_are_capped(site_dir):
    text = (site_dir / "feedpub.yaml").read_text(encoding="utf-8").replace("items: 20", "items: 3")
    (site_dir / "feedpub.yaml").write_text(text, encoding="utf-8")
    site = load_site(site_dir)
    build(site, now=NOW)
    assert len(feedparser.parse((site.output_dir / "atom.xml").read_bytes()).entries) == 3
    assert len(json.loads((site.output_dir / "feed.json").read_bytes())["items"]) == 3


def test_untrusted_html_is_sanitized_everywhere(site, site_dir):
    write_article(
        site_dir,
        "evil.md",
        'title: "Tags <b>bold</b> & <script>alert(1)</script>"\ndate: 2026-11-29',
        '<script>alert("x")</script>\n\n<p onclick="steal()">Click</p>\n\n'
        '<iframe src="https://evil.example"></iframe>\n\n<style>body{}</style>\n\n'
        '[link](javascript:alert(1)) and <a href="JaVaScRiPt:alert(2)">two</a>\n\n![img](pic.png)\n',
    )
    build(site, now=NOW)
    feed = json.loads((site.output_dir / "feed.json").read_bytes())
    bodies = [item["content_html"] for item in feed["items"]]
    for name in ("feed.xml", "atom.xml", "evil/index.html"):
        # Titles are text: escaped once in XML, so a raw tag never appears.
        bodies.append((site.output_dir / name).read_text(encoding="utf-8"))
    for text in bodies:
        text = text.lower()
        assert "<script" not in text and "<iframe" not in text and "<style>body" not in text
        assert "onclick" not in text and "javascript:" not in text and "alert(" not in text.replace("&lt;script&gt;alert(1)", "")
    atom = feedparser.parse((site.output_dir / "atom.xml").read_bytes())
    entry = next(e for e in atom.entries if "bold" in e.title)
    # Markup in a title is reduced to its words; a script's text goes with it.
    assert entry.title == "Tags bold &"
    assert 'src="http://127.0.0.1:8080/pic.png"' in entry.content[0].value


def test_drafts_never_publish_and_future_articles_wait_for_their_date(site, site_dir):
    write_article(site_dir, "later.md", "title: Later\ndate: 2026-12-05T08:00:00+01:00")
    build(site, now=NOW)
    assert not (site.output_dir / "later").exists()
    assert not (site.output_dir / "draft-next-steps").exists()
    report = build(site, now=datetime(2026, 12, 5, 8, 1, tzinfo=PARIS))
    assert (site.output_dir / "later" / "index.html").is_file()
    assert feedparser.parse((site.output_dir / "feed.xml").read_bytes()).entries[0].title == "Later"
    assert {p.article.slug: p.first_published for p in report.published}["later"] == datetime(
        2026, 12, 5, 8, 1, tzinfo=PARIS
    )


def test_edited_article_keeps_its_id_and_gets_a_new_updated_date(site):
    first = build(site, now=NOW)
    before = {p.article.slug: p for p in first.published}["why-feeds-still-matter"]
    path = site.content_dir / "why-feeds-still-matter.md"
    path.write_text(path.read_text(encoding="utf-8").replace("Every few years", "Every year or so"), encoding="utf-8")
    later = NOW + timedelta(days=1)
    second = build(site, now=later)
    after = {p.article.slug: p for p in second.published}["why-feeds-still-matter"]
    assert after.id == before.id
    assert after.first_published == before.first_published
    assert after.updated == later > before.updated
    atom = feedparser.parse((site.output_dir / "atom.xml").read_bytes())
    entry = next(e for e in atom.entries if e.id == before.id)
    assert entry.updated == later.isoformat()
    assert entry.published == "2026-09-02T08:00:00+00:00"


def test_naive_dates_are_read_in_the_site_time_zone(site):
    report = build(site, now=NOW)
    article = {p.article.slug: p.article for p in report.published}["ecrire-sans-listes"]
    assert article.date == datetime(2026, 10, 5, 10, 15, tzinfo=PARIS)
    assert article.date.utcoffset() == timedelta(hours=2)


def test_second_build_parses_nothing_and_rewrites_nothing(site):
    first = build(site, now=NOW)
    assert first.parsed == 8
    files = sorted(p for p in site.output_dir.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    second = build(site, now=NOW + timedelta(hours=1))
    assert second.parsed == 0
    assert second.written == []
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert not [p for p in site.output_dir.rglob("*.tmp")]


def test_adding_one_article_parses_it_alone_and_leaves_other_pages_alone(site, site_dir):
    build(site, now=NOW)
    other = site.output_dir / "why-feeds-still-matter" / "index.html"
    stamp = other.stat().st_mtime_ns
    write_article(site_dir, "fresh.md", "title: Fresh news\ndate: 2026-11-30T09:00:00+01:00\ntags: [Grok]")
    report = build(site, now=NOW)
    assert report.parsed == 1
    assert other.stat().st_mtime_ns == stamp
    assert "fresh/index.html" in report.written
    assert {"feed.xml", "atom.xml", "feed.json", "index.html", "tags/grok/feed.xml"} <= set(report.written)
    assert "tags/ethique/feed.xml" not in report.written


def test_removed_article_loses_its_page(site):
    build(site, now=NOW)
    (site.content_dir / "why-feeds-still-matter.md").unlink()
    report = build(site, now=NOW)
    assert "why-feeds-still-matter/index.html" in report.removed
    assert not (site.output_dir / "why-feeds-still-matter").exists()


def test_a_deleted_output_is_written_again(site):
    build(site, now=NOW)
    (site.output_dir / "feed.xml").unlink()
    report = build(site, now=NOW)
    assert report.written == ["feed.xml"]


def test_bad_articles_are_reported_and_the_others_publish(site, site_dir):
    build(site, now=NOW - timedelta(days=1))  # the original article owns its slug first
    write_article(site_dir, "broken.md", "title: Broken\ndate: [2026-11-01")
    write_article(site_dir, "nodate.md", "title: No date")
    write_article(site_dir, "baddate.md", "title: Bad date\nauthor: Me\ndate: 2026-02-30")
    write_article(site_dir, "taken.md", "title: Taken\ndate: 2026-11-01\nslug: Why feeds still matter")
    (site_dir / "content" / "latin1.md").write_bytes(b"---\ntitle: Caf\xe9\ndate: 2026-11-01\n---\n")
    (site_dir / "content" / "nofront.md").write_text("Just text\n", encoding="utf-8")
    write_article(site_dir, "a-taken.md", "title: Taken too\ndate: 2026-11-01\nslug: why-feeds-still-matter")
    report = build(site, now=NOW)
    assert report.errors == [
        "content/a-taken.md:1: slug 'why-feeds-still-matter' is already taken by content/why-feeds-still-matter.md",
        "content/baddate.md:4: date: '2026-02-30' is not a date (write 2026-11-30 or 2026-11-30T09:00:00+01:00)",
        "content/broken.md:3: front matter is not valid YAML: did not find expected ',' or ']'",
        "content/latin1.md:2: byte 0xe9 is not UTF-8 text",
        "content/nodate.md:1: date: is required",
        "content/nofront.md:1: no front matter: the file must start with a line '---'",
        "content/taken.md:1: slug 'why-feeds-still-matter' is already taken by content/why-feeds-still-matter.md",
    ]
    assert len(report.published) == 7
    titles = [e.title for e in feedparser.parse((site.output_dir / "atom.xml").read_bytes()).entries]
    assert "Why feeds still matter in 2026" in titles and "Taken" not in titles


def test_unknown_front_matter_keys_are_warnings(site, site_dir):
    write_article(site_dir, "extra.md", "title: Extra\ndate: 2026-11-01\ncategory: news\nsubtitle: x")
    report = build(site, now=NOW)
    assert report.warnings == [
        "content/extra.md:4: unknown key 'category' (ignored)",
        "content/extra.md:5: unknown key 'subtitle' (ignored)",
    ]
    assert "extra" in {p.article.slug for p in report.published}


def test_slugs_are_ascii_and_stable(site, site_dir):
    write_article(site_dir, "Été 2026 — Œuvres & IA.md", "title: Été\ndate: 2026-11-01\ntags: [Société, 'C++']")
    report = build(site, now=NOW)
    slugs = {p.article.slug for p in report.published}
    assert "ete-2026-oeuvres-ia" in slugs
    assert (site.output_dir / "tags" / "societe" / "feed.xml").is_file()
    assert (site.output_dir / "tags" / "c" / "feed.xml").is_file()


def test_articles_dated_by_day_keep_distinct_updated_times(site, site_dir):
    for name in ("same-a", "same-b", "same-c"):
        write_article(site_dir, f"{name}.md", f"title: {name}\ndate: 2026-11-29")
    build(site, now=NOW)
    atom = feedparser.parse((site.output_dir / "atom.xml").read_bytes())
    stamps = [e.updated for e in atom.entries]
    assert len(stamps) == len(set(stamps))
    assert sorted(e.updated for e in atom.entries if e.title.startswith("same-"))[-1] == "2026-11-29T00:00:00+01:00"


def test_tags_that_differ_only_in_case_are_one_tag(site, site_dir):
    path = site_dir / "content" / "crlf.md"
    path.write_bytes(b"---\r\ntitle: Windows lines\r\ndate: 2026-11-20 10:00:00 +01:00\r\n"
                     b"tags: [IA, ia, Ia]\r\n---\r\n\r\nFirst paragraph here.\r\n\r\n- one\r\n- two\r\n")
    report = build(site, now=NOW)
    article = {p.article.slug: p.article for p in report.published}["crlf"]
    assert article.tags == ("IA",)
    assert article.summary == "First paragraph here."
    entries = feedparser.parse((site.output_dir / "tags" / "ia" / "atom.xml").read_bytes()).entries
    assert [e.title for e in entries] == ["Windows lines"]


def test_a_content_file_that_would_replace_a_generated_one_is_reported(site, site_dir):
    (site_dir / "content" / "feed.xml").write_text("<rss/>", encoding="utf-8")
    report = build(site, now=NOW)
    assert report.errors == ["content/feed.xml:1: the site writes feed.xml itself; rename or move this file"]
    assert feedparser.parse((site.output_dir / "feed.xml").read_bytes()).feed.title == "IA-insights"
