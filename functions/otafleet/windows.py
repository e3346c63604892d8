"""Maintenance windows: when new images may be handed to devices.

A window is a set of weekdays and a time span in a named time zone, written like `mon-fri 01:00-05:00`
(`Europe/Berlin`). A span that ends at or before its start crosses midnight: `sat,sun 22:00-06:00` opens
on Saturday and Sunday evenings and lasts into the next mornings. Outside the window a check that would
be handed an image gets `304` (`outside-window`) and is served at a check inside it; everything else
(already up to date, the version probe, verdicts) is unaffected. A channel's window overrides its
product's. Time zones come from the IANA database (`zoneinfo`, with the `tzdata` package where the
system has none, as on Lambda), loaded only when a window is set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from otafleet.models import Window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$")


class InvalidWindow(ValueError):
    """A window specification that cannot be understood; the message says what is expected."""


@lru_cache(maxsize=32)
def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidWindow(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or UTC)") from None


def _minutes(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise InvalidWindow(f"{text!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _days(text: str) -> tuple[int, ...]:
    if text in ("daily", "every"):
        return tuple(range(7))
    found: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise InvalidWindow(f"{part!r}: days are {', '.join(DAYS)}, ranges like mon-fri, or 'daily'")
        a, b = DAYS.index(first), DAYS.index(last or first)
        found.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return tuple(sorted(found))


def parse(spec: str, tz: str = "UTC") -> Window:
    """`mon-fri 01:00-05:00` (or `daily 22:00-06:00`, `sat,sun 00:00-24:00`) in time zone `tz`."""
    match = _SPEC.match(spec.lower())
    if not match:
        raise InvalidWindow(f"{spec!r} is not a window: write DAYS HH:MM-HH:MM, e.g. 'mon-fri 01:00-05:00'")
    start, end = _minutes(match["start"]), _minutes(match["end"])
    if start == end:
        raise InvalidWindow(f"{spec!r} opens and closes at the same time; use 00:00-24:00 for whole days")
    _zone(tz)
    return Window(days=_days(match["days"]), start=start, end=end, tz=tz)


def describe(window: Window) -> str:
    days = ",".join(DAYS[d] for d in window.days)
    start, end = (f"{m // 60:02d}:{m % 60:02d}" for m in (window.start, window.end))
    return f"{days} {start}-{end} {window.tz}"


def is_open(window: Window, now: str) -> bool:
    """Whether `now` (an ISO 8601 UTC time, as checks record it) falls inside the window."""
    instant = datetime.fromisoformat(now)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    local = instant.astimezone(_zone(window.tz))
    minute = local.hour * 60 + local.minute
    day = local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= minute < window.end
    # Crosses midnight: the evening part belongs to the listed day, the morning part to the day before.
    yesterday = (local - timedelta(days=1)).weekday()
    return (day in window.days and minute >= window.start) or (yesterday in window.days and minute < window.end)
