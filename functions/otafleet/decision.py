"""The update decision: a pure function of (request, device, catalog, policy).

It follows product.md §2 step by step and returns both the answer for the device and what the check
should record on the device. Nothing here talks to AWS, so every rule is testable in isolation and
`otafleet explain` can run the very same code as a dry run. The rules it applies live in their own
modules: attempts.py (evidence and attempt transitions), rollout.py (targets and halting),
credentials.py, versions.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from otafleet import attempts, credentials, rhythm, rollout, versions, windows
from otafleet.attempts import Verdict
from otafleet.models import (
    Attempt,
    AttemptState,
    Build,
    Catalog,
    CheckRecord,
    CounterEvent,
    Delivery,
    Device,
    Kind,
    Product,
    Quota,
    Release,
    Reported,
    Rhythm,
    SilenceWatch,
    Track,
    dialect_of,
)
from otafleet.protocol import CheckRequest
from otafleet.rhythm import SilencePolicy, epoch

if TYPE_CHECKING:
    from otafleet.config import Settings


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
    """The deployment's rules for a decision, from its settings (Policy.from_settings)."""

    failure_offer_limit: int = 3
    max_inline_bytes: int = 4_400_000
    # Scheme of the presigned URLs this deployment produces; a redirect must keep the request's scheme.
    redirect_scheme: str = "https"
    # An enrolled device's verdicts count for rollouts once it is this old and has installed a release.
    enroll_trust_seconds: int = 24 * 3600
    # Records of devices nobody assigned (and of enrolled devices not yet trusted) expire this long
    # after their last check.
    unassigned_ttl_seconds: int = 30 * 24 * 3600
    # Open enrollment: at most this many new devices per product and hour.
    enroll_per_hour: int = 60
    # How long a device handed an image may stay quiet before the controller calls it silent.
    silence: SilencePolicy = field(default_factory=SilencePolicy)

    @classmethod
    def from_settings(cls, settings: Settings, *, redirect_scheme: str = "https") -> Policy:
        return cls(
            failure_offer_limit=settings.failure_offer_limit,
            max_inline_bytes=settings.max_inline_bytes,
            redirect_scheme=redirect_scheme,
            enroll_trust_seconds=int(settings.enroll_trust_hours * 3600),
            unassigned_ttl_seconds=int(settings.unassigned_ttl_days * 86400),
            enroll_per_hour=settings.enroll_per_hour,
            silence=SilencePolicy(
                factor=settings.silence_factor,
                floor_seconds=int(settings.silence_floor_minutes * 60),
                unlearned_seconds=int(settings.silence_unlearned_hours * 3600),
                heartbeat_seconds=int(settings.check_heartbeat_minutes * 60),
            ),
        )


@dataclass(frozen=True)
class Step:
    """One step of a decision's trace: what was looked at and what it gave (what `otafleet explain` prints)."""

    name: str
    result: str


@dataclass(frozen=True)
class Decision:
    """What to answer a check, why, and what the check's record must say (CheckRecord)."""

    outcome: Outcome
    reason: str
    detail: str
    record: CheckRecord
    release: Release | None = None
    delivery: Delivery | None = None
    product: str | None = None
    channel: str | None = None
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def status(self) -> int:
        return answer_status(self.outcome, self.delivery)

    @property
    def verdict(self) -> AttemptState | None:
        """The state an attempt reached by this check's evidence (None: no attempt ended)."""
        after, before = self.record.attempt, self.record.replaces
        if after is None or after.state is AttemptState.OFFERED or (before and before.state is after.state):
            return None
        return after.state


def answer_status(outcome: Outcome, delivery: Delivery | None) -> int:
    """The HTTP status of an answer: an offer is a 302 when redirected, a 200 when inline."""
    if outcome is Outcome.OFFER and delivery is Delivery.REDIRECT:
        return 302
    return STATUS[outcome]


def failed_key(kind: Kind, version: str) -> str:
    return f"{kind.value}:{version}"


class _Trace:
    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, name: str, result: str) -> None:
        self.steps.append(Step(name, result))


def reported_after(req: CheckRequest, device: Device | None, now: str) -> Reported:
    """What the device record says it runs after this check. A filesystem check's version header is the
    filesystem's, so it never replaces the application version, and the reverse."""
    earlier = device.reported if device else Reported()
    app_version, fs_version = req.version, earlier.fs_version
    if req.kind is Kind.FS:
        app_version, fs_version = earlier.version, req.version
    elif req.is_probe and req.version is None:
        app_version = earlier.version  # the probe may carry no version: it says nothing about the sketch
    return Reported(
        version=app_version,
        sketch_md5=req.sketch_md5,
        sketch_sha256=req.sketch_sha256,
        free_space=req.free_space,
        sketch_size=req.sketch_size,
        chip_size=req.chip_size,
        sdk_version=req.sdk_version,
        mode=req.mode,
        source_ip=req.source_ip,
        at=now,
        fs_version=fs_version,
    )


