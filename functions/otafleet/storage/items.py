"""Conversions between the records in `otafleet.models` and DynamoDB items (plain Python values).

Keys of the catalog table: one partition per product holds the product, its channels and its releases,
so one Query loads everything the decision needs about a product. Keys of the audit table: one partition
per product (`product`), entries sorted by `<time>#<id>` (`sk`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from otafleet.models import (
    Attempt,
    AttemptState,
    AuditEntry,
    Build,
    Channel,
    Delivery,
    Device,
    KeyState,
    Kind,
    Plan,
    Product,
    ProductKey,
    Release,
    ReleaseState,
    Reported,
    Rhythm,
    SilenceWatch,
    Track,
    TrackState,
    Window,
)

Item = dict[str, Any]

PRODUCT_SK = "PRODUCT"


def product_pk(name: str) -> str:
    return f"P#{name}"


def channel_sk(name: str) -> str:
    return f"C#{name}"


def release_sk(kind: Kind, version: str) -> str:
    return f"R#{kind.value}#{version}"


def quota_sk(name: str, period: str) -> str:
    """A product's count of one quota in one period (`Q#enroll#2026-12-01T21`)."""
    return f"Q#{name}#{period}"


# Rejected uploads' sort keys start with this: CatalogStore.rejections reads them by it.
REJECTION_PREFIX = "X#"


def rejection_sk(kind: Kind, version: str, sha256: str) -> str:
    return f"{REJECTION_PREFIX}{kind.value}#{version}#{sha256}"


def counter_name(event: str, kind: Kind, version: str) -> str:
    """Top-level attribute on a channel item counting one rollout's outcomes of one release (`ok`, `fail`,
    `unknown`, `silent`: models.COUNTERS), top level because DynamoDB's atomic ADD does not reach into maps."""
    return f"{event}#{kind.value}#{version}"


def attempt_attribute(kind: Kind) -> str:
    """Top-level attribute of a device's attempt of one kind: each kind is written on its own."""
    return f"attempt_{kind.value}"


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _clean(item: Item) -> Item:
    return {k: v for k, v in item.items() if v is not None and v != {} and v != ""}


# --- products, channels, releases -------------------------------------------------------------


def window_to_map(w: Window | None) -> Item | None:
    return None if w is None else {"days": list(w.days), "start": w.start, "end": w.end, "tz": w.tz}


def window_from_map(m: Item | None) -> Window | None:
    if not m:
        return None
    return Window(
        days=tuple(int(d) for d in m.get("days") or ()),
        start=_int(m.get("start")),
        end=_int(m.get("end")),
        tz=m.get("tz", "UTC"),
    )


def product_to_item(p: Product) -> Item:
    return _clean(
        {
            "pk": product_pk(p.name),
            "sk": PRODUCT_SK,
            "type": "product",
            "name": p.name,
            "platform": p.platform,
            "delivery": p.delivery.value,
            "enroll": p.enroll,
            "default_channel": p.default_channel,
            "auth_required": p.auth_required,
            "allow_downgrade": p.allow_downgrade,
            "max_image_bytes": p.max_image_bytes,
            "window": window_to_map(p.window),
            # On the product item itself: the decision's one query loads them with the product.
            "keys": [key_to_map(k) for k in p.keys] or None,
        }
    )


def key_to_map(k: ProductKey) -> Item:
    return _clean(
        {
            "name": k.name,
            "fingerprint": k.fingerprint,
            "algorithm": k.algorithm,
            "pem": k.pem,
            "state": k.state.value,
            "sbv2_digest": k.sbv2_digest,
            "added_at": k.added_at,
            "retired_at": k.retired_at,
        }
    )


def key_from_map(m: Item) -> ProductKey:
    return ProductKey(
        name=m["name"],
        fingerprint=m["fingerprint"],
        algorithm=m.get("algorithm", ""),
        pem=m.get("pem", ""),
        state=KeyState(m.get("state", "active")),
        sbv2_digest=m.get("sbv2_digest"),
        added_at=m.get("added_at"),
        retired_at=m.get("retired_at"),
    )


