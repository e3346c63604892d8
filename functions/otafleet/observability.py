"""Logging, metrics and tracing, created once and only when first used.

Powertools Logger writes one JSON line per call; Metrics emits CloudWatch EMF with low-cardinality
dimensions only (never a MAC). The X-Ray SDK is imported only when tracing is switched on.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "otafleet")


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


def count(name: str, value: int = 1, **dimensions: str) -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    m = metrics()
    if dimensions:
        if _metrics_disabled():  # single_metric, unlike Metrics, ignores POWERTOOLS_METRICS_DISABLED
            return
        # A metric with its own dimensions, so they don't leak onto every other metric of the invocation.
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=m.namespace) as sm:
            sm.add_dimension(name="service", value=SERVICE)
            for key, val in dimensions.items():
                sm.add_dimension(name=key, value=val)
    else:
        m.add_metric(name=name, unit=MetricUnit.Count, value=value)


def handler_wrapper(func: Any) -> Any:
    """Flush metrics after every invocation; add the tracer only when tracing is on."""
    wrapped = metrics().log_metrics(func)
    if tracing_enabled():
        if importlib.util.find_spec("aws_xray_sdk") is None:
            # Lambda's own active tracing still records the invocation; the SDK adds subsegments for
            # AWS calls. It is not packaged by default (it brings its own botocore, 30+ MB).
            logger().warning("tracing on but aws-xray-sdk is not packaged; add it to functions/requirements.txt")
            return wrapped
        from aws_lambda_powertools import Tracer

        wrapped = Tracer(service=SERVICE).capture_lambda_handler(wrapped)
    return wrapped
