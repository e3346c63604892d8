"""The update decision: a pure function of (request, device, catalog, policy).

It follows product.md §2 step by step and returns both the answer for the device and what the check
should record on the device. Nothing here talks to AWS, so every rule is testable in isolation and
`otafleet explain` can run the very same code as a dry run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from otafleet import credentials, rollout, versions
from otafleet.models import (
    Catalog,
    Delivery,
    Device,
    Kind,
    Offer,
    Release,
    Reported,
    Track,
    TrackState,
    dialect_of,
)
from otafleet.protocol import CheckRequest


class Outcome(StrEnum):
    OFFER = "offer"
    NO_UPDATE = "no-update"
    PROBE = "probe"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    UNAUTHORIZED = "unauthorized"


STATUS = {
    Outcome.OFFER: 200,
    Outcome.NO_UPDATE: 304,
    Outcome.PROBE: 200,
    Outcome.FORBIDDEN: 403,
    Outcome.NOT_FOUND: 404,
    Outcome.UNAUTHORIZED: 401,
}


@dataclass(frozen=True)
class Policy:
    failure_offer_limit: int = 3
    max_inline_bytes: int = 4_400_000
    # Scheme of the presigned URLs this deployment produces; a redirect must keep the request's scheme.
    redirect_scheme: str = "https"


@dataclass(frozen=True)
class Step:
    name: str
    result: str


@dataclass(frozen=True)
class Record:
    """What the check writes on the device record. Operator-owned fields are never overwritten,
    except that enrollment sets product and channel on a device that has none."""

    reported: Reported
    outcome: str
    reason: str
    at: str
    enroll: tuple[str, str] | None = None  # (product, channel)
    seen_product: str | None = None
    offer: Offer | None = None
    offer_is_new: bool = False
    clear_offer: bool = False
    failed: str | None = None  # "<kind>:<version>" to add to the device's failed set
    running: tuple[str, str | None] | None = None  # (version, md5) learned after a success
    fs_version: str | None = None
    chip: str | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    detail: str
    record: Record
    release: Release | None = None
    delivery: Delivery | None = None
    product: str | None = None
    channel: str | None = None
    # Rollout bookkeeping: "success" or "failure" for (kind, version) of the channel's track.
    event: str | None = None
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def status(self) -> int:
        return STATUS[self.outcome]


def failed_key(kind: Kind, version: str) -> str:
    return f"{kind.value}:{version}"


class _Trace:
    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, name: str, result: str) -> None:
        self.steps.append(Step(name, result))


def decide(
    req: CheckRequest,
    device: Device | None,
    catalog: Catalog | None,
    *,
    now: str,
    policy: Policy = Policy(),
) -> Decision:
    trace = _Trace()
    trace.add("dialect", f"{req.dialect.value} client, mode {req.mode}")
    trace.add("identity", f"device {req.mac}")
    reported = Reported(
        version=req.version,
        sketch_md5=req.sketch_md5,
        sketch_sha256=req.sketch_sha256,
        free_space=req.free_space,
        sketch_size=req.sketch_size,
        chip_size=req.chip_size,
        sdk_version=req.sdk_version,
        mode=req.mode,
        source_ip=req.source_ip,
        at=now,
    )

    def finish(
        outcome: Outcome,
        reason: str,
        detail: str,
        *,
        release: Release | None = None,
        delivery: Delivery | None = None,
        event: str | None = None,
        **record: object,
    ) -> Decision:
        trace.add("answer", f"{STATUS[outcome]} {reason}: {detail}")
        return Decision(
            outcome=outcome,
            reason=reason,
            detail=detail,
            record=Record(reported=reported, outcome=outcome.value, reason=reason, at=now, **record),  # type: ignore[arg-type]
            release=release,
            delivery=delivery,
            product=dev.product if dev else None,
            channel=dev.channel if dev else None,
            event=event,
            steps=tuple(trace.steps),
        )

    dev = device if device is not None and device.assigned else None

    # 4. Device lookup (authentication needs the device's secret, so it follows the lookup).
    enroll: tuple[str, str] | None = None
    if dev is None:
        product = catalog.product if catalog else None
        if req.product and product and product.name == req.product and product.enroll:
            enroll = (product.name, product.default_channel)
            dev = replace(device or Device(mac=req.mac), product=product.name, channel=product.default_channel)
            dev = replace(dev, assigned=True)
            trace.add("device", f"unknown; enrolled into {product.name}/{product.default_channel}")
        else:
            why = (
                f"product {req.product!r} does not enroll new devices"
                if req.product and product
                else f"unknown product {req.product!r}"
                if req.product
                else "device is not assigned to a product"
            )
            trace.add("device", f"unknown ({why}); remembered as seen, unassigned")
            return finish(
                Outcome.NOT_FOUND,
                "unknown-device",
                f"no firmware assigned to {req.mac}",
                seen_product=req.product,
            )
    else:
        trace.add("device", f"assigned to {dev.product}/{dev.channel}")

    if dev.blocked:
        return finish(Outcome.FORBIDDEN, "blocked", f"device {req.mac} is blocked", enroll=enroll)

    if catalog is None or catalog.product.name != dev.product:
        return finish(Outcome.NOT_FOUND, "unknown-product", f"product {dev.product!r} does not exist", enroll=enroll)
    product = catalog.product

    # 3. Authentication.
    if product.auth_required and req.dry_run:
        trace.add("auth", "required; not checked in a dry run")
    elif product.auth_required:
        if not credentials.verify(req.authorization, req.mac, dev.secret_hash):
            trace.add("auth", "required; credentials missing or wrong")
            return finish(Outcome.UNAUTHORIZED, "unauthorized", "valid device credentials required", enroll=enroll)
        trace.add("auth", "required; valid")

    # 5. Target.
    kind = req.kind
    track: Track | None = None
    pinned = dev.pins.get(kind)
    channel = catalog.channels.get(dev.channel or "")
    if pinned:
        target_version: str | None = pinned
        trace.add("target", f"pinned to {kind.value} {pinned}")
    else:
        track = channel.tracks.get(kind) if channel else None
        target_version = _track_target(req, dev, track, trace, kind, catalog)
    if target_version is None:
        return finish(Outcome.NO_UPDATE, "no-target", f"nothing to offer for {kind.value}", enroll=enroll)

    release = catalog.release(kind, target_version)
    if release is None or not release.offerable:
        state = "missing" if release is None else release.state.value
        return finish(
            Outcome.NO_UPDATE,
            "target-unavailable",
            f"{kind.value} {target_version} is {state}",
            enroll=enroll,
        )

    # 6. Already there? Also where offers turn into inferred successes.
    offer = dev.offer if dev.offer and dev.offer.kind is kind else None
    offered_this = offer is not None and offer.version == release.version
    here = _already_there(req, dev, release)
    if here is None and offered_this and offer is not None and _moved_on(req, offer):
        # Came back with a different build after being offered this release: it updated. ESP8266
        # devices may report an MD5 other than the file's, so learn the one they report now.
        here = "new build reported after the offer"
    if here is not None:
        trace.add("already there", here)
        success = offered_this
        return finish(
            Outcome.NO_UPDATE,
            "up-to-date",
            f"device runs {kind.value} {release.version} ({here})",
            release=release,
            event="success" if success else None,
            enroll=enroll,
            clear_offer=success,
            running=(release.version, req.sketch_md5) if kind is Kind.APP and success else None,
            fs_version=release.version if kind is Kind.FS and success else None,
            chip=release.chip if success and kind is Kind.APP else None,
        )
    trace.add("already there", "no")

    # Failure inference: offered this release `limit` times and still on the build it had then.
    key = failed_key(kind, release.version)
    if key in dev.failed:
        return finish(
            Outcome.NO_UPDATE,
            "failed-before",
            f"{kind.value} {release.version} failed on this device before; `otafleet device retry` re-offers it",
            enroll=enroll,
        )
    if offer is not None and offered_this and offer.count >= policy.failure_offer_limit:
        return finish(
            Outcome.NO_UPDATE,
            "failed",
            f"offered {kind.value} {release.version} {offer.count} times and the device still runs its old build",
            release=release,
            event="failure",
            enroll=enroll,
            failed=key,
            clear_offer=True,
        )

    # 7. Safety.
    unsafe = _unsafe(req, dev, release, product.allow_downgrade or bool(pinned) or bool(track and track.rollback))
    if unsafe is not None:
        reason, detail = unsafe
        trace.add("safety", detail)
        return finish(Outcome.NO_UPDATE, reason, detail, enroll=enroll)
    trace.add("safety", "ok")

    # 9. Version probe: say what would be offered, record no offer.
    if req.is_probe:
        return finish(Outcome.PROBE, "probe", f"would offer {kind.value} {release.version}", release=release)

    # 8. Delivery.
    delivery, why = _delivery(req, dev, product.delivery, release, policy)
    trace.add("delivery", why)
    if delivery is None:
        return finish(Outcome.NO_UPDATE, "too-large-for-inline", why, enroll=enroll)

    new_offer = not offered_this or offer is None
    return finish(
        Outcome.OFFER,
        "offer",
        f"offering {kind.value} {release.version} ({delivery.value})",
        release=release,
        delivery=delivery,
        enroll=enroll,
        offer=Offer(
            kind=kind,
            version=release.version,
            count=1 if new_offer or offer is None else offer.count + 1,
            at=now,
            from_md5=req.sketch_md5 if new_offer or offer is None else offer.from_md5,
            from_version=req.version if new_offer or offer is None else offer.from_version,
        ),
        offer_is_new=new_offer,
    )


def _track_target(
    req: CheckRequest, dev: Device, track: Track | None, trace: _Trace, kind: Kind, catalog: Catalog
) -> str | None:
    product = catalog.product.name
    if track is None:
        trace.add("target", f"channel {dev.channel!r} has no {kind.value} release")
        return None
    if track.percent >= 100 and track.state is TrackState.ACTIVE:
        trace.add("target", f"channel {dev.channel} → {kind.value} {track.version}")
        return track.version
    b = rollout.bucket(req.mac, product, kind, track.version)
    if track.state is not TrackState.ACTIVE:
        new = catalog.release(kind, track.version)
        if new is not None and _already_there(req, dev, new) is not None:
            trace.add("target", f"rollout of {track.version} is {track.state.value}; device already runs it")
            return track.version
        trace.add("target", f"rollout of {track.version} is {track.state.value}; previous {track.previous}")
        return track.previous
    if rollout.in_rollout(req.mac, product, kind, track.version, track.percent):
        trace.add("target", f"bucket {b} < {track.percent}% → new {track.version}")
        return track.version
    trace.add("target", f"bucket {b} ≥ {track.percent}% → previous {track.previous}")
    return track.previous


def _already_there(req: CheckRequest, dev: Device, release: Release) -> str | None:
    if release.kind is Kind.FS:
        return "filesystem image installed after its offer" if dev.fs_version == release.version else None
    if req.sketch_sha256 and release.appended_sha256 and req.sketch_sha256 == release.appended_sha256:
        return "sketch SHA-256 matches the image"
    if req.sketch_md5 and req.sketch_md5 == release.md5:
        return "sketch MD5 matches the image"
    if req.version and req.version == release.version:
        return "reported version matches"
    if req.sketch_md5 and dev.running_version == release.version and dev.running_md5 == req.sketch_md5:
        return "sketch MD5 matches the build this device reported after installing it"
    return None


def _moved_on(req: CheckRequest, offer: Offer) -> bool:
    if offer.kind is Kind.FS:
        return offer.count >= 1  # filesystem images leave no trace in the headers; a later check is all
    if req.sketch_md5 and offer.from_md5:
        return req.sketch_md5 != offer.from_md5
    return False


def _unsafe(req: CheckRequest, dev: Device, release: Release, downgrade_ok: bool) -> tuple[str, str] | None:
    if release.chip and dialect_of(release.chip) is not req.dialect:
        return "wrong-platform", f"image is for {release.chip}, the device is an {req.dialect.value}"
    if release.kind is Kind.APP and release.chip and dev.chip and release.chip != dev.chip:
        return "wrong-chip", f"image is for {release.chip}, the device is an {dev.chip}"
    if release.kind is Kind.APP and req.free_space is not None and release.size > req.free_space:
        return "no-space", f"image is {release.size} bytes, the device has {req.free_space} free"
    if (
        release.kind is Kind.APP
        and release.flash_size_bytes
        and req.chip_size is not None
        and release.flash_size_bytes > req.chip_size
    ):
        return (
            "flash-too-small",
            f"image expects {release.flash_size_bytes} bytes of flash, the chip has {req.chip_size}",
        )
    if release.kind is Kind.APP and not downgrade_ok and versions.is_downgrade(req.version, release.version):
        return "downgrade", f"{release.version} is older than the running {req.version}"
    return None


def _delivery(
    req: CheckRequest, dev: Device, default: Delivery, release: Release, policy: Policy
) -> tuple[Delivery | None, str]:
    mode = req.delivery or dev.delivery or default
    why = f"{mode.value} ({'request' if req.delivery else 'device' if dev.delivery else 'product'} setting)"
    if mode is Delivery.REDIRECT and req.authorization:
        mode, why = (
            Delivery.INLINE,
            "inline: the device authenticates, and S3 refuses Authorization on a redirect",
        )
    elif mode is Delivery.REDIRECT and req.scheme != policy.redirect_scheme:
        mode, why = Delivery.INLINE, f"inline: a redirect must keep the request's scheme ({req.scheme})"
    if mode is Delivery.INLINE and release.size > policy.max_inline_bytes:
        return None, (
            f"image is {release.size} bytes, more than the {policy.max_inline_bytes} that fit inline in a "
            "Lambda response; only redirect delivery can serve it"
        )
    return mode, why
