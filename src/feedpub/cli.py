"""The feedpub command: a thin shell over the jobs."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .config import load_site
from .errors import FeedpubError


def site_option(command):
    """Give COMMAND the --site option; it receives the loaded Site as `site`."""

    @click.option("--site", "site_dir", type=click.Path(file_okay=False, path_type=Path),
                  default=".", show_default=True, help="The site folder (holding feedpub.yaml).")
    @functools.wraps(command)
    def wrapper(site_dir: Path, **kwargs):
        try:
            return command(load_site(site_dir), **kwargs)
        except FeedpubError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _report_problems(errors: list[str], warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    for line in errors:
        click.echo(f"error: {line}", err=True)


@click.group()
@click.version_option(package_name="feedpub")
def main() -> None:
    """Publish Markdown articles as feeds, pages and email digests."""


@main.command()
@site_option
def build(site) -> None:
    """Publish new and changed articles: feeds, article pages, tag pages.

    Example: feedpub build --site my-site
    """
    from .build import build as run_build

    report = run_build(site)
    _report_problems(report.errors, report.warnings)
    click.echo(
        f"{len(report.published)} articles published; parsed {report.parsed}, "
        f"wrote {len(report.written)} files, {report.unchanged} unchanged, "
        f"removed {len(report.removed)} → {site.output_dir}"
    )
    if report.errors:
        sys.exit(1)


@main.command()
@site_option
def check(site) -> None:
    """Check settings, templates and every article without writing anything.

    Exits 0 only when all is clean. Example: feedpub check
    """
    from .build import check as run_check

    errors, warnings = run_check(site)
    _report_problems(errors, warnings)
    if errors or warnings:
        click.echo(f"{len(errors)} errors, {len(warnings)} warnings", err=True)
        sys.exit(1)
    click.echo("all clean")


@main.command()
@click.argument("name")
@click.option("--preview", is_flag=True, help="Write the issue to public/preview/NAME/ and change no state.")
@click.option("--timings", is_flag=True, help="Print the seconds spent in each step.")
@site_option
def digest(site, name: str, preview: bool, timings: bool) -> None:
    """Compose digest NAME now from the articles first published since its last issue.

    Example: feedpub digest weekly --preview
    """
    from .jobs import compose_digest, open_store
    from .schedule import load_schedule

    schedule = load_schedule(site.root, site.timezone)
    store = open_store(site)
    try:
        outcome = compose_digest(site, schedule, name, store, preview=preview)
    finally:
        store.close()
    _report_problems(outcome.build.errors, outcome.build.warnings)
    click.echo(outcome.message)
    for path in outcome.preview_files:
        click.echo(str(path))
    if timings:
        click.echo(" ".join(f"{step}={seconds:.3f}s" for step, seconds in outcome.timings.items()))
