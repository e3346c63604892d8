"""How otafleet's records look on the terminal and in `--json` output.

The JSON shapes are built explicitly here (not dumped from the dataclasses) so scripts can rely on them;
secrets and their hashes never appear in either form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from otafleet import plans, rollout, windows
from otafleet.controller import RolloutStatus, RunReport
from otafleet.decision import Decision
from otafleet.fleet import ChannelSummary, FleetOverview, ProductVersions, TrackStatus, device_version, last_seen
from otafleet.models import Attempt, Channel, Device, Kind, Product, ProductKey, Release, ReleaseState, TrackState
from otafleet.protocol import is_device_mac, not_a_device
from otafleet.rhythm import LEARNED_AFTER, epoch, learned
from otafleet_cli.output import duration, fields, jsonable, percent, table, whole_percentages

# --- products ---------------------------------------------------------------------------------------


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


# A list command's columns and rows: the table and the CSV of `--output csv` are made of the same.
Rows = tuple[list[str], list[list[object]]]


def product_rows(products: Sequence[Product]) -> Rows:
    return (
        ["PRODUCT", "PLATFORM", "DELIVERY", "ENROLL", "AUTH", "DOWNGRADE", "DEFAULT CHANNEL"],
        [
            [p.name, p.platform, p.delivery, p.enroll, p.auth_required, p.allow_downgrade, p.default_channel]
            for p in products
        ],
    )


def products_table(products: Sequence[Product]) -> str:
    if not products:
        return "no products yet: create one with `otafleet product create NAME --platform esp8266`"
    return table(*product_rows(products))


def product_fields(p: Product) -> str:
    return fields(
        [
            ("product", p.name),
            ("platform", p.platform),
            ("delivery", p.delivery),
            ("enroll", p.enroll),
            ("auth required", p.auth_required),
            ("allow downgrade", p.allow_downgrade),
            ("default channel", p.default_channel),
            ("window", windows.describe(p.window) if p.window else "always"),
            ("signed", _key_summary(p) if p.signed else "no (uploads need no signature)"),
        ]
    )


def _key_summary(p: Product) -> str:
    active = [k.name for k in p.keys if k.active]
    return f"yes, keys: {', '.join(active) if active else 'none active (every upload is refused)'}"


# --- signing keys -----------------------------------------------------------------------------------


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


def keys_table(keys: Sequence[ProductKey], product: str) -> str:
    if not keys:
        return f"no keys: {product} is unsigned; `otafleet product key add {product} KEY.pem` makes it signed"
    return table(
        ["NAME", "ALGORITHM", "STATE", "FINGERPRINT (SHA-256 OF THE PUBLIC KEY)", "ADDED", "RETIRED"],
        [[k.name, k.algorithm, k.state, k.fingerprint, k.added_at, k.retired_at] for k in keys],
    )


def signature_text(r: Release, keys: Sequence[ProductKey] = ()) -> str | None:
    """`sbv2-rsa3072-pss by a1b2c3d4e5f6 (main)`: the scheme and the keys that signed the release."""
    if not r.signed_by:
        return None
    names = {k.fingerprint: k.name for k in keys}
    by = ", ".join(f"{f[:12]} ({names[f]})" if f in names else f[:12] for f in r.signed_by)
    carries = f"; carries {', '.join(names.get(f, f[:12]) for f in r.trusts)}" if r.trusts else ""
    return f"{r.signature_scheme} by {by}{carries}"


# --- releases ---------------------------------------------------------------------------------------


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


def release_fields(r: Release) -> str:
    pairs: list[tuple[str, object]] = [
        ("release", f"{r.product} {r.kind.value} {r.version}"),
        ("state", r.state),
    ]
    if r.reason:
        pairs.append(("reason", r.reason))
    pairs += [
        ("size", f"{r.size} bytes"),
        ("md5", r.md5),
        ("sha256", r.sha256),
    ]
    if r.appended_sha256:
        pairs.append(("appended sha256", r.appended_sha256))
    pairs += [("chip", r.chip), ("signature", signature_text(r) or "none verified")]
    if r.flash_size_bytes:
        pairs.append(("flash size", f"{r.flash_size_bytes} bytes"))
    pairs += [("object", r.s3_key), ("object version", r.s3_version_id), ("uploaded", r.uploaded_at)]
    pairs += [(f"  {k}", v) for k, v in sorted(r.facts.items())]
    return fields(pairs)


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


def release_rows(releases: Sequence[Release], channels: Sequence[Channel], keys: Sequence[ProductKey] = ()) -> Rows:
    return (
        ["KIND", "VERSION", "STATE", "SIZE", "CHIP", "UPLOADED", "CHANNELS", "MD5", "SIGNATURE", "OBJECT", "REASON"],
        [
            [
                r.kind,
                r.version,
                r.state,
                r.size,
                r.chip,
                r.uploaded_at,
                ", ".join(serving(r, channels)),
                r.md5,
                signature_text(r, keys),
                r.s3_key,
                r.reason,
            ]
            for r in releases
        ],
    )


def releases_table(releases: Sequence[Release], channels: Sequence[Channel], keys: Sequence[ProductKey] = ()) -> str:
    if not releases:
        return "no releases yet: upload one with `otafleet upload FILE --product PRODUCT`"
    return table(*release_rows(releases, channels, keys))


# --- channels ---------------------------------------------------------------------------------------


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


def tracks_table(statuses: Sequence[TrackStatus], *, with_channel: bool = False) -> str:
    headers = [
        "KIND",
        "VERSION",
        "PREVIOUS",
        "PERCENT",
        "STATE",
        "ROLLBACK",
        "OK",
        "FAILED",
        "UNKNOWN",
        "SILENT",
        "FAILURE RATE",
        "HALTS",
        "PACE",
    ]
    if with_channel:
        headers = ["CHANNEL", *headers]
    rows = []
    for s in statuses:
        t = s.track
        row: list[object] = [
            s.kind,
            t.version,
            t.previous,
            f"{t.percent}%",
            s.state,
            t.rollback,
            t.successes,
            t.failures,
            t.unknowns,
            t.silents,
            percent(s.failure_rate),
            f"> {percent(t.max_failure_rate)} after {t.min_devices}",
            f"{t.max_offers_per_minute}/min" if t.max_offers_per_minute else "-",
        ]
        rows.append([f"{s.product}/{s.channel}", *row] if with_channel else row)
    return table(headers, rows)


def channel_dict(c: ChannelSummary) -> dict[str, Any]:
    return {
        "product": c.channel.product,
        "channel": c.channel.name,
        "default": c.default,
        "devices": c.devices,
        "window": windows.describe(c.channel.window) if c.channel.window else None,
        "tracks": [track_dict(t) for t in c.tracks],
    }


def channel_rows(channels: Sequence[ChannelSummary]) -> Rows:
    """One row per track (a channel without tracks gets one row of dashes)."""
    rows: list[list[object]] = []
    for c in channels:
        head: list[object] = [c.channel.name, c.default]
        window = windows.describe(c.channel.window) if c.channel.window else None
        for t in c.tracks or (None,):
            if t is None:
                rows.append([*head, None, None, None, None, None, c.devices, window])
            else:
                track = [t.kind, t.track.version, t.track.previous, f"{t.track.percent}%", t.state]
                rows.append([*head, *track, c.devices, window])
    headers = ["CHANNEL", "DEFAULT", "KIND", "VERSION", "PREVIOUS", "PERCENT", "STATE", "DEVICES", "WINDOW"]
    return headers, rows


def channels_table(channels: Sequence[ChannelSummary], product: str) -> str:
    if not channels:
        return f"{product} has no channels yet: `otafleet channel set {product} CHANNEL VERSION` creates one"
    return table(*channel_rows(channels))


def track_advice(statuses: Iterable[TrackStatus]) -> list[str]:
    notes = []
    for s in statuses:
        flag = "--fs " if s.kind is Kind.FS else ""
        where = f"{s.product} {s.channel}"
        if s.state is TrackState.HALTED:
            # The two automatic halts: the failure rate (readable from the counts), else the silence rule.
            if s.over_threshold or not s.track.silents:
                why = f"failure rate {percent(s.failure_rate)} over {s.outcomes} devices"
            else:
                why = f"{s.track.silents} devices went silent (`otafleet rollout status {where}`)"
            notes.append(
                f"rollout of {s.product}/{s.channel} {s.kind.value} {s.track.version} HALTED itself: {why}; "
                f"`otafleet channel resume --reset-counts {flag}{where}` or `otafleet channel rollback {flag}{where}`"
            )
        elif s.state is TrackState.PAUSED:
            notes.append(
                f"rollout of {s.product}/{s.channel} {s.kind.value} {s.track.version} is paused; "
                f"`otafleet channel resume {flag}{where}` continues it"
            )
    return notes


# --- the rollout controller -------------------------------------------------------------------------


def tick_text(report: RunReport) -> str:
    lines = [f"controller pass at {report.at}"]
    for x in report.silenced:
        where = f"{x.product}/{x.channel}" if x.channel else f"{x.product} (pinned)"
        counted = "" if x.counted else ", not counted for a rollout"
        lines.append(f"  silent   {x.mac}  {x.kind.value} {x.version} on {where}{counted}")
    for h in report.halted:
        lines.append(f"  HALTED   {h.product}/{h.channel} {h.kind.value} {h.version} on {h.rule}: {h.why}")
    for m in report.moved:
        what = "advanced" if m.action is plans.Action.ADVANCE else "complete"
        lines.append(f"  {what:<8} {m.product}/{m.channel} {m.kind.value} {m.version} at {m.percent}%: {m.why}")
    if not report.silenced and not report.halted and not report.moved:
        lines.append("  nothing to do: no offer past its silence deadline, no rollout to halt or to advance")
    return "\n".join(lines)


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


def bar(done: int, total: int, width: int = 20) -> str:
    """`[#######-------------]`: how much of a stage's devices are judged."""
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def stages_table(s: RolloutStatus) -> str:
    plan = s.track.plan
    rows = []
    for i, x in enumerate(s.stages):
        if plan is None:
            where = "now"
        elif plan.completed or i < plan.stage:
            where = "done"
        elif i == plan.stage:
            where = "now"
        else:
            where = "next" if i == plan.stage + 1 else ""
        judged = x.installed + x.failed + x.unknown + x.silent
        rows.append(
            [
                f"{i + 1}" if plan else "-",
                f"{x.percent}%",
                where,
                x.eligible,
                x.offered,
                x.installed,
                x.failed,
                x.unknown,
                x.silent,
                x.pending,
                f"{bar(judged, x.eligible)} {judged}/{x.eligible}",
            ]
        )
    headers = ["STAGE", "PERCENT", "", "ELIGIBLE", "OFFERED", "INSTALLED", "FAILED", "UNKNOWN", "SILENT", "PENDING"]
    return table([*headers, "JUDGED"], rows)


