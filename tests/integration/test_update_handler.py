"""The update handler driven with API Gateway HTTP API events against moto, row by row of
esp-http-update.md §2, for both dialects; the answers that matter also through a function URL's events
(EnableFunctionUrl), which the handler must route by rawPath and answer byte for byte the same."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from moto import mock_aws
from moto.moto_api._internal import mock_random

from otafleet.fleet import Fleet
from otafleet.models import AttemptState, Delivery, Kind, TrackState
from otafleet.storage import clients
from support.devices import (
    ESP32_CORES,
    FRONTS,
    ZERO_MAC,
    Esp32Core,
    Front,
    basic,
    esp32_core_headers,
    esp32_headers,
    esp8266_core_2_0_headers,
    esp8266_headers,
    http_api_event,
)
from support.world import World, fake_image
from update import app as update_app

EVENTS = Path(__file__).resolve().parents[2] / "events"
ESP8266 = "5C:CF:7F:00:00:01"
ESP32 = "24:0A:C4:00:00:01"


def call(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = update_app.handler(event, None)
    return response


def body_bytes(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest) -> Front:
    """The front the request comes through: the HTTP API, or the function URL (EnableFunctionUrl)."""
    value: Front = request.param
    return value


@pytest.fixture
def fleet(world: World) -> World:
    """door: ESP8266 product on 1.1.0; cam: ESP32-S3 product on 2.0.0 (hash appended)."""
    return seed(world)


def seed(world: World) -> World:
    world.product("door", "esp8266", delivery=Delivery.INLINE)
    world.release("door", "1.0.0")
    world.release("door", "1.1.0", flash_size_bytes=4 * 1024 * 1024)
    world.channel("door", app="1.1.0")
    world.device(ESP8266, "door")
    cam_image = fake_image("cam-2.0.0", 8192)
    world.product("cam", "esp32s3")
    world.release("cam", "2.0.0", cam_image, chip="esp32s3", appended_sha256=hashlib.sha256(b"x").hexdigest())
    world.channel("cam", app="2.0.0")
    world.device(ESP32, "cam")
    return world


def image_of(world: World, product: str, version: str) -> bytes:
    release = world.catalog.get_release(product, Kind.APP, version)
    assert release is not None
    return world.blobs.read_release(release)


# --- §2 answers, ESP8266 ------------------------------------------------------------------------


def test_inline_200_carries_exact_image_and_md5(fleet: World, front: Front) -> None:
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0"), front=front))
    assert response["statusCode"] == 200
    body = body_bytes(response)
    assert body == image_of(fleet, "door", "1.1.0")
    assert body[0] == 0xE9
    assert header(response, "x-MD5") == hashlib.md5(body).hexdigest()
    assert header(response, "x-MD5") == header(response, "x-MD5").lower()  # type: ignore[union-attr]
    assert header(response, "Content-Type") == "application/octet-stream"
    assert header(response, "Transfer-Encoding") is None


def test_same_version_is_304_with_empty_body(fleet: World, front: Front) -> None:
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.1.0"), front=front))
    assert response["statusCode"] == 304
    assert body_bytes(response) == b""
    assert header(response, "X-Otafleet-Reason") == "up-to-date"


def test_same_md5_is_304(fleet: World) -> None:
    md5 = hashlib.md5(image_of(fleet, "door", "1.1.0")).hexdigest()
    response = call(http_api_event("/update", esp8266_headers(ESP8266, md5=md5)))
    assert response["statusCode"] == 304


def test_core_2_0_request_without_mode_md5_or_version_is_served(fleet: World) -> None:
    response = call(http_api_event("/update", esp8266_core_2_0_headers(ESP8266)))
    assert response["statusCode"] == 200
    assert body_bytes(response) == image_of(fleet, "door", "1.1.0")


def test_header_case_does_not_matter(fleet: World) -> None:
    headers = esp8266_headers(ESP8266, version="1.0.0")
    upper = {k.upper(): v for k, v in headers.items()}
    mixed = {k.swapcase(): v for k, v in headers.items()}
    answers = []
    for variant in (headers, upper, mixed):
        event = http_api_event("/update", {})
        event["headers"] = variant  # as a server that does not lower-case would pass them
        response = call(event)
        answers.append((response["statusCode"], body_bytes(response), header(response, "x-MD5")))
    assert answers[0][0] == 200
    assert answers[0] == answers[1] == answers[2]


def test_redirect_302_is_empty_and_presigned_sigv4_regional(fleet: World, front: Front) -> None:
    query = {"delivery": "redirect"}
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0"), query=query, front=front))
    assert response["statusCode"] == 302
    assert body_bytes(response) == b""
    location = header(response, "Location")
    assert location is not None
    url = urlsplit(location)
    params = parse_qs(url.query)
    assert url.scheme == "https"
    assert url.netloc == "otafleet-firmware.s3.eu-west-1.amazonaws.com"
    assert url.path == "/firmware/door/1.1.0.bin"
    assert params["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert params["X-Amz-Expires"] == ["300"]
    assert "/eu-west-1/s3/aws4_request" in params["X-Amz-Credential"][0]
    release = fleet.catalog.get_release("door", Kind.APP, "1.1.0")
    assert release is not None and release.s3_version_id
    assert params["versionId"] == [release.s3_version_id]


def test_authorization_header_is_never_redirected(fleet: World) -> None:
    headers = esp8266_headers(ESP8266, version="1.0.0", auth=(ESP8266, "whatever"))
    response = call(http_api_event("/update", headers, query={"delivery": "redirect"}))
    assert response["statusCode"] == 200
    assert header(response, "Location") is None


def test_not_enough_free_space_is_304_with_reason_recorded(fleet: World) -> None:
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0", free_space=100)))
    assert response["statusCode"] == 304
    device = fleet.devices.get(ESP8266)
    assert device is not None and device.last_reason == "no-space"


def test_flash_larger_than_chip_is_304(fleet: World) -> None:
    headers = esp8266_headers(ESP8266, version="1.0.0", chip_size=1024 * 1024)
    response = call(http_api_event("/update", headers))
    assert response["statusCode"] == 304
    assert header(response, "X-Otafleet-Reason") == "flash-too-small"


@pytest.mark.parametrize(
    ("headers", "reason_part"),
    [
        ({"User-Agent": "curl/8.0"}, "only ESP8266/ESP32"),
        ({"User-Agent": "ESP8266-http-Update"}, "sta-mac"),
        (esp8266_headers("not-a-mac"), "not a MAC"),
        (esp8266_headers(ESP8266, free_space="-5"), "free-space"),
        (esp8266_headers(ESP8266, free_space="lots"), "free-space"),
        (esp8266_headers(ESP8266, md5="xyz"), "sketch-md5"),
        (esp8266_headers(ESP8266, mode="firmware"), "mode"),
        (esp32_headers(ESP32, free_space="1e6"), "free-space"),
    ],
)
def test_malformed_requests_get_403_with_reason(
    fleet: World, front: Front, headers: dict[str, str], reason_part: str
) -> None:
    response = call(http_api_event("/update", headers, front=front))
    assert response["statusCode"] == 403
    assert reason_part in body_bytes(response).decode()


def test_unknown_device_is_404_and_remembered_unassigned(fleet: World, front: Front) -> None:
    mac = "02:00:00:00:00:99"
    response = call(http_api_event("/update", esp8266_headers(mac.lower().replace(":", "-")), front=front))
    assert response["statusCode"] == 404
    assert f"no firmware assigned to {mac}" in body_bytes(response).decode()
    seen = fleet.devices.get(mac)
    assert seen is not None and not seen.assigned and seen.reported.source_ip == "203.0.113.7"


def test_blocked_device_is_403(fleet: World, front: Front) -> None:
    fleet.device(ESP8266, "door", blocked=True)
    response = call(http_api_event("/update", esp8266_headers(ESP8266), front=front))
    assert response["statusCode"] == 403


def test_enrollment_through_product_path(fleet: World, front: Front) -> None:
    fleet.product("door", "esp8266", delivery=Delivery.INLINE, enroll=True)
    mac = "02:00:00:00:00:42"
    response = call(http_api_event("/update/door", esp8266_headers(mac, version="1.0.0"), front=front))
    assert response["statusCode"] == 200
    device = fleet.devices.get(mac)
    assert device is not None and device.assigned and device.product == "door" and device.channel == "stable"


def test_product_path_without_enrollment_is_404(fleet: World, front: Front) -> None:
    response = call(http_api_event("/update/door", esp8266_headers("02:00:00:00:00:43"), front=front))
    assert response["statusCode"] == 404


def test_version_probe_answers_headers_only(fleet: World) -> None:
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0", mode="version")))
    assert response["statusCode"] == 200
    assert body_bytes(response) == b""
    assert header(response, "x-version") == "1.1.0"
    assert header(response, "x-MD5") == hashlib.md5(image_of(fleet, "door", "1.1.0")).hexdigest()
    device = fleet.devices.get(ESP8266)
    assert device is not None and device.attempts == {}


# --- either front, the same answers (EnableFunctionUrl) ---------------------------------------------

BLOCKED = "5C:CF:7F:00:00:0B"
# The stock clients' requests whose answers no front may change: (status and what it is, path, headers,
# query), replayed in this order into a fresh fleet per front.
REPLAY: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
    ("200 inline", "/update", esp8266_headers(ESP8266, version="1.0.0"), {}),
    ("304 up to date", "/update", esp8266_headers(ESP8266, version="1.1.0"), {}),
    ("304 wrong platform (core 2.0 request)", "/update", esp8266_core_2_0_headers(ESP32), {}),
    ("302 product default", "/update", esp32_headers(ESP32, version="1.9.0"), {}),
    ("302 asked for", "/update", esp8266_headers(ESP8266, version="1.0.0"), {"delivery": "redirect"}),
    ("404 unknown device", "/update", esp8266_headers("02:00:00:00:00:99"), {}),
    ("404 product without enrollment", "/update/door", esp8266_headers("02:00:00:00:00:43"), {}),
    ("403 not an ESP", "/update", {"User-Agent": "curl/8.0"}, {}),
    ("403 malformed", "/update", esp8266_headers(ESP8266, free_space="lots"), {}),
    ("403 blocked", "/update", esp8266_headers(BLOCKED), {}),
    ("200 simple updater", "/firmware/door/stable", {"User-Agent": "curl/8.0"}, {}),
    ("404 simple updater, no release", "/firmware/door/beta", {"User-Agent": "curl/8.0"}, {}),
]
SIGNED_AT = datetime(2026, 11, 24, 12, 0, 0)  # botocore's clock is naive UTC


def replay(front: Front) -> dict[str, tuple[int, dict[str, str], bytes]]:
    """REPLAY's answers through one front, from a fleet of its own: (status, headers, body) by name."""
    mock_random.seed(16)  # the same S3 version ids in both fleets, so the same presigned Locations
    with mock_aws():
        world = seed(World.create())
        world.device(BLOCKED, "door", blocked=True)
        update_app._service = None
        answers = {}
        for name, path, headers, query in REPLAY:
            response = call(http_api_event(path, headers, query=query, front=front))
            answers[name] = (response["statusCode"], response["headers"], body_bytes(response))
        return answers


