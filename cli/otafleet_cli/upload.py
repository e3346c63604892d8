"""`otafleet upload`: put an image where the publish function picks it up, then wait for its verdict.

Key convention (product.md §4): `firmware/<product>/<version>.bin` for application images,
`filesystem/<product>/<version>.bin` with --fs; `--channel` travels as the object's `channel` metadata
and the publish function promotes the release once it registered it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from otafleet import names
from otafleet.fleet import Fleet, check_name
from otafleet.models import Kind, Release, ReleaseState
from otafleet.shapes import release_dict
from otafleet_cli.output import Output
from otafleet_cli.stack import CliError, Connection
from otafleet_cli.views import release_fields

VERSION_RULE = (
    "The version is --version if given, else the file name without .bin, minus a leading '<product>-' or "
    "'<product>_' (door-1.2.0.bin → 1.2.0; 1.2.0.bin → 1.2.0; build.bin → build)."
)
PROGRESS_MIN_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 60.0
EXIT_REJECTED = 1
EXIT_TIMEOUT = 2

# Replaced by tests to drive the wait without real time passing.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def version_from_filename(filename: str, product: str) -> str:
    name = Path(filename).name
    stem = name[:-4] if name.lower().endswith(".bin") else name
    for sep in ("-", "_"):
        prefix = product + sep
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    if stem == product:
        raise CliError(f"cannot tell the version from the file name {name!r}: pass --version")
    return stem


def check_version(version: str) -> str:
    try:
        return names.version(version)
    except names.InvalidName as bad:
        raise CliError(f"{bad} (pass --version to set it)") from None


def object_key(product: str, version: str, kind: Kind) -> str:
    folder = "filesystem" if kind is Kind.FS else "firmware"
    return f"{folder}/{product}/{version}.bin"


def file_digests(path: Path) -> tuple[str, str]:
    """MD5 and SHA-256 of the file, read once."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


class Progress:
    """boto3 transfer callback: a percentage on one terminal line (called from transfer threads)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.sent = 0
        self.shown = -1
        self._lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self._lock:
            self.sent += sent
            pct = self.sent * 100 // self.total if self.total else 100
            if pct != self.shown:
                self.shown = pct
                self.stream.write(f"\ruploading {pct:3d}%  {self.sent}/{self.total} bytes")
                self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def wait_for_release(
    fleet: Fleet,
    product: str,
    kind: Kind,
    version: str,
    sha256: str,
    *,
    before: Release | None,
    s3_version_id: str | None,
    timeout: float,
) -> Release | None:
    """Poll until the publish function recorded its verdict on these bytes (a release or a rejection that
    is not `before`, and is for the uploaded object version when the bucket keeps versions); None after
    `timeout` seconds."""
    deadline = _clock() + timeout
    delay = 0.25
    while True:
        found = fleet.upload_status(product, version, kind, sha256)
        if found is not None and found != before:
            if s3_version_id is None or found.s3_version_id in (None, s3_version_id):
                return found
            if found.state is ReleaseState.REGISTERED:
                return found  # registered from another upload of the same bytes: just as good
        left = deadline - _clock()
        if left <= 0:
            return None
        _sleep(min(delay, left))
        delay = min(delay * 2, 2.0)


def run(conn: Connection, args: Any, out: Output) -> int:
    path = Path(args.file)
    if not path.exists():
        raise CliError(f"file not found: {path}")
    if not path.is_file():
        raise CliError(f"not a file: {path}")
    product: str = args.product
    fleet = conn.fleet
    fleet.catalog(product)  # unknown products fail here, before anything is uploaded
    kind = Kind.FS if args.fs else Kind.APP
    version = check_version(args.version or version_from_filename(path.name, product))
    channel: str | None = args.channel
    if channel is not None:
        check_name("channel", channel)
    if args.timeout < 0:
        raise CliError("--timeout must not be negative")
    md5, sha256 = file_digests(path)
    size = path.stat().st_size
    bucket = conn.stack.bucket
    key = object_key(product, version, kind)
    result: dict[str, Any] = {"bucket": bucket, "key": key, "md5": md5, "sha256": sha256, "release": None}

    before = fleet.upload_status(product, version, kind, sha256)
    if before is not None and before.state is ReleaseState.REGISTERED:
        # The very same bytes: uploading again changes nothing (registration is idempotent).
        result["release"] = release_dict(before)
        result["status"] = "already-registered"
        out.note(f"{product} {kind.value} {version} is already registered with these bytes; nothing uploaded")
        if channel is not None:
            fleet.set_channel(product, channel, version, kind)
            out.note(f"channel {product}/{channel} now serves {kind.value} {version}")
        out.emit(result, release_fields(before))
        return 0
    taken = fleet.release(product, version, kind)
    if taken is not None and taken.sha256 != sha256:
        raise CliError(
            f"{product} {kind.value} {version} is already {taken.state.value} with other bytes (md5 {taken.md5}); "
            "releases are immutable: upload this file under a new version"
        )

    extra: dict[str, Any] = {"ContentType": "application/octet-stream"}
    metadata: dict[str, str] = {}
    if channel is not None:
        metadata["channel"] = channel
    if getattr(args, "trusts", None):
        # The keys the build embeds, when not (only) the one it is signed with: a rotation's bridge release.
        metadata["trusts"] = ",".join(args.trusts)
    if metadata:
        extra["Metadata"] = metadata
    progress = Progress(size, out.stderr) if size >= PROGRESS_MIN_BYTES and out.stderr.isatty() else None
    s3_version_id = _upload(conn.s3, path, bucket, key, extra, progress)
    out.note(f"uploaded {path.name} ({size} bytes) to s3://{bucket}/{key}; waiting for registration…")

    release = wait_for_release(
        fleet, product, kind, version, sha256, before=before, s3_version_id=s3_version_id, timeout=args.timeout
    )
    if release is None:
        result["status"] = "timeout"
        out.emit(result, f"s3://{bucket}/{key}: not registered")
        hint = "on the local stack: is `make run` still running?" if conn.stack.local else "check its logs"
        out.error(
            f"uploaded to s3://{bucket}/{key}, but the release was not registered within {args.timeout:g} s: "
            f"registration did not happen (is the publish function running? {hint})"
        )
        return EXIT_TIMEOUT
    result["release"] = release_dict(release)
    result["status"] = release.state.value
    out.emit(result, release_fields(release))
    if release.state is ReleaseState.REGISTERED:
        if channel is not None:
            out.note(f"the publish function promotes it to channel {product}/{channel}")
        return 0
    out.error(f"{product} {kind.value} {version} was {release.state.value}: {release.reason or 'no reason recorded'}")
    return EXIT_REJECTED


def _upload(s3: Any, path: Path, bucket: str, key: str, extra: dict[str, Any], progress: Progress | None) -> str | None:
    """Upload (multipart when large); the S3 version id of the new object when the bucket keeps versions."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    try:
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra, Callback=progress)
    except S3UploadFailedError as err:
        raise CliError(f"upload to s3://{bucket}/{key} failed: {err}") from None
    finally:
        if progress is not None:
            progress.done()
    try:
        version_id: str | None = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
    except ClientError:
        return None  # only a refinement of the wait: without it any new verdict on these bytes counts
    return version_id
