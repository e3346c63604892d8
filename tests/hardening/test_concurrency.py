"""Concurrent invocations, replayed deterministically against moto running as a real server on 127.0.0.1
(every call a real HTTP request, as a Lambda invocation's to DynamoDB and S3).

Concurrency between Lambda invocations meets only in DynamoDB, whose contract is that a conditional
write (or a transaction) is checked and applied atomically: of two writers that read the same state,
the second one's condition fails. These tests replay "at the same moment" as exactly that interleaving
(both read, one writes, then the other writes) and check what the code does with the lost condition.
Threads hammering moto would test moto instead: its server takes no lock per request, so two threads can
both pass a condition there, and under load TransactWriteItems even fails with a 500 ("dictionary
changed size during iteration") - neither of which DynamoDB does.

- Two uploads of one version with different bytes: the first write is the release, the second is
  rejected with a reason saying so, and the release keeps its own bytes (with and without a promotion).
- One S3 event delivered twice at once: one release, one promotion.
- Checks of many devices through services of their own, interleaved: each lands on its own record and
  the shared enrollment quota counts each once.

Checks of one device racing each other (two in flight after an install, an enrollment racing `device
assign`, a re-offer racing `device retry`) are replayed the same way in
tests/integration/test_transitions_once.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hardening.helpers import MotoServer

from otafleet.ingest import Ingest
from otafleet.models import Delivery, Kind, Release, ReleaseState
from otafleet.service import UpdateService
from otafleet.storage import clients
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.items import product_pk
from otafleet_local.sample_images import build_esp8266_image
from support.devices import esp8266_headers
from support.world import World


@pytest.fixture
def served(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    world = moto_server.world(monkeypatch, failure_offer_limit=10**6)
    yield world
    clients.dynamodb.cache_clear()
    clients.s3.cache_clear()


def test_the_server_is_reached_over_loopback(served: World) -> None:
    endpoint = clients.dynamodb(served.settings).meta.endpoint_url
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    assert served.settings.devices_table in clients.dynamodb(served.settings).list_tables()["TableNames"]


def write_after(ingest: Ingest, first: Callable[[], object]) -> list[int]:
    """Make `ingest`'s registration write wait until `first` has run to its end: `ingest` has read
    everything it reads (product, upload, channel) before `first` wrote, as two invocations started at
    the same moment would. Returns a list that counts `ingest`'s write attempts."""
    real = ingest.catalog.register
    writes: list[int] = []

    def register(release: Release, promotion: Any = None) -> None:
        if not writes:
            first()
        writes.append(1)
        real(release, promotion)

    ingest.catalog.register = register  # type: ignore[method-assign]
    return writes


def fresh_ingest(world: World) -> Ingest:
    """One Ingest per invocation, as in two Lambda sandboxes: no shared cache between them."""
    return Ingest(CatalogStore(world.settings), BlobStore(world.settings))


@pytest.mark.parametrize("channel", [None, "stable"], ids=["register", "register-and-promote"])
def test_two_uploads_of_one_version_registered_at_once_keep_the_first_write(served: World, channel: str | None) -> None:
    """Both registrations read before either writes; the first write wins. The second's write is
    conditional (attribute_not_exists, in one transaction with the promotion), so by DynamoDB's contract
    it fails, whatever moto's own locking: it reads the winner and is rejected with a reason."""
    served.product("door", "esp8266", delivery=Delivery.INLINE)
    if channel:
        served.release("door", "3.9.0")
        served.channel("door", channel, app="3.9.0")
    s3 = clients.s3(served.settings)
    key = "firmware/door/4.0.0.bin"
    images = [build_esp8266_image(sketch_size=4096, seed=100 + i) for i in range(2)]
    metadata = {"channel": channel} if channel else {}
    versions = [
        s3.put_object(Bucket=served.settings.firmware_bucket, Key=key, Body=image, Metadata=metadata)["VersionId"]
        for image in images
    ]
    first, second = fresh_ingest(served), fresh_ingest(served)
    results: dict[str, Release | None] = {}
    writes = write_after(second, lambda: results.update(first=first.register(key, versions[0])))
    results["second"] = second.register(key, versions[1])

    winner, loser = results["first"], results["second"]
    assert winner is not None and winner.state is ReleaseState.REGISTERED
    assert loser is not None and loser.state is ReleaseState.REJECTED
    assert loser.reason is not None and "already registered with different bytes" in loser.reason
    assert len(writes) == 1, "a lost registration is not written again"
    stored = served.catalog.get_release("door", Kind.APP, "4.0.0")
    assert stored is not None and (stored.sha256, stored.s3_version_id) == (winner.sha256, versions[0])
    assert served.blobs.read_release(stored) == images[0]
    rejection = served.catalog.upload_status("door", Kind.APP, "4.0.0", loser.sha256)
    assert rejection is not None and rejection.state is ReleaseState.REJECTED
    if channel:
        track = served.catalog.get_channel("door", channel).tracks[Kind.APP]  # type: ignore[union-attr]
        assert (track.version, track.previous) == ("4.0.0", "3.9.0"), "promoted once, by the winner"


