"""Summary, key points and FAQ, read from the structure of an article's HTML.

Working on HTML rather than on Markdown lets the same rules serve articles
that arrive as HTML. Each function takes the parsed fragment of `_html.fragment`.
"""

from __future__ import annotations

import re
import unicodedata
from copy import deepcopy
from dataclasses import dataclass

from lxml.html import HtmlElement

from ._html import squash, text_of

HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
FAQ_TITLES = (
    "faq",
    "questions frequentes",
    "frequently asked questions",
    "foire aux questions",
)
# A sentence ends with . ! ? or …, maybe followed by closing quotes or brackets,
# then white space or the end of the text.
_SENTENCE_END = re.compile(r"[.!?…]+(?:[)\]\"'’]|[ \u00a0\u202f]?[»”])*(?=\s|$)")


@dataclass(frozen=True)
class Question:
    question: str
    answer: str


def shorten(text: str, limit: int) -> str:
    """Cut TEXT to at most LIMIT characters at a sentence end, never mid-word.

    When even the first sentence is too long, cut at the last word boundary
    and end with an ellipsis.
    """
    text = squash(text)
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit + 1) if m.end() <= limit]
    if ends:
        return text[: ends[-1]].rstrip()
    room = text[: limit - 1]  # one character is kept for the ellipsis
    cut = room.rsplit(" ", 1)[0] if " " in room else room
    return cut.rstrip(" ,;:–—-\u00a0\u202f") + "…"


def _level(element: HtmlElement) -> int:
    return int(element.tag[1]) if element.tag in HEADINGS else 0


def _has_text(element: HtmlElement) -> bool:
    return bool(text_of(element))


def lede(root: HtmlElement, limit: int) -> str:
    """The article's opening: its first paragraphs while they fit in LIMIT.

    A first paragraph longer than LIMIT is cut at a sentence end.
    """
    lede = ""
    for element in root:
        if element.tag in HEADINGS and lede:
            break
        if element.tag != "p" or not (text := text_of(element)):
            continue
        if not lede:
            lede = shorten(text, limit)
        elif len(lede) + 1 + len(text) <= limit:
            lede = f"{lede} {text}"
        else:
            break
    return lede


def key_points(root: HtmlElement, cap: int) -> tuple[str, ...]:
    """The top-level items of the article's first bullet list, without nested lists."""
    for ul in root.iter("ul"):
        if any(a.tag in {"ul", "ol"} for a in ul.iterancestors()) or _is_table_of_contents(ul):
            continue
        items = []
        for li in ul.findall("li"):
            li = deepcopy(li)
            for nested in li.xpath(".//ul|.//ol"):
                nested.drop_tree()
            if text := text_of(li):
                items.append(text)
        if items:
            return tuple(items[:cap])
    return ()


def _is_table_of_contents(ul: HtmlElement) -> bool:
    """A list whose every item is only a link to a section of the page ("Sommaire")."""
    items = ul.findall("li")
    for li in items:
        links = li.findall("a")
        if len(links) != 1 or "#" not in (links[0].get("href") or "") or text_of(links[0]) != text_of(li):
            return False
    return bool(items)


def _normalized(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", bare).split())


def is_faq_title(text: str) -> bool:
    name = _normalized(text)
    if name.replace(" ", "") == "faq":  # "F.A.Q.", "F A Q"
        return True
    return any(name == title or name.startswith(title + " ") for title in FAQ_TITLES)


def _faq_section(root: HtmlElement) -> list[HtmlElement]:
    """The elements after the FAQ heading, up to the next heading of its level or higher."""
    children = list(root)
    for index, element in enumerate(children):
        if element.tag in HEADINGS and is_faq_title(text_of(element)):
            level = _level(element)
            section = []
            for follower in children[index + 1 :]:
                if follower.tag in HEADINGS and _level(follower) <= level:
                    break
                section.append(follower)
            return section
    return []


def _is_bold_question(element: HtmlElement) -> bool:
    """A paragraph that is nothing but bold text, like "**Why?**"."""
    if element.tag != "p" or len(element) != 1 or element[0].tag not in {"strong", "b"}:
        return False
    return not (element.text or "").strip() and not (element[0].tail or "").strip()


def _pairs(section: list[HtmlElement], is_question) -> tuple[Question, ...]:
    pairs: list[Question] = []
    question, answer = None, []
    for element in section:
        if is_question(element):
            if question and answer:
                pairs.append(Question(question, " ".join(answer)))
            question, answer = text_of(element), []
        elif question is not None and (text := text_of(element)):
            answer.append(text)
    if question and answer:
        pairs.append(Question(question, " ".join(answer)))
    return tuple(pairs)


def faq(root: HtmlElement) -> tuple[Question, ...]:
    """Question and answer pairs from the section headed FAQ (or its translations).

    Questions are the section's sub-headings; failing those, a definition
    list, or paragraphs that are wholly bold.
    """
    section = _faq_section(root)
    levels = [_level(e) for e in section if e.tag in HEADINGS]
    if levels:
        top = min(levels)
        return _pairs(section, lambda e: _level(e) == top)
    for element in section:
        if element.tag == "dl":
            terms = element.findall("dt")
            return tuple(
                Question(text_of(dt), text_of(dd))
                for dt in terms
                if (dd := dt.getnext()) is not None and dd.tag == "dd"
            )
    return _pairs(section, _is_bold_question)
