"""Logging, metrics and tracing, created once and only when first used.

Powertools Logger writes one JSON line per call; Metrics emits CloudWatch EMF with low-cardinality
dimensions only (never a MAC). The X-Ray SDK is imported only when tracing is switched on.

A Lambda sandbox runs one invocation at a time, but the local stack runs several at once in one process
(its sandboxes share these objects), so what belongs to one invocation is kept per thread: the log
keys are Powertools' thread-safe (context-local) keys, and the metric set, which every Metrics instance
shares, is added to and flushed under a lock.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "otafleet")
_metric_set = threading.Lock()


@lru_cache(maxsize=1)
def logger() -> Logger:
    from aws_lambda_powertools import Logger

    return Logger(service=SERVICE)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "otafleet"), service=SERVICE)


@lru_cache(maxsize=1)
def _metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "false").lower() in ("true", "1")


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in ("false", "0")


_detailed = threading.local()  # this invocation's metrics with dimensions of their own


def count(name: str, value: int = 1, **dimensions: str) -> None:
    """Count `name` in this invocation's metrics. All of an invocation's metrics leave in one EMF line
    (`_flushing_metrics`); a metric with dimensions of its own joins that line as a directive of its own."""
    from aws_lambda_powertools.metrics import MetricUnit

    if dimensions:
        if _metrics_disabled():
            return
        pending = getattr(_detailed, "items", None)
        if pending is None:
            pending = _detailed.items = []
        pending.append((name, value, dimensions))
    else:
        with _metric_set:
            metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)


def _emit_single(name: str, value: int, dimensions: dict[str, str]) -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=metrics().namespace) as sm:
        sm.add_dimension(name="service", value=SERVICE)
        for key, val in dimensions.items():
            sm.add_dimension(name=key, value=val)


def flush() -> None:
    """Write this invocation's metrics as one EMF line: the shared set, plus a directive per metric with
    its own dimensions (EMF allows several per line, their values as top-level fields). A metric whose
    name or dimension value would clash with one already in the line gets a line of its own."""
    pending = getattr(_detailed, "items", None) or []
    _detailed.items = []
    with _metric_set:
        m = metrics()
        shared = m.metric_set and not _metrics_disabled()
        blob: dict[str, Any] = dict(m.serialize_metric_set()) if shared else {}
        m.clear_metrics()
    if not blob:  # no line to join (pending is empty when metrics are disabled)
        for name, value, dims in pending:
            _emit_single(name, value, dims)
        return
    directives = blob["_aws"]["CloudWatchMetrics"]
    alone = []
    for name, value, dims in pending:
        if name in blob or any(k in blob and blob[k] != v for k, v in dims.items()):
            alone.append((name, value, dims))
            continue
        blob.update(dims)
        blob[name] = float(value)
        directives.append(
            {
                "Namespace": directives[0]["Namespace"],
                "Dimensions": [["service", *dims]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }
        )
    print(json.dumps(blob, separators=(",", ":")))
    for name, value, dims in alone:
        _emit_single(name, value, dims)


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
        if cold:
            count("ColdStarts")
        return func(event, context)

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
            return wrapped
        from aws_lambda_powertools import Tracer

        wrapped = Tracer(service=SERVICE).capture_lambda_handler(wrapped)
    return wrapped
