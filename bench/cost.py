"""Benchmark 6, `cost`: dollars per million update checks, from what a check is measured to use.

Measured here, through the real handler on in-process moto, per outcome:
- DynamoDB and S3 requests per check (botocore's before-call hook, as in `requests`), turned into request
  units with DynamoDB's item size rules on the device record as stored after the checks;
- the bytes the function writes to CloudWatch Logs per check: the decision line and the EMF line as
  printed, with CloudWatch's 26 bytes per event; an unchanged `304`'s decision line, logged only in a
  sample, counted at the template's `LogSampleRate`; Lambda's own START/END/REPORT lines are not
  written with the template's `SystemLogLevel` of WARN;
- the answer's bytes (API Gateway meters in 512 KB units) and the image bytes delivered.

Modelled, since they cannot be measured off AWS: Lambda's billed duration, as our code's own time
(handler time less the time inside the AWS calls), scaled to the CPU share of the template's memory size
(Lambda gives a full vCPU at 1,769 MB), plus an in-region round trip per AWS request (LATENCY_MS).

The checks follow a device's life on a clock that the handler's service reads: the rhythm is learned at
one check every 10 minutes, then "unchanged" checks come within the heartbeat, "changed" ones a heartbeat
apart (each written). Prices: bench/prices.py. `python -m bench cost --write-doc` renders docs/cost.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

from bench import REPO, prices, scenario
from bench.common import Figure, Result, fmt, heading, median, note, table
from bench.hooks import Recorder, handler_clients

# Assumed in-region round trips (ms): DynamoDB's single-digit-millisecond reads and writes, a transaction
# two writes' worth, S3's first byte and then its per-connection throughput for the image's bytes.
LATENCY_MS = {"GetItem": 4.0, "UpdateItem": 6.0, "PutItem": 6.0, "TransactWriteItems": 12.0, "Query": 5.0}
S3_FIRST_BYTE_MS = 20.0
S3_MB_PER_S = 80.0
VCPU_MB = 1769  # Lambda's memory size that comes with one full vCPU

INLINE_BYTES = 1_000_000
TARGETS = {("unchanged 304", "API Gateway"): 1.70, ("unchanged 304", "function URL"): 0.70}
DOC = REPO / "docs" / "cost.md"


@dataclass(frozen=True)
class Template:
    memory_mb: int
    heartbeat_minutes: float
    sample_rate: float
    system_log_level: str


def template_defaults() -> Template:
    from otafleet_local import template

    t = template.load()
    params = t["Parameters"]
    function = t["Globals"]["Function"]
    update = t["Resources"]["UpdateFunction"]["Properties"]
    logging_config = update.get("LoggingConfig") or function.get("LoggingConfig") or {}
    return Template(
        memory_mb=int(update.get("MemorySize", function["MemorySize"])),
        heartbeat_minutes=float(params["CheckHeartbeatMinutes"]["Default"]),
        sample_rate=float(params["LogSampleRate"]["Default"]),
        system_log_level=str(logging_config.get("SystemLogLevel", "INFO")),
    )


# --- DynamoDB item size ------------------------------------------------------------------------------


def _value_bytes(value: dict[str, Any]) -> int:
    """A value's size by DynamoDB's rules: strings and binaries by length, numbers about a byte per two
    digits plus one, booleans and nulls one byte, lists and maps 3 bytes plus a byte per element."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(v)
    if kind == "N":
        return math.ceil(len(v.lstrip("-").replace(".", "").lstrip("0") or "0") / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_bytes({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(x) for k, x in v.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_bytes(item: dict[str, dict[str, Any]]) -> int:
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Measured:
    outcome: str
    status: int
    requests: dict[str, float]  # per check, by service.Operation
    record_bytes: int
    log_bytes: float
    log_events: float
    code_ms: float
    response_bytes: int
    delivered_bytes: int

    def usage(self, tpl: Template) -> prices.Usage:
        r = self.requests
        rru = r.get("dynamodb.GetItem", 0) * math.ceil(self.record_bytes / 4096)
        wru = (r.get("dynamodb.UpdateItem", 0) + r.get("dynamodb.PutItem", 0)) * math.ceil(self.record_bytes / 1024)
        wru += r.get("dynamodb.TransactWriteItems", 0) * 2 * 2  # the record and a counter, at twice a write
        aws_ms = sum(LATENCY_MS.get(k.split(".")[1], 0.0) * n for k, n in r.items() if k.startswith("dynamodb."))
        gets = r.get("s3.GetObject", 0)
        aws_ms += gets * (S3_FIRST_BYTE_MS + self.delivered_bytes / 1e6 / S3_MB_PER_S * 1000)
        cpu_share = min(1.0, tpl.memory_mb / VCPU_MB)
        return prices.Usage(
            rru=rru,
            wru=wru,
            s3_gets=gets,
            device_s3_gets=1.0 if self.status == 302 else 0.0,
            log_bytes=self.log_bytes,
            billed_ms=math.ceil(self.code_ms / cpu_share + aws_ms),
            memory_mb=tpl.memory_mb,
            response_bytes=self.response_bytes,
            delivered_bytes=self.delivered_bytes,
        )


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """Everything the function writes while inside: its log lines (the Powertools logger keeps the stream
    it was created with, so its handlers are pointed here too) and the EMF lines it prints."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger("otafleet").handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(buffer) for h in handlers]
    stdout, sys.stdout = sys.stdout, buffer
    try:
        yield buffer
    finally:
        sys.stdout = stdout
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def _lines(text: str) -> tuple[int, int]:
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(len(line.encode()) for line in lines) + prices.LOGS_EVENT_OVERHEAD_BYTES * len(lines), len(lines)


class Device:
    """A device's checks through the handler, on a clock the handler's service reads."""

    def __init__(self, event: dict[str, Any], status: int, mac: str) -> None:
        from support.clock import Clock

        self.event, self.status, self.mac = event, status, mac
        self.clock = Clock()

    def install(self, *, sampled: bool) -> None:
        """The handler's service on this device's clock; `sampled`: it logs even an unchanged check."""
        from update import app

        service = app.service()
        settings = replace(service.settings, log_sample_rate=1.0 if sampled else 0.0)
        app._service = replace(service, clock=self.clock, settings=settings)

    def check(self) -> dict[str, Any]:
        response = scenario.call(self.event)
        if response["statusCode"] != self.status:
            raise AssertionError(f"expected {self.status}, got {response['statusCode']}: {response.get('body')!r}")
        return response

    def learn(self) -> None:
        for _ in range(6):
            self.clock.advance(minutes=10)
            self.check()


def _measure(outcome: str, device: Device, step: timedelta, checks: int, sample_rate: float, world: Any) -> Measured:
    import base64

    device.install(sampled=False)
    device.learn()
    recorder = Recorder().attach(handler_clients())
    counts: dict[str, float] = {}
    code_ms: list[float] = []
    log_bytes: dict[str, list[int]] = {"unsampled": [], "sampled": []}
    log_events: dict[str, list[int]] = {"unsampled": [], "sampled": []}
    response: dict[str, Any] = {}
    try:
        for i in range(checks):
            # Every other check as one in the log sample, to weigh its extra line.
            level = "sampled" if i % 2 else "unsampled"
            device.install(sampled=level == "sampled")
            device.clock.now += step
            recorder.clear()
            with captured_output() as out:
                started = time.perf_counter()
                response = device.check()
                elapsed = time.perf_counter() - started
            code_ms.append((elapsed - recorder.busy_s) * 1000)
            size, events = _lines(out.getvalue())
            log_bytes[level].append(size)
            log_events[level].append(events)
            if level == "unsampled":
                for key, n in recorder.counts().items():
                    counts[key] = counts.get(key, 0) + n
    finally:
        recorder.detach()
    counted_checks = len(log_bytes["unsampled"])
    body = base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response.get("body", "").encode()
    headers = sum(len(k) + len(str(v)) + 4 for k, v in response["headers"].items())
    plain, sampled = median(log_bytes["unsampled"]), median(log_bytes["sampled"])
    raw = world.devices.client.get_item(TableName=world.settings.devices_table, Key={"mac": {"S": device.mac}})
    return Measured(
        outcome=outcome,
        status=device.status,
        requests={k: v / counted_checks for k, v in sorted(counts.items())},
        record_bytes=item_bytes(raw["Item"]),
        log_bytes=plain + sample_rate * max(0.0, sampled - plain),
        log_events=median(log_events["unsampled"])
        + sample_rate * (median(log_events["sampled"]) - median(log_events["unsampled"])),
        code_ms=median(code_ms),
        response_bytes=len(body) + headers + 17,  # the status line
        delivered_bytes=len(body) if device.status == 200 else 0,
    )


def measure(quick: bool = False) -> tuple[Template, list[Measured]]:
    from otafleet.models import Delivery
    from support.devices import esp8266_headers, http_api_event
    from support.world import fake_image

    tpl = template_defaults()
    checks = 20 if quick else 100
    previous = os.environ.get("CHECK_HEARTBEAT_MINUTES")
    os.environ["CHECK_HEARTBEAT_MINUTES"] = str(tpl.heartbeat_minutes)
    try:
        with scenario.fleet() as fleet:
            world = fleet.world
            world.product("bulb", "esp8266", delivery=Delivery.INLINE)
            world.release("bulb", "1.1.0", fake_image("bulb-1.1.0", INLINE_BYTES))
            world.channel("bulb", app="1.1.0")
            # A device of its own per outcome: each lives on its own clock.
            unchanged, changed, inline = "5C:CF:7F:00:00:10", "5C:CF:7F:00:00:11", "5C:CF:7F:00:00:12"
            world.device(unchanged, "door")
            world.device(changed, "door")
            world.device(inline, "bulb")

            def device(mac: str, status: int, version: str = "1.1.0", **headers: Any) -> Device:
                return Device(http_api_event("/update", esp8266_headers(mac, version=version, **headers)), status, mac)

            offered = fleet.cases["302 redirect"]
            assert offered.mac is not None
            heartbeat = timedelta(minutes=tpl.heartbeat_minutes, seconds=1)
            plan: list[tuple[str, Callable[[], Device], timedelta]] = [
                ("unchanged 304", lambda: device(unchanged, 304), timedelta(seconds=30)),
                ("changed 304", lambda: device(changed, 304), heartbeat),
                ("302 offer", lambda: Device(offered.event, 302, offered.mac or ""), timedelta(minutes=10)),
                (
                    "200 inline, 1 MB",
                    lambda: device(inline, 200, "1.0.0", free_space=2_000_000, sketch_size=900_000),
                    timedelta(minutes=10),
                ),
            ]
            found = []
            for outcome, make, step in plan:
                scenario.reset_handler()
                n = checks if not outcome.startswith("200") else max(10, checks // 5)
                found.append(_measure(outcome, make(), step, n, tpl.sample_rate, world))
    finally:
        if previous is None:
            os.environ.pop("CHECK_HEARTBEAT_MINUTES", None)
        else:
            os.environ["CHECK_HEARTBEAT_MINUTES"] = previous
    return tpl, found


# --- reporting -------------------------------------------------------------------------------------


def _money(value: float) -> str:
    return f"${value:.2f}" if value >= 0.01 or value == 0 else f"${value:.3f}"


def run(quick: bool = False) -> Result:
    heading("6. cost: dollars per million update checks, by outcome and front (us-east-1 list prices)")
    tpl, found = measure(quick)
    result = Result("cost")
    rows: list[list[object]] = []
    for m in found:
        usage = m.usage(tpl)
        rows.append(
            [
                m.outcome,
                fmt(usage.rru, 2),
                fmt(usage.wru, 2),
                fmt(usage.s3_gets, 0),
                f"{m.record_bytes} B",
                f"{m.log_bytes:.0f} B",
                fmt(m.log_events, 2),
                fmt(m.code_ms, 2),
                f"{usage.billed_ms:.0f}",
                f"{m.response_bytes:,}",
            ]
        )
    table(
        ["per check", "RRU", "WRU", "S3 GET", "record", "log bytes", "log lines", "code ms", "billed ms", "answer B"],
        rows,
    )
    cost_rows: list[list[object]] = []
    for m in found:
        for front in prices.FRONTS:
            c = prices.per_million(m.usage(tpl), front)
            cost_rows.append(
                [
                    m.outcome,
                    front,
                    *(_money(c[k]) for k in ("front", "lambda requests", "lambda duration")),
                    *(_money(c[k]) for k in ("dynamodb", "s3", "logs", "total", "delivery")),
                ]
            )
            target = TARGETS.get((m.outcome, front))
            if target is not None:
                # The floor of a check on this front: the request itself (front + Lambda's request charge).
                floor = c["front"] + c["lambda requests"]
                result.figures.append(
                    Figure(
                        "cost",
                        f"per million {m.outcome} checks, {front}",
                        c["total"],
                        floor,
                        "$",
                        target,
                        note="the front's and Lambda's request charges",
                    )
                )
    table(
        ["outcome", "front", "front $", "Lambda req", "Lambda time", "DynamoDB", "S3", "Logs", "total", "+ delivery"],
        cost_rows,
    )
    note(
        f"template defaults: {tpl.memory_mb} MB arm64, heartbeat {tpl.heartbeat_minutes:g} min, "
        f"log sample rate {tpl.sample_rate:g}, Lambda system logs at {tpl.system_log_level}."
    )
    note(
        "billed ms is modelled: our code's time scaled to the memory size's CPU share, plus assumed AWS round "
        "trips; delivery is the image's bytes out and a redirected device's own S3 GET."
    )
    result.details = {"template": asdict(tpl), "measured": [asdict(m) for m in found]}
    return result


__all__ = ["Measured", "Template", "item_bytes", "measure", "run"]


# --- docs/cost.md ----------------------------------------------------------------------------------

# (devices, checks an hour, label, heartbeat minutes or None for the template's)
FLEETS: tuple[tuple[int, float, str, float | None], ...] = (
    (1_000, 1 / 24, "daily", None),
    (10_000, 1 / 24, "daily", None),
    (10_000, 1, "hourly", None),
    (10_000, 1, "hourly, CheckHeartbeatMinutes 360", 360),
    (10_000, 6, "every 10 minutes", None),
    (100_000, 1, "hourly, CheckHeartbeatMinutes 360", 360),
)


def mean_check(unchanged: float, changed: float, checks_per_hour: float, heartbeat_minutes: float) -> float:
    """A steady fleet's mean cost per check: one check in every ceil(heartbeat / interval) is written."""
    interval = 60 / checks_per_hour
    every = max(1, math.ceil(heartbeat_minutes / interval)) if heartbeat_minutes > 0 else 1
    return changed / every + unchanged * (1 - 1 / every)


def render_doc(details: dict[str, Any], measured_on: str) -> str:
    tpl = Template(**details["template"])
    found = [Measured(**m) for m in details["measured"]]
    by = {m.outcome: m for m in found}
    costs = {(m.outcome, f): prices.per_million(m.usage(tpl), f) for m in found for f in prices.FRONTS}
    usage = {m.outcome: m.usage(tpl) for m in found}
    trips = ", ".join(f"{k} {v:g} ms" for k, v in LATENCY_MS.items())
    out: list[str] = []
    add = out.append
    add("# What an update check costs\n")
    add(f"Rendered by `python -m bench cost --write-doc` on {measured_on} from what the `cost` benchmark measured")
    add("(bench/cost.py) and AWS **list prices for us-east-1 as published in 2025** (bench/prices.py; DynamoDB")
    add("on-demand after the November 2024 reduction). Prices change and differ by region: check the AWS pricing")
    add("pages before you budget. Free tiers are ignored. Do not edit this file by hand: change the code or the")
    add("prices and render it again.\n")
    add("## Measured per check\n")
    add(
        f"The template's defaults: the update function at {tpl.memory_mb} MB arm64, `CheckHeartbeatMinutes` "
        f"{tpl.heartbeat_minutes:g}, `LogSampleRate` {tpl.sample_rate:g}, Lambda system logs at "
        f"{tpl.system_log_level} (no START/END/REPORT lines).\n"
    )
    add("| per check | DynamoDB RRU | DynamoDB WRU | S3 GETs | log bytes (lines) | billed ms (model) | answer bytes |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for m in found:
        u = usage[m.outcome]
        add(
            f"| {m.outcome} | {u.rru:g} | {u.wru:g} | {u.s3_gets:g} | {m.log_bytes:.0f} ({m.log_events:.2f}) | "
            f"{u.billed_ms:.0f} | {m.response_bytes:,} |"
        )
    add("")
    add("- **unchanged 304**: a device that reports what it reported and gets the answer it got, within the")
    add("  heartbeat of its last written check: one strongly consistent read of its record, no write. Its decision")
    add(f"  line is logged only for the {tpl.sample_rate:g} share of such checks the service samples; the")
    add("  metrics (one EMF line) are exact on every check.")
    add("- **changed 304**: something it reports changed, or the record is a heartbeat old: one read, one write")
    add(f"  (the record is {by['changed 304'].record_bytes} bytes, 1 WRU), and the decision line.")
    add("- **302 offer** and **200 inline**: an offer is a transition, always written. The device's own download")
    add("  after a redirect is one S3 GET and the image's bytes (under *delivery* below).")
    add("- Billed milliseconds are modelled, not measured: our code's own time in this run (handler time less")
    add(f"  the time inside the AWS calls), scaled to the CPU share of {tpl.memory_mb} MB (a full vCPU comes at")
    add(f"  {VCPU_MB} MB), plus an assumed in-region round trip per request ({trips};")
    add(f"  S3 {S3_FIRST_BYTE_MS:g} ms to the first byte, then {S3_MB_PER_S:g} MB/s).")
    add("- A container's first check also reads the product's catalog partition (one Query), cached for")
    add("  `CatalogCacheSeconds` after that; a verdict that moves a rollout counter is a two-item transaction.")
    add("  Over a fleet these are rounding errors, as is the rollout controller (a few small reads every few")
    add("  minutes).\n")
    add("## Prices used\n")
    add("| item | price |")
    add("| --- | --- |")
    add(f"| API Gateway HTTP API | ${prices.API_GATEWAY_PER_MILLION:.2f} per million requests, in 512 KB units |")
    add(f"| Lambda requests | ${prices.LAMBDA_REQUESTS_PER_MILLION:.2f} per million (a function URL adds nothing) |")
    add(f"| Lambda duration, arm64 | ${prices.LAMBDA_GB_SECOND_ARM:.10f} per GB-second |")
    p = prices
    wru, rru = p.DYNAMODB_PER_MILLION_WRU, p.DYNAMODB_PER_MILLION_RRU
    add(f"| DynamoDB on-demand | ${wru} per million WRU, ${rru} per million RRU |")
    add(f"| S3 GET | ${prices.S3_GET_PER_THOUSAND} per 1,000 requests |")
    add(f"| Data transfer out to the internet | ${prices.TRANSFER_OUT_PER_GB} per GB |")
    logs, overhead = p.LOGS_INGESTED_PER_GB, p.LOGS_EVENT_OVERHEAD_BYTES
    add(f"| CloudWatch Logs ingestion | ${logs:.2f} per GB, each event + {overhead} bytes |")
    add(f"| a t4g.nano VM for comparison | ${prices.VM_MONTH:.2f} a month, with an 8 GB disk and a public IPv4 |\n")
    add("## Per million checks\n")
    add("*delivery* is apart from the total: the image's bytes out of AWS and, after a redirect, the device's")
    add("own S3 GET; it is the same on either front.\n")
    add("| outcome | front | front | Lambda requests | Lambda duration | DynamoDB | S3 | Logs | **total** | delivery |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m in found:
        for front in prices.FRONTS:
            c = costs[(m.outcome, front)]
            cells = " | ".join(
                _money(c[k]) for k in ("front", "lambda requests", "lambda duration", "dynamodb", "s3", "logs")
            )
            add(f"| {m.outcome} | {front} | {cells} | **{_money(c['total'])}** | {_money(c['delivery'])} |")
    add("")
    add("The function URL front (`EnableFunctionUrl`, [deploy.md](deploy.md#function-url-front)) drops API")
    add("Gateway's request charge; its trade-offs (HTTPS only, no API throttle, no access log) are there. Behind")
    add("the optional CloudFront front door, checks add CloudFront's $1.00 per million HTTPS requests and inline")
    add("bytes leave through CloudFront ($0.085/GB for the first 10 TB in North America and Europe).\n")
    add("## A fleet's month\n")
    add("Most checks of a healthy fleet change nothing. With a heartbeat of H minutes and a check every I")
    add("minutes, one check in every ceil(H / I) is written (the changed figure), the rest are unchanged; offers")
    add("and their delivery come on top, once per device and release.\n")
    add("| fleet | checks a month | API Gateway front | function URL front | PHP on a t4g.nano |")
    add("| --- | --- | --- | --- | --- |")
    for devices, per_hour, label, heartbeat in FLEETS:
        month = []
        for front in prices.FRONTS:
            mean = mean_check(
                costs[("unchanged 304", front)]["total"],
                costs[("changed 304", front)]["total"],
                per_hour,
                tpl.heartbeat_minutes if heartbeat is None else heartbeat,
            )
            month.append(f"≈ ${prices.monthly(mean, devices, per_hour):,.2f}")
        checks = f"{devices * per_hour * 730 / 1e6:,.2f} M"
        add(f"| {devices:,} devices, {label} | {checks} | {month[0]} | {month[1]} | ≈ ${prices.VM_MONTH:.2f} |")
    add("")
    add("A fleet that checks hourly with the default heartbeat of an hour writes every check; raising")
    add("`CheckHeartbeatMinutes` to a few check intervals (e.g. 360 for an hourly fleet) makes most of its checks")
    add("unchanged ones, at the price of silence being judged that much later (docs/operations.md). The VM's bill")
    add("buys none of what the script lacks: validated images, staged rollouts that halt themselves, per-device")
    add("state, redundancy across availability zones.")
    return "\n".join(out) + "\n"


def write_doc(result: Result) -> None:
    from datetime import UTC, datetime

    DOC.write_text(render_doc(result.details, datetime.now(UTC).strftime("%Y-%m-%d")))
