"""The site's language: whether babel and the templates' words know it, and plural forms."""

from __future__ import annotations

from functools import lru_cache

from .templating import FALLBACK_LANGUAGE, search_path


@lru_cache(maxsize=64)
def _locale(language: str):
    """babel's Locale for LANGUAGE ("fr", "fr-CA", "pt_BR"), or None when babel does not know it."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def known(language: str) -> bool:
    return _locale(language) is not None


def plural(count: int, one: str, other: str, language: str = FALLBACK_LANGUAGE) -> str:
    """ONE or OTHER, whichever LANGUAGE uses for COUNT, with "{count}" filled in.

    English says "0 articles", French « 0 article »: babel's plural rules decide.
    Languages with more forms than two use OTHER for all but "one".
    """
    locale = _locale(language) or _locale(FALLBACK_LANGUAGE)
    form = one if locale.plural_form(abs(count)) == "one" else other
    return form.replace("{count}", str(count))


def count(n: int, noun: str, nouns: str | None = None, language: str = FALLBACK_LANGUAGE) -> str:
    """'1 article', '2 articles': N followed by the noun in the form N takes."""
    return plural(n, f"{{count}} {noun}", f"{{count}} {nouns or noun + 's'}", language)


def _has_words(site, language: str) -> bool:
    names = {language, language.split("-")[0].split("_")[0]}
    return any((folder / "i18n" / f"{name}.yaml").is_file()
               for folder in search_path(site.templates_dir) for name in names)


def language_warnings(site) -> list[str]:
    """What is wrong with the site's `language`: unknown to babel, or without template words."""
    language = site.language
    if not known(language):
        return [f"feedpub.yaml: language: {language!r} is not a language babel knows; English words are used"]
    if not _has_words(site, language):
        name = _locale(language).english_name
        return [f"feedpub.yaml: language: {language!r} ({name}) has no i18n/{language}.yaml in the templates; "
                f"words fall back to English, dates are written in {name}"]
    return []