def test_both_fronts_answer_the_stock_clients_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    # Presigned URLs carry their signing time: one frozen clock makes the two 302s' Locations comparable.
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: SIGNED_AT)
    http_api, function_url = replay("http-api"), replay("function-url")
    assert {name: status for name, (status, _, _) in http_api.items()} == {
        name: int(name.split()[0]) for name, *_ in REPLAY
    }
    for name, *_ in REPLAY:
        assert function_url[name] == http_api[name], name


@pytest.mark.parametrize(
    "path", ["/", "/update/", "/update/door/", "/firmware/door", "/firmware/door/stable/x", "/UPDATE"]
)
def test_a_function_url_path_no_route_takes_is_404(fleet: World, path: str) -> None:
    """API Gateway answers these itself; behind a function URL the handler must, the same way for each."""
    response = call(http_api_event(path, esp8266_headers(ESP8266, version="1.0.0"), front="function-url"))
    assert response["statusCode"] == 404
    assert body_bytes(response) == b"no such route\n"
    device = fleet.devices.get(ESP8266)
    assert device is not None and device.checks == 0  # nothing was checked


def test_a_function_url_product_segment_is_url_decoded(fleet: World) -> None:
    fleet.product("door", "esp8266", delivery=Delivery.INLINE, enroll=True)
    mac = "02:00:00:00:00:44"
    response = call(http_api_event("/update/%64oor", esp8266_headers(mac, version="1.0.0"), front="function-url"))
    assert response["statusCode"] == 200
    device = fleet.devices.get(mac)
    assert device is not None and device.product == "door"


