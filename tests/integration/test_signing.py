"""Signed products end to end under moto: the publish handler verifies, the update handler refuses unsigned
offers to devices on a signed build, and x-MD5 stays that of the exact bytes served."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from otafleet import signatures
from otafleet.models import Delivery, Kind, ProductKey, ReleaseState
from otafleet.storage import clients
from publish import app as publish_app
from support.devices import esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

FIXTURES = Path(__file__).parents[1] / "fixtures" / "signing"
MAC = "5C:CF:7F:00:00:01"


@pytest.fixture(autouse=True)
def fresh_handlers() -> Iterator[None]:
    publish_app._ingest = None
    update_app._service = None
    yield
    publish_app._ingest = None
    update_app._service = None


def product_key(name: str) -> ProductKey:
    facts = signatures.read_key((FIXTURES / f"pub-{name}.pem").read_bytes(), "esp8266")
    return ProductKey(name, facts.fingerprint, facts.algorithm, facts.pem, sbv2_digest=facts.sbv2_digest)


@pytest.fixture
def door(world: World) -> World:
    world.product("door", "esp8266", delivery=Delivery.INLINE, keys=(product_key("rsa2048-a"),))
    return world


def publish(world: World, key: str, data: bytes) -> str:
    s3 = clients.s3(world.settings)
    put = s3.put_object(Bucket=world.settings.firmware_bucket, Key=key, Body=data)
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": world.settings.firmware_bucket},
            "object": {"key": key, "versionId": put.get("VersionId"), "size": len(data)},
        },
    }
    result = publish_app.handler({"Records": [record]}, None)
    state: str = result["results"][0]["state"]
    return state


def test_signed_upload_registers_with_its_key_and_unsigned_is_refused(door: World) -> None:
    signed = (FIXTURES / "esp8266-signed-a.bin").read_bytes()
    assert publish(door, "firmware/door/2.0.0.bin", signed) == "registered"
    release = door.catalog.get_release("door", Kind.APP, "2.0.0")
    assert release is not None and release.signature_scheme == "esp8266-rsa-pkcs1v15-sha256"
    assert release.signed_by == (product_key("rsa2048-a").fingerprint,)
    assert release.md5 == hashlib.md5(signed).hexdigest()  # the exact bytes, signature included

    assert publish(door, "firmware/door/2.0.1.bin", (FIXTURES / "esp8266-unsigned.bin").read_bytes()) == "rejected"
    assert publish(door, "firmware/door/2.0.2.bin", (FIXTURES / "esp8266-signed-b.bin").read_bytes()) == "rejected"
    reasons = [r.reason or "" for r in door.catalog.load("door", fresh=True).releases.values()]  # type: ignore[union-attr]
    assert reasons == [""]  # rejections are kept apart from releases
    rejected = door.catalog.upload_status(
        "door", Kind.APP, "2.0.2", hashlib.sha256((FIXTURES / "esp8266-signed-b.bin").read_bytes()).hexdigest()
    )
    assert rejected is not None and rejected.state is ReleaseState.REJECTED
    assert "none of the product's keys" in (rejected.reason or "")


def test_device_on_a_signed_build_is_never_offered_an_unsigned_release(door: World) -> None:
    signed = (FIXTURES / "esp8266-signed-a.bin").read_bytes()
    assert publish(door, "firmware/door/2.0.0.bin", signed) == "registered"
    # 1.9.0: an unsigned release from before the product was signed (registered directly).
    door.release("door", "1.9.0")
    door.release("door", "2.1.0")
    door.device(MAC, "door")

    # The migration: a device on the unsigned 1.9.0 is offered the first signed release, x-MD5 inline.
    door.channel("door", app="2.0.0")
    response = update_app.handler(http_api_event("/update", esp8266_headers(version="1.9.0")), None)
    assert response["statusCode"] == 200
    assert base64.b64decode(response["body"]) == signed
    assert response["headers"]["x-MD5"] == hashlib.md5(signed).hexdigest()

    # Once it runs the signed 2.0.0, an unsigned 2.1.0 is refused with a reason.
    door.channel("door", app="2.1.0")
    response = update_app.handler(http_api_event("/update", esp8266_headers(version="2.0.0")), None)
    assert response["statusCode"] == 304
    assert response["headers"]["X-Otafleet-Reason"] == "unsigned-offer"


def test_release_records_survive_storage(door: World) -> None:
    assert publish(door, "firmware/door/2.0.0.bin", (FIXTURES / "esp8266-signed-a.bin").read_bytes()) == "registered"
    product = door.catalog.get_product("door")
    assert product is not None and product.keys == (product_key("rsa2048-a"),)
    release = door.catalog.get_release("door", Kind.APP, "2.0.0")
    assert release is not None and replace(release, trusts=()) == release
