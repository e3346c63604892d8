"""Rollout rules: which release a channel's track gives a device, when a rollout halts, what a channel
change does to its track. Pure functions of plain records; storage writes what they decide.

- A device's bucket for a release is a stable hash of (MAC, product, kind, version) in [0, 10000). A
  staged rollout at N % offers the new release to buckets below N * 100, so raising N only adds devices
  and a device keeps its answer from one check to the next.
- A rollout halts when its failure rate (failures / (successes + failures)) exceeds its threshold once
  at least `min_devices` outcomes are in. Unknown outcomes are in neither term. A track over its
  threshold is treated as halted by every reader at once, before the halt is written, so a lost or
  delayed halt write never leaves the rollout running.
- `previous` is the channel's last good release: the version it served completely and actively.
- A rollout also halts on **silence**: when the share of its judged devices that went silent after the
  offer exceeds the share of a control group that went silent in the same window by more than
  `max_silence_excess`, significantly (a one-sided two-proportion z-test), once `min_devices` are judged.
  The control group is the channel's devices outside the rollout's buckets (a hash sample, so it is
  never chosen by how devices behave) that checked in during the rollout; a power cut or a Wi-Fi outage
  silences both groups alike. The controller applies it (it needs device records, not just counts), so
  unlike the failure rate it is not seen by readers before the halt is written. docs/operations.md has
  the statistic with a worked example.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from otafleet.models import AttemptState, Device, Kind, Track, TrackState
from otafleet.protocol import is_device_mac
from otafleet.rhythm import SilencePolicy, epoch, learned, quiet_limit

BUCKETS = 10_000


def bucket(mac: str, product: str, kind: Kind, version: str) -> int:
    digest = hashlib.sha256(f"{mac}|{product}|{kind.value}|{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(mac: str, product: str, kind: Kind, version: str, percent: int) -> bool:
    return bucket(mac, product, kind, version) < max(0, min(100, percent)) * (BUCKETS // 100)


# --- halting -------------------------------------------------------------------------------------


def outcomes(track: Track) -> int:
    return track.successes + track.failures


def failure_rate(track: Track) -> float | None:
    total = outcomes(track)
    return track.failures / total if total else None


def over_threshold(track: Track) -> bool:
    rate = failure_rate(track)
    return rate is not None and outcomes(track) >= track.min_devices and rate > track.max_failure_rate


def should_halt(track: Track) -> bool:
    """An active rollout whose counts crossed its threshold: halt it (and treat it as halted until then)."""
    return track.state is TrackState.ACTIVE and over_threshold(track)


def effective_state(track: Track) -> TrackState:
    return TrackState.HALTED if should_halt(track) else track.state


def complete(track: Track) -> bool:
    return track.percent >= 100 and effective_state(track) is TrackState.ACTIVE


def staged(track: Track) -> bool:
    """What an operator must watch: a partial, paused or halted rollout."""
    return not complete(track)


def baseline(track: Track) -> str | None:
    """The release the whole channel runs outside the rollout: what a device outside it is given."""
    return track.version if complete(track) else track.previous


# --- silence against a control group ----------------------------------------------------------------

# One-sided 95 %: the offered group's silence must exceed the control's by more than chance would.
Z_CRITICAL = 1.645


@dataclass(frozen=True)
class Group:
    """Devices observed for silence, and how many of them went silent."""

    devices: int
    silent: int

    @property
    def rate(self) -> float | None:
        return self.silent / self.devices if self.devices else None


def offered_group(track: Track) -> Group:
    """The rollout's judged devices, from its counters: those that came back (installed, failed, unknown)
    and those that went silent. Offers still open are not in it: their device may yet come back."""
    return Group(track.successes + track.failures + track.unknowns + track.silents, track.silents)


def members(devices: Iterable[Device], *, product: str, channel: str, kind: Kind) -> list[Device]:
    """The devices a channel's track for `kind` governs: assigned to it, not blocked, not pinned."""
    return [
        d
        for d in devices
        if d.assigned
        and d.product == product
        and d.channel == channel
        and not d.blocked
        and kind not in d.pins
        and is_device_mac(d.mac)
    ]


# A pending device counts as overdue once this many of its usual intervals have passed since its offer.
OVERDUE_AFTER = 1.5


