"""Markdown to HTML with GitHub's cmark-gfm: CommonMark plus tables, strikethrough,
autolinks and footnotes, definition lists, and an id on every heading.

cmark-gfm is C and about thirty times faster than a Python parser, which is
most of a full build. Raw HTML is passed through on purpose: the sanitizer that
runs next removes what is unsafe, whole, where cmark-gfm's tag filter would
show a <script> as text.
"""

from __future__ import annotations

import html
import re
from typing import Callable

from cmarkgfm import cmark

_OPTIONS = cmark.Options.CMARK_OPT_UNSAFE | cmark.Options.CMARK_OPT_FOOTNOTES
# Task lists are left out: checkboxes mean nothing in a feed or an email.
_EXTENSIONS = ["table", "strikethrough", "autolink"]
_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>", re.S)
_TAG = re.compile(r"<[^>]*>")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_DEFINITION = re.compile(r" {0,3}:[ \t]+(\S.*)")
_PARAGRAPH = re.compile(r"<p>(.*)</p>\n?", re.S)


def _render(text: str) -> str:
    return cmark.markdown_to_html_with_extensions(text, _OPTIONS, _EXTENSIONS)


def _inline(text: str) -> str:
    """TEXT rendered, without the paragraph cmark-gfm wraps a single one in."""
    rendered = _render(text)
    match = _PARAGRAPH.fullmatch(rendered)
    return match.group(1) if match and "<p>" not in match.group(1) else rendered.strip()


def to_html(text: str, heading_id: Callable[[str], str]) -> str:
    """TEXT rendered as HTML; each heading gets HEADING_ID(its text) as its id,
    unique within the article, so "#section" links reach it."""
    rendered = _render(_definition_lists(text))
    taken: set[str] = set()

    def with_id(match: re.Match) -> str:
        level, inner = match.groups()
        base = heading_id(html.unescape(_TAG.sub("", inner))) or f"section-{len(taken) + 1}"
        unique, n = base, 1
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        taken.add(unique)
        return f'<h{level} id="{unique}">{inner}</h{level}>'

    return _HEADING.sub(with_id, rendered)


def _definition_lists(text: str) -> str:
    """Definition lists ("Term", then ": its definition" on the next line), which
    cmark-gfm does not know, written out as HTML blocks that it passes through.

    Writers use them for FAQs. A definition continues on lines indented by two
    spaces or more; a blank line ends the list unless another term follows.
    """
    lines = text.split("\n")
    if not any(_DEFINITION.match(line) for line in lines):
        return text
    out: list[str] = []
    fence, i = None, 0
    while i < len(lines):
        line = lines[i]
        if fence is None and (opening := _FENCE.match(line)):
            fence = opening.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None and _starts_list(lines, i) and (not out or not out[-1].strip()):
            items, i = _read_list(lines, i)
            out += ["<dl>", *items, "</dl>", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _starts_list(lines: list[str], i: int) -> bool:
    term = lines[i]
    return (bool(term.strip()) and not _DEFINITION.match(term) and term[:1] not in " \t#>-*+|<"
            and i + 1 < len(lines) and bool(_DEFINITION.match(lines[i + 1])))


def _read_list(lines: list[str], i: int) -> tuple[list[str], int]:
    """The <dt> and <dd> lines of the list starting at line I, and the line after it."""
    items: list[str] = []
    while True:
        items.append(f"<dt>{_inline(lines[i].strip())}</dt>")
        i += 1
        while i < len(lines) and (definition := _DEFINITION.match(lines[i])):
            body = [definition.group(1)]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() and not _DEFINITION.match(lines[i]):
                body.append(lines[i].strip())
                i += 1
            # No blank line may stay inside: it would end the HTML block.
            items.append(f"<dd>{_inline(chr(10).join(body))}</dd>".replace("\n\n", "\n"))
        following = i + 1 if i < len(lines) and not lines[i].strip() else i
        if following < len(lines) and _starts_list(lines, following):
            i = following
            continue
        return items, i
