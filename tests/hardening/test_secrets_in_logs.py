"""Secrets never reach the logs: device secrets, Authorization values and presigned URLs (their signature
above all) stay out of everything the functions write, at any log level the template allows.

Every check below runs with the Powertools logger at DEBUG and the standard root logger at INFO, and the
whole output (Powertools JSON lines, standard log records, stdout and stderr with the metrics) is scanned.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hardening.helpers import (
    CAM_MAC,
    DOOR_MAC,
    DOOR_SECRET,
    LAMP_MAC,
    LogCapture,
    header,
    invoke,
    route_event,
)

from otafleet import credentials
from otafleet.observability import logger
from otafleet.storage import clients
from support.devices import basic, esp32_headers, esp8266_headers
from support.world import World


@pytest.fixture
def verbose(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    log = logger()
    level = log.log_level
    log.setLevel("DEBUG")
    caplog.set_level(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(level)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def secrets_in(text: str, needles: dict[str, str]) -> list[str]:
    found = [name for name, needle in needles.items() if needle and needle in text]
    found += [
        f"{name} (URL-encoded)"
        for name, needle in needles.items()
        if needle and unquote(needle) != needle and unquote(needle) in text
    ]
    return found


def presign_needles(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query)
    return {
        "presigned URL": url,
        "presigned URL query": urlsplit(url).query,
        "X-Amz-Signature value": query["X-Amz-Signature"][0],
        "X-Amz-Credential value": query["X-Amz-Credential"][0],
    }


def test_checks_with_basic_auth_log_no_secret(seeded: World, logs: LogCapture, verbose: None) -> None:
    good = basic(DOOR_MAC, DOOR_SECRET)
    wrong = basic(DOOR_MAC, DOOR_SECRET[::-1])
    other_device = basic(LAMP_MAC, DOOR_SECRET)
    sent = {"good": good, "wrong": wrong, "other": other_device, "garbled": "Basic " + DOOR_SECRET + "é"}
    statuses = []
    for authorization in sent.values():
        for version in ("1.0.0", "1.1.0"):  # an offer (inline, as the device authenticates) and a 304
            headers = lower(esp8266_headers(DOOR_MAC, version=version))
            headers["authorization"] = authorization
            statuses.append(invoke(route_event("/update", {}, headers))["statusCode"])
        # and refused for another reason while carrying the secret
        bad = lower(esp8266_headers(DOOR_MAC, free_space="lots"))
        bad["authorization"] = authorization
        statuses.append(invoke(route_event("/update/{product}", {"product": "door"}, bad))["statusCode"])
    assert statuses[:3] == [200, 304, 403] and 401 in statuses

    text = logs.text()
    assert "decision" in text and "refused" in text, "the checks were logged at all"
    needles = {
        "device secret": DOOR_SECRET,
        "secret hash": credentials.hash_secret(DOOR_SECRET),
        **{f"Authorization ({name})": value for name, value in sent.items()},
        **{f"Authorization token ({name})": value.split(" ", 1)[1] for name, value in sent.items()},
    }
    assert secrets_in(text, needles) == []
    assert "authorization" not in text.lower() or "Authorization header" in text


def test_redirects_log_no_presigned_url(seeded: World, logs: LogCapture, verbose: None) -> None:
    locations = []
    for headers in (lower(esp8266_headers(LAMP_MAC, version="1.0.0")), lower(esp32_headers(CAM_MAC, version="1.0.0"))):
        response = invoke(route_event("/update", {}, headers))
        assert response["statusCode"] == 302
        locations.append(header(response, "Location"))
    simple = invoke(route_event("/firmware/{product}/{channel}", {"product": "lamp", "channel": "stable"}, {}))
    assert simple["statusCode"] == 302
    locations.append(header(simple, "Location"))

    text = logs.text()
    assert "decision" in text
    for location in locations:
        assert location is not None and "X-Amz-Signature=" in location
        assert secrets_in(text, presign_needles(location)) == []
    assert "X-Amz-Signature" not in text and "x-amz-signature" not in text.lower()
    assert "X-Amz-Credential" not in text


def test_the_fault_path_logs_no_secret_either(
    seeded: World, logs: LogCapture, verbose: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    def throttled(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")

    monkeypatch.setattr(clients.dynamodb(seeded.settings), "update_item", throttled)
    headers = lower(esp8266_headers(DOOR_MAC, version="1.0.0"))
    headers["authorization"] = basic(DOOR_MAC, DOOR_SECRET)
    assert invoke(route_event("/update", {}, headers))["statusCode"] == 503
    headers = lower(esp8266_headers(LAMP_MAC, version="1.0.0"))
    assert invoke(route_event("/update", {}, headers))["statusCode"] == 503

    text = logs.text()
    assert "storage unavailable" in text
    token = base64.b64encode(f"{DOOR_MAC}:{DOOR_SECRET}".encode()).decode()
    assert secrets_in(text, {"device secret": DOOR_SECRET, "Authorization token": token}) == []
    assert "X-Amz-Signature" not in text


def test_the_unexpected_error_path_logs_no_secret(
    seeded: World, logs: LogCapture, verbose: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the catch-all (a bug, logged with its traceback) does not carry the request's headers."""
    from otafleet.service import UpdateService

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(UpdateService, "check", broken)
    headers = lower(esp8266_headers(DOOR_MAC, version="1.0.0"))
    headers["authorization"] = basic(DOOR_MAC, DOOR_SECRET)
    response = invoke(route_event("/update", {}, headers))
    assert response["statusCode"] == 503
    text = logs.text()
    assert "unhandled error" in text and "a bug" in text
    token = headers["authorization"].split(" ", 1)[1]
    assert secrets_in(text, {"device secret": DOOR_SECRET, "Authorization token": token}) == []


def test_every_line_carries_the_request_ids_and_the_cold_start_flag(
    world: World, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions can be joined with API Gateway's access log by its request id."""
    from otafleet import observability
    from update import app as update_app

    monkeypatch.setattr(observability, "_cold", True)
    world.product("lamp", "esp8266")
    monkeypatch.setattr(update_app, "_service", None)
    headers = {k.lower(): v for k, v in esp8266_headers(LAMP_MAC).items()}
    context = type("Context", (), {"aws_request_id": "lambda-1"})()
    for request_id in ("req-a", "req-b"):
        event = route_event("/update", {}, headers)
        event["requestContext"]["requestId"] = request_id
        update_app.handler(event, context)
    decisions = [r for r in logs.records() if r.get("message") == "decision"]
    assert [(r["correlation_id"], r["cold_start"]) for r in decisions] == [("req-a", True), ("req-b", False)]
    assert all(r["lambda_request_id"] == "lambda-1" for r in decisions)
