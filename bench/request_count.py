"""Benchmark 2, `requests`: AWS requests per update check, per decision outcome.

Counted with botocore event hooks (`before-call.dynamodb` / `before-call.s3`, and presigns via
`before-parameter-build` with `is_presign_request`) on the clients `otafleet.storage.clients` gives
the handler. A warm check is one after the container served a check already (clients created,
catalog cached); the first check of a new container is shown apart, since it also loads the catalog.
Target (product.md §7): a warm check costs at most 1 DynamoDB read and 1 write; the `304` device is in
its steady state (rhythm learned, nothing new to record: bench/scenario.py), so it reads 1 and writes 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench import scenario
from bench.common import Figure, Result, heading, note, table
from bench.hooks import READ_OPS, WRITE_OPS, Recorder, handler_clients

MAX_READS = 1
MAX_WRITES = 1


def run(quick: bool = False) -> Result:
    heading("2. requests: DynamoDB and S3 requests per update check, by outcome")
    checks = 5 if quick else 20
    result = Result("requests")
    rows: list[list[object]] = []
    totals: dict[str, tuple[float, float]] = {}
    with scenario.fleet() as fleet:
        for name, case in fleet.cases.items():
            # The first check of a fresh container, then `checks` warm ones.
            scenario.reset_handler()
            first = _count(case, 1)
            warm = _count(case, checks)
            per_check = {k: v / checks for k, v in warm.items()}
            reads = sum(v for k, v in per_check.items() if k.split(".")[1] in READ_OPS)
            writes = sum(v for k, v in per_check.items() if k.split(".")[1] in WRITE_OPS)
            first_ddb = sum(v for k, v in first.items() if k.startswith("dynamodb."))
            ok = reads <= MAX_READS and writes <= MAX_WRITES
            rows.append(
                [
                    name,
                    _n(per_check, "dynamodb.GetItem"),
                    _n(per_check, "dynamodb.UpdateItem"),
                    _n(per_check, "dynamodb.Query"),
                    _n(per_check, "dynamodb.TransactWriteItems"),
                    _other(per_check, "dynamodb.", {"GetItem", "UpdateItem", "Query", "TransactWriteItems"}),
                    _n(per_check, "s3.GetObject"),
                    _other(per_check, "s3.", {"GetObject", "presign"}),
                    _n(per_check, "s3.presign"),
                    f"{_num(reads)} + {_num(writes)}",
                    "yes" if ok else "NO",
                    first_ddb,
                ]
            )
            result.details[name] = {
                "status": case.status,
                "warm_per_check": per_check,
                "dynamodb_reads": reads,
                "dynamodb_writes": writes,
                "within_target": ok,
                "first_check_of_container": dict(first),
            }
            totals[name] = (reads, writes)
    table(
        [
            "outcome (warm check)",
            "GetItem",
            "UpdateItem",
            "Query",
            "TransactWrite",
            "other DDB",
            "S3 GetObject",
            "other S3",
            "presign",
            "reads + writes",
            "<= 1+1",
            "DDB, 1st check",
        ],
        rows,
    )
    worst = max(totals.values(), key=sum)
    result.figures.append(
        Figure(
            "requests",
            "DynamoDB requests per warm check (worst outcome)",
            sum(worst),
            MAX_READS + MAX_WRITES,
            "req",
            1.0,
            note="1 read + 1 write; ours: "
            + ", ".join(f"{n.split(' ')[0]} {_num(r)}+{_num(w)}" for n, (r, w) in totals.items()),
        )
    )
    note(f"averages over {checks} warm checks per outcome (presigning sends no request).")
    note("'DDB, 1st check': DynamoDB requests of the first check in a new container (catalog not cached yet).")
    return result


def _count(case: scenario.Case, checks: int) -> Counter[str]:
    # The handler's clients are created once per process by lru-cached factories: creating them here
    # first hands the handler the very objects the hooks are attached to.
    recorder = Recorder().attach(handler_clients())
    try:
        for _ in range(checks):
            response = scenario.call(case.event)
            if response.get("statusCode") != case.status:
                raise RuntimeError(
                    f"{case.name}: the handler answered {response.get('statusCode')}, expected {case.status}"
                )
    finally:
        recorder.detach()
    return recorder.counts()


def _n(counts: dict[str, float], key: str) -> str:
    return _num(counts.get(key, 0.0))


def _other(counts: dict[str, float], prefix: str, known: set[str]) -> str:
    rest = {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix) and k[len(prefix) :] not in known}
    return ", ".join(f"{k} {_num(v)}" for k, v in sorted(rest.items())) or "0"


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
