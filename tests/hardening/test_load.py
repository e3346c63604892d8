"""A bounded load test of the local stack: a few thousand device-shaped HTTP/1.0 requests from 16-32
concurrent clients against 127.0.0.1, with zero errors, printing throughput and latency percentiles.

Opt-in (it takes a minute or so): OTAFLEET_LOAD=1 .venv/bin/python -m pytest tests/hardening/test_load.py -q
Knobs: OTAFLEET_LOAD_REQUESTS (default 3000), OTAFLEET_LOAD_CONCURRENCY (default 24), OTAFLEET_LOAD_SECONDS
(the run's time limit, default 300), OTAFLEET_LOAD_CHECKS (warm 304s, default 3000), OTAFLEET_LOAD_SANDBOXES
(the stack's --concurrency). The figures are also written to build/load/latest.json.

`otafleet-local` runs in its own process on free ports (as users run it), with its demo product: `demo`
(esp8266, redirect delivery, enrollment open) on release 1.0.1. The request mix, over a pool of devices
that enroll themselves at their first check:
- devices already on 1.0.1 (`304`),
- devices on 1.0.0 (`302` to a presigned URL; after the failure limit, `304`),
- the simple updater `/firmware/demo/stable` (`302`), every tenth redirect followed to the S3 endpoint
  and the image checked (size, magic byte),
- devices unknown to any product asking `/update` (`404`).
An error is any exception, timeout, or answer other than the one its kind expects. The run stops by
itself: a fixed number of requests, socket timeouts, and a time limit.

A second test measures warm `304` checks alone (OTAFLEET_LOAD_CHECKS, default 3000, over devices that
have checked in before), the figure the README quotes, and the same load against the seed's PHP script
served by `php -S` when `php` is on the machine, printed as a ratio (or that PHP is absent).
Enrollment's rate limit is lifted for the run (`--env ENROLL_PER_HOUR=…`): the pool is larger than an
hour's worth of new devices, and the limit is not what this measures.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from e2e.harness import ROOT, esp_request, raw_request, stack_command, stack_env

pytestmark = [
    pytest.mark.load,
    pytest.mark.skipif(os.environ.get("OTAFLEET_LOAD") != "1", reason="the load test runs with OTAFLEET_LOAD=1"),
]

REQUESTS = int(os.environ.get("OTAFLEET_LOAD_REQUESTS", "3000"))
CHECKS = int(os.environ.get("OTAFLEET_LOAD_CHECKS", "3000"))
# otafleet-local's --concurrency (sandboxes per function); unset: its default.
SANDBOXES = os.environ.get("OTAFLEET_LOAD_SANDBOXES")
CONCURRENCY = int(os.environ.get("OTAFLEET_LOAD_CONCURRENCY", "24"))
TIME_LIMIT = float(os.environ.get("OTAFLEET_LOAD_SECONDS", "300"))
DEVICES = 256
SOCKET_TIMEOUT = 30.0
START_TIMEOUT = 60.0
RESULTS = ROOT / "build" / "load" / "latest.json"
WARM_RESULTS = ROOT / "build" / "load" / "warm-304.json"
WARM_DEVICES = 64

# kind -> the statuses that are not errors for it
EXPECTED = {
    "up-to-date": {304},
    "outdated": {302, 304},
    "simple": {302},
    "unknown": {404},
    "download": {200},
}


@dataclass
class Sample:
    kind: str
    status: int | None
    seconds: float
    error: str | None = None


@dataclass
class Report:
    requests: int
    concurrency: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    errors: int
    error_examples: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"load: {self.requests} requests at concurrency {self.concurrency} in {self.seconds:.1f} s "
            f"-> {self.throughput:.0f} requests/s",
            f"load: latency p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"max {self.max_ms:.1f} ms",
            f"load: statuses {self.statuses}, errors {self.errors}",
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("load-stack")
    ready = workdir / "ready.json"
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            stack_command(
                *("--port", "0", "--aws-port", "0", "--quiet", "--ready-file", str(ready)),
                *("--data", str(workdir / "data"), "--env", "ENROLL_PER_HOUR=1000000"),
                *(("--concurrency", SANDBOXES) if SANDBOXES else ()),
            ),
            cwd=ROOT,
            env=stack_env(),
            stdout=out,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            assert process.poll() is None, f"otafleet-local exited with {process.returncode}: {_tail(workdir)}"
            assert time.monotonic() < deadline, f"otafleet-local not ready in {START_TIMEOUT:g} s: {_tail(workdir)}"
            time.sleep(0.05)
        info: dict[str, Any] = json.loads(ready.read_text())
        assert info["demo"] and info["demo"]["registered"], f"the demo release is not registered: {info}"
        yield info
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(workdir: Path) -> str:
    return "".join(p.read_text(errors="replace")[-3000:] for p in sorted(workdir.glob("*.log")))


def device_headers(mac: str, version: str) -> dict[str, str]:
    return {
        "User-Agent": "ESP8266-http-Update",
        "x-ESP8266-STA-MAC": mac,
        "x-ESP8266-AP-MAC": mac,
        "x-ESP8266-free-space": "1044480",
        "x-ESP8266-sketch-size": "301232",
        "x-ESP8266-chip-size": "4194304",
        "x-ESP8266-sdk-version": "2.2.2-dev(38a443e)",
        "x-ESP8266-mode": "sketch",
        "x-ESP8266-Chip-ID": "1234567",
        "x-ESP8266-version": version,
    }


def plan(n: int) -> list[tuple[str, int]]:
    """(kind, device number) for each request: deterministic, interleaved."""
    kinds = ["up-to-date"] * 5 + ["outdated"] * 3 + ["simple", "unknown"]
    return [(kinds[i % len(kinds)], (i * 7) % DEVICES) for i in range(n)]


class Client:
    def __init__(self, info: dict[str, Any]) -> None:
        self.host, port = urlsplit(info["api_url"]).netloc.rsplit(":", 1)
        self.port = int(port)
        self.redirects = 0
        self.lock = threading.Lock()

    def one(self, kind: str, device: int) -> list[Sample]:
        mac = f"5C:CF:7F:{0x40 + (device >> 8):02X}:{device & 0xFF:02X}:{0x11 if kind != 'outdated' else 0x22:02X}"
        if kind == "unknown":
            target, headers = "/update", device_headers(f"5C:CF:7F:EE:{device & 0xFF:02X}:00", "1.0.0")
        elif kind == "simple":
            target, headers = "/firmware/demo/stable", {"User-Agent": "ESP8266-http-Update"}
        else:
            target, headers = "/update/demo", device_headers(mac, "1.0.1" if kind == "up-to-date" else "1.0.0")
        request = esp_request(target, f"{self.host}:{self.port}", headers)
        sample, location = self._timed(kind, self.host, self.port, request)
        samples = [sample]
        if location and kind == "simple":
            with self.lock:
                self.redirects += 1
                follow = self.redirects % 10 == 0
            if follow:
                samples.append(self._download(location))
        return samples

    def _timed(self, kind: str, host: str, port: int, request: bytes) -> tuple[Sample, str | None]:
        started = time.perf_counter()
        try:
            response = raw_request(host, port, request, timeout=SOCKET_TIMEOUT)
        except Exception as exc:
            return Sample(kind, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"), None
        seconds = time.perf_counter() - started
        error = None
        if response.status not in EXPECTED[kind]:
            error = f"{kind}: {response.status} {response.body[:120]!r}"
        elif response.status in (302, 304) and response.body:
            error = f"{kind}: {response.status} with a body"
        elif kind == "download" and (not response.body or response.body[0] != 0xE9):
            error = f"download: not an image ({len(response.body)} bytes)"
        elif kind == "download" and response.header("Content-Length") != str(len(response.body)):
            error = f"download: Content-Length {response.header('Content-Length')} but {len(response.body)} bytes"
        return Sample(kind, response.status, seconds, error), response.header("Location")

    def _download(self, url: str) -> Sample:
        parts = urlsplit(url)
        host, port = parts.netloc.rsplit(":", 1)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: ESP8266-http-Update\r\n\r\n"
        return self._timed("download", host, int(port), request.encode("latin-1"))[0]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(one: Callable[[str, int], list[Sample]], work: list[tuple[str, int]]) -> tuple[list[Sample], float]:
    """Every job of `work` through `one`, from CONCURRENCY threads; (samples, seconds)."""
    stop = time.monotonic() + TIME_LIMIT
    samples: list[Sample] = []
    lock = threading.Lock()
    cursor = iter(work)

    def worker() -> None:
        while time.monotonic() < stop:
            with lock:
                job = next(cursor, None)
            if job is None:
                return
            done = one(*job)
            with lock:
                samples.extend(done)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        for future in [pool.submit(worker) for _ in range(CONCURRENCY)]:
            future.result(timeout=TIME_LIMIT + SOCKET_TIMEOUT + 10)
    return samples, time.perf_counter() - started


def report_of(samples: list[Sample], elapsed: float) -> Report:
    device_samples = [s for s in samples if s.kind != "download"]
    latencies = sorted(s.seconds * 1000 for s in device_samples)
    errors = [s.error for s in samples if s.error]
    return Report(
        requests=len(device_samples),
        concurrency=CONCURRENCY,
        seconds=elapsed,
        throughput=len(device_samples) / elapsed,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1],
        statuses={f"{k} {s}": n for (k, s), n in sorted(Counter((x.kind, x.status) for x in samples).items(), key=str)},
        errors=len(errors),
        error_examples=[e for e in errors if e][:10],
    )


def test_load_on_the_local_stack(stack: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert 1 <= CONCURRENCY <= 64 and REQUESTS > 0
    client = Client(stack)
    samples, elapsed = run(client.one, plan(REQUESTS))
    report = report_of(samples, elapsed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(asdict(report), indent=2) + "\n")
    with capsys.disabled():
        print()
        for line in report.lines():
            print(line)
    assert report.requests == REQUESTS, f"stopped by the {TIME_LIMIT:g} s limit after {report.requests} requests"
    assert report.errors == 0, report.error_examples
    assert any(s.kind == "download" for s in samples), "no redirect was followed"


def warm_mac(device: int) -> str:
    return f"5C:CF:7F:{0x60 + (device >> 8):02X}:{device & 0xFF:02X}:33"


class WarmClient:
    """Device-shaped checks of devices that run the target (`x-ESP8266-version` = the release): each
    must be a `304` saying `up-to-date`. One connection per check, HTTP/1.0, as an ESP8266 asks."""

    def __init__(self, host: str, port: int, target: str, version: str, reason: str | None) -> None:
        self.host, self.port, self.target, self.version, self.reason = host, port, target, version, reason

    def one(self, kind: str, device: int) -> list[Sample]:
        request = esp_request(self.target, f"{self.host}:{self.port}", device_headers(warm_mac(device), self.version))
        started = time.perf_counter()
        try:
            response = raw_request(self.host, self.port, request, timeout=SOCKET_TIMEOUT)
        except Exception as exc:
            return [Sample(kind, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")]
        seconds = time.perf_counter() - started
        error = None
        if response.status != 304 or response.body:
            error = f"{response.status} {response.body[:120]!r}"
        elif self.reason and response.header("X-Otafleet-Reason") != self.reason:
            error = f"304 for {response.header('X-Otafleet-Reason')!r}, not {self.reason!r}"
        return [Sample(kind, response.status, seconds, error)]


# The update script of the ESP8266 core's documentation (the seed), reduced to its 304 path and its
# checks: the same headers are read and validated, the MAC looked up in `$db`, the version compared.
PHP_SCRIPT = r"""<?php
header('Content-type: text/plain; charset=utf8', true);
function check_header($name, $value = false) {
    if (!isset($_SERVER[$name])) { return false; }
    if ($value && $_SERVER[$name] != $value) { return false; }
    return true;
}
if (!check_header('HTTP_USER_AGENT', 'ESP8266-http-Update')) {
    header($_SERVER["SERVER_PROTOCOL"].' 403 Forbidden', true, 403);
    echo "only for ESP8266 updater!
";
    exit();
}
if (!check_header('HTTP_X_ESP8266_STA_MAC') || !check_header('HTTP_X_ESP8266_AP_MAC') ||
    !check_header('HTTP_X_ESP8266_FREE_SPACE') || !check_header('HTTP_X_ESP8266_SKETCH_SIZE') ||
    !check_header('HTTP_X_ESP8266_SKETCH_MD5') || !check_header('HTTP_X_ESP8266_CHIP_SIZE') ||
    !check_header('HTTP_X_ESP8266_SDK_VERSION')) {
    header($_SERVER["SERVER_PROTOCOL"].' 403 Forbidden', true, 403);
    echo "only for ESP8266 updater! (header)
";
    exit();
}
$db = array(%(db)s);
if (!isset($db[$_SERVER['HTTP_X_ESP8266_STA_MAC']])) {
    header($_SERVER["SERVER_PROTOCOL"].' 500 ESP MAC not configured for updates', true, 500);
    exit();
}
$localBinary = "./bin/".$db[$_SERVER['HTTP_X_ESP8266_STA_MAC']].".bin";
if ((!check_header('HTTP_X_ESP8266_SDK_VERSION')
        && $db[$_SERVER['HTTP_X_ESP8266_STA_MAC']] != $_SERVER['HTTP_X_ESP8266_VERSION'])
    || $_SERVER["HTTP_X_ESP8266_SKETCH_MD5"] != md5_file($localBinary)) {
    header($_SERVER["SERVER_PROTOCOL"].' 200 OK', true, 200);
    header('Content-Type: application/octet-stream', true);
    header('Content-Length: '.filesize($localBinary), true);
    header('x-MD5: '.md5_file($localBinary), true);
    readfile($localBinary);
} else {
    header($_SERVER["SERVER_PROTOCOL"].' 304 Not Modified', true, 304);
}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def php_baseline(workdir: Path, version: str, image: bytes) -> Report | None:
    """The same warm checks against the seed's PHP script under `php -S`; None without php."""
    php = shutil.which("php")
    if php is None:
        return None
    (workdir / "bin").mkdir(parents=True, exist_ok=True)
    (workdir / "bin" / f"{version}.bin").write_bytes(image)
    db = ", ".join(f"'{warm_mac(d)}' => '{version}'" for d in range(WARM_DEVICES))
    (workdir / "update.php").write_text(PHP_SCRIPT % {"db": db})
    port = _free_port()
    env = {**os.environ, "PHP_CLI_SERVER_WORKERS": str(os.cpu_count() or 1)}
    server = subprocess.Popen(
        [php, "-S", f"127.0.0.1:{port}", "-t", str(workdir)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "php -S did not listen within 10 s"
                time.sleep(0.05)
        md5 = hashlib.md5(image).hexdigest()
        client = PhpClient("127.0.0.1", port, version, md5)
        samples, elapsed = run(client.one, [("php-304", d % WARM_DEVICES) for d in range(CHECKS)])
        return report_of(samples, elapsed)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class PhpClient(WarmClient):
    """The seed script answers 304 when the sketch MD5 matches its binary's, so the device sends it."""

    def __init__(self, host: str, port: int, version: str, md5: str) -> None:
        super().__init__(host, port, "/update.php", version, None)
        self.md5 = md5

    def one(self, kind: str, device: int) -> list[Sample]:
        headers = {**device_headers(warm_mac(device), self.version), "x-ESP8266-sketch-md5": self.md5}
        request = esp_request(self.target, f"{self.host}:{self.port}", headers)
        started = time.perf_counter()
        try:
            response = raw_request(self.host, self.port, request, timeout=SOCKET_TIMEOUT)
        except Exception as exc:
            return [Sample(kind, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")]
        error = None if response.status == 304 else f"{response.status} {response.body[:120]!r}"
        return [Sample(kind, response.status, time.perf_counter() - started, error)]


def test_warm_304_checks_per_second(stack: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warm `304`s alone: devices known to the stack (each has checked in once), running the target."""
    assert 1 <= CONCURRENCY <= 64 and CHECKS > 0
    host, port = urlsplit(stack["api_url"]).netloc.rsplit(":", 1)
    demo = stack["demo"]
    client = WarmClient(host, int(port), f"/update/{demo['product']}", demo["version"], "up-to-date")
    warmup, _ = run(client.one, [("warm-up", d) for d in range(WARM_DEVICES)])  # enrolls them
    assert [s.error for s in warmup if s.error] == []
    samples, elapsed = run(client.one, [("304", i % WARM_DEVICES) for i in range(CHECKS)])
    report = report_of(samples, elapsed)
    WARM_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    WARM_RESULTS.write_text(json.dumps(asdict(report), indent=2) + "\n")
    lines = [
        f"warm 304: {report.requests} checks at concurrency {CONCURRENCY} in {report.seconds:.1f} s "
        f"-> {report.throughput:.0f} checks/s, p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms, "
        f"errors {report.errors}"
    ]
    from otafleet_local.demo import sample_image

    php = php_baseline(tmp_path / "php", demo["version"], sample_image())
    if php is None:
        lines.append("php baseline: php is absent on this machine (no ratio)")
    else:
        lines.append(
            f"php baseline (seed script, php -S): {php.throughput:.0f} checks/s, p50 {php.p50_ms:.1f} ms, "
            f"p99 {php.p99_ms:.1f} ms, errors {php.errors}; otafleet-local / php = "
            f"{report.throughput / php.throughput:.3f}"
        )
    with capsys.disabled():
        print()
        for line in lines:
            print(line)
    assert report.requests == CHECKS, f"stopped by the {TIME_LIMIT:g} s limit after {report.requests} checks"
    assert report.errors == 0, report.error_examples
