"""Requests shaped exactly like the stock ESP update clients' (esp-http-update.md §1)."""

from __future__ import annotations

import base64
from typing import Any, Literal, get_args


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


# arduino-esp32 generations and boards whose identity headers differ (esp-http-update.md §5).
Esp32Core = Literal["1.0.x", "2.x wifi", "2.x ethernet", "3.x wifi", "3.x ethernet", "3.x no-wifi"]
ESP32_CORES: tuple[Esp32Core, ...] = get_args(Esp32Core)
ZERO_MAC = "00:00:00:00:00:00"


def esp32_core_headers(
    core: Esp32Core,
    base_mac: str = "24:0A:C4:00:00:01",
    *,
    md5: str | None = None,
    sha256: str | None = None,
    **kw: Any,
) -> dict[str, str]:
    """Headers as HTTPUpdate of one arduino-esp32 generation sends them from a board whose base MAC is
    `base_mac` (the Wi-Fi station's MAC on ESP32; the AP's is base + 1), per esp-http-update.md §5.
    Other keywords go to esp32_headers."""
    h = esp32_headers(base_mac, md5=None if core == "1.0.x" else md5, sha256=sha256, **kw)  # 1.0.x: no MD5
    ap_mac = f"{base_mac[:-2]}{(int(base_mac[-2:], 16) + 1) % 256:02X}"
    sta, ap, base = {
        "1.0.x": (base_mac, ap_mac, None),
        "2.x wifi": (base_mac, ap_mac, None),
        "2.x ethernet": (base_mac, "", None),  # esp_read_mac for STA; the AP MAC of a Wi-Fi that is off: empty
        "3.x wifi": (base_mac, ZERO_MAC, base_mac),  # the AP interface is not up
        "3.x ethernet": (ZERO_MAC, ZERO_MAC, base_mac),
        "3.x no-wifi": (None, None, base_mac),  # SOC_WIFI_SUPPORTED=0: only the base MAC
    }[core]
    for name, value in (("STA-MAC", sta), ("AP-MAC", ap), ("BASE-MAC", base)):
        h.pop(f"x-ESP32-{name}", None)
        if value is not None:
            h[f"x-ESP32-{name}"] = value
    return h


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# The two fronts a device may reach the update function through (template.yaml: the HTTP API, and the
# function URL of EnableFunctionUrl=true). Both deliver payload format 2.0; they differ in what matched
# the route before the function ran.
Front = Literal["http-api", "function-url"]
FRONTS: tuple[Front, ...] = get_args(Front)
FUNCTION_URL_ID = "abcdefghijklmnopqrstuvwxyz012345"


def http_api_event(
    path: str,
    headers: dict[str, str],
    *,
    query: dict[str, str] | None = None,
    source_ip: str = "203.0.113.7",
    path_parameters: dict[str, str] | None = None,
    route_key: str | None = None,
    front: Front = "http-api",
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, headers lower-cased as API Gateway delivers them.

    front="function-url": the same request as a Lambda function URL delivers it: routeKey `$default`, no
    pathParameters (nothing matched a route: the handler routes by rawPath, which stays as given, so pass
    it percent-encoded the way the device sent it), the lambda-url host, and the forwarded headers Lambda
    adds (HTTPS only, port 443). Headers are lower-cased and the source IP is in requestContext.http the
    same way."""
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if front == "function-url":
        route_key, path_parameters = "$default", None
    elif route_key is None:
        parts = path.strip("/").split("/")
        route_key = {
            1: "GET /update",
            2: "GET /update/{product}",
            3: "GET /firmware/{product}/{channel}",
        }[len(parts)]
        names = {2: ["product"], 3: ["product", "channel"]}.get(len(parts), [])
        path_parameters = path_parameters or dict(zip(names, parts[1:], strict=True)) or None
    lowered = {k.lower(): v for k, v in headers.items()}
    account, api_id, domain = "123456789012", "api", "api.example.com"
    if front == "function-url":
        account, api_id, domain = "anonymous", FUNCTION_URL_ID, f"{FUNCTION_URL_ID}.lambda-url.eu-west-1.on.aws"
        lowered = {
            **lowered,
            "host": domain,
            "x-forwarded-for": source_ip,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": {
            "accountId": account,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
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
