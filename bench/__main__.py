"""`python -m bench [--quick] [NAME ...]`: run the benchmarks, print ratios, write bench/results/.

NAME is one of warm, requests, cold, publish, local, cost (default: all, in that order). Nothing fails on a
target: the summary prints each measured ratio next to the issue's target.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench
from bench.common import (
    Figure,
    Result,
    fmt,
    heading,
    loopback_only,
    note,
    say,
    silence_code_under_test,
    table,
    target_text,
)

BENCHMARKS: dict[str, str] = {
    "warm": "bench.warm",
    "requests": "bench.request_count",
    "cold": "bench.cold",
    "publish": "bench.publish",
    "local": "bench.local",
    "cost": "bench.cost",
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run in well under a minute")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--write-doc", action="store_true", help="cost: render docs/cost.md from this run's figures")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="local: load this already running server (e.g. http://127.0.0.1:3000) instead of starting a local stack",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.names or list(BENCHMARKS)
    loopback_only()
    silence_code_under_test()
    started = time.monotonic()
    started_at = datetime.now(UTC)
    say(f"otafleet benchmarks ({'quick' if args.quick else 'full'} run): {', '.join(names)}")
    say(f"python {platform.python_version()} on {platform.machine()}, {_cpus()} CPUs; figures are medians")
    results: list[Result] = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        run: Callable[..., Result] = module.run
        t0 = time.monotonic()
        try:
            result = run(args.quick, url=args.url) if name == "local" and args.url else run(args.quick)
        except Exception as error:  # one broken benchmark must not hide the others
            traceback.print_exc()
            result = Result(name, skipped=f"failed: {type(error).__name__}: {error}")
            note(f"{name} FAILED: {type(error).__name__}: {error}")
        result.details["seconds"] = round(time.monotonic() - t0, 1)
        results.append(result)
    elapsed = time.monotonic() - started
    summary(results, elapsed)
    if args.write_doc:
        from bench import cost

        for result in results:
            if result.name == "cost" and not result.skipped:
                cost.write_doc(result)
                say(f"\nwrote {cost.DOC.relative_to(bench.REPO)}")
    if not args.no_save:
        path = save(results, args, elapsed, started_at)
        say(f"\nresults: {path.relative_to(bench.REPO)} (and {(RESULTS / 'latest.json').relative_to(bench.REPO)})")
    return 0


def summary(results: list[Result], elapsed: float) -> None:
    heading(f"summary ({elapsed:.0f} s)")
    rows: list[list[object]] = []
    for result in results:
        if result.skipped:
            rows.append([result.name, "skipped", "", "", "", "", result.skipped])
        for f in result.figures:
            rows.append(
                [f.label, _value(f.ours, f.unit), _value(f.floor, f.unit), _ratio(f), target_text(f), "", f.note]
            )
    table(["figure", "ours", "floor", "ratio", "target", "", "floor is"], rows)
    note("ratios compare medians measured in this run; targets are the issues' goals and are never enforced.")


def _value(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.2f}"
    return f"{fmt(value, 3 if unit == 'ms' and value < 10 else 1)} {unit}"


def _ratio(figure: Figure) -> str:
    r = figure.ratio
    return "-" if math.isnan(r) else f"{r:.2f}x"


def save(results: list[Result], args: argparse.Namespace, elapsed: float, now: datetime) -> Path:
    RESULTS.mkdir(exist_ok=True)
    document: dict[str, Any] = {
        "started": now.isoformat(timespec="seconds"),
        "quick": args.quick,
        "benchmarks": [r.name for r in results],
        "seconds": round(elapsed, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": _cpus(),
        "git": _git_head(),
        "results": [r.as_dict() for r in results],
    }
    text = json.dumps(_finite(document), indent=2, default=str, allow_nan=False)
    path = RESULTS / f"{now.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    path.write_text(text + "\n")
    (RESULTS / "latest.json").write_text(text + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _git_head() -> str | None:
    head = bench.REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (bench.REPO / ".git" / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