def trusted(device: Device, authenticated: bool, *, now: str, policy: Policy) -> bool:
    """Whether this device's verdicts may move rollout counters (threat model: docs/operations.md)."""
    if authenticated or device.enrolled_at is None:
        return True  # it proved its secret, or an operator assigned it
    old_enough = epoch(now) - epoch(device.enrolled_at) >= policy.enroll_trust_seconds
    return old_enough and device.installs > 0


def decide(
    req: CheckRequest,
    device: Device | None,
    catalog: Catalog | None,
    *,
    now: str,
    policy: Policy = Policy(),
    full: frozenset[str] = frozenset(),
) -> Decision:
    """`full`: the quotas (Quota.name) a write of this check found at their limit: "enroll" (this hour's
    enrollments into the product), "pace" (this minute's offers of the rollout)."""
    trace = _Trace()
    trace.add("dialect", f"{req.dialect.value} client, mode {req.mode}")
    trace.add("identity", f"device {req.mac}")
    reported = reported_after(req, device, now)
    dev = device if device is not None and device.assigned else None
    expires: int | None = None
    quotas: list[Quota] = []  # raised by every write of this check (an enrollment's)
    # Set once the check counts (an assigned device, past authentication): its rhythm after this check.
    alive: Rhythm | None = None

    def finish(
        outcome: Outcome,
        reason: str,
        detail: str,
        *,
        release: Release | None = None,
        delivery: Delivery | None = None,
        **record: Any,
    ) -> Decision:
        trace.add("answer", f"{answer_status(outcome, delivery)} {reason}: {detail}")
        return Decision(
            outcome=outcome,
            reason=reason,
            detail=detail,
            record=CheckRecord(
                reported=reported,
                outcome=outcome.value,
                reason=reason,
                at=now,
                expires_at=expires,
                quotas=(*quotas, *record.pop("quotas", ())),
                rhythm=alive,
                kind=req.kind,
                **record,
            ),
            release=release,
            delivery=delivery,
            product=dev.product if dev else None,
            channel=dev.channel if dev else None,
            steps=tuple(trace.steps),
        )

    # 4. Device lookup (authentication needs the device's secret, so it follows the lookup).
    enroll: tuple[str, str] | None = None
    if dev is None:
        expires = epoch(now) + policy.unassigned_ttl_seconds
        product = catalog.product if catalog else None
        if req.product and product and product.name == req.product and product.enroll and "enroll" not in full:
            enroll = (product.name, product.default_channel)
            quotas.append(Quota("enroll", product.name, now[:13], policy.enroll_per_hour, epoch(now) + 86400))
            dev = replace(
                device or Device(mac=req.mac),
                product=product.name,
                channel=product.default_channel,
                assigned=True,
                enrolled_at=now,
            )
            trace.add("device", f"unknown; enrolled into {product.name}/{product.default_channel}")
        else:
            why = (
                f"enrollment into {req.product!r} is rate-limited; it is tried again at the next check"
                if req.product and product and product.enroll
                else f"product {req.product!r} does not enroll new devices"
                if req.product and product
                else f"unknown product {req.product!r}"
                if req.product
                else "device is not assigned to a product"
            )
            trace.add("device", f"unknown ({why}); remembered as seen, unassigned")
            reason = "enroll-rate-limited" if req.product and product and product.enroll else "unknown-device"
            return finish(Outcome.NOT_FOUND, reason, f"no firmware assigned to {req.mac}", seen_product=req.product)
    else:
        trace.add("device", f"assigned to {dev.product}/{dev.channel}")
    if dev.enrolled_at is not None and not trusted(dev, False, now=now, policy=policy):
        # Self-enrolled and without a history yet: the record expires unless the device keeps checking in.
        expires = epoch(now) + policy.unassigned_ttl_seconds

    if dev.blocked:
        return finish(Outcome.FORBIDDEN, "blocked", f"device {req.mac} is blocked", enroll=enroll)

    if catalog is None or catalog.product.name != dev.product:
        return finish(Outcome.NOT_FOUND, "unknown-product", f"product {dev.product!r} does not exist", enroll=enroll)
    product = catalog.product

    # 3. Authentication.
    authenticated = False
    if product.auth_required and req.dry_run:
        trace.add("auth", "required; not checked in a dry run")
    elif product.auth_required:
        if not credentials.verify(req.authorization, req.mac, dev.secret_hash):
            trace.add("auth", "required; credentials missing or wrong")
            return finish(Outcome.UNAUTHORIZED, "unauthorized", "valid device credentials required", enroll=enroll)
        authenticated = True
        trace.add("auth", "required; valid")
    is_trusted = trusted(dev, authenticated or (req.dry_run and product.auth_required), now=now, policy=policy)
    if authenticated:
        expires = None  # it holds a secret an operator issued
    # From here on the check counts: it teaches the device's rhythm and shows it alive (rhythm.py).
    alive = rhythm.observe_check(dev.rhythm, now)

    # 5. Target.
    kind = req.kind
    now_build = attempts.observed(req)
    pinned = dev.pins.get(kind)
    track: Track | None = None
    if pinned:
        target_version: str | None = pinned
        trace.add("target", f"pinned to {kind.value} {pinned}")
    else:
        channel = catalog.channels.get(dev.channel or "")
        track = channel.tracks.get(kind) if channel else None
        target_version = _track_target(req, dev, track, catalog, now_build, trace)
    if target_version is None:
        return finish(Outcome.NO_UPDATE, "no-target", f"nothing to offer for {kind.value}", enroll=enroll)

    release = catalog.release(kind, target_version)
    if release is None or not release.offerable:
        state = "missing" if release is None else release.state.value
        detail = f"{kind.value} {target_version} is {state}"
        return finish(Outcome.NO_UPDATE, "target-unavailable", detail, enroll=enroll)

    # 9. Version probe: "what is available for me?" — the target, whether or not the device runs it.
    if req.is_probe:
        return finish(Outcome.PROBE, "probe", f"{kind.value} {release.version} is available", release=release)

    # 6. Already there? Where open attempts meet their evidence.
    attempt = dev.attempts.get(kind)
    current = attempt if attempt is not None and attempt.version == release.version else None

    def ended(state: AttemptState, why: str) -> dict[str, Any]:
        """The record of `current` ending in `state`: attempt, counters, what the device was seen to run."""
        assert current is not None
        after = attempts.end(current, state, now_build, why, at=now)
        record: dict[str, Any] = {"attempt": after, "replaces": current, "enroll": enroll}
        record["counter"] = counter_event(catalog, dev, current, after)
        if state is AttemptState.FAILED:
            record["failed"] = failed_key(kind, release.version)
        if state is AttemptState.INSTALLED:
            record.update(_installed(release, now_build))
        return record

    here = attempts.identifies(release, now_build, dev)
    limit = policy.failure_offer_limit
    if here is None and current is not None and attempts.awaiting_evidence(current):
        verdict, why = attempts.judge(release, now_build, current.before)
        trace.add("evidence", f"{verdict.value}: {why} (offered {current.offers}x)")
        ending = attempts.verdict_state(verdict, current.offers, limit)
        if verdict is Verdict.TARGET:
            here = why
        elif ending is AttemptState.FAILED:
            detail = (
                f"offered {kind.value} {release.version} {current.offers} times; the device still runs its old build"
            )
            return finish(Outcome.NO_UPDATE, "failed", f"{detail} ({why})", release=release, **ended(ending, why))
        elif ending is AttemptState.UNKNOWN:
            detail = f"whether {kind.value} {release.version} installed cannot be told ({why}); not offered again"
            return finish(Outcome.NO_UPDATE, "unknown", detail, release=release, **ended(ending, why))
    if here is not None:
        trace.add("already there", here)
        detail = f"device runs {kind.value} {release.version} ({here})"
        # Re-judged by evidence: an open attempt, or one that ended unknown or failed, now shows the target.
        closes = current is not None and current.state is not AttemptState.INSTALLED
        record: dict[str, Any] = ended(AttemptState.INSTALLED, here) if closes else {"enroll": enroll}
        if closes and failed_key(kind, release.version) in dev.failed:
            record["unfailed"] = failed_key(kind, release.version)
        return finish(Outcome.NO_UPDATE, "up-to-date", detail, release=release, **record)
    trace.add("already there", "no")

    failed_here = failed_key(kind, release.version) in dev.failed
    if failed_here or (current is not None and attempts.blocks_reoffer(current, now_build)):
        reason, what = ("failed-before", "failed") if failed_here else ("unknown-before", "ended without evidence")
        detail = f"{kind.value} {release.version} {what} on this device; `otafleet device retry` offers it again"
        return finish(Outcome.NO_UPDATE, reason, detail, enroll=enroll)
    if current is not None and not attempts.awaiting_evidence(current) and current.offers >= limit:
        # Judged on this release before and no longer showing it (reverted after installing it, or flashed
        # with another build), with its offers used up: the attempt ends here instead of looping.
        verdict, why = attempts.judge(release, now_build, current.before)
        ending = AttemptState.FAILED if verdict is Verdict.OLD else AttemptState.UNKNOWN
        why = f"no longer runs it after {current.offers} offers: {why}"
        trace.add("evidence", f"{verdict.value}: {why}")
        reason = "failed" if ending is AttemptState.FAILED else "unknown"
        detail = f"{kind.value} {release.version} {ending.value} on this device ({why})"
        return finish(Outcome.NO_UPDATE, reason, detail, release=release, **ended(ending, why))

    # 7. Safety.
    downgrade_ok = product.allow_downgrade or bool(pinned) or bool(track and track.rollback)
    unsafe = _unsafe(req, dev, release, downgrade_ok)
    if unsafe is not None:
        reason, detail = unsafe
        trace.add("safety", detail)
        return finish(Outcome.NO_UPDATE, reason, detail, enroll=enroll)
    trace.add("safety", "ok")

    # Offer safety for signed builds: never hand over what the device's own verifier refuses.
    refused = _refused_signature(catalog, dev, req, release)
    if refused is not None:
        reason, detail = refused
        trace.add("signature", detail)
        return finish(Outcome.NO_UPDATE, reason, detail, enroll=enroll)
    if release.kind is Kind.APP and release.signed:
        trace.add("signature", f"signed ({release.signature_scheme}) by a key the device accepts, or first signed")

    # Maintenance window (a channel's, else its product's): images are handed over only inside it.
    home = catalog.channels.get(dev.channel or "")
    window = (home.window if home else None) or product.window
    if window is not None and not windows.is_open(window, now):
        detail = f"images are handed over {windows.describe(window)}; served at a check inside it"
        trace.add("window", detail)
        return finish(Outcome.NO_UPDATE, "outside-window", detail, enroll=enroll)

    # 8. Delivery.
    delivery, why = _delivery(req, dev, product, release, policy)
    trace.add("delivery", why)
    if delivery is None:
        return finish(Outcome.NO_UPDATE, "too-large-for-inline", why, enroll=enroll)

    # Pacing: the rollout hands over at most its rate of images a minute; the rest wait for a later check.
    paced: tuple[Quota, ...] = ()
    if track is not None and track.max_offers_per_minute:
        if "pace" in full:
            detail = f"the rollout hands over {track.max_offers_per_minute} images a minute; served at a later check"
            trace.add("pacing", detail)
            return finish(Outcome.NO_UPDATE, "paced", detail, enroll=enroll)
        period = f"{dev.channel}#{kind.value}#{now[:16]}"
        paced = (Quota("pace", product.name, period, track.max_offers_per_minute, epoch(now) + 3600),)

    counter = None
    if current is not None and attempts.awaiting_evidence(current):
        next_attempt = attempts.reoffer(current, at=now)
        if current.state is AttemptState.SILENT:  # the device is back: it no longer counts as silent
            counter = counter_event(catalog, dev, current, next_attempt)
    elif current is not None:
        next_attempt = attempts.reopen(current, now_build, at=now)
    else:
        next_attempt = attempts.start(
            release, now_build, at=now, channel=None if pinned else dev.channel, trusted=is_trusted
        )
        # The first attempt after none (a new device, or `device retry`) starts its revisions at the clock,
        # so a check that read an attempt before a retry can never match the one that follows it.
        next_attempt = replace(next_attempt, seq=attempt.seq + 1 if attempt is not None else epoch(now))
    assert dev.product is not None
    # Watched until the device checks in again: silent after its quiet limit (controller.py).
    watch = SilenceWatch(dev.product, kind, epoch(now) + rhythm.quiet_limit(alive, policy.silence))
    return finish(
        Outcome.OFFER,
        "offer",
        f"offering {kind.value} {release.version} ({delivery.value}, offer {next_attempt.offers})",
        release=release,
        delivery=delivery,
        enroll=enroll,
        attempt=next_attempt,
        replaces=attempt,
        quotas=paced,
        counter=counter,
        watch=watch,
    )


