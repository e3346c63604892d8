"""The operator API's handler (functions/admin) with API Gateway payload-2.0 events on moto: each route's
answer on a seeded fleet, and the one error mapping (docs/operator-api.md)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from admin import app
from otafleet.models import Kind, Release, ReleaseState
from support.world import World

MAC = "5C:CF:7F:00:00:01"


@pytest.fixture(autouse=True)
def _fresh_admin_handler() -> Iterator[None]:
    """Each test's moto mock is new: no store, controller or service of an earlier one may answer."""
    app._stores = app._controller = app._service = None
    yield
    app._stores = app._controller = app._service = None


def event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    claims: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> dict[str, Any]:
    """An event as API Gateway sends it for `ANY /admin/{proxy+}` once its JWT authorizer passed."""
    context: dict[str, Any] = {"http": {"method": method, "path": path}, "requestId": "test"}
    if claims is None:
        claims = {"cognito:username": "alice", "sub": "1234"}
    if claims:
        context["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    found: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "ANY /admin/{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": context,
        "pathParameters": {"proxy": path.removeprefix("/admin/")},
        "isBase64Encoded": False,
    }
    if query:
        found["queryStringParameters"] = query
    if raw_body is not None:
        found["body"] = raw_body
    elif body is not None:
        found["body"] = json.dumps(body)
    return found


def call(method: str, path: str, status: int = 200, **kw: Any) -> Any:
    answer = app.handler(event(method, path, **kw), None)
    assert answer["headers"]["content-type"] == "application/json"
    data = json.loads(answer["body"])
    assert answer["statusCode"] == status, data
    return data


@pytest.fixture
def door(world: World) -> World:
    """door rolling 1.0.0 -> 1.1.0 out to 10 % of stable; three devices, one of them on beta."""
    world.product("door", "esp8266")
    world.release("door", "1.0.0")
    world.release("door", "1.1.0")
    world.channel("door", app="1.1.0", previous="1.0.0", percent=10)
    world.channel("door", "beta", app="1.1.0")
    for i in range(1, 4):
        world.device(f"5C:CF:7F:00:00:0{i}", "door", "beta" if i == 3 else "stable")
    return world


# --- reads ---------------------------------------------------------------------------------------------


def test_whoami_names_the_caller_from_the_claims(door: World) -> None:
    assert call("GET", "/admin/whoami") == {"user": "alice"}
    assert call("GET", "/admin/whoami", claims={"username": "bob"}) == {"user": "bob"}


def test_products_lists_each_product_as_the_cli_shows_it(door: World) -> None:
    products = call("GET", "/admin/products")["products"]
    assert [p["name"] for p in products] == ["door"]
    assert products[0]["platform"] == "esp8266" and "keys" in products[0]


def test_overview_counts_on_the_server(door: World) -> None:
    data = call("GET", "/admin/overview", query={"product": "door"})
    assert data["product"] == "door" and data["channel"] is None and data["devices"] == 3
    assert data["by_version"] == [{"version": None, "count": 3}]
    assert {"state": "never-seen", "count": 3} in data["by_state"]
    assert [(r["channel"], r["percent"]) for r in data["rollouts"]] == [("stable", 10)]
    beta = call("GET", "/admin/overview", query={"product": "door", "channel": "beta"})
    assert beta["devices"] == 1 and beta["rollouts"] == []


def test_rollouts_answers_rollout_status_of_every_channel(door: World) -> None:
    rollouts = call("GET", "/admin/rollouts", query={"product": "door"})["rollouts"]
    assert [(r["channel"], r["kind"], r["version"]) for r in rollouts] == [
        ("beta", "app", "1.1.0"),
        ("stable", "app", "1.1.0"),
    ]
    assert {"stages", "verdict", "control", "next"} <= set(rollouts[0])


def test_devices_are_paged_on_the_server_with_an_opaque_cursor(door: World) -> None:
    first = call("GET", "/admin/devices", query={"product": "door", "limit": "2"})
    assert [d["mac"] for d in first["devices"]] == ["5C:CF:7F:00:00:01", "5C:CF:7F:00:00:02"]
    assert first["total"] == 3 and first["next"]
    second = call("GET", "/admin/devices", query={"product": "door", "limit": "2", "cursor": first["next"]})
    assert [d["mac"] for d in second["devices"]] == ["5C:CF:7F:00:00:03"]
    assert second["total"] == 3 and second["next"] is None


@pytest.mark.parametrize(
    ("query", "macs"),
    [
        ({"channel": "beta"}, ["5C:CF:7F:00:00:03"]),
        ({"mac": "5ccf7f00000"}, ["5C:CF:7F:00:00:01", "5C:CF:7F:00:00:02", "5C:CF:7F:00:00:03"]),
        ({"mac": "5C:CF:7F:00:00:02"}, ["5C:CF:7F:00:00:02"]),
        ({"state": "never-seen", "channel": "stable"}, ["5C:CF:7F:00:00:01", "5C:CF:7F:00:00:02"]),
        ({"state": "blocked"}, []),
        ({"version": "1.1.0"}, []),
    ],
)
def test_devices_are_filtered_on_the_server(door: World, query: dict[str, str], macs: list[str]) -> None:
    data = call("GET", "/admin/devices", query={"product": "door", **query})
    assert [d["mac"] for d in data["devices"]] == macs and data["total"] == len(macs)


def test_a_device_comes_with_its_attempts_and_the_explain_of_its_next_check(door: World) -> None:
    data = call("GET", f"/admin/devices/{MAC}")
    assert data["device"]["mac"] == MAC and data["attempts"] == {}
    assert data["explain"]["mac"] == MAC and data["explain"]["mode"] == "sketch"
    assert data["explain"]["steps"]


def test_releases_and_rejected_uploads_are_listed_apart(door: World) -> None:
    rejected = Release(
        product="door", kind=Kind.APP, version="1.2.0", size=1, md5="0" * 32, sha256="0" * 64,
        state=ReleaseState.REJECTED, reason="not an ESP image", s3_key="firmware/door/1.2.0.bin",
    )  # fmt: skip
    door.catalog.add_rejection(rejected)
    data = call("GET", "/admin/releases", query={"product": "door"})
    assert [r["version"] for r in data["releases"]] == ["1.0.0", "1.1.0"]
    assert data["releases"][1]["channels"] == ["beta", "stable 10%"]
    assert [(r["version"], r["reason"]) for r in data["rejected"]] == [("1.2.0", "not an ESP image")]


# --- changes, and the audit trail naming the console user ----------------------------------------------


def test_pause_and_resume_answer_the_channels_rollouts_and_are_audited_as_the_console_user(door: World) -> None:
    paused = call("POST", "/admin/rollouts/door/stable/pause")["rollouts"]
    assert [r["state"] for r in paused] == ["paused"]
    resumed = call("POST", "/admin/rollouts/door/stable/resume", body={"reset_counts": True})["rollouts"]
    assert [r["state"] for r in resumed] == ["active"]
    entries = call("GET", "/admin/audit", query={"product": "door"})["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("channel.resume", "console:alice"),
        ("channel.pause", "console:alice"),
    ]
    assert len(call("GET", "/admin/audit", query={"product": "door", "limit": "1", "since": "1h"})["entries"]) == 1


def test_start_rollback_and_abort(door: World) -> None:
    started = call(
        "POST",
        "/admin/rollouts/door/beta/start",
        body={"version": "1.0.0", "stages": [5, 100], "soak": "30m", "max_failure_rate": 0.1},
    )["rollouts"]
    assert started[0]["version"] == "1.0.0" and started[0]["plan"]["stages"] == [5, 100]
    assert started[0]["max_failure_rate"] == 0.1 and started[0]["plan"]["soak_seconds"] == 1800
    aborted = call("POST", "/admin/rollouts/door/beta/abort")["rollouts"]
    assert aborted[0]["state"] == "halted" and aborted[0]["plan"]["aborted"]
    rolled = call("POST", "/admin/rollouts/door/stable/rollback")["rollouts"]
    assert rolled[0]["version"] == "1.0.0"


def test_device_actions(door: World) -> None:
    assert call("POST", f"/admin/devices/{MAC}/block")["device"]["blocked"] is True
    assert call("POST", f"/admin/devices/{MAC}/unblock")["device"]["blocked"] is False
    assert call("POST", f"/admin/devices/{MAC}/retry")["device"]["failed"] == []
    moved = call("POST", f"/admin/devices/{MAC}/assign", body={"product": "door", "channel": "beta"})["device"]
    assert (moved["product"], moved["channel"]) == ("door", "beta")
    new = call("POST", "/admin/devices/5C:CF:7F:00:00:09/assign", body={"product": "door"})["device"]
    assert new["channel"] == "stable"  # the product's default channel
    actions = [e["action"] for e in call("GET", "/admin/audit", query={"product": "door"})["entries"]]
    assert actions == ["device.assign", "device.assign", "device.retry", "device.unblock", "device.block"]


def test_revoke_needs_force_for_a_release_a_channel_serves(door: World) -> None:
    assert "served by channel" in call("POST", "/admin/releases/door/1.1.0/revoke", 400)["error"]
    done = call("POST", "/admin/releases/door/1.1.0/revoke", body={"force": True})
    assert done["release"]["state"] == "revoked" and done["serving"] == ["beta", "stable"] and not done["already"]
    assert call("POST", "/admin/releases/door/1.1.0/revoke", body={"force": True})["already"] is True


# --- errors: one mapping ---------------------------------------------------------------------------------


def test_no_claims_is_401(door: World) -> None:
    assert call("GET", "/admin/products", 401, claims={}) == {"error": "no token: sign in to the console"}
    call("POST", "/admin/rollouts/door/stable/pause", 401, claims={"email": "x@example.com"})
    assert call("GET", "/admin/rollouts", query={"product": "door"})["rollouts"][1]["state"] == "active"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/nothing"),
        ("DELETE", "/admin/products"),
        ("POST", "/admin/products"),
        ("GET", "/admin/devices/"),
        ("GET", "/admin/devices//block"),
        ("POST", "/admin/rollouts/door/stable/explode"),
        ("POST", f"/admin/devices/{MAC}/explode"),
        ("POST", "/admin/releases/door/1.1.0/unrevoke"),
    ],
)
def test_unknown_routes_are_404(door: World, method: str, path: str) -> None:
    assert call(method, path, 404)["error"].startswith("no route")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin/overview", {"product": "window"}),
        ("/admin/overview", {"product": "door", "channel": "nightly"}),
        ("/admin/rollouts", {"product": "window"}),
        ("/admin/devices", {"product": "window"}),
        ("/admin/devices/5C:CF:7F:00:00:99", {}),
        ("/admin/releases", {"product": "window"}),
    ],
)
def test_unknown_products_channels_and_devices_are_404(door: World, path: str, query: dict[str, str]) -> None:
    assert (
        "unknown" in call("GET", path, 404, query=query)["error"]
        or "no channel" in call("GET", path, 404, query=query)["error"]
    )


