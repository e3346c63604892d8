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
class Product:
    name: str
    platform: str
    delivery: Delivery = Delivery.REDIRECT
    enroll: bool = False
    default_channel: str = "stable"
    auth_required: bool = False
    allow_downgrade: bool = False
    max_image_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Release:
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
    # SHA-256 appended to ESP32 images: what an ESP32 reports as sketch-sha256 once running it.
    appended_sha256: str | None = None
    # ESP8266 images: flash size in bytes encoded in the header, checked against chip-size.
    flash_size_bytes: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    uploaded_at: str | None = None

    @property
    def offerable(self) -> bool:
        return self.state is ReleaseState.REGISTERED


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


@dataclass(frozen=True)
class Channel:
    product: str
    name: str
    tracks: dict[Kind, Track] = field(default_factory=dict)


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
    """What a device said about itself at its last check."""

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


@dataclass(frozen=True)
class Offer:
    kind: Kind
    version: str
    count: int
    at: str
    # What the device reported when it was first offered this release: coming back with
    # the same build later means the update did not take.
    from_md5: str | None = None
    from_version: str | None = None


@dataclass(frozen=True)
class Device:
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
    offer: Offer | None = None
    fs_version: str | None = None
    # Learned when a device came back with a new build after an offer: ESP8266 devices report an MD5
    # that can differ from the file's (the updater rewrites the flash-mode byte), so this is how the
    # service knows that build is that release.
    running_version: str | None = None
    running_md5: str | None = None
    failed: frozenset[str] = frozenset()
    checks: int = 0
    last_outcome: str | None = None
    last_reason: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    # The product an unassigned device asked for by URL (/update/<product>): helps operators assign it.
    seen_product: str | None = None