def _track_target(
    req: CheckRequest, dev: Device, track: Track | None, catalog: Catalog, now: Build, trace: _Trace
) -> str | None:
    kind = req.kind
    if track is None:
        trace.add("target", f"channel {dev.channel!r} has no {kind.value} release")
        return None

    def runs_new() -> bool:
        new = catalog.release(kind, track.version)
        return new is not None and attempts.identifies(new, now, dev) is not None

    version, why = rollout.target(track, req.mac, catalog.product.name, kind, runs_new)
    trace.add("target", why)
    return version


def _installed(release: Release, now: Build) -> dict[str, object]:
    """What an install teaches about the device: the MD5 it reports for that app build, its chip."""
    if release.kind is Kind.FS:
        return {"fs_version": release.version, "installed": True}
    return {"running": (release.version, now.md5), "chip": release.chip, "installed": True}


def counter_event(catalog: Catalog, dev: Device, before: Attempt, after: Attempt) -> CounterEvent | None:
    """Verdicts count for a rollout when the device is trusted and its channel still rolls out that release
    (the check's verdicts here, the controller's silences in controller.py)."""
    if not after.trusted or after.channel is None or dev.product is None:
        return None
    channel = catalog.channels.get(after.channel)
    track = channel.tracks.get(after.kind) if channel else None
    if track is None or track.version != after.version:
        return None
    deltas = attempts.counter_deltas(before.counted_as, after.state)
    return CounterEvent(dev.product, after.channel, after.kind, after.version, deltas) if deltas else None


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
    running = attempts.running_version(dev, req.version, req.sketch_md5) if release.kind is Kind.APP else None
    if running and not downgrade_ok and versions.is_downgrade(running, release.version):
        source = "reported" if req.version else "learned"
        return "downgrade", f"{release.version} is older than the running {running} ({source})"
    return None


