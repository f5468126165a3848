"""Digests: choose the new articles, render them as an email, inline its CSS once.

The personal parts of a message (the unsubscribe link, the reader's name)
are left as placeholders, filled in per subscriber by `personalize`, so that
rendering and inlining happen once per issue, never once per reader.
"""

from __future__ import annotations

import binascii
import html as html_lib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .config import Site
from .content import Article, slugify
from .extract import Question, shorten
from .errors import ConfigError, TemplateError
from .languages import plural
from .schedule import SCHEDULE_FILE, Digest
from .templating import long_date, render, site_environment, text_environment, words

if TYPE_CHECKING:
    from .build import Published

# Placeholders survive Jinja, premailer and quoted-printable unchanged: ASCII letters only.
PERSONAL = {"unsubscribe_url": "FEEDPUBUNSUBSCRIBEURL", "name": "FEEDPUBNAME"}
PREHEADER_LENGTH = 140
_BREAK_BEFORE = re.compile(r"(?<!\n)(?=<(?:tr|td|p|li|ul|h2|table|div|img|meta|style|title)[\s>])")


@dataclass(frozen=True)
class Excerpt:
    """How much of each article a digest shows."""

    summary: int
    key_points: int
    faq: int
    answer: int


def excerpt_levels(faq_questions: int) -> list[Excerpt]:
    """From generous to terse: an issue that would be clipped by Gmail takes the next one."""
    return [
        Excerpt(summary=400, key_points=5, faq=faq_questions, answer=260),
        Excerpt(summary=300, key_points=4, faq=faq_questions, answer=160),
        Excerpt(summary=240, key_points=3, faq=min(faq_questions, 1), answer=120),
        Excerpt(summary=180, key_points=3, faq=0, answer=0),
        Excerpt(summary=140, key_points=0, faq=0, answer=0),
        Excerpt(summary=0, key_points=0, faq=0, answer=0),
    ]


@dataclass(frozen=True)
class DigestItem:
    """An article as one digest shows it."""

    article: Article
    url: str
    summary: str
    key_points: tuple[str, ...]
    faq: tuple[Question, ...]


@dataclass(frozen=True)
class Composition:
    subject: str
    preheader: str
    html: str  # CSS inlined; PERSONAL placeholders left in
    text: str
    articles: list[Article]
    timings: dict[str, float] = field(default_factory=dict)  # seconds spent in each step


