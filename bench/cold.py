"""Benchmark 3, `cold`: a new process importing the update handler and answering its first event.

Ours: a fresh `python -c` (PYTHONPATH=functions, a Lambda-like environment) that imports `update.app`
and answers one device's first check (an offer, answered with a redirect) against a moto server on
127.0.0.1: handler import, lazy imports, client creation, catalog load, the device read and write.
Floor: a fresh process that imports boto3, creates the same two clients (DynamoDB, S3) with the
production configuration and makes the calls the check cannot avoid (device GetItem, the catalog Query
that a new sandbox has not cached yet, UpdateItem, presign), with the same garbage-collector policy
as a sandbox's (otafleet.sandbox: off until the first invocation is done). Both are timed inside the
child from its first statement (interpreter start-up, the same for both, is left out; the whole
process's wall time is reported too). Runs alternate.

Also: `python -X importtime` of the handler's cold path, the top import costs, by package and by
import statement in our code: the list to act on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench import ENVIRONMENT, FUNCTIONS, REGION, scenario
from bench.common import Figure, Result, fmt, free_port, heading, median, note, ratio, say, table
from bench.floor import DYNAMODB_CONFIG, S3_CONFIG

TARGET = 1.15  # issue 16: a cold start within 1.15x of the boto3 floor
MARK = "@@bench"
PRODUCT = "door"

# Our side: exactly what the Lambda runtime does for the first event, timed from the first statement.
OURS = """\
import time
t0 = time.perf_counter()
from update import app
t1 = time.perf_counter()
response = app.handler({event!r}, None)
t2 = time.perf_counter()
print({mark!r}, t1 - t0, t2 - t1, response["statusCode"], flush=True)
"""

# The floor: boto3, the same two clients, the calls the check cannot do without.
FLOOR = """\
import time
t0 = time.perf_counter()
import gc
gc.disable()  # as otafleet.sandbox does in a sandbox: the floor gets the same collector policy
import boto3
from botocore.config import Config
dynamodb = boto3.client("dynamodb", region_name={region!r}, config=Config(**{dynamodb_config!r}))
s3 = boto3.client("s3", region_name={region!r}, config=Config(**{s3_config!r}))
t1 = time.perf_counter()
dynamodb.get_item(**{get!r})
dynamodb.query(**{catalog!r})
dynamodb.update_item(**{update!r})
url = s3.generate_presigned_url("get_object", Params={presign!r}, ExpiresIn=300)
t2 = time.perf_counter()
print({mark!r}, t1 - t0, t2 - t1, 302 if url else 500, flush=True)
"""


@dataclass(frozen=True)
class Run:
    import_s: float
    first_s: float
    status: int
    wall_s: float

    @property
    def total_s(self) -> float:
        return self.import_s + self.first_s


def run(quick: bool = False) -> Result:
    heading("3. cold: new process, import the handler and answer the first event vs. boto3 + clients + calls")
    runs = 5 if quick else 15
    result = Result("cold")
    with _MotoEndpoint() as endpoint:
        release = endpoint.seed()
        env = _lambda_env(endpoint.url)
        macs = iter(endpoint.devices(2 * (runs + 1)))
        samples: dict[str, list[Run]] = {"ours": [], "floor": []}
        for i in range(runs + 1):  # the first pair warms the OS file cache and is dropped
            order = ("ours", "floor") if i % 2 == 0 else ("floor", "ours")
            for side in order:
                mac = next(macs)
                code = _ours_code(mac) if side == "ours" else _floor_code(mac, endpoint, release)
                sample = _child(code, env)
                if sample.status != 302:
                    raise RuntimeError(f"cold {side} run answered {sample.status}, expected 302")
                if i > 0:
                    samples[side].append(sample)
        importtime = _import_costs(env, endpoint, release, 1 if quick else 3)

    ours, floor = samples["ours"], samples["floor"]
    rows = []
    parts: list[tuple[str, Callable[[Run], float]]] = [
        ("import (ours: update.app; floor: boto3 + 2 clients)", lambda r: r.import_s),
        ("first event (ours: handler; floor: GetItem + catalog Query + UpdateItem + presign)", lambda r: r.first_s),
        ("import + first event", lambda r: r.total_s),
        ("whole process, wall (incl. interpreter start-up)", lambda r: r.wall_s),
    ]
    for label, pick in parts:
        a, b = median([pick(r) * 1000 for r in ours]), median([pick(r) * 1000 for r in floor])
        rows.append([label, fmt(a, 1), fmt(b, 1), fmt(a - b, 1), fmt(ratio(a, b), 2) + "x"])
    table([f"median of {runs} runs each", "ours ms", "floor ms", "added ms", "ratio"], rows)
    total_ours = median([r.total_s * 1000 for r in ours])
    total_floor = median([r.total_s * 1000 for r in floor])
    wall_ours = median([r.wall_s * 1000 for r in ours])
    wall_floor = median([r.wall_s * 1000 for r in floor])
    result.figures.append(
        Figure(
            "cold",
            "cold start: import + first event",
            total_ours,
            total_floor,
            "ms",
            TARGET,
            note="fresh process, collector off: import boto3 + 2 clients + GetItem + Query + UpdateItem + presign",
        )
    )
    result.figures.append(
        Figure(
            "cold", "cold start: whole process (wall)", wall_ours, wall_floor, "ms", note="incl. interpreter start-up"
        )
    )
    result.details = {
        "runs": runs,
        "ours": [r.__dict__ for r in ours],
        "floor": [r.__dict__ for r in floor],
        "import_costs": importtime,
    }
    note("moto server on 127.0.0.1 (a DynamoDB request costs ~2 ms there); each run checks a new device.")
    _print_import_costs(importtime)
    return result


# --- the children --------------------------------------------------------------------------------------


def _event(mac: str) -> dict[str, Any]:
    from support.devices import esp8266_headers, http_api_event

    return http_api_event("/update", esp8266_headers(mac, version="1.0.0"))


def _ours_code(mac: str) -> str:
    return OURS.format(event=_event(mac), mark=MARK)


def _floor_code(mac: str, endpoint: _MotoEndpoint, release: dict[str, str]) -> str:
    get = {"TableName": ENVIRONMENT["DEVICES_TABLE"], "Key": {"mac": {"S": mac}}, "ConsistentRead": True}
    # The write an offer records (see otafleet.storage.devices): what the device reported, the outcome
    # and the offer, in one UpdateItem.
    at = {"S": "2026-11-24T12:00:00Z"}
    reported = {
        "version": {"S": "1.0.0"},
        "free_space": {"N": "1000000"},
        "sketch_size": {"N": "300000"},
        "chip_size": {"N": "4194304"},
        "sdk_version": {"S": "2.2.2-dev(38a443e)"},
        "mode": {"S": "sketch"},
        "source_ip": {"S": "203.0.113.7"},
        "at": at,
    }
    offer = {"kind": {"S": "app"}, "version": {"S": "1.1.0"}, "at": at, "from_version": {"S": "1.0.0"}}
    update = {
        "TableName": ENVIRONMENT["DEVICES_TABLE"],
        "Key": {"mac": {"S": mac}},
        "UpdateExpression": "SET reported = :reported, last_outcome = :outcome, last_reason = :reason, "
        "last_seen = :at, first_seen = if_not_exists(first_seen, :at), offer = :offer, offer_count = :one "
        "ADD checks :one",
        "ExpressionAttributeValues": {
            ":reported": {"M": reported},
            ":outcome": {"S": "offer"},
            ":reason": {"S": "offer"},
            ":at": at,
            ":offer": {"M": offer},
            ":one": {"N": "1"},
        },
    }
    return FLOOR.format(
        region=REGION,
        dynamodb_config=DYNAMODB_CONFIG,
        s3_config=S3_CONFIG,
        get=get,
        catalog={
            "TableName": ENVIRONMENT["CATALOG_TABLE"],
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"P#{PRODUCT}"}},  # otafleet.storage.items.product_pk
            "ConsistentRead": False,
        },
        update=update,
        presign=release,
        mark=MARK,
    )


def _lambda_env(endpoint_url: str) -> dict[str, str]:
    """What a Lambda sandbox's environment holds (plus the local endpoint): nothing from ours."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": str(FUNCTIONS),
        "LAMBDA_TASK_ROOT": str(FUNCTIONS),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": "otafleet-UpdateFunction",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/otafleet-UpdateFunction",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/24/[$LATEST]bench",
        **ENVIRONMENT,
        # DynamoDB on the moto server; S3 keeps its real regional https endpoint, as deployed, so the
        # presigned URL and the redirect decision are the production ones (presigning sends nothing).
        # Anything else that tried to leave this machine would meet a closed proxy port.
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _child(code: str, env: dict[str, str], *flags: str) -> Run:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            _, import_s, first_s, status = line.split()
            return Run(float(import_s), float(first_s), int(status), wall)
    raise RuntimeError(f"child exited {done.returncode} without a result:\n{done.stderr[-2000:]}")


