"""One device's update attempt of one kind (app or fs): the evidence its headers give, and the transitions.

The stock clients report nothing after an update; what a device runs is read from its next checks.
Evidence, strongest first, for the kind being checked:

- the **version string** the sketch passes (`update(…, "1.2.0")`; `updateFS` passes the filesystem's);
- ESP32 **`sketch-sha256`** against the SHA-256 appended to the image;
- **`sketch-md5`** against the MD5s a device can report for the image (ESP8266's updater rewrites the
  flash-mode byte, so there are up to four), or the MD5 this device reported after it installed it;
- **`sketch-size`** (every core sends it): the size the device reports after installing the image is
  computed at upload. It is a difference, not an identity: "was X before the offer, is the image's
  value now" proves the install, "still X, and X is not the image's" proves it did not take.

Filesystem checks carry only the version: their MD5 and size headers describe the sketch.

Transitions of an attempt (each written conditionally on the state it leaves, see CheckRecord):

    (none) ──offer──▶ offered ──evidence of the target──────────────────────────▶ installed
                        │  ├──old build, provably not the target, `limit` offers──▶ failed
                        │  ├──unchanged, can't tell, `limit` offers; another build─▶ unknown
                        │  ├──no evidence at all, after one offer──────────────────▶ unknown
                        │  ├──old build / unchanged, fewer offers──▶ offered (offers + 1)
                        │  └──no check at all for quiet_limit after the offer (controller)──▶ silent
    silent ──the device checks in again: judged as if offered──▶ installed / failed / unknown / offered
    unknown, failed ──evidence of the target──▶ installed
    installed, unknown ──the device no longer shows it (reverted; flashed with another build)──▶ offered
        again, the same attempt: its offers go on counting towards `limit`, and its verdict moves the
        rollout's counters from the one it had (a device counts once per rollout)

`unknown` never counts as a failure and never causes re-offers: the release is offered again only once
the device reports a different build than when the attempt ended, or after `otafleet device retry`
(which reopens the attempt with no offers and its counted verdict kept). A device that runs the target
by any evidence is never offered it.

`silent` is the controller's verdict, not a check's: a device handed an image (a 200, or a redirect to
it) that has not checked in since, for longer than max(k x its usual interval, a floor) (rhythm.py). It
is not an end: the evidence of the device's next check, if it ever comes, judges the attempt as it would
an offered one, and the silent count moves back.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from otafleet.models import Attempt, AttemptState, Build, Device, Kind, Release
from otafleet.protocol import CheckRequest
from otafleet.rhythm import SilencePolicy, epoch, quiet_limit


class Verdict(StrEnum):
    TARGET = "target"  # the device runs the offered image
    OLD = "old"  # it still runs the build it had, and that build is provably not the target
    UNCHANGED = "unchanged"  # it still runs what it had, but whether that is the target cannot be told
    OTHER = "other"  # it runs a third build, neither the old one nor the target
    NONE = "none"  # its headers tell nothing either way


def observed(req: CheckRequest) -> Build:
    """The build this check's headers describe, for the kind being checked."""
    if req.kind is Kind.FS:
        return Build(version=req.version)
    return Build(version=req.version, md5=req.sketch_md5, sha256=req.sketch_sha256, size=req.sketch_size)


def identifies(release: Release, now: Build, device: Device) -> str | None:
    """Why the device runs `release` by an identity its headers carry, or None."""
    if release.kind is Kind.FS:
        if now.version is not None:
            return "reported filesystem version matches" if now.version == release.version else None
        return "filesystem version confirmed earlier" if device.fs_version == release.version else None
    if now.version is not None and now.version == release.version:
        return "reported version matches"
    if now.sha256 and release.appended_sha256 and now.sha256 == release.appended_sha256:
        return "sketch SHA-256 matches the image"
    if now.md5 and (now.md5 == release.md5 or now.md5 in release.flashed_md5s):
        return "sketch MD5 matches the image"
    if device.running_version == release.version:
        if now.md5 and now.md5 == device.running_md5:
            return "sketch MD5 matches the build this device reported after installing it"
        if not now.md5 and now.size is not None and now.size == release.sketch_size:
            return "installed earlier, and the sketch size still matches"
    return None