@pytest.mark.parametrize(
    ("method", "path", "kw", "message"),
    [
        ("GET", "/admin/overview", {}, "'product' is required"),
        ("GET", "/admin/devices", {"query": {"product": "door", "limit": "0"}}, "between 1 and 200"),
        ("GET", "/admin/devices", {"query": {"product": "door", "limit": "201"}}, "between 1 and 200"),
        ("GET", "/admin/devices", {"query": {"product": "door", "limit": "ten"}}, "whole number"),
        ("GET", "/admin/devices", {"query": {"product": "door", "cursor": "%%%"}}, "cursor"),
        ("GET", "/admin/devices", {"query": {"product": "door", "cursor": "bm9wZQ"}}, "cursor"),
        ("GET", "/admin/devices", {"query": {"product": "door", "state": "sleepy"}}, "unknown device state"),
        ("GET", "/admin/devices", {"query": {"product": "door", "mac": "xyz"}}, "not the start of a MAC"),
        ("GET", "/admin/devices", {"query": {"product": "Door Bell"}}, "product"),
        ("GET", "/admin/devices/not-a-mac", {}, "not a MAC"),
        ("GET", f"/admin/devices/{MAC}", {"query": {"mode": "version"}}, "'mode'"),
        ("GET", "/admin/audit", {"query": {"product": "door", "since": "yesterday"}}, "--since"),
        ("POST", "/admin/rollouts/door/stable/pause", {"raw_body": "{not json"}, "not JSON"),
        ("POST", "/admin/rollouts/door/stable/pause", {"raw_body": "[1, 2]"}, "JSON object"),
        ("POST", "/admin/rollouts/door/stable/pause", {"body": {"kind": "firmware"}}, "app or fs"),
        ("POST", "/admin/rollouts/door/stable/pause", {"body": {"knid": "app"}}, "unknown field 'knid'"),
        ("POST", "/admin/rollouts/door/stable/resume", {"body": {"reset_counts": "yes"}}, "must be a bool"),
        ("POST", "/admin/rollouts/door/stable/start", {"body": {}}, "'version' is required"),
        ("POST", "/admin/rollouts/door/stable/start", {"body": {"version": 1}}, "must be a str"),
        ("POST", "/admin/rollouts/door/stable/start", {"body": {"version": "1.1.0", "stages": "1,x"}}, "stages"),
        ("POST", "/admin/rollouts/door/stable/start", {"body": {"version": "1.1.0", "stages": [50, 10]}}, "rise"),
        ("POST", "/admin/rollouts/door/stable/start", {"body": {"version": "9.9.9"}}, "no app release"),
        ("POST", "/admin/rollouts/door/stable/abort", {}, "has no plan"),
        ("POST", f"/admin/devices/{MAC}/assign", {"body": {"channel": "beta"}}, "'product' is required"),
        ("POST", f"/admin/devices/{MAC}/block", {"body": {"force": True}}, "unknown field"),
        ("POST", "/admin/releases/door/1.1.0/revoke", {"body": {"force": 1}}, "must be a bool"),
    ],
)
def test_bad_input_is_400_with_a_message(door: World, method: str, path: str, kw: dict[str, Any], message: str) -> None:
    assert message in call(method, path, 400, **kw)["error"]


