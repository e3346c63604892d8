"""Benchmark 5, `local`: device-shaped HTTP/1.0 requests at concurrency 32 against the local stack.

Ours: `otafleet_local.LocalStack` (HTTP API, update function, moto server) started in a process of its
own (`python -m bench.serve stack`), seeded with devices that are all up to date, so every check is a
304 as most real checks are. Floor: the same load against a bare stdlib `ThreadingHTTPServer` that
answers every request with 304 (`python -m bench.serve floor`): the ratio is our overhead over the
HTTP plumbing. The load (this process, asyncio) sends a fixed number of requests, each on its own
connection like the ESP clients, loopback only, and stops by itself.

`python -m bench local --url http://127.0.0.1:3000` loads a server that is already running instead
(e.g. `make run`; it must know the devices `bench.serve.device_macs` names, or answers 404).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import REPO
from bench.common import Figure, Result, fmt, heading, note, percentile, ratio, table
from bench.serve import VERSION, device_macs

CONCURRENCY = 32
DEVICES = 256
REQUEST_TIMEOUT = 30.0


@dataclass
class Load:
    requests: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "throughput_rps": self.throughput,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p99_ms": percentile(self.latencies_ms, 99),
            "errors": self.errors,
            "statuses": dict(self.statuses),
        }


def run(quick: bool = False, url: str | None = None) -> Result:
    heading(f"5. local: device-shaped HTTP/1.0 checks at concurrency {CONCURRENCY}, local stack vs. bare HTTP server")
    requests = 400 if quick else 2000
    result = Result("local")
    loads: dict[str, Load] = {}
    with _Server("floor") as floor_url:
        _load(floor_url, 100)  # warm-up
        loads["floor"] = _load(floor_url, requests)
    if url is None:
        try:
            with _Server("stack", str(DEVICES)) as stack_url:
                _load(stack_url, 2 * CONCURRENCY)  # warm-up: handler imported, clients made
                loads["ours"] = _load(stack_url, requests)
        except _Unavailable as why:
            result.skipped = f"local stack not available: {why}"
    else:
        loads["ours"] = _load(url, requests)

    rows = []
    for name, load in loads.items():
        d = load.as_dict()
        rows.append(
            [
                "local stack" if name == "ours" else "bare http.server (304)",
                load.requests,
                fmt(load.seconds, 2),
                fmt(load.throughput, 0),
                fmt(d["p50_ms"], 1),
                fmt(d["p99_ms"], 1),
                load.errors,
                ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items())),
            ]
        )
        result.details[name] = d
    table(["server", "requests", "seconds", "req/s", "p50 ms", "p99 ms", "errors", "answers"], rows)
    if result.skipped:
        note(result.skipped)
        return result
    ours, base = loads["ours"], loads["floor"]
    result.figures.append(
        Figure(
            "local",
            f"local stack throughput at c={CONCURRENCY}",
            ours.throughput,
            base.throughput,
            "req/s",
            note="floor: bare http.server answering 304 (ratio < 1: slower)",
        )
    )
    result.figures.append(
        Figure(
            "local",
            f"local stack p50 latency at c={CONCURRENCY}",
            percentile(ours.latencies_ms, 50),
            percentile(base.latencies_ms, 50),
            "ms",
            note=f"p99 {fmt(percentile(ours.latencies_ms, 99), 1)} vs {fmt(percentile(base.latencies_ms, 99), 1)} ms",
        )
    )
    note(f"{DEVICES} devices, all up to date (304), round robin; one connection per request, as ESP clients do.")
    note(
        f"ours is {fmt(ratio(base.throughput, ours.throughput), 1)}x slower than the bare server. The local stack "
        "runs one invocation at a time (one Lambda sandbox)."
    )
    return result


# --- servers ------------------------------------------------------------------------------------------


class _Unavailable(Exception):
    pass


class _Server:
    """`python -m bench.serve KIND ...` in a process of its own; its URL once it serves."""

    def __init__(self, kind: str, *args: str) -> None:
        self.kind, self.args = kind, args
        self.process: subprocess.Popen[str] | None = None
        self.dir = tempfile.TemporaryDirectory(prefix="otafleet-bench-")
        self.log = Path(self.dir.name) / "server.log"

    def __enter__(self) -> str:
        ready = Path(self.dir.name) / "ready"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.serve", self.kind, str(ready), *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                cwd=REPO,
                env=env,
            )
        deadline = time.monotonic() + 90
        while not (ready.exists() and ready.read_text().endswith("\n")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text()[-1500:] if self.log.exists() else ""
                self.__exit__()
                raise _Unavailable(f"`bench.serve {self.kind}` did not start:\n{tail}")
            time.sleep(0.05)
        return ready.read_text().strip()

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is not None:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.terminate()  # the process this object started, by its handle
                process.wait(timeout=10)
            self.process = None
        self.dir.cleanup()


# --- load --------------------------------------------------------------------------------------------


def _request(host: str, port: int, mac: str) -> bytes:
    from support.devices import esp8266_headers

    headers = esp8266_headers(mac, version=VERSION)
    lines = ["GET /update HTTP/1.0", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _load(url: str, requests: int) -> Load:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payloads = [_request(host, port, mac) for mac in device_macs(DEVICES)]
    return asyncio.run(_drive(host, port, payloads, requests))


async def _drive(host: str, port: int, payloads: list[bytes], requests: int) -> Load:
    load = Load(requests)
    issued = 0

    async def one(payload: bytes) -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT)
            try:
                writer.write(payload)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
            finally:
                writer.close()
        except (OSError, TimeoutError) as error:
            load.errors += 1
            load.statuses[type(error).__name__] += 1
            return
        load.latencies_ms.append((time.perf_counter() - started) * 1000)
        status = answer.split(b" ", 2)[1].decode(errors="replace") if answer.startswith(b"HTTP/") else "garbled"
        load.statuses[status] += 1
        if not status.isdigit() or int(status) >= 500:
            load.errors += 1

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            payload = payloads[issued % len(payloads)]
            issued += 1
            await one(payload)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    load.seconds = time.perf_counter() - started
    return load
