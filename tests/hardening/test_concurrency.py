"""Concurrency against moto running as a real server on 127.0.0.1 (in-process `mock_aws` serialises
nothing and proves nothing here): every thread makes real HTTP requests to it, as concurrent Lambda
invocations would to DynamoDB and S3.

- Two uploads of one version with different bytes, registered at the same moment: exactly one becomes the
  release, the other is rejected with a reason saying so, and the release keeps its own bytes.
- Concurrent checks of many devices, each enrolling and checking again at once, land each on its own
  record.

Checks of one device racing each other (two in flight after an install, an enrollment racing `device
assign`, a re-offer racing `device retry`) are replayed deterministically in
tests/integration/test_transitions_once.py: hammering one item from sixteen threads here tested moto's
locking, not the conditional writes that are DynamoDB's contract.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from hardening.helpers import MotoServer

from otafleet.ingest import Ingest
from otafleet.models import Delivery, Kind, Release, ReleaseState
from otafleet.service import UpdateService
from otafleet.storage import clients
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet_local.sample_images import build_esp8266_image
from support.devices import esp8266_headers
from support.world import World

T = TypeVar("T")
ROUNDS = 4
THREADS = 16
CHECKS = 64


@pytest.fixture
def served(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    world = moto_server.world(monkeypatch, failure_offer_limit=10**6)
    yield world
    clients.dynamodb.cache_clear()
    clients.s3.cache_clear()


def at_once(jobs: list[Callable[[], T]]) -> list[T]:
    """Run the jobs in threads released together by a barrier; re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T:
        barrier.wait(timeout=30)
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        return [f.result(timeout=60) for f in futures]


def test_the_server_is_reached_over_loopback(served: World) -> None:
    endpoint = clients.dynamodb(served.settings).meta.endpoint_url
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    assert served.settings.devices_table in clients.dynamodb(served.settings).list_tables()["TableNames"]


def test_concurrent_uploads_of_one_version_register_exactly_one(served: World) -> None:
    served.product("door", "esp8266", delivery=Delivery.INLINE)
    s3 = clients.s3(served.settings)
    bucket = served.settings.firmware_bucket
    for round_ in range(ROUNDS):
        key = f"firmware/door/4.{round_}.0.bin"
        images = [build_esp8266_image(sketch_size=4096, seed=100 + 2 * round_ + i) for i in range(2)]
        versions = [s3.put_object(Bucket=bucket, Key=key, Body=image)["VersionId"] for image in images]

        def register(version_id: str, key: str = key) -> Callable[[], Release | None]:
            # One Ingest per invocation, as in two Lambda sandboxes: no shared cache between them.
            ingest = Ingest(CatalogStore(served.settings), BlobStore(served.settings))
            return lambda: ingest.register(key, version_id)

        results = at_once([register(v) for v in versions])

        assert all(r is not None for r in results)
        states = sorted(r.state.value for r in results if r is not None)
        assert states == ["registered", "rejected"], (round_, states)
        [winner] = [r for r in results if r is not None and r.state is ReleaseState.REGISTERED]
        [loser] = [r for r in results if r is not None and r.state is ReleaseState.REJECTED]
        assert loser.reason is not None and "already registered with different bytes" in loser.reason
        assert winner.sha256 != loser.sha256
        stored = served.catalog.get_release("door", Kind.APP, f"4.{round_}.0")
        assert stored is not None and stored.sha256 == winner.sha256
        winning_bytes = images[versions.index(str(stored.s3_version_id))]
        assert hashlib.sha256(winning_bytes).hexdigest() == winner.sha256
        assert served.blobs.read_release(stored) == winning_bytes
        rejection = served.catalog.upload_status("door", Kind.APP, f"4.{round_}.0", loser.sha256)
        assert rejection is not None and rejection.state is ReleaseState.REJECTED


def test_concurrent_duplicate_events_register_once(served: World) -> None:
    """S3 may deliver one event twice, and both deliveries may run at once: same bytes, one release."""
    served.product("door", "esp8266", delivery=Delivery.INLINE)
    key = "firmware/door/5.0.0.bin"
    image = build_esp8266_image(sketch_size=4096, seed=200)
    version_id = clients.s3(served.settings).put_object(Bucket=served.settings.firmware_bucket, Key=key, Body=image)[
        "VersionId"
    ]
    jobs = [
        (lambda ingest: lambda: ingest.register(key, version_id))(
            Ingest(CatalogStore(served.settings), BlobStore(served.settings))
        )
        for _ in range(4)
    ]
    results = at_once(jobs)
    assert {r.state for r in results if r is not None} == {ReleaseState.REGISTERED}
    assert len({(r.sha256, r.uploaded_at) for r in results if r is not None}) == 1, "all answer the one release"
    items = clients.dynamodb(served.settings).scan(TableName=served.settings.catalog_table)["Items"]
    assert [i["sk"]["S"] for i in items if "5.0.0" in i["sk"]["S"]] == ["R#app#5.0.0"]


def device(world: World, mac: str) -> dict[str, Any]:
    out = clients.dynamodb(world.settings).get_item(
        TableName=world.settings.devices_table, Key={"mac": {"S": mac}}, ConsistentRead=True
    )
    item: dict[str, Any] = out["Item"]
    return item


def test_concurrent_checks_of_many_devices_record_each(served: World) -> None:
    """Different devices at once, each through its own service (one per sandbox): every enrollment and
    every check lands on its own record."""
    served.product("lamp", "esp8266", delivery=Delivery.REDIRECT, enroll=True)
    served.release("lamp", "2.0.0")
    served.channel("lamp", app="2.0.0")
    macs = [f"5C:CF:7F:10:00:{i:02X}" for i in range(32)]

    def enroll_and_check(mac: str) -> Callable[[], list[int]]:
        service = UpdateService.create(served.settings)
        headers = {**esp8266_headers(mac, version="1.0.0"), "X-Forwarded-Proto": "http"}
        return lambda: [service.check(headers, product="lamp").status for _ in range(2)]

    results = at_once([enroll_and_check(mac) for mac in macs])
    assert results == [[302, 302]] * len(macs)
    for mac in macs:
        item = device(served, mac)
        assert (item["product"]["S"], item["channel"]["S"], int(item["checks"]["N"])) == ("lamp", "stable", 2)
        assert int(item["attempt_app"]["M"]["offers"]["N"]) == 2
