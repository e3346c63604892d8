"""The records otafleet keeps: products, channels, releases and devices.

Plain frozen dataclasses: the decision reads them, storage converts them to and from DynamoDB items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Dialect(StrEnum):
    ESP8266 = "ESP8266"
    ESP32 = "ESP32"


class Kind(StrEnum):
    APP = "app"
    FS = "fs"


class Delivery(StrEnum):
    REDIRECT = "redirect"
    INLINE = "inline"


class ReleaseState(StrEnum):
    REGISTERED = "registered"
    REJECTED = "rejected"
    REVOKED = "revoked"


class TrackState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    HALTED = "halted"


class AttemptState(StrEnum):
    """Where one device's update attempt of one kind stands (attempts.py holds the transitions)."""

    OFFERED = "offered"  # handed the image; the next checks will tell
    INSTALLED = "installed"  # the device's headers show the target
    FAILED = "failed"  # offered repeatedly, the device came back on its old build, which is not the target
    UNKNOWN = "unknown"  # the device's headers can tell neither; never counted as a failure
    # Handed the image, then no check at all for far longer than its usual interval: the likely sign of a
    # bricked device. Set only by the controller; judged by evidence again if the device comes back.
    SILENT = "silent"


# Platform names a product can have; every one but esp8266 speaks the ESP32 dialect.
PLATFORMS: tuple[str, ...] = (
    "esp8266",
    "esp32",
    "esp32s2",
    "esp32s3",
    "esp32c2",
    "esp32c3",
    "esp32c5",
    "esp32c6",
    "esp32c61",
    "esp32h2",
    "esp32p4",
)


def dialect_of(platform: str) -> Dialect:
    return Dialect.ESP8266 if platform == "esp8266" else Dialect.ESP32


@dataclass(frozen=True)
class Window:
    """When images may be handed to devices (windows.py): weekdays (0 = Monday) and a span of minutes
    since local midnight in time zone `tz`; an end at or before the start crosses midnight."""

    days: tuple[int, ...]
    start: int
    end: int
    tz: str = "UTC"


class KeyState(StrEnum):
    ACTIVE = "active"  # uploads signed by it are accepted
    RETIRED = "retired"  # kept to name the key of older releases; new uploads signed by it are refused


@dataclass(frozen=True)
class ProductKey:
    """A public key a signed product accepts uploads signed by (signatures.py reads and checks them)."""

    name: str
    # SHA-256 of the key's DER SubjectPublicKeyInfo: what releases record and the CLI shows.
    fingerprint: str
    algorithm: str  # "rsa-2048", "rsa-3072", "ecdsa-p256", ...
    pem: str  # the public key, PEM (SubjectPublicKeyInfo)
    state: KeyState = KeyState.ACTIVE
    # The digest ESP-IDF Secure Boot v2 burns into eFuse for this key (espsecure digest-sbv2-public-key),
    # for the keys that scheme can use: how a signature block names its key.
    sbv2_digest: str | None = None
    added_at: str | None = None
    retired_at: str | None = None

    @property
    def active(self) -> bool:
        return self.state is KeyState.ACTIVE


@dataclass(frozen=True)
class Product:
    """A product: the firmware line a fleet of one platform runs, with its delivery, enrollment and signing rules."""

    name: str
    platform: str
    delivery: Delivery = Delivery.REDIRECT
    enroll: bool = False
    default_channel: str = "stable"
    auth_required: bool = False
    allow_downgrade: bool = False
    max_image_bytes: int = 16 * 1024 * 1024
    window: Window | None = None
    # A product with keys is a signed product: its uploads must carry a valid signature by an active key.
    keys: tuple[ProductKey, ...] = ()

    @property
    def signed(self) -> bool:
        return bool(self.keys)

    def key(self, name_or_fingerprint: str) -> ProductKey | None:
        for key in self.keys:
            if name_or_fingerprint in (key.name, key.fingerprint):
                return key
        return None


