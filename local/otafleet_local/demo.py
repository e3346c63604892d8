"""Demo data, so a `curl` with ESP headers gets a real answer as soon as the local stack is up.

A product `demo` (esp8266, redirect delivery, enrollment open), a format-valid sample image uploaded
through S3 as `firmware/demo/1.0.1.bin` with metadata `channel=stable` (so the real publish function
registers it and promotes it to `stable`), and the device `5C:CF:7F:00:00:01` assigned to demo/stable.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from otafleet.config import Settings
from otafleet.models import Delivery, Device, Kind, Product, Release, ReleaseState
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore

log = logging.getLogger("otafleet_local.demo")

PRODUCT = "demo"
CHANNEL = "stable"
VERSION = "1.0.1"
DEVICE = "5C:CF:7F:00:00:01"
KEY = f"firmware/{PRODUCT}/{VERSION}.bin"


@dataclass(frozen=True)
class DemoData:
    product: str
    channel: str
    version: str
    device: str
    key: str
    release: Release | None  # None when registration did not happen in time (or at all)

    @property
    def registered(self) -> bool:
        return self.release is not None and self.release.state is ReleaseState.REGISTERED


def sample_image() -> bytes:
    from otafleet_local.sample_images import build_esp8266_image

    return build_esp8266_image(sketch_size=256 * 1024, flash_size="4MB", flash_mode="dio", version=VERSION)


def _promoted(catalog: CatalogStore) -> bool:
    loaded = catalog.load(PRODUCT, fresh=True)
    channel = loaded.channels.get(CHANNEL) if loaded else None
    track = channel.tracks.get(Kind.APP) if channel else None
    return track is not None and track.version == VERSION


def existing(settings: Settings, dynamodb: Any) -> DemoData | None:
    """The demo as a restored store has it (None once its product is gone): seeded in an earlier run,
    never seeded twice, and whatever operators did to it since stays as they left it."""
    loaded = CatalogStore(settings, client=dynamodb).load(PRODUCT, fresh=True)
    if loaded is None:
        return None
    return DemoData(PRODUCT, CHANNEL, VERSION, DEVICE, KEY, loaded.releases.get((Kind.APP, VERSION)))


def seed(settings: Settings, dynamodb: Any, s3: Any, *, wait_seconds: float = 15.0, publish_ready: bool) -> DemoData:
    catalog = CatalogStore(settings, client=dynamodb)
    catalog.put_product(
        Product(name=PRODUCT, platform="esp8266", delivery=Delivery.REDIRECT, enroll=True, default_channel=CHANNEL)
    )
    DeviceStore(settings, client=dynamodb).put(Device(mac=DEVICE, product=PRODUCT, channel=CHANNEL, assigned=True))
    release: Release | None = None
    try:
        image = sample_image()
    except ImportError as error:
        log.warning("demo: no sample image (%s); the demo product has no release", error)
        return DemoData(PRODUCT, CHANNEL, VERSION, DEVICE, KEY, None)
    s3.put_object(
        Bucket=settings.firmware_bucket,
        Key=KEY,
        Body=image,
        Metadata={"channel": CHANNEL},
        ContentType="application/octet-stream",
    )
    if not publish_ready:
        log.warning("demo: the publish function is not available, so %s stays unregistered", KEY)
        return DemoData(PRODUCT, CHANNEL, VERSION, DEVICE, KEY, None)
    sha256 = hashlib.sha256(image).hexdigest()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        release = catalog.upload_status(PRODUCT, Kind.APP, VERSION, sha256)
        if release is not None and (release.state is not ReleaseState.REGISTERED or _promoted(catalog)):
            break
        time.sleep(0.05)
    if release is None or (release.state is ReleaseState.REGISTERED and not _promoted(catalog)):
        release = None
        log.warning("demo: %s was not registered within %g s (see the publish function's log)", KEY, wait_seconds)
    elif release.state is not ReleaseState.REGISTERED:
        log.warning("demo: %s was rejected: %s", KEY, release.reason)
    return DemoData(PRODUCT, CHANNEL, VERSION, DEVICE, KEY, release)
