"""Cron expressions as operators write them, turned into APScheduler triggers.

APScheduler 3 numbers weekdays from Monday = 0, while cron counts Sunday = 0
(and 7): "0 9 * * 1" would fire on Tuesdays. The weekday field is therefore
rewritten with day names before APScheduler sees it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from functools import cache

CRON_FIELDS = "minute hour day month weekday"
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _day(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _DAYS and token.isalpha():
        return _DAYS.index(token[:3])
    try:
        number = int(token)
    except ValueError:
        raise ValueError(f"{token!r} is not a day (0-7, or sun to sat)") from None
    if not 0 <= number <= 7:
        raise ValueError(f"weekday {number} is not between 0 and 7")
    return number % 7


def _weekdays(field: str) -> str:
    """The days a cron weekday field names, as APScheduler day names."""
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = _day(first_text), _day(last_text)
            if last_text.strip() == "7":
                last = 7
        else:
            first = _day(span)
            last = 6 if step_text else first
        if last < first:
            raise ValueError(f"range {span} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAYS[day] for day in sorted(days))


@cache
def _trigger_class():
    """APScheduler's CronTrigger, mended for the night clocks go back.

    Asked for the time after the second 02:30 of that night, CronTrigger
    3.x answers that same 02:30 again, for ever (a known open bug), which
    would fire a job in a loop or stall it. A time that is not strictly
    later, or that repeats the previous wall-clock time, is searched again
    from a little later; cron, too, runs a time that repeats only once.
    """
    from apscheduler.triggers.cron import CronTrigger

    class MendedCronTrigger(CronTrigger):
        def get_next_fire_time(self, previous_fire_time, now):
            following = super().get_next_fire_time(previous_fire_time, now)
            if previous_fire_time is None:
                return following
            probe = max(now, previous_fire_time)
            for _ in range(12):  # three hours of probing covers any repeated hour
                if following is None or (following > previous_fire_time and following.replace(tzinfo=None)
                                         != previous_fire_time.replace(tzinfo=None)):
                    return following
                probe += timedelta(minutes=15)
                following = super().get_next_fire_time(None, probe)
            return None

    return MendedCronTrigger


def cron_trigger(expression: str, timezone: tzinfo):
    """An APScheduler trigger for a five-field cron EXPRESSION; ValueError if it is not one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields ({CRON_FIELDS}), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    if weekday != "*":
        weekday = _weekdays(weekday)
    return _trigger_class()(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday,
                            timezone=timezone)


def next_fire(expression: str, timezone: tzinfo, after: datetime) -> datetime | None:
    """The first time EXPRESSION names strictly after AFTER."""
    trigger = cron_trigger(expression, timezone)
    after = after.astimezone(timezone)
    return trigger.get_next_fire_time(after, after + timedelta(microseconds=1))


def latest_fire(expression: str, timezone: tzinfo, now: datetime) -> datetime | None:
    """The last time at or before NOW that EXPRESSION names (looking back up to a year)."""
    trigger = cron_trigger(expression, timezone)
    for days in (1, 8, 32, 367):
        moment = trigger.get_next_fire_time(None, now - timedelta(days=days))
        if moment is None or moment > now:
            continue
        while (following := trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))) \
                is not None and following <= now:
            moment = following
        return moment
    return None


def field_problems(expression: str) -> list[str]:
    """What is wrong with each field of a cron EXPRESSION, one line per bad field; [] when it is good."""
    from datetime import timezone

    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        return [f"expected 5 fields ({CRON_FIELDS}), got {len(fields)}"]
    problems = []
    for name, value in zip(CRON_FIELDS.split(), fields):
        try:
            if name == "weekday":
                _weekdays(value)
            else:
                CronTrigger(timezone=timezone.utc, **{name: value})
        except ValueError as exc:
            reason = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
            problems.append(f"{name} field {value!r}: {reason[:1].lower()}{reason[1:]}")
    if not problems:
        try:
            cron_trigger(expression, timezone.utc)
        except ValueError as exc:
            problems.append(str(exc))
    return problems
