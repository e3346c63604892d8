"""The local stack's stand-in for the JWT authorizer and Cognito sign-in (otafleet_local.console_auth)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from otafleet_local import console_auth
from otafleet_local.console_auth import AUDIENCE, ISSUER, ConsoleAuth, sign, verify

KEY = b"k" * 32
NOW = 1_800_000_000


def claims(**overrides: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": NOW + 60, **overrides}


def check(token: str) -> dict[str, Any] | None:
    return verify(KEY, token, issuer=ISSUER, audience=AUDIENCE, now=NOW)


def test_a_token_it_signed_is_accepted_with_its_claims() -> None:
    assert check(sign(KEY, claims())) == claims()
    assert check(sign(KEY, claims(aud=["other", AUDIENCE])))  # a list of audiences, as JWTs allow
    # A Cognito access token has no aud: API Gateway checks its client_id against the audience.
    access = claims(client_id=AUDIENCE)
    del access["aud"]
    assert check(sign(KEY, access))


@pytest.mark.parametrize(
    "token",
    [
        sign(b"another key", claims()),
        sign(KEY, claims(aud="other")),
        sign(KEY, claims(iss="https://elsewhere")),
        sign(KEY, claims(exp=NOW)),
        sign(KEY, claims(exp="never")),
        sign(KEY, {k: v for k, v in claims().items() if k != "exp"}),
        sign(KEY, claims(nbf=NOW + 5)),
        "a.b",
        "a.b.c",
        "",
    ],
)
def test_anything_else_is_refused(token: str) -> None:
    assert check(token) is None


def test_the_algorithm_is_never_the_tokens_choice() -> None:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    assert check(f"{b64({'alg': 'none'})}.{b64(claims())}.") is None
    signed = sign(KEY, claims())
    assert check(b64({"alg": "HS512", "typ": "JWT"}) + signed[signed.index(".") :]) is None


def test_login_gives_a_token_the_authorizer_accepts_and_refuses_a_wrong_password(tmp_path: Path) -> None:
    auth = ConsoleAuth.open(tmp_path)
    assert (tmp_path / console_auth.PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    status, answer = auth.login(json.dumps({"username": "admin", "password": auth.password}).encode(), "test")
    assert status == 200 and answer["expires_in"] == console_auth.TOKEN_SECONDS
    assert auth.claims(f"Bearer {answer['token']}")["cognito:username"] == "admin"  # type: ignore[index]
    assert auth.claims(answer["token"]) is None  # not a Bearer header
    for body in ({"username": "admin", "password": "x"}, {"username": "root", "password": auth.password}):
        assert auth.login(json.dumps(body).encode(), "test")[0] == 401
    assert auth.login(b"nope", "test")[0] == 400
    assert auth.login(b'{"username": "admin", "password": 1}', "test")[0] == 400


def test_the_password_and_key_are_kept_per_data_folder_unless_overridden(tmp_path: Path) -> None:
    first, again = ConsoleAuth.open(tmp_path), ConsoleAuth.open(tmp_path)
    assert (first.password, first.key) == (again.password, again.key)
    assert ConsoleAuth.open(tmp_path / "other").password != first.password
    overridden = ConsoleAuth.open(tmp_path, "chosen")
    assert overridden.password == "chosen" and overridden.key == first.key
    assert (tmp_path / console_auth.PASSWORD_FILE).read_text().strip() == first.password
