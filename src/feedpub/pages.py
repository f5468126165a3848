"""Article pages and the lists of articles (home page, all articles, one tag)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .config import Site
from .content import Article, slugify
from .feeds import FEED_FILES, MEDIA_TYPES
from .templating import render, site_environment, words

ALL_ARTICLES = "articles/"


@dataclass(frozen=True)
class FeedLink:
    """A <link rel="alternate"> that lets browsers and readers discover a feed."""

    title: str
    href: str
    type: str


def feed_links(site: Site, folder: str, title: str) -> list[FeedLink]:
    names = {"rss": "RSS", "atom": "Atom", "json": "JSON Feed"}
    return [
        FeedLink(f"{title} ({names[kind]})", site.url(folder + name), MEDIA_TYPES[kind])
        for kind, name in FEED_FILES.items()
    ]


def render_page(site: Site, template: str, **context) -> bytes:
    env = site_environment(site)
    vocabulary = words(site.templates_dir, site.language)
    return render(env.get_template(template), dict(site=site, words=vocabulary, **context),
                  site.templates_dir).encode()


def article_page(site: Site, article: Article, updated: datetime) -> bytes:
    return render_page(
        site,
        "article.html.j2",
        article=article,
        updated=updated,
        url=site.url(article.path),
        feeds=feed_links(site, "", site.title),
        tag_url=lambda tag: site.url(tag_folder(tag)),
    )


def list_page(site: Site, *, title: str | datetime, folder: str, articles: list[Article],
              feeds_folder: str = "", more: str | None = None, month: bool = False) -> bytes:
    """A page listing ARTICLES; FEEDS_FOLDER is where the feeds it advertises live.

    With MONTH, TITLE is a date in the month the page lists.
    """
    return render_page(
        site,
        "list.html.j2",
        title=title,
        month=month,
        url=site.url(folder),
        articles=articles,
        feeds=feed_links(site, feeds_folder, site.title if month else title),
        more=site.url(more) if more else None,
    )


def archive_page(site: Site, folder: str, months: list[tuple[str, datetime, int]]) -> bytes:
    """The index of the monthly archive pages: (sub-folder, a date in it, article count)."""
    return render_page(
        site,
        "archive.html.j2",
        url=site.url(folder),
        months=[(site.url(folder + sub), moment, count) for sub, moment, count in months],
        feeds=feed_links(site, "", site.title),
    )


def tag_folder(tag: str) -> str:
    return f"tags/{slugify(tag) or 'tag'}/"


def digest_archive_index(site: Site, *, title: str, folder: str, issues: list) -> bytes:
    """The list of a digest's past issues, newest first."""
    return render_page(
        site,
        "digest_archive.html.j2",
        title=title,
        url=site.url(folder),
        issues=[(site.url(f"{folder}{issue.slug}/"), issue) for issue in issues],
        feeds=feed_links(site, "", site.title),
    )
