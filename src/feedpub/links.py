"""Links between articles: `[next](second.md)` becomes the permalink of second.md's article.

Bodies are parsed one file at a time, so a link to another article's source is
only known as a URL under base_url ending in ".md". Once every article's slug
is chosen, those URLs are swapped for the permalinks, the #anchor kept.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import replace
from urllib.parse import unquote, urlsplit

from .content import Article

_MD_HREF = re.compile(r'href="([^"#]*\.md)(#[^"]*)?"')
# [text](target): not an image, the target ends at white space or ")".
_MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)")


def permalinks(site, articles) -> dict[str, str]:
    """Source path -> absolute page URL, for the published ARTICLES (anything with .source and .path)."""
    return {a.source: site.url(a.path) for a in articles}


def fingerprint(links: dict[str, str]) -> str:
    """Changes when any article's permalink changes: pages that link to articles are rebuilt then."""
    blob = "\n".join(f"{k}\0{v}" for k, v in sorted(links.items())).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def has_links(html: str) -> bool:
    return _MD_HREF.search(html) is not None


def resolve(site, html: str, links: dict[str, str]) -> str:
    """HTML with each link to a published article's source replaced by its permalink."""
    def swap(match: re.Match) -> str:
        url, anchor = match.group(1), match.group(2) or ""
        if not url.startswith(site.base_url):
            return match.group(0)  # another site's .md file
        target = links.get(unquote(url[len(site.base_url):]))
        return f'href="{target}{anchor}"' if target else match.group(0)

    return _MD_HREF.sub(swap, html)


def with_links(site, article: Article, links: dict[str, str]) -> Article:
    return replace(article, html=resolve(site, article.html, links)) if has_links(article.html) else article


def target_source(source: str, target: str) -> str | None:
    """The content path a link TARGET in SOURCE names, when it is a relative link to a .md file."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith("/") or not parts.path.endswith(".md"):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(source), unquote(parts.path)))
    return path  # a path climbing out of the content folder starts with "..": it is no article


def problems(label: str, source: str, text: str, links: dict[str, str]) -> list[str]:
    """'content/a.md:LINE: link to X: no such article' for each .md link no published article answers.

    TEXT is the whole file, so lines count the front matter.
    """
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        for match in _MD_LINK.finditer(line):
            path = target_source(source, match.group(1))
            if path is not None and path not in links:
                found.append(f"{label}:{number}: link to {match.group(1)}: no such article")
    return found


class LinkedCatalog:
    """The catalog's articles with their links to other articles made permalinks.

    `fingerprint(key)` adds the permalinks to the fingerprint of what shows a
    linking article, so a renamed or re-slugged target rebuilds it.
    """

    def __init__(self, site, catalog, links: dict[str, str], linking: set[str]) -> None:
        self.site, self.catalog, self.links, self.linking = site, catalog, links, linking
        self.links_fingerprint = fingerprint(links)

    def article(self, key: str):
        return with_links(self.site, self.catalog.article(key), self.links)

    def fingerprint(self, key: str) -> str:
        return f"{key}|{self.links_fingerprint}" if key in self.linking else key


def source_problems(site, sources: list[str], links: dict[str, str]) -> list[str]:
    """Links to .md files no published article answers, in the files of SOURCES."""
    found = []
    for source in sources:
        try:
            text = (site.content_dir / source).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # its own read error is reported where it is parsed
        found += problems(f"{site.content_dir.name}/{source}", source, text, links)
    return found
