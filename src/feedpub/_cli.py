"""What the command modules share: the --site option, problem lines, the clock, logging."""

from __future__ import annotations

import functools
from datetime import datetime
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


def require_key(site) -> None:
    """Stop before doing anything when personal links could not be signed."""
    import os

    from .tokens import key_problem

    problem = key_problem(site, os.environ)
    if problem:
        raise click.ClickException(problem)


def report_problems(errors: list[str], warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    for line in errors:
        click.echo(f"error: {line}", err=True)


def now(site) -> datetime:
    return datetime.now(site.tz)


def configure_logging() -> None:
    """Log lines on stderr, each stamped with an ISO time that carries its offset."""
    import logging

    class ZonedFormatter(logging.Formatter):
        def formatTime(self, record, datefmt=None) -> str:  # noqa: N802 (logging's name)
            return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")

    handler = logging.StreamHandler()
    handler.setFormatter(ZonedFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
