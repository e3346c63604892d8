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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from otafleet.models import Kind, Track, TrackState

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
        return track.version, f"bucket {b} < {track.percent}% → new {track.version}"
    return track.previous, f"bucket {b} ≥ {track.percent}% → previous {track.previous}"


# --- channel changes -----------------------------------------------------------------------------


def pointed(
    current: Track | None,
    version: str,
    percent: int,
    max_failure_rate: float | None,
    min_devices: int | None,
    max_offers_per_minute: int | None = None,
) -> tuple[Track, bool]:
    """The track after pointing a channel at `version` (`channel set`, or promotion on upload), and
    whether its counters start from zero. The same version again changes only the percentage, the
    thresholds and the pace; a new one starts a new rollout whose fallback is the channel's last good
    release. A setting given as None keeps the current one; a pace of 0 removes the limit."""
    defaults = current or Track(version)
    rate = defaults.max_failure_rate if max_failure_rate is None else max_failure_rate
    minimum = defaults.min_devices if min_devices is None else min_devices
    pace = defaults.max_offers_per_minute if max_offers_per_minute is None else (max_offers_per_minute or None)
    if current is not None and current.version == version:
        changed = replace(current, percent=percent, max_failure_rate=rate, min_devices=minimum)
        return replace(changed, max_offers_per_minute=pace), False
    previous = last_good(current)
    track = Track(
        version=version,
        previous=previous if previous != version else None,
        percent=percent,
        max_failure_rate=rate,
        min_devices=minimum,
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
        rollback=True,
        rev=current.rev,
        max_offers_per_minute=current.max_offers_per_minute,
    )


def last_good(current: Track | None) -> str | None:
    if current is None:
        return None
    return current.version if complete(current) else current.previous
