"""Article pages and the lists of articles (home page, all articles, one tag)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .config import Site
from .content import Article, slugify
from .feeds import FEED_FILES, MEDIA_TYPES
from .templating import environment

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


def _render(site: Site, template: str, **context) -> bytes:
    env = environment(site.templates_dir)
    return env.get_template(template).render(site=site, **context).encode()


def article_page(site: Site, article: Article, updated: datetime) -> bytes:
    return _render(
        site,
        "article.html.j2",
        article=article,
        updated=updated,
        url=site.url(article.path),
        feeds=feed_links(site, "", site.title),
        tag_url=lambda tag: site.url(tag_folder(tag)),
    )


def list_page(site: Site, *, title: str, folder: str, articles: list[Article],
              feeds_folder: str | None = "", more: str | None = None) -> bytes:
    """A page listing ARTICLES; FEEDS_FOLDER is where its feeds live, if any."""
    return _render(
        site,
        "list.html.j2",
        title=title,
        url=site.url(folder),
        articles=articles,
        feeds=feed_links(site, feeds_folder, title) if feeds_folder is not None else [],
        more=site.url(more) if more else None,
    )


def tag_folder(tag: str) -> str:
    return f"tags/{slugify(tag) or 'tag'}/"
