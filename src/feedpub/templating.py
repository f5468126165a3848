"""Jinja environments: the site's own templates first, then the ones shipped with feedpub."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

DEFAULT_TEMPLATES = Path(__file__).parent / "templates"


FALLBACK_LANGUAGE = "en"


def words(site_templates: Path, language: str) -> dict[str, str]:
    """The templates' fixed words in LANGUAGE, from i18n/<language>.yaml.

    "fr-CA" looks for fr-CA.yaml, then fr.yaml; a word missing there comes from English.
    """
    return _words(tuple(search_path(site_templates)), language)


@lru_cache(maxsize=16)
def _words(folders: tuple[Path, ...], language: str) -> dict[str, str]:
    import yaml

    candidates = [FALLBACK_LANGUAGE, language.split("-")[0].split("_")[0], language]
    found: dict[str, str] = {}
    for name in dict.fromkeys(candidates):  # English first, the most specific last
        for folder in reversed(folders):  # the site's own file overrides the default
            path = folder / "i18n" / f"{name}.yaml"
            if path.is_file():
                loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C one is ten times faster
                found.update(yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {})
    return found


def search_path(site_templates: Path) -> list[Path]:
    return [p for p in (site_templates, DEFAULT_TEMPLATES) if p.is_dir()]


def wrap(text: str, width: int = 72, indent: str = "", subsequent: str = "") -> str:
    """Fill TEXT to WIDTH columns for a plain-text email, never breaking a word.

    Only ASCII white space is a break: no-break spaces keep French
    punctuation with its word.
    """
    import textwrap

    return textwrap.fill(str(text), width=width, initial_indent=indent, subsequent_indent=subsequent,
                         break_long_words=False, break_on_hyphens=False)


def long_date(moment: date, language: str) -> str:
    """A date the way readers of LANGUAGE write it: "30 novembre 2026", "November 30, 2026"."""
    day = moment.date() if isinstance(moment, datetime) else moment
    return _format_date(day, "long", language)


def month_year(moment: date, language: str) -> str:
    """A month the way readers of LANGUAGE write it: "novembre 2026"."""
    day = moment.date() if isinstance(moment, datetime) else moment
    return _format_date(day.replace(day=1), "LLLL y", language)


@lru_cache(maxsize=4096)  # a long list repeats the same few hundred dates
def _format_date(day: date, pattern: str, language: str) -> str:
    from babel.core import UnknownLocaleError
    from babel.dates import format_date

    try:
        return format_date(day, format=pattern, locale=language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return day.isoformat()


def _plural_filter(count: int, one: str, other: str, language: str = FALLBACK_LANGUAGE) -> str:
    """`{{ n | plural("{count} article", "{count} articles", site.language) }}` in templates."""
    from .languages import plural

    return plural(count, one, other, language)


def site_environment(site) -> jinja2.Environment:
    """The environment of SITE's templates, compiled ones kept in its state folder."""
    return environment(site.templates_dir, site.state_dir / "templates-cache")


@cache
def environment(site_templates: Path, cache_dir: Path | None = None) -> jinja2.Environment:
    """Autoescaping HTML environment; `.txt.j2` templates are left unescaped.

    With CACHE_DIR, compiled templates are kept there for the next process.
    """
    import jinja2

    bytecode_cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        bytecode_cache = jinja2.FileSystemBytecodeCache(str(cache_dir))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path(site_templates)]),
        bytecode_cache=bytecode_cache,
        autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["long_date"] = long_date
    env.filters["wrap"] = wrap
    env.filters["month_year"] = month_year
    env.filters["plural"] = _plural_filter
    return env


@cache
def text_environment(site_templates: Path) -> jinja2.Environment:
    """An environment that escapes nothing, for one-line texts such as a mail's subject."""
    import jinja2

    env = jinja2.Environment(loader=environment(site_templates).loader, autoescape=False,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(long_date=long_date, wrap=wrap, month_year=month_year)
    return env


def render(template: jinja2.Template, context: dict, site_templates: Path) -> str:
    """TEMPLATE rendered; a failure is a TemplateError naming the template's file and line."""
    import jinja2

    try:
        return template.render(**context)
    # What a template's own expressions can raise: an undefined name (a jinja2
    # TemplateError), a filter given the wrong kind of value.
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError,
            ZeroDivisionError) as exc:
        from .errors import TemplateError

        where, line = failing_line(exc, site_templates)
        raise TemplateError(f"{where}:{line}: {problem_text(exc)}" if line else
                            f"{where}: {problem_text(exc)}") from None


def problem_text(exc: Exception) -> str:
    import jinja2

    if isinstance(exc, jinja2.TemplateError):
        return getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {exc}"


def failing_line(exc: BaseException, site_templates: Path) -> tuple[str, int | None]:
    """(template as the site names it, line) of the innermost template frame of EXC's traceback.

    Jinja rewrites tracebacks so that a frame of a template carries the
    template's file name and line, which is what an author needs to see.
    """
    import traceback

    if getattr(exc, "filename", None) and getattr(exc, "lineno", None):  # a syntax error met while rendering
        return template_label(exc.filename, site_templates), exc.lineno
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2") or frame.filename == "<template>":
            return template_label(frame.filename, site_templates), frame.lineno
    return "a template", None


def template_label(filename: str, site_templates: Path) -> str:
    """"templates/article.html.j2" for a site's template; feedpub's own ones are named as such."""
    path = Path(filename)
    for folder, label in ((site_templates, site_templates.name), (DEFAULT_TEMPLATES, "feedpub's templates")):
        if path.is_relative_to(folder):
            return f"{label}/{path.relative_to(folder).as_posix()}"
    return filename


def fingerprint(site_templates: Path) -> str:
    """Changes when any template file in the search path is edited, added or removed."""
    digest = hashlib.blake2b(digest_size=12)
    for folder in search_path(site_templates):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check(site_templates: Path) -> list[str]:
    """Every template that fails to compile, as 'path:line: reason'."""
    import jinja2

    env = environment(site_templates)
    problems = []
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"templates/{name}:{exc.lineno}: {exc.message}")
    return problems
