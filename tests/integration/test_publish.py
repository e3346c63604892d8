"""Ingest end to end under moto: object → S3 event → publish handler → release → offered to a device."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from otafleet.models import Delivery, Kind, ReleaseState
from otafleet.storage import clients
from otafleet.storage.blobs import TooLarge
from otafleet_local.sample_images import build_esp32_image, build_esp8266_image
from publish import app as publish_app
from support.devices import esp32_headers, esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

S3_EVENT = Path(__file__).resolve().parents[2] / "events" / "s3_put_firmware.json"


@pytest.fixture(autouse=True)
def fresh_handlers() -> Iterator[None]:
    publish_app._ingest = None
    update_app._service = None
    yield
    publish_app._ingest = None
    update_app._service = None


@pytest.fixture
def shop(world: World) -> World:
    world.product("door", "esp8266", delivery=Delivery.INLINE)
    world.product("cam", "esp32s3")
    return world


def s3_event(world: World, key: str, version_id: str | None) -> dict[str, Any]:
    """The sample event from events/ (made with `sam local generate-event s3 put`), pointed at this object."""
    event: dict[str, Any] = json.loads(S3_EVENT.read_text())
    record = copy.deepcopy(event["Records"][0])
    record["s3"]["bucket"]["name"] = world.settings.firmware_bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{world.settings.firmware_bucket}"
    record["s3"]["object"]["key"] = quote_plus(key, safe="/")  # S3 URL-encodes keys in events
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    return {"Records": [record]}


def upload(world: World, key: str, data: bytes, **metadata: str) -> dict[str, Any]:
    put = clients.s3(world.settings).put_object(
        Bucket=world.settings.firmware_bucket, Key=key, Body=data, Metadata=metadata
    )
    result: dict[str, Any] = publish_app.handler(s3_event(world, key, put.get("VersionId")), None)
    return result


def test_esp8266_upload_registers_and_is_offered(shop: World) -> None:
    image = build_esp8266_image(seed=1)
    result = upload(shop, "firmware/door/1.2.0.bin", image, channel="stable")
    assert result["results"] == [{"key": "firmware/door/1.2.0.bin", "state": "registered", "version": "1.2.0"}]
    release = shop.catalog.get_release("door", Kind.APP, "1.2.0")
    assert release is not None and release.state is ReleaseState.REGISTERED
    assert release.size == len(image)
    assert release.md5 == hashlib.md5(image).hexdigest()
    assert release.sha256 == hashlib.sha256(image).hexdigest()
    assert release.chip == "esp8266" and release.flash_size_bytes == 4 * 1024 * 1024
    assert release.facts["layout"] == "esp8266-arduino"

    shop.device("5C:CF:7F:00:00:01", "door")
    response = update_app.handler(http_api_event("/update", esp8266_headers(version="1.1.0")), None)
    assert response["statusCode"] == 200
    body = base64.b64decode(response["body"])
    assert body == image
    assert response["headers"]["x-MD5"] == hashlib.md5(image).hexdigest()


def test_esp32_upload_facts_and_sha256_match(shop: World) -> None:
    image = build_esp32_image(chip="esp32s3", version="2.0.0", project="cam")
    upload(shop, "firmware/cam/2.0.0.bin", image, channel="stable")
    release = shop.catalog.get_release("cam", Kind.APP, "2.0.0")
    assert release is not None and release.state is ReleaseState.REGISTERED
    assert release.chip == "esp32s3"
    assert release.appended_sha256 == image[-32:].hex()
    assert release.facts["app_version"] == "2.0.0" and release.facts["project"] == "cam"
    shop.device("24:0A:C4:00:00:01", "cam")
    offered = update_app.handler(http_api_event("/update", esp32_headers(version="1.0.0")), None)
    assert offered["statusCode"] == 302
    # after the update the ESP32 reports the appended hash (upper case) as sketch-sha256
    done = update_app.handler(http_api_event("/update", esp32_headers(sha256=image[-32:].hex())), None)
    assert done["statusCode"] == 304


def test_version_from_app_descriptor_when_key_has_none(shop: World) -> None:
    upload(shop, "firmware/cam.bin", build_esp32_image(chip="esp32s3", version="3.1.4", project="cam"))
    release = shop.catalog.get_release("cam", Kind.APP, "3.1.4")
    assert release is not None and release.state is ReleaseState.REGISTERED


def test_arduino_framework_descriptor_version_is_not_used(shop: World) -> None:
    image = build_esp32_image(chip="esp32s3", version="v5.1.4", project="arduino-lib-builder")
    upload(shop, "firmware/cam.bin", image)
    rejected = shop.catalog.upload_status("cam", Kind.APP, "unversioned", hashlib.sha256(image).hexdigest())
    assert rejected is not None and rejected.state is ReleaseState.REJECTED
    assert rejected.reason is not None and "no meaningful" in rejected.reason


def test_duplicate_event_is_idempotent(shop: World) -> None:
    image = build_esp8266_image(seed=2)
    key = "firmware/door/1.3.0.bin"
    put = clients.s3(shop.settings).put_object(Bucket=shop.settings.firmware_bucket, Key=key, Body=image)
    event = s3_event(shop, key, put["VersionId"])
    first = publish_app.handler(event, None)
    second = publish_app.handler(event, None)
    assert first == second
    items = clients.dynamodb(shop.settings).scan(TableName=shop.settings.catalog_table)["Items"]
    assert [i["sk"]["S"] for i in items if "1.3.0" in i["sk"]["S"]] == ["R#app#1.3.0"]


def test_same_version_different_bytes_is_rejected_and_first_untouched(shop: World) -> None:
    first = build_esp8266_image(seed=3)
    second = build_esp8266_image(seed=4)
    upload(shop, "firmware/door/1.4.0.bin", first)
    result = upload(shop, "firmware/door/1.4.0.bin", second)
    assert result["results"][0]["state"] == "rejected"
    release = shop.catalog.get_release("door", Kind.APP, "1.4.0")
    assert release is not None and release.sha256 == hashlib.sha256(first).hexdigest()
    rejection = shop.catalog.upload_status("door", Kind.APP, "1.4.0", hashlib.sha256(second).hexdigest())
    assert rejection is not None and rejection.state is ReleaseState.REJECTED
    assert rejection.reason is not None and "already registered with different bytes" in rejection.reason
    # and devices still get exactly the first bytes, although the object was overwritten in S3
    assert shop.blobs.read_release(release) == first


def test_deleting_the_object_does_not_break_a_release(shop: World) -> None:
    image = build_esp8266_image(seed=5)
    upload(shop, "firmware/door/1.5.0.bin", image)
    clients.s3(shop.settings).delete_object(Bucket=shop.settings.firmware_bucket, Key="firmware/door/1.5.0.bin")
    release = shop.catalog.get_release("door", Kind.APP, "1.5.0")
    assert release is not None and shop.blobs.read_release(release) == image


@pytest.mark.parametrize(
    ("key", "data_name", "reason_part"),
    [
        ("firmware/door/2.0.0.bin", "esp32", "is for esp32s3"),
        ("firmware/cam/2.0.0.bin", "esp8266", "esp8266"),
        ("firmware/door/2.0.1.bin", "random", "0xe9"),
        ("firmware/door/2.0.2.bin", "truncated", "remain in the file"),
        ("firmware/door/2.0.3.bin", "empty", "empty"),
        ("firmware/ghost/1.0.0.bin", "esp8266", "unknown product 'ghost'"),
        ("filesystem/door/fs-1.bin", "esp8266", "application image"),
    ],
)
def test_rejections_are_recorded_with_reason(shop: World, key: str, data_name: str, reason_part: str) -> None:
    images = {
        "esp32": build_esp32_image(chip="esp32s3"),
        "esp8266": build_esp8266_image(seed=9),
        "random": bytes(range(256)) * 16,
        "truncated": build_esp8266_image(seed=9)[:-100],
        "empty": b"",
    }
    data = images[data_name]
    result = upload(shop, key, data)
    assert result["results"][0]["state"] == "rejected"
    product, version = key.split("/")[1], key.split("/")[2][: -len(".bin")]
    kind = Kind.FS if key.startswith("filesystem/") else Kind.APP
    rejected = shop.catalog.upload_status(product, kind, version, hashlib.sha256(data).hexdigest())
    assert rejected is not None and rejected.state is ReleaseState.REJECTED
    assert rejected.reason is not None and reason_part.lower() in rejected.reason.lower(), rejected.reason
    assert shop.catalog.get_release(product, kind, version) is None


def test_keys_outside_the_convention_are_ignored(shop: World) -> None:
    result = upload(shop, "firmware/door/../../etc/passwd.bin", b"x")
    assert result["results"][0]["state"] == "ignored"


def test_filesystem_upload(shop: World) -> None:
    fs = b"\x00" * 4096 * 4
    upload(shop, "filesystem/door/fs-2.bin", fs, channel="stable")
    release = shop.catalog.get_release("door", Kind.FS, "fs-2")
    assert release is not None and release.state is ReleaseState.REGISTERED
    catalog = shop.catalog.load("door", fresh=True)
    assert catalog is not None and catalog.channels["stable"].tracks[Kind.FS].version == "fs-2"


def test_promotion_keeps_previous(shop: World) -> None:
    upload(shop, "firmware/door/1.0.0.bin", build_esp8266_image(seed=10), channel="stable")
    upload(shop, "firmware/door/1.1.0.bin", build_esp8266_image(seed=11), channel="stable")
    catalog = shop.catalog.load("door", fresh=True)
    assert catalog is not None
    track = catalog.channels["stable"].tracks[Kind.APP]
    assert (track.version, track.previous) == ("1.1.0", "1.0.0")


def test_app_and_filesystem_promoted_at_once_keep_both_tracks(shop: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 7: two promotions that both read the channel before either wrote (no channel yet)."""
    ingest = publish_app.ingest()
    real = ingest.catalog.get_channel
    stale = [None]  # the filesystem's promotion read the channel before the app's created it

    def get_channel(product: str, name: str) -> Any:
        return stale.pop() if stale else real(product, name)

    upload(shop, "firmware/door/1.0.0.bin", build_esp8266_image(seed=12), channel="stable")
    monkeypatch.setattr(ingest.catalog, "get_channel", get_channel)
    upload(shop, "filesystem/door/fs-1.bin", b"\x00" * 4096 * 4, channel="stable")
    channel = shop.catalog.get_channel("door", "stable")
    assert channel is not None and set(channel.tracks) == {Kind.APP, Kind.FS}


