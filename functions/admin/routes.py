"""The operator API's routes (docs/operator-api.md): read the request, call `Fleet`, answer a shape.

No rule lives here: every check of what an operator may do is `Fleet`'s, every shape is otafleet.shapes'.
What is here is HTTP: which path and method mean which call, and reading query strings and JSON bodies
into that call's arguments (a value of the wrong type is `BadRequest`, never a traceback).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from otafleet import plans, shapes
from otafleet.controller import Controller
from otafleet.fleet import MAX_PAGE, DeviceFilter, Fleet, FleetError, parse_mac
from otafleet.models import Kind, ReleaseState
from otafleet.protocol import MODES, normalise_mac
from otafleet.service import UpdateService

DEFAULT_PAGE = 50
EXPLAIN_MODES = frozenset(MODES - {"version"})
T = TypeVar("T")


class BadRequest(Exception):
    """The request itself is malformed (bad JSON, a missing or mistyped parameter): 400."""


class NoRoute(Exception):
    """No route of the operator API has this method and path: 404."""


@dataclass(frozen=True)
class Request:
    method: str
    segments: tuple[str, ...]  # the path below /admin, split at "/"
    query: Mapping[str, str]
    body: Mapping[str, Any]
    user: str


@dataclass
class Operator:
    """What a route may call: the caller's Fleet (its audit entries name the caller), and the controller
    and the update service for what the CLI shows through them (rollout status, explain)."""

    fleet: Fleet
    controller: Callable[[], Controller]
    service: Callable[[], UpdateService]


Answer = dict[str, Any]
Handler = Callable[[Operator, Request], Answer]


# --- reading requests --------------------------------------------------------------------------------


def parse_body(event: Mapping[str, Any]) -> dict[str, Any]:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded") and raw:
        try:
            raw = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadRequest("the body is not valid base64-encoded UTF-8") from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _typed(where: str, name: str, value: Any, kind: type[T] | tuple[type, ...]) -> T:
    # bool is an int in Python: a JSON true is never taken for a number, nor 1 for true.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(f"{where} {name!r} must be a {names}, not {json.dumps(value)[:40]}")
    return value  # type: ignore[return-value]


def _field(body: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name)
    return default if value is None else _typed("field", name, value, kind)


def _required(body: Mapping[str, Any], name: str, kind: type[T]) -> T:
    if body.get(name) is None:
        raise BadRequest(f"field {name!r} is required")
    return _typed("field", name, body[name], kind)


def _only(body: Mapping[str, Any], *allowed: str) -> None:
    """Refuse fields the action does not take: a typo must not pass unnoticed as a default."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; this action takes {', '.join(allowed) or 'no fields'}")


def _param(req: Request, name: str) -> str:
    value = req.query.get(name)
    if not value:
        raise BadRequest(f"query parameter {name!r} is required")
    return value


def _int_param(req: Request, name: str, default: int, maximum: int) -> int:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be a whole number, not {raw[:20]!r}") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"query parameter {name!r} must be between 1 and {maximum}, not {value}")
    return value


def _kind(body: Mapping[str, Any]) -> Kind:
    value = _field(body, "kind", str, "app")
    try:
        return Kind(value)
    except ValueError:
        raise BadRequest(f"field 'kind' must be app or fs, not {value[:20]!r}") from None


def _fraction(body: Mapping[str, Any], name: str, default: float | None = None) -> Any:
    value = _field(body, name, (int, float))
    return default if value is None else float(value)


