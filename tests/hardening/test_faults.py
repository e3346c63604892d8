"""AWS-side faults, injected under moto: throttling, service errors, timeouts, lost conditional checks and a
missing object behind a release.

- The update handler answers a clean 503 with Retry-After (the device simply asks again at its next
  check) and writes an ERROR log line; no traceback reaches the device, nothing is recorded as offered.
- The publish handler raises (so Lambda retries the S3 event), leaves no half-written release behind,
  and the retry registers the upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber
from hardening.helpers import (
    LAMP_MAC,
    LogCapture,
    body_bytes,
    header,
    invoke,
    route_event,
    s3_event,
)

from otafleet.models import Delivery, Kind, ReleaseState, TrackState
from otafleet.storage import clients
from otafleet.storage.errors import StorageUnavailable
from otafleet_local.sample_images import build_esp8266_image
from publish import app as publish_app
from support.devices import esp8266_headers
from support.world import World

BULB_MAC = "5C:CF:7F:00:00:0B"
DYNAMODB_CODES = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ConditionalCheckFailedException",
]


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def transport_errors() -> dict[str, Exception]:
    return {
        "ReadTimeoutError": ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/"),
        "EndpointConnectionError": EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/"),
    }


FAULTS = [*DYNAMODB_CODES, *transport_errors()]


def fault(name: str, operation: str) -> Exception:
    errors = transport_errors()
    return errors[name] if name in errors else client_error(name, operation, 500 if "Internal" in name else 400)


class Injector:
    """Makes chosen methods of the (cached, shared) boto3 clients raise, optionally only from the n-th call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, int] = {}

    def fail(self, client: Any, method: str, error: Exception, *, after: int = 0, times: int | None = None) -> None:
        real: Callable[..., Any] = getattr(client, method)
        key = f"{client.meta.service_model.service_name}.{method}"
        self.calls[key] = 0

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[key] += 1
            n = self.calls[key]
            if n > after and (times is None or n <= after + times):
                raise error
            return real(*args, **kwargs)

        self.monkeypatch.setattr(client, method, wrapper)


@pytest.fixture
def inject(monkeypatch: pytest.MonkeyPatch) -> Iterator[Injector]:
    yield Injector(monkeypatch)


@pytest.fixture
def fleet(world: World) -> World:
    world.product("lamp", "esp8266", delivery=Delivery.REDIRECT)
    world.release("lamp", "2.0.0")
    world.channel("lamp", app="2.0.0")
    world.device(LAMP_MAC, "lamp")
    world.product("bulb", "esp8266", delivery=Delivery.INLINE)
    world.release("bulb", "1.0.0")
    world.channel("bulb", app="1.0.0")
    world.device(BULB_MAC, "bulb")
    return world


def check(mac: str = LAMP_MAC, **query: str) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in esp8266_headers(mac, version="0.9.0").items()}
    return invoke(route_event("/update", {}, headers, query=query or None))


def assert_clean_503(response: dict[str, Any], logs: LogCapture) -> None:
    assert response["statusCode"] == 503
    retry_after = header(response, "Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0
    body = body_bytes(response)
    assert body == b"service busy, try again later\n"
    assert b"Traceback" not in body and b"Error" not in body
    errors = logs.levels("ERROR")
    assert [e["message"] for e in errors] == ["storage unavailable"], errors
    assert all("exception" not in e for e in errors), "an expected fault is logged without a stack trace"


def device_item(world: World, mac: str) -> dict[str, Any]:
    item = clients.dynamodb(world.settings).get_item(TableName=world.settings.devices_table, Key={"mac": {"S": mac}})
    found: dict[str, Any] = item.get("Item", {})
    return found


# ------------------------------------------------------------------ the update handler


def test_faults_are_injected_into_the_clients_the_handler_uses(fleet: World, inject: Injector) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "get_item", client_error("ThrottlingException", "GetItem"))
    check()
    assert inject.calls["dynamodb.get_item"] == 1


@pytest.mark.parametrize("name", FAULTS)
def test_device_read_fault_is_a_clean_503(fleet: World, inject: Injector, logs: LogCapture, name: str) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "get_item", fault(name, "GetItem"))
    assert_clean_503(check(), logs)


@pytest.mark.parametrize("name", FAULTS)
def test_catalog_read_fault_is_a_clean_503(fleet: World, inject: Injector, logs: LogCapture, name: str) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "query", fault(name, "Query"))
    assert_clean_503(check(), logs)


@pytest.mark.parametrize("name", FAULTS)
def test_device_write_fault_is_a_clean_503(fleet: World, inject: Injector, logs: LogCapture, name: str) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "update_item", fault(name, "UpdateItem"))
    assert_clean_503(check(), logs)
    assert "offer" not in device_item(fleet, LAMP_MAC)


