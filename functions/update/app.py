"""Lambda handler for the device-facing API: GET /update, /update/{product}, /firmware/{product}/{channel}.

Thin on purpose: read the event, call the service, map its Answer onto an API Gateway response.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from otafleet.config import settings
from otafleet.delivery import Answer
from otafleet.observability import handler_wrapper, logger
from otafleet.service import UpdateService, unavailable

app = APIGatewayHttpResolver()
_service: UpdateService | None = None


def service() -> UpdateService:
    global _service
    if _service is None:
        _service = UpdateService.create(settings())
    return _service


def _response(answer: Answer) -> Response[Any]:
    # Bytes bodies go out base64-encoded; an empty body stays empty (304/302 must carry none).
    return Response(status_code=answer.status, body=answer.body, headers=answer.headers)


def _check(product: str | None = None) -> Response[Any]:
    event = app.current_event
    answer = service().check(
        event.headers or {},
        query=event.query_string_parameters or {},
        product=product,
        source_ip=event.request_context.http.source_ip,
    )
    return _response(answer)


@app.get("/update")
def update() -> Response[Any]:
    return _check()


@app.get("/update/<product>")
def update_product(product: str) -> Response[Any]:
    return _check(product)


@app.get("/firmware/<product>/<channel>")
def firmware(product: str, channel: str) -> Response[Any]:
    headers = {k.lower(): v for k, v in (app.current_event.headers or {}).items()}
    proto = headers.get("cloudfront-forwarded-proto") or headers.get("x-forwarded-proto") or "https"
    return _response(service().simple(product, channel, scheme="http" if proto == "http" else "https"))


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _unexpected(error: Exception) -> Response[Any]:
    # Never a traceback to a device: log it, answer 503 so the device simply tries again later.
    logger().exception("unhandled error")
    return _response(unavailable())


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = app.resolve(event, context)
    return result
