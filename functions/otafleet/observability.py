"""Logging, metrics and tracing, created once and only when first used.

Powertools Logger writes one JSON line per call. Metrics are CloudWatch EMF written here: all of an
invocation's counts in one line (EMF allows several directives per line, each with its dimensions, the
values as top-level fields), with low-cardinality dimensions only (never a MAC). The EMF format is small
and fixed, and writing it directly keeps Powertools Metrics off the update function's cold path and its
per-metric validation off every check. The X-Ray SDK is imported only when tracing is switched on.

A Lambda sandbox runs one invocation at a time, but the local stack runs several at once in one process
(its sandboxes share these objects), so what belongs to one invocation is kept per thread: the log
keys are Powertools' thread-safe (context-local) keys, and the counts are thread-local.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from otafleet import sandbox

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "otafleet")


@lru_cache(maxsize=1)
def logger() -> Logger:
    from aws_lambda_powertools import Logger

    return Logger(service=SERVICE)


@lru_cache(maxsize=1)
def _namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "otafleet")


@lru_cache(maxsize=1)
def _metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "false").lower() in ("true", "1")


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in ("false", "0")


_Key = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, its dimensions)
_counts = threading.local()  # this invocation's counts: {(name, dimensions): value}


def count(name: str, value: int = 1, **dimensions: str) -> None:
    """Count `name` in this invocation's metrics (with `service` and these dimensions); they leave in one
    EMF line when the invocation ends (`flush`)."""
    if _metrics_disabled():
        return
    pending: dict[_Key, int] | None = getattr(_counts, "pending", None)
    if pending is None:
        pending = _counts.pending = {}
    key = (name, tuple(sorted(dimensions.items())))
    pending[key] = pending.get(key, 0) + value


def _documents(keys: tuple[_Key, ...]) -> list[tuple[dict[str, Any], list[_Key]]]:
    """The EMF documents for counts with these keys (values not filled in), each with the keys whose values
    it carries: one document, unless a metric name or a dimension's value would appear twice with
    different meanings in it (both are top-level fields); such a count gets a document of its own."""
    docs: list[tuple[dict[str, Any], list[_Key]]] = []
    for key in keys:
        name, dims = key
        fields = {"service": SERVICE, **dict(dims)}
        found = next(
            (d for d in docs if name not in d[0] and all(d[0].get(k, v) == v for k, v in fields.items())),
            None,
        )
        if found is None:
            found = ({"_aws": {"Timestamp": 0, "CloudWatchMetrics": []}}, [])
            docs.append(found)
        doc, carried = found
        doc.update(fields)
        doc[name] = None
        carried.append(key)
        directives = doc["_aws"]["CloudWatchMetrics"]
        same = next((d for d in directives if d["Dimensions"] == [list(fields)]), None)
        if same is None:  # metrics with the same dimensions share one directive
            same = {"Namespace": _namespace(), "Dimensions": [list(fields)], "Metrics": []}
            directives.append(same)
        same["Metrics"].append({"Name": name, "Unit": "Count"})
    return docs


def emf_lines(pending: dict[_Key, int], now_ms: int) -> list[dict[str, Any]]:
    """The EMF documents for these counts (see _documents)."""
    lines = []
    for doc, carried in _documents(tuple(pending)):
        doc["_aws"]["Timestamp"] = now_ms
        for key in carried:
            doc[key[0]] = float(pending[key])
        lines.append(doc)
    return lines


@lru_cache(maxsize=256)
def _layout(namespace: str, keys: tuple[_Key, ...]) -> tuple[tuple[str, tuple[tuple[str, _Key], ...]], ...]:
    """The documents for these counts as JSON text around the timestamp and the values, and which count
    each value is: a sandbox sees the same few sets of counts over and over (a warm 304's are always
    the same three), so each set is laid out once."""
    out = []
    for doc, carried in _documents(keys):
        directives = json.dumps(doc.pop("_aws")["CloudWatchMetrics"], separators=(",", ":"))
        for key in carried:
            del doc[key[0]]
        dimensions = json.dumps(doc, separators=(",", ":"))[1:-1]
        values = tuple((json.dumps(key[0]), key) for key in carried)
        out.append((f'"CloudWatchMetrics":{directives}}},{dimensions}', values))
    return tuple(out)


def flush() -> None:
    """Write this invocation's counts as EMF to stdout (one line in the usual case) and forget them."""
    pending = getattr(_counts, "pending", None)
    _counts.pending = {}
    if not pending:
        return
    now_ms = int(time.time() * 1000)
    for text, values in _layout(_namespace(), tuple(pending)):
        numbers = ",".join(f"{name}:{float(pending[key])!r}" for name, key in values)
        print(f'{{"_aws":{{"Timestamp":{now_ms},{text},{numbers}}}')


_cold = True


def _request_id(event: Any) -> str | None:
    """API Gateway's request id (the access log's `requestId`), or S3's for an event notification."""
    if not isinstance(event, dict):
        return None
    found = (event.get("requestContext") or {}).get("requestId")
    if found is None and event.get("Records"):
        found = ((event["Records"][0] or {}).get("responseElements") or {}).get("x-amz-request-id")
    return found if isinstance(found, str) else None


def _with_context(func: Any) -> Any:
    """Every log line of an invocation carries its request ids and whether it started the sandbox, so a
    decision can be joined with API Gateway's access log; the first invocation counts a ColdStart."""

    def run(event: Any, context: Any) -> Any:
        global _cold
        cold, _cold = _cold, False
        logger().thread_safe_append_keys(
            correlation_id=_request_id(event),
            lambda_request_id=getattr(context, "aws_request_id", None),
            cold_start=cold,
        )
        if not cold:
            return func(event, context)
        count("ColdStarts")
        try:
            return func(event, context)
        finally:
            sandbox.first_invocation_done()

    return run


def _flushing_metrics(func: Any) -> Any:
    """Flush this invocation's metrics after it, raised or not (what Powertools' `log_metrics` does, in
    one line per invocation)."""

    @functools.wraps(func)
    def run(event: Any, context: Any) -> Any:
        try:
            return func(event, context)
        finally:
            flush()

    return run


def handler_wrapper(func: Any) -> Any:
    """Log context on every line, flush metrics after every invocation; add the tracer only when
    tracing is on."""
    wrapped = _flushing_metrics(_with_context(func))
    if tracing_enabled():
        if importlib.util.find_spec("aws_xray_sdk") is None:
            # Lambda's own active tracing still records the invocation; the SDK adds subsegments for
            # AWS calls. It is not packaged by default (it brings its own botocore, 30+ MB).
            logger().warning("tracing on but aws-xray-sdk is not packaged; add it to functions/requirements.txt")
            wrapped.otafleet_handler = True
            return wrapped
        from aws_lambda_powertools import Tracer

        wrapped = Tracer(service=SERVICE).capture_lambda_handler(wrapped)
    # What tests look for: a handler without this wrapper would leave a sandbox's collector off for good.
    wrapped.otafleet_handler = True
    return wrapped
