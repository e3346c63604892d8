"""The update handler's route table, matched from rawPath the way API Gateway matches an HTTP API's routes:
what a function URL (EnableFunctionUrl, routeKey `$default`, no pathParameters) depends on."""

from __future__ import annotations

from typing import Any

import pytest

from otafleet.delivery import Answer, text
from support.devices import http_api_event
from update import app as update_app
from update.app import ROUTES, match_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/update", ("GET /update", {})),
        ("/update/door", ("GET /update/{product}", {"product": "door"})),
        ("/firmware/door/stable", ("GET /firmware/{product}/{channel}", {"product": "door", "channel": "stable"})),
        # Parameters are URL-decoded, after the path is split: %2F stays inside its segment.
        ("/update/door%2Dv2", ("GET /update/{product}", {"product": "door-v2"})),
        ("/update/%64oor", ("GET /update/{product}", {"product": "door"})),
        ("/update/a%2Fb", ("GET /update/{product}", {"product": "a/b"})),
        ("/update/door%20x", ("GET /update/{product}", {"product": "door x"})),
        ("/update/door+x", ("GET /update/{product}", {"product": "door+x"})),  # a path's + is no space
        ("/firmware/d%6Fr/be%74a", ("GET /firmware/{product}/{channel}", {"product": "dor", "channel": "beta"})),
        # Literal segments are not decoded nor folded: API Gateway matches them as sent.
        ("/%75pdate", None),
        ("/Update", None),
        ("/UPDATE/door", None),
        # A trailing slash is an empty segment, which no parameter takes and no route has.
        ("/update/", None),
        ("/update/door/", None),
        ("/firmware/door/stable/", None),
        ("/firmware/door/", None),
        # Empty segments elsewhere, extra segments, too few.
        ("//update", None),
        ("/update//door", None),
        ("/firmware//stable", None),
        ("/update/door/stable", None),
        ("/firmware/door/stable/extra", None),
        ("/firmware/door", None),
        ("/firmware", None),
        # Anything else.
        ("/", None),
        ("", None),
        ("update", None),
        ("/favicon.ico", None),
        ("/update.bin", None),
    ],
)
def test_raw_paths_match_as_api_gateway_matches_routes(path: str, expected: tuple[str, dict[str, str]] | None) -> None:
    assert match_path("GET", path) == expected


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "get", ""])
def test_only_get_is_routed(method: str) -> None:
    for path in ("/update", "/update/door", "/firmware/door/stable"):
        assert match_path(method, path) is None


def test_every_route_matches_its_own_path_and_only_its_own() -> None:
    for key in ROUTES:
        method, template = key.split(" ", 1)
        concrete = template.replace("{", "x-").replace("}", "")
        matched = match_path(method, concrete)
        assert matched is not None and matched[0] == key, key


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Route an event without a service: every route answers 200 and records what it was asked."""
    calls: list[tuple[str, Any]] = []

    def check(event: dict[str, Any], product: str | None = None) -> Answer:
        calls.append(("check", product))
        return text(200, "ok", "ok")

    def firmware(event: dict[str, Any], product: str, channel: str) -> Answer:
        calls.append(("firmware", (product, channel)))
        return text(200, "ok", "ok")

    monkeypatch.setattr(update_app, "_check", check)
    monkeypatch.setattr(update_app, "_firmware", firmware)
    return calls


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/update", ("check", None)),
        ("/update/door%2Dv2", ("check", "door-v2")),
        ("/firmware/door/be%74a", ("firmware", ("door", "beta"))),
    ],
)
def test_a_function_url_event_is_routed_by_its_raw_path(
    answered: list[tuple[str, Any]], path: str, call: tuple[str, Any]
) -> None:
    event = http_api_event(path, {}, front="function-url")
    assert event["routeKey"] == "$default" and "pathParameters" not in event
    assert update_app.route(event).status == 200
    assert answered == [call]


@pytest.mark.parametrize("path", ["/", "/update/", "/update/door/extra", "/firmware/door", "/nothing"])
def test_a_function_url_event_of_no_route_is_404(answered: list[tuple[str, Any]], path: str) -> None:
    answer = update_app.route(http_api_event(path, {}, front="function-url"))
    assert (answer.status, answer.body) == (404, b"no such route\n")
    assert answered == []


def test_an_http_api_event_keeps_api_gateways_route_and_parameters(answered: list[tuple[str, Any]]) -> None:
    """API Gateway matched already: its pathParameters are used, never a second match of rawPath."""
    event = http_api_event("/update/door", {}, path_parameters={"product": "decoded by api gateway"})
    event["rawPath"] = "/somewhere/else"
    assert update_app.route(event).status == 200
    assert answered == [("check", "decoded by api gateway")]
    unknown = http_api_event("/update", {}, route_key="GET /nothing")
    assert update_app.route(unknown).status == 404
