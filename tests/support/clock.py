"""A settable clock for the service and the controller (their `clock` is a callable returning the time as
the service writes it): simulations and transition tests move it instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> str:
        return iso(self.now)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
