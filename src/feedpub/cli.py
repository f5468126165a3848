"""The feedpub command: a thin shell over the jobs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._cli import configure_logging, now, report_problems, require_key, site_option
from .cli_site import init, new
from .languages import count
from .cli_subscribers import subscribers

EXIT_TRANSPORT_DOWN = 75  # EX_TEMPFAIL: try again later


@click.group()
@click.version_option(package_name="feedpub")
def main() -> None:
    """Publish Markdown articles as feeds, pages and email digests."""


main.add_command(subscribers)
main.add_command(init)
main.add_command(new)


@main.command()
@site_option
def build(site) -> None:
    """Publish new and changed articles: feeds, article pages, tag pages.

    Example: feedpub build --site my-site
    """
    from .build import build as run_build
    from .progress import bar

    with bar("building", delay=1.0) as progress:  # a quick build prints what it always did
        report = run_build(site, on_progress=progress.update)
    report_problems(report.errors, report.warnings)
    click.echo(
        f"{count(len(report.published), 'article')} published; parsed {report.parsed}, "
        f"wrote {count(len(report.written), 'file')}, {report.unchanged} unchanged, "
        f"removed {len(report.removed)} → {site.output_dir}"
    )
    if report.errors:
        sys.exit(1)


@main.command()
@click.option("--site", "site_dir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The site folder (holding feedpub.yaml).")
@click.option("--smtp", is_flag=True, help="Then log in to the SMTP server of email.smtp, sending nothing.")
def check(site_dir: Path, smtp: bool) -> None:
    """Check settings, schedule, templates, content and mail setup, writing nothing.

    Every problem is one line; exits 0 when there is no error. Example: feedpub check --smtp
    """
    import os

    from .checks import check_site

    found = check_site(site_dir, os.environ, smtp=smtp)
    for line in found.notes:
        click.echo(line)
    for line in found.errors:  # what must be fixed first
        click.echo(f"error: {line}", err=True)
    report_problems([], found.warnings)
    if found.errors or found.warnings:
        click.echo(f"{count(len(found.errors), 'error')}, {count(len(found.warnings), 'warning')}", err=True)
        if found.errors:
            sys.exit(1)
    else:
        click.echo("all clean")


@main.command()
@click.argument("name")
@click.option("--preview", is_flag=True, help="Write the issue to state/preview/NAME/ and change no state.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --preview: the folder to write the issue to instead.")
@click.option("--timings", is_flag=True, help="Print the seconds spent in each step.")
@click.option("--send", "and_send", is_flag=True, help="Also send what is queued, now.")
@site_option
def digest(site, name: str, preview: bool, out_dir: Path | None, timings: bool, and_send: bool) -> None:
    """Compose digest NAME now from the articles first published since its last issue, and queue it.

    The issue is queued for every active subscriber of its list in the same
    step; `feedpub serve` or `feedpub send` delivers it, or --send now.
    Example: feedpub digest weekly --preview
    """
    from .jobs import compose_digest, open_store
    from .schedule import load_schedule

    if out_dir is not None and not preview:
        raise click.UsageError("--out is only for --preview")
    if and_send and not preview:
        require_key(site)
    schedule = load_schedule(site.root, site.timezone)
    store = open_store(site)
    try:
        outcome = compose_digest(site, schedule, name, store, now=now(site), preview=preview,
                                 preview_dir=out_dir)
        report_problems(outcome.build.errors, outcome.build.warnings)
        click.echo(outcome.message)
        for path in outcome.preview_files:
            click.echo(str(path))
        if timings:
            click.echo(" ".join(f"{step}={seconds:.3f}s" for step, seconds in outcome.timings.items()))
        if and_send and not preview:
            _run_send(site, store)
    finally:
        store.close()


def _run_send(site, store) -> None:
    """Send what is queued, with a progress bar on a terminal and log lines elsewhere."""
    import os
    import signal
    import threading

    from .delivery import send_queued
    from .ledger import Ledger
    from .schedule import load_schedule

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    total = Ledger(store).waiting()
    progress = _progress(total)
    try:
        report = send_queued(site, store, environ=os.environ, schedule=load_schedule(site.root, site.timezone),
                             stop=stop, on_progress=progress)
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    for reason, addresses in report.refusals.items():
        shown = ", ".join(addresses[:5]) + (f" and {len(addresses) - 5} more" if len(addresses) > 5 else "")
        click.echo(f"not sent ({len(addresses)}): {reason}: {shown}", err=True)
    if report.slowed_to is not None:
        click.echo(f"the server asked to slow down: sending at {report.slowed_to:.2g} messages/s", err=True)
    if report.transport_error:
        when = f"{report.retry_at.astimezone(site.tz):%H:%M:%S %Z}" if report.retry_at else "later"
        click.echo(f"transport down: {report.transport_error}; unsent messages stay queued "
                   f"(the service tries again at {when}; `feedpub send` tries now)", err=True)
    state = "stopped" if report.stopped else "done"
    click.echo(f"{state}: {report.sent} sent, {report.retrying} to retry, {report.failed} failed "
               f"({report.bounced} bounced), {report.recovered} resumed; {report.rate:.0f} messages/s")
    if report.transport_error:
        sys.exit(EXIT_TRANSPORT_DOWN)
    if report.problems or report.failed:
        sys.exit(1)
    if report.stopped:  # asked to stop (SIGTERM, Ctrl-C): what is left stays queued for the next run
        click.echo("stopped before the end: the unsent messages stay queued", err=True)
        sys.exit(EXIT_TRANSPORT_DOWN)


class _progress:
    """A progress bar on a terminal; a log line every few seconds otherwise."""

    def __init__(self, total: int) -> None:
        import time

        from .progress import bar

        self.total, self.clock, self.last = total, time.monotonic, time.monotonic()
        self.bar = bar("sending", total) if total else None

    def __call__(self, report) -> None:
        done = report.sent + report.failed + report.retrying
        if self.bar is not None and self.bar.on_terminal:
            self.bar.update(done, detail=f"{report.failed} failed · {report.retrying} retrying")
        elif self.clock() - self.last >= 5:
            self.last = self.clock()
            click.echo(f"sending: {report.sent} sent, {report.failed} failed, {report.retrying} retrying "
                       f"of {self.total}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command()
@click.option("--retry-failed", "retry_failed", is_flag=True,
              help="First put failed messages back in the queue (of ISSUE only, when given).")
@click.option("--test", "test_address", metavar="ADDRESS",
              help="Mail only ADDRESS the digest's current preview ([test] subject); record nothing.")
@click.argument("issue", required=False, metavar="[ISSUE | DIGEST]")
@site_option
def send(site, retry_failed: bool, test_address: str | None, issue: str | None) -> None:
    """Send every queued message; after a crash, resume where it stopped.

    Exits 0 when all went, 1 when some messages failed, 75 when the mail
    server could not be used or the send was stopped (the rest stays queued).
    Example: feedpub send --retry-failed, or feedpub send --test you@example.org weekly
    """
    from .jobs import open_store
    from .ledger import Ledger

    if test_address is not None:
        from .testsend import run_test_send

        return run_test_send(site, test_address, issue)
    issue = click.INT.convert(issue, None, None) if issue is not None else None
    if issue is not None and not retry_failed:
        raise click.UsageError("an ISSUE is only for --retry-failed")
    require_key(site)
    store = open_store(site)
    try:
        if retry_failed:
            requeued = Ledger(store).retry_failed(issue)
            click.echo(f"{count(requeued, 'failed message', 'failed messages')} queued again")
        _run_send(site, store)
    finally:
        store.close()


@main.command()
@site_option
def status(site) -> None:
    """Show each recent issue with its delivery counts.

    Example: feedpub status
    """
    from collections import Counter

    from .bounces import issue_outcomes, outcome_text
    from .cron import next_fire
    from .health import read_health
    from .jobs import open_store
    from .ledger import Ledger
    from .schedule import load_schedule

    schedule = load_schedule(site.root, site.timezone)
    moment = now(site)
    store = open_store(site)
    try:
        rows = Ledger(store).counts()
        click.echo("jobs:")
        build_when = (f"cron {schedule.build_cron}" if schedule.build_cron
                      else f"every {schedule.build_every.total_seconds() / 60:g} minutes")
        click.echo(f"  build: {build_when}")
        for name, digest in schedule.digests.items():
            upcoming = next_fire(digest.cron, schedule.tz, moment) if digest.cron else None
            last = store.last_window(name)
            upcoming_text = f"{upcoming:%Y-%m-%d %H:%M %Z}" if upcoming else "never (no cron)"
            last_text = f"{last.astimezone(schedule.tz):%Y-%m-%d %H:%M %Z}" if last else "none"
            click.echo(f"  {name}: list {digest.list}, next {upcoming_text}, last window {last_text}")
        health = read_health(store)
        outcomes = issue_outcomes(store, [row.issue_id for row in rows])
    finally:
        store.close()
    for transport in health:
        if transport.last_error and transport.faults:
            retry = transport.retry_at.astimezone(site.tz) if transport.retry_at else None
            click.echo(f"transport {transport.name}: {transport.last_error} "
                       f"(at {transport.last_error_at.astimezone(site.tz):%Y-%m-%d %H:%M:%S %Z}"
                       + (f"; next try at {retry:%Y-%m-%d %H:%M:%S %Z}" if retry else "") + ")")
    click.echo("issues:")
    if not rows:
        click.echo("  no issue yet")
    for row in rows:
        c = row.counts
        accepted = c["sent"] + c["bounced"]
        said, warnings = outcome_text(outcomes.get(row.issue_id, Counter()), accepted)
        click.echo(f"  {row.digest} {row.slug}: {c['pending'] + c['sending']} queued, {accepted} sent, "
                   f"{c['retry']} retrying, {c['failed']} failed, {c['skipped']} skipped; {said} — {row.subject}")
        for warning in warnings:
            click.echo(f"    warning: {warning}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--web-only", is_flag=True, help="Serve HTTP without running the schedule.")
@click.option("--dev", is_flag=True, help="Preview while writing: drafts shown, rebuilt on each change, "
              "pages reload themselves; no schedule, no mail (--port 0: any free port).")
@site_option
def serve(site, host: str, port: int, web_only: bool, dev: bool) -> None:
    """Run the schedule and serve the site, the archive and subscriptions.

    Stops cleanly on SIGTERM or Ctrl-C: a send in progress records the
    messages in flight first. Example: feedpub serve --port 8080
    """
    if dev:
        from .devserver import serve_dev

        return serve_dev(site, host=host, port=port)
    import os
    import signal

    from .jobs import open_store
    from .runlock import RunLock
    from .scheduler import Service
    from .schedule import load_schedule
    from .devserver import local_url
    from .web import create_app
    from .webserver import serve as serve_http

    require_key(site)
    configure_logging()
    _warn_if_links_point_elsewhere(site, host, port)
    schedule = load_schedule(site.root, site.timezone)
    lock = None if web_only else RunLock(site.state_dir).acquire()
    store = open_store(site)
    service = None
    try:
        if not web_only:
            service = Service(site, schedule, store, environ=os.environ)
            service.build()
            service.start()
        app = create_app(site, schedule, store, service=service, environ=os.environ)
        # uvicorn answers SIGTERM and SIGINT by stopping the server, then raises the
        # signal again once it is done; these handlers take that second one, so the
        # scheduler below is stopped cleanly instead of the process being killed.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: service and service.stopping.set())
        serve_http(app, host=host, port=port, settings=site.web,
                   on_ready=lambda bound: click.echo(local_url(host, bound)))
    finally:
        if service is not None:
            service.stop()
        store.close()
        if lock is not None:
            lock.release()


def _warn_if_links_point_elsewhere(site, host: str, port: int) -> None:
    """Pages and mails link to base_url; on this machine, a different port sends readers elsewhere."""
    from urllib.parse import urlsplit

    base = urlsplit(site.base_url)
    local = base.hostname in {"127.0.0.1", "localhost", "::1", host}
    if local and (base.port or {"http": 80, "https": 443}.get(base.scheme)) != port:
        click.echo(f"warning: serving on port {port}, but links point to base_url {site.base_url} "
                   f"(feedpub.yaml); set base_url to http://{base.hostname}:{port}/ to follow them here",
                   err=True)


@main.command("bounces")
@site_option
def read_bounces(site) -> None:
    """Read the bounce mailbox once: bounced rows, suppressed readers, complaints, unsubscribes by mail.

    What was understood moves to the mailbox's `processed` folder. The
    service does this every few minutes. Example: feedpub bounces
    """
    import os

    from .bounces import for_site, one_reader, summary
    from .errors import ConfigError
    from .jobs import open_store
    from .mailboxes import open_source

    if site.bounces_mailbox is None:
        raise ConfigError("feedpub.yaml", "bounces.mailbox",
                          "not set: a Maildir folder, or imaps://USER@HOST/FOLDER, where reports arrive")
    store = open_store(site)
    try:
        with one_reader(site):
            outcome = for_site(site, store, os.environ).read(open_source(site.bounces_mailbox, os.environ),
                                                             now(site))
    finally:
        store.close()
    click.echo(summary(outcome, site.bounces_mailbox))


@main.command("run")
@click.argument("job")
@site_option
def run_job(site, job: str) -> None:
    """Run one job of schedule.yaml now, as the scheduler would: build, send, or a digest's name.

    Example: feedpub run daily
    """
    import os

    from .jobs import open_store
    from .scheduler import Service
    from .schedule import load_schedule

    configure_logging()
    schedule = load_schedule(site.root, site.timezone)
    store = open_store(site)
    try:
        service = Service(site, schedule, store, environ=os.environ)
        if job == "build":
            service.build()
        elif job == "send":
            service.send()
        else:
            schedule.digest(job)  # an unknown name is an error that lists the known ones
            service.digest_now(job)
    finally:
        store.close()