def _refused_signature(catalog: Catalog, dev: Device, req: CheckRequest, release: Release) -> tuple[str, str] | None:
    """A device that runs a signed build verifies every update with the keys that build carries (ESP8266:
    after a signed update it accepts signed ones only; arduino-esp32 and Secure Boot v2 alike), so it is
    offered only releases signed by one of them. A device on an unsigned or unknown build may receive the
    first signed release: that is how a product moves to signing (docs/operations.md)."""
    if release.kind is not Kind.APP:
        return None
    running = _running_release(catalog, dev, req)
    if running is None or not running.signed:
        return None
    if not release.signed:
        return (
            "unsigned-offer",
            f"the device runs {running.version}, a signed build that refuses unsigned images; "
            f"{release.version} is unsigned",
        )
    carried = running.trusted_keys
    if carried.isdisjoint(release.signed_by):
        keys = ", ".join(k[:16] for k in sorted(carried))
        return (
            "untrusted-key",
            f"{release.version} is signed only by keys the running {running.version} does not carry ({keys}); "
            "ship a bridge release signed by a key it carries first",
        )
    return None


def _running_release(catalog: Catalog, dev: Device, req: CheckRequest) -> Release | None:
    """The catalog's release the device runs: the one it reports (or was seen to install), else the one it
    was last seen to install."""
    for version in (attempts.running_version(dev, req.version, req.sketch_md5), dev.running_version):
        found = catalog.release(Kind.APP, version) if version else None
        if found is not None:
            return found
    return None


