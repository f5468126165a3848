"""Digests: what goes in an issue, how it looks in an email, and when it is composed."""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta
from email import policy
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from feedpub.cli import main
from feedpub.config import load_site
from feedpub.digest import encoded_size
from feedpub.errors import ConfigError
from feedpub.extract import shorten
from feedpub.jobs import compose_digest
from feedpub.schedule import load_schedule
from feedpub.store import Store
from tests.conftest import write_article

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=PARIS)
SAMPLE_LEDE = (
    "Un tremblement de terre secoue l’industrie de l’IA. Igor Babuschkin, cofondateur de xAI, "
    "vient de tourner le dos à l’entreprise d’Elon Musk, laissant derrière lui un vide technique majeur."
)


def squash(text: str) -> str:
    return " ".join(text.split())


def add_digest(site_dir, name: str, body: str) -> None:
    path = site_dir / "schedule.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines()),
                    encoding="utf-8")


@pytest.fixture
def store(site):
    store = Store(site.storage_url)
    yield store
    store.close()


@pytest.fixture
def schedule(site_dir):
    add_digest(site_dir, "xai", "title: Lettre xAI\nlist: xai\ntags: [xAI]")
    return load_schedule(site_dir, "Europe/Paris")


def test_sample_article_lede_key_points_and_two_faq_pairs_in_both_parts(site, schedule, store):
    outcome = compose_digest(site, schedule, "xai", store, now=NOW)
    issue = outcome.issue
    assert [a["slug"] for a in issue.articles] == ["cofondateur-xai-quitte-entreprise"]
    assert issue.subject == "Un cofondateur de xAI (Elon Musk) quitte l’entreprise"
    document = lxml_html.document_fromstring(issue.html)
    html_text = squash(document.text_content())
    text = squash(issue.text)
    points = [
        "Des réunions de plus en plus houleuses entre les dirigeants",
        "Des visions divergentes sur l’éthique de l’IA",
        "Un manque d’alignement sur les priorités commerciales",
        "Des conflits récurrents sur l’allocation des ressources",
    ]
    faq = [
        ("Qu’est-ce que xAI ?",
         "xAI est la société d’intelligence artificielle fondée par Elon Musk en 2023, visant à développer "
         "des modèles IA avancés et à concurrencer des acteurs comme OpenAI, Google DeepMind et Anthropic."),
        ("Pourquoi Igor Babuschkin quitte xAI ?",
         "Le départ d’Igor Babuschkin, figure clé et cofondateur de xAI, pourrait être lié à des divergences "
         "stratégiques avec la direction, à des choix technologiques ou à une volonté de poursuivre d’autres "
         "projets dans le domaine de l’IA."),
    ]
    for part in (html_text, text):
        assert SAMPLE_LEDE in part
        for point in points:
            assert point in part
        for question, answer in faq:
            assert question in part and answer in part
        assert "Pourquoi ce départ est-il important ?" not in part  # only the first two questions
    assert [li.text_content() for li in document.find_class("key-points")[0].findall("li")] == points
    assert max(len(line) for line in issue.text.splitlines() if "://" not in line) <= 72


def test_every_styled_element_is_inlined_and_media_rules_survive(site, schedule, store):
    issue = compose_digest(site, schedule, "weekly", store, now=NOW).issue
    document = lxml_html.document_fromstring(issue.html)
    classed = document.xpath("//*[@class]")
    assert len(classed) > 20
    for element in classed:
        assert element.get("style"), lxml_html.tostring(element)[:120]
    style = document.find(".//head/style").text
    assert "@media only screen and (max-width: 620px)" in style
    assert "width: 100% !important" in style
    assert "@media (prefers-color-scheme: dark)" in style
    assert 'name="color-scheme" content="light dark"' in issue.html
    lowered = issue.html.lower()
    assert "<script" not in lowered and "<link" not in lowered
    assert "@import" not in lowered and "@font-face" not in lowered and "url(" not in lowered
    assert document.get("lang") == "fr"
    assert all(img.get("alt") for img in document.iter("img"))
    assert document.xpath("//table[@width='600']")
    preheader = document.xpath("//body/div")[0]
    assert "display:none" in preheader.get("style")
    assert preheader.text_content().startswith("Il y a dix ans, on nous promettait la fin de l’e-mail.")
    assert max(len(line) for line in issue.html.splitlines()) < 998


