"""New sites and new articles: `feedpub init` writes a site folder, `feedpub new` a draft.

The files of a new site live in skeleton/ next to this module, with
`${name}` marks where the site's own values go; every value is written as
YAML by the YAML library, so a title holding quotes, colons or `#` reads
back exactly as it was given.
"""

from __future__ import annotations

import re
import shutil
import string
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from .config import SETTINGS_FILE, Site
from .content import slugify, slug_for
from .errors import FeedpubError
from .schedule import SCHEDULE_FILE
from .templating import DEFAULT_TEMPLATES

SKELETON = Path(__file__).parent / "skeleton"
# Skeleton file -> where it goes in the site. The ignore file is stored without
# its dot so that it does not act on the package's own folder.
SITE_FILES = {
    "feedpub.yaml": SETTINGS_FILE,
    "schedule.yaml": SCHEDULE_FILE,
    "content/welcome.md": "content/welcome.md",
    "gitignore": ".gitignore",
}
IGNORED = ("public/", "state/", "outbox/")


def scalar(value: object) -> str:
    """VALUE as one YAML scalar, quoted only when YAML needs it."""
    text = yaml.safe_dump(value, allow_unicode=True, width=float("inf"))
    return text.removesuffix("\n...\n").removesuffix("\n")


def one_line(text: str, what: str) -> str:
    """TEXT with its runs of white space made single spaces; refused when nothing is left."""
    squashed = " ".join(text.split())
    if not squashed:
        raise FeedpubError(f"{what}: give some text")
    return squashed


def title_from_folder(folder: Path) -> str:
    """"my-news_site" -> "My news site"."""
    words = re.sub(r"[-_.]+", " ", folder.name).strip()
    return (words[:1].upper() + words[1:]) if words else "My site"


def _site_already_there(folder: Path) -> str | None:
    """What shows FOLDER already holds a site, or None."""
    for name in (SETTINGS_FILE, SCHEDULE_FILE):
        if (folder / name).exists():
            return name
    content = folder / "content"
    if content.is_dir() and any(p.is_file() for p in content.rglob("*")):
        return "content/"
    if content.exists() and not content.is_dir():
        return "content"
    return None


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FeedpubError(f"--timezone: {name!r} is not a known time zone (e.g. Europe/Paris, UTC)") from None
    return name


def init_site(folder: Path, *, title: str | None = None, language: str = "en", timezone: str = "UTC",
              templates: bool = False, now: datetime | None = None) -> list[str]:
    """Write a ready site into FOLDER; return the paths written, relative to it.

    Nothing is written when FOLDER already holds a site, or when a file that
    would be written exists (the .gitignore excepted: missing lines are added).
    """
    if folder.exists() and not folder.is_dir():
        raise FeedpubError(f"{folder}: is a file, not a folder")
    if found := _site_already_there(folder):
        raise FeedpubError(f"{folder}: already holds a site ({found}); init writes nothing over it")
    if templates and (folder / "templates").exists():
        raise FeedpubError(f"{folder}: templates/ already exists; init writes nothing over it")
    timezone = _timezone(timezone)
    title = one_line(title, "--title") if title is not None else title_from_folder(folder.resolve())
    language = one_line(language, "--language")
    moment = (now or datetime.now(ZoneInfo(timezone))).replace(second=0, microsecond=0)
    values = {
        "title": scalar(title),
        "description": scalar(f"News and articles from {title}."),
        "author": scalar(title),
        # A display name holding quotes or angle brackets would not be one mailbox.
        "sender": scalar(re.sub(r'["<>]', "", title) + " <news@example.org>"),
        "language": scalar(language),
        "timezone": scalar(timezone),
        "digest_title": scalar(f"{title} — the week"),
        "article_title": scalar(f"Welcome to {title}"),
        "date": moment.isoformat(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source, target in SITE_FILES.items():
        text = string.Template((SKELETON / source).read_text(encoding="utf-8")).substitute(values)
        path = folder / target
        if target == ".gitignore" and path.exists():
            if _add_missing_lines(path, IGNORED):
                written.append(target)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
        written.append(target)
    if templates:
        shutil.copytree(DEFAULT_TEMPLATES, folder / "templates", ignore=shutil.ignore_patterns("__pycache__"))
        written.append("templates/")
    return written


def _add_missing_lines(path: Path, lines: tuple[str, ...]) -> bool:
    """Append to the file at PATH those of LINES it lacks; True when it changed."""
    text = path.read_text(encoding="utf-8")
    missing = [line for line in lines if line not in text.splitlines()]
    if missing:
        path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(missing) + "\n",
                        encoding="utf-8")
    return bool(missing)


_OPTIONAL_FIELDS = """\
# Optional: remove the "# " to use one. Without summary, key_points or faq,
# feedpub takes the opening paragraphs, the first bullet list and the section
# headed FAQ. slug sets the address, image is relative to this file's folder.
# summary: One or two sentences.
# key_points: [First point, Second point]
# faq:
#   - q: A question?
#     a: Its answer.
# slug: {slug}
# image: images/cover.png
# updated: {date}
# author: {author}
"""


def _folder_inside(content: Path, sub: str | None) -> Path:
    """CONTENT/SUB, refused unless it stays inside CONTENT (no "..", no absolute path, no link out)."""
    if not sub:
        return content
    target = (content / sub).resolve()
    if Path(sub).is_absolute() or ".." in Path(sub).parts or not target.is_relative_to(content.resolve()):
        raise FeedpubError(f"--dir {sub}: must be a folder inside {content.name}/")
    return target


def _slugs_in_use(content: Path) -> set[str]:
    """The slugs the build gives the articles already there (from their file names)."""
    return {slug_for(p.relative_to(content).as_posix()) for p in content.rglob("*.md")} if content.is_dir() else set()


def new_article(site: Site, title: str, *, now: datetime, tags: tuple[str, ...] = (), folder: str | None = None,
                slug: str | None = None) -> Path:
    """Write a draft named after TITLE under the site's content folder; return its path.

    The file is named with the slug the build will give it. When another
    article already has that slug, -2, -3, ... is added: an existing file is
    never overwritten, and no two articles share an address.
    """
    title = one_line(title, "title")
    base = slugify(slug or title)
    if not base:
        raise FeedpubError(f"{title!r}: no ASCII letters or digits to name the file; give one with --slug")
    target = _folder_inside(site.content_dir, folder)
    taken = _slugs_in_use(site.content_dir)
    name = next(candidate for candidate in (base if n == 1 else f"{base}-{n}" for n in range(1, 10_000))
                if candidate not in taken)
    date = now.replace(microsecond=0).isoformat()
    front = yaml.safe_dump({"title": title}, allow_unicode=True, width=float("inf"))
    # The date is ours, made of digits and ISO separators: written bare, as people write it.
    front += f"date: {date}\n"
    front += yaml.safe_dump({"tags": list(tags), "draft": True}, allow_unicode=True, width=float("inf"),
                            default_flow_style=None, sort_keys=False)
    front += _OPTIONAL_FIELDS.format(slug=name, date=date, author=scalar(site.author.name or "A. Writer"))
    body = "Write the article here, in Markdown. Remove `draft: true` to publish it.\n"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.md"
    with path.open("x", encoding="utf-8") as out:
        out.write(f"---\n{front}---\n\n{body}")
    return path


def split_tags(text: str | None) -> tuple[str, ...]:
    """"a, b,,c" -> ("a", "b", "c")."""
    return tuple(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))