def product_from_item(item: Item) -> Product:
    return Product(
        name=item["name"],
        platform=item["platform"],
        delivery=Delivery(item.get("delivery", "redirect")),
        enroll=bool(item.get("enroll", False)),
        default_channel=item.get("default_channel", "stable"),
        auth_required=bool(item.get("auth_required", False)),
        allow_downgrade=bool(item.get("allow_downgrade", False)),
        max_image_bytes=_int(item.get("max_image_bytes"), 16 * 1024 * 1024),
        window=window_from_map(item.get("window")),
        keys=tuple(key_from_map(m) for m in item.get("keys") or ()),
    )


def track_to_map(t: Track) -> Item:
    return _clean(
        {
            "version": t.version,
            "previous": t.previous,
            "percent": t.percent,
            "state": t.state.value,
            "max_failure_rate": Decimal(str(t.max_failure_rate)),
            "min_devices": t.min_devices,
            "max_silence_excess": Decimal(str(t.max_silence_excess)),
            "rollback": t.rollback,
            "rev": t.rev,
            "pace": t.max_offers_per_minute,
            "plan": plan_to_map(t.plan) if t.plan else None,
        }
    )


def plan_to_map(p: Plan) -> Item:
    return _clean(
        {
            "stages": list(p.stages),
            "soak": p.soak_seconds,
            "min_success": Decimal(str(p.min_success)),
            "stage": p.stage,
            "stage_started": p.stage_started,
            "pace_growth": Decimal(str(p.pace_growth)),
            "completed": p.completed,
            "control_silence": Decimal(str(p.control_silence)),
            "aborted": p.aborted or None,
        }
    )


def plan_from_map(m: Item | None) -> Plan | None:
    if not m:
        return None
    return Plan(
        stages=tuple(_int(s) for s in m["stages"]),
        soak_seconds=_int(m.get("soak")),
        min_success=float(m.get("min_success", 0)),
        stage=_int(m.get("stage")),
        stage_started=m.get("stage_started", ""),
        pace_growth=float(m.get("pace_growth", 1)),
        completed=m.get("completed"),
        control_silence=float(m.get("control_silence", 0)),
        aborted=bool(m.get("aborted", False)),
    )


def track_from_map(m: Item, kind: Kind, counters: Item) -> Track:
    version = m["version"]
    return Track(
        version=version,
        previous=m.get("previous"),
        percent=_int(m.get("percent"), 100),
        state=TrackState(m.get("state", "active")),
        successes=_int(counters.get(counter_name("ok", kind, version))),
        failures=_int(counters.get(counter_name("fail", kind, version))),
        max_failure_rate=float(m.get("max_failure_rate", 0.2)),
        min_devices=_int(m.get("min_devices"), 10),
        rollback=bool(m.get("rollback", False)),
        unknowns=_int(counters.get(counter_name("unknown", kind, version))),
        silents=_int(counters.get(counter_name("silent", kind, version))),
        max_silence_excess=float(m.get("max_silence_excess", Track.max_silence_excess)),
        rev=_int(m.get("rev")),
        max_offers_per_minute=_int(m["pace"]) if m.get("pace") else None,
        plan=plan_from_map(m.get("plan")),
    )


def channel_to_item(c: Channel) -> Item:
    return {
        "pk": product_pk(c.product),
        "sk": channel_sk(c.name),
        "type": "channel",
        "product": c.product,
        "name": c.name,
        "tracks": {k.value: track_to_map(t) for k, t in c.tracks.items()},
    }


def channel_from_item(item: Item) -> Channel:
    tracks = {Kind(k): track_from_map(v, Kind(k), item) for k, v in (item.get("tracks") or {}).items()}
    return Channel(
        product=item["product"], name=item["name"], tracks=tracks, window=window_from_map(item.get("window"))
    )


def release_to_item(r: Release) -> Item:
    return _clean(
        {
            "pk": product_pk(r.product),
            "sk": release_sk(r.kind, r.version),
            "type": "release",
            "product": r.product,
            "kind": r.kind.value,
            "version": r.version,
            "size": r.size,
            "md5": r.md5,
            "sha256": r.sha256,
            "s3_key": r.s3_key,
            "s3_version_id": r.s3_version_id,
            "state": r.state.value,
            "reason": r.reason,
            "chip": r.chip,
            "appended_sha256": r.appended_sha256,
            "flash_size_bytes": r.flash_size_bytes,
            "facts": r.facts,
            "uploaded_at": r.uploaded_at,
            "sketch_size": r.sketch_size,
            "flashed_md5s": list(r.flashed_md5s),
            "signature_scheme": r.signature_scheme,
            "signed_by": list(r.signed_by) or None,
            "trusts": list(r.trusts) or None,
        }
    )


