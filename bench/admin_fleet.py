"""`python bench/admin_fleet.py [DEVICES]`: how long the operator API's two fleet-wide reads take on moto
with a large fleet (default 10,000 devices of one product): `GET /admin/devices?product=P&limit=50` (a
page, filtered and counted on the server) and `GET /admin/overview?product=P` (counts by version and
state), each as the first request of a sandbox and within the few seconds a warm one reuses a product's
records (admin/cache.py). Not part of `make bench` (no floor to compare with): a yardstick for the
console's first screen.

Both read every record of the product from the by-product index (the overview counts them all; the
listing filters and counts them for `total`). moto answers in-process, but deep-copies every item a
Query returns (about 0.8 ms for a record with its reported build, attempt and rhythm): that, not the
handler (about 0.6 s of parsing for 10,000 records), is most of the time measured here. On AWS the same
reads are about 10 Query pages of 1 MB for 10,000 such records (about 1 KB each).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for folder in ("functions", "local", "tests", "."):
    sys.path.insert(0, str(ROOT / folder))

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "CATALOG_CACHE_SECONDS": "0",
    }
)


def seed(count: int) -> None:
    from otafleet.models import Attempt, AttemptState, Build, Kind, Reported, Rhythm
    from otafleet.storage import clients
    from otafleet.storage.dynamo import to_item
    from otafleet.storage.items import (
        attempt_attribute,
        attempt_to_map,
        device_to_item,
        reported_to_map,
        rhythm_to_map,
    )
    from support.world import World

    world = World.create()
    world.product("door", "esp8266")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        world.release("door", version)
    world.channel("door", app="1.2.0", previous="1.1.0", percent=10)
    world.channel("door", "beta", app="1.2.0")
    base = world.device("5C:CF:7F:00:00:00", "door")
    client = clients.dynamodb(world.settings)
    batch: list[dict[str, Any]] = []
    for i in range(count):
        version = ("1.0.0", "1.1.0", "1.2.0")[i % 3]
        device = replace(
            base,
            mac="5C:CF:7F:" + ":".join(f"{(i >> s) & 0xFF:02X}" for s in (16, 8, 0)),
            channel="beta" if i % 10 == 0 else "stable",
            blocked=i % 97 == 0,
            reported=Reported(version=version, at="2026-12-01T10:00:00Z", free_space=1_000_000, sketch_size=300_000),
            attempts={}
            if version != "1.2.0"
            else {
                Kind.APP: Attempt(
                    kind=Kind.APP,
                    version="1.2.0",
                    state=AttemptState.INSTALLED,
                    offers=1,
                    started="2026-12-01T09:00:00Z",
                    last_offer="2026-12-01T09:00:00Z",
                    before=Build(version="1.1.0"),
                    channel="stable",
                    ended="2026-12-01T09:30:00Z",
                )
            },
        )
        # A record as checks leave it, not only what `device assign` writes: what it reported, its
        # attempt, rhythm and answer, so each item is as large and as costly to read as a real one.
        item = {
            **device_to_item(device),
            "reported": reported_to_map(device.reported),
            **{attempt_attribute(k): attempt_to_map(a) for k, a in device.attempts.items()},
            "rhythm": rhythm_to_map(Rhythm(last=1_764_583_200, seconds=600, samples=12)),
            "running_version": version,
            "last_seen": "2026-12-01T10:00:00Z",
            "first_seen": "2026-11-01T10:00:00Z",
            "checks": 4321,
            "last_outcome": "no-update",
            "last_reason": "up-to-date",
        }
        batch.append({"PutRequest": {"Item": to_item(item)}})
        if len(batch) == 25:
            client.batch_write_item(RequestItems={world.settings.devices_table: batch})
            batch = []
    if batch:
        client.batch_write_item(RequestItems={world.settings.devices_table: batch})


def timed(path: str, query: dict[str, str], rounds: int, *, warm: bool) -> tuple[list[float], dict[str, Any]]:
    """`rounds` requests; not `warm`: each as the first of a new sandbox (nothing remembered, admin/cache.py)."""
    from admin import app

    event = {
        "version": "2.0",
        "rawPath": path,
        "requestContext": {"http": {"method": "GET"}, "authorizer": {"jwt": {"claims": {"username": "bench"}}}},
        "pathParameters": {"proxy": path.removeprefix("/admin/")},
        "queryStringParameters": query,
    }
    samples, body = [], {}
    for _ in range(rounds):
        if not warm:
            app.stores()[0].forget()
        started = time.perf_counter()
        answer = app.answer(event)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer["statusCode"] == 200, answer
        body = json.loads(answer["body"])
    return samples, body


def main(argv: list[str]) -> int:
    from moto import mock_aws

    count = int(argv[0]) if argv else 10_000
    with mock_aws():
        started = time.perf_counter()
        seed(count)
        print(f"seeded {count} devices in {time.perf_counter() - started:.1f} s")
        for path, query in (
            ("/admin/devices", {"product": "door", "limit": "50"}),
            ("/admin/devices", {"product": "door", "limit": "50", "state": "blocked"}),
            ("/admin/overview", {"product": "door"}),
        ):
            for warm, rounds in ((False, 3), (True, 5)):
                samples, body = timed(path, query, rounds, warm=warm)
                if "total" in body:
                    shown = f"total {body['total']}"
                else:
                    shown = f"devices {body['devices']}, {[(v['version'], v['count']) for v in body['by_version']]}"
                when = "warm (read < 10 s old)" if warm else "first read"
                print(
                    f"GET {path}?{'&'.join(f'{k}={v}' for k, v in query.items())} {when}: "
                    f"median {statistics.median(samples):.0f} ms, min {min(samples):.0f} ms, "
                    f"max {max(samples):.0f} ms ({shown})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