def matches_tags(article_tags: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """True when a digest with tags filter WANTED takes an article with ARTICLE_TAGS."""
    if not wanted:
        return True
    return bool({slugify(t) for t in article_tags} & {slugify(t) for t in wanted})


def select(published: list[Published], digest: Digest, since: datetime | None,
           until: datetime) -> list[Published]:
    """The articles first published in (SINCE, UNTIL], newest first, at most max_articles.

    New means first published, not dated: an article edited later is not new
    again, and one added today with an old date is.
    """
    chosen = [
        p for p in published
        if (since is None or p.first_published > since) and p.first_published <= until
        and matches_tags(p.article.tags, digest.tags)
    ]
    return chosen[: digest.max_articles]


def one_line(text: str) -> str:
    """Header-safe text: control characters and line breaks become single spaces."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", text).split())


def _item(site: Site, article: Article, level: Excerpt) -> DigestItem:
    return DigestItem(
        article=article,
        url=site.url(article.path),
        summary=shorten(article.summary, level.summary) if level.summary else "",
        key_points=article.key_points[: level.key_points],
        faq=tuple(Question(q.question, shorten(q.answer, level.answer)) for q in article.faq[: level.faq]),
    )


def subject_for(site: Site, digest: Digest, articles: list[Article], when: datetime) -> str:
    """The issue's Subject as plain text: "Tom & Jerry" stays so; the HTML template escapes it once."""
    if len(articles) == 1:
        return one_line(articles[0].title)
    return subject_template(site, digest, when, len(articles))


def subject_template(site: Site, digest: Digest, when: datetime, count: int) -> str:
    """The digest's `subject:` rendered; a mistake in it is a ConfigError naming the digest."""
    import jinja2

    try:
        template = text_environment(site.templates_dir).from_string(digest.subject)
        return one_line(render(template, dict(site=site, digest=digest, date=long_date(when, site.language),
                                              count=count), site.templates_dir))
    except (jinja2.TemplateSyntaxError, TemplateError) as exc:
        reason = exc.message if isinstance(exc, jinja2.TemplateSyntaxError) else str(exc).partition(": ")[2]
        raise ConfigError(SCHEDULE_FILE, f"digests.{digest.name}.subject", reason) from None


def _fold_long_lines(html: str, limit: int = 900) -> str:
    """Keep every line of the HTML under LIMIT characters, as SMTP requires (998).

    Breaks go before block tags, then at spaces between words: both are
    white space to HTML, and the digest has no <pre>.
    """
    lines = []
    for line in _BREAK_BEFORE.sub("\n", html).split("\n"):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            if cut <= 0:
                break
            lines.append(line[:cut])
            line = line[cut + 1 :]
        lines.append(line)
    return "\n".join(lines)


def encoded_size(html: str) -> int:
    """The size of the HTML part as mailed (quoted-printable), which is what Gmail's
    clipping limit counts: accented text takes up to three times its UTF-8 size."""
    return len(binascii.b2a_qp(html.encode("utf-8"), istext=True))


def inline_css(html: str) -> str:
    """Inline the <style> rules into each element; @media rules stay in <head>."""
    from premailer import Premailer  # 0.2 s to import: only the digest job pays it

    inliner = Premailer(
        html,
        base_url=None,
        allow_network=False,
        disable_link_rewrites=True,
        remove_classes=False,
        keep_style_tags=False,
        strip_important=False,  # the mobile and dark-mode overrides need their !important
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    )
    inlined = inliner.transform(pretty_print=False)
    if not inlined.lstrip().lower().startswith("<!doctype"):
        inlined = "<!DOCTYPE html>\n" + inlined
    return _fold_long_lines(inlined)


def _context(site: Site, digest: Digest, articles: list[Article], level: Excerpt, *, when: datetime,
             browser_url: str, archive_url: str) -> dict:
    """What the digest templates see."""
    vocabulary = words(site.templates_dir, site.language)
    subject = subject_for(site, digest, articles, when)
    first_summary = next((a.summary for a in articles if a.summary), subject)
    count = len(articles)
    return dict(
        site=site,
        digest=digest,
        items=[_item(site, article, level) for article in articles],
        subject=subject,
        preheader=shorten(first_summary, PREHEADER_LENGTH),
        date_label=long_date(when, site.language),
        count_label=plural(count, vocabulary.get("one_article", "{count}"),
                           vocabulary.get("articles_count", "{count}"), site.language),
        words=vocabulary,
        browser_url=browser_url,
        archive_url=archive_url,
        unsubscribe_url=PERSONAL["unsubscribe_url"],
        name=PERSONAL["name"],
    )


def compose(site: Site, digest: Digest, articles: list[Article], *, when: datetime,
            browser_url: str, archive_url: str) -> Composition:
    """Render one issue, shortening the excerpts until its HTML fits under Gmail's clipping size."""
    limit = site.email.max_html_bytes if site.email else 100_000
    env = site_environment(site)
    css = env.loader.get_source(env, "digest.css")[0]
    timings = {"render": 0.0, "inline": 0.0}
    for level in excerpt_levels(digest.faq_questions):
        started = time.perf_counter()
        context = _context(site, digest, articles, level, when=when,
                           browser_url=browser_url, archive_url=archive_url)
        raw_html = render(env.get_template("digest.html.j2"), dict(css=css, **context), site.templates_dir)
        rendered = time.perf_counter()
        html = inline_css(raw_html)
        timings["render"] += rendered - started
        timings["inline"] += time.perf_counter() - rendered
        if encoded_size(html) <= limit:
            break
    started = time.perf_counter()
    text = render(env.get_template("digest.txt.j2"), context, site.templates_dir)
    timings["text"] = time.perf_counter() - started
    return Composition(context["subject"], context["preheader"], html, text, articles, timings)


def personalize(template: str, values: dict[str, str], *, html: bool) -> str:
    """Fill the PERSONAL placeholders of an issue's HTML or text with one reader's values."""
    for key, placeholder in PERSONAL.items():
        value = values.get(key, "")
        template = template.replace(placeholder, html_lib.escape(value) if html else value)
    return template
