from __future__ import annotations

import pytest

from otafleet.models import Delivery, Dialect, Kind
from otafleet.protocol import ProtocolError, identity_mac, is_device_mac, normalise_mac, not_a_device, parse_check
from support.devices import (
    ESP32_CORES,
    ZERO_MAC,
    Esp32Core,
    esp32_core_headers,
    esp32_headers,
    esp8266_core_2_0_headers,
    esp8266_headers,
)

BASE_MAC = "24:0A:C4:00:00:09"  # an ESP32's base MAC is its Wi-Fi station's MAC
AP_MAC = "24:0A:C4:00:00:0A"  # base + 1


def test_esp8266_full_request() -> None:
    req = parse_check(esp8266_headers("5c:cf:7f:00:00:01", version="1.0", md5="A" * 32), source_ip="1.2.3.4")
    assert req.dialect is Dialect.ESP8266
    assert req.mac == "5C:CF:7F:00:00:01"
    assert req.free_space == 1_000_000 and req.chip_size == 4 * 1024 * 1024
    assert req.sketch_md5 == "a" * 32
    assert req.version == "1.0" and req.kind is Kind.APP and req.source_ip == "1.2.3.4"


def test_core_2_0_minimal_request_defaults_to_sketch() -> None:
    req = parse_check(esp8266_core_2_0_headers())
    assert req.mode == "sketch" and req.version is None and req.sketch_md5 is None


def test_esp32_base_mac_when_no_sta_mac() -> None:
    headers = esp32_headers()
    del headers["x-ESP32-STA-MAC"]
    headers["x-ESP32-BASE-MAC"] = "24:0a:c4:00:00:09"
    assert parse_check(headers).mac == "24:0A:C4:00:00:09"


# esp-http-update.md §5: what HTTPUpdate sends as STA-MAC, AP-MAC and BASE-MAC (None: no such header), by
# arduino-esp32 generation and board. Whatever the generation, the identity is the board's own MAC.
IDENTITY_BY_CORE: list[tuple[Esp32Core, str | None, str | None, str | None]] = [
    ("1.0.x", BASE_MAC, AP_MAC, None),
    ("2.x wifi", BASE_MAC, AP_MAC, None),
    ("2.x ethernet", BASE_MAC, "", None),
    ("3.x wifi", BASE_MAC, ZERO_MAC, BASE_MAC),
    ("3.x ethernet", ZERO_MAC, ZERO_MAC, BASE_MAC),
    ("3.x no-wifi", None, None, BASE_MAC),
]


def test_identity_table_covers_every_generation() -> None:
    assert [row[0] for row in IDENTITY_BY_CORE] == list(ESP32_CORES)


@pytest.mark.parametrize(("core", "sta", "ap", "base"), IDENTITY_BY_CORE)
def test_esp32_identity_by_core_generation(core: Esp32Core, sta: str | None, ap: str | None, base: str | None) -> None:
    headers = esp32_core_headers(core, BASE_MAC, md5="ab" * 16, sha256="cd" * 32)
    assert [headers.get(f"x-ESP32-{name}") for name in ("STA-MAC", "AP-MAC", "BASE-MAC")] == [sta, ap, base]
    req = parse_check(headers)
    assert req.mac == BASE_MAC
    # An empty or all-zero AP MAC is an interface that is down: absent, not malformed.
    assert req.ap_mac == (AP_MAC if ap == AP_MAC else None)
    # 1.0.x computes no sketch MD5, only the SHA-256.
    assert req.sketch_md5 == (None if core == "1.0.x" else "ab" * 16)
    assert req.sketch_sha256 == "cd" * 32


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({"x-ESP32-STA-MAC": ZERO_MAC, "x-ESP32-AP-MAC": ZERO_MAC}, f"sta-mac '{ZERO_MAC}'"),
        ({"x-ESP32-STA-MAC": "", "x-ESP32-BASE-MAC": ZERO_MAC}, f"sta-mac '', base-mac '{ZERO_MAC}'"),
        ({"x-ESP32-STA-MAC": "ff:ff:ff:ff:ff:ff"}, "sta-mac 'ff:ff:ff:ff:ff:ff'"),
        ({}, "neither"),
    ],
)
def test_no_identity_is_403_saying_what_was_sent(headers: dict[str, str], sent: str) -> None:
    request = {"User-Agent": "ESP32-http-Update", "x-ESP32-free-space": "1966080", **headers}
    with pytest.raises(ProtocolError) as refused:
        parse_check(request)
    assert refused.value.status == 403
    assert "x-esp32-sta-mac (or x-esp32-base-mac) is required" in refused.value.reason
    assert f"(sent: {sent})" in refused.value.reason


def test_esp8266_zero_sta_mac_is_no_identity() -> None:
    with pytest.raises(ProtocolError, match=r"x-esp8266-sta-mac \(or x-esp8266-base-mac\) is required"):
        parse_check(esp8266_headers(ZERO_MAC))


def test_a_malformed_sta_mac_is_refused_not_replaced_by_the_base_mac() -> None:
    headers = {**esp32_core_headers("3.x wifi", BASE_MAC), "x-ESP32-STA-MAC": "24:0A:C4"}
    with pytest.raises(ProtocolError, match="x-esp32-sta-mac is not a MAC address"):
        parse_check(headers)