def encode_cursor(mac: str) -> str:
    return base64.urlsafe_b64encode(mac.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The MAC a page starts after; anything that is not a cursor this API gave out is refused."""
    try:
        mac = normalise_mac(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii"))
    except (binascii.Error, ValueError):
        mac = None
    if mac is None:
        raise BadRequest("query parameter 'cursor' is not one this API gave out")
    return mac


# --- the routes ----------------------------------------------------------------------------------------


def whoami(op: Operator, req: Request) -> Answer:
    return {"user": req.user}


def products(op: Operator, req: Request) -> Answer:
    return {"products": [shapes.product_dict(p) for p in op.fleet.products()]}


def overview(op: Operator, req: Request) -> Answer:
    found = op.fleet.product_overview(_param(req, "product"), req.query.get("channel") or None)
    return shapes.product_overview_dict(found)


def rollouts(op: Operator, req: Request) -> Answer:
    product = _param(req, "product")
    op.fleet.catalog(product)  # 404 for an unknown product, not an empty list
    return {"rollouts": [shapes.rollout_dict(s) for s in op.controller().product_status(product)]}


def rollout_action(op: Operator, req: Request) -> Answer:
    _, product, channel, action = req.segments
    fleet, body = op.fleet, req.body
    if action in ("pause", "rollback", "abort"):
        _only(body, "kind")
        call = {"pause": fleet.pause, "rollback": fleet.rollback, "abort": fleet.abort}[action]
        call(product, channel, _kind(body))
    elif action == "resume":
        _only(body, "kind", "reset_counts")
        fleet.resume(product, channel, _kind(body), reset_counts=_field(body, "reset_counts", bool, False))
    elif action == "start":
        _start(fleet, product, channel, body)
    else:
        raise NoRoute()
    return {"rollouts": [shapes.rollout_dict(s) for s in op.controller().status(product, channel)]}


def _start(fleet: Fleet, product: str, channel: str, body: Mapping[str, Any]) -> None:
    """`rollout start`'s options, as shares (0.2) where the CLI takes percentages (20)."""
    _only(
        body,
        *("version", "kind", "stages", "soak", "min_success", "max_failure_rate", "min_devices"),
        *("max_offers_per_minute", "pace_growth", "max_silence_excess"),
    )
    stages = _field(body, "stages", (str, list), plans.DEFAULT_STAGES)
    soak = _field(body, "soak", (str, int), plans.DEFAULT_SOAK)
    try:
        if isinstance(stages, list):
            stages = tuple(_typed("stage", str(i + 1), s, int) for i, s in enumerate(stages))
        else:
            stages = plans.parse_stages(stages)
        soak_seconds = soak if isinstance(soak, int) else plans.parse_duration(soak)
    except plans.InvalidPlan as bad:
        raise FleetError(str(bad)) from None
    fleet.start_plan(
        product,
        channel,
        _required(body, "version", str),
        _kind(body),
        stages=stages,
        soak_seconds=soak_seconds,
        min_success=_fraction(body, "min_success", plans.DEFAULT_MIN_SUCCESS),
        max_failure_rate=_fraction(body, "max_failure_rate"),
        min_devices=_field(body, "min_devices", int),
        max_offers_per_minute=_field(body, "max_offers_per_minute", int),
        pace_growth=_fraction(body, "pace_growth", 1.0),
        max_silence_excess=_fraction(body, "max_silence_excess"),
    )


def devices(op: Operator, req: Request) -> Answer:
    cursor = req.query.get("cursor")
    page = op.fleet.device_page(
        _param(req, "product"),
        channel=req.query.get("channel") or None,
        where=DeviceFilter(version=req.query.get("version") or None, state=req.query.get("state") or None),
        mac_prefix=req.query.get("mac") or None,
        limit=_int_param(req, "limit", DEFAULT_PAGE, MAX_PAGE),
        after=decode_cursor(cursor) if cursor else None,
    )
    return {
        "devices": [shapes.device_dict(d) for d in page.devices],
        "total": page.total,
        "next": encode_cursor(page.after) if page.after else None,
    }


def device(op: Operator, req: Request) -> Answer:
    mac = parse_mac(req.segments[1])
    mode = req.query.get("mode") or "sketch"
    if mode not in EXPLAIN_MODES:
        raise BadRequest(f"query parameter 'mode' must be one of {', '.join(sorted(EXPLAIN_MODES))}")
    found = op.fleet.device(mac)
    decision = op.service().explain(mac, mode=mode)
    return {
        "device": shapes.device_dict(found),
        "attempts": shapes.attempts_dict(found),
        "explain": None if decision is None else shapes.decision_dict(mac, mode, decision, found),
    }


def device_action(op: Operator, req: Request) -> Answer:
    _, mac, action = req.segments
    fleet, body = op.fleet, req.body
    if action in ("block", "unblock", "retry"):
        _only(body)
        changed = {"block": fleet.block, "unblock": fleet.unblock, "retry": fleet.retry}[action](mac)
    elif action == "assign":
        _only(body, "product", "channel", "pin", "unpin")
        changed = fleet.assign(
            mac,
            _required(body, "product", str),
            _field(body, "channel", str),
            _field(body, "pin", str),
            unpin=_field(body, "unpin", bool, False),
        )
    else:
        raise NoRoute()
    return {"device": shapes.device_dict(changed)}


def releases(op: Operator, req: Request) -> Answer:
    product = _param(req, "product")
    found = op.fleet.releases(product, with_rejections=True)
    channels = op.fleet.channels(product)
    listed = [{**shapes.release_dict(r), "channels": shapes.serving(r, channels)} for r in found]
    return {
        "releases": [r for r in listed if r["state"] != ReleaseState.REJECTED.value],
        "rejected": [r for r in listed if r["state"] == ReleaseState.REJECTED.value],
    }


def revoke(op: Operator, req: Request) -> Answer:
    _, product, version, _ = req.segments
    _only(req.body, "force", "kind")
    done = op.fleet.revoke(product, version, _kind(req.body), force=_field(req.body, "force", bool, False))
    return {"release": shapes.release_dict(done.release), "serving": list(done.serving), "already": done.already}


def audit(op: Operator, req: Request) -> Answer:
    entries = op.fleet.audit_entries(
        _param(req, "product"), since=req.query.get("since") or None, limit=_int_param(req, "limit", 50, MAX_PAGE)
    )
    return {"entries": [shapes.audit_entry_dict(e) for e in entries]}


# (method, path below /admin with "*" for a parameter segment) -> handler.
ROUTES: dict[tuple[str, tuple[str, ...]], Handler] = {
    ("GET", ("whoami",)): whoami,
    ("GET", ("products",)): products,
    ("GET", ("overview",)): overview,
    ("GET", ("rollouts",)): rollouts,
    ("POST", ("rollouts", "*", "*", "*")): rollout_action,
    ("GET", ("devices",)): devices,
    ("GET", ("devices", "*")): device,
    ("POST", ("devices", "*", "*")): device_action,
    ("GET", ("releases",)): releases,
    ("POST", ("releases", "*", "*", "revoke")): revoke,
    ("GET", ("audit",)): audit,
}


def find(method: str, segments: tuple[str, ...]) -> Handler:
    if any(not s for s in segments):
        raise NoRoute()  # an empty segment (a trailing or doubled slash) names nothing
    for (m, pattern), handler in ROUTES.items():
        same = m == method and len(pattern) == len(segments)
        if same and all(p in ("*", s) for p, s in zip(pattern, segments, strict=True)):
            return handler
    raise NoRoute()
