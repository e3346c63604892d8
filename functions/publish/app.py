"""Lambda handler for S3 ObjectCreated events on the firmware bucket: validate and register uploads.

Thin on purpose: read each record, hand the object (key URL-decoded, exact version) to the ingest core.
A storage fault propagates so that Lambda retries the event; registration is idempotent, so a retry
finishes the job without duplicates.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from otafleet.config import settings
from otafleet.ingest import Ingest
from otafleet.observability import handler_wrapper, logger
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore

_ingest: Ingest | None = None


def ingest() -> Ingest:
    global _ingest
    if _ingest is None:
        cfg = settings()
        _ingest = Ingest(CatalogStore(cfg), BlobStore(cfg))
    return _ingest


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    results = []
    for record in S3Event(event).records:
        bucket, obj = record.s3.bucket.name, record.s3.get_object
        if bucket != settings().firmware_bucket:
            logger().warning("event for another bucket ignored", extra={"bucket": bucket})
            continue
        # S3 URL-encodes keys in events (`+` for a space, %2B for a `+`); Powertools' S3Object does not decode.
        key = unquote_plus(obj.key)
        release = ingest().register(key, obj.version_id)
        results.append(
            {
                "key": key,
                "state": release.state.value if release else "ignored",
                "version": release and release.version,
            }
        )
    return {"results": results}