def test_a_duplicate_event_never_undoes_what_an_operator_did_since(shop: World) -> None:
    """Case 6: the event again (S3 delivers at least once), or a re-upload of the same bytes with
    `channel` metadata, after the operator rolled back: nothing changes."""
    from otafleet.fleet import Fleet

    upload(shop, "firmware/door/1.0.0.bin", build_esp8266_image(seed=13), channel="stable")
    data = build_esp8266_image(seed=14)
    upload(shop, "firmware/door/1.1.0.bin", data, channel="stable")
    fleet = Fleet(shop.devices, shop.catalog)
    fleet.rollback("door", "stable")
    before = fleet.channel_status("door", "stable")
    upload(shop, "firmware/door/1.1.0.bin", data, channel="stable")
    assert fleet.channel_status("door", "stable") == before


def test_channel_set_of_one_kind_never_overwrites_a_halt_of_the_other(shop: World) -> None:
    """Case 7: each kind's track is its own write."""
    from otafleet.fleet import Fleet
    from otafleet.models import TrackState

    upload(shop, "firmware/door/1.0.0.bin", build_esp8266_image(seed=15), channel="stable")
    upload(shop, "firmware/door/1.1.0.bin", build_esp8266_image(seed=16))
    upload(shop, "filesystem/door/fs-1.bin", b"\x00" * 4096 * 4, channel="stable")
    fleet = Fleet(shop.devices, shop.catalog)
    stale = shop.catalog.load("door", fresh=True)  # what a slow `channel set` read
    shop.catalog.set_track_state("door", "stable", Kind.FS, "fs-1", TrackState.HALTED)
    shop.catalog.load = lambda product, fresh=False: stale  # type: ignore[method-assign,misc]
    fleet.set_channel("door", "stable", "1.1.0", percent=10)
    channel = shop.catalog.get_channel("door", "stable")
    assert channel is not None and channel.tracks[Kind.FS].state is TrackState.HALTED
    assert channel.tracks[Kind.APP].version == "1.1.0"


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 3 * 1024 * 1024 + 7])
def test_read_upload_returns_the_object_and_its_digests(world: World, size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    s3 = clients.s3(world.settings)
    put = s3.put_object(
        Bucket=world.settings.firmware_bucket, Key="firmware/x/1.bin", Body=data, Metadata={"Channel": "beta"}
    )
    upload = world.blobs.read_upload("firmware/x/1.bin", put.get("VersionId"), limit=max(size, 1))
    assert bytes(upload.data) == data
    assert upload.md5 == hashlib.md5(data).hexdigest()
    assert upload.sha256 == hashlib.sha256(data).hexdigest()
    assert upload.sha256_but_last32 == hashlib.sha256(data[: max(0, size - 32)]).digest()
    assert upload.metadata == {"channel": "beta"}
    assert upload.version_id == put.get("VersionId")


def test_read_upload_refuses_an_object_over_the_limit(world: World) -> None:
    s3 = clients.s3(world.settings)
    s3.put_object(Bucket=world.settings.firmware_bucket, Key="firmware/x/1.bin", Body=b"\xe9" * 1001)
    with pytest.raises(TooLarge) as big:
        world.blobs.read_upload("firmware/x/1.bin", None, limit=1000)
    assert big.value.size == 1001
    assert world.blobs.read_upload("firmware/x/1.bin", None, limit=1001).data == b"\xe9" * 1001

    # Without a Content-Length to refuse it by, the read itself stops one byte past the limit.
    def no_length(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("ContentLength", None)

    s3.meta.events.register("after-call.s3.GetObject", no_length, unique_id="no-length")
    try:
        with pytest.raises(TooLarge) as big:
            world.blobs.read_upload("firmware/x/1.bin", None, limit=999)
        assert big.value.size == 1000  # what was read: the object's 1001 bytes were never counted
        assert world.blobs.read_upload("firmware/x/1.bin", None, limit=1001).data == b"\xe9" * 1001
    finally:
        s3.meta.events.unregister("after-call.s3.GetObject", unique_id="no-length")