# --- ESP32 dialect --------------------------------------------------------------------------------


def test_esp32_redirect_by_product_default(fleet: World, front: Front) -> None:
    response = call(http_api_event("/update", esp32_headers(ESP32, version="1.9.0"), front=front))
    assert response["statusCode"] == 302
    assert "/firmware/cam/2.0.0.bin" in (header(response, "Location") or "")


def test_esp32_sha256_upper_case_matches_appended_hash(fleet: World) -> None:
    response = call(http_api_event("/update", esp32_headers(ESP32, sha256=hashlib.sha256(b"x").hexdigest())))
    assert response["statusCode"] == 304


def test_esp32_device_never_gets_esp8266_image(fleet: World) -> None:
    fleet.device(ESP32, "door")
    response = call(http_api_event("/update", esp32_headers(ESP32, version="0.1")))
    assert response["statusCode"] == 304
    assert header(response, "X-Otafleet-Reason") == "wrong-platform"


def test_filesystem_mode_targets_fs_release(fleet: World) -> None:
    fs = b"\x00" * 8192
    fleet.release("door", "fs-1", fs, kind=Kind.FS, chip=None)
    fleet.channel("door", app="1.1.0", fs="fs-1")
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.1.0", mode="spiffs")))
    assert response["statusCode"] == 200
    assert body_bytes(response) == fs


