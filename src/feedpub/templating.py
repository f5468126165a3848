"""Jinja environments: the site's own templates first, then the ones shipped with feedpub."""

from __future__ import annotations

import hashlib
from datetime import date
from functools import cache
from pathlib import Path

import jinja2

DEFAULT_TEMPLATES = Path(__file__).parent / "templates"


def search_path(site_templates: Path) -> list[Path]:
    return [p for p in (site_templates, DEFAULT_TEMPLATES) if p.is_dir()]


def long_date(moment: date, language: str) -> str:
    """A date the way readers of LANGUAGE write it: "30 novembre 2026", "November 30, 2026"."""
    from babel.core import UnknownLocaleError
    from babel.dates import format_date

    try:
        return format_date(moment, format="long", locale=language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return moment.strftime("%Y-%m-%d")


@cache
def environment(site_templates: Path) -> jinja2.Environment:
    """Autoescaping HTML environment; `.txt.j2` templates are left unescaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path(site_templates)]),
        autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["long_date"] = long_date
    return env


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
    env = environment(site_templates)
    problems = []
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"templates/{name}:{exc.lineno}: {exc.message}")
    return problems
