"""The JSON shapes of otafleet's records: what `otafleet … --output json` prints and what the operator
API (functions/admin) answers, so a script and the console read one shape.

Built explicitly (not dumped from the dataclasses) so callers can rely on them; secrets and their hashes
never appear. Plain functions of the models: no storage, no CLI, nothing heavy to import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from otafleet import plans, rollout, windows
from otafleet.controller import RolloutStatus
from otafleet.decision import Decision
from otafleet.fleet import ChannelSummary, FleetOverview, ProductOverview, ProductVersions, TrackStatus, device_version
from otafleet.models import Attempt, AuditEntry, Channel, Device, Product, ProductKey, Release, ReleaseState, TrackState
from otafleet.protocol import is_device_mac, not_a_device
from otafleet.rhythm import epoch, learned


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, sets and tuples turned into plain JSON values (sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def audit_entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {
        "at": e.at,
        "id": e.id,
        "actor": e.actor,
        "action": e.action,
        "product": e.product,
        "target": e.target,
        "before": e.before,
        "after": e.after,
        "expires_at": e.expires_at,
    }


def product_dict(p: Product) -> dict[str, Any]:
    return {
        "name": p.name,
        "platform": p.platform,
        "delivery": p.delivery.value,
        "enroll": p.enroll,
        "auth_required": p.auth_required,
        "allow_downgrade": p.allow_downgrade,
        "default_channel": p.default_channel,
        "max_image_bytes": p.max_image_bytes,
        "window": windows.describe(p.window) if p.window else None,
        "signed": p.signed,
        "keys": [key_dict(k) for k in p.keys],
    }


def key_dict(k: ProductKey) -> dict[str, Any]:
    return {
        "name": k.name,
        "fingerprint": k.fingerprint,
        "algorithm": k.algorithm,
        "state": k.state.value,
        "sbv2_digest": k.sbv2_digest,
        "added_at": k.added_at,
        "retired_at": k.retired_at,
    }


def release_dict(r: Release) -> dict[str, Any]:
    return {
        "product": r.product,
        "kind": r.kind.value,
        "version": r.version,
        "state": r.state.value,
        "reason": r.reason,
        "size": r.size,
        "md5": r.md5,
        "sha256": r.sha256,
        "appended_sha256": r.appended_sha256,
        "chip": r.chip,
        "flash_size_bytes": r.flash_size_bytes,
        "s3_key": r.s3_key,
        "s3_version_id": r.s3_version_id,
        "uploaded_at": r.uploaded_at,
        "signature_scheme": r.signature_scheme,
        "signed_by": list(r.signed_by),
        "trusts": list(r.trusts),
        "facts": jsonable(r.facts),
    }


def serving(release: Release, channels: Iterable[Channel]) -> list[str]:
    """Which channels serve the release, e.g. `stable`, `beta 10%`, `stable (previous)`."""
    marks: list[str] = []
    if release.state is ReleaseState.REJECTED:  # a rejected upload shares its version with no channel's release
        return marks
    for ch in channels:
        track = ch.tracks.get(release.kind)
        if track is None:
            continue
        if track.version == release.version:
            mark = ch.name
            if track.percent < 100:
                mark += f" {track.percent}%"
            if track.state is not TrackState.ACTIVE:
                mark += f" {track.state.value}"
            marks.append(mark)
        elif track.previous == release.version and (track.percent < 100 or track.state is not TrackState.ACTIVE):
            marks.append(f"{ch.name} (previous)")
    return marks


def track_dict(s: TrackStatus) -> dict[str, Any]:
    t = s.track
    return {
        "product": s.product,
        "channel": s.channel,
        "kind": s.kind.value,
        "version": t.version,
        "previous": t.previous,
        "percent": t.percent,
        "state": s.state.value,
        "rollback": t.rollback,
        "successes": t.successes,
        "failures": t.failures,
        "unknowns": t.unknowns,
        "silents": t.silents,
        "failure_rate": s.failure_rate,
        "max_failure_rate": t.max_failure_rate,
        "min_devices": t.min_devices,
        "max_offers_per_minute": t.max_offers_per_minute,
        "max_silence_excess": t.max_silence_excess,
        "over_threshold": s.over_threshold,
    }


def channel_dict(c: ChannelSummary) -> dict[str, Any]:
    return {
        "product": c.channel.product,
        "channel": c.channel.name,
        "default": c.default,
        "devices": c.devices,
        "window": windows.describe(c.channel.window) if c.channel.window else None,
        "tracks": [track_dict(t) for t in c.tracks],
    }


def plan_dict(s: RolloutStatus) -> dict[str, Any] | None:
    plan = s.track.plan
    if plan is None:
        return None
    return {
        "stages": list(plan.stages),
        "stage": plan.stage + 1,
        "soak_seconds": plan.soak_seconds,
        "min_success": plan.min_success,
        "stage_started": plan.stage_started,
        "seconds_in_stage": seconds_between(plan.stage_started, s.at),
        "pace_growth": plan.pace_growth,
        "completed": plan.completed,
        "aborted": plan.aborted,
    }


def stage_dict(t: plans.StageTally) -> dict[str, Any]:
    return {
        "percent": t.percent,
        "eligible": t.eligible,
        "offered": t.offered,
        "installed": t.installed,
        "failed": t.failed,
        "unknown": t.unknown,
        "silent": t.silent,
        "pending": t.pending,
    }


def rollout_dict(s: RolloutStatus) -> dict[str, Any]:
    t, seen, test = s.track, s.observation, s.silence
    return {
        "product": s.product,
        "channel": s.channel,
        "kind": s.kind.value,
        "version": t.version,
        "previous": t.previous,
        "percent": t.percent,
        "state": s.state.value,
        "offered": seen.offered,
        "installed": t.successes,
        "failed": t.failures,
        "unknown": t.unknowns,
        "silent": t.silents,
        "pending": seen.pending,
        "overdue": seen.overdue,
        "failure_rate": rollout.failure_rate(t),
        "max_failure_rate": t.max_failure_rate,
        "min_devices": t.min_devices,
        "max_offers_per_minute": t.max_offers_per_minute,
        "control": {
            "since": seen.window_start,
            "devices": seen.control.devices,
            "silent": seen.control.silent,
            "silence_rate": seen.control.rate,
        },
        "silence": {
            "judged": test.offered.devices,
            "silence_rate": test.offered.rate,
            "baseline": test.baseline,
            "excess": test.excess,
            "z": test.z,
            "max_silence_excess": t.max_silence_excess,
            "halts": test.halts,
            "why": test.why,
        },
        "plan": plan_dict(s),
        "stages": [stage_dict(x) for x in s.stages],
        "next": {"action": s.step.action.value, "at": s.step.at, "why": s.step.why},
        "verdict": s.verdict,
        "at": s.at,
    }


def seconds_between(start: str | None, end: str) -> int | None:
    return epoch(end) - epoch(start) if start else None


def attempt_dict(a: Attempt) -> dict[str, Any]:
    plain = asdict(a)
    plain.update(kind=a.kind.value, state=a.state.value, counted=a.counted.value if a.counted else None)
    return plain


def attempts_dict(d: Device) -> dict[str, Any]:
    return {k.value: attempt_dict(a) for k, a in sorted(d.attempts.items(), key=lambda ka: ka[0].value)}


def device_dict(d: Device, seen_product: str | None = None) -> dict[str, Any]:
    r = d.reported
    return {
        "mac": d.mac,
        "product": d.product,
        "channel": d.channel,
        "assigned": d.assigned,
        "seen_product": seen_product,
        "blocked": d.blocked,
        "pins": {k.value: v for k, v in sorted(d.pins.items(), key=lambda kv: kv[0].value)},
        "chip": d.chip,
        "delivery": d.delivery.value if d.delivery else None,
        "has_credentials": d.secret_hash is not None,
        "version": device_version(d),
        "reported": asdict(r),
        "running_version": d.running_version,
        "running_md5": d.running_md5,
        "fs_version": d.fs_version,
        "attempts": attempts_dict(d),
        "failed": sorted(d.failed),
        "enrolled_at": d.enrolled_at,
        "installs": d.installs,
        "checks": d.checks,
        "rhythm": None
        if d.rhythm is None
        else {
            "last_counted_check": iso_time(d.rhythm.last),
            "interval_seconds": d.rhythm.seconds if d.rhythm.samples else None,
            "samples": d.rhythm.samples,
            "learned": learned(d.rhythm),
        },
        "silence_watch": None
        if d.watch is None
        else {"kind": d.watch.kind.value, "silent_after": iso_time(d.watch.due)},
        "last_outcome": d.last_outcome,
        "last_reason": d.last_reason,
        "first_seen": d.first_seen,
    }


def not_a_device_warnings(devices: Iterable[Device]) -> list[str]:
    """Records kept under a MAC that names no device: an earlier otafleet took arduino-esp32 3.x's zero
    STA MAC for an identity, so every Ethernet board of such a fleet checked in as that one record. No
    check reaches them now; the operator must learn what to do about them."""
    warnings = []
    for d in devices:
        if is_device_mac(d.mac):
            continue
        where = f"; it was assigned to {d.product}/{d.channel}" if d.assigned else ""
        warnings.append(
            f"warning: {not_a_device(d.mac)}. This record was written by an earlier otafleet, which took the MAC "
            f"for a device (arduino-esp32 3.x Ethernet boards all checked in as 00:00:00:00:00:00){where}. No check "
            "reaches it now and it is not counted: assign the boards by their own MACs (`otafleet devices "
            "--unassigned`), then delete the record with "
            f'`otafleet device delete {d.mac}` (docs/operations.md, "Records that are not devices")'
        )
    return warnings


def distribution_dict(dist: Sequence[ProductVersions]) -> list[dict[str, Any]]:
    return [
        {"product": p.product, "versions": [{"version": v.version, "devices": v.devices} for v in p.versions]}
        for p in dist
    ]


def overview_dict(o: FleetOverview) -> dict[str, Any]:
    return {
        "devices": [device_dict(d, o.seen_products.get(d.mac)) for d in o.devices],
        "distribution": distribution_dict(o.distribution),
        "rollouts": [track_dict(s) for s in o.rollouts],
        "warnings": not_a_device_warnings(o.devices),
    }


def iso_time(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def answer_status(decision: Decision) -> int:
    """The HTTP status the device would see (an offer is a 302 redirect or a 200 with the image)."""
    return decision.status


def decision_dict(mac: str, mode: str, decision: Decision, device: Device) -> dict[str, Any]:
    release = decision.release
    return {
        "mac": mac,
        "mode": mode,
        "product": decision.product,
        "channel": decision.channel,
        "outcome": decision.outcome.value,
        "status": answer_status(decision),
        "reason": decision.reason,
        "detail": decision.detail,
        "release": None
        if release is None
        else {"kind": release.kind.value, "version": release.version, "md5": release.md5, "size": release.size},
        "delivery": decision.delivery.value if decision.delivery else None,
        "steps": [{"name": s.name, "result": s.result} for s in decision.steps],
        "device": {
            "version": device_version(device),
            "reported_at": device.reported.at,
            "attempts": attempts_dict(device),
            "failed": sorted(device.failed),
        },
    }


def product_overview_dict(o: ProductOverview) -> dict[str, Any]:
    return {
        "product": o.product,
        "channel": o.channel,
        "devices": o.devices,
        "by_version": [{"version": v.version, "count": v.devices} for v in o.versions],
        "by_state": [{"state": s, "count": n} for s, n in o.states],
        "rollouts": [track_dict(s) for s in o.rollouts],
    }
