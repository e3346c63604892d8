"""A small fleet on in-process moto, one device per decision outcome, and the events its devices send.

Shared by the `warm` and `requests` benchmarks. Seeding goes through the tests' own helpers
(tests/support), so the data has exactly the shape the service writes and reads in production.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Repeated offers to one device would otherwise turn into an inferred failure after 3 checks; a
# warm benchmark checks the same device thousands of times and must stay on the redirect path.
OFFER_LIMIT = str(10**9)


@dataclass(frozen=True)
class Case:
    """One decision outcome: the event a device sends for it and the status it must get."""

    name: str
    status: int
    event: dict[str, Any]
    mac: str | None


@dataclass
class Fleet:
    world: Any  # support.world.World
    cases: dict[str, Case]


UP_TO_DATE = "5C:CF:7F:00:00:01"
REDIRECTED = "5C:CF:7F:00:00:02"
INLINE = "5C:CF:7F:00:00:03"
UNKNOWN = "5C:CF:7F:00:00:04"
BLOCKED = "5C:CF:7F:00:00:05"
INLINE_IMAGE_BYTES = 350 * 1024  # a typical ESP8266 sketch


def reset_handler() -> None:
    """Forget every per-process cache the handler keeps, as a new Lambda sandbox would."""
    from otafleet import config
    from otafleet.storage import clients
    from update import app

    app._service = None
    config.settings.cache_clear()
    clients.dynamodb.cache_clear()
    clients.s3.cache_clear()


@contextlib.contextmanager
def fleet() -> Iterator[Fleet]:
    """moto in-process, the stack's tables and bucket, a fleet seeded for every outcome."""
    from moto import mock_aws

    previous = os.environ.get("FAILURE_OFFER_LIMIT")
    os.environ["FAILURE_OFFER_LIMIT"] = OFFER_LIMIT
    try:
        with mock_aws():
            reset_handler()
            yield _seed()
    finally:
        reset_handler()
        if previous is None:
            os.environ.pop("FAILURE_OFFER_LIMIT", None)
        else:
            os.environ["FAILURE_OFFER_LIMIT"] = previous


def _seed() -> Fleet:
    from otafleet.config import settings
    from otafleet.models import Delivery
    from support.devices import esp8266_headers, http_api_event
    from support.world import World, fake_image

    world = World.create(settings())
    world.product("door", "esp8266", delivery=Delivery.REDIRECT)
    world.release("door", "1.0.0")
    world.release("door", "1.1.0")
    world.channel("door", app="1.1.0")
    world.product("lamp", "esp8266", delivery=Delivery.INLINE)
    world.release("lamp", "1.1.0", fake_image("lamp-1.1.0", INLINE_IMAGE_BYTES))
    world.channel("lamp", app="1.1.0")
    world.device(UP_TO_DATE, "door")
    world.device(REDIRECTED, "door")
    world.device(INLINE, "lamp")
    world.device(BLOCKED, "door", blocked=True)

    def event(mac: str, version: str | None = "1.0.0", **kw: Any) -> dict[str, Any]:
        return http_api_event("/update", esp8266_headers(mac, version=version, **kw))

    _steady(world, UP_TO_DATE, esp8266_headers(UP_TO_DATE, version="1.1.0"))
    refused = http_api_event("/update", {**esp8266_headers(UNKNOWN), "User-Agent": "curl/8.5.0"})
    cases = [
        Case("304 up-to-date", 304, event(UP_TO_DATE, "1.1.0"), UP_TO_DATE),
        Case("302 redirect", 302, event(REDIRECTED), REDIRECTED),
        Case("200 inline", 200, event(INLINE), INLINE),
        Case("404 unknown device", 404, event(UNKNOWN), UNKNOWN),
        Case("403 refused (not an ESP client)", 403, refused, None),
        Case("403 blocked device", 403, event(BLOCKED), BLOCKED),
    ]
    return Fleet(world, {c.name: c for c in cases})


def _steady(world: Any, mac: str, headers: dict[str, str]) -> None:
    """Bring a device to its steady state: it checked every 10 minutes for the last 40, so its rhythm is
    learned, and its warm checks (after the first has recorded its source IP) change nothing and are not
    written (check_writes.py)."""
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from support.clock import iso

    now = datetime.now(UTC)
    for minutes in (40, 30, 20, 10):
        at = iso(now - timedelta(minutes=minutes))
        replace(world.service(), clock=lambda at=at: at).check(headers)


def call(event: dict[str, Any]) -> dict[str, Any]:
    from update import app

    response: dict[str, Any] = app.handler(event, None)
    return response


def seed_product(
    settings: Any, dynamodb: Any, s3: Any, product: str, *, versions: tuple[str, ...], current: str
) -> dict[str, str]:
    """Seed a product (esp8266, redirect delivery) with `versions` on a remote endpoint (moto server,
    local stack) through explicit clients; channel `stable` serves `current`. Returns the presign
    parameters of `current`'s object."""
    import hashlib

    from otafleet.models import Channel, Delivery, Kind, Product, Release, Track
    from otafleet.storage.catalog import CatalogStore
    from support.world import fake_image

    catalog = CatalogStore(settings, client=dynamodb)
    catalog.put_product(Product(name=product, platform="esp8266", delivery=Delivery.REDIRECT))
    presign: dict[str, str] = {}
    for version in versions:
        data = fake_image(f"{product}-{version}")
        key = f"firmware/{product}/{version}.bin"
        put = s3.put_object(Bucket=settings.firmware_bucket, Key=key, Body=data)
        catalog.add_release(
            Release(
                product=product,
                kind=Kind.APP,
                version=version,
                size=len(data),
                md5=hashlib.md5(data).hexdigest(),
                sha256=hashlib.sha256(data).hexdigest(),
                s3_key=key,
                s3_version_id=put.get("VersionId"),
                chip="esp8266",
                uploaded_at="2026-11-24T12:00:00Z",
            )
        )
        if version == current:
            presign = {"Bucket": settings.firmware_bucket, "Key": key}
            if put.get("VersionId"):
                presign["VersionId"] = put["VersionId"]
    catalog.put_channel(Channel(product=product, name="stable", tracks={Kind.APP: Track(version=current)}))
    return presign


def seed_devices(settings: Any, dynamodb: Any, product: str, macs: list[str]) -> None:
    """Devices assigned to `product`/stable (operator fields only, as `otafleet device assign` writes)."""
    from otafleet.models import Device
    from otafleet.storage.devices import DeviceStore

    store = DeviceStore(settings, client=dynamodb)
    for mac in macs:
        store.put(Device(mac=mac, product=product, channel="stable", assigned=True))