# --- the AWS endpoint -------------------------------------------------------------------------------


class _MotoEndpoint:
    """A moto server on a free 127.0.0.1 port, with the stack's tables and bucket and a seeded fleet."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._settings: Any = None
        self._dynamodb: Any = None
        self._devices = 0

    def __enter__(self) -> _MotoEndpoint:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )

    def settings(self) -> Any:
        from otafleet.config import load_settings

        return replace(load_settings(), endpoint_url=self.url)

    def seed(self) -> dict[str, str]:
        """Product `door` (redirect delivery) on 1.1.0; returns the presign parameters of its image."""
        from otafleet_local import resources

        self._settings = self.settings()
        self._dynamodb, s3 = self.client("dynamodb"), self.client("s3")
        resources.create(self._settings, self._dynamodb, s3)
        return scenario.seed_product(
            self._settings, self._dynamodb, s3, PRODUCT, versions=("1.0.0", "1.1.0"), current="1.1.0"
        )

    def devices(self, count: int) -> list[str]:
        """`count` new devices assigned to door/stable, each to be checked once."""
        first, self._devices = self._devices, self._devices + count
        macs = [f"5C:CF:7F:20:{i // 256:02X}:{i % 256:02X}" for i in range(first, first + count)]
        scenario.seed_devices(self._settings, self._dynamodb, PRODUCT, macs)
        return macs


# --- import costs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Import:
    self_us: int
    cumulative_us: int
    depth: int
    name: str


OWN = ("update", "otafleet")


def _import_costs(
    env: dict[str, str], endpoint: _MotoEndpoint, release: dict[str, str], repeats: int
) -> dict[str, Any]:
    """`python -X importtime` of ours (import + first event) and of the floor, `repeats` times each;
    medians per entry. Only ours' cold path counts (the interpreter's start-up imports are left out);
    the floor's runs say which of those imports the floor makes too, i.e. which cost nothing extra."""
    by_package: dict[str, list[float]] = defaultdict(list)
    extra_by_package: dict[str, list[float]] = defaultdict(list)
    extra_by_module: dict[str, list[float]] = defaultdict(list)
    by_statement: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    extra_totals: list[float] = []
    floor_modules: set[str] = set()
    ours_runs: list[list[_Import]] = []
    for mac, floor_mac in zip(endpoint.devices(repeats), endpoint.devices(repeats), strict=True):
        ours_runs.append(_cold_path(_parse_importtime(_importtime(_ours_code(mac), env))))
        floor_code = _floor_code(floor_mac, endpoint, release)
        floor_modules.update(i.name for i in _parse_importtime(_importtime(floor_code, env)))
    for imports in ours_runs:
        totals.append(sum(i.self_us for i in imports) / 1000)
        extra_totals.append(sum(i.self_us for i in imports if i.name not in floor_modules) / 1000)
        packages: dict[str, float] = defaultdict(float)
        extra: dict[str, float] = defaultdict(float)
        for imp in imports:
            packages[imp.name.split(".")[0]] += imp.self_us / 1000
            if imp.name not in floor_modules:
                extra[imp.name.split(".")[0]] += imp.self_us / 1000
                extra_by_module[imp.name].append(imp.self_us / 1000)
        for name, ms in packages.items():
            by_package[name].append(ms)
            extra_by_package[name].append(extra.get(name, 0.0))
        for parent, child in _statements(imports):
            by_statement[f"{child.name}  <- {parent}"].append(child.cumulative_us / 1000)

    def medians(found: dict[str, list[float]]) -> dict[str, float]:
        # Missing from a run counts as 0 (an import that happened once is not typical).
        return {n: median(v + [0.0] * (repeats - len(v))) for n, v in found.items()}

    def top(values: dict[str, float]) -> list[tuple[str, float]]:
        return sorted(values.items(), key=lambda x: -x[1])[:10]

    package_ms, extra_package_ms = medians(by_package), medians(extra_by_package)
    return {
        "runs": repeats,
        "total_import_ms": median(totals),
        "not_in_floor_ms": median(extra_totals),
        "top_packages_self_ms": [(n, ms, extra_package_ms.get(n, 0.0)) for n, ms in top(package_ms)],
        "top_modules_not_in_floor_self_ms": top(medians(extra_by_module)),
        "top_imports_by_our_code_cumulative_ms": [
            (n, ms, n.split("  <- ")[0] in floor_modules) for n, ms in top(medians(by_statement))
        ],
    }


