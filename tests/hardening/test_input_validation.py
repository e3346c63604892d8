"""Hostile input at every door: names (product, channel, version) as they arrive in URL paths and S3 keys,
header values, query parameters. Each refusal is a deliberate 4xx with a reason; nothing reaches a key,
a log line or a 5xx."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from hardening.helpers import (
    CAM_MAC,
    DEVICE_STATUSES,
    DOOR_MAC,
    LAMP_MAC,
    body_bytes,
    fuzz_settings,
    header,
    invoke,
    route_event,
    s3_event,
)
from hypothesis import given
from hypothesis import strategies as st

from otafleet import names
from otafleet.ingest import BadKey, parse_key
from otafleet.models import Kind
from otafleet.protocol import MAX_HEADER_VALUE
from otafleet.storage import clients
from otafleet_local.sample_images import build_esp8266_image
from publish import app as publish_app
from support.devices import basic, esp32_headers, esp8266_headers
from support.world import World

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "...",
    "a..b",
    "../etc",
    "..%2F..%2Fetc",
    "%2F",
    "a%2Fb",
    "%2e%2e",
    "a/b",
    "a\\b",
    "door\n",
    "door\r\n",
    "do\x00or",
    "do\x1bor",
    "do\x7for",
    "\tdoor",
    " door",
    "door ",
    "x" * 65,
    "x" * 300,
    "x" * 5000,
    "dör",
    "ドア",
    "door\u202e",
    "ｄｏｏｒ",  # noqa: RUF001 - fullwidth letters, on purpose
    "door\u200b",
    "-door",
    "_door",
    "DOOR",
    "door?x=1",
    "door#x",
    "door;rm",
    "P#door",
    "door\ud7ff",
]
VALID = {
    names.product: ["door", "a", "d00r-2_x", "x" * 64],
    names.channel: ["stable", "beta-2", "x" * 32],
    names.version: ["1.0.0", "v2.3.4-rc.1+build.5", "1.0.0-12-gdeadbee", "2026_11~1", "x" * 64],
}
# What a name may contain once accepted: nothing that changes an S3 key's meaning or a DynamoDB key's.
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")


# ------------------------------------------------------------------ the rules themselves


REFUSALS = [
    pytest.param(check, value, id=f"{kind}-{i}")
    for kind, check in (("product", names.product), ("channel", names.channel), ("version", names.version))
    for i, value in enumerate(HOSTILE_NAMES)
    if not (check is names.version and value == "DOOR")  # upper case is fine in a version
]


@pytest.mark.parametrize(("check", "value"), REFUSALS)
def test_hostile_names_are_refused_with_a_bounded_reason(check: Any, value: str) -> None:
    with pytest.raises(names.InvalidName) as refused:
        check(value)
    message = str(refused.value)
    assert message.startswith("invalid ") and len(message) < 250
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in message), "control characters escaped in the reason"


@pytest.mark.parametrize("check", list(VALID), ids=["product", "channel", "version"])
def test_valid_names_pass_unchanged(check: Any) -> None:
    for value in VALID[check]:
        assert check(value) == value


@given(st.text(max_size=80) | st.from_regex(r"[a-z0-9][a-z0-9._+~/\\-]{0,70}", fullmatch=True))
@fuzz_settings("names")
def test_every_accepted_name_is_safe_in_keys(value: str) -> None:
    for check, limit in ((names.product, 64), (names.channel, 32), (names.version, 64)):
        try:
            accepted = check(value)
        except names.InvalidName:
            continue
        assert SAFE.fullmatch(accepted), accepted
        assert ".." not in accepted and "/" not in accepted and len(accepted) <= limit


@pytest.mark.parametrize(
    "key",
    [
        "firmware/door/1.0.0\n.bin",
        "firmware/door\n/1.0.0.bin",
        "firmware/door/../1.0.0.bin",
        "firmware/../door/1.0.0.bin",
        "firmware/door/..bin",
        "firmware/door/1..0.bin",
        "firmware/door/1.0.0\x00.bin",
        "firmware/Door/1.0.0.bin",
        "firmware/door/" + "9" * 65 + ".bin",
        "firmware/door/sub/1.0.0.bin",
        "firmware/door/1.0.0.bin.exe",
        "filesystem/door/fs 1.bin",
    ],
)
def test_hostile_object_keys_are_refused(key: str) -> None:
    with pytest.raises(BadKey):
        parse_key(key)


def test_a_key_with_a_newline_never_becomes_a_release(shared: World) -> None:
    """Before names used fullmatch, `firmware/door/1.0.0\\n.bin` registered version "1.0.0\\n"."""
    key = "firmware/door/9.9.9\n.bin"
    put = clients.s3(shared.settings).put_object(Bucket=shared.settings.firmware_bucket, Key=key, Body=b"\xe9")
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": shared.settings.firmware_bucket},
            "object": {"key": quote(key, safe="/"), "versionId": put.get("VersionId"), "size": 1},
        },
    }
    result = publish_app.handler({"Records": [record]}, None)
    assert result["results"] == [{"key": key, "state": "ignored", "version": None}]
    items = clients.dynamodb(shared.settings).scan(TableName=shared.settings.catalog_table)["Items"]
    assert not [i for i in items if "9.9.9" in i["sk"]["S"]]


@pytest.mark.parametrize("version", ["2.1.0+build.7", "2.1.0~rc1", "2.1.0-rc.1+sha.5114f85"])
def test_versions_with_encoded_characters_register(shared: World, version: str) -> None:
    """S3 sends `+` as %2B and `~` as %7E in event keys; the publish handler must decode them."""
    key = f"firmware/lamp/{version}.bin"
    image = build_esp8266_image(sketch_size=2048, seed=41)
    put = clients.s3(shared.settings).put_object(Bucket=shared.settings.firmware_bucket, Key=key, Body=image)
    result = publish_app.handler(s3_event(shared, key, put.get("VersionId")), None)
    assert result["results"] == [{"key": key, "state": "registered", "version": version}]
    release = shared.catalog.get_release("lamp", Kind.APP, version)
    assert release is not None and release.s3_key == key
    assert shared.blobs.read_release(release) == image


# ------------------------------------------------------------------ hostile path values on the routes


def path_values() -> list[str]:
    # What can arrive as one path segment: no raw "/" (API Gateway would not match the route), but
    # encoded ones, dots, long, non-ASCII and control characters.
    return [v for v in HOSTILE_NAMES if v and "/" not in v] + ["%00", "%0A", "%252F", "..%00"]


def assert_refused_with_reason(response: dict[str, Any]) -> None:
    status = response["statusCode"]
    assert 400 <= status < 500, (status, body_bytes(response)[:200])
    body = body_bytes(response)
    assert body, "a refusal says why"
    assert len(body) < 400, "a refusal does not echo unbounded input"
    text = body.decode("utf-8")
    assert not any(ord(c) < 0x20 and c != "\n" for c in text), text
    assert b"Traceback" not in body


@pytest.mark.parametrize("value", path_values(), ids=range(len(path_values())))
def test_update_route_refuses_hostile_products(shared: World, value: str) -> None:
    for headers in (esp8266_headers("5C:CF:7F:AA:AA:AA"), esp8266_headers(LAMP_MAC), esp32_headers(CAM_MAC)):
        response = invoke(
            route_event("/update/{product}", {"product": value}, {k.lower(): v for k, v in headers.items()})
        )
        assert_refused_with_reason(response)
        assert response["statusCode"] == 404
        assert header(response, "X-Otafleet-Reason") == "bad-request"
        assert "invalid product name" in body_bytes(response).decode()


@pytest.mark.parametrize("value", path_values(), ids=range(len(path_values())))
def test_firmware_route_refuses_hostile_products_and_channels(shared: World, value: str) -> None:
    for params in ({"product": value, "channel": "stable"}, {"product": "lamp", "channel": value}):
        response = invoke(route_event("/firmware/{product}/{channel}", params, {}))
        assert_refused_with_reason(response)
        assert response["statusCode"] == 404
        assert header(response, "X-Otafleet-Reason") == "invalid-name"


def test_valid_names_still_reach_the_service(shared: World) -> None:
    assert (
        invoke(route_event("/firmware/{product}/{channel}", {"product": "lamp", "channel": "stable"}, {}))["statusCode"]
        == 302
    )
    assert (
        invoke(route_event("/firmware/{product}/{channel}", {"product": "lamp", "channel": "beta"}, {}))["statusCode"]
        == 404
    )
    lamp = {k.lower(): v for k, v in esp8266_headers(LAMP_MAC).items()}
    assert invoke(route_event("/update/{product}", {"product": "lamp"}, lamp))["statusCode"] == 302


def test_a_non_esp_client_is_told_so_before_the_path_is_judged(shared: World) -> None:
    response = invoke(route_event("/update/{product}", {"product": ".."}, {"user-agent": "curl/8"}))
    assert response["statusCode"] == 403
    assert b"only ESP8266/ESP32" in body_bytes(response)


# ------------------------------------------------------------------ header values


@pytest.mark.parametrize(
    "name", ["STA-MAC", "AP-MAC", "free-space", "sketch-size", "chip-size", "sdk-version", "mode", "sketch-md5",
             "Chip-ID", "version"],
)  # fmt: skip
@pytest.mark.parametrize(
    "value",
    ["x" * (MAX_HEADER_VALUE + 1), "1.0\x00", "1.0\n", "\x1b[31mred", "ünïcode", "1" * 5000],
    ids=["oversize", "nul", "newline", "escape", "non-ascii", "huge"],
)
def test_device_header_values_are_bounded_and_printable(shared: World, name: str, value: str) -> None:
    headers = {k.lower(): v for k, v in esp8266_headers(LAMP_MAC).items()}
    headers[f"x-esp8266-{name.lower()}"] = value
    response = invoke(route_event("/update", {}, headers))
    assert_refused_with_reason(response)
    assert response["statusCode"] == 403
    assert f"x-esp8266-{name.lower()}" in body_bytes(response).decode().lower()


def test_an_oversize_authorization_header_is_refused(shared: World) -> None:
    headers = {k.lower(): v for k, v in esp8266_headers(DOOR_MAC).items()}
    headers["authorization"] = "Basic " + "A" * 2000
    response = invoke(route_event("/update", {}, headers))
    assert_refused_with_reason(response)
    assert response["statusCode"] == 403


@pytest.mark.parametrize(
    "authorization",
    ["Basic é", "Basic QUJDé==", "Basic " + basic(DOOR_MAC, "x")[6:] + "ü", "Bearer é", "Basic \x00", "Basic"],
)
def test_a_garbled_authorization_header_is_a_401_not_a_crash(shared: World, authorization: str) -> None:
    """base64 refuses non-ASCII text with a plain ValueError, which used to escape as a 503."""
    headers = {k.lower(): v for k, v in esp8266_headers(DOOR_MAC).items()}
    headers["authorization"] = authorization
    response = invoke(route_event("/update", {}, headers))
    assert response["statusCode"] == 401
    assert header(response, "WWW-Authenticate") is not None


def test_other_headers_of_any_size_are_ignored(shared: World) -> None:
    # A lamp of its own: the shared lamp's attempt has ended in earlier tests (it reports no evidence).
    shared.device("5C:CF:7F:00:0B:01", "lamp")
    headers = {k.lower(): v for k, v in esp8266_headers("5C:CF:7F:00:0B:01").items()}
    headers["x-something-else"] = "y" * 8000
    headers["cookie"] = "\x01" * 100
    assert invoke(route_event("/update", {}, headers))["statusCode"] == 302


def test_a_huge_user_agent_is_simply_not_an_esp(shared: World) -> None:
    response = invoke(route_event("/update", {}, {"user-agent": "ESP8266-http-Update" * 1000}))
    assert response["statusCode"] == 403
    assert len(body_bytes(response)) < 200


# ------------------------------------------------------------------ query parameters


@pytest.mark.parametrize("value", ["", "INLINE ", "inline,redirect", "../inline", "x" * 3000, "inline\x00", "ïnline"])
def test_invalid_delivery_parameter_is_refused(shared: World, value: str) -> None:
    headers = {k.lower(): v for k, v in esp8266_headers(LAMP_MAC).items()}
    response = invoke(route_event("/update", {}, headers, query={"delivery": value}))
    assert_refused_with_reason(response)
    assert response["statusCode"] == 403
    assert "delivery" in body_bytes(response).decode()


def test_delivery_parameter_is_honoured_and_other_parameters_ignored(shared: World) -> None:
    shared.device("5C:CF:7F:00:0B:02", "lamp")
    headers = {k.lower(): v for k, v in esp8266_headers("5C:CF:7F:00:0B:02").items()}
    inline = invoke(route_event("/update", {}, headers, query={"delivery": "inline", "token": "\x00" * 3000}))
    assert inline["statusCode"] == 200
    assert header(inline, "x-MD5") is not None


def test_every_refusal_is_a_device_status(shared: World) -> None:
    """The statuses used above are all ones the stock clients understand (esp-http-update.md §2)."""
    headers = {k.lower(): v for k, v in esp8266_headers(LAMP_MAC).items()}
    for event in (
        route_event("/update/{product}", {"product": "x" * 300}, headers),
        route_event("/update", {}, headers, query={"delivery": "x"}),
        route_event("/update", {}, {**headers, "x-esp8266-free-space": "-1"}),
        route_event("/firmware/{product}/{channel}", {"product": "..", "channel": ".."}, {}),
    ):
        assert invoke(event)["statusCode"] in DEVICE_STATUSES
