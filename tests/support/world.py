"""A small otafleet world on moto: tables, bucket, and helpers to seed products, releases and devices."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from otafleet.config import Settings, load_settings
from otafleet.models import Channel, Delivery, Device, Kind, Product, Release, Track
from otafleet.service import UpdateService
from otafleet.storage import clients
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore
from otafleet_local import resources


def fake_image(seed: str, size: int = 4096) -> bytes:
    """Bytes that start like an ESP image; enough where only delivery, not parsing, is under test."""
    body = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return b"\xe9\x01\x02\x40" + body[: size - 4]


@dataclass
class World:
    settings: Settings
    devices: DeviceStore
    catalog: CatalogStore
    blobs: BlobStore

    @classmethod
    def create(cls, settings: Settings | None = None) -> World:
        settings = settings or load_settings()
        clients.dynamodb.cache_clear()
        clients.s3.cache_clear()
        clients.sns.cache_clear()  # a client of an earlier test's mock must not publish into this one
        resources.create(settings, clients.dynamodb(settings), clients.s3(settings))
        return cls(settings, DeviceStore(settings), CatalogStore(settings), BlobStore(settings))

    def service(self) -> UpdateService:
        return UpdateService(self.settings, self.devices, self.catalog, self.blobs)

    def product(self, name: str = "door", platform: str = "esp8266", **kw: object) -> Product:
        product = Product(name=name, platform=platform, **kw)  # type: ignore[arg-type]
        self.catalog.put_product(product)
        return product

    def release(
        self,
        product: str,
        version: str,
        data: bytes | None = None,
        *,
        kind: Kind = Kind.APP,
        chip: str | None = "esp8266",
        appended_sha256: str | None = None,
        flash_size_bytes: int | None = None,
        sketch_size: int | None = None,
        flashed_md5s: tuple[str, ...] = (),
    ) -> Release:
        data = data if data is not None else fake_image(f"{product}-{version}")
        folder = "firmware" if kind is Kind.APP else "filesystem"
        key = f"{folder}/{product}/{version}.bin"
        put = clients.s3(self.settings).put_object(Bucket=self.settings.firmware_bucket, Key=key, Body=data)
        release = Release(
            product=product,
            kind=kind,
            version=version,
            size=len(data),
            md5=hashlib.md5(data).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            s3_key=key,
            s3_version_id=put.get("VersionId"),
            chip=chip,
            appended_sha256=appended_sha256,
            flash_size_bytes=flash_size_bytes,
            uploaded_at="2026-11-24T12:00:00Z",
            sketch_size=sketch_size,
            flashed_md5s=flashed_md5s,
        )
        self.catalog.add_release(release)
        return release

    def channel(
        self, product: str, name: str = "stable", *, app: str | None = None, fs: str | None = None, **track: object
    ) -> Channel:
        tracks = {}
        if app:
            tracks[Kind.APP] = Track(version=app, **track)  # type: ignore[arg-type]
        if fs:
            tracks[Kind.FS] = Track(version=fs)
        channel = Channel(product=product, name=name, tracks=tracks)
        self.catalog.put_channel(channel)
        return channel

    def rolling_out(self, mac: str, *, max_failure_rate: float = 0.5, **product: object) -> World:
        """door (ESP8266) rolling 1.0.0 -> 1.1.0 out on stable, judged from its first device (min_devices 1),
        the sketch sizes the stock client reports for each, and `mac` assigned to it."""
        self.product("door", "esp8266", **product)
        self.release("door", "1.0.0", sketch_size=300_016)
        self.release("door", "1.1.0", sketch_size=310_032)
        self.channel("door", app="1.1.0", previous="1.0.0", min_devices=1, max_failure_rate=max_failure_rate)
        self.device(mac, "door")
        return self

    def device(self, mac: str, product: str = "door", channel: str = "stable", **kw: object) -> Device:
        device = Device(mac=mac, product=product, channel=channel, assigned=True)
        device = replace(device, **kw)  # type: ignore[arg-type]
        self.devices.put(device)
        return device


__all__ = ["Delivery", "World", "fake_image"]
