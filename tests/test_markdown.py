"""What Markdown writers use comes out as the same HTML in pages and feeds."""

from __future__ import annotations

from feedpub.content import parse_article
from feedpub.extract import Question

from .conftest import write_article

FRONT = 'title: Markup\ndate: 2025-01-06T09:00:00+01:00\n'


def body_html(site, body: str) -> str:
    write_article(site.content_dir.parent, "markup.md", FRONT, body)
    article, _ = parse_article(site, "markup.md", (site.content_dir / "markup.md").read_bytes())
    return article.html


def test_tables_keep_their_cells_and_alignment(site):
    html = body_html(site, "| Reply | Meaning |\n|:--|:-:|\n| `250` | Accepted |\n")
    assert "<table>" in html and '<th align="center">Meaning</th>' in html
    assert '<td align="left"><code>250</code></td>' in html


def test_strikethrough_and_autolinks(site):
    html = body_html(site, "~~gone~~, <https://a.example/x> and https://b.example/y or www.c.example.\n")
    assert "<del>gone</del>" in html
    assert '<a href="https://a.example/x">' in html
    assert '<a href="https://b.example/y">https://b.example/y</a>' in html
    assert '<a href="http://www.c.example">www.c.example</a>' in html


def test_footnote_links_reach_the_note_and_back(site):
    html = body_html(site, "A claim[^src].\n\n[^src]: Where it comes from.\n")
    page = site.url("markup/")
    assert f'href="{page}#fn-src"' in html and 'id="fn-src"' in html
    assert f'href="{page}#fnref-src"' in html and 'id="fnref-src"' in html


def test_headings_get_unique_ids_from_their_text(site):
    html = body_html(site, "## Héading with `code` & more\n\ntext\n\n## Notes\n\na\n\n## Notes\n\nb\n\n## ¿?\n\nc\n")
    assert '<h2 id="heading-with-code-more">Héading with <code>code</code> &amp; more</h2>' in html
    assert '<h2 id="notes">' in html and '<h2 id="notes-2">' in html
    assert '<h2 id="section-4">' in html


def test_a_link_to_a_heading_of_the_same_article(site):
    html = body_html(site, "See [the notes](#notes).\n\n## Notes\n\nThem.\n")
    assert f'<a href="{site.url("markup/")}#notes">' in html and '<h2 id="notes">' in html


def test_raw_html_is_kept_when_safe_and_removed_whole_when_not(site):
    html = body_html(site, '<div class="box">raw <b>bold</b></div>\n\n<script>alert(1)</script>\n\n'
                           'Text <img src="x.png" onerror="alert(2)"> end.\n')
    assert "<b>bold</b>" in html
    assert "script" not in html and "alert" not in html
    assert f'<img src="{site.url("x.png")}">' in html


def test_task_list_markers_stay_text(site):
    html = body_html(site, "- [ ] to do\n- [x] done\n")
    assert "<input" not in html and "<li>[ ] to do</li>" in html


def test_faq_written_as_html_definition_list(site):
    write_article(site.content_dir.parent, "markup.md", FRONT,
                  "Intro.\n\n## FAQ\n\n<dl><dt>Why?</dt><dd>Because.</dd></dl>\n")
    article, _ = parse_article(site, "markup.md", (site.content_dir / "markup.md").read_bytes())
    assert article.faq == (Question("Why?", "Because."),)


def test_definition_lists_for_faqs(site):
    write_article(site.content_dir.parent, "markup.md", FRONT,
                  "Intro.\n\n## FAQ\n\nWhy *now*?\n: Because the **time** is right,\n  and the tools are.\n\n"
                  "How?\n: Like so.\n: Or so.\n\nAfter the list.\n\n```\nTerm in code\n: stays code\n```\n")
    article, _ = parse_article(site, "markup.md", (site.content_dir / "markup.md").read_bytes())
    html = article.html
    assert "<dt>Why <em>now</em>?</dt>\n<dd>Because the <strong>time</strong> is right,\nand the tools are.</dd>" in html
    assert "<dt>How?</dt>\n<dd>Like so.</dd>\n<dd>Or so.</dd>\n</dl>" in html
    assert "<p>After the list.</p>" in html and "Term in code\n: stays code" in html
    assert article.faq == (Question("Why now?", "Because the time is right, and the tools are."),
                           Question("How?", "Like so."))


def test_a_colon_line_without_a_term_is_a_paragraph(site):
    html = body_html(site, "Intro.\n\n: not a definition\n")
    assert "<dl>" not in html and "<p>: not a definition</p>" in html
