"""Turning an uploaded object into a release, or a rejection with a reason (product.md §4).

The safety gate of the product: nothing reaches a device unless it was parsed, matched against its
product and bound to the exact object version it was validated with. Registration is idempotent (S3
delivers events at least once) and immutable (a version never points at other bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from otafleet import names
from otafleet.fleet import Fleet, FleetError
from otafleet.imageformat import ImageError, inspect_filesystem, parse_app_image
from otafleet.models import Kind, Product, Release, ReleaseState
from otafleet.observability import count, logger
from otafleet.storage.blobs import BlobStore, TooLarge, Upload
from otafleet.storage.catalog import CatalogStore
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
        registered = self._register(release)
        channel = upload.metadata.get("channel")
        if registered.state is ReleaseState.REGISTERED and channel:
            self._promote(registered, channel)
        return registered

    def _validate(self, base: Release, where: ObjectKey, product: Product, upload: Upload) -> Release:
        view = memoryview(upload.data)
        if not upload.data:
            raise ImageError("the file is empty", 0, "empty")
        if where.kind is Kind.FS:
            facts = inspect_filesystem(view)
            return replace(base, facts={k: v for k, v in facts.items() if v is not None})
        info = parse_app_image(
            view,
            expect_chip=product.platform,
            product=product.name,
            prefix_sha256=(len(view) - 32, upload.sha256_but_last32),
        )
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
        return replace(
            base,
            version=version,
            chip=info.chip,
            appended_sha256=info.appended_sha256,
            flash_size_bytes=info.flash_size_bytes if info.chip == "esp8266" else None,
            facts=info.facts(),
        )

    def _register(self, release: Release) -> Release:
        # Write first, read only when the version exists already: the common case costs one request.
        try:
            self.catalog.add_release(release)
        except Conflict:
            existing = self.catalog.get_release(release.product, release.kind, release.version)
        else:
            logger().info("release registered", extra=_summary(release))
            count("ReleasesRegistered")
            return release
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

    def _promote(self, release: Release, channel: str) -> None:
        # The same rule as `otafleet channel set`: the channel's last good release becomes `previous`.
        try:
            Fleet(None, self.catalog).set_channel(release.product, channel, release.version, release.kind)
        except FleetError as refused:
            logger().warning("channel metadata ignored", extra={"reason": str(refused), **_summary(release)})
            return
        logger().info("release promoted", extra={"channel": channel, **_summary(release)})


def _summary(release: Release) -> dict[str, object]:
    return {
        "product": release.product,
        "kind": release.kind.value,
        "version": release.version,
        "size": release.size,
        "sha256": release.sha256,
        "key": release.s3_key,
    }