def _size(release: Release, now: Build, before: Build) -> Verdict:
    target = release.sketch_size
    if release.kind is Kind.FS or target is None or now.size is None or before.size is None:
        return Verdict.NONE
    if before.size == target:
        return Verdict.NONE  # the old build had the target's size: size cannot tell them apart
    if now.size == target:
        return Verdict.TARGET
    return Verdict.OLD if now.size == before.size else Verdict.OTHER


def judge(release: Release, now: Build, before: Build) -> tuple[Verdict, str]:
    """What the device's headers say about an open attempt, once `identifies` found no identity."""
    size = _size(release, now, before)
    if size is Verdict.TARGET:
        # Patch-invariant and exact: a sketch whose version constant was not bumped still shows it.
        return size, f"sketch size changed from {before.size} to the image's {release.sketch_size}"
    if now.version is not None and before.version is not None:
        if now.version == before.version:
            return Verdict.OLD, f"still reports version {now.version}"
        return Verdict.OTHER, f"reports version {now.version}, neither {before.version} nor {release.version}"
    if size is Verdict.OLD:
        return size, f"sketch size is still {now.size}, not the image's {release.sketch_size}"
    if size is Verdict.OTHER:
        return size, f"sketch size changed from {before.size} to {now.size}, not the image's {release.sketch_size}"
    pairs = [
        ("SHA-256", now.sha256, before.sha256, bool(release.appended_sha256)),
        ("MD5", now.md5, before.md5, bool(release.flashed_md5s)),
    ]
    for name, current, earlier, exact in pairs:
        if current and earlier:
            if current == earlier:
                # An ESP device flashed at the factory can report another hash for the very same build,
                # so an unchanged hash alone does not prove that the old build is not the target.
                return Verdict.UNCHANGED, f"sketch {name} unchanged since the offer"
            if exact:
                return Verdict.OTHER, f"sketch {name} changed, but not to the image's"
            # Releases registered without the MD5s a device reports: a new build after the offer is it.
            return Verdict.TARGET, f"new sketch {name} reported after the offer"
    return Verdict.NONE, "the device reports nothing that tells its build apart"


def running_version(device: Device, version: str | None, md5: str | None) -> str | None:
    """The application version a device runs: what it says (`version`), else the release it was seen to
    install, unless the MD5 it reports now says otherwise."""
    if version:
        return version
    if device.running_version and (not md5 or md5 == device.running_md5):
        return device.running_version
    return None


# --- transitions ---------------------------------------------------------------------------------


def start(release: Release, now: Build, *, at: str, channel: str | None, trusted: bool) -> Attempt:
    return Attempt(
        kind=release.kind,
        version=release.version,
        state=AttemptState.OFFERED,
        offers=1,
        started=at,
        last_offer=at,
        before=now,
        channel=channel,
        trusted=trusted,
    )


def awaiting_evidence(attempt: Attempt) -> bool:
    """Whether the device's next check of this kind judges the attempt: it is offered, or it went silent
    and a check now is the device coming back."""
    return attempt.state in (AttemptState.OFFERED, AttemptState.SILENT)


def reoffer(attempt: Attempt, *, at: str) -> Attempt:
    assert awaiting_evidence(attempt)
    # A silent device that came back: its silence no longer counts, and until its next verdict nothing
    # does (the check that offers it again moves the silent count back).
    back = attempt.state is AttemptState.SILENT
    return replace(
        attempt,
        state=AttemptState.OFFERED,
        offers=attempt.offers + 1,
        last_offer=at,
        ended=None,
        why=None,
        counted=None if back else attempt.counted,
        seq=attempt.seq + 1,
    )