@dataclass(frozen=True)
class Release:
    """One uploaded image of a product (an application or a filesystem), what validation found in it, and its state."""

    product: str
    kind: Kind
    version: str
    size: int
    md5: str
    sha256: str
    s3_key: str
    s3_version_id: str | None = None
    state: ReleaseState = ReleaseState.REGISTERED
    reason: str | None = None
    chip: str | None = None
    # What an ESP32 reports as sketch-sha256 once running it: the SHA-256 appended to the image, or of
    # the image when none is appended (sketchfacts.py).
    appended_sha256: str | None = None
    # ESP8266 images: flash size in bytes encoded in the header, checked against chip-size.
    flash_size_bytes: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    uploaded_at: str | None = None
    # What a device reports once it runs this app image: `sketch-size` (ESP.getSketchSize()) and the
    # `sketch-md5` values it can have (ESP8266's updater rewrites the flash-mode byte). None/empty for
    # releases registered before these facts were computed, and for filesystem images.
    sketch_size: int | None = None
    flashed_md5s: tuple[str, ...] = ()
    # Signed releases: the scheme of the verified signature(s) and the fingerprints of the product keys
    # that signed it, in the order of the signature blocks. Empty for unsigned releases.
    signature_scheme: str | None = None
    signed_by: tuple[str, ...] = ()
    # The keys a device running this build accepts updates signed by, when they differ from `signed_by`
    # (a bridge release signed by the old key that embeds the new one). Empty: those of `signed_by`.
    trusts: tuple[str, ...] = ()

    @property
    def offerable(self) -> bool:
        return self.state is ReleaseState.REGISTERED

    @property
    def signed(self) -> bool:
        return bool(self.signed_by)

    @property
    def trusted_keys(self) -> frozenset[str]:
        """The keys a device that runs this build verifies updates with (offer safety, decision.py)."""
        return frozenset(self.trusts or self.signed_by)


# A rollout's outcome counters: installed, failed, unknown, silent (Track.successes / failures / unknowns /
# silents).
COUNTERS = ("ok", "fail", "unknown", "silent")


@dataclass(frozen=True)
class Plan:
    """A staged rollout that advances itself (plans.py has the rules): the rollout runs at
    `stages[stage]` percent; once that stage has soaked for `soak_seconds` and its devices meet the
    success bar, the controller moves it to the next stage, and after the last one marks it complete."""

    stages: tuple[int, ...]  # ascending percentages, the last one 100
    soak_seconds: int
    min_success: float  # share of the judged devices that must have installed (0-1)
    stage: int = 0
    stage_started: str = ""  # when the current stage began (or was last resumed)
    # At each advance the rollout's pace (max offers per minute) is multiplied by this (1: constant).
    pace_growth: float = 1.0
    completed: str | None = None  # when the last stage met the bar: nothing automatic is left to do
    # The control group's silence rate when the plan last advanced: the background to judge silence
    # against once the rollout covers the channel and no control group is left.
    control_silence: float = 0.0
    aborted: bool = False  # stopped by an operator for good: halted, and never resumed as a plan

    @property
    def last(self) -> bool:
        return self.stage >= len(self.stages) - 1

    @property
    def percent(self) -> int:
        return self.stages[self.stage]


@dataclass(frozen=True)
class Track:
    """What a channel serves for one kind of image, possibly as a staged rollout."""

    version: str
    previous: str | None = None
    percent: int = 100
    state: TrackState = TrackState.ACTIVE
    successes: int = 0
    failures: int = 0
    max_failure_rate: float = 0.2
    min_devices: int = 10
    # Set by `channel rollback`: devices may move back to this version although it is older.
    rollback: bool = False
    # Attempts that ended without evidence either way: shown, never part of the failure rate.
    unknowns: int = 0
    # Attempts whose device went silent after the offer (rollout.py weighs them against a control group),
    # and how much more of the rollout's judged devices may go silent than of the control group.
    silents: int = 0
    max_silence_excess: float = 0.1
    # Bumped by every write of the track, so that writes based on what was read are conditional on it.
    rev: int = 0
    # Pacing: at most this many images handed over per minute (exactly, under concurrency); None: no limit.
    max_offers_per_minute: int | None = None
    plan: Plan | None = None  # set by `otafleet rollout start`: the controller moves `percent` along it


