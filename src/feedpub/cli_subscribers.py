"""`feedpub subscribers …`: add, remove, list, import and export subscribers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._cli import now, site_option
from .languages import count
from .progress import bar


@click.group()
def subscribers() -> None:
    """Add, remove, list, import and export subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option("--list", "lists", multiple=True, help="A list to put them on (repeat for several).")
@site_option
def subscribers_add(site, email: str, name: str, lists: tuple[str, ...]) -> None:
    """Add an active subscriber, or add lists to a known one.

    Example: feedpub subscribers add ada@example.org --name Ada --list weekly
    """
    from .jobs import open_store
    from .subscribers import Subscribers

    store = open_store(site)
    try:
        outcome, subscriber = Subscribers(store).upsert(email, name=name, lists=lists, source="cli", now=now(site))
    except ValueError as exc:
        raise click.ClickException(f"{email}: {exc}") from None
    finally:
        store.close()
    if outcome == "refused":
        raise click.ClickException(f"{subscriber.email} is {subscriber.status}: feedpub never subscribes "
                                   f"them again on its own")
    click.echo(f"{outcome}: {subscriber.email} ({subscriber.status}) on {', '.join(subscriber.lists) or 'no list'}")


@subscribers.command("remove")
@click.argument("email")
@site_option
def subscribers_remove(site, email: str) -> None:
    """Delete a subscriber and their delivery history."""
    from .jobs import open_store
    from .subscribers import Subscribers

    store = open_store(site)
    try:
        removed = Subscribers(store).remove(email)
    except ValueError as exc:
        raise click.ClickException(f"{email}: {exc}") from None
    finally:
        store.close()
    if not removed:
        raise click.ClickException(f"{email}: no such subscriber")
    click.echo(f"removed: {email}")


@subscribers.command("list")
@click.option("--list", "list_name", help="Only subscribers of this list.")
@click.option("--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced", "complained"]))
@site_option
def subscribers_list(site, list_name: str | None, status: str | None) -> None:
    """List subscribers, with a count; for bounced and complained ones, the report's reason."""
    from .bounces import reasons
    from .jobs import open_store
    from .subscribers import Subscribers

    store = open_store(site)
    listed = 0
    try:
        found = list(Subscribers(store).all(list_name=list_name, status=status))
        why = reasons(store, [s.id for s in found if s.status in ("bounced", "complained")])
        for s in found:
            line = f"{s.email}\t{s.name}\t{s.status}\t{' '.join(s.lists)}"
            click.echo(line + (f"\t{why[s.id]}" if s.id in why else ""))
            listed += 1
    finally:
        store.close()
    click.echo(count(listed, "subscriber"))


@subscribers.command("export")
@site_option
def subscribers_export(site) -> None:
    """Write every subscriber as CSV to standard output."""
    from .jobs import open_store
    from .subscribers import Subscribers

    store = open_store(site)
    try:
        Subscribers(store).export_csv(sys.stdout)
    finally:
        store.close()


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "lists", multiple=True, help="Put everyone imported on this list too.")
@click.option("--encoding", help="The file's encoding when it is not UTF-8: latin-1, cp1252...")
@site_option
def subscribers_import(site, file: Path, lists: tuple[str, ...], encoding: str | None) -> None:
    """Import subscribers from a CSV file with a header row: email, name, lists.

    Bad rows are reported by line and skipped; an address met twice keeps its
    first row; addresses that unsubscribed or bounced are never reactivated.
    Example: feedpub subscribers import readers.csv --list weekly --encoding cp1252
    """
    import codecs

    from .csvimport import import_csv
    from .jobs import open_store
    from .schedule import load_schedule
    from .subscribers import Subscribers

    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise click.BadParameter(f"{encoding!r} is not an encoding Python knows", param_hint="--encoding")
    # A list no digest sends to is most often a typo; it is warned about, not refused,
    # since a list may be filled before its digest is added to schedule.yaml.
    known = {digest.list for digest in load_schedule(site.root, site.timezone).digests.values()}
    for name in dict.fromkeys(lists):
        if name not in known:
            click.echo(f"warning: --list {name}: no digest in schedule.yaml sends to this list", err=True)
    store = open_store(site)
    try:
        with bar("importing") as progress:
            report = import_csv(Subscribers(store), file, extra_lists=lists, now=now(site), encoding=encoding,
                                known_lists=known, on_row=lambda done, total: progress.update(done, total))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    for level, line in report.messages:
        click.echo(f"{level}: {line}", err=True)
    duplicates = f", {count(report.duplicates, 'duplicate row')} skipped" if report.duplicates else ""
    click.echo(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
               f"{len(report.refused)} not reactivated (unsubscribed or bounced), {count(len(report.errors), 'bad row')}"
               f"{duplicates}")
    if report.errors:
        sys.exit(1)