def _delivery(
    req: CheckRequest, dev: Device, product: Product, release: Release, policy: Policy
) -> tuple[Delivery | None, str]:
    mode = req.delivery or dev.delivery or product.delivery
    source = "request" if req.delivery else "device" if dev.delivery else "product"
    # A dry run has no Authorization header, but the device it stands for sends one when its product asks.
    authenticates = req.authorization is not None or (req.dry_run and product.auth_required)
    return choose_delivery(mode, source, release, authenticates=authenticates, scheme=req.scheme, policy=policy)


def choose_delivery(
    mode: Delivery, source: str, release: Release, *, authenticates: bool, scheme: str, policy: Policy
) -> tuple[Delivery | None, str]:
    """How `release` reaches a device whose setting (from `source`) is `mode`, and why: the one delivery
    rule of update checks and the simple updater. None: it cannot be delivered (too large for inline)."""
    why = f"{mode.value} ({source} setting)"
    if mode is Delivery.REDIRECT and authenticates:
        mode, why = (
            Delivery.INLINE,
            "inline: the device authenticates, and S3 refuses Authorization on a redirect",
        )
    elif mode is Delivery.REDIRECT and scheme != policy.redirect_scheme:
        mode, why = Delivery.INLINE, f"inline: a redirect must keep the request's scheme ({scheme})"
    if mode is Delivery.INLINE and release.size > policy.max_inline_bytes:
        return None, (
            f"image is {release.size} bytes, more than the {policy.max_inline_bytes} that fit inline in a "
            "Lambda response; only redirect delivery can serve it"
        )
    return mode, why
