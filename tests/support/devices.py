"""Requests shaped exactly like the stock ESP update clients' (esp-http-update.md §1)."""

from __future__ import annotations

import base64
from typing import Any


def esp8266_headers(
    mac: str = "5C:CF:7F:00:00:01",
    *,
    version: str | None = None,
    md5: str | None = None,
    mode: str | None = "sketch",
    free_space: int | str = 1_000_000,
    sketch_size: int = 300_000,
    chip_size: int | str = 4 * 1024 * 1024,
    sdk: str = "2.2.2-dev(38a443e)",
    chip_id: str | None = "1234567",
    auth: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Headers as ESP8266httpUpdate sends them (core ≥ 2.6 unless parts are set to None)."""
    h = {
        "User-Agent": "ESP8266-http-Update",
        "x-ESP8266-STA-MAC": mac,
        "x-ESP8266-AP-MAC": "5E:CF:7F:00:00:01",
        "x-ESP8266-free-space": str(free_space),
        "x-ESP8266-sketch-size": str(sketch_size),
        "x-ESP8266-chip-size": str(chip_size),
        "x-ESP8266-sdk-version": sdk,
        "Connection": "close",
    }
    if mode is not None:
        h["x-ESP8266-mode"] = mode
    if md5 is not None:
        h["x-ESP8266-sketch-md5"] = md5
    if chip_id is not None:
        h["x-ESP8266-Chip-ID"] = chip_id
    if version is not None:
        h["x-ESP8266-version"] = version
    if auth is not None:
        h["Authorization"] = basic(*auth)
    return h


def esp8266_core_2_0_headers(mac: str = "5C:CF:7F:00:00:01") -> dict[str, str]:
    """Core 2.0.0: no mode, no MD5, no chip id, no version."""
    return esp8266_headers(mac, mode=None, chip_id=None)


def esp32_headers(
    mac: str = "24:0A:C4:00:00:01",
    *,
    version: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    mode: str = "sketch",
    free_space: int | str = 1_966_080,
    chip_size: int = 4 * 1024 * 1024,
    auth: tuple[str, str] | None = None,
) -> dict[str, str]:
    h = {
        "User-Agent": "ESP32-http-Update",
        "x-ESP32-STA-MAC": mac,
        "x-ESP32-AP-MAC": mac,
        "x-ESP32-free-space": str(free_space),
        "x-ESP32-sketch-size": "900000",
        "x-ESP32-chip-size": str(chip_size),
        "x-ESP32-sdk-version": "v5.1.4",
        "x-ESP32-mode": mode,
        "Cache-Control": "no-cache",
        "Connection": "close",
    }
    if md5 is not None:
        h["x-ESP32-sketch-md5"] = md5
    if sha256 is not None:
        h["x-ESP32-sketch-sha256"] = sha256.upper()
    if version is not None:
        h["x-ESP32-version"] = version
    if auth is not None:
        h["Authorization"] = basic(*auth)
    return h


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_api_event(
    path: str,
    headers: dict[str, str],
    *,
    query: dict[str, str] | None = None,
    source_ip: str = "203.0.113.7",
    path_parameters: dict[str, str] | None = None,
    route_key: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, headers lower-cased as API Gateway delivers them."""
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if route_key is None:
        parts = path.strip("/").split("/")
        route_key = {
            1: "GET /update",
            2: "GET /update/{product}",
            3: "GET /firmware/{product}/{channel}",
        }[len(parts)]
        names = {2: ["product"], 3: ["product", "channel"]}.get(len(parts), [])
        path_parameters = path_parameters or dict(zip(names, parts[1:], strict=True)) or None
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.0",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": "req",
            "routeKey": route_key,
            "stage": "$default",
            "time": "24/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795000000000,
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event