@dataclass(frozen=True)
class Channel:
    """A named audience of a product's devices, and what it serves of each kind of image."""

    product: str
    name: str
    tracks: dict[Kind, Track] = field(default_factory=dict)
    window: Window | None = None  # overrides the product's


@dataclass(frozen=True)
class Catalog:
    """Everything about one product the decision may need, loaded (and cached) together."""

    product: Product
    channels: dict[str, Channel] = field(default_factory=dict)
    releases: dict[tuple[Kind, str], Release] = field(default_factory=dict)

    def release(self, kind: Kind, version: str) -> Release | None:
        return self.releases.get((kind, version))


@dataclass(frozen=True)
class Reported:
    """What a device said about itself at its last checks. `version` is the application version of the
    last `sketch` check; `fs_version` the filesystem version of the last filesystem check (the stock
    client's `updateFS` sends the filesystem's version in the same header)."""

    version: str | None = None
    sketch_md5: str | None = None
    sketch_sha256: str | None = None
    free_space: int | None = None
    sketch_size: int | None = None
    chip_size: int | None = None
    sdk_version: str | None = None
    mode: str | None = None
    source_ip: str | None = None
    at: str | None = None
    fs_version: str | None = None


@dataclass(frozen=True)
class Build:
    """What a device's headers say about the build it runs, for one kind of image. Filesystem checks
    describe the filesystem by its version only: their MD5 and size headers are the sketch's."""

    version: str | None = None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Attempt:
    """One device's attempt to move one kind of image to `version` (attempts.py: the transitions)."""

    kind: Kind
    version: str
    state: AttemptState
    offers: int
    started: str
    last_offer: str
    before: Build  # what the device ran when first offered: coming back with it means it did not take
    channel: str | None = None  # the rollout it counts for; None when the device is pinned
    trusted: bool = False  # whether its verdict may move rollout counters
    ended: str | None = None
    after: Build | None = None  # what the device ran when the attempt ended
    why: str | None = None  # the evidence that ended it
    # Bumped by every write, so that each transition is a conditional write on the state it leaves.
    seq: int = 1
    # The verdict an earlier attempt of this release on this device already counted for the rollout
    # (the attempt was reopened: the device reverted, or an operator retried it). Its own verdict moves
    # the counters from that one instead of counting the device again.
    counted: AttemptState | None = None

    @property
    def open(self) -> bool:
        return self.state is AttemptState.OFFERED

    @property
    def counted_as(self) -> AttemptState | None:
        """The verdict this attempt stands for in the rollout's counters now."""
        return self.counted if self.open else self.state


@dataclass(frozen=True)
class Rhythm:
    """A device's usual interval between checks, learned from its own check times (rhythm.py). Only checks
    that count (past authentication, of an assigned device) move it, so forged requests can neither
    shorten the interval nor make a quiet device look alive."""

    last: int  # epoch seconds of the last check that counted
    seconds: int = 0  # the estimated interval
    samples: int = 0  # how many intervals it was learned from (capped); it counts once there are enough


@dataclass(frozen=True)
class SilenceWatch:
    """An offer the controller watches for silence: set by the check that offered an image, gone at the
    device's next check that counts (it is alive) or when the controller marks the attempt silent."""

    product: str
    kind: Kind
    due: int  # epoch seconds after which the device is silent unless it checked in


