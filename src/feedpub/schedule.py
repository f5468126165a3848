"""The jobs of schedule.yaml: when to build, and which digests to compose for which list."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from .config import ConfigError, Section, read_yaml
from .cron import CRON_FIELDS, field_problems

SCHEDULE_FILE = "schedule.yaml"
DEFAULT_SUBJECT = "{{ site.title }} — {{ date }}"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_LIST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # as subscribers.py accepts them


@dataclass(frozen=True)
class Digest:
    """One newsletter: what goes in it, to whom, and when."""

    name: str
    title: str
    list: str
    cron: str | None = None
    tags: tuple[str, ...] = ()
    max_articles: int = 10
    skip_if_empty: bool = True
    subject: str = DEFAULT_SUBJECT
    faq_questions: int = 2


@dataclass(frozen=True)
class Schedule:
    timezone: str
    build_every: timedelta | None = timedelta(minutes=10)
    build_cron: str | None = None
    grace: timedelta = timedelta(hours=1)
    digests: dict[str, Digest] = field(default_factory=dict)
    bounces_every: timedelta = timedelta(minutes=5)  # reading the bounce mailbox, when feedpub.yaml names one

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def digest(self, name: str) -> Digest:
        if name not in self.digests:
            known = ", ".join(sorted(self.digests)) or "none"
            raise ConfigError(SCHEDULE_FILE, "digests", f"no digest named {name!r} (known: {known})")
        return self.digests[name]


def _cron(section: Section, key: str, tz: ZoneInfo) -> str | None:
    expression = section.str(key)
    if expression is None:
        return None
    problems = field_problems(expression)
    if problems and section.problems is None:
        raise section.error(key, f"{expression!r} is not a cron expression ({CRON_FIELDS})")
    for problem in problems:  # when collecting, every bad field on its own line
        section.fail(section.error(key, f"{expression!r}: {problem}"))
    return None if problems else expression


def _minutes(section: Section, key: str, default: int) -> timedelta:
    return timedelta(minutes=section.int(key, default, minimum=1))


def _digest(name: str, section: Section, tz: ZoneInfo) -> Digest:
    if not _NAME.match(name):
        section.fail(ConfigError(SCHEDULE_FILE, f"digests.{name}", "names use lower-case letters, digits, - and _"))
    tags = section.data.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, (str, int)) for t in tags):
        section.fail(section.error("tags", "must be a list of tags"))
        tags = []
    section.used.add("tags")
    digest = Digest(
        name=name,
        title=section.str("title", name),
        list=_list_name(section, name),
        cron=_cron(section, "cron", tz),
        tags=tuple(str(t) for t in tags),
        max_articles=section.int("max_articles", 10, minimum=1),
        skip_if_empty=section.bool("skip_if_empty", True),
        subject=section.str("subject", DEFAULT_SUBJECT),
        faq_questions=section.int("faq_questions", 2, minimum=0),
    )
    section.check_unknown()
    return digest


def _list_name(section: Section, default: str) -> str:
    """The subscriber list a digest goes to: a name subscribers can be put on."""
    name = section.str("list", default)
    if not name:
        section.fail(section.error("list", "is empty: name the subscriber list this digest goes to"))
    elif not _LIST.match(name):
        section.fail(section.error("list", f"{name!r} may only hold letters, digits, - and _"))
    return name


def load_schedule(root: Path, default_timezone: str = "UTC",
                  problems: list[ConfigError] | None = None) -> Schedule:
    """Read and check ROOT/schedule.yaml; a missing file means no jobs but builds.

    Given PROBLEMS, every mistake is added there instead of raising the first (see settings.Section).
    """
    path = root / SCHEDULE_FILE
    data = read_yaml(path, SCHEDULE_FILE) if path.exists() else {}
    top = Section(data, SCHEDULE_FILE, problems=problems)
    name = top.str("timezone", default_timezone)
    try:
        tz = ZoneInfo(name)
    except Exception:
        top.fail(top.error("timezone", f"{name!r} is not a known time zone"))
        name, tz = "UTC", ZoneInfo("UTC")
    build = top.section("build")
    build_cron = _cron(build, "cron", tz)
    every = None if build_cron else _minutes(build, "every_minutes", 10)
    build.check_unknown()
    bounces = top.section("bounces")
    bounces_every = _minutes(bounces, "every_minutes", 5)
    bounces.check_unknown()
    digests_section = top.section("digests")
    digests = {
        str(key): _digest(str(key), digests_section.section(str(key)), tz)
        for key in digests_section.data
    }
    schedule = Schedule(
        timezone=name,
        build_every=every,
        build_cron=build_cron,
        grace=_minutes(top, "grace_minutes", 60),
        digests=digests,
        bounces_every=bounces_every,
    )
    top.check_unknown()
    return schedule