def test_no_fs_release_is_304(fleet: World) -> None:
    response = call(http_api_event("/update", esp32_headers(ESP32, mode="littlefs")))
    assert response["statusCode"] == 304


def test_inline_too_large_for_lambda_is_a_clear_304(fleet: World) -> None:
    big = fleet.settings.max_inline_bytes + 1
    fleet.release("door", "9.0.0", fake_image("big", big))
    fleet.channel("door", app="9.0.0")
    response = call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0", free_space=big * 2)))
    assert response["statusCode"] == 304
    assert header(response, "X-Otafleet-Reason") == "too-large-for-inline"


def test_every_check_is_recorded(fleet: World) -> None:
    call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0", free_space=777_777)))
    call(http_api_event("/update", esp8266_headers(ESP8266, version="1.0.0", free_space=777_777)))
    device = fleet.devices.get(ESP8266)
    assert device is not None
    assert device.checks == 2
    assert device.reported.free_space == 777_777
    assert device.reported.version == "1.0.0"
    attempt = device.attempts[Kind.APP]
    assert attempt.version == "1.1.0" and attempt.offers == 2 and attempt.state is AttemptState.OFFERED


# --- ESP32 identity by core generation (esp-http-update.md §5) -------------------------------------

ETH_A = "24:0A:C4:00:00:A0"
ETH_B = "24:0A:C4:00:00:B0"


def log_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The fields of the service's log lines with this message."""
    return [vars(record) for record in caplog.records if record.getMessage() == message]


def stored_macs(world: World) -> set[str]:
    return {device.mac for device, _ in world.devices.scan_seen()}