def reopen(attempt: Attempt, now: Build, *, at: str) -> Attempt:
    """Offer a release again to a device judged on it before (it reverted to another build after
    installing, or reports a new build after an unknown outcome): the same attempt goes on, its offers
    and its counted verdict carried, so neither a revert loop nor a device re-flashed by hand counts twice
    or is offered without bound."""
    assert not attempt.open
    return replace(
        attempt,
        state=AttemptState.OFFERED,
        offers=attempt.offers + 1,
        last_offer=at,
        before=now,
        ended=None,
        after=None,
        why=None,
        counted=attempt.counted_as,
        seq=attempt.seq + 1,
    )


def retried(attempt: Attempt) -> Attempt:
    """`otafleet device retry`: the attempt is offered again from scratch, its counted verdict kept, so
    the verdict it reaches replaces the one it had in the rollout's counts."""
    return replace(
        attempt,
        state=AttemptState.OFFERED,
        offers=0,
        before=attempt.after or attempt.before,
        ended=None,
        after=None,
        why=None,
        counted=attempt.counted_as,
        seq=attempt.seq + 1,
    )


def end(attempt: Attempt, state: AttemptState, now: Build, why: str, *, at: str) -> Attempt:
    assert state is not AttemptState.OFFERED
    return replace(attempt, state=state, ended=at, after=now, why=why, seq=attempt.seq + 1)


def silence_deadline(attempt: Attempt, device: Device, policy: SilencePolicy) -> int:
    """Epoch seconds after which an offered attempt whose device has not checked in since is silent."""
    return epoch(attempt.last_offer) + quiet_limit(device.rhythm, policy)


def falls_silent(device: Device, kind: Kind, *, now: str, policy: SilencePolicy) -> Attempt | None:
    """The controller's verdict on one device's attempt of `kind`: the silent attempt when the device was
    offered the image and has not checked in since, for longer than its quiet limit; else None. The
    device's silence watch says "not since": the offering check set it, and any later check that counts,
    of either kind, ended it (the device booted something and is alive)."""
    attempt = device.attempts.get(kind)
    watch = device.watch
    if attempt is None or attempt.state is not AttemptState.OFFERED or watch is None or watch.kind is not kind:
        return None
    deadline = silence_deadline(attempt, device, policy)
    if epoch(now) <= deadline:
        return None
    quiet = epoch(now) - epoch(attempt.last_offer)
    why = (
        f"no check for {quiet // 60} min since the offer at {attempt.last_offer} "
        f"(quiet limit {quiet_limit(device.rhythm, policy) // 60} min)"
    )
    return replace(attempt, state=AttemptState.SILENT, ended=now, why=why, seq=attempt.seq + 1)


def verdict_state(verdict: Verdict, offers: int, limit: int) -> AttemptState | None:
    """How an open attempt ends on this evidence after `offers` offers; None: offer it again."""
    if verdict is Verdict.TARGET:
        return AttemptState.INSTALLED
    if offers == 0:
        return None  # retried by an operator: offered first, judged after
    if verdict is Verdict.OTHER or verdict is Verdict.NONE:
        return AttemptState.UNKNOWN
    if offers < limit:
        return None
    return AttemptState.FAILED if verdict is Verdict.OLD else AttemptState.UNKNOWN


def blocks_reoffer(attempt: Attempt, now: Build) -> bool:
    """A closed attempt of the target keeps it from being offered again: a failure until an operator
    retries, an unknown while the device still runs what it ran when the attempt ended."""
    if attempt.state is AttemptState.FAILED:
        return True
    return attempt.state is AttemptState.UNKNOWN and attempt.after == now


_COUNTER = {
    AttemptState.INSTALLED: "ok",
    AttemptState.FAILED: "fail",
    AttemptState.UNKNOWN: "unknown",
    AttemptState.SILENT: "silent",
}


def counter_deltas(before: AttemptState | None, after: AttemptState) -> dict[str, int]:
    """How a transition moves a rollout's counters (models.COUNTERS), from the verdict the attempt stood
    for (`Attempt.counted_as`), so each device counts once per rollout."""
    deltas: dict[str, int] = {}
    if before is not None and before in _COUNTER:
        deltas[_COUNTER[before]] = -1
    if after in _COUNTER:
        deltas[_COUNTER[after]] = deltas.get(_COUNTER[after], 0) + 1
    return {k: v for k, v in deltas.items() if v}
