"""The site's own short mails to one reader: the confirmation of a subscription."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from .config import Site
from .mail import simple_message
from .schedule import Schedule
from .templating import words


def list_titles(schedule: Schedule | None) -> dict[str, str]:
    """Each list's name and the title of the first digest that goes to it."""
    titles: dict[str, str] = {}
    for digest in (schedule.digests.values() if schedule else ()):
        titles.setdefault(digest.list, digest.title)
    return titles


def lists_text(site: Site, titles: dict[str, str], names: list[str]) -> str:
    """The lists' titles quoted as the site's language quotes them."""
    if site.language.startswith("fr"):
        return ", ".join(f"«\u00a0{titles.get(n, n)}\u00a0»" for n in names)
    return ", ".join(f"“{titles.get(n, n)}”" for n in names)


def confirmation(site: Site, schedule: Schedule | None, *, to: str, token: str, lists: list[str],
                 date: datetime, message_id: str) -> bytes:
    """The mail whose link confirms a subscription to LISTS."""
    vocabulary = words(site.templates_dir, site.language)
    link = site.url(f"confirm?token={quote(token)}")
    asked = lists_text(site, list_titles(schedule), lists)
    body = "\n\n".join([vocabulary["confirm_body"].format(lists=asked, title=site.title), link,
                        vocabulary["confirm_ignore"], f"— {site.title}\n{site.base_url}"])
    return simple_message(site, to=to, subject=vocabulary["confirm_subject"].format(title=site.title),
                          text=body + "\n", date=date, message_id=message_id)
