"""Benchmark 4, `publish`: registering an uploaded image vs. hashing its bytes.

Ours: `Ingest.register(key, version_id)` (what the publish function runs per S3 event) on a
format-valid ESP32 image of 1 MB and of 4 MB, moto in-process: catalog read, the object streamed from
S3 and hashed, the image parsed and checked, the release written.
Floor: MD5 + SHA-256 over the same bytes (the least a registration must compute). A second floor
figure, S3 GetObject + read of the same object with a plain boto3 client, shows what the read alone
costs under moto. Rounds alternate ours / hashing / read; each figure is a median.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from bench import REGION, scenario
from bench.common import Figure, Result, fmt, heading, median, note, ratio, table
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
    heading("4. publish: Ingest.register of an ESP32 image vs. MD5 + SHA-256 of its bytes")
    rounds = 3 if quick else 9
    result = Result("publish")
    rows: list[list[object]] = []
    with scenario.fleet() as fleet:
        import time

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
        in_aws: dict[str, list[float]] = {label: [] for label in SIZES}
        by_call: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in SIZES}
        requests: dict[str, Counter[str]] = {}
        recorder = Recorder().attach([world.catalog.client, world.blobs.client])

        for label, size in SIZES.items():
            data = build_esp32_image(chip="esp32", version="1.0.0", project=PRODUCT, size=size)
            floor_key = f"bench/{PRODUCT}-{size}.bin"
            plain_s3.put_object(Bucket=bucket, Key=floor_key, Body=data)

            def register(data: bytes = data, label: str = label) -> float:
                nonlocal serial
                serial += 1
                key = f"firmware/{PRODUCT}/{serial}.0.0.bin"
                put = s3.put_object(Bucket=bucket, Key=key, Body=data)
                recorder.clear()
                started = time.perf_counter()
                release = ingest.register(key, put.get("VersionId"))
                elapsed = time.perf_counter() - started
                in_aws[label].append(recorder.busy_s * 1000)
                for call, seconds in recorder.busy_by_call.items():
                    by_call[label][call].append(seconds * 1000)
                requests[label] = recorder.counts()
                if release is None or release.state is not ReleaseState.REGISTERED:
                    raise RuntimeError(f"{label} image was not registered: {release!r:.400}")
                # Keep the product's partition the same size for every round (untimed).
                world.catalog.client.delete_item(
                    TableName=world.settings.catalog_table,
                    Key={"pk": {"S": product_pk(PRODUCT)}, "sk": {"S": release_sk(Kind.APP, release.version)}},
                )
                return elapsed

            def hashing(data: bytes = data) -> float:
                started = time.perf_counter()
                hashlib.md5(data).hexdigest()
                hashlib.sha256(data).hexdigest()
                return time.perf_counter() - started

            def read(key: str = floor_key) -> float:
                started = time.perf_counter()
                plain_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                return time.perf_counter() - started

            sides: dict[str, Callable[[], float]] = {"ours": register, "hash": hashing, "read": read}
            for fn in sides.values():  # warm-up
                fn()
            samples: dict[str, list[float]] = {name: [] for name in sides}
            names = list(sides)
            for i in range(rounds):
                for name in names[i % 3 :] + names[: i % 3]:
                    samples[name].append(sides[name]() * 1000)
            ours, hashed, read_ms = (median(samples[n]) for n in names)
            aws_ms = median(in_aws[label][-rounds:])
            rows.append(
                [
                    f"{label} ({len(data)} bytes)",
                    fmt(ours, 1),
                    fmt(aws_ms, 1),
                    fmt(ours - aws_ms, 1),
                    fmt(hashed, 1),
                    fmt(ratio(ours, hashed), 2) + "x",
                    fmt(read_ms, 1),
                    fmt(hashed + read_ms, 1),
                    fmt(ratio(ours, hashed + read_ms), 2) + "x",
                ]
            )
            result.figures.append(
                Figure("publish", f"publish {label}: register vs. MD5+SHA-256", ours, hashed, "ms", TARGET)
            )
            result.details[label] = {
                "bytes": len(data),
                "rounds": rounds,
                "register_ms": samples["ours"],
                "md5_sha256_ms": samples["hash"],
                "s3_read_ms": samples["read"],
                "register_vs_read_plus_hash": ratio(ours, hashed + read_ms),
                "register_in_aws_requests_ms": aws_ms,
                "requests_per_registration": dict(requests[label]),
            }
            result.figures.append(
                Figure(
                    "publish",
                    f"publish {label}: register vs. S3 read + hashing",
                    ours,
                    hashed + read_ms,
                    "ms",
                    note="informative: GetObject + read (moto in-process) + MD5 + SHA-256",
                )
            )
    table(
        [
            "image",
            "register ms",
            "in AWS calls",
            "rest",
            "md5+sha256 ms",
            "ratio",
            "S3 read ms",
            "read+hash ms",
            "ratio",
        ],
        rows,
    )
    recorder.detach()
    for label, counted in requests.items():
        times = {call: median(ms[-rounds:]) for call, ms in by_call[label].items()}
        result.details[label]["request_ms"] = times
        note(
            f"requests per registration ({label}): "
            + ", ".join(f"{k} {v} ({fmt(times.get(k, math.nan), 1)} ms)" for k, v in sorted(counted.items()))
        )
    note("'in AWS calls': from sending each request to its parsed answer (the S3 body streams in 'rest').")
    note(f"median of {rounds} rounds per size; each registration is a new version of the same bytes,")
    note(f"of a product with {HISTORY} earlier releases (its catalog partition stays that size).")
    return result
