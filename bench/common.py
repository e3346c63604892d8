"""What every benchmark shares: loopback-only networking, timing, statistics and printing."""

from __future__ import annotations

import gc
import math
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from otafleet_local.loopback import is_loopback_address

# --- the network stays on this machine ------------------------------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkRefused(RuntimeError):
    """The benchmark tried to reach something other than this machine's loopback."""


def loopback_only() -> None:
    """Refuse every outgoing connection except to 127.0.0.1/::1 for the rest of this process."""

    def connect(self: socket.socket, address: Any) -> None:
        if not is_loopback_address(address):
            raise NetworkRefused(f"benchmark tried to connect to {address!r}")
        _real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not is_loopback_address(address):
            raise NetworkRefused(f"benchmark tried to connect to {address!r}")
        return _real_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- statistics -------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(ours: float, floor: float) -> float:
    return ours / floor if floor > 0 and not math.isnan(floor) else math.nan


def summary_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    ms = [s / 1e6 for s in samples_ns]
    return {
        "n": len(ms),
        "median_ms": median(ms),
        "p10_ms": percentile(ms, 10),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "min_ms": min(ms) if ms else math.nan,
    }


# --- timing -------------------------------------------------------------------------------------------


def interleaved(
    sides: dict[str, Callable[[], object]],
    *,
    batches: int,
    per_batch: int,
    check: Callable[[str, object], None] | None = None,
) -> dict[str, list[int]]:
    """Time every side `batches * per_batch` times, one call per sample, in alternating batches
    (the side that goes first rotates) so that drift on a noisy machine hits every side alike.
    `check(side, result)` runs outside the timed region after every call."""
    names = list(sides)
    samples: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for batch in range(batches):
        order = names[batch % len(names) :] + names[: batch % len(names)]
        for name in order:
            fn, out = sides[name], samples[name]
            gc.collect()
            for _ in range(per_batch):
                started = clock()
                result = fn()
                out.append(clock() - started)
                if check is not None:
                    check(name, result)
    return samples


# The terminal. The code under test prints too (one JSON log line per decision, EMF metrics), and
# loggers keep the stream they found when they were created: `silence_code_under_test()` points
# `sys.stdout` at /dev/null for the whole run, the way a Lambda's stdout goes to a pipe (the writing
# still happens), and the benchmarks' own output goes to OUT.
OUT: TextIO = sys.stdout
_SINK: TextIO | None = None


def silence_code_under_test() -> None:
    global _SINK
    if _SINK is None:
        _SINK = open(os.devnull, "w")  # noqa: SIM115 - open for the life of the process
    sys.stdout = _SINK


def say(*parts: object, end: str = "\n") -> None:
    print(*parts, end=end, file=OUT, flush=True)


# --- results -----------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the final summary: our number, its floor, the ratio and the issue's target."""

    benchmark: str
    label: str
    ours: float
    floor: float
    unit: str
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return ratio(self.ours, self.floor)

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "label": self.label,
            "ours": self.ours,
            "floor": self.floor,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": self.target,
            "note": self.note,
        }


@dataclass
class Result:
    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "skipped": self.skipped,
            "figures": [f.as_dict() for f in self.figures],
            "details": self.details,
        }


# --- printing ----------------------------------------------------------------------------------------


def heading(text: str) -> None:
    say(f"\n== {text} " + "=" * max(0, 96 - len(text)))


def note(text: str) -> None:
    say(f"   {text}")


def fmt(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: str = "   ") -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return indent + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    say(line(cells[0]))
    say(indent + "  ".join("-" * w for w in widths))
    for row in cells[1:]:
        say(line(row))


def target_text(figure: Figure) -> str:
    if figure.target is None:
        return "-"
    if figure.unit == "$":  # a price goal is absolute, not a ratio to the floor
        met = figure.ours <= figure.target
        return f"<= ${figure.target:.2f}  ({'met' if met else 'not met'})"
    r = figure.ratio
    verdict = "" if math.isnan(r) else ("  (met)" if r <= figure.target else "  (not met)")
    return f"<= {figure.target:g}x{verdict}"