def release_from_item(item: Item) -> Release:
    return Release(
        product=item["product"],
        kind=Kind(item["kind"]),
        version=item["version"],
        size=_int(item.get("size")),
        md5=item.get("md5", ""),
        sha256=item.get("sha256", ""),
        s3_key=item.get("s3_key", ""),
        s3_version_id=item.get("s3_version_id"),
        state=ReleaseState(item.get("state", "registered")),
        reason=item.get("reason"),
        chip=item.get("chip"),
        appended_sha256=item.get("appended_sha256"),
        flash_size_bytes=_int(item["flash_size_bytes"]) if item.get("flash_size_bytes") else None,
        facts={k: (int(v) if isinstance(v, Decimal) else v) for k, v in (item.get("facts") or {}).items()},
        uploaded_at=item.get("uploaded_at"),
        sketch_size=_int(item["sketch_size"]) if item.get("sketch_size") is not None else None,
        flashed_md5s=tuple(item.get("flashed_md5s") or ()),
        signature_scheme=item.get("signature_scheme"),
        signed_by=tuple(item.get("signed_by") or ()),
        trusts=tuple(item.get("trusts") or ()),
    )


# --- devices ------------------------------------------------------------------------------------


def reported_to_map(r: Reported) -> Item:
    return _clean(asdict(r))


def reported_from_map(m: Item) -> Reported:
    def opt_int(key: str) -> int | None:
        return None if m.get(key) is None else int(m[key])

    return Reported(
        version=m.get("version"),
        sketch_md5=m.get("sketch_md5"),
        sketch_sha256=m.get("sketch_sha256"),
        free_space=opt_int("free_space"),
        sketch_size=opt_int("sketch_size"),
        chip_size=opt_int("chip_size"),
        sdk_version=m.get("sdk_version"),
        mode=m.get("mode"),
        source_ip=m.get("source_ip"),
        at=m.get("at"),
        fs_version=m.get("fs_version"),
    )


def build_to_map(b: Build) -> Item:
    return _clean(asdict(b))


def build_from_map(m: Item) -> Build:
    return Build(
        version=m.get("version"),
        md5=m.get("md5"),
        sha256=m.get("sha256"),
        size=None if m.get("size") is None else int(m["size"]),
    )


def attempt_to_map(a: Attempt) -> Item:
    return _clean(
        {
            "kind": a.kind.value,
            "version": a.version,
            "state": a.state.value,
            "offers": a.offers,
            "started": a.started,
            "last_offer": a.last_offer,
            "before": build_to_map(a.before),
            "channel": a.channel,
            "trusted": a.trusted,
            "ended": a.ended,
            "after": build_to_map(a.after) if a.after is not None else None,
            "after_known": a.after is not None,
            "why": a.why,
            "seq": a.seq,
            "counted": a.counted.value if a.counted else None,
        }
    )


def attempt_from_map(m: Item) -> Attempt:
    return Attempt(
        kind=Kind(m["kind"]),
        version=m["version"],
        state=AttemptState(m["state"]),
        offers=_int(m.get("offers"), 1),
        started=m.get("started", ""),
        last_offer=m.get("last_offer", ""),
        before=build_from_map(m.get("before") or {}),
        channel=m.get("channel"),
        trusted=bool(m.get("trusted", False)),
        ended=m.get("ended"),
        after=build_from_map(m.get("after") or {}) if m.get("after_known") else None,
        why=m.get("why"),
        seq=_int(m.get("seq"), 1),
        counted=AttemptState(m["counted"]) if m.get("counted") else None,
    )


def rhythm_to_map(r: Rhythm) -> Item:
    return {"last": r.last, "seconds": r.seconds, "samples": r.samples}


def rhythm_from_map(m: Item | None) -> Rhythm | None:
    if not m or m.get("last") is None:
        return None
    return Rhythm(last=int(m["last"]), seconds=_int(m.get("seconds")), samples=_int(m.get("samples")))