@pytest.mark.parametrize(
    ("sta", "base", "identity"),
    [
        ("5C:CF:7F:00:00:01", None, "5C:CF:7F:00:00:01"),
        ("5C:CF:7F:00:00:01", "24:0A:C4:00:00:09", "5C:CF:7F:00:00:01"),
        (ZERO_MAC, "24:0A:C4:00:00:09", "24:0A:C4:00:00:09"),
        (None, "24:0A:C4:00:00:09", "24:0A:C4:00:00:09"),
        ("FF:FF:FF:FF:FF:FF", ZERO_MAC, None),
        (None, None, None),
    ],
)
def test_identity_rule(sta: str | None, base: str | None, identity: str | None) -> None:
    assert identity_mac(sta, base) == identity


def test_zero_and_broadcast_are_never_devices() -> None:
    assert not is_device_mac(ZERO_MAC) and not is_device_mac("FF:FF:FF:FF:FF:FF")
    assert is_device_mac("24:0A:C4:00:00:09")
    assert "base MAC" in not_a_device(ZERO_MAC) and "broadcast" in not_a_device("FF:FF:FF:FF:FF:FF")


@pytest.mark.parametrize(
    ("header", "field", "absent"),
    [
        ("x-ESP8266-AP-MAC", "ap_mac", None),
        ("x-ESP8266-sketch-md5", "sketch_md5", None),
        ("x-ESP8266-Chip-ID", "chip_id", None),
        ("x-ESP8266-mode", "mode", "sketch"),
        ("x-ESP8266-version", "version", None),
        ("x-ESP8266-free-space", "free_space", None),
        ("x-ESP8266-sketch-size", "sketch_size", None),
        ("x-ESP8266-chip-size", "chip_size", None),
        ("x-ESP8266-sdk-version", "sdk_version", None),
        ("Authorization", "authorization", None),
    ],
)
@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_optional_header_is_absent(header: str, field: str, absent: object, empty: str) -> None:
    headers = esp8266_headers(version="1.0", md5="a" * 32, auth=("5CCF7F000001", "secret"))
    headers[header] = empty
    assert getattr(parse_check(headers), field) == absent


def test_empty_esp32_sketch_sha256_is_absent() -> None:
    assert parse_check({**esp32_headers(), "x-ESP32-sketch-sha256": ""}).sketch_sha256 is None


@pytest.mark.parametrize("mode", ["spiffs", "littlefs", "fatfs", "flashfs"])
def test_filesystem_modes(mode: str) -> None:
    assert parse_check(esp32_headers(mode=mode)).kind is Kind.FS


def test_sha256_lowercased_for_comparison() -> None:
    assert parse_check(esp32_headers(sha256="ab" * 32)).sketch_sha256 == "ab" * 32


def test_delivery_override_and_scheme() -> None:
    headers = {**esp8266_headers(), "X-Forwarded-Proto": "http"}
    req = parse_check(headers, query={"delivery": "inline"})
    assert req.delivery is Delivery.INLINE and req.scheme == "http"
    assert parse_check(esp8266_headers()).scheme == "https"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda h: h.update({"User-Agent": "Mozilla/5.0"}), "only ESP8266/ESP32"),
        (lambda h: h.pop("x-ESP8266-STA-MAC"), "sta-mac"),
        (lambda h: h.update({"x-ESP8266-STA-MAC": "5C:CF:7F:00:00"}), "not a MAC"),
        (lambda h: h.update({"x-ESP8266-free-space": "-1"}), "non-negative integer"),
        (lambda h: h.update({"x-ESP8266-chip-size": "4M"}), "non-negative integer"),
        (lambda h: h.update({"x-ESP8266-sketch-md5": "z" * 32}), "hex digest"),
        (lambda h: h.update({"x-ESP8266-mode": "bootloader"}), "unknown value"),
        (lambda h: h.update({"x-ESP8266-version": "x" * 1000}), "too long"),
        (lambda h: h.update({"x-ESP8266-version": "1.0\x00"}), "not printable"),
        (lambda h: h.update({"x-ESP8266-Chip-ID": "0x12"}), "decimal"),
    ],
)
def test_malformed_is_403_with_reason(mutate: object, needle: str) -> None:
    headers = esp8266_headers()
    mutate(headers)  # type: ignore[operator]
    with pytest.raises(ProtocolError) as refused:
        parse_check(headers)
    assert refused.value.status == 403
    assert needle in refused.value.reason


def test_bad_delivery_query() -> None:
    with pytest.raises(ProtocolError, match="delivery"):
        parse_check(esp8266_headers(), query={"delivery": "carrier-pigeon"})


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF"),
        ("AA-BB-CC-DD-EE-FF", "AA:BB:CC:DD:EE:FF"),
        ("aabbccddeeff", "AA:BB:CC:DD:EE:FF"),
    ],
)
def test_normalise_mac(raw: str, normal: str) -> None:
    assert normalise_mac(raw) == normal


@pytest.mark.parametrize("raw", ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:fg", "aa:bb-cc:dd:ee:ff", "../../etc"])
def test_not_a_mac(raw: str) -> None:
    assert normalise_mac(raw) is None
