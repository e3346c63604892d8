"""Benchmark 4, `publish`: registering an uploaded image vs. reading it and hashing it once.

Ours: `Ingest.register(key, version_id)` (what the publish function runs per S3 event) on a
format-valid ESP32 image of 1 MB and of 4 MB, moto in-process: the product read from the catalog, the
object read from S3 and hashed, the image parsed and checked, the release written.
Floor (issue #16): reading the object and hashing it once, i.e. S3 GetObject + read of the same object
with a plain boto3 client and one pass each of MD5 and SHA-256, timed as one call. MD5 + SHA-256 alone
is printed beside it. Rounds alternate ours / floor / hashing; each figure is a median.

Every timed registration also times its parts (a timer around each, a few microseconds in all):
read + hash (`BlobStore.read_upload`), the two catalog requests (`CatalogStore.get_product`, the
product's limits and platform; `CatalogStore.register`, the conditional PutItem of the release), the
image check (`parse_app_image`, `device_facts`, signature verification) and the rest (key parsing,
building the release, logging, metrics). Printed as shares of register time, they explain the ratio.

Where it stands (four full runs on the shared 2-core dev machine, 2026-12-02): 1 MB 2.17-2.29x the
floor, 4 MB 1.68-1.79x. Read + hash is 44-47 % / 57-59 % of register time and as fast as the floor's
own read and hash; the catalog requests 41-43 % / 22-25 % (4-6 ms for the pair, client side included);
the image check 8-9 % / 15 % (almost all of it the XOR checksum over the segments: one pass of
`int.from_bytes` per 64 KiB at C speed, about as fast as SHA-256; the appended SHA-256 is taken from the
read's hash, not computed again); the rest 2-3 %. Without the catalog requests the ratio is 1.24-1.32x at both sizes.
So the 1.5x target is missed because of the two catalog requests, which a registration cannot do
without: it must read the product (its platform, limits and keys) to check the image against, and must
write the release conditionally (releases are immutable). Under moto in-process each costs about as
much Python as reading and hashing half a megabyte, which is why their share is largest at 1 MB.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from bench import REGION, scenario
from bench.common import Figure, Result, fmt, heading, median, note, ratio, say, table
from bench.floor import S3_CONFIG
from bench.hooks import Recorder

TARGET = 1.5
SIZES = {"1 MB": 1024 * 1024, "4 MB": 4 * 1024 * 1024}
PRODUCT = "cam"
HISTORY = 10  # earlier releases of the product: its catalog partition is not empty in real life


def _history(world: Any, count: int) -> None:
    """`count` earlier releases of PRODUCT (catalog items only: they are never downloaded here)."""
    from otafleet.models import Kind, Release

    for i in range(count):
        world.catalog.add_release(
            Release(
                product=PRODUCT,
                kind=Kind.APP,
                version=f"0.{i}.0",
                size=1_000_000,
                md5="0" * 32,
                sha256="0" * 64,
                s3_key=f"firmware/{PRODUCT}/0.{i}.0.bin",
                s3_version_id="v",
                chip="esp32",
                facts={"project": PRODUCT, "idf": "v5.1"},
                uploaded_at="2026-01-01T00:00:00Z",
            )
        )


def run(quick: bool = False) -> Result:
    heading("4. publish: Ingest.register of an ESP32 image vs. S3 read + MD5 + SHA-256 of it")
    rounds = 5 if quick else 21
    result = Result("publish")
    rows: list[list[object]] = []
    parts_rows: list[list[object]] = []
    missed_by_catalog: list[str] = []
    missed_anyway: list[str] = []
    with scenario.fleet() as fleet:
        import boto3
        from botocore.config import Config

        from otafleet.ingest import Ingest
        from otafleet.models import Kind, ReleaseState
        from otafleet.storage import clients
        from otafleet.storage.items import product_pk, release_sk
        from otafleet_local.sample_images import build_esp32_image

        world = fleet.world
        world.product(PRODUCT, "esp32")
        _history(world, HISTORY)
        ingest = Ingest(world.catalog, world.blobs)
        bucket = world.settings.firmware_bucket
        s3 = clients.s3(world.settings)
        plain_s3 = boto3.client("s3", region_name=REGION, config=Config(**S3_CONFIG))
        serial = 0
        by_call: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in SIZES}
        requests: dict[str, Counter[str]] = {}
        recorder = Recorder().attach([world.catalog.client, world.blobs.client])
        parts = _Parts(ingest)

        try:
            for label, size in SIZES.items():
                data = build_esp32_image(chip="esp32", version="1.0.0", project=PRODUCT, size=size)
                floor_key = f"bench/{PRODUCT}-{size}.bin"
                plain_s3.put_object(Bucket=bucket, Key=floor_key, Body=data)
                split: dict[str, list[float]] = defaultdict(list)

                def register(data: bytes = data, label: str = label, split: dict[str, list[float]] = split) -> float:
                    nonlocal serial
                    serial += 1
                    key = f"firmware/{PRODUCT}/{serial}.0.0.bin"
                    put = s3.put_object(Bucket=bucket, Key=key, Body=data)
                    recorder.clear()
                    parts.clear()
                    started = time.perf_counter()
                    release = ingest.register(key, put.get("VersionId"))
                    elapsed = time.perf_counter() - started
                    for call, seconds in recorder.busy_by_call.items():
                        by_call[label][call].append(seconds * 1000)
                    requests[label] = recorder.counts()
                    for part, seconds in parts.split(elapsed).items():
                        split[part].append(seconds * 1000)
                    if release is None or release.state is not ReleaseState.REGISTERED:
                        raise RuntimeError(f"{label} image was not registered: {release!r:.400}")
                    # Keep the product's partition the same size for every round (untimed).
                    world.catalog.client.delete_item(
                        TableName=world.settings.catalog_table,
                        Key={"pk": {"S": product_pk(PRODUCT)}, "sk": {"S": release_sk(Kind.APP, release.version)}},
                    )
                    return elapsed

                def floor(key: str = floor_key) -> float:
                    started = time.perf_counter()
                    body = plain_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    hashlib.md5(body).hexdigest()
                    hashlib.sha256(body).hexdigest()
                    return time.perf_counter() - started

                def hashing(data: bytes = data) -> float:
                    started = time.perf_counter()
                    hashlib.md5(data).hexdigest()
                    hashlib.sha256(data).hexdigest()
                    return time.perf_counter() - started

                sides: dict[str, Callable[[], float]] = {"ours": register, "floor": floor, "hash": hashing}
                for fn in sides.values():  # warm-up
                    fn()
                for values in split.values():
                    values.clear()
                samples: dict[str, list[float]] = {name: [] for name in sides}
                names = list(sides)
                for i in range(rounds):
                    for name in names[i % 3 :] + names[: i % 3]:
                        samples[name].append(sides[name]() * 1000)
                ours, floor_ms, hashed = (median(samples[n]) for n in names)
                # Per round, so that the share of each part and "without catalog" come from the same samples.
                share = {
                    part: median([ms / total for ms, total in zip(values, split["total"], strict=True)])
                    for part, values in split.items()
                    if part != "total"
                }
                without_catalog = median([t - c for t, c in zip(split["total"], split["catalog"], strict=True)])
                rows.append(
                    [
                        f"{label} ({len(data)} bytes)",
                        fmt(ours, 1),
                        fmt(floor_ms, 1),
                        fmt(ratio(ours, floor_ms), 2) + "x",
                        fmt(hashed, 1),
                        fmt(ratio(ours, hashed), 2) + "x",
                    ]
                )
                parts_rows.append(
                    [
                        label,
                        *(f"{fmt(median(split[part]), 1)} ms {100 * share[part]:3.0f} %" for part in PARTS),
                        fmt(without_catalog, 1),
                        fmt(ratio(without_catalog, floor_ms), 2) + "x",
                    ]
                )
                if ratio(without_catalog, floor_ms) > TARGET:
                    missed_anyway.append(f"{label}: {fmt(ratio(without_catalog, floor_ms), 2)}x")
                elif ratio(ours, floor_ms) > TARGET:
                    missed_by_catalog.append(
                        f"{label}: {fmt(ratio(ours, floor_ms), 2)}x, "
                        f"{fmt(ratio(without_catalog, floor_ms), 2)}x without the catalog requests "
                        f"({fmt(median(split['catalog']), 1)} ms, {100 * share['catalog']:.0f} %)"
                    )
                result.figures.append(
                    Figure(
                        "publish",
                        f"publish {label}: register vs. S3 read + MD5+SHA-256",
                        ours,
                        floor_ms,
                        "ms",
                        TARGET,
                        note="GetObject + read (plain client, moto in-process) + one pass each of MD5 and SHA-256",
                    )
                )
                result.figures.append(
                    Figure(
                        "publish",
                        f"publish {label}: register vs. MD5+SHA-256",
                        ours,
                        hashed,
                        "ms",
                        note="informative: the hashing alone",
                    )
                )
                result.details[label] = {
                    "bytes": len(data),
                    "rounds": rounds,
                    "register_ms": samples["ours"],
                    "s3_read_md5_sha256_ms": samples["floor"],
                    "md5_sha256_ms": samples["hash"],
                    "register_vs_floor": ratio(ours, floor_ms),
                    "register_without_catalog_ms": without_catalog,
                    "register_without_catalog_vs_floor": ratio(without_catalog, floor_ms),
                    "parts_ms": {part: median(values) for part, values in split.items()},
                    "parts_share": share,
                    "requests_per_registration": dict(requests[label]),
                }
        finally:
            parts.detach()
    table(["image", "register ms", "floor ms", "ratio", "md5+sha256 ms", "ratio"], rows)
    note("floor: S3 GetObject + read with a plain boto3 client + MD5 + SHA-256, one call (issue #16's floor).")
    say("")
    table(["parts of register", *PARTS.values(), "without catalog ms", "vs. floor"], parts_rows)
    recorder.detach()
    for label, counted in requests.items():
        times = {call: median(ms[-rounds:]) for call, ms in by_call[label].items()}
        result.details[label]["request_ms"] = times
        note(
            f"requests per registration ({label}): "
            + ", ".join(f"{k} {v} ({fmt(times.get(k, math.nan), 1)} ms)" for k, v in sorted(counted.items()))
        )
    note("parts: medians of each registration's own split; catalog = GetItem of the product + PutItem of the")
    note("release, client side included; image check = format parse + XOR checksum + device facts + signature.")
    if missed_by_catalog:
        note(f"the {TARGET:g}x target is missed only because of the two catalog requests, which a registration")
        note("cannot do without (read the product to check the image against, write the release conditionally):")
        for line in missed_by_catalog:
            note(f"  {line}")
    for line in missed_anyway:
        note(f"the {TARGET:g}x target is missed even without the catalog requests: {line}")
    note(f"median of {rounds} rounds per size; each registration is a new version of the same bytes,")
    note(f"of a product with {HISTORY} earlier releases (its catalog partition stays that size).")
    return result


# What the parts of a registration are called in the table, in order; "other" is what the rest leaves.
PARTS = {"read_hash": "read+hash", "catalog": "catalog", "image": "image check", "other": "other"}


class _Parts:
    """Timers around the parts of `Ingest.register` (instance attributes and the ingest module's names
    shadowed; `detach` puts everything back)."""

    def __init__(self, ingest: Any) -> None:
        import otafleet.ingest as module

        self._module = module
        self._spent: dict[str, float] = defaultdict(float)
        self._objects = [(ingest.blobs, "read_upload", "read_hash")]
        self._objects += [(ingest.catalog, name, "catalog") for name in ("get_product", "register")]
        self._functions = [(name, getattr(module, name)) for name in ("parse_app_image", "device_facts", "_signing")]
        for owner, name, part in self._objects:
            setattr(owner, name, self._timed(getattr(owner, name), part))
        for name, fn in self._functions:
            setattr(module, name, self._timed(fn, "image"))

    def _timed(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        spent = self._spent
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += clock() - started

        return timed

    def clear(self) -> None:
        self._spent.clear()

    def split(self, total: float) -> dict[str, float]:
        out = {part: self._spent.get(part, 0.0) for part in PARTS if part != "other"}
        out["other"] = total - sum(out.values())
        out["total"] = total
        return out

    def detach(self) -> None:
        for owner, name, _ in self._objects:
            delattr(owner, name)
        for name, fn in self._functions:
            setattr(self._module, name, fn)