def rollout_text(statuses: Sequence[RolloutStatus]) -> str:
    if not statuses:
        return "the channel serves nothing yet"
    rows = []
    for s in statuses:
        t, seen = s.track, s.observation
        control = seen.control
        rows.append(
            [
                s.kind,
                t.version,
                f"{t.percent}%",
                s.state,
                seen.offered,
                t.successes,
                t.failures,
                t.unknowns,
                t.silents,
                seen.pending,
                f"{control.silent}/{control.devices} ({percent(control.rate)})" if control.devices else None,
            ]
        )
    headers = ["KIND", "VERSION", "PERCENT", "STATE", "OFFERED", "INSTALLED", "FAILED", "UNKNOWN", "SILENT"]
    lines = [table([*headers, "PENDING", "CONTROL SILENT"], rows)]
    for s in statuses:
        lines.append("")
        plan = s.track.plan
        head = f"{s.kind.value} {s.track.version}"
        if plan is not None:
            soak = duration(plan.soak_seconds)
            in_stage = duration(seconds_between(plan.stage_started, s.at))
            head += (
                f": plan {','.join(map(str, plan.stages))} %, soak {soak}, success bar {percent(plan.min_success)};"
                f" stage {plan.stage + 1} of {len(plan.stages)} for {in_stage}"
            )
        lines += [head, stages_table(s)]
        if plan is not None:
            at = f" at {s.step.at}" if s.step.at else ""
            lines.append(f"next: {s.step.action.value}{at} ({s.step.why})")
        since = f" (control group since {s.observation.window_start})" if s.observation.window_start else ""
        lines.append(f"verdict: {s.verdict}{since}")
    return "\n".join(lines)