def test_a_base64_body_is_read_and_a_broken_one_refused(door: World) -> None:
    ok = event("POST", "/admin/rollouts/door/stable/pause", raw_body=base64.b64encode(b'{"kind": "app"}').decode())
    ok["isBase64Encoded"] = True
    assert app.handler(ok, None)["statusCode"] == 200
    bad = event("POST", "/admin/rollouts/door/stable/resume", raw_body="***")
    bad["isBase64Encoded"] = True
    assert app.handler(bad, None)["statusCode"] == 400


def test_a_write_that_keeps_losing_its_condition_is_409(door: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from otafleet.storage.catalog import CatalogStore
    from otafleet.storage.errors import Conflict

    def lose(self: CatalogStore, *args: Any, **kw: Any) -> None:
        raise Conflict("ConditionalCheckFailedException")

    monkeypatch.setattr(CatalogStore, "put_track", lose)
    assert "try again" in call("POST", "/admin/rollouts/door/stable/pause", 409)["error"]


def test_storage_faults_are_503_and_defects_500_without_a_traceback(
    door: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otafleet.fleet import Fleet
    from otafleet.storage.errors import StorageUnavailable

    def throttled(self: Fleet) -> None:
        raise StorageUnavailable("ThrottlingException")

    monkeypatch.setattr(Fleet, "products", throttled)
    answer = app.handler(event("GET", "/admin/products"), None)
    assert answer["statusCode"] == 503 and answer["headers"]["retry-after"]

    def broken(self: Fleet) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(Fleet, "products", broken)
    answer = app.handler(event("GET", "/admin/products"), None)
    assert answer["statusCode"] == 500 and "boom" not in answer["body"] and "Traceback" not in answer["body"]


def test_every_refusal_is_logged(door: World, caplog: pytest.LogCaptureFixture) -> None:
    call("GET", "/admin/devices", 404, query={"product": "window"})
    refused = [r for r in caplog.records if r.getMessage() == "operator request refused"]
    assert refused and refused[-1].status == 404 and refused[-1].user == "alice"  # type: ignore[attr-defined]


# --- the warm function's short memory of a product's records (admin/cache.py) ----------------------------


def test_reads_of_a_product_share_one_read_for_a_few_seconds_and_a_change_clears_it(
    door: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otafleet.storage.devices import DeviceStore

    reads: list[str] = []
    read = DeviceStore.product_devices

    def counted(self: DeviceStore, product: str) -> Iterator[Any]:
        reads.append(product)
        return read(self, product)

    monkeypatch.setattr(DeviceStore, "product_devices", counted)
    now = [1000.0]
    app.stores()[0].clock = lambda: now[0]
    call("GET", "/admin/overview", query={"product": "door"})
    call("GET", "/admin/devices", query={"product": "door"})
    call("GET", "/admin/rollouts", query={"product": "door"})
    assert reads == ["door"]  # the console's first screen: one read of the product's records
    door.device("5C:CF:7F:00:00:08", "door")
    assert call("GET", "/admin/devices", query={"product": "door"})["total"] == 3  # not yet: a read 0 s old
    now[0] += 11
    assert call("GET", "/admin/devices", query={"product": "door"})["total"] == 4
    call("POST", f"/admin/devices/{MAC}/block")
    assert call("GET", "/admin/devices", query={"product": "door", "state": "blocked"})["total"] == 1
    assert reads == ["door", "door", "door"]