def test_preview_writes_html_text_and_eml_and_changes_no_state(site, schedule, store):
    outcome = compose_digest(site, schedule, "weekly", store, now=NOW, preview=True)
    assert [p.name for p in outcome.preview_files] == ["issue.html", "issue.txt", "issue.eml"]
    assert store.issues() == [] and store.last_window("weekly") is None
    message = email.message_from_bytes(outcome.preview_files[2].read_bytes(), policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "IA-insights — la semaine du 30 novembre 2026"
    assert "=?utf-8?" in outcome.preview_files[2].read_text(encoding="ascii")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part = message.get_body(("html",)).get_content()
    assert "http://127.0.0.1:8080/unsubscribe?token=preview" in html_part
    assert "FEEDPUB" not in html_part and "FEEDPUB" not in message.get_body(("plain",)).get_content()
    # After an issue, with nothing new, a preview still shows the latest articles, and says so.
    compose_digest(site, schedule, "weekly", store, now=NOW)
    again = compose_digest(site, schedule, "weekly", store, now=NOW + timedelta(hours=1), preview=True)
    assert again.message.endswith("(nothing new since the last issue: these are the latest articles)")
    assert len(again.composition.articles) == 7 and len(store.issues()) == 1


def test_watermark_rules(site, site_dir, schedule, store):
    # First issue of a new digest: what was already published, capped by max_articles.
    add_digest(site_dir, "short", "title: Short\nmax_articles: 3")
    schedule = load_schedule(site_dir, "Europe/Paris")
    first = compose_digest(site, schedule, "short", store, now=NOW).issue
    assert [a["slug"] for a in first.articles] == ["dix-ans-de-lettre", "lire-un-flux", "rate-limits-in-practice"]
    # Nothing new: no issue, and a sentence that says so.
    later = NOW + timedelta(hours=1)
    outcome = compose_digest(site, schedule, "short", store, now=later)
    assert outcome.issue is None and "no new article" in outcome.message
    # An edited article is not new again.
    path = site_dir / "content" / "why-feeds-still-matter.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nOne more paragraph.\n", encoding="utf-8")
    assert compose_digest(site, schedule, "short", store, now=later + timedelta(hours=1)).issue is None
    # An article added today with an old date is new.
    write_article(site_dir, "old-news.md", "title: Old news\ndate: 2020-01-01")
    third = compose_digest(site, schedule, "short", store, now=later + timedelta(hours=2)).issue
    assert [a["slug"] for a in third.articles] == ["old-news"]
    assert third.subject == "Old news"
    assert [i.slug for i in store.issues("short")] == ["2026-11-30-2", "2026-11-30"]


def test_an_issue_is_archived_and_linked_from_the_email(site, schedule, store):
    issue = compose_digest(site, schedule, "weekly", store, now=NOW).issue
    page = site.output_dir / "archive" / "weekly" / issue.slug / "index.html"
    assert page.is_file()
    assert f'href="{site.url("archive/weekly/" + issue.slug + "/")}"' in issue.html
    public = page.read_text(encoding="utf-8")
    assert "FEEDPUB" not in public
    index = (site.output_dir / "archive" / "weekly" / "index.html").read_text(encoding="utf-8")
    assert issue.subject in index and f"archive/weekly/{issue.slug}/" in index


def test_a_ten_article_issue_stays_under_gmail_clipping(site, site_dir, store):
    sample = (site_dir / "content" / "cofondateur-xai-quitte-entreprise.md").read_text(encoding="utf-8")
    for index in range(12):
        text = sample.replace("title: \"", f"title: \"{index} — ").replace("2025-08-14", f"2026-11-{index + 1:02d}")
        (site_dir / "content" / f"copy-{index}.md").write_text(text, encoding="utf-8")
    schedule = load_schedule(site_dir, "Europe/Paris")
    issue = compose_digest(site, schedule, "daily", store, now=NOW).issue
    assert len(issue.articles) == 10
    assert encoded_size(issue.html) <= 100_000