def seconds_between(start: str | None, end: str) -> int | None:
    return epoch(end) - epoch(start) if start else None


# --- devices ----------------------------------------------------------------------------------------


def attempt_dict(a: Attempt) -> dict[str, Any]:
    plain = asdict(a)
    plain.update(kind=a.kind.value, state=a.state.value, counted=a.counted.value if a.counted else None)
    return plain


def attempts_dict(d: Device) -> dict[str, Any]:
    return {k.value: attempt_dict(a) for k, a in sorted(d.attempts.items(), key=lambda ka: ka[0].value)}


def attempt_line(a: Attempt) -> str:
    line = f"{a.kind.value} {a.version} {a.state.value}, offered {a.offers}x"
    return line + (f" ({a.why})" if a.why else "")


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
            "last_counted_check": _iso(d.rhythm.last),
            "interval_seconds": d.rhythm.seconds if d.rhythm.samples else None,
            "samples": d.rhythm.samples,
            "learned": learned(d.rhythm),
        },
        "silence_watch": None if d.watch is None else {"kind": d.watch.kind.value, "silent_after": _iso(d.watch.due)},
        "last_outcome": d.last_outcome,
        "last_reason": d.last_reason,
        "first_seen": d.first_seen,
    }


def _notes(d: Device, seen_product: str | None) -> str:
    notes = []
    if not is_device_mac(d.mac):
        notes.append("NOT A DEVICE (see below)")
    if d.blocked:
        notes.append("BLOCKED")
    if not d.assigned:
        notes.append(f"unassigned, asked for {seen_product}" if seen_product else "unassigned")
    for kind, version in sorted(d.pins.items(), key=lambda kv: kv[0].value):
        notes.append(f"pinned {kind.value} {version}")
    for a in sorted(d.attempts.values(), key=lambda a: a.kind.value):
        if a.open:
            notes.append(f"offered {a.kind.value} {a.version} x{a.offers}")
        elif a.state.value != "installed":
            notes.append(f"{a.kind.value} {a.version} {a.state.value}")
    if d.failed:
        notes.append("failed " + ", ".join(sorted(d.failed)))
    return "; ".join(notes)