@dataclass(frozen=True)
class Device:
    """A device's record: what operators set (assignment, pins, block, secret) and what its checks taught the
    service."""

    mac: str
    product: str | None = None
    channel: str | None = None
    assigned: bool = False
    blocked: bool = False
    pins: dict[Kind, str] = field(default_factory=dict)
    chip: str | None = None
    delivery: Delivery | None = None
    secret_hash: str | None = None
    reported: Reported = field(default_factory=Reported)
    attempts: dict[Kind, Attempt] = field(default_factory=dict)
    # The filesystem version confirmed by evidence (reported, or after an attempt ended installed).
    fs_version: str | None = None
    # Learned when an app attempt ended installed: the release and the MD5 the device reported running it.
    running_version: str | None = None
    running_md5: str | None = None
    failed: frozenset[str] = frozenset()
    checks: int = 0
    installs: int = 0  # attempts that ended installed: part of an enrolled device's history
    last_outcome: str | None = None
    last_reason: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    # The product an unassigned device asked for by URL (/update/<product>): helps operators assign it.
    seen_product: str | None = None
    # Set when the device enrolled itself (open enrollment); None for devices an operator assigned.
    enrolled_at: str | None = None
    rhythm: Rhythm | None = None  # None until a first check that counts
    watch: SilenceWatch | None = None
    # The answer of the last recorded check of each kind ("app", "fs" → "<outcome>:<reason>"): the stock
    # cycle asks `update` then `updateFS`, so "nothing changed" is judged against the same kind's answer.
    answers: dict[str, str] = field(default_factory=dict)
    # Epoch seconds at which DynamoDB may delete the record (devices nobody assigned); None: kept.
    expires_at: int | None = None


@dataclass(frozen=True)
class CounterEvent:
    """A rollout counter to move with a device's attempt transition, in the same write."""

    product: str
    channel: str
    kind: Kind
    version: str
    deltas: dict[str, int]  # counter (one of COUNTERS) → change


@dataclass(frozen=True)
class Quota:
    """A count per period that a check may raise only while it is under its limit, in the same write
    as the check (an enrollment per product and hour; an offer per rollout and minute)."""

    name: str  # "enroll" or "pace"
    product: str
    period: str  # what it counts within, e.g. "2026-12-01T21" or "stable#app#2026-12-01T21:05"
    limit: int
    expires_at: int  # the period's count is deleted by TTL after this


@dataclass(frozen=True)
class CheckRecord:
    """What one check writes on the device record. Operator-owned fields are never overwritten,
    except that enrollment sets product and channel on a device that has none."""

    reported: Reported
    outcome: str
    reason: str
    at: str
    enroll: tuple[str, str] | None = None  # (product, channel)
    seen_product: str | None = None
    # The checked kind's attempt after this check, and the one it replaces (the write is conditional on
    # it still being there: two checks in flight cannot both make the same transition).
    attempt: Attempt | None = None
    replaces: Attempt | None = None
    failed: str | None = None  # "<kind>:<version>" to add to the device's failed set
    unfailed: str | None = None  # "<kind>:<version>" to take out of it: a failure the device overcame
    running: tuple[str, str | None] | None = None  # (version, md5) learned after an app install
    fs_version: str | None = None
    chip: str | None = None
    installed: bool = False  # an attempt ended installed: one more in the device's history
    # Set when the check counts (past authentication): the device's rhythm after it, and the end of any
    # silence watch, unless `watch` starts a new one (the check offered an image).
    rhythm: Rhythm | None = None
    watch: SilenceWatch | None = None
    counter: CounterEvent | None = None
    quotas: tuple[Quota, ...] = ()
    # Epoch seconds after which DynamoDB may delete the record (devices nobody assigned).
    expires_at: int | None = None
    kind: Kind = Kind.APP  # the kind the check asked about: its answer goes to Device.answers[kind]

    @property
    def answer(self) -> str:
        return f"{self.outcome}:{self.reason}"

    @property
    def changes_attempt(self) -> bool:
        return self.attempt is not None and self.attempt != self.replaces


@dataclass(frozen=True)
class AuditEntry:
    """One audit trail entry (otafleet.audit makes them; storage/audit.py keeps them)."""

    product: str
    at: str  # ISO 8601 UTC with milliseconds: entries sort by it
    id: str  # random, so that two entries of one millisecond never collide
    actor: str
    action: str  # e.g. channel.set, device.block, rollout.halt, rollout.advance
    target: dict[str, str]  # what the action was on: {"channel": "stable", "kind": "app"}, {"device": MAC}, …
    before: dict[str, Any] = field(default_factory=dict)  # the fields that changed, as they were
    after: dict[str, Any] = field(default_factory=dict)  # … and as they are now
    expires_at: int = 0  # epoch seconds: DynamoDB's TTL deletes the entry after this