@dataclass(frozen=True)
class Observation:
    """What the channel's device records say about one rollout beyond its counters."""

    offered: int  # trusted devices with an attempt of the release
    pending: int  # of them, offered and not judged yet (neither back with evidence nor silent)
    control: Group
    window_start: str | None  # the rollout's first offer: the control group is observed from then on
    # Of the pending, those whose device would have been back by now: offered longer ago than
    # OVERDUE_AFTER x its usual interval (or with no learned interval). A device offered a minute ago
    # proves nothing yet either way; one that should have been back and is not may be bricked.
    overdue: int = 0


def observe(
    devices: Iterable[Device],
    *,
    product: str,
    channel: str,
    kind: Kind,
    track: Track,
    now: str,
    silence: SilencePolicy,
    trusted: Callable[[Device], bool],
) -> Observation:
    """The rollout's offered and pending devices, and its control group: trusted devices of the channel
    that follow it for `kind`, lie outside its buckets (so they are never offered the release, whatever
    they do) and checked in since its first offer; each is silent once its own quiet limit has passed
    since its last check that counted."""
    governed = members(devices, product=product, channel=channel, kind=kind)
    attempts = [
        a
        for d in governed
        if (a := d.attempts.get(kind)) is not None and a.version == track.version and a.channel == channel
    ]
    offered = [a for a in attempts if a.trusted]
    pending = sum(1 for a in offered if a.state is AttemptState.OFFERED)
    start = min((a.started for a in offered), key=epoch, default=None)
    if start is None:
        return Observation(0, 0, Group(0, 0), None)
    since, at = epoch(start), epoch(now)
    overdue = 0
    for d in governed:
        a = d.attempts.get(kind)
        if a is None or a.version != track.version or a.channel != channel or not a.trusted or not a.open:
            continue
        expected = OVERDUE_AFTER * d.rhythm.seconds if d.rhythm is not None and learned(d.rhythm) else 0
        overdue += at > epoch(a.last_offer) + expected
    seen = silent = 0
    for d in governed:
        a = d.attempts.get(kind)
        # The last check that counted (rhythm.last): a forged 401 never makes a device look alive.
        if (a is not None and a.version == track.version) or d.rhythm is None or not trusted(d):
            continue
        if in_rollout(d.mac, product, kind, track.version, track.percent) or d.rhythm.last < since:
            continue
        seen += 1
        silent += at > d.rhythm.last + quiet_limit(d.rhythm, silence)
    return Observation(len(offered), pending, Group(seen, silent), start, overdue)


@dataclass(frozen=True)
class SilenceTest:
    """The silence rule applied to one rollout: its numbers and its verdict."""

    offered: Group
    control: Group
    baseline: float  # the control group's silence rate; 0 when it has fewer than min_devices devices
    excess: float | None  # offered silence rate minus the baseline
    z: float | None  # one-sided two-proportion z statistic; None without a usable control group
    halts: bool
    why: str


def silence_test(track: Track, control: Group) -> SilenceTest:
    offered = offered_group(track)
    usable = control.devices >= track.min_devices
    baseline = (control.rate or 0.0) if usable else 0.0
    if offered.devices < track.min_devices or offered.rate is None:
        why = f"{offered.devices} of {track.min_devices} devices judged: too early to tell"
        return SilenceTest(offered, control, baseline, None, None, False, why)
    excess = offered.rate - baseline
    z: float | None = None
    if usable:
        pooled = (offered.silent + control.silent) / (offered.devices + control.devices)
        se = math.sqrt(pooled * (1 - pooled) * (1 / offered.devices + 1 / control.devices))
        z = excess / se if se > 0 else (math.inf if excess > 0 else 0.0)
    over = excess > track.max_silence_excess
    significant = z is None or z >= Z_CRITICAL
    against = f"control {baseline:.1%} of {control.devices}" if usable else "no usable control group, so 0 %"
    why = f"silent {offered.rate:.1%} of {offered.devices} vs {against}: excess {excess:.1%}"
    why += f" {'>' if over else '<='} {track.max_silence_excess:.1%}"
    if z is not None:
        why += f", z {z:.2f} {'>=' if significant else '<'} {Z_CRITICAL}"
    return SilenceTest(offered, control, baseline, excess, z, over and significant, why)


def silence_may_halt(track: Track) -> bool:
    """Whether the silence rule could halt this rollout whatever its control group shows (a silent share
    of the judged devices over the threshold even against a silent-free control): only then is the
    control group worth reading."""
    offered = offered_group(track)
    rate = offered.rate
    return (
        track.state is TrackState.ACTIVE
        and offered.devices >= track.min_devices
        and rate is not None
        and rate > track.max_silence_excess
    )


