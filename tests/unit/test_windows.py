"""Maintenance windows: parsing, and whether an instant is inside, across midnight and DST."""

from __future__ import annotations

import pytest

from otafleet import windows
from otafleet.decision import Outcome, decide
from otafleet.models import Catalog, Channel, Device, Kind, Product, Release, Track
from otafleet.protocol import parse_check
from support.devices import esp8266_headers


@pytest.mark.parametrize(
    ("spec", "days", "start", "end"),
    [
        ("mon-fri 01:00-05:00", (0, 1, 2, 3, 4), 60, 300),
        ("sat,sun 22:00-06:00", (5, 6), 1320, 360),
        ("daily 00:00-24:00", (0, 1, 2, 3, 4, 5, 6), 0, 1440),
        ("fri-mon 9:30-10:00", (0, 4, 5, 6), 570, 600),
        ("  Tue 23:00-01:00 ", (1,), 1380, 60),
    ],
)
def test_parse(spec: str, days: tuple[int, ...], start: int, end: int) -> None:
    w = windows.parse(spec, "Europe/Berlin")
    assert (w.days, w.start, w.end, w.tz) == (days, start, end, "Europe/Berlin")


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("weekdays 01:00-05:00", "UTC", "days are"),
        ("mon 25:00-26:00", "UTC", "not a time of day"),
        ("mon 01:00-01:00", "UTC", "same time"),
        ("mon 1-5", "UTC", "not a window"),
        ("mon 01:00-05:00", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_parse_mistakes(spec: str, tz: str, message: str) -> None:
    with pytest.raises(windows.InvalidWindow, match=message):
        windows.parse(spec, tz)


@pytest.mark.parametrize(
    ("spec", "tz", "now", "inside"),
    [
        ("mon-fri 01:00-05:00", "UTC", "2026-11-30T01:00:00Z", True),  # Monday, at the opening minute
        ("mon-fri 01:00-05:00", "UTC", "2026-11-30T05:00:00Z", False),  # the end is exclusive
        ("mon-fri 01:00-05:00", "UTC", "2026-11-29T02:00:00Z", False),  # Sunday
        # Berlin is UTC+1 in winter: 00:30 UTC is 01:30 there.
        ("mon-fri 01:00-05:00", "Europe/Berlin", "2026-11-30T00:30:00Z", True),
        ("mon-fri 01:00-05:00", "Europe/Berlin", "2026-11-30T04:30:00Z", False),
        # ... and UTC+2 in summer.
        ("mon-fri 01:00-05:00", "Europe/Berlin", "2026-06-29T23:30:00Z", True),  # Tuesday 01:30 there
        # Across midnight: Saturday evening and Sunday morning belong to Saturday's window.
        ("sat 22:00-06:00", "UTC", "2026-11-28T23:00:00Z", True),
        ("sat 22:00-06:00", "UTC", "2026-11-29T05:59:00Z", True),
        ("sat 22:00-06:00", "UTC", "2026-11-29T22:30:00Z", False),  # Sunday evening
        ("sat 22:00-06:00", "UTC", "2026-11-28T05:00:00Z", False),  # Saturday morning (Friday's night)
        ("daily 00:00-24:00", "Asia/Tokyo", "2026-11-28T15:00:00Z", True),
    ],
)
def test_is_open(spec: str, tz: str, now: str, inside: bool) -> None:
    assert windows.is_open(windows.parse(spec, tz), now) is inside


def test_describe_round_trips() -> None:
    w = windows.parse("sat,sun 22:00-06:00", "Europe/Berlin")
    assert windows.describe(w) == "sat,sun 22:00-06:00 Europe/Berlin"
    days, span, tz = windows.describe(w).split()
    assert windows.parse(f"{days} {span}", tz) == w


RELEASES = {
    (Kind.APP, v): Release("door", Kind.APP, v, 1000, v * 8, "0" * 64, f"firmware/door/{v}.bin", chip="esp8266")
    for v in ("1.0", "1.1")
}
NIGHTS = windows.parse("daily 01:00-05:00")


@pytest.mark.parametrize(
    ("product_window", "channel_window", "now", "reason"),
    [
        (NIGHTS, None, "2026-11-30T12:00:00Z", "outside-window"),
        (NIGHTS, None, "2026-11-30T02:00:00Z", "offer"),
        (NIGHTS, windows.parse("daily 11:00-13:00"), "2026-11-30T12:00:00Z", "offer"),  # the channel's wins
        (None, NIGHTS, "2026-11-30T12:00:00Z", "outside-window"),
    ],
)
def test_offers_only_inside_the_window(product_window: object, channel_window: object, now: str, reason: str) -> None:
    catalog = Catalog(
        product=Product("door", "esp8266", window=product_window),  # type: ignore[arg-type]
        channels={"stable": Channel("door", "stable", {Kind.APP: Track("1.1")}, window=channel_window)},  # type: ignore[arg-type]
        releases=RELEASES,
    )
    device = Device("5C:CF:7F:00:00:01", "door", "stable", assigned=True)
    d = decide(parse_check(esp8266_headers(version="1.0")), device, catalog, now=now)
    assert d.reason == reason
    # Outside the window nothing else changes: up to date is up to date, the probe still answers.
    assert decide(parse_check(esp8266_headers(version="1.1")), device, catalog, now=now).reason == "up-to-date"
    probe = decide(parse_check(esp8266_headers(version="1.0", mode="version")), device, catalog, now=now)
    assert probe.outcome is Outcome.PROBE
    assert (d.record.attempt is not None) is (reason == "offer")