@pytest.mark.parametrize("code", ["InternalError", "SlowDown", "ServiceUnavailable", "AccessDenied"])
def test_s3_fault_on_inline_delivery_is_a_clean_503(
    fleet: World, inject: Injector, logs: LogCapture, code: str
) -> None:
    inject.fail(
        clients.s3(fleet.settings),
        "get_object",
        client_error(code, "GetObject", 503 if code != "AccessDenied" else 403),
    )
    assert_clean_503(check(BULB_MAC), logs)
    assert "offer" not in device_item(fleet, BULB_MAC)


def test_a_throttle_from_a_botocore_stubber_is_a_clean_503(fleet: World, logs: LogCapture) -> None:
    client = clients.dynamodb(fleet.settings)
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_item", service_error_code="ProvisionedThroughputExceededException", http_status_code=400
        )
        response = check()
        stub.assert_no_pending_responses()
    assert_clean_503(response, logs)


def test_the_next_check_after_a_fault_is_served(fleet: World, inject: Injector, logs: LogCapture) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "get_item", client_error("ThrottlingException", "GetItem"), times=1)
    assert check()["statusCode"] == 503
    assert check()["statusCode"] == 302


def test_a_deleted_object_behind_a_release_is_a_503_and_no_offer(fleet: World, logs: LogCapture) -> None:
    """Every version of the object is gone (the bucket is versioned, so a plain delete would not do it)."""
    s3 = clients.s3(fleet.settings)
    bucket = fleet.settings.firmware_bucket
    versions = s3.list_object_versions(Bucket=bucket, Prefix="firmware/bulb/1.0.0.bin")
    for entry in [*versions.get("Versions", []), *versions.get("DeleteMarkers", [])]:
        s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    before = device_item(fleet, BULB_MAC)

    response = check(BULB_MAC)

    assert_clean_503(response, logs)
    after = device_item(fleet, BULB_MAC)
    assert "offer" not in after and "offer_count" not in after
    assert after == before, "nothing about the failed check is recorded as offered"
    [error] = logs.levels("ERROR")
    assert error["mac"] == BULB_MAC


def test_an_object_whose_bytes_changed_under_a_release_is_never_served(fleet: World, logs: LogCapture) -> None:
    """The release names one object version; if what comes back is not its bytes, nothing is served."""
    release = fleet.catalog.get_release("bulb", Kind.APP, "1.0.0")
    assert release is not None
    s3 = clients.s3(fleet.settings)
    bucket = fleet.settings.firmware_bucket
    s3.delete_object(Bucket=bucket, Key=release.s3_key, VersionId=release.s3_version_id)
    s3.put_object(Bucket=bucket, Key=release.s3_key, Body=b"\xe9" + b"\x00" * 100)
    assert_clean_503(check(BULB_MAC), logs)


def test_simple_updater_fault_is_a_clean_503(fleet: World, inject: Injector, logs: LogCapture) -> None:
    inject.fail(clients.dynamodb(fleet.settings), "query", client_error("ThrottlingException", "Query"))
    response = invoke(route_event("/firmware/{product}/{channel}", {"product": "bulb", "channel": "stable"}, {}))
    assert_clean_503(response, logs)


# ------------------------------------------------------------------ the publish handler


@pytest.fixture
def shop(world: World) -> World:
    world.product("lamp", "esp8266", delivery=Delivery.REDIRECT)
    return world


def release_items(world: World, version: str) -> list[dict[str, Any]]:
    items = clients.dynamodb(world.settings).scan(TableName=world.settings.catalog_table)["Items"]
    return [i for i in items if i["sk"]["S"].startswith(("R#", "X#")) and i["sk"]["S"].split("#")[2] == version]


def put_upload(world: World, key: str, data: bytes, **metadata: str) -> dict[str, Any]:
    put = clients.s3(world.settings).put_object(
        Bucket=world.settings.firmware_bucket, Key=key, Body=data, Metadata=metadata
    )
    return s3_event(world, key, put.get("VersionId"))


def assert_registered_once(world: World, version: str, data: bytes) -> None:
    [item] = release_items(world, version)
    assert item["sk"]["S"] == f"R#app#{version}"
    release = world.catalog.get_release("lamp", Kind.APP, version)
    assert release is not None and release.state is ReleaseState.REGISTERED
    assert release.sha256 == hashlib.sha256(data).hexdigest() and release.size == len(data)
    assert world.blobs.read_release(release) == data


@pytest.mark.parametrize("name", ["InternalError", "SlowDown", "ReadTimeoutError", "EndpointConnectionError"])
def test_s3_read_fault_during_publish_raises_and_the_retry_registers(shop: World, inject: Injector, name: str) -> None:
    data = build_esp8266_image(sketch_size=2048, seed=21)
    event = put_upload(shop, "firmware/lamp/3.0.0.bin", data)
    error = fault(name, "GetObject") if name in transport_errors() else client_error(name, "GetObject", 503)
    inject.fail(clients.s3(shop.settings), "get_object", error, times=1)

    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.0.0") == []

    result = publish_app.handler(event, None)  # Lambda's retry of the same event
    assert result["results"] == [{"key": "firmware/lamp/3.0.0.bin", "state": "registered", "version": "3.0.0"}]
    assert_registered_once(shop, "3.0.0", data)