def answer_attribute(kind: Kind) -> str:
    """The device attribute holding the answer of its last recorded check of `kind`."""
    return f"answer_{kind.value}"


# A device's silence watch: three top-level attributes, present only while its latest check that counted
# offered an image. `watch_product` and `watch_due` are the keys of the devices table's sparse index
# `open-offers` (template.yaml), through which the controller finds offers past their deadline.
WATCH_ATTRIBUTES = ("watch_product", "watch_due", "watch_kind")
OPEN_OFFERS_INDEX = "open-offers"


def watch_to_item(w: SilenceWatch) -> Item:
    return {"watch_product": w.product, "watch_due": w.due, "watch_kind": w.kind.value}


def watch_from_item(item: Item) -> SilenceWatch | None:
    if not all(item.get(name) is not None for name in WATCH_ATTRIBUTES):
        return None
    return SilenceWatch(product=item["watch_product"], kind=Kind(item["watch_kind"]), due=int(item["watch_due"]))


def device_to_item(d: Device) -> Item:
    """The operator-owned part of a device (what `device assign` writes)."""
    return _clean(
        {
            "mac": d.mac,
            "product": d.product,
            "channel": d.channel,
            "assigned": d.assigned,
            "blocked": d.blocked,
            "pins": {k.value: v for k, v in d.pins.items()},
            "chip": d.chip,
            "delivery": d.delivery.value if d.delivery else None,
            "secret_hash": d.secret_hash,
        }
    )


def device_from_item(item: Item) -> Device:
    attempts = {k: attempt_from_map(item[attempt_attribute(k)]) for k in Kind if item.get(attempt_attribute(k))}
    return Device(
        mac=item["mac"],
        product=item.get("product"),
        channel=item.get("channel"),
        assigned=bool(item.get("assigned", False)),
        blocked=bool(item.get("blocked", False)),
        pins={Kind(k): v for k, v in (item.get("pins") or {}).items()},
        chip=item.get("chip"),
        delivery=Delivery(item["delivery"]) if item.get("delivery") else None,
        secret_hash=item.get("secret_hash"),
        reported=reported_from_map(item.get("reported") or {}),
        attempts=attempts,
        fs_version=item.get("fs_version"),
        running_version=item.get("running_version"),
        running_md5=item.get("running_md5"),
        failed=frozenset(item.get("failed") or ()),
        last_outcome=item.get("last_outcome"),
        last_reason=item.get("last_reason"),
        first_seen=item.get("first_seen"),
        last_seen=item.get("last_seen"),
        seen_product=item.get("seen_product"),
        checks=_int(item.get("checks")),
        installs=_int(item.get("installs")),
        enrolled_at=item.get("enrolled_at"),
        rhythm=rhythm_from_map(item.get("rhythm")),
        watch=watch_from_item(item),
        answers={k.value: item[answer_attribute(k)] for k in Kind if item.get(answer_attribute(k))},
        expires_at=_int(item["expires_at"]) if item.get("expires_at") is not None else None,
    )


def audit_sk(at: str, entry_id: str) -> str:
    """`2026-12-01T08:00:00.000Z#3f9a…`: text order is time order (audit.stamp's fixed format)."""
    return f"{at}#{entry_id}"


def audit_to_item(e: AuditEntry) -> Item:
    # before/after as JSON text: they hold floats (thresholds), which DynamoDB numbers would make Decimals.
    return {
        "product": e.product,
        "sk": audit_sk(e.at, e.id),
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "target": dict(e.target),
        "before": json.dumps(e.before, sort_keys=True, default=str),
        "after": json.dumps(e.after, sort_keys=True, default=str),
        "expires_at": e.expires_at,
    }


def audit_from_item(item: Item) -> AuditEntry:
    return AuditEntry(
        product=item["product"],
        at=item["at"],
        id=item["sk"].rpartition("#")[2],
        actor=item.get("actor", ""),
        action=item.get("action", ""),
        target={str(k): str(v) for k, v in (item.get("target") or {}).items()},
        before=json.loads(item.get("before") or "{}"),
        after=json.loads(item.get("after") or "{}"),
        expires_at=_int(item.get("expires_at")),
    )