@pytest.mark.parametrize("core", ESP32_CORES)
def test_every_esp32_generation_is_served_under_its_own_mac(fleet: World, core: Esp32Core) -> None:
    response = call(http_api_event("/update", esp32_core_headers(core, ESP32, version="1.9.0")))
    assert response["statusCode"] == 302, body_bytes(response)
    device = fleet.devices.get(ESP32)
    assert device is not None and device.checks == 1
    assert ZERO_MAC not in stored_macs(fleet)


def test_two_3x_ethernet_boards_are_two_devices_assigned_separately(
    fleet: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Both send STA-MAC and AP-MAC 00:00:00:00:00:00: only BASE-MAC tells them apart.
    for mac in (ETH_A, ETH_B):
        response = call(http_api_event("/update", esp32_core_headers("3.x ethernet", mac, version="1.9.0")))
        assert response["statusCode"] == 404
        assert body_bytes(response).decode().startswith(f"no firmware assigned to {mac}")
    assert {ETH_A, ETH_B} <= stored_macs(fleet) and ZERO_MAC not in stored_macs(fleet)
    assert [line["mac"] for line in log_lines(caplog, "decision")] == [ETH_A, ETH_B]

    fleet.release("cam", "2.1.0", fake_image("cam-2.1.0", 8192), chip="esp32s3")
    fleet.channel("cam", "beta", app="2.1.0")
    operator = Fleet(fleet.devices, fleet.catalog)
    operator.assign(ETH_A, "cam")
    operator.assign(ETH_B, "cam", "beta")
    answers = {}
    for mac in (ETH_A, ETH_B):
        response = call(http_api_event("/update", esp32_core_headers("3.x ethernet", mac, version="1.9.0")))
        answers[mac] = (response["statusCode"], header(response, "Location") or "")
    assert answers[ETH_A][0] == answers[ETH_B][0] == 302
    assert "/firmware/cam/2.0.0.bin" in answers[ETH_A][1] and "/firmware/cam/2.1.0.bin" in answers[ETH_B][1]
    a, b = fleet.devices.get(ETH_A), fleet.devices.get(ETH_B)
    assert a is not None and b is not None
    assert (a.channel, a.checks, a.attempts[Kind.APP].version) == ("stable", 2, "2.0.0")
    assert (b.channel, b.checks, b.attempts[Kind.APP].version) == ("beta", 2, "2.1.0")
    assert ZERO_MAC not in stored_macs(fleet)


def test_ethernet_boards_enroll_as_separate_devices(fleet: World) -> None:
    fleet.product("cam", "esp32s3", enroll=True)
    for mac in (ETH_A, ETH_B):
        response = call(http_api_event("/update/cam", esp32_core_headers("3.x ethernet", mac, version="1.9.0")))
        assert response["statusCode"] == 302
    for mac in (ETH_A, ETH_B):
        device = fleet.devices.get(mac)
        assert device is not None and device.assigned and device.product == "cam"
    assert ZERO_MAC not in stored_macs(fleet)


def test_an_ethernet_board_authenticates_with_its_base_mac(fleet: World) -> None:
    fleet.product("cam", "esp32s3", auth_required=True)
    operator = Fleet(fleet.devices, fleet.catalog)
    operator.assign(ETH_A, "cam")
    _, secret = operator.issue_credentials(ETH_A)
    user = ETH_A.replace(":", "")
    ok = call(
        http_api_event("/update", esp32_core_headers("3.x ethernet", ETH_A, version="1.9.0", auth=(user, secret)))
    )
    assert ok["statusCode"] == 200  # a device that authenticates gets inline delivery
    zero = call(
        http_api_event(
            "/update", esp32_core_headers("3.x ethernet", ETH_A, version="1.9.0", auth=("000000000000", secret))
        )
    )
    assert zero["statusCode"] == 401


def test_zero_sta_mac_without_base_mac_is_refused_with_reason(fleet: World, caplog: pytest.LogCaptureFixture) -> None:
    headers = esp32_core_headers("3.x ethernet", ETH_A)
    del headers["x-ESP32-BASE-MAC"]
    response = call(http_api_event("/update", headers))
    assert response["statusCode"] == 403
    reason = body_bytes(response).decode()
    assert "x-esp32-sta-mac (or x-esp32-base-mac) is required" in reason and ZERO_MAC in reason
    [refused] = log_lines(caplog, "refused")
    assert refused["status"] == 403 and ZERO_MAC in refused["reason"]
    assert ZERO_MAC not in stored_macs(fleet)


# --- the simple updater ---------------------------------------------------------------------------


def test_simple_updater_serves_channel_release(fleet: World, front: Front) -> None:
    response = call(http_api_event("/firmware/door/stable", {"User-Agent": "curl/8.0"}, front=front))
    assert response["statusCode"] == 200
    assert body_bytes(response) == image_of(fleet, "door", "1.1.0")


@pytest.mark.parametrize(
    "track",
    [
        {"percent": 5},
        {"state": TrackState.HALTED},
        {"state": TrackState.PAUSED},
        {"min_devices": 10},  # with 9 failures in 10 below: over its threshold, halted for every reader
    ],
)
def test_simple_updater_serves_what_the_whole_channel_runs_never_a_rollout(fleet: World, track: dict[str, Any]) -> None:
    """Case 12: a staged, paused or halted release is not what 100 % of the channel runs."""
    fleet.channel("door", app="1.1.0", previous="1.0.0", **track)
    if "min_devices" in track:
        clients.dynamodb(fleet.settings).update_item(
            TableName=fleet.settings.catalog_table,
            Key={"pk": {"S": "P#door"}, "sk": {"S": "C#stable"}},
            UpdateExpression="ADD #ok :ok, #fail :fail",
            ExpressionAttributeNames={"#ok": "ok#app#1.1.0", "#fail": "fail#app#1.1.0"},
            ExpressionAttributeValues={":ok": {"N": "1"}, ":fail": {"N": "9"}},
        )
    response = call(http_api_event("/firmware/door/stable", {"User-Agent": "curl/8.0"}))
    assert response["statusCode"] == 200
    assert body_bytes(response) == image_of(fleet, "door", "1.0.0")


def test_simple_updater_of_an_auth_product_needs_a_devices_credentials(fleet: World) -> None:
    """Case 12: firmware of a product that requires authentication never downloads without it."""
    fleet.product("door", "esp8266", delivery=Delivery.INLINE, auth_required=True)
    _, secret = Fleet(fleet.devices, fleet.catalog).issue_credentials(ESP8266)
    route = "/firmware/door/stable"
    assert call(http_api_event(route, {"User-Agent": "curl/8.0"}))["statusCode"] == 401
    wrong = {"User-Agent": "curl/8.0", "Authorization": basic(ESP8266, secret + "x")}
    assert call(http_api_event(route, wrong))["statusCode"] == 401
    other = {"User-Agent": "curl/8.0", "Authorization": basic("5C:CF:7F:00:99:99", secret)}
    assert call(http_api_event(route, other))["statusCode"] == 401
    right = {"User-Agent": "curl/8.0", "Authorization": basic(ESP8266.replace(":", ""), secret)}
    response = call(http_api_event(route, right))
    assert response["statusCode"] == 200 and body_bytes(response) == image_of(fleet, "door", "1.1.0")


def test_simple_updater_404_without_release(fleet: World, front: Front) -> None:
    response = call(http_api_event("/firmware/door/beta", {"User-Agent": "curl/8.0"}, front=front))
    assert response["statusCode"] == 404


# --- events/ ----------------------------------------------------------------------------------------


def test_sample_events_get_deliberate_answers(fleet: World) -> None:
    answers = {}
    for path in sorted(EVENTS.glob("update_*.json")) + sorted(EVENTS.glob("firmware_*.json")):
        answers[path.name] = call(json.loads(path.read_text()))["statusCode"]
    assert answers, "events/ has no sample events"
    assert answers.get("update_not_esp.json", 403) == 403
    assert answers.get("update_unknown_device.json", 404) == 404
    assert all(status in (200, 302, 304, 401, 403, 404) for status in answers.values()), answers
