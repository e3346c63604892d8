"""How otafleet's records look on the terminal. Their JSON shapes (`--output json`) are otafleet.shapes',
shared with the operator API; secrets and their hashes never appear in either form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from otafleet import plans, windows
from otafleet.controller import RolloutStatus, RunReport
from otafleet.decision import Decision
from otafleet.fleet import ChannelSummary, FleetOverview, ProductVersions, TrackStatus, device_version, last_seen
from otafleet.models import Attempt, Channel, Device, Kind, Product, ProductKey, Release, TrackState
from otafleet.protocol import is_device_mac
from otafleet.rhythm import LEARNED_AFTER, learned
from otafleet.shapes import answer_status, iso_time, not_a_device_warnings, seconds_between, serving
from otafleet_cli.output import duration, fields, percent, table, whole_percentages

# --- products ---------------------------------------------------------------------------------------


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


# --- devices ----------------------------------------------------------------------------------------


def attempt_line(a: Attempt) -> str:
    line = f"{a.kind.value} {a.version} {a.state.value}, offered {a.offers}x"
    return line + (f" ({a.why})" if a.why else "")


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


def distribution_text(dist: Sequence[ProductVersions]) -> str:
    rows = []
    for p in dist:
        shares = whole_percentages([v.devices for v in p.versions])
        for v, share in zip(p.versions, shares, strict=True):
            rows.append([p.product or "(unassigned)", v.version or "(unknown)", v.devices, f"{share}%"])
    return table(["PRODUCT", "VERSION", "DEVICES", "SHARE"], rows)


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
        (
            "silent after",
            f"{iso_time(d.watch.due)} unless it checks in ({d.watch.kind.value} offer)" if d.watch else None,
        ),
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
