"""Lambda handler of the operator API, `ANY /admin/{proxy+}` behind the HTTP API's JWT authorizer
(docs/operator-api.md). The web console calls it; it calls the same `Fleet` the CLI does.

Thin on purpose: who is calling (the authorizer's claims), which route (routes.py), and the one mapping
of failures onto answers below. Every refusal is logged with its status and reason; input never gets a
5xx or a traceback (a 500 means a defect, and is logged with its traceback here, not sent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from admin import routes
from admin.cache import RecentDeviceStore
from otafleet.audit import Auditor
from otafleet.config import settings
from otafleet.controller import Controller
from otafleet.fleet import Changed, Fleet, FleetError, Unknown
from otafleet.observability import handler_wrapper, logger
from otafleet.service import UpdateService
from otafleet.shapes import jsonable
from otafleet.storage.audit import AuditStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.errors import Conflict, NotFound, StorageUnavailable

PREFIX = "/admin/"
ACTOR_PREFIX = "console:"
# Where a user name is in the claims: Cognito ID tokens, Cognito access tokens, any other issuer.
USER_CLAIMS = ("cognito:username", "username", "sub")
HEADERS = {"content-type": "application/json", "cache-control": "no-store"}

_stores: tuple[RecentDeviceStore, CatalogStore, AuditStore] | None = None
_controller: Controller | None = None
_service: UpdateService | None = None


class MissingClaims(Exception):
    """The event carries no JWT claims naming a user: the route was reached without the authorizer."""


def stores() -> tuple[RecentDeviceStore, CatalogStore, AuditStore]:
    global _stores
    if _stores is None:
        cfg = settings()
        _stores = (RecentDeviceStore(cfg), CatalogStore(cfg), AuditStore(cfg))
    return _stores


def controller() -> Controller:
    global _controller
    if _controller is None:
        devices, catalog, _ = stores()
        _controller = Controller(settings(), devices, catalog)
    return _controller


def service() -> UpdateService:
    global _service
    if _service is None:
        _service = UpdateService.create(settings())
    return _service


def operator(user: str) -> routes.Operator:
    """A Fleet whose audit entries name this caller (an Auditor asks its actor once: one per request)."""
    devices, catalog, audit = stores()
    actor = ACTOR_PREFIX + user
    auditor = Auditor(audit, actor=lambda: actor, retention_days=settings().audit_retention_days)
    return routes.Operator(Fleet(devices, catalog, auditor=auditor), controller, service)


def user_of(event: Mapping[str, Any]) -> str:
    context = event.get("requestContext") or {}
    claims = ((context.get("authorizer") or {}).get("jwt") or {}).get("claims") or {}
    if isinstance(claims, Mapping):
        for name in USER_CLAIMS:
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
    raise MissingClaims()


def _answer(status: int, data: Any) -> dict[str, Any]:
    # Through jsonable as the CLI's --output json: a shape may hold tuples, sets or enums.
    body = json.dumps(jsonable(data), ensure_ascii=False)
    return {"statusCode": status, "headers": dict(HEADERS), "body": body}


def _error(status: int, message: str, event: Mapping[str, Any], user: str | None) -> dict[str, Any]:
    logger().warning(
        "operator request refused",
        extra={
            "status": status,
            "error": message,
            "method": _method(event),
            "path": event.get("rawPath"),
            "user": user,
        },
    )
    answer = _answer(status, {"error": message})
    if status == 503:
        answer["headers"]["retry-after"] = "5"
    return answer


def _method(event: Mapping[str, Any]) -> str:
    return str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "").upper()


def _segments(event: Mapping[str, Any]) -> tuple[str, ...]:
    # pathParameters.proxy is what API Gateway matched under /admin/, URL-decoded; rawPath is the fallback
    # for a front that matches nothing itself.
    proxy = (event.get("pathParameters") or {}).get("proxy")
    if proxy is None:
        raw = str(event.get("rawPath") or "")
        if not raw.startswith(PREFIX):
            raise routes.NoRoute()
        proxy = raw[len(PREFIX) :]
    return tuple(str(proxy).split("/"))


def answer(event: Mapping[str, Any]) -> dict[str, Any]:
    user: str | None = None
    try:
        user = user_of(event)
        handler = routes.find(_method(event), _segments(event))
        request = routes.Request(
            method=_method(event),
            segments=_segments(event),
            query=event.get("queryStringParameters") or {},
            body=routes.parse_body(event),
            user=user,
        )
        try:
            return _answer(200, handler(operator(user), request))
        finally:
            if request.method != "GET":
                stores()[0].forget()  # the caller's change shows in their next answer, not seconds later
    except MissingClaims:
        return _error(401, "no token: sign in to the console", event, user)
    except routes.NoRoute:
        return _error(404, f"no route {_method(event)} {event.get('rawPath') or ''}".rstrip(), event, user)
    except routes.BadRequest as bad:
        return _error(400, str(bad), event, user)
    except Unknown as unknown:
        return _error(404, unknown.message, event, user)
    except Changed as changed:
        return _error(409, changed.message, event, user)
    except FleetError as bad:
        return _error(400, bad.message, event, user)
    except Conflict:
        return _error(409, "the record changed meanwhile; try again", event, user)
    except NotFound:
        return _error(404, "not found (it was deleted meanwhile?)", event, user)
    except StorageUnavailable as fault:
        return _error(503, f"storage unavailable ({fault or 'try again'}); try again", event, user)
    except Exception:
        logger().exception("operator request failed", extra={"method": _method(event), "user": user})
        return _answer(500, {"error": "internal error; it is logged"})


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return answer(event)
