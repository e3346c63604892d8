from __future__ import annotations

from dataclasses import replace

import pytest

from otafleet.models import Attempt, AttemptState, Build, Device, Kind, Rhythm, Track, TrackState
from otafleet.rhythm import SilencePolicy, epoch
from otafleet.rollout import (
    Group,
    Observation,
    bucket,
    in_rollout,
    observe,
    should_halt_on_silence,
    silence_may_halt,
    silence_test,
)


def macs(n: int) -> list[str]:
    return [":".join(f"{b:02X}" for b in (0x24, 0x0A, 0xC4, i >> 16 & 255, i >> 8 & 255, i & 255)) for i in range(n)]


def test_share_matches_percent() -> None:
    fleet = macs(5000)
    for percent in (1, 10, 50, 90):
        share = sum(in_rollout(m, "door", Kind.APP, "2.0.0", percent) for m in fleet) / len(fleet)
        assert abs(share - percent / 100) < 0.03, (percent, share)


def test_raising_percent_only_adds_devices() -> None:
    fleet = macs(3000)
    at = {p: {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.0.0", p)} for p in (5, 10, 25, 50, 100)}
    assert at[5] <= at[10] <= at[25] <= at[50] <= at[100] == set(fleet)


def test_bucket_is_stable_and_release_specific() -> None:
    assert bucket("24:0A:C4:00:00:01", "door", Kind.APP, "2.0.0") == bucket(
        "24:0A:C4:00:00:01", "door", Kind.APP, "2.0.0"
    )
    fleet = macs(2000)
    first = {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.0.0", 10)}
    second = {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.1.0", 10)}
    assert first != second  # the same devices are not always the canaries


def test_zero_and_full() -> None:
    assert not any(in_rollout(m, "door", Kind.APP, "1", 0) for m in macs(500))
    assert all(in_rollout(m, "door", Kind.APP, "1", 100) for m in macs(500))


# --- silence against a control group ----------------------------------------------------------------

HOUR = 3600
T0 = "2026-11-24T12:00:00Z"  # the rollout's first offer


def track(ok: int = 0, silent: int = 0, *, fail: int = 0, unknown: int = 0, **kw: object) -> Track:
    values: dict[str, object] = {"min_devices": 10, "max_silence_excess": 0.1, **kw}
    return Track("1.1.0", "1.0.0", successes=ok, failures=fail, unknowns=unknown, silents=silent, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "t", "control", "halts"),
    [
        ("bricks against a quiet control", track(16, 4), Group(380, 8), True),
        ("an outage silences both alike", track(14, 6), Group(380, 110), False),
        ("too early: 9 judged", track(4, 5), Group(380, 0), False),
        ("no usable control: every silence counts", track(17, 3), Group(5, 0), True),
        ("no control, exactly at the threshold", track(18, 2), Group(0, 0), False),
        ("excess over 10 %, but chance can explain it", track(7, 3), Group(10, 1), False),
        ("significant, but only 5 % more", track(920, 80), Group(1000, 30), False),
        ("failures and unknowns are judged devices too", track(2, 3, fail=10, unknown=5), Group(200, 2), True),
        ("a stricter threshold", track(18, 2, max_silence_excess=0.05), Group(500, 0), True),
    ],
)
def test_silence_halt_rule(name: str, t: Track, control: Group, halts: bool) -> None:
    verdict = silence_test(t, control)
    assert verdict.halts is halts, (name, verdict.why)
    assert should_halt_on_silence(t, control) is halts
    assert not should_halt_on_silence(replace(t, state=TrackState.HALTED), control)


def test_silence_halt_rule_worked_example_of_the_docs() -> None:
    """docs/operations.md, "Silence": 4 of 20 judged devices silent, 8 of 380 in the control group."""
    v = silence_test(track(16, 4), Group(380, 8))
    assert v.offered == Group(20, 4)
    assert v.baseline == pytest.approx(0.02105, abs=1e-4)
    assert v.excess == pytest.approx(0.1789, abs=1e-4)
    assert v.z == pytest.approx(4.57, abs=0.01)
    assert "excess 17.9% > 10.0%, z 4.57 >= 1.645" in v.why


@pytest.mark.parametrize(
    ("t", "may"),
    [
        (track(18, 2), False),  # 10 %: no control group can make that an excess over 10 %
        (track(17, 3), True),
        (track(5, 4), False),  # 9 judged
        (track(17, 3, state=TrackState.PAUSED), False),
    ],
)
def test_the_control_group_is_read_only_when_silence_could_halt(t: Track, may: bool) -> None:
    assert silence_may_halt(t) is may


def bucketed(n: int, *, inside: bool, percent: int = 50) -> list[str]:
    found = [m for m in macs(400) if in_rollout(m, "door", Kind.APP, "1.1.0", percent) is inside]
    return found[:n]


def member(
    mac: str, *, last_seen: str | None, attempt: Attempt | None = None, learned: bool = True, **kw: object
) -> Device:
    """A device whose last check that counted was at `last_seen`, checking hourly (or not learned yet)."""
    device = Device(
        mac=mac,
        product="door",
        channel="stable",
        assigned=True,
        last_seen=last_seen,
        rhythm=None if last_seen is None else Rhythm(epoch(last_seen), HOUR, 10 if learned else 1),
        attempts={Kind.APP: attempt} if attempt else {},
    )
    return replace(device, **kw)  # type: ignore[arg-type]


def attempt(started: str = T0, *, trusted: bool = True, state: AttemptState = AttemptState.OFFERED) -> Attempt:
    return Attempt(Kind.APP, "1.1.0", state, 1, started, started, Build(), channel="stable", trusted=trusted)


def test_observe_finds_the_offered_pending_and_the_control_group() -> None:
    inside, outside = bucketed(4, inside=True), bucketed(13, inside=False)
    devices = [
        member(inside[0], last_seen=T0, attempt=attempt()),  # offered, pending
        member(inside[1], last_seen="2026-11-24T13:00:00Z", attempt=attempt("2026-11-24T11:00:00Z")),  # first offer
        member(inside[2], last_seen=T0, attempt=attempt(state=AttemptState.SILENT)),
        member(inside[3], last_seen="2026-11-24T13:00:00Z"),  # in the buckets, not offered yet: neither group
        member(outside[0], last_seen="2026-11-24T15:30:00Z"),  # control, alive
        member(outside[1], last_seen="2026-11-24T12:30:00Z"),  # control, quiet for 3.5 h > 3 h: silent
        member(outside[2], last_seen="2026-11-24T10:00:00Z"),  # last seen before the window: not observed
        member(outside[3], last_seen="2026-11-24T13:00:00Z", attempt=attempt(trusted=False)),  # offered, untrusted
        member(outside[4], last_seen="2026-11-24T13:00:00Z", pins={Kind.APP: "1.0.0"}),
        member(outside[5], last_seen="2026-11-24T13:00:00Z", blocked=True),
        member(outside[6], last_seen="2026-11-24T13:00:00Z", channel="beta"),
        member(outside[7], last_seen="2026-11-24T13:00:00Z", assigned=False),
        member(outside[8], last_seen="2026-11-24T13:00:00Z", enrolled_at=T0),  # not trusted (predicate below)
        member(outside[9], last_seen=None),
        member("00:00:00:00:00:00", last_seen="2026-11-24T13:00:00Z"),
        member(outside[10], last_seen="2026-11-24T10:30:00Z", learned=False),  # before the window
        member(outside[11], last_seen="2026-11-24T14:00:00Z", learned=False),  # unlearned: 24 h, alive
        # A forged check (a 401) moved last_seen, not the last check that counted: still silent.
        replace(member(outside[12], last_seen="2026-11-24T12:30:00Z"), last_seen="2026-11-24T15:59:00Z"),
    ]

    def observed(heartbeat: int) -> Observation:
        return observe(
            devices,
            product="door",
            channel="stable",
            kind=Kind.APP,
            track=track(percent=50),
            now="2026-11-24T16:00:00Z",
            silence=SilencePolicy(heartbeat_seconds=heartbeat),
            trusted=lambda d: d.enrolled_at is None,
        )

    seen = observed(0)
    assert (seen.offered, seen.pending, seen.window_start) == (3, 2, "2026-11-24T11:00:00Z")
    assert seen.control == Group(4, 2)
    # With a heartbeat, a record may be that much older than the device's last check: the control device
    # recorded 3.5 h ago (quiet limit 3 h) may have checked since without a write, so it is not silent yet.
    assert observed(3600).control == Group(4, 0)


def test_observe_without_offers_has_no_window() -> None:
    devices = [member(m, last_seen=T0) for m in bucketed(3, inside=False)]
    seen = observe(
        devices,
        product="door",
        channel="stable",
        kind=Kind.APP,
        track=track(percent=50),
        now=T0,
        silence=SilencePolicy(),
        trusted=lambda d: True,
    )
    assert seen == Observation(0, 0, Group(0, 0), None)


def test_a_pending_device_is_overdue_once_its_usual_interval_and_a_half_has_passed() -> None:
    inside = bucketed(3, inside=True)
    offer = "2026-11-24T12:00:00Z"
    devices = [
        member(inside[0], last_seen=offer, attempt=attempt(offer)),  # hourly: overdue after 13:30
        member(inside[1], last_seen=offer, attempt=attempt(offer), learned=False),  # no rhythm: overdue at once
        member(inside[2], last_seen=offer, attempt=attempt(offer, state=AttemptState.INSTALLED)),
    ]

    def seen(now: str) -> Observation:
        return observe(
            devices,
            product="door",
            channel="stable",
            kind=Kind.APP,
            track=track(percent=50),
            now=now,
            silence=SilencePolicy(),
            trusted=lambda d: True,
        )

    assert (seen("2026-11-24T13:29:00Z").pending, seen("2026-11-24T13:29:00Z").overdue) == (2, 1)
    assert seen("2026-11-24T13:31:00Z").overdue == 2