def should_halt_on_silence(track: Track, control: Group) -> bool:
    return track.state is TrackState.ACTIVE and silence_test(track, control).halts


# --- targets -------------------------------------------------------------------------------------


def target(track: Track, mac: str, product: str, kind: Kind, runs_new: Callable[[], bool]) -> tuple[str | None, str]:
    """The version this track gives the device, and why. `runs_new` says whether the device already
    runs the rollout's release: a paused or halted rollout keeps such devices on it (no flip-flop)."""
    if complete(track):
        return track.version, f"channel → {kind.value} {track.version}"
    state = effective_state(track)
    if state is not TrackState.ACTIVE:
        if runs_new():
            return track.version, f"rollout of {track.version} is {state.value}; device already runs it"
        return track.previous, f"rollout of {track.version} is {state.value}; previous {track.previous}"
    b = bucket(mac, product, kind, track.version)
    if in_rollout(mac, product, kind, track.version, track.percent):
        return track.version, f"bucket {b} < {track.percent}% → new {track.version}{plan_position(track, b)}"
    return track.previous, f"bucket {b} ≥ {track.percent}% → previous {track.previous}{plan_position(track, b)}"


def stage_of(b: int, stages: tuple[int, ...]) -> int:
    """The index of the first stage whose percentage includes bucket `b` (len(stages) if none does)."""
    for i, percent in enumerate(stages):
        if b < percent * (BUCKETS // 100):
            return i
    return len(stages)


def plan_position(track: Track, b: int) -> str:
    """Where a device with bucket `b` stands in the track's plan, for the target's reason."""
    plan = track.plan
    if plan is None:
        return ""
    mine = stage_of(b, plan.stages)
    where = f"; plan at stage {plan.stage + 1} of {len(plan.stages)}, this device's is stage {mine + 1}"
    where += f" ({plan.stages[mine]}%)" if mine < len(plan.stages) else ""
    if mine > plan.stage and not plan.aborted:
        where += ": offered when the plan reaches it"
    return where


# --- channel changes -----------------------------------------------------------------------------


def pointed(
    current: Track | None,
    version: str,
    percent: int,
    max_failure_rate: float | None,
    min_devices: int | None,
    max_offers_per_minute: int | None = None,
    max_silence_excess: float | None = None,
) -> tuple[Track, bool]:
    """The track after pointing a channel at `version` (`channel set`, or promotion on upload), and
    whether its counters start from zero. The same version again changes only the percentage, the
    thresholds and the pace (and ends a plan: the operator steers by hand now); a new one starts a new
    rollout whose fallback is the channel's last good release. A setting given as None keeps the current
    one; a pace of 0 removes the limit."""
    defaults = current or Track(version)
    rate = defaults.max_failure_rate if max_failure_rate is None else max_failure_rate
    minimum = defaults.min_devices if min_devices is None else min_devices
    pace = defaults.max_offers_per_minute if max_offers_per_minute is None else (max_offers_per_minute or None)
    excess = defaults.max_silence_excess if max_silence_excess is None else max_silence_excess
    if current is not None and current.version == version:
        # An operator setting the percentage by hand takes the rollout over from its plan, if it had one.
        changed = replace(current, percent=percent, max_failure_rate=rate, min_devices=minimum, plan=None)
        return replace(changed, max_offers_per_minute=pace, max_silence_excess=excess), False
    previous = last_good(current)
    track = Track(
        version=version,
        previous=previous if previous != version else None,
        percent=percent,
        max_failure_rate=rate,
        min_devices=minimum,
        max_silence_excess=excess,
        rev=current.rev if current else 0,
        max_offers_per_minute=pace,
    )
    return track, True


def rolled_back(current: Track) -> Track:
    """Back to `previous` for the whole channel, as a deliberate downgrade devices accept."""
    assert current.previous is not None
    return Track(
        version=current.previous,
        previous=None,
        percent=100,
        max_failure_rate=current.max_failure_rate,
        min_devices=current.min_devices,
        max_silence_excess=current.max_silence_excess,
        rollback=True,
        rev=current.rev,
        max_offers_per_minute=current.max_offers_per_minute,
    )


def last_good(current: Track | None) -> str | None:
    if current is None:
        return None
    return current.version if complete(current) else current.previous
