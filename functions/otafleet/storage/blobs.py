"""Firmware objects in S3: presigned URLs for redirects, bytes for inline answers and ingest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from otafleet.config import Settings
from otafleet.models import Release
from otafleet.storage import clients
from otafleet.storage.errors import StorageUnavailable, translated


@dataclass(frozen=True)
class Upload:
    """An uploaded object read once: its bytes, their digests, and what S3 says about it."""

    data: bytes
    md5: str
    sha256: str
    version_id: str | None
    metadata: dict[str, str]
    # SHA-256 of all but the last 32 bytes: where an ESP32 image keeps its appended hash, so the
    # parser can check that hash without a second pass over the image.
    sha256_but_last32: bytes = b""


class TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


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
        """The scheme of the presigned URLs: read from the endpoint's setting, so a check that offers
        nothing never creates an S3 client (AWS's own endpoint is HTTPS)."""
        endpoint = clients.s3_endpoint(self._settings, public=True)
        return "http" if endpoint is not None and endpoint.startswith("http://") else "https"

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

    def read_upload(self, key: str, version_id: str | None, limit: int) -> Upload:
        """Read an object into one buffer (the only full copy in memory; the parser reads it through a
        memoryview) and hash it once. Raises TooLarge before reading more than `limit` + 1 bytes."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        with translated():
            response = self.client.get_object(**params)
            size = int(response.get("ContentLength", 0))
            if size > limit:
                response["Body"].close()
                raise TooLarge(size)
            body = response["Body"]
            # Never more than limit + 1 bytes. The first read returns the whole body as the HTTP layer
            # read it (it stops at Content-Length), where appending chunks to a growing buffer copied it
            # all again; the next one finds the end, where botocore checks the length and the checksum.
            data: bytes = body.read(limit + 1)
            while len(data) <= limit:
                more = body.read(limit + 1 - len(data))
                if not more:
                    break
                data += more
            if len(data) > limit:
                body.close()
                raise TooLarge(len(data))
        view = memoryview(data)
        head = max(0, len(data) - 32)
        sha256 = hashlib.sha256(view[:head])
        but_last32 = sha256.digest()
        sha256.update(view[head:])
        md5 = hashlib.md5(view).hexdigest()
        view.release()
        return Upload(
            data=data,
            md5=md5,
            sha256=sha256.hexdigest(),
            version_id=response.get("VersionId") or version_id,
            metadata={k.lower(): v for k, v in (response.get("Metadata") or {}).items()},
            sha256_but_last32=but_last32,
        )
