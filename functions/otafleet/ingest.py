"""Turning an uploaded object into a release, or a rejection with a reason (product.md §4).

The safety gate of the product: nothing reaches a device unless it was parsed, matched against its
product and bound to the exact object version it was validated with. Registration is idempotent (S3
delivers events at least once) and immutable (a version never points at other bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from otafleet import names, rollout, signatures
from otafleet.imageformat import ImageError, ImageInfo, inspect_filesystem, parse_app_image
from otafleet.models import Kind, Product, Release, ReleaseState
from otafleet.observability import count, logger
from otafleet.sketchfacts import device_facts
from otafleet.storage.blobs import BlobStore, TooLarge, Upload
from otafleet.storage.catalog import CatalogStore, TrackChange
from otafleet.storage.errors import Conflict

FOLDERS = {"firmware": Kind.APP, "filesystem": Kind.FS}
_KEY = re.compile(r"^(?P<folder>firmware|filesystem)/(?P<product>[^/]+)(?:/(?P<version>[^/]+))?\.bin$")
# Arduino-ESP32 builds carry the framework's descriptor, whose version says nothing about the sketch.
_FRAMEWORK_PROJECTS = frozenset({"arduino-lib-builder"})
UNVERSIONED = "unversioned"


class BadKey(ValueError):
    """The object key does not follow firmware/<product>/<version>.bin or filesystem/…"""


@dataclass(frozen=True)
class ObjectKey:
    kind: Kind
    product: str
    version: str | None  # None: `firmware/<product>.bin`, the version comes from the ESP32 app descriptor


def parse_key(key: str) -> ObjectKey:
    match = _KEY.match(key)
    if not match:
        raise BadKey(f"{key!r} is not firmware/<product>/<version>.bin or filesystem/<product>/<version>.bin")
    try:
        product = names.product(match["product"])
        version = names.version(match["version"]) if match["version"] is not None else None
    except names.InvalidName as bad:
        raise BadKey(f"{key!r}: {bad}") from None
    return ObjectKey(FOLDERS[match["folder"]], product, version)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Ingest:
    def __init__(self, catalog: CatalogStore, blobs: BlobStore) -> None:
        self.catalog = catalog
        self.blobs = blobs

    def register(self, key: str, version_id: str | None = None) -> Release | None:
        """Register the object at `key` (that exact version); None when the key is not ours at all."""
        log = logger()
        try:
            where = parse_key(key)
        except BadKey as bad:
            log.warning("upload ignored", extra={"key": key[:300], "reason": str(bad)})
            count("UploadsIgnored")
            return None
        product = self.catalog.get_product(where.product)
        limit = product.max_image_bytes if product else 16 * 1024 * 1024
        try:
            upload = self.blobs.read_upload(key, version_id, limit)
        except TooLarge as big:
            return self._reject(
                where, key, version_id, f"{big.size} bytes is more than product allows ({limit} bytes)", size=big.size
            )
        base = Release(
            product=where.product,
            kind=where.kind,
            version=where.version or UNVERSIONED,
            size=len(upload.data),
            md5=upload.md5,
            sha256=upload.sha256,
            s3_key=key,
            s3_version_id=upload.version_id,
            uploaded_at=now(),
        )
        if product is None:
            return self._store_rejection(
                base,
                f"unknown product {where.product!r}: create it first with `otafleet product create {where.product}`",
            )
        try:
            release = self._validate(base, where, product, upload)
        except ImageError as bad:
            return self._store_rejection(base, str(bad))
        except names.InvalidName as bad:
            return self._store_rejection(base, str(bad))
        return self._register(release, self._channel(release, upload.metadata.get("channel")))

    def _channel(self, release: Release, channel: str | None) -> str | None:
        if not channel:
            return None
        try:
            return names.channel(channel)
        except names.InvalidName as bad:
            logger().warning("channel metadata ignored", extra={"reason": str(bad), **_summary(release)})
            return None

    def _validate(self, base: Release, where: ObjectKey, product: Product, upload: Upload) -> Release:
        view = memoryview(upload.data)
        if not upload.data:
            raise ImageError("the file is empty", 0, "empty")
        if where.kind is Kind.FS:
            facts = inspect_filesystem(view)
            return replace(base, facts={k: v for k, v in facts.items() if v is not None})
        try:
            info = parse_app_image(
                view,
                expect_chip=product.platform,
                product=product.name,
                prefix_sha256=(len(view) - 32, upload.sha256_but_last32),
            )
        except ImageError as bad:
            raise signatures.trailer_problem(bad) if product.signed else bad from None
        signing = _signing(view, info, product, upload.metadata.get("trusts"))
        version = where.version
        if version is None:
            app = info.app
            if app is None or not app.version or app.project_name in _FRAMEWORK_PROJECTS:
                raise ImageError(
                    "the key has no version (firmware/<product>.bin) and the image's app descriptor has no "
                    "meaningful one: upload it as firmware/<product>/<version>.bin",
                    0x30 if app else None,
                    "no-version",
                )
            version = names.version(app.version)
        # What a device reports once it runs this image: the evidence that an update took.
        reported = device_facts(
            view, info, prefix_md5=(len(view), upload.md5), prefix_sha256=(len(view), upload.sha256)
        )
        return replace(
            base,
            version=version,
            chip=info.chip,
            appended_sha256=(reported.sketch_sha256 if reported else None) or info.appended_sha256,
            flash_size_bytes=info.flash_size_bytes if info.chip == "esp8266" else None,
            facts=info.facts(),
            sketch_size=reported.sketch_size if reported else None,
            flashed_md5s=reported.flashed_md5s if reported else (),
            **signing,
        )

    def _register(self, release: Release, channel: str | None) -> Release:
        """Register the release, and promote it to `channel` in the same write: a promotion happens
        exactly once, with its registration; a repeated event or a re-upload of the same bytes finds the
        release registered and changes nothing an operator did since."""
        for _ in range(3):
            promotion = self._promotion(release, channel) if channel else None
            try:
                self.catalog.register(release, promotion)
            except Conflict as lost:
                if 0 not in lost.failed and promotion is not None:
                    continue  # the channel changed since it was read: read it again
                existing = self.catalog.get_release(release.product, release.kind, release.version)
                break
            logger().info("release registered", extra=_summary(release))
            count("ReleasesRegistered")
            if promotion is not None:
                logger().info("release promoted", extra={"channel": channel, **_summary(release)})
            return release
        else:
            raise Conflict(f"channel {channel} of {release.product} kept changing during registration")
        if existing is None:  # registered and gone again: only an operator's hand does that
            raise Conflict(f"{release.product} {release.kind.value} {release.version} changed during registration")
        if existing.sha256 == release.sha256:
            return existing  # the same bytes again: a repeated event or a re-upload, nothing changes
        return self._store_rejection(
            release,
            f"{release.kind.value} {release.version} of {release.product} is already registered with different "
            f"bytes (sha256 {existing.sha256[:16]}…, uploaded {existing.uploaded_at}); releases are immutable: "
            "upload the new build under a new version",
        )

    def _promotion(self, release: Release, channel: str) -> TrackChange:
        # The same rule as `otafleet channel set` (rollout.pointed): the last good release becomes `previous`.
        current_channel = self.catalog.get_channel(release.product, channel)
        current = current_channel.tracks.get(release.kind) if current_channel else None
        track, reset = rollout.pointed(current, release.version, 100, None, None)
        return TrackChange(
            release.product,
            channel,
            release.kind,
            track,
            expect=current,
            channel_exists=current_channel is not None,
            reset_counters=reset,
        )

    def _reject(self, where: ObjectKey, key: str, version_id: str | None, reason: str, *, size: int) -> Release:
        release = Release(
            product=where.product,
            kind=where.kind,
            version=where.version or UNVERSIONED,
            size=size,
            md5="",
            sha256="",
            s3_key=key,
            s3_version_id=version_id,
            uploaded_at=now(),
        )
        return self._store_rejection(release, reason)

    def _store_rejection(self, release: Release, reason: str) -> Release:
        rejected = replace(release, state=ReleaseState.REJECTED, reason=reason)
        self.catalog.add_rejection(rejected)
        logger().warning("upload rejected", extra={**_summary(rejected), "reason": reason})
        count("UploadsRejected")
        return rejected


def _signing(view: memoryview, info: ImageInfo, product: Product, trusts: str | None) -> dict[str, Any]:
    """The signature facts of a signed product's upload (SignatureError when it does not verify). The
    upload's `trusts` metadata names the keys the build carries when they are not the ones it is signed
    by: a bridge release signed by the old key that embeds the new one."""
    if not product.signed:
        return {}
    verified = signatures.verify(view, info, product.platform, product.keys)
    carried: list[str] = []
    for name in (trusts or "").replace(" ", ",").split(","):
        if not name:
            continue
        key = product.key(name)
        if key is None:
            raise ImageError(
                f"the upload's `trusts` metadata names key {name!r}, which product {product.name} does not have",
                None,
                "unknown-key",
            )
        carried.append(key.fingerprint)
    return {"signature_scheme": verified.scheme, "signed_by": verified.keys, "trusts": tuple(carried)}


def _summary(release: Release) -> dict[str, object]:
    return {
        "product": release.product,
        "kind": release.kind.value,
        "version": release.version,
        "size": release.size,
        "sha256": release.sha256,
        "key": release.s3_key,
    }
