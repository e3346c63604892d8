"""Fuzzing the update handler: arbitrary header sets, values, casings, paths and query strings, as API
Gateway payload-2.0 events, against a seeded world on moto. Whatever arrives, the answer is one of the
statuses the stock clients understand (esp-http-update.md §2), never a 5xx and never a traceback.

Budgets (examples per property) are in hardening.helpers.BUDGETS; HYPOTHESIS_PROFILE=long raises them.
"""

from __future__ import annotations

import string
from typing import Any

from hardening.helpers import (
    CAM_MAC,
    DEVICE_STATUSES,
    DOOR_MAC,
    DOOR_SECRET,
    KNOWN_MACS,
    LAMP_MAC,
    PRODUCTS,
    UNKNOWN_MAC,
    LogCapture,
    body_bytes,
    fuzz_settings,
    invoke,
    route_event,
)
from hypothesis import event, given, note
from hypothesis import strategies as st

from support.devices import basic, esp32_headers, esp8266_headers
from support.world import World

SUFFIXES = (
    "STA-MAC",
    "AP-MAC",
    "BASE-MAC",
    "free-space",
    "sketch-size",
    "chip-size",
    "sdk-version",
    "mode",
    "sketch-md5",
    "sketch-sha256",
    "Chip-ID",
    "version",
)
OTHER_HEADERS = ("User-Agent", "Authorization", "X-Forwarded-Proto", "CloudFront-Forwarded-Proto", "Connection")

# Values: mostly plausible, sometimes hostile. st.text() covers unicode, controls, NUL and long strings.
hostile_text = st.text(max_size=300) | st.text(alphabet=string.printable, max_size=40) | st.just("x" * 2000)
mac_like = st.sampled_from([*KNOWN_MACS, UNKNOWN_MAC, "5ccf7f000001", "5C-CF-7F-00-00-02", "AA:BB:CC:DD:EE"])
digits = st.integers(min_value=-5, max_value=2**64).map(str)
hex_digest = st.sampled_from(["", "0" * 32, "F" * 64, "g" * 32]) | st.text(
    alphabet="0123456789abcdefABCDEF", max_size=70
)
plausible = {
    "STA-MAC": mac_like,
    "AP-MAC": mac_like,
    "BASE-MAC": mac_like,
    "free-space": digits,
    "sketch-size": digits,
    "chip-size": digits,
    "sdk-version": st.sampled_from(["2.2.2-dev(38a443e)", "v5.1.4", ""]),
    "mode": st.sampled_from(["sketch", "spiffs", "littlefs", "fatfs", "flashfs", "version", "SKETCH", "", "x"]),
    "sketch-md5": hex_digest,
    "sketch-sha256": hex_digest,
    "Chip-ID": digits,
    "version": st.sampled_from(["1.0.0", "1.1.0", "2.0.0", "3.0.0", "0.0.1", "9.9.9-rc.1"]),
}
authorization = st.sampled_from(
    [
        basic(DOOR_MAC, DOOR_SECRET),
        basic(DOOR_MAC, DOOR_SECRET),
        basic(DOOR_MAC.replace(":", ""), DOOR_SECRET),
        basic(LAMP_MAC, DOOR_SECRET),
        basic(DOOR_MAC, "wrong"),
        "Basic",
        "Basic é",
        "Bearer abc",
        "Basic " + "A" * 1100,
    ]
) | hostile_text.map(lambda v: "Basic " + v)


def casing(name: str, data: st.DataObject) -> str:
    """The header name as some proxy might pass it (API Gateway itself lower-cases)."""
    style = data.draw(st.sampled_from(["lower", "as-is", "upper", "swap", "random"]), label=f"case {name}")
    if style == "lower":
        return name.lower()
    if style == "upper":
        return name.upper()
    if style == "swap":
        return name.swapcase()
    if style == "random":
        flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True))
    return name


DEVICES = {"door": DOOR_MAC, "lamp": LAMP_MAC, "cam": CAM_MAC, "unknown": UNKNOWN_MAC}


