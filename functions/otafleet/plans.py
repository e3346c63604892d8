"""Rollout plans: a staged rollout that advances itself. Pure functions of plain records; the controller
applies them on its schedule, `otafleet rollout start` creates them, storage writes what they decide.

A plan is a list of stages (percentages of the channel, ascending, ending at 100), a soak time and a
success bar. The rollout runs at its current stage's percentage; raising a stage only adds devices
(rollout.bucket), so a device once offered stays offered. The controller, after the halt rules:

- **waits** while the stage has soaked for less than `soak_seconds` (since the stage began, or since it
  was last resumed: time spent paused or halted proves nothing);
- **waits** while fewer devices are judged than `min(min_devices, eligible)` — a stage with devices that
  never checked in stays where it is, but a stage that holds no device at all moves on, since there is
  nothing in it to learn from or to put at risk (a stage of untrusted devices only, whose verdicts do
  not count, is not empty: it waits, for lack of evidence);
- **waits** while the success share is under `min_success`: installed devices over the judged and the
  overdue ones (offered, not back although their usual interval has passed: perhaps bricked, not silent
  yet), where a silent device counts against the release only beyond the control group's silence rate
  (a power cut silences offered and control devices alike) and an unknown verdict counts against it (no
  evidence is not success). It never halts on this bar: halting is the failure bar's (rollout.py);
- otherwise **advances** to the next stage (multiplying the pace by `pace_growth`), or after the last
  stage marks the plan **complete**.

Every change of a plan is one conditional write on the track revision it was decided from, so two
overlapping controller runs advance a stage once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise

from otafleet import rollout
from otafleet.models import AttemptState, Device, Kind, Plan, Track, TrackState
from otafleet.rhythm import epoch

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# A plan's settings when the operator gives none (`otafleet rollout start`, the operator API).
DEFAULT_STAGES = "1,10,50,100"
DEFAULT_SOAK = "2h"
DEFAULT_MIN_SUCCESS = 0.95


class InvalidPlan(ValueError):
    """A plan an operator asked for that cannot run; the message says why."""


def parse_duration(text: str) -> int:
    """Seconds in `90s`, `30m`, `2h`, `1.5d` (a bare number is seconds)."""
    found = DURATION.match(text.lower())
    if not found:
        raise InvalidPlan(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 1d)")
    return round(float(found[1]) * UNITS[found[2]])


def parse_stages(text: str) -> tuple[int, ...]:
    try:
        stages = tuple(int(s.strip().rstrip("%")) for s in text.split(",") if s.strip())
    except ValueError:
        raise InvalidPlan(f"stages are whole percentages separated by commas, e.g. 1,10,50,100; not {text!r}") from None
    return stages


def new_plan(
    stages: Iterable[int], soak_seconds: int, min_success: float, *, now: str, pace_growth: float = 1.0
) -> Plan:
    stages = tuple(stages)
    if not stages or any(not 1 <= s <= 100 for s in stages):
        raise InvalidPlan(f"stages must be percentages between 1 and 100, not {list(stages)}")
    if any(b <= a for a, b in pairwise(stages)):
        raise InvalidPlan(f"stages must rise: {list(stages)}")
    if stages[-1] != 100:
        raise InvalidPlan(f"the last stage must be 100 (the whole channel), not {stages[-1]}")
    if soak_seconds < 0:
        raise InvalidPlan("the soak time cannot be negative")
    if not 0 <= min_success <= 1:
        raise InvalidPlan(f"the success bar is a share between 0 and 1, not {min_success}")
    if not 1 <= pace_growth <= 10:
        raise InvalidPlan(f"the pace growth is a factor between 1 and 10, not {pace_growth}")
    return Plan(stages, soak_seconds, min_success, stage=0, stage_started=now, pace_growth=pace_growth)


def started(track: Track, plan: Plan) -> Track:
    """`track` (pointed at the plan's release) running the plan's current stage."""
    return replace(track, percent=plan.percent, plan=plan, state=TrackState.ACTIVE)


# --- where a plan stands -------------------------------------------------------------------------


class Action(StrEnum):
    NONE = "none"  # no plan, or nothing automatic is left (complete, aborted, paused, halted)
    WAIT = "wait"  # the stage has not soaked, or has not enough evidence, or misses the bar
    ADVANCE = "advance"  # to the next stage
    COMPLETE = "complete"  # the last stage met the bar


@dataclass(frozen=True)
class Step:
    action: Action
    why: str
    at: str | None = None  # when the soak ends (a WAIT for time); None when it depends on devices


def soak_ends(plan: Plan) -> int:
    return epoch(plan.stage_started) + plan.soak_seconds if plan.stage_started else 0


def due(track: Track, now: str) -> bool:
    """Whether the plan's stage has soaked while active, so its devices are worth reading."""
    plan = track.plan
    return (
        plan is not None
        and not plan.aborted
        and plan.completed is None
        and rollout.effective_state(track) is TrackState.ACTIVE
        and epoch(now) >= soak_ends(plan)
    )


def judged(track: Track) -> int:
    return track.successes + track.failures + track.unknowns + track.silents


def success_share(track: Track, baseline: float, pending: int = 0) -> float | None:
    """Installed devices over the judged and overdue ones, a silent one counting only beyond the share
    the control group's silence (`baseline`) accounts for: a device overdue (handed the image, not back
    although its usual interval has passed, not silent yet) is not a success until it shows it is one."""
    n = judged(track)
    if n + pending == 0:
        return None
    excess_silent = max(0.0, track.silents - baseline * n)
    base = track.successes + track.failures + track.unknowns + excess_silent + pending
    return track.successes / base if base > 0 else None


def next_step(
    track: Track, now: str, *, control: float | None, eligible: int, pending: int, present: int | None = None
) -> Step:
    """What the controller does next about `track`'s plan. `control`: the control group's silence rate,
    None without a usable control group (then the one measured when the plan last advanced counts);
    `eligible`: trusted devices of the channel the current stage includes; `pending`: trusted devices
    offered the release, not judged yet and overdue (rollout.Observation.overdue): devices offered
    moments ago are in no term, so a paced stage, always offering some, is judged on the ones that had
    their time to come back. `present`: the devices the stage includes, trusted or not (default
    `eligible`): a stage of devices none of whose verdicts count is not an empty stage, it has no
    evidence."""
    plan = track.plan
    if plan is None:
        return Step(Action.NONE, "no plan: the rollout moves only when an operator moves it")
    if plan.aborted:
        return Step(Action.NONE, "aborted by an operator")
    if plan.completed:
        return Step(Action.NONE, f"complete since {plan.completed}")
    state = rollout.effective_state(track)
    if state is not TrackState.ACTIVE:
        return Step(Action.NONE, f"{state.value}: waits for an operator to resume or roll back")
    stage = f"stage {plan.stage + 1} of {len(plan.stages)} ({plan.percent}%)"
    ends = soak_ends(plan)
    if epoch(now) < ends:
        left = ends - epoch(now)
        return Step(Action.WAIT, f"{stage} soaking, {_duration(left)} left", at=_iso(ends))
    n, needed = judged(track), min(track.min_devices, eligible)
    if eligible == 0 and n == 0 and not (eligible if present is None else present):
        why = f"{stage} soaked and holds no device"
    elif n < needed:
        return Step(Action.WAIT, f"{stage} soaked; {n} of {needed} devices judged, {pending} overdue")
    else:
        share = success_share(track, plan.control_silence if control is None else control, pending)
        of = f"of {n} judged and {pending} overdue"
        if share is None or share < plan.min_success:
            shown = "no success" if share is None else f"success {share:.1%}"
            return Step(Action.WAIT, f"{stage} soaked; {shown} < {plan.min_success:.1%} {of}")
        why = f"{stage} soaked; success {share:.1%} ≥ {plan.min_success:.1%} {of}"
    if plan.last:
        return Step(Action.COMPLETE, why)
    return Step(Action.ADVANCE, f"{why} → {plan.stages[plan.stage + 1]}%")


def control_rate(track: Track, seen: rollout.Observation) -> float | None:
    """The control group's silence rate, or None when it has fewer than `min_devices` devices."""
    return seen.control.rate if seen.control.devices >= track.min_devices else None


def step_of(track: Track, now: str, seen: rollout.Observation, stages: tuple[StageTally, ...]) -> Step:
    """next_step on what the device records say (rollout.observe, tally)."""
    return next_step(
        track,
        now,
        control=control_rate(track, seen),
        eligible=eligible_now(stages, track),
        present=present_now(stages, track),
        pending=seen.overdue,
    )


def advanced(track: Track, now: str, control: float | None) -> Track:
    """The track one stage further along its plan; the pace grows by the plan's factor, and the control
    group's silence rate is kept for when the rollout leaves no control group."""
    assert track.plan is not None and not track.plan.last
    plan = replace(track.plan, stage=track.plan.stage + 1, stage_started=now)
    if control is not None:
        plan = replace(plan, control_silence=round(control, 4))
    pace = track.max_offers_per_minute
    if pace is not None and plan.pace_growth > 1:
        pace = max(pace + 1, math.floor(pace * plan.pace_growth))
    return replace(track, percent=plan.percent, plan=plan, max_offers_per_minute=pace)


def completed(track: Track, now: str) -> Track:
    assert track.plan is not None
    return replace(track, plan=replace(track.plan, completed=now))


def resumed(track: Track, now: str) -> Track:
    """Active again; the current stage soaks afresh."""
    plan = replace(track.plan, stage_started=now) if track.plan else None
    return replace(track, state=TrackState.ACTIVE, plan=plan)


def aborted(track: Track) -> Track:
    """Stopped for good: halted (devices already on the release keep it, the rest get the previous one)."""
    assert track.plan is not None
    return replace(track, state=TrackState.HALTED, plan=replace(track.plan, aborted=True))


# --- what each stage holds -----------------------------------------------------------------------


def stages_of(track: Track) -> tuple[int, ...]:
    return track.plan.stages if track.plan else (track.percent,)


@dataclass(frozen=True)
class StageTally:
    """The trusted devices a stage adds to the rollout, and where their attempts of its release stand."""

    percent: int
    eligible: int = 0
    present: int = 0  # the stage's devices, trusted or not
    offered: int = 0
    installed: int = 0
    failed: int = 0
    unknown: int = 0
    silent: int = 0

    @property
    def pending(self) -> int:
        return self.offered - self.installed - self.failed - self.unknown - self.silent


def tally(
    devices: Iterable[Device],
    *,
    product: str,
    channel: str,
    kind: Kind,
    track: Track,
    trusted: Callable[[Device], bool],
) -> tuple[StageTally, ...]:
    stages = stages_of(track)
    # Keyed by attempt state; "eligible" and "attempts" (offered at all) beside them.
    counts = [dict.fromkeys(("present", "eligible", "attempts", *(s.value for s in AttemptState)), 0) for _ in stages]
    for d in rollout.members(devices, product=product, channel=channel, kind=kind):
        i = rollout.stage_of(rollout.bucket(d.mac, product, kind, track.version), stages)
        if i >= len(stages):
            continue
        counts[i]["present"] += 1
        if not trusted(d):
            continue
        counts[i]["eligible"] += 1
        a = d.attempts.get(kind)
        if a is not None and a.version == track.version and a.channel == channel and a.trusted:
            counts[i]["attempts"] += 1
            counts[i][a.state.value] += 1
    return tuple(
        StageTally(
            percent,
            eligible=c["eligible"],
            present=c["present"],
            offered=c["attempts"],
            installed=c[AttemptState.INSTALLED.value],
            failed=c[AttemptState.FAILED.value],
            unknown=c[AttemptState.UNKNOWN.value],
            silent=c[AttemptState.SILENT.value],
        )
        for percent, c in zip(stages, counts, strict=True)
    )


def eligible_now(stages: tuple[StageTally, ...], track: Track) -> int:
    """Trusted devices the rollout's current percentage includes."""
    return sum(s.eligible for s in stages if s.percent <= track.percent)


def present_now(stages: tuple[StageTally, ...], track: Track) -> int:
    """Devices, trusted or not, the rollout's current percentage includes."""
    return sum(s.present for s in stages if s.percent <= track.percent)


def _iso(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: int) -> str:
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
