"""What a check costs on AWS: list prices and the pure arithmetic from measured usage to dollars.

Prices are AWS's us-east-1 list prices as published in 2025 (DynamoDB on-demand after the November 2024
reduction). They change and differ by region: docs/cost.md, which `python -m bench cost --write-doc`
renders from these figures and a measurement, says so too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- prices (USD) ------------------------------------------------------------------------------------
API_GATEWAY_PER_MILLION = 1.00  # HTTP API, first 300 M requests a month
API_GATEWAY_UNIT_BYTES = 512 * 1024  # HTTP API requests are metered in 512 KB increments
LAMBDA_REQUESTS_PER_MILLION = 0.20
LAMBDA_GB_SECOND_ARM = 0.0000133334
DYNAMODB_PER_MILLION_WRU = 0.625
DYNAMODB_PER_MILLION_RRU = 0.125
S3_GET_PER_THOUSAND = 0.0004
TRANSFER_OUT_PER_GB = 0.09  # to the internet, first 10 TB a month
LOGS_INGESTED_PER_GB = 0.50
LOGS_EVENT_OVERHEAD_BYTES = 26  # CloudWatch Logs bills each event's message plus 26 bytes
VM_MONTH = 3.07 + 0.64 + 3.65  # t4g.nano + 8 GB gp3 + a public IPv4 address, 730 hours

FRONTS = ("API Gateway", "function URL")

GB = 1024**3


@dataclass(frozen=True)
class Usage:
    """What one check uses, as measured (requests, bytes) or modelled (billed milliseconds)."""

    rru: float  # DynamoDB read request units
    wru: float  # DynamoDB write request units
    s3_gets: float  # S3 GETs the check itself makes (inline delivery)
    device_s3_gets: float  # S3 GETs the device makes after the answer (a redirect's download)
    log_bytes: float  # what the function writes to CloudWatch Logs, event overhead included
    billed_ms: float  # Lambda's billed duration
    memory_mb: int  # the function's memory size
    response_bytes: int  # what the front returns to the device (API Gateway meters it in 512 KB units)
    delivered_bytes: int  # image bytes that leave AWS for the device (inline or redirected)


def per_million(usage: Usage, front: str) -> dict[str, float]:
    """Dollars per million checks of this usage, by item; `delivery` (bytes out and the device's own S3
    GETs) is apart from `total`, which is what the check itself costs."""
    api = math.ceil(max(usage.response_bytes, 1) / API_GATEWAY_UNIT_BYTES) * API_GATEWAY_PER_MILLION
    items = {
        "front": api if front == "API Gateway" else 0.0,
        "lambda requests": LAMBDA_REQUESTS_PER_MILLION,
        "lambda duration": usage.memory_mb / 1024 * usage.billed_ms / 1000 * LAMBDA_GB_SECOND_ARM * 1e6,
        "dynamodb": usage.rru * DYNAMODB_PER_MILLION_RRU + usage.wru * DYNAMODB_PER_MILLION_WRU,
        "s3": usage.s3_gets * S3_GET_PER_THOUSAND * 1000,
        "logs": usage.log_bytes * 1e6 / GB * LOGS_INGESTED_PER_GB,
    }
    items["total"] = sum(items.values())
    items["delivery"] = (
        usage.delivered_bytes * 1e6 / GB * TRANSFER_OUT_PER_GB + usage.device_s3_gets * S3_GET_PER_THOUSAND * 1000
    )
    return items


def monthly(cost_per_million: float, devices: int, checks_per_hour: float) -> float:
    """A fleet's monthly bill at this cost per million checks (730 hours a month)."""
    return cost_per_million * devices * checks_per_hour * 730 / 1e6


__all__ = ["FRONTS", "Usage", "monthly", "per_million"]
