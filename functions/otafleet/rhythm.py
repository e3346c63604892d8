"""A device's check-in rhythm: its usual interval between checks, learned from its own check times, and
how long it may stay quiet before its silence means something. Pure functions of plain records.

The stock clients check on whatever schedule the sketch has (every hour, at every wake from deep sleep,
…), so the interval is learned per device, from the gap between its previous check and this one, and
kept on the device record as three numbers (models.Rhythm: the last check that counted, the interval,
the samples) written with the check's own UpdateItem. Only checks past authentication count: with
`--auth`, a forged request gets its 401 and changes neither the interval nor when the device was last
alive. How gaps are learned:

- **Gaps under `MIN_GAP_SECONDS` (30 s) teach nothing**: the stock cycle is `update()` then
  `updateFS()` seconds apart, a device asks again right after it rebooted, retries come in bursts.
- **Warm-up**: the first `LEARNED_AFTER` (3) gaps keep the *longest* of them, so that one short gap (a
  reboot, an install) at the start never makes a slow device look fast. Before that the rhythm is not
  learned and silence waits `unlearned_seconds` (below).
- **Then a clamped, asymmetric EWMA**: each gap is first clamped to [½, 4x] the estimate, so a single
  reboot or a single long outage moves it by a bounded step; a longer gap pulls the estimate up by half
  the difference, a shorter one down by a quarter. The estimate follows a slower schedule within a few
  checks and a faster one more reluctantly: it errs long, and a long estimate only makes silence slower
  to call, never a device silent that is not.

`quiet_limit` turns the rhythm into the time a device may go without a check: max(k x interval, floor).

**Heartbeat resolution.** A check that changes nothing on the device record is not written until the
record is a heartbeat old (check_writes.py), so the rhythm is learned from the recorded checks only: a
device that checks more often than the heartbeat is learned as checking about once per heartbeat (the
gap between two recorded checks spans the skipped ones). That errs long, the safe side: silence after
an offer is called after about factor x max(interval, heartbeat). And a device's record can be up to a
heartbeat older than its last check, so every quiet limit waits a heartbeat more: a rollout's control
group (judged from records) and its offered devices (judged from their offers, always written) are then
held to the same limit, and an outage that silences both alike still shows as alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from otafleet.models import Rhythm

MIN_GAP_SECONDS = 30
LEARNED_AFTER = 3  # gaps before the estimate counts
MAX_SAMPLES = 1000  # the sample count is only needed up to LEARNED_AFTER; capped to stay small
UP_WEIGHT, DOWN_WEIGHT = 0.5, 0.25
UP_CLAMP, DOWN_CLAMP = 4.0, 0.5


def epoch(at: str) -> int:
    """Seconds since the epoch of a timestamp as the service writes them (`2026-11-24T12:00:00Z`)."""
    return int(datetime.fromisoformat(at).timestamp())


def learned(rhythm: Rhythm | None) -> bool:
    return rhythm is not None and rhythm.samples >= LEARNED_AFTER


def observe(rhythm: Rhythm | None, gap: float | None) -> Rhythm | None:
    """The interval learned from one more gap of `gap` seconds between two checks (None: no previous
    check); `last` is left as it is."""
    if gap is None or gap < MIN_GAP_SECONDS:
        return rhythm
    last = rhythm.last if rhythm is not None else 0
    if rhythm is None or rhythm.samples <= 0:
        return Rhythm(last, round(gap), 1)
    estimate = float(rhythm.seconds)
    if rhythm.samples < LEARNED_AFTER:
        estimate = max(estimate, gap)
    else:
        sample = min(max(gap, estimate * DOWN_CLAMP), estimate * UP_CLAMP)
        weight = UP_WEIGHT if sample > estimate else DOWN_WEIGHT
        estimate += weight * (sample - estimate)
    return Rhythm(last, max(MIN_GAP_SECONDS, round(estimate)), min(rhythm.samples + 1, MAX_SAMPLES))


def observe_check(rhythm: Rhythm | None, now: str) -> Rhythm:
    """The rhythm after a check that counts, at `now`."""
    at = epoch(now)
    updated = observe(rhythm, None if rhythm is None else at - rhythm.last)
    return Rhythm(at, updated.seconds, updated.samples) if updated is not None else Rhythm(at)


@dataclass(frozen=True)
class SilencePolicy:
    """How long a device may stay quiet: `factor` x its interval, at least `floor_seconds`; a device
    whose rhythm is not learned yet, `unlearned_seconds` (settings: SilenceFactor, SilenceFloorMinutes,
    SilenceUnlearnedHours)."""

    factor: float = 3.0
    floor_seconds: int = 30 * 60
    unlearned_seconds: int = 24 * 3600
    heartbeat_seconds: int = 0  # how stale a device record may be while the device checks (CheckHeartbeatMinutes)


def quiet_limit(rhythm: Rhythm | None, policy: SilencePolicy) -> int:
    """Seconds after its last recorded check at which a device's silence is unusual for it (a check that
    changed nothing may have come since without being written, up to a heartbeat later)."""
    if rhythm is None or not learned(rhythm):
        usual = max(policy.unlearned_seconds, policy.floor_seconds)
    else:
        usual = max(round(policy.factor * rhythm.seconds), policy.floor_seconds)
    return usual + policy.heartbeat_seconds


__all__ = [
    "LEARNED_AFTER",
    "MIN_GAP_SECONDS",
    "SilencePolicy",
    "epoch",
    "learned",
    "observe",
    "observe_check",
    "quiet_limit",
]
