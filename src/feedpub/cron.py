"""Cron expressions as operators write them, turned into APScheduler triggers.

APScheduler 3 numbers weekdays from Monday = 0, while cron counts Sunday = 0
(and 7): "0 9 * * 1" would fire on Tuesdays. The weekday field is therefore
rewritten with day names before APScheduler sees it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

CRON_FIELDS = "minute hour day month weekday"
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _day(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _DAYS and token.isalpha():
        return _DAYS.index(token[:3])
    number = int(token)  # ValueError for anything else
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


def cron_trigger(expression: str, timezone: tzinfo):
    """An APScheduler CronTrigger for a five-field cron EXPRESSION; ValueError if it is not one."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields ({CRON_FIELDS}), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    if weekday != "*":
        weekday = _weekdays(weekday)
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday,
                       timezone=timezone)


def next_fire(expression: str, timezone: tzinfo, after: datetime) -> datetime | None:
    """The first time EXPRESSION names strictly after AFTER."""
    trigger = cron_trigger(expression, timezone)
    return trigger.get_next_fire_time(None, after + timedelta(microseconds=1))


def latest_fire(expression: str, timezone: tzinfo, now: datetime) -> datetime | None:
    """The last time at or before NOW that EXPRESSION names (looking back up to a year)."""
    trigger = cron_trigger(expression, timezone)
    for days in (1, 8, 32, 367):
        moment = trigger.get_next_fire_time(None, now - timedelta(days=days))
        if moment is None or moment > now:
            continue
        while True:
            following = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
            if following is None or following > now:
                return moment
            moment = following
    return None
