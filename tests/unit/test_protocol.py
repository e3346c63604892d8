from __future__ import annotations

import pytest

from otafleet.models import Delivery, Dialect, Kind
from otafleet.protocol import ProtocolError, normalise_mac, parse_check
from support.devices import esp32_headers, esp8266_core_2_0_headers, esp8266_headers


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
