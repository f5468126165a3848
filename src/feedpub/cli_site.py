"""The commands that start things: `feedpub init` (a site) and `feedpub new` (an article)."""

from __future__ import annotations

from pathlib import Path

import click

from ._cli import now, site_option
from .errors import FeedpubError


def _shown(path: Path) -> str:
    """PATH relative to the current folder when it lies below it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@click.command()
@click.argument("folder", default=".", type=click.Path(path_type=Path))
@click.option("--title", help="The site's title (default: from the folder's name).")
@click.option("--language", default="en", show_default=True, help="Language of dates and fixed words.")
@click.option("--timezone", default="UTC", show_default=True, help="Time zone of dates and of the schedule.")
@click.option("--templates", "copy_templates", is_flag=True,
              help="Also copy the default templates into FOLDER/templates to edit.")
def init(folder: Path, title: str | None, language: str, timezone: str, copy_templates: bool) -> None:
    """Write a ready site into FOLDER (default: the current folder).

    Refuses, writing nothing, when FOLDER already holds a site.
    Example: feedpub init my-site --title "My news"
    """
    from .scaffold import init_site

    try:
        written = init_site(folder, title=title, language=language, timezone=timezone,
                            templates=copy_templates)
    except FeedpubError as exc:
        raise click.ClickException(str(exc)) from None
    where = _shown(folder)
    click.echo(f"Wrote a new site in {where}/:" if where != "." else "Wrote a new site here:")
    for name in written:
        click.echo(f"  {name}")
    click.echo("Next:")
    if where != ".":
        click.echo(f"  cd {where}")
    click.echo("  feedpub serve            # build, then serve it at http://127.0.0.1:8080/")
    click.echo('  feedpub new "Title"      # start an article (a draft) in content/')


@click.command()
@click.argument("title")
@click.option("--tags", help="Comma-separated tags, e.g. --tags email,news")
@click.option("--dir", "folder", metavar="SUB", help="A folder inside content/ to write it in.")
@click.option("--slug", help="The file's name and the article's address, when not from the title.")
@site_option
def new(site, title: str, tags: str | None, folder: str | None, slug: str | None) -> None:
    """Start an article: write content/[SUB/]<slug>.md as a draft and print its path.

    The date is now, in the site's time zone. When another article already
    has the slug, -2 (or -3, ...) is added: no file is ever overwritten.
    Example: feedpub new "Rate limits in practice" --tags email
    """
    from .scaffold import new_article, split_tags

    path = new_article(site, title, now=now(site), tags=split_tags(tags), folder=folder, slug=slug)
    click.echo(_shown(path))
