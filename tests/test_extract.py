"""Summary, key points and FAQ read from real article shapes."""

from __future__ import annotations

import pytest

from feedpub import extract
from feedpub._html import fragment, strip_tags
from feedpub.content import parse_article
from feedpub.extract import Question

SAMPLE = "cofondateur-xai-quitte-entreprise.md"


def parse(site, name: str):
    article, warnings = parse_article(site, name, (site.content_dir / name).read_bytes())
    assert warnings == []
    return article


def test_sample_article_lede_key_points_and_faq(site):
    article = parse(site, SAMPLE)
    assert article.title == "Un cofondateur de xAI (Elon Musk) quitte l’entreprise"
    assert article.summary == (
        "Un tremblement de terre secoue l’industrie de l’IA. Igor Babuschkin, cofondateur de xAI, "
        "vient de tourner le dos à l’entreprise d’Elon Musk, laissant derrière lui un vide technique majeur."
    )
    assert article.key_points == (
        "Des réunions de plus en plus houleuses entre les dirigeants",
        "Des visions divergentes sur l’éthique de l’IA",
        "Un manque d’alignement sur les priorités commerciales",
        "Des conflits récurrents sur l’allocation des ressources",
    )
    assert article.faq == (
        Question(
            "Qu’est-ce que xAI ?",
            "xAI est la société d’intelligence artificielle fondée par Elon Musk en 2023, visant à développer "
            "des modèles IA avancés et à concurrencer des acteurs comme OpenAI, Google DeepMind et Anthropic.",
        ),
        Question(
            "Pourquoi Igor Babuschkin quitte xAI ?",
            "Le départ d’Igor Babuschkin, figure clé et cofondateur de xAI, pourrait être lié à des divergences "
            "stratégiques avec la direction, à des choix technologiques ou à une volonté de poursuivre d’autres "
            "projets dans le domaine de l’IA. Sa sortie soulève des interrogations sur la stabilité et la vision "
            "à long terme de l’entreprise.",
        ),
        Question(
            "Pourquoi ce départ est-il important ?",
            "Il peut signaler des divergences stratégiques, des tensions internes ou simplement un changement "
            "d’orientation personnelle, ce qui peut affecter la dynamique de l’équipe dirigeante.",
        ),
        Question(
            "Quel impact pour xAI ?",
            "Selon les analystes, un tel départ pourrait ralentir certains projets, mais l’entreprise dispose "
            "encore d’un noyau solide de talents et de ressources, notamment grâce au soutien direct d’Elon Musk.",
        ),
        Question(
            "Quelles sont les ambitions de xAI malgré ce départ ?",
            "Continuer le développement de son modèle Grok, améliorer ses capacités multimodales et intégrer l’IA "
            "dans l’écosystème X (ex-Twitter) ainsi que dans d’autres produits et services technologiques.",
        ),
    )


def test_article_without_faq(site):
    article = parse(site, "why-feeds-still-matter.md")
    assert article.faq == ()
    assert article.key_points[0] == "Every article, in order, with nothing filtered out"
    assert len(article.key_points) == 4
    assert article.summary.startswith("Every few years someone declares RSS dead")


def test_article_without_bullets_uses_front_matter_summary_and_french_faq_heading(site):
    article = parse(site, "ecrire-sans-listes.md")
    assert article.key_points == ()
    assert article.summary == (
        "Les listes à puces rassurent, mais un bon paragraphe explique mieux. "
        "Plaidoyer pour la prose dans les newsletters."
    )
    assert [q.question for q in article.faq] == [
        "Faut-il bannir toutes les listes ?",
        "Comment raccourcir un paragraphe trop long ?",
        "Les lecteurs lisent-ils vraiment les paragraphes ?",
    ]


def test_nested_lists_give_top_level_items_and_bold_questions(site):
    article = parse(site, "planning-a-newsletter-archive.md")
    # The bullet lists inside the numbered list are sub-points: the first
    # top-level bullet list gives the key points, without its nested items.
    assert article.key_points == (
        "Tracking pixels and personal tokens",
        "Draft issues that were never sent",
    )
    assert [q.question for q in article.faq] == [
        "Should the archive be public?",
        "How long should issues stay online?",
    ]
    assert article.faq[1].answer.startswith("As long as the site exists.")