@pytest.mark.parametrize("channel", [None, "stable"], ids=["register", "register-and-promote"])
def test_one_event_delivered_twice_at_once_registers_once(served: World, channel: str | None) -> None:
    """S3 may deliver one event twice, and both deliveries may run at once: same bytes. The second
    write loses its condition and answers the one release; a promotion happens once."""
    served.product("door", "esp8266", delivery=Delivery.INLINE)
    if channel:
        served.release("door", "4.9.0")
        served.channel("door", channel, app="4.9.0")
    key = "firmware/door/5.0.0.bin"
    image = build_esp8266_image(sketch_size=4096, seed=200)
    metadata = {"channel": channel} if channel else {}
    s3 = clients.s3(served.settings)
    version_id = s3.put_object(Bucket=served.settings.firmware_bucket, Key=key, Body=image, Metadata=metadata)[
        "VersionId"
    ]
    first, second = fresh_ingest(served), fresh_ingest(served)
    results: dict[str, Release | None] = {}
    write_after(second, lambda: results.update(first=first.register(key, version_id)))
    results["second"] = second.register(key, version_id)

    assert {r.state for r in results.values() if r is not None} == {ReleaseState.REGISTERED}
    assert len({(r.sha256, r.uploaded_at) for r in results.values() if r is not None}) == 1, "one release"
    items = clients.dynamodb(served.settings).scan(TableName=served.settings.catalog_table)["Items"]
    assert [i["sk"]["S"] for i in items if "5.0.0" in i["sk"]["S"]] == ["R#app#5.0.0"]
    if channel:
        track = served.catalog.get_channel("door", channel).tracks[Kind.APP]  # type: ignore[union-attr]
        assert (track.version, track.previous) == ("5.0.0", "4.9.0"), "promoted once"


def device(world: World, mac: str) -> dict[str, Any]:
    out = clients.dynamodb(world.settings).get_item(
        TableName=world.settings.devices_table, Key={"mac": {"S": mac}}, ConsistentRead=True
    )
    item: dict[str, Any] = out["Item"]
    return item


def test_checks_of_many_devices_interleaved_record_each(served: World) -> None:
    """Different devices through services of their own (one per sandbox), their checks interleaved
    round-robin: every enrollment and every check lands on its own record, and the one item they all
    write, the product's enrollment quota of this hour, counts each enrollment once.

    Deterministic on purpose: with 32 threads at once, moto's server itself fails now and then
    (TransactWriteItems deep-copies the table while another request inserts: "dictionary changed size
    during iteration", a 500 that the check answers with 503), which is moto's thread-safety, not
    DynamoDB's behaviour nor this code's."""
    served.product("lamp", "esp8266", delivery=Delivery.REDIRECT, enroll=True)
    served.release("lamp", "2.0.0")
    served.channel("lamp", app="2.0.0")
    macs = [f"5C:CF:7F:10:00:{i:02X}" for i in range(32)]
    services = {mac: UpdateService.create(served.settings) for mac in macs}

    def check(mac: str) -> int:
        headers = {**esp8266_headers(mac, version="1.0.0"), "X-Forwarded-Proto": "http"}
        return services[mac].check(headers, product="lamp").status

    results: dict[str, list[int]] = {mac: [] for mac in macs}
    for _ in range(2):
        for mac in macs:
            results[mac].append(check(mac))
    assert results == {mac: [302, 302] for mac in macs}
    for mac in macs:
        item = device(served, mac)
        assert (item["product"]["S"], item["channel"]["S"], int(item["checks"]["N"])) == ("lamp", "stable", 2)
        assert int(item["attempt_app"]["M"]["offers"]["N"]) == 2
    quotas = clients.dynamodb(served.settings).query(
        TableName=served.settings.catalog_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :q)",
        ExpressionAttributeValues={":pk": {"S": product_pk("lamp")}, ":q": {"S": "Q#enroll#"}},
        ConsistentRead=True,
    )["Items"]
    assert sum(int(q["count"]["N"]) for q in quotas) == len(macs)
