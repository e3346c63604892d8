"""Firmware objects in S3: presigned URLs for redirects, bytes for inline answers and ingest."""

from __future__ import annotations

import hashlib
from typing import Any

from otafleet.config import Settings
from otafleet.models import Release
from otafleet.storage import clients
from otafleet.storage.errors import StorageUnavailable, translated


class BlobStore:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.firmware_bucket
        self.expiry = settings.presign_expiry_seconds
        self._settings = settings

    @property
    def client(self) -> Any:
        return clients.s3(self._settings)

    @property
    def redirect_scheme(self) -> str:
        probe = clients.s3(self._settings, public=True).meta.endpoint_url
        return "http" if str(probe).startswith("http://") else "https"

    def presign(self, release: Release) -> str:
        """A short-lived URL for exactly the object version the release was validated with."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": release.s3_key}
        if release.s3_version_id:
            params["VersionId"] = release.s3_version_id
        url: str = clients.s3(self._settings, public=True).generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.expiry
        )
        return url

    def read_release(self, release: Release) -> bytes:
        """The release's bytes, checked against its recorded size and MD5 before any device sees them."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": release.s3_key}
        if release.s3_version_id:
            params["VersionId"] = release.s3_version_id
        with translated():
            body = self.client.get_object(**params)["Body"].read()
        if len(body) != release.size or hashlib.md5(body).hexdigest() != release.md5:
            raise StorageUnavailable(f"object behind {release.product} {release.version} does not match its release")
        return bytes(body)
