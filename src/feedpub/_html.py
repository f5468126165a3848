"""Sanitizing article HTML and reading text out of it."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import nh3
from lxml import html as lxml_html

_TAGS = nh3.ALLOWED_TAGS | {"tfoot", "picture", "source"}
_ATTRIBUTES = {
    **nh3.ALLOWED_ATTRIBUTES,
    "a": nh3.ALLOWED_ATTRIBUTES["a"] | {"title"},
    "img": nh3.ALLOWED_ATTRIBUTES["img"] | {"title", "loading"},
    "code": {"class"},
    "pre": {"class"},
    "ol": {"start", "reversed"},
    "source": {"srcset", "type", "media"},
    **{f"h{level}": {"id"} for level in range(1, 7)},
    "li": {"id"},
    "sup": {"id"},
}
_URL_ATTRIBUTES = {"href", "src", "cite"}
_SPACE = re.compile(r"[ \t\r\n\f\v]+")  # not \xa0: French typography keeps its no-break spaces


def sanitize(html: str, *, base: str, page: str) -> str:
    """Keep only safe markup, with every link and image made absolute.

    `base` is the URL of the folder the article was written in (its relative
    images live there); `page` is the article's own URL, for "#anchor" links.
    """

    def absolutize(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES:
            return value
        value = value.strip()
        return page + value if value.startswith("#") else urljoin(base, value)

    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=absolutize,
        link_rel=None,
    )


def fragment(html: str) -> lxml_html.HtmlElement:
    """Parse an HTML fragment into one <div> holding it."""
    return lxml_html.fragment_fromstring(html or "<p></p>", create_parent="div")


def squash(text: str) -> str:
    """Collapse runs of white space into one space, keeping no-break spaces."""
    return _SPACE.sub(" ", text).strip()


def text_of(element: lxml_html.HtmlElement) -> str:
    return squash(element.text_content())


def strip_tags(html: str) -> str:
    return text_of(fragment(html)) if html.strip() else ""