def build_headers(data: st.DataObject) -> dict[str, str]:
    """A real client's request for one of the seeded devices (or an unknown one), then bent: device headers
    replaced, dropped or made hostile, other headers added, names re-cased."""
    device = data.draw(st.sampled_from([*DEVICES, "garbage"]), label="device")
    mac = DEVICES[device] if device in DEVICES else data.draw(mac_like | hostile_text, label="mac")
    dialect = "esp32" if device == "cam" else "esp8266"
    if data.draw(st.integers(0, 9), label="swap dialect") == 0:
        dialect = "esp8266" if dialect == "esp32" else "esp32"
    version = data.draw(st.none() | plausible["version"], label="version")
    headers = esp32_headers(mac, version=version) if dialect == "esp32" else esp8266_headers(mac, version=version)
    if data.draw(st.booleans(), label="authenticates"):
        headers["Authorization"] = data.draw(authorization, label="authorization")
    prefix = "x-ESP32-" if dialect == "esp32" else "x-ESP8266-"
    # Replace, drop or add device headers with plausible (twice as likely) or hostile values.
    for suffix in data.draw(st.lists(st.sampled_from(SUFFIXES), max_size=4, unique=True), label="touched"):
        action = data.draw(st.sampled_from(["plausible", "plausible", "hostile", "drop"]), label=suffix)
        for key in [k for k in headers if k.lower() == (prefix + suffix).lower()]:
            del headers[key]
        if action != "drop":
            strategy = plausible[suffix] if action == "plausible" else hostile_text
            headers[prefix + suffix] = data.draw(strategy, label=suffix)
    for name in data.draw(st.lists(st.sampled_from(OTHER_HEADERS), max_size=2, unique=True), label="others"):
        if name == "Authorization":
            headers[name] = data.draw(authorization, label=name)
        elif name == "User-Agent":
            headers[name] = data.draw(
                st.sampled_from(["ESP8266-http-Update", "ESP32-http-Update", " esp32-HTTP-update ", "curl/8"])
                | hostile_text,
                label=name,
            )
        else:
            headers[name] = data.draw(st.sampled_from(["http", "https", "HTTP, https"]) | hostile_text, label=name)
    extra = data.draw(
        st.dictionaries(st.text(string.ascii_letters + "-", min_size=1, max_size=30), hostile_text, max_size=2),
        label="extra",
    )
    headers.update(extra)
    return {casing(name, data): value for name, value in headers.items()}


def check_answer(response: dict[str, Any]) -> None:
    note(f"answer: {response.get('statusCode')} {body_bytes(response)[:200]!r}")
    status = response["statusCode"]
    event(f"status {status}")  # shown by --hypothesis-show-statistics: the fuzz reaches every answer
    assert status in DEVICE_STATUSES, status
    body = body_bytes(response)
    assert b"Traceback" not in body and b'File "' not in body
    if status in (302, 304):
        assert body == b""
    if status == 200 and body:
        assert body[0] == 0xE9


@given(st.data())
@fuzz_settings("handler_headers")
def test_arbitrary_headers_never_break_the_update_handler(shared: World, logs: LogCapture, data: st.DataObject) -> None:
    for mac in KNOWN_MACS:  # forget inferred failures, so every example can still reach an offer
        shared.devices.clear_failures(mac)
    headers = build_headers(data)
    note(f"headers: {headers!r}")
    route = data.draw(st.sampled_from(["/update", "/update/{product}"]), label="route")
    params = {"product": data.draw(st.sampled_from(PRODUCTS) | st.just("ghost"), label="product")}
    query = data.draw(
        st.none()
        | st.fixed_dictionaries({"delivery": st.sampled_from(["inline", "redirect", "x", ""]) | hostile_text})
        | st.dictionaries(st.text(max_size=10), hostile_text, max_size=2),
        label="query",
    )
    event = route_event(route, params if route != "/update" else {}, headers, query=query or None)
    check_answer(invoke(event))
    assert not [r for r in logs.levels("ERROR") if r.get("message") == "unhandled error"], logs.levels("ERROR")


@given(st.data())
@fuzz_settings("handler_paths")
def test_arbitrary_path_values_never_break_either_route(shared: World, data: st.DataObject) -> None:
    segment = st.text(max_size=120).filter(lambda s: "/" not in s) | st.sampled_from(
        ["..", ".", "%2F", "%2e%2e", "door", "lamp", "stable", "x" * 500]
    )
    product = data.draw(segment, label="product")
    channel = data.draw(segment, label="channel")
    mac = data.draw(st.sampled_from([LAMP_MAC, CAM_MAC, UNKNOWN_MAC]), label="mac")
    headers = {k.lower(): v for k, v in esp8266_headers(mac).items()}
    for request in (
        route_event("/update/{product}", {"product": product}, headers),
        route_event("/firmware/{product}/{channel}", {"product": product, "channel": channel}, {}),
    ):
        check_answer(invoke(request))
