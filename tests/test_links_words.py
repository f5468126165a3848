"""Plural forms in messages and digests, and warnings about the site's language."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.jobs import compose_digest
from feedpub.languages import language_warnings, plural
from feedpub.schedule import load_schedule
from feedpub.store import Store
from feedpub.templating import words
from tests.conftest import write_article

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def set_language(site_dir, language: str) -> None:
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("language: fr", f"language: {language}"),
                        encoding="utf-8")


def only_articles(site_dir, n: int) -> None:
    for path in (site_dir / "content").rglob("*.md"):
        path.unlink()
    for i in range(n):
        write_article(site_dir, f"a{i}.md", f"title: Article {i}\ndate: 2026-11-2{i}")


@pytest.mark.parametrize("language, expected", [
    ("en", ["0 new articles", "1 new article", "2 new articles"]),
    ("fr", ["0 nouvel article", "1 nouvel article", "2 nouveaux articles"]),
])
def test_digest_words_take_the_languages_plural_forms(site_dir, language, expected):
    vocabulary = words(site_dir / "templates", language)
    got = [plural(n, vocabulary["one_article"], vocabulary["articles_count"], language) for n in (0, 1, 2)]
    assert got == expected


@pytest.mark.parametrize("n, said", [(0, "0 articles published"), (1, "1 article published"),
                                     (2, "2 articles published")])
def test_build_counts_are_grammatical(site_dir, n, said):
    only_articles(site_dir, n)
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 0, result.output
    assert f"{said}; parsed {n}, " in result.output
    assert "wrote 1 files" not in result.output


@pytest.mark.parametrize("language, label", [("fr", "1 nouvel article"), ("en", "1 new article")])
def test_digest_of_one_article_says_so(site_dir, language, label):
    only_articles(site_dir, 1)
    set_language(site_dir, language)
    site = load_site(site_dir)
    store = Store(site.storage_url)
    try:
        issue = compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "daily", store, now=NOW).issue
    finally:
        store.close()
    assert label in issue.text and label in issue.html
    assert "1 new articles" not in issue.text and "1 nouveaux" not in issue.text


def test_unknown_language_warns_and_uses_english_words(site_dir):
    set_language(site_dir, "xx")
    site = load_site(site_dir)
    warning = "feedpub.yaml: language: 'xx' is not a language babel knows; English words are used"
    assert language_warnings(site) == [warning]
    assert words(site.templates_dir, site.language)["read_more"] == "Read more"
    result = run("check", "--site", str(site_dir))
    assert f"warning: {warning}\n" in result.output
    result = run("build", "--site", str(site_dir))
    assert f"warning: {warning}\n" in result.output


def test_language_without_words_warns_and_keeps_its_dates(site_dir):
    set_language(site_dir, "de")
    site = load_site(site_dir)
    [warning] = language_warnings(site)
    assert warning.startswith("feedpub.yaml: language: 'de' (German) has no i18n/de.yaml")
    assert "words fall back to English" in warning
    assert f"warning: {warning}\n" in run("check", "--site", str(site_dir)).output
    store = Store(site.storage_url)
    try:
        issue = compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "daily", store, now=NOW).issue
    finally:
        store.close()
    assert "30. November 2026" in issue.html
    assert "Read more" in issue.html


def test_known_languages_with_words_do_not_warn(site_dir):
    assert language_warnings(load_site(site_dir)) == []  # fr
    set_language(site_dir, "en-GB")
    assert language_warnings(load_site(site_dir)) == []


def test_missing_images_are_reported_with_their_line(site_dir):
    (site_dir / "content" / "pics").mkdir()
    (site_dir / "content" / "pics" / "here.png").write_bytes(b"\x89PNG")
    write_article(site_dir, "a.md", "title: A\ndate: 2026-11-20\nimage: images/cover.png",
                  "Intro.\n\n![there](pics/here.png) and ![x](images/nope.png \"t\")\n\n"
                  "```\n![in code](not/checked.png)\n```\n![remote](https://example.org/x.png)\n"
                  "![outside](../../etc/passwd.png)\n")
    expected = ["warning: content/a.md:4: image images/cover.png: file not found\n",
                "warning: content/a.md:9: image images/nope.png: file not found\n",
                "warning: content/a.md:15: image ../../etc/passwd.png: file not found\n"]
    for command in ("check", "build"):
        output = run(command, "--site", str(site_dir)).output
        assert [line for line in output.splitlines(keepends=True) if "image " in line] == expected


def linked_site(site_dir):
    only_articles(site_dir, 0)
    write_article(site_dir, "first.md", "title: First\ndate: 2026-11-20",
                  "Read [the next part](second.md#details), [a guide](guides/%C3%A9t%C3%A9.md),\n"
                  "[elsewhere](https://example.org/x.md), [mail](mailto:a@example.org) and [top](#top).\n")
    write_article(site_dir, "second.md", "title: Second\ndate: 2026-11-21",
                  "## Details\n\nSee [the first](./first.md) and [nothing](missing.md).\n")
    write_article(site_dir, "guides/été.md", "title: Summer\ndate: 2026-11-22\nslug: summer",
                  "Back to [the start](../first.md).\n")
    return load_site(site_dir)


def test_links_between_articles_become_permalinks_in_pages_and_feeds(site_dir):
    import feedparser
    import json

    site = linked_site(site_dir)
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 0, result.output
    base = site.base_url
    page = (site.output_dir / "first" / "index.html").read_text(encoding="utf-8")
    assert f'href="{base}second/#details"' in page and f'href="{base}summer/"' in page
    assert 'href="https://example.org/x.md"' in page and 'href="mailto:a@example.org"' in page
    assert ".md#details" not in page and "%C3%A9t%C3%A9.md" not in page
    summer = (site.output_dir / "summer" / "index.html").read_text(encoding="utf-8")
    assert f'href="{base}first/"' in summer
    rss = feedparser.parse((site.output_dir / "feed.xml").read_bytes())
    first = next(e for e in rss.entries if e.title == "First")
    assert f'href="{base}second/#details"' in first.content[0].value
    feed = json.loads((site.output_dir / "feed.json").read_text(encoding="utf-8"))
    item = next(i for i in feed["items"] if i["title"] == "First")
    assert f'href="{base}summer/"' in item["content_html"]
    store = Store(site.storage_url)
    try:
        outcome = compose_digest(site, load_schedule(site_dir, "Europe/Paris"), "daily", store, preview=True)
    finally:
        store.close()
    mail = outcome.preview_files[0].read_text(encoding="utf-8")
    # A digest shows summaries and key points as text, never the body's links.
    assert "Read the next part" in mail and ".md" not in mail


def test_a_link_to_no_article_is_reported_by_check_and_build(site_dir):
    linked_site(site_dir)
    write_article(site_dir, "draft.md", "title: D\ndate: 2026-11-20\ndraft: true", "Text.\n")
    write_article(site_dir, "third.md", "title: Third\ndate: 2026-11-20",
                  "Line one.\n\nA [draft](draft.md) and [out](../../outside.md).\n")
    expected = ["warning: content/second.md:8: link to missing.md: no such article\n",
                "warning: content/third.md:8: link to ../../outside.md: no such article\n",
                "warning: content/third.md:8: link to draft.md: no such article\n"]
    for command in ("check", "build"):
        output = run(command, "--site", str(site_dir)).output
        assert sorted(line for line in output.splitlines(keepends=True) if "link to" in line) == expected


def test_a_renamed_target_is_followed_on_the_next_build(site_dir):
    site = linked_site(site_dir)
    assert run("build", "--site", str(site_dir)).exit_code == 0
    second = site_dir / "content" / "second.md"
    second.write_text(second.read_text(encoding="utf-8").replace("title: Second", "title: Second\nslug: part-two"),
                      encoding="utf-8")
    result = run("build", "--site", str(site_dir))
    assert result.exit_code == 0, result.output
    page = (site.output_dir / "first" / "index.html").read_text(encoding="utf-8")
    assert f'href="{site.base_url}part-two/#details"' in page
    (site_dir / "content" / "second.md").rename(site_dir / "content" / "deuxieme.md")
    output = run("build", "--site", str(site_dir)).output
    assert "warning: content/first.md:6: link to second.md#details: no such article\n" in output
    page = (site.output_dir / "first" / "index.html").read_text(encoding="utf-8")
    assert "part-two/" not in page  # the link no longer names an article: it is left as written


def test_templates_have_a_plural_filter(site_dir):
    from feedpub.templating import environment

    template = environment(site_dir / "templates").from_string(
        '{{ n | plural("{count} item", "{count} items", lang) }}')
    assert [template.render(n=n, lang="fr") for n in (0, 1, 2)] == ["0 item", "1 item", "2 items"]
    assert [template.render(n=n, lang="en") for n in (0, 1, 2)] == ["0 items", "1 item", "2 items"]


def test_subscribers_list_counts_in_words(site_dir):
    assert run("subscribers", "list", "--site", str(site_dir)).output.endswith("0 subscribers\n")
