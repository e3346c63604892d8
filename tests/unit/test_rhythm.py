"""The check-in rhythm as a table: gap sequences a stock client produces (steady timers, the update() /
updateFS() pair, reboots, outages, jitter, a sketch that changes its schedule) and what is learned."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from otafleet import rhythm
from otafleet.models import Rhythm
from otafleet.rhythm import SilencePolicy, learned, observe, observe_check, quiet_limit

HOUR = 3600


def learn(gaps: Iterable[float], start: Rhythm | None = None) -> Rhythm | None:
    r = start
    for gap in gaps:
        r = observe(r, gap)
    return r


def hourly(n: int) -> list[float]:
    return [HOUR] * n


def seeded_jitter(n: int, spread: float) -> list[float]:
    rng = random.Random(3)
    return [HOUR * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def with_pair(gaps: list[float], pair_gap: float = 3) -> list[float]:
    """Every cycle is update() and then updateFS() a few seconds later: a short gap after each long one."""
    return [g for gap in gaps for g in (gap - pair_gap, pair_gap)]


def reboot_every(n: int, gaps: list[float], at: float = 0.3) -> list[float]:
    """A reboot `at` of the way into every n-th interval: the device checks right after booting, and its
    timer starts over from there."""
    out: list[float] = []
    for i, gap in enumerate(gaps):
        out += [gap * at, gap] if i % n == n - 1 else [gap]
    return out


@pytest.mark.parametrize(
    ("name", "gaps", "low", "high"),
    [
        ("hourly timer", hourly(24), 0.99 * HOUR, 1.01 * HOUR),
        ("update() + updateFS() each cycle: the pair's gap teaches nothing", with_pair(hourly(24)), 0.99 * HOUR, HOUR),
        ("±20 % jitter: errs long, never short", seeded_jitter(48, 0.2), 1.0 * HOUR, 1.2 * HOUR),
        ("a reboot every 5th interval", reboot_every(5, hourly(40)), 0.85 * HOUR, 1.01 * HOUR),
        ("a reboot every interval (boot loop with Wi-Fi)", reboot_every(1, hourly(20)), 0.75 * HOUR, 1.01 * HOUR),
        ("first gap is the check after a reboot", [90, *hourly(3)], HOUR, HOUR),
        ("first gaps are installs and reboots", [45, 70, HOUR], HOUR, HOUR),
        ("one 10 h outage, then 12 hourly checks", [*hourly(6), 10 * HOUR, *hourly(12)], HOUR, 1.15 * HOUR),
        ("sketch moves to a 4 h timer: followed within 4 checks", [*hourly(10), *[4 * HOUR] * 4], 3.6 * HOUR, 4 * HOUR),
        ("sketch moves to 10 min: followed within 15 checks", [*hourly(10), *[600] * 15], 540, 720),
        ("deep sleep every 10 min", [600] * 20, 594, 606),
    ],
)
def test_learned_interval(name: str, gaps: list[float], low: float, high: float) -> None:
    r = learn(gaps)
    assert r is not None and learned(r), name
    assert low <= r.seconds <= high, (name, r)


@pytest.mark.parametrize(
    ("gaps", "samples"),
    [
        ([], None),
        ([2, 5, 29.9], None),  # below the floor: nothing at all
        ([HOUR], 1),
        ([HOUR, 3, HOUR], 2),
        ([HOUR] * 3, 3),
        ([HOUR] * 5000, rhythm.MAX_SAMPLES),
    ],
)
def test_samples_and_when_it_counts(gaps: list[float], samples: int | None) -> None:
    r = learn(gaps)
    assert (r.samples if r else None) == samples
    assert learned(r) is (samples is not None and samples >= rhythm.LEARNED_AFTER)


def test_a_single_reboot_or_outage_moves_a_learned_estimate_by_a_bounded_step() -> None:
    steady = learn(hourly(10))
    assert steady is not None
    after_reboot, after_outage = observe(steady, 60), observe(steady, 30 * HOUR)
    assert after_reboot is not None and after_outage is not None
    assert after_reboot.seconds == pytest.approx(0.875 * HOUR, rel=0.01)  # a quarter of the way to ½ x
    assert after_outage.seconds == pytest.approx(2.5 * HOUR, rel=0.01)  # half of the way to 4 x


def test_checks_stamp_the_last_one_that_counted() -> None:
    first = observe_check(None, "2026-11-24T12:00:00Z")
    assert first == Rhythm(last=rhythm.epoch("2026-11-24T12:00:00Z"))  # no gap yet: nothing learned
    r = observe_check(first, "2026-11-24T13:00:00Z")
    assert (r.last, r.seconds, r.samples) == (rhythm.epoch("2026-11-24T13:00:00Z"), HOUR, 1)
    burst = observe_check(r, "2026-11-24T13:00:05Z")  # updateFS() right after update(): alive, nothing learned
    assert (burst.last, burst.seconds, burst.samples) == (r.last + 5, HOUR, 1)


@pytest.mark.parametrize(
    ("r", "limit"),
    [
        (None, 24 * HOUR),  # never saw an interval: the unlearned limit
        (Rhythm(0), 24 * HOUR),  # one check, no interval yet
        (Rhythm(0, 600, 2), 24 * HOUR),  # still learning
        (Rhythm(0, HOUR, 3), 3 * HOUR),  # k x interval
        (Rhythm(0, 300, 50), 30 * 60),  # the floor: fast devices are not called silent after 15 min
        (Rhythm(0, 8 * HOUR, 9), 24 * HOUR),
        (Rhythm(0, 2 * 86400, 9), 6 * 86400),  # slower than the unlearned limit: its own rhythm rules
    ],
)
def test_quiet_limit(r: Rhythm | None, limit: int) -> None:
    assert quiet_limit(r, SilencePolicy()) == limit


def test_quiet_limit_follows_the_settings() -> None:
    policy = SilencePolicy(factor=5, floor_seconds=3600, unlearned_seconds=1800)
    assert quiet_limit(Rhythm(0, HOUR, 5), policy) == 5 * HOUR
    assert quiet_limit(Rhythm(0, 60, 5), policy) == HOUR
    assert quiet_limit(None, policy) == HOUR  # never below the floor