def test_excerpts_shrink_rather_than_get_clipped(site_dir, tmp_path):
    full_site = load_site(site_dir)
    full_store = Store(f"sqlite:///{tmp_path / 'full.sqlite'}")
    full = compose_digest(full_site, load_schedule(site_dir, "Europe/Paris"), "weekly", full_store,
                          now=NOW, preview=True).composition
    full_store.close()
    assert encoded_size(full.html) > 16000
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8") + "email:\n  max_html_bytes: 16000\n", encoding="utf-8")
    site = load_site(site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(site_dir, "Europe/Paris")
    issue = compose_digest(site, schedule, "weekly", store, now=NOW).issue
    store.close()
    assert encoded_size(issue.html) <= 16000
    assert len(issue.articles) == 7
    assert issue.html.count('class="faq-question"') < full.html.count('class="faq-question"')


def test_operator_templates_win_and_missing_ones_fall_back(site_dir):
    (site_dir / "templates" / "_faq.html.j2").write_text("<p class=\"faq-question\">OUR FAQ</p>\n", encoding="utf-8")
    (site_dir / "templates" / "_summary.html.j2").unlink()  # the shipped one serves
    site = load_site(site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(site_dir, "Europe/Paris")
    issue = compose_digest(site, schedule, "weekly", store, now=NOW).issue
    store.close()
    assert "OUR FAQ" in issue.html and "Questions fréquentes" not in issue.html
    assert 'class="summary"' in issue.html


def test_english_site_dates_and_words(site_dir):
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("language: fr", "language: en-GB"),
                        encoding="utf-8")
    site = load_site(site_dir)
    store = Store(site.storage_url)
    schedule = load_schedule(site_dir, "Europe/Paris")
    issue = compose_digest(site, schedule, "daily", store, now=NOW).issue
    store.close()
    assert "30 November 2026" in issue.html
    assert "Read more" in issue.html and "Lire la suite" not in issue.html
    assert "Read more: http://" in issue.text
    assert 'lang="en-GB"' in issue.html


def test_subject_is_one_line(site, site_dir, store):
    write_article(site_dir, "inject.md", 'title: "Hello\\r\\nBcc: someone@example.org"\ndate: 2026-11-29')
    (site_dir / "schedule.yaml").write_text(
        "timezone: Europe/Paris\ndigests:\n  solo:\n    title: Solo\n    max_articles: 1\n", encoding="utf-8")
    schedule = load_schedule(site_dir, "Europe/Paris")
    issue = compose_digest(site, schedule, "solo", store, now=NOW).issue
    assert issue.subject == "Hello Bcc: someone@example.org"


def test_cli_digest_twice_says_there_is_nothing_new(site_dir):
    runner = CliRunner()
    first = runner.invoke(main, ["digest", "weekly", "--site", str(site_dir)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "weekly: issue " in first.output and "composed with 7 articles" in first.output
    second = runner.invoke(main, ["digest", "weekly", "--site", str(site_dir)], catch_exceptions=False)
    assert second.exit_code == 0
    assert re.search(r"weekly: no new article since \d{4}-\d\d-\d\d \d\d:\d\d; no issue composed", second.output)
    unknown = runner.invoke(main, ["digest", "monthly", "--site", str(site_dir)])
    assert unknown.exit_code == 1
    assert unknown.output == "Error: schedule.yaml: digests: no digest named 'monthly' (known: daily, weekly)\n"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("cron: mon 9h", "schedule.yaml: digests.bad.cron: 'mon 9h' is not a cron expression (minute hour day month weekday)"),
        ("cron: '61 * * * *'", "schedule.yaml: digests.bad.cron: '61 * * * *' is not a cron expression (minute hour day month weekday)"),
        ("max_articles: 0", "schedule.yaml: digests.bad.max_articles: 0 is below the minimum of 1"),
        ("skip_if_empty: sometimes", "schedule.yaml: digests.bad.skip_if_empty: 'sometimes' is not true or false"),
        ("colour: blue", "schedule.yaml: digests.bad.colour: unknown setting"),
    ],
)
def test_bad_digest_entries_name_the_key(site_dir, entry, message):
    add_digest(site_dir, "bad", entry)
    with pytest.raises(ConfigError) as caught:
        load_schedule(site_dir, "Europe/Paris")
    assert str(caught.value) == message


def test_shorten_is_what_faq_answers_use():
    assert shorten("Une phrase. Une autre phrase bien plus longue.", 15) == "Une phrase."