def device_rows(devices: Sequence[Device], seen: dict[str, str] | None = None) -> Rows:
    seen = seen or {}
    return (
        ["MAC", "PRODUCT", "CHANNEL", "VERSION", "LAST SEEN", "LAST ANSWER", "NOTES"],
        [
            [
                d.mac,
                d.product if d.assigned else None,
                d.channel if d.assigned else None,
                device_version(d),
                last_seen(d),
                d.last_reason,
                _notes(d, seen.get(d.mac)),
            ]
            for d in devices
        ],
    )


def devices_table(devices: Sequence[Device], seen: dict[str, str] | None = None) -> str:
    return table(*device_rows(devices, seen))


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


def distribution_text(dist: Sequence[ProductVersions]) -> str:
    rows = []
    for p in dist:
        shares = whole_percentages([v.devices for v in p.versions])
        for v, share in zip(p.versions, shares, strict=True):
            rows.append([p.product or "(unassigned)", v.version or "(unknown)", v.devices, f"{share}%"])
    return table(["PRODUCT", "VERSION", "DEVICES", "SHARE"], rows)


def overview_dict(o: FleetOverview) -> dict[str, Any]:
    return {
        "devices": [device_dict(d, o.seen_products.get(d.mac)) for d in o.devices],
        "distribution": distribution_dict(o.distribution),
        "rollouts": [track_dict(s) for s in o.rollouts],
        "warnings": not_a_device_warnings(o.devices),
    }


def overview_text(o: FleetOverview) -> str:
    if not o.devices:
        parts = ["no devices"]
    else:
        parts = [
            devices_table(o.devices, o.seen_products),
            "",
            "Version distribution",
            distribution_text(o.distribution),
        ]
        if warnings := not_a_device_warnings(o.devices):
            parts += ["", *warnings]
    if o.rollouts:
        parts += ["", "Rollouts in progress", tracks_table(o.rollouts, with_channel=True)]
        parts += track_advice(o.rollouts)
    return "\n".join(parts)