class _BrokenBody:
    """A response body that delivers 16 bytes, then times out, as a connection dropping mid-download."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.delivered = False

    def read(self, amt: int | None = None) -> bytes:
        if not self.delivered:
            self.delivered = True
            chunk: bytes = self.body.read(16)
            return chunk
        raise ReadTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com/")

    def close(self) -> None:
        self.body.close()


def test_a_download_cut_off_mid_stream_raises_and_the_retry_registers(
    shop: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = build_esp8266_image(sketch_size=4096, seed=22)
    event = put_upload(shop, "firmware/lamp/3.1.0.bin", data)
    s3 = clients.s3(shop.settings)
    real = s3.get_object
    state = {"calls": 0}

    def cut_once(**kwargs: Any) -> Any:
        response = real(**kwargs)
        state["calls"] += 1
        if state["calls"] == 1:
            response["Body"] = _BrokenBody(response["Body"])
        return response

    monkeypatch.setattr(s3, "get_object", cut_once)
    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.1.0") == [], "a partial download is never registered, not even as rejected"
    publish_app.handler(event, None)
    assert_registered_once(shop, "3.1.0", data)


# The DynamoDB calls of a first registration: the product's read, then the release's conditional put.
@pytest.mark.parametrize(("method", "after"), [("get_item", 0), ("put_item", 0)])
@pytest.mark.parametrize("name", ["ProvisionedThroughputExceededException", "InternalServerError", "ReadTimeoutError"])
def test_dynamodb_fault_during_registration_raises_and_the_retry_registers(
    shop: World, inject: Injector, method: str, after: int, name: str
) -> None:
    data = build_esp8266_image(sketch_size=2048, seed=23)
    event = put_upload(shop, "firmware/lamp/3.2.0.bin", data)
    inject.fail(clients.dynamodb(shop.settings), method, fault(name, method), after=after, times=1)

    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.2.0") == []

    publish_app.handler(event, None)
    assert_registered_once(shop, "3.2.0", data)


def test_a_fault_on_a_repeated_event_changes_nothing_and_the_retry_answers_the_same(
    shop: World, inject: Injector
) -> None:
    """S3 delivers an event twice; the second one's put loses its condition, and then the read of the
    existing release fails: it raises, the registered release stays exactly as it was."""
    data = build_esp8266_image(sketch_size=2048, seed=25)
    event = put_upload(shop, "firmware/lamp/3.5.0.bin", data)
    first = publish_app.handler(event, None)
    before = release_items(shop, "3.5.0")
    # get_item calls of the repeat: the product (1st), the existing release after the lost put (2nd).
    throttle = client_error("ThrottlingException", "GetItem")
    inject.fail(clients.dynamodb(shop.settings), "get_item", throttle, after=1, times=1)
    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.5.0") == before
    assert publish_app.handler(event, None) == first
    assert_registered_once(shop, "3.5.0", data)


def test_a_fault_while_promoting_leaves_nothing_and_the_retry_registers_and_promotes(
    shop: World, inject: Injector
) -> None:
    """Registration and promotion are one transaction: a fault leaves neither, and the retried event
    does both, once."""
    data = build_esp8266_image(sketch_size=2048, seed=24)
    event = put_upload(shop, "firmware/lamp/3.3.0.bin", data, channel="stable")
    inject.fail(
        clients.dynamodb(shop.settings),
        "transact_write_items",
        client_error("ThrottlingException", "TransactWriteItems"),
        times=1,
    )

    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.3.0") == []
    catalog = shop.catalog.load("lamp", fresh=True)
    assert catalog is not None and "stable" not in catalog.channels

    publish_app.handler(event, None)
    assert_registered_once(shop, "3.3.0", data)
    catalog = shop.catalog.load("lamp", fresh=True)
    assert catalog is not None and catalog.channels["stable"].tracks[Kind.APP].version == "3.3.0"
    # The event again (S3 delivers at least once), after an operator paused the channel: nothing moves.
    shop.catalog.set_track_state("lamp", "stable", Kind.APP, "3.3.0", TrackState.PAUSED)
    publish_app.handler(event, None)
    catalog = shop.catalog.load("lamp", fresh=True)
    assert catalog is not None and catalog.channels["stable"].tracks[Kind.APP].state is TrackState.PAUSED


def test_a_fault_while_recording_a_rejection_raises_and_the_retry_records_it(shop: World, inject: Injector) -> None:
    data = b"\xe9" + bytes(200)
    event = put_upload(shop, "firmware/lamp/3.4.0.bin", data)
    inject.fail(clients.dynamodb(shop.settings), "put_item", client_error("ThrottlingException", "PutItem"), times=1)
    with pytest.raises(StorageUnavailable):
        publish_app.handler(event, None)
    assert release_items(shop, "3.4.0") == []
    result = publish_app.handler(event, None)
    assert result["results"][0]["state"] == "rejected"
    [item] = release_items(shop, "3.4.0")
    assert item["sk"]["S"].startswith("X#app#3.4.0#")
    assert shop.catalog.get_release("lamp", Kind.APP, "3.4.0") is None
