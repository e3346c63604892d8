"""The operator API on the running local stack: guarded as the template says (its JWT authorizer's local
stand-in refuses every /admin route without a valid token), the local sign-in, and an action taken
through the API recorded in the audit trail as the console user."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import ROOT, RunningStack, stack_env

from admin.routes import ROUTES
from otafleet.models import Channel, Kind, Product, Track
from otafleet_local import console_auth

PRODUCT = "console-e2e"  # a product of its own: the session's other tests never see it


def request(
    stack: RunningStack, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    host, port = stack.api_host_port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        connection.close()


def data_file(stack: RunningStack, name: str) -> str:
    return (Path(stack.info["data"]) / name).read_text().strip()


def login(stack: RunningStack) -> str:
    status, data = request(
        stack,
        "POST",
        "/console/login",
        body={"username": "admin", "password": data_file(stack, console_auth.PASSWORD_FILE)},
    )
    assert status == 200, data
    assert data["expires_in"] == console_auth.TOKEN_SECONDS
    token: str = data["token"]
    return token


def admin_paths() -> list[tuple[str, str]]:
    """One request per route of the operator API (admin.routes.ROUTES), its parameters filled in."""
    values = {"rollouts": ["demo", "stable", "pause"], "devices": ["5C:CF:7F:00:00:01", "block"]}
    found = []
    for method, pattern in ROUTES:
        params = iter(values.get(pattern[0], ["demo", "1.0.1"]))
        found.append((method, "/admin/" + "/".join(next(params) if p == "*" else p for p in pattern)))
    return found


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": console_auth.ISSUER,
        "aud": console_auth.AUDIENCE,
        "sub": "admin",
        "cognito:username": "admin",
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


def bad_tokens(stack: RunningStack) -> dict[str, str | None]:
    key = bytes.fromhex(data_file(stack, console_auth.KEY_FILE))
    return {
        "missing": None,
        "not a JWT": "not-a-token",
        "expired": console_auth.sign(key, claims(exp=int(time.time()) - 5)),
        "foreign": console_auth.sign(b"another stack's key", claims()),
        "wrong audience": console_auth.sign(key, claims(aud="someone-else")),
        "wrong issuer": console_auth.sign(key, claims(iss="https://elsewhere")),
        "unsigned": login(stack).rsplit(".", 1)[0] + ".",
    }


@pytest.mark.parametrize(("method", "path"), admin_paths())
def test_every_admin_route_refuses_a_request_without_a_valid_token(
    local_stack: RunningStack, method: str, path: str
) -> None:
    for what, token in bad_tokens(local_stack).items():
        status, data = request(local_stack, method, path, token=token)
        assert (status, data) == (401, {"message": "Unauthorized"}), (what, method, path)


def test_a_valid_token_reaches_the_api(local_stack: RunningStack) -> None:
    token = login(local_stack)
    assert request(local_stack, "GET", "/admin/whoami", token=token) == (200, {"user": "admin"})
    status, data = request(local_stack, "GET", "/admin/overview?product=demo", token=token)
    assert status == 200 and data["product"] == "demo" and data["devices"] >= 1
    status, data = request(local_stack, "GET", "/admin/nothing", token=token)
    assert status == 404 and "no route" in data["error"]


def test_a_wrong_password_or_user_is_refused_and_logged(local_stack: RunningStack) -> None:
    for body in ({"username": "admin", "password": "guess"}, {"username": "root", "password": "guess"}):
        assert request(local_stack, "POST", "/console/login", body=body) == (
            401,
            {"error": "wrong user name or password"},
        )
    assert request(local_stack, "POST", "/console/login", body=["admin"])[0] == 400
    deadline = time.monotonic() + 5
    while "console sign-in refused for user 'root'" not in local_stack.stderr.read_text():
        assert time.monotonic() < deadline, local_stack.logs()
        time.sleep(0.05)


def test_the_banner_names_the_console_user_and_password(local_stack: RunningStack) -> None:
    password = data_file(local_stack, console_auth.PASSWORD_FILE)
    assert f"console       user admin, password {password}" in local_stack.stdout.read_text()


def test_a_pause_through_the_api_shows_in_the_audit_trail_as_the_console_user(local_stack: RunningStack) -> None:
    catalog = local_stack.catalog()
    catalog.put_product(Product(name=PRODUCT, platform="esp8266"))
    catalog.put_channel(Channel(product=PRODUCT, name="stable", tracks={Kind.APP: Track(version="1.0.0")}))
    status, data = request(local_stack, "POST", f"/admin/rollouts/{PRODUCT}/stable/pause", token=login(local_stack))
    assert status == 200, data
    assert [r["state"] for r in data["rollouts"]] == ["paused"]
    env = {**stack_env(), "AWS_ENDPOINT_URL": local_stack.info["aws_endpoint"]}
    command = ["audit", "--product", PRODUCT, "--json", "--region", local_stack.info["region"]]
    listed = subprocess.run(
        [sys.executable, "-m", "otafleet_cli.main", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["action"], entry["actor"]) == ("channel.pause", "console:admin")
    assert entry["after"]["state"] == "paused"