def _importtime(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if MARK not in done.stdout:
        raise RuntimeError(f"importtime run failed ({done.returncode}):\n{done.stderr[-1500:]}")
    return done.stderr


def _parse_importtime(stderr: str) -> list[_Import]:
    found: list[_Import] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3:
            continue
        name = fields[2].rstrip()
        stripped = name.lstrip(" ")
        found.append(_Import(int(fields[0]), int(fields[1]), (len(name) - len(stripped) - 1) // 2, stripped))
    return found


def _cold_path(imports: list[_Import]) -> list[_Import]:
    """The imports from `from update import app` on: importtime lists a module after the modules it
    imports, so the cold path starts after the last top-level import before `update`'s."""
    first = next((i for i, imp in enumerate(imports) if imp.depth == 0 and imp.name.split(".")[0] == "update"), None)
    if first is None:
        return imports
    boundary = max((i for i in range(first) if imports[i].depth == 0), default=-1)
    return imports[boundary + 1 :]


LAZY = "(first event, lazily)"


def _statements(imports: list[_Import]) -> list[tuple[str, _Import]]:
    """(importing module, imported module) for every import our code makes of someone else's module.
    importtime lists children before their parent, one indentation level deeper; a top-level entry
    after `update.app` was imported from inside a function while the first event ran."""
    found = []
    done = next((i for i, imp in enumerate(imports) if imp.depth == 0 and imp.name == "update.app"), len(imports))
    for i, imp in enumerate(imports):
        if imp.name.split(".")[0] in OWN:
            continue
        if imp.depth == 0 and i > done:
            found.append((LAZY, imp))
            continue
        parent = next((p for p in imports[i + 1 :] if p.depth == imp.depth - 1), None)
        if parent is not None and parent.name.split(".")[0] in OWN:
            found.append((parent.name, imp))
    return found


def _print_import_costs(costs: dict[str, Any]) -> None:
    say(f"\n   import costs of ours (python -X importtime, import + first event, median of {costs['runs']}):")
    say(
        f"   cold-path imports {fmt(costs['total_import_ms'], 1)} ms, of which modules the floor never imports "
        f"{fmt(costs['not_in_floor_ms'], 1)} ms (sums of self times; -X importtime inflates them a bit)"
    )
    table(
        ["top packages (sum of self times)", "ms", "not in floor ms"],
        [[n, fmt(ms, 1), fmt(extra, 1)] for n, ms, extra in costs["top_packages_self_ms"]],
    )
    say("")
    table(
        ["top modules the floor never imports (self time)", "ms"],
        [[n, fmt(ms, 1)] for n, ms in costs["top_modules_not_in_floor_self_ms"]],
    )
    say("")
    table(
        ["top imports made by our code (cumulative)  <- importing module", "ms", "floor imports it too"],
        [
            [n, fmt(ms, 1), "yes" if shared else "no"]
            for n, ms, shared in costs["top_imports_by_our_code_cumulative_ms"]
        ],
    )
