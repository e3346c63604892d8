"""The arithmetic docs/cost.md is rendered with: usage to dollars, a fleet's mean check, DynamoDB item
sizes (which decide the request units a check is billed)."""

from __future__ import annotations

import math

import pytest

from bench import prices
from bench.cost import item_bytes, mean_check

UNCHANGED = prices.Usage(
    rru=1, wru=0, s3_gets=0, device_s3_gets=0, log_bytes=436, billed_ms=7, memory_mb=512,
    response_bytes=73, delivered_bytes=0,
)  # fmt: skip


def test_an_unchanged_check_costs_the_request_a_read_a_little_time_and_its_log_line() -> None:
    c = prices.per_million(UNCHANGED, "API Gateway")
    assert c["front"] == 1.00
    assert c["lambda requests"] == 0.20
    assert c["lambda duration"] == pytest.approx(0.5 * 0.007 * 0.0000133334 * 1e6)
    assert c["dynamodb"] == pytest.approx(0.125)
    assert c["logs"] == pytest.approx(436e6 / 1024**3 * 0.50)
    assert c["total"] == pytest.approx(sum(v for k, v in c.items() if k not in ("total", "delivery")))
    assert c["delivery"] == 0


def test_the_function_url_front_drops_only_api_gateways_charge() -> None:
    api, url = prices.per_million(UNCHANGED, "API Gateway"), prices.per_million(UNCHANGED, "function URL")
    assert url["front"] == 0 and api["total"] - url["total"] == pytest.approx(1.00)


def test_an_inline_megabyte_is_two_api_gateway_units_and_its_bytes_are_delivery() -> None:
    inline = prices.Usage(1, 1, 1, 0, 823, 83, 512, response_bytes=1_000_201, delivered_bytes=1_000_000)
    c = prices.per_million(inline, "API Gateway")
    assert c["front"] == 2.00
    assert c["s3"] == pytest.approx(0.40)
    assert c["delivery"] == pytest.approx(1e12 / 1024**3 * 0.09)


def test_a_redirects_download_is_the_devices_own_get() -> None:
    offer = prices.Usage(1, 1, 0, 1, 827, 19, 512, response_bytes=432, delivered_bytes=0)
    assert prices.per_million(offer, "function URL")["delivery"] == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("per_hour", "heartbeat", "written_every"),
    [(1, 60, 1), (1, 360, 6), (6, 60, 6), (6, 45, 5), (1 / 24, 60, 1), (6, 0, 1)],
)
def test_one_check_in_every_ceil_heartbeat_over_interval_is_written(
    per_hour: float, heartbeat: float, written_every: int
) -> None:
    mean = mean_check(unchanged=1.0, changed=2.0, checks_per_hour=per_hour, heartbeat_minutes=heartbeat)
    assert mean == pytest.approx(1.0 + 1 / written_every)


def test_a_fleets_month_is_730_hours_of_checks() -> None:
    assert prices.monthly(1.0, 10_000, 1) == pytest.approx(7.3)


def test_item_sizes_follow_dynamodbs_rules() -> None:
    assert item_bytes({"mac": {"S": "5C:CF:7F:00:00:01"}}) == 3 + 17
    assert item_bytes({"n": {"N": "12345"}}) == 1 + math.ceil(5 / 2) + 1
    assert item_bytes({"ok": {"BOOL": True}, "x": {"NULL": True}}) == 2 + 1 + 1 + 1
    assert item_bytes({"m": {"M": {"a": {"S": "bc"}}}}) == 1 + 3 + 1 + 1 + 2
    assert item_bytes({"l": {"L": [{"S": "a"}, {"N": "7"}]}}) == 1 + 3 + (1 + 1) + (1 + 2)