def device_fields(d: Device, running: Release | None = None, keys: Sequence[ProductKey] = ()) -> str:
    r = d.reported
    pins = ", ".join(f"{k.value} {v}" for k, v in sorted(d.pins.items(), key=lambda kv: kv[0].value))
    pairs: list[tuple[str, object]] = [
        ("device", d.mac),
        ("product", d.product if d.assigned else f"(unassigned){' last set: ' + d.product if d.product else ''}"),
        ("channel", d.channel),
        ("blocked", d.blocked),
        ("pinned", pins or None),
        ("chip", d.chip),
        ("delivery", d.delivery.value if d.delivery else "(product setting)"),
        ("credentials", "issued" if d.secret_hash else None),
        ("first seen", d.first_seen),
        ("checks", d.checks),
        ("check interval", _rhythm(d)),
        ("silent after", f"{_iso(d.watch.due)} unless it checks in ({d.watch.kind.value} offer)" if d.watch else None),
        ("last answer", f"{d.last_outcome} ({d.last_reason})" if d.last_outcome else None),
        ("", ""),
        ("last reported", r.at or "never"),
        ("  version", r.version),
        ("  fs version", r.fs_version),
        ("  sketch md5", r.sketch_md5),
        ("  sketch sha256", r.sketch_sha256),
        ("  free space", r.free_space),
        ("  sketch size", r.sketch_size),
        ("  chip size", r.chip_size),
        ("  sdk", r.sdk_version),
        ("  mode", r.mode),
        ("  source ip", r.source_ip),
        ("", ""),
        ("running", f"{d.running_version} (md5 {d.running_md5 or '-'})" if d.running_version else None),
        ("  signature", (signature_text(running, keys) or "unsigned") if running else None),
        ("filesystem", d.fs_version),
    ]
    if d.enrolled_at:
        pairs.append(("enrolled", f"{d.enrolled_at} (by itself; {d.installs} confirmed installs)"))
    for kind in Kind:
        a = d.attempts.get(kind)
        if a is None:
            pairs.append((f"{kind.value} attempt", None))
            continue
        pairs += [
            (f"{kind.value} attempt", f"{a.version}: {a.state.value}"),
            ("  offered", f"{a.offers}x, first {a.started}, last {a.last_offer}"),
            ("  before", _build(a.before)),
            ("  ended", f"{a.ended}: {a.why}" if a.ended else None),
            ("  counts for", f"{a.channel} ({'trusted' if a.trusted else 'not trusted'})" if a.channel else "pinned"),
        ]
    pairs.append(("failed releases", ", ".join(sorted(d.failed)) or None))
    return fields(pairs)


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rhythm(d: Device) -> str | None:
    r = d.rhythm
    if r is None:
        return None
    if not r.samples:
        return "learning (no interval seen yet)"
    if not learned(r):
        return f"learning ({r.samples} of {LEARNED_AFTER} intervals seen, longest {duration(r.seconds)})"
    return f"about {duration(r.seconds)} (learned from {r.samples} intervals)"


# --- explain ----------------------------------------------------------------------------------------


def _build(b: Any) -> str:
    parts = [f"{k} {v}" for k, v in asdict(b).items() if v is not None]
    return ", ".join(parts) or "nothing reported"


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


def decision_text(mac: str, mode: str, decision: Decision, device: Device) -> str:
    steps = [s for s in decision.steps if s.name != "answer"]
    head = f"{mac}, mode {mode}: dry run of its next check, as if it reported what it last reported"
    if device.reported.at:
        head += f" ({device.reported.at})"
    lines = [head, table(["#", "STEP", "RESULT"], [[i, s.name, s.result] for i, s in enumerate(steps, 1)])]
    context: list[tuple[str, object]] = []
    for a in sorted(device.attempts.values(), key=lambda a: a.kind.value):
        context.append((f"{a.kind.value} attempt", attempt_line(a)))
    if device.failed:
        context.append(("failed releases", ", ".join(sorted(device.failed))))
    if context:
        lines += ["", fields(context)]
    lines += ["", f"answer: {answer_status(decision)} {decision.reason}: {decision.detail}"]
    return "\n".join(lines)
