"""Lambda handler for the device-facing API: GET /update, /update/{product}, /firmware/{product}/{channel}.

Thin on purpose: read the event, call the service, map its Answer onto an API Gateway response.
API Gateway has already matched the route (`routeKey`), so the handler dispatches on it directly instead
of loading a routing framework: that import alone would cost more than half of boto3's at cold start.
"""

from __future__ import annotations

import base64
from typing import Any

from otafleet.config import settings
from otafleet.delivery import Answer, text
from otafleet.observability import handler_wrapper, logger
from otafleet.service import UpdateService, unavailable

_service: UpdateService | None = None


def service() -> UpdateService:
    global _service
    if _service is None:
        _service = UpdateService.create(settings())
    return _service


def _response(answer: Answer) -> dict[str, Any]:
    # Binary bodies travel base64-encoded; an empty body stays empty (302/304 carry none).
    return {
        "statusCode": answer.status,
        "headers": answer.headers,
        "body": base64.b64encode(answer.body).decode() if answer.body else "",
        "isBase64Encoded": bool(answer.body),
    }


def _check(event: dict[str, Any], product: str | None = None) -> Answer:
    return service().check(
        event.get("headers") or {},
        query=event.get("queryStringParameters") or {},
        product=product,
        source_ip=event.get("requestContext", {}).get("http", {}).get("sourceIp"),
    )


def _firmware(event: dict[str, Any], product: str, channel: str) -> Answer:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    proto = headers.get("cloudfront-forwarded-proto") or headers.get("x-forwarded-proto") or "https"
    return service().simple(
        product, channel, scheme="http" if proto == "http" else "https", authorization=headers.get("authorization")
    )


def route(event: dict[str, Any]) -> Answer:
    path = event.get("pathParameters") or {}
    match event.get("routeKey"):
        case "GET /update":
            return _check(event)
        case "GET /update/{product}":
            return _check(event, path.get("product", ""))
        case "GET /firmware/{product}/{channel}":
            return _firmware(event, path.get("product", ""), path.get("channel", ""))
    return text(404, "no such route", "no-route")


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _response(route(event))
    except Exception:
        # Never a traceback to a device: log it, answer 503 so the device simply tries again later.
        logger().exception("unhandled error")
        return _response(unavailable())