def test_code_and_table_article(site):
    article = parse(site, "rate-limits-in-practice.md")
    assert "<table>" in article.html and "<pre>" in article.html
    assert "class TokenBucket" in article.html
    assert article.key_points == () and article.faq == ()
    assert article.updated is not None and article.updated.isoformat() == "2026-11-14T17:45:00+01:00"


def test_relative_image_is_made_absolute(site):
    article = parse(site, "guides/lire-un-flux.md")
    assert article.image == "http://127.0.0.1:8080/guides/images/lecteur.png"
    assert 'src="http://127.0.0.1:8080/guides/images/lecteur.png"' in article.html
    assert 'href="http://127.0.0.1:8080/atom.xml"' in article.html
    assert 'href="http://127.0.0.1:8080/lire-un-flux/#trois-etapes"' in article.html
    assert '<h2 id="trois-etapes">' in article.html


def test_long_article_keeps_french_typography(site):
    article = parse(site, "dix-ans-de-lettre.md")
    assert "📬" in article.title
    assert "«\u00a0édition du lundi\u00a0»" in strip_tags(article.html)
    assert article.faq[0].question == "À quelle heure part la lettre\u202f?"
    assert len(article.summary) <= site.extract.summary_length
    assert article.summary.endswith(("!", ".", "…", "?"))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Short one.", 50, "Short one."),
        ("First sentence here. Second sentence is longer.", 30, "First sentence here."),
        ("« Une citation. » Puis la suite du texte.", 20, "« Une citation. »"),
        ("Pourquoi ? Parce que.", 12, "Pourquoi ?"),
        ("one two three four five six seven", 16, "one two three…"),
        ("Nonbreaking\u00a0words stay\u00a0together here", 20, "Nonbreaking\u00a0words…"),
        ("Say \"hi.\" Then go.", 10, 'Say "hi."'),
    ],
)
def test_shorten_cuts_at_sentence_end_never_mid_word(text, limit, expected):
    assert extract.shorten(text, limit) == expected


def test_faq_heading_variants_and_section_end():
    html = (
        "<h2>Intro</h2><p>x</p>"
        "<h2>Frequently Asked Questions (FAQ)</h2>"
        "<h3>One?</h3><p>First.</p><p>Second.</p>"
        "<h3>Two?</h3><ul><li>Listed answer</li></ul>"
        "<h2>After</h2><h3>Not a question</h3><p>no</p>"
    )
    assert extract.faq(fragment(html)) == (
        Question("One?", "First. Second."),
        Question("Two?", "Listed answer"),
    )
    assert extract.is_faq_title("QUESTIONS FRÉQUENTES")
    assert extract.is_faq_title("Foire aux questions")
    assert extract.is_faq_title("F.A.Q.") and extract.is_faq_title("FAQ :")
    assert not extract.is_faq_title("FAQtory tour")


def test_definition_list_faq():
    html = "<h2>FAQ</h2><dl><dt>Why?</dt><dd>Because.</dd><dt>How?</dt><dd>Like so.</dd></dl>"
    assert extract.faq(fragment(html)) == (Question("Why?", "Because."), Question("How?", "Like so."))


def test_key_points_are_capped_and_drop_nested_items():
    items = "".join(f"<li>Point {i}<ul><li>nested</li></ul></li>" for i in range(8))
    assert extract.key_points(fragment(f"<ol><li>a</li></ol><ul>{items}</ul>"), 3) == (
        "Point 0", "Point 1", "Point 2",
    )


def test_a_table_of_contents_is_not_the_key_points(site):
    from feedpub.content import parse_article

    text = (
        "---\ntitle: Guide complet\ndate: 2026-11-01\n---\n\n# Guide complet\n\nIntro paragraph.\n\n"
        "- [Part one](#part-one)\n- [Part two](#part-two)\n\n## Part one\n\n- Real point\n- Another point\n\n"
        "## Part two\n\nText.\n"
    )
    article, _ = parse_article(site, "guide.md", text.encode())
    assert article.key_points == ("Real point", "Another point")
    assert "<h1" not in article.html  # the heading that repeats the title is dropped
    assert article.summary == "Intro paragraph."
