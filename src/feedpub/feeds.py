"""RSS 2.0 and Atom 1.0 feeds (made with feedgen) and JSON Feed 1.1."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from datetime import datetime, timedelta

from feedgen.feed import FeedGenerator

from . import __version__
from ._html import clean
from .config import Site
from .content import Article

FEED_FILES = {"rss": "feed.xml", "atom": "atom.xml", "json": "feed.json"}
MEDIA_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}


@dataclass(frozen=True)
class FeedItem:
    """An article as a feed shows it: with its permanent id and last change."""

    article: Article
    id: str
    updated: datetime


@dataclass(frozen=True)
class Channel:
    """One set of feeds: the whole site, or one tag."""

    title: str
    description: str
    folder: str  # "" for the site, "tags/<slug>/" for a tag; page and feeds live there


def _feed_generator(site: Site, channel: Channel, kind: str, items: list[FeedItem]) -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)
    fg.id(site.url(channel.folder))
    fg.title(clean(channel.title))
    fg.subtitle(clean(channel.description or channel.title))
    # In RSS the channel <link> is the last link added: self first, page last.
    fg.link(href=site.url(channel.folder + FEED_FILES[kind]), rel="self", type=MEDIA_TYPES[kind])
    fg.link(href=site.url(channel.folder), rel="alternate", type="text/html")
    fg.language(site.language)
    fg.author({"name": site.author.name or site.title, **({"email": site.author.email} if site.author.email else {})})
    fg.generator("feedpub", __version__)
    # Dated by the newest item, never by the clock, so unchanged feeds keep their bytes.
    newest = max((item.updated for item in items), default=datetime(2000, 1, 1).astimezone(site.tz))
    fg.updated(newest)
    fg.lastBuildDate(newest)
    for item in items:
        _add_entry(site, fg, kind, item)
    return fg


def _add_entry(site: Site, fg: FeedGenerator, kind: str, item: FeedItem) -> None:
    article = item.article
    entry = fg.add_entry(order="append")
    entry.id(item.id)
    entry.guid(item.id, permalink=False)
    # Article fields were cleaned when parsed; cleaning again here keeps one stray control
    # character (from a cache or a setting) from stopping every feed: lxml refuses to write it.
    entry.title(clean(article.title))
    entry.link(href=site.url(article.path), rel="alternate", type="text/html")
    entry.published(article.date)
    entry.updated(item.updated)
    if article.summary:
        # Readers take an RSS description, and an Atom summary of type html, as HTML: the
        # plain-text summary goes in escaped, so "<img onerror=…>" written in it stays text.
        entry.summary(escape(clean(article.summary), quote=False), type=None if kind == "rss" else "html")
    if site.feeds.full_content and article.html:
        html = clean(article.html)
        if kind == "rss":
            entry.content(html.replace("]]>", "]]&gt;"), type="CDATA")  # CDATA cannot hold its own end
        else:
            entry.content(html, type="html")
    for tag in article.tags:
        entry.category(term=clean(tag))
    author = clean(article.author or site.author.name or "")
    if author:
        if kind == "rss":
            entry.dc.dc_creator(author)
        else:
            entry.author(name=author)


def _json_feed(site: Site, channel: Channel, items: list[FeedItem]) -> bytes:
    def json_item(item: FeedItem) -> dict:
        article = item.article
        data = {
            "id": item.id,
            "url": site.url(article.path),
            "title": article.title,
            "summary": article.summary,
            "date_published": article.date.isoformat(),
            "date_modified": item.updated.isoformat(),
        }
        if site.feeds.full_content and article.html:
            data["content_html"] = article.html
        else:
            data["content_text"] = article.summary
        if article.image:
            data["image"] = article.image
        if author := article.author or site.author.name:
            data["authors"] = [{"name": author}]
        if article.tags:
            data["tags"] = list(article.tags)
        return data

    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": channel.title,
        "home_page_url": site.url(channel.folder),
        "feed_url": site.url(channel.folder + FEED_FILES["json"]),
        "description": channel.description or channel.title,
        "language": site.language,
        "authors": [{"name": site.author.name or site.title, "url": site.base_url}],
        "items": [json_item(item) for item in items],
    }
    return json.dumps(feed, ensure_ascii=False, indent=2).encode() + b"\n"


def _distinct_updates(items: list[FeedItem]) -> list[FeedItem]:
    """Items whose "updated" times all differ, as the feed validator asks of Atom.

    Articles dated by day alone share midnight; each later duplicate is moved
    back by a second, which no reader sees but which keeps the feed valid.
    """
    taken: set[datetime] = set()
    distinct = []
    for item in items:
        updated = item.updated
        while updated in taken:
            updated -= timedelta(seconds=1)
        taken.add(updated)
        distinct.append(item if updated == item.updated else FeedItem(item.article, item.id, updated))
    return distinct


def render_feeds(site: Site, channel: Channel, items: list[FeedItem]) -> dict[str, bytes]:
    """The three feed files of CHANNEL, keyed by their path under the output folder."""
    items = _distinct_updates(items)
    return {
        channel.folder + FEED_FILES["rss"]: _feed_generator(site, channel, "rss", items).rss_str(pretty=True),
        channel.folder + FEED_FILES["atom"]: _feed_generator(site, channel, "atom", items).atom_str(pretty=True),
        channel.folder + FEED_FILES["json"]: _json_feed(site, channel, items),
    }
