"""Lambda handler for the device-facing API: GET /update, /update/{product}, /firmware/{product}/{channel}.

Thin on purpose: read the event, call the service, map its Answer onto an API Gateway response.
Two fronts deliver the same payload-2.0 event shape:
- the HTTP API has already matched the route (`routeKey`, `pathParameters`), so the handler dispatches on
  it directly instead of loading a routing framework: that import alone would cost more than half of
  boto3's at cold start;
- a Lambda function URL (EnableFunctionUrl) matches nothing: `routeKey` is `$default` and there are no
  `pathParameters`, so the route and its parameters come from `rawPath`, matched against the same ROUTES
  the way API Gateway matches them (whole segments, URL-decoded parameters, no empty ones).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

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


Params = dict[str, str]

# The device routes, as template.yaml's HttpApi events declare them (tests/unit/test_template.py holds the
# two to each other), each with what answers it: the one table both fronts route by.
ROUTES: dict[str, Callable[[dict[str, Any], Params], Answer]] = {
    "GET /update": lambda event, _: _check(event),
    "GET /update/{product}": lambda event, path: _check(event, path.get("product", "")),
    "GET /firmware/{product}/{channel}": lambda event, path: _firmware(
        event, path.get("product", ""), path.get("channel", "")
    ),
}


def match_path(method: str, raw_path: str) -> tuple[str, Params] | None:
    """(route key, path parameters) of the route a request matches, None for none: what API Gateway does
    with an HTTP API's routes. Literal segments match exactly (case-sensitive); a `{name}` segment matches
    one non-empty segment, URL-decoded after splitting (so `%2F` stays inside its segment), as API Gateway
    decodes pathParameters. A trailing slash is an empty last segment: `/update/` and `/update/door/`
    match nothing, nor does a path with more segments than a route."""
    if not raw_path.startswith("/"):
        return None
    segments = raw_path[1:].split("/")
    for key in ROUTES:
        route_method, template = key.split(" ", 1)
        parts = template[1:].split("/")
        if route_method != method or len(parts) != len(segments):
            continue
        params: Params = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and part.endswith("}") and segment:
                params[part[1:-1]] = unquote(segment)
            elif part != segment:
                break
        else:
            return key, params
    return None


def _route_of(event: dict[str, Any]) -> tuple[str | None, Params]:
    """The matched route key and path parameters: API Gateway's, or for a function URL's `$default`
    event (nothing matched a route before the function ran) those of rawPath."""
    route_key = event.get("routeKey")
    if route_key != "$default":
        return route_key, event.get("pathParameters") or {}
    method = (event.get("requestContext") or {}).get("http", {}).get("method", "")
    return match_path(method, event.get("rawPath") or "") or (None, {})


def route(event: dict[str, Any]) -> Answer:
    route_key, path = _route_of(event)
    answer = ROUTES.get(route_key or "")
    return answer(event, path) if answer is not None else text(404, "no such route", "no-route")


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _response(route(event))
    except Exception:
        # Never a traceback to a device: log it, answer 503 so the device simply tries again later.
        logger().exception("unhandled error")
        return _response(unavailable())
