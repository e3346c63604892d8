"""Rollout plans: when a stage waits, advances or completes, and what each move writes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from otafleet import plans, rollout
from otafleet.models import Attempt, AttemptState, Build, Device, Kind, Track, TrackState
from otafleet.plans import Action

T0 = "2026-12-01T00:00:00Z"
SOAKED = "2026-12-01T02:00:00Z"  # two hours later
EARLY = "2026-12-01T01:30:00Z"


def planned(stage: int = 0, successes: int = 0, failures: int = 0, unknowns: int = 0, silents: int = 0) -> Track:
    plan = plans.new_plan((1, 10, 50, 100), 7200, 0.95, now=T0)
    track = Track("2.0.0", previous="1.0.0", min_devices=10)
    track = replace(track, successes=successes, failures=failures, unknowns=unknowns, silents=silents)
    return plans.started(track, replace(plan, stage=stage))


STEPS = [
    # name, track, now, control, eligible, pending, action
    ("soaking", planned(successes=20), EARLY, 0.0, 20, 0, Action.WAIT),
    ("soaked and successful", planned(successes=20), SOAKED, 0.0, 20, 0, Action.ADVANCE),
    ("too few judged", planned(successes=9), SOAKED, 0.0, 20, 5, Action.WAIT),
    ("all of a small stage judged", planned(successes=4), SOAKED, 0.0, 4, 0, Action.ADVANCE),
    ("an empty stage moves on", planned(), SOAKED, 0.0, 0, 0, Action.ADVANCE),
    ("pending devices hold it", planned(successes=18), SOAKED, 0.0, 20, 2, Action.WAIT),
    ("one pending of twenty is within 95 %", planned(successes=19), SOAKED, 0.0, 20, 1, Action.ADVANCE),
    ("unknowns are not successes", planned(successes=18, unknowns=2), SOAKED, 0.0, 20, 0, Action.WAIT),
    (
        "a failure below the halt bar misses the success bar",
        planned(successes=18, failures=2),
        SOAKED,
        0.0,
        20,
        0,
        Action.WAIT,
    ),
    ("silence no worse than the control's", planned(successes=19, silents=1), SOAKED, 0.05, 20, 0, Action.ADVANCE),
    ("silence beyond the control's", planned(successes=14, silents=6), SOAKED, 0.05, 20, 0, Action.WAIT),
    (
        "silence without a control: the last baseline",
        planned(stage=3, successes=94, silents=6),
        SOAKED,
        None,
        100,
        0,
        Action.WAIT,
    ),
    ("the last stage completes", planned(stage=3, successes=100), SOAKED, None, 100, 0, Action.COMPLETE),
    ("paused", replace(planned(successes=20), state=TrackState.PAUSED), SOAKED, 0.0, 20, 0, Action.NONE),
    ("halted", replace(planned(successes=20), state=TrackState.HALTED), SOAKED, 0.0, 20, 0, Action.NONE),
    ("over its failure threshold", planned(successes=10, failures=10), SOAKED, 0.0, 20, 0, Action.NONE),
    ("no plan", Track("2.0.0", successes=20), SOAKED, 0.0, 20, 0, Action.NONE),
]


@pytest.mark.parametrize(
    ("name", "track", "now", "control", "eligible", "pending", "action"), STEPS, ids=[s[0] for s in STEPS]
)
def test_next_step(
    name: str, track: Track, now: str, control: float | None, eligible: int, pending: int, action: Action
) -> None:
    step = plans.next_step(track, now, control=control, eligible=eligible, pending=pending)
    assert step.action is action, step.why


def test_a_stage_of_untrusted_devices_only_is_not_empty_and_waits() -> None:
    step = plans.next_step(planned(), SOAKED, control=0.0, eligible=0, pending=0, present=7)
    assert step.action is Action.WAIT, step.why
    assert plans.next_step(planned(), SOAKED, control=0.0, eligible=0, pending=0, present=0).action is Action.ADVANCE


def test_a_soaking_stage_says_when_it_may_advance() -> None:
    step = plans.next_step(planned(successes=20), EARLY, control=0.0, eligible=20, pending=0)
    assert step.at == SOAKED and "30m" in step.why


def test_the_baseline_kept_at_the_last_advance_excuses_background_silence_at_100_percent() -> None:
    track = planned(stage=3, successes=94, silents=6)
    assert track.plan is not None
    track = replace(track, plan=replace(track.plan, control_silence=0.05))
    assert plans.next_step(track, SOAKED, control=None, eligible=100, pending=0).action is Action.COMPLETE


def test_advancing_moves_percent_and_stage_keeps_counts_and_grows_the_pace() -> None:
    track = replace(planned(successes=20), max_offers_per_minute=10)
    assert track.plan is not None
    track = replace(track, plan=replace(track.plan, pace_growth=2.0))
    after = plans.advanced(track, SOAKED, 0.04)
    assert after.plan is not None
    assert (after.percent, after.plan.stage, after.plan.stage_started) == (10, 1, SOAKED)
    assert after.successes == 20 and after.max_offers_per_minute == 20
    assert after.plan.control_silence == 0.04
    assert plans.advanced(replace(track, max_offers_per_minute=None), SOAKED, None).max_offers_per_minute is None


def test_completing_and_aborting_leave_nothing_automatic() -> None:
    done = plans.completed(planned(stage=3, successes=100), SOAKED)
    assert plans.next_step(done, SOAKED, control=None, eligible=100, pending=0).action is Action.NONE
    assert rollout.complete(done)
    stopped = plans.aborted(planned(successes=20))
    assert stopped.state is TrackState.HALTED
    assert plans.next_step(stopped, SOAKED, control=0.0, eligible=20, pending=0).action is Action.NONE
    assert not plans.due(stopped, SOAKED) and not plans.due(done, SOAKED)


def test_resuming_soaks_the_stage_afresh() -> None:
    paused = replace(planned(successes=20), state=TrackState.PAUSED)
    again = plans.resumed(paused, SOAKED)
    assert again.state is TrackState.ACTIVE and again.plan is not None and again.plan.stage_started == SOAKED
    assert plans.next_step(again, SOAKED, control=0.0, eligible=20, pending=0).action is Action.WAIT


@pytest.mark.parametrize(
    ("stages", "soak", "success", "growth"),
    [
        ((), 1, 0.9, 1.0),
        ((10, 5, 100), 1, 0.9, 1.0),
        ((1, 50), 1, 0.9, 1.0),
        ((0, 100), 1, 0.9, 1.0),
        ((1, 100), -1, 0.9, 1.0),
        ((1, 100), 1, 1.5, 1.0),
        ((1, 100), 1, 0.9, 0.5),
    ],
)
def test_impossible_plans_are_refused(stages: tuple[int, ...], soak: int, success: float, growth: float) -> None:
    with pytest.raises(plans.InvalidPlan):
        plans.new_plan(stages, soak, success, now=T0, pace_growth=growth)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600), ("45", 45)])
def test_durations(text: str, seconds: int) -> None:
    assert plans.parse_duration(text) == seconds


def test_bad_durations_and_stages() -> None:
    with pytest.raises(plans.InvalidPlan):
        plans.parse_duration("two hours")
    with pytest.raises(plans.InvalidPlan):
        plans.parse_stages("1,ten,100")
    assert plans.parse_stages("1%, 10%,100") == (1, 10, 100)


def test_each_device_belongs_to_the_first_stage_that_includes_it_and_stays_in_the_rollout() -> None:
    stages = (1, 10, 50, 100)
    for b in range(0, rollout.BUCKETS, 37):
        i = rollout.stage_of(b, stages)
        assert b < stages[i] * 100 and (i == 0 or b >= stages[i - 1] * 100)
        assert all(b < s * 100 for s in stages[i:])


def device(mac: str, state: AttemptState | None, *, version: str = "2.0.0") -> Device:
    attempts = {}
    if state is not None:
        attempts[Kind.APP] = Attempt(
            Kind.APP, version, state, 1, T0, T0, Build("1.0.0"), channel="stable", trusted=True
        )
    return Device(mac, product="door", channel="stable", assigned=True, attempts=attempts)


def test_tally_counts_each_stage_once_by_the_state_of_its_attempts() -> None:
    track = planned(stage=1)
    macs = [f"5C:CF:7F:00:{i >> 8:02X}:{i & 255:02X}" for i in range(400)]
    states = [AttemptState.INSTALLED, AttemptState.SILENT, AttemptState.OFFERED, AttemptState.FAILED, None]
    fleet = [device(m, states[i % len(states)]) for i, m in enumerate(macs)]
    fleet.append(replace(device("5C:CF:7F:FF:00:01", AttemptState.INSTALLED), blocked=True))
    tallies = plans.tally(fleet, product="door", channel="stable", kind=Kind.APP, track=track, trusted=lambda d: True)
    assert [t.percent for t in tallies] == [1, 10, 50, 100]
    assert sum(t.eligible for t in tallies) == 400 and sum(t.present for t in tallies) == 400
    untrusted = plans.tally(
        fleet, product="door", channel="stable", kind=Kind.APP, track=track, trusted=lambda d: False
    )
    assert sum(t.present for t in untrusted) == 400 and sum(t.eligible + t.offered for t in untrusted) == 0
    assert sum(t.offered for t in tallies) == 320 and sum(t.pending for t in tallies) == 80
    for i, t in enumerate(tallies):
        mine = [
            d
            for d in fleet[:400]
            if rollout.stage_of(rollout.bucket(d.mac, "door", Kind.APP, "2.0.0"), (1, 10, 50, 100)) == i
        ]
        assert t.eligible == len(mine)
        assert t.silent == sum(1 for d in mine if d.attempts and d.attempts[Kind.APP].state is AttemptState.SILENT)
    assert plans.eligible_now(tallies, track) == tallies[0].eligible + tallies[1].eligible


def test_the_target_says_where_a_device_stands_in_the_plan() -> None:
    track = planned(stage=1)
    macs = [f"5C:CF:7F:00:00:{i:02X}" for i in range(200)]
    later = next(m for m in macs if rollout.bucket(m, "door", Kind.APP, "2.0.0") >= 5000)
    version, why = rollout.target(track, later, "door", Kind.APP, lambda: False)
    assert version == "1.0.0"
    assert "plan at stage 2 of 4, this device's is stage 4 (100%): offered when the plan reaches it" in why
