"""Sanitizing article HTML and reading text out of it."""

from __future__ import annotations

import html as html_text
import re
from urllib.parse import urljoin

import nh3
from lxml import html as lxml_html

_TAGS = nh3.ALLOWED_TAGS | {"tfoot", "picture", "source"}
_ATTRIBUTES = {
    **nh3.ALLOWED_ATTRIBUTES,
    "a": nh3.ALLOWED_ATTRIBUTES["a"] | {"title", "id"},  # id: a footnote's way back
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
# What XML 1.0 forbids (lxml refuses to write it): C0 controls but tab, LF and CR; U+FFFE, U+FFFF.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--")


def forbidden_characters(text: str) -> list[int]:
    """The offsets in TEXT of characters that XML 1.0 cannot carry."""
    return [m.start() for m in _FORBIDDEN.finditer(text)]


def clean(text: str) -> str:
    """TEXT without the characters XML 1.0 forbids: a form feed pasted from a PDF, a NUL."""
    return _FORBIDDEN.sub("", text)


def plain(text: str) -> str:
    """TEXT as plain text, on one line: markup written in it is reduced to its words.

    For titles, names and tags, which feeds carry as text: "<b>New</b> model"
    becomes "New model". Text without tags is left alone ("x < y", "AT&T").
    """
    text = clean(text)
    if _TAG.search(text):
        text = html_text.unescape(nh3.clean(text, tags=set()))
    return squash(text)


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

    return clean(nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=absolutize,
        link_rel=None,
    ))  # a character reference such as &#12; comes out of nh3 as the character itself


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
