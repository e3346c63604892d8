"""The local stack's stand-ins for Cognito and the HTTP API's JWT authorizer (docs/operator-api.md).

On AWS, the console signs in with Cognito and API Gateway checks the token before a guarded route reaches
its function. Here the stack does both itself, with the stdlib:

- `POST /console/login` with `{"username", "password"}` answers `{"token", "expires_in"}`: a JWT (HS256)
  signed with a key kept in the data folder (`console-jwt-key`). The one user is `admin`; its password is
  random per data folder (`console-password`), or `--console-password`. Both compared in constant time.
- A route whose template event names an authorizer (`Auth.Authorizer`, template.route_authorizers) needs
  `Authorization: Bearer <jwt>` with a valid signature, this stack's issuer and audience, and an `exp`
  (and any `nbf`) that holds now, as API Gateway checks them; otherwise 401 `{"message":"Unauthorized"}`
  as API Gateway answers. The claims reach the function in `requestContext.authorizer.jwt.claims`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("otafleet_local.console")

LOGIN_PATH = "/console/login"
USER = "admin"
ISSUER = "https://otafleet-local/console"
AUDIENCE = "otafleet-local-console"
TOKEN_SECONDS = 3600  # as the template's ConsoleUserPoolClient (IdTokenValidity: 60 minutes)
KEY_FILE = "console-jwt-key"
PASSWORD_FILE = "console-password"
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claims: Mapping[str, Any]) -> str:
    """A compact JWS (HS256) of `claims`."""
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    mac = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def verify(key: bytes, token: str, *, issuer: str, audience: str, now: float) -> dict[str, Any] | None:
    """The claims of a token this key signed for this issuer and audience that holds at `now`; else None."""
    try:
        head, body, mac = token.split(".")
        header = json.loads(_unb64(head))
        expected = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        # The algorithm is this stack's, never the token's choice ("none", or another key type).
        if (
            not isinstance(header, dict)
            or header.get("alg") != "HS256"
            or not hmac.compare_digest(expected, _unb64(mac))
        ):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, UnicodeError, binascii.Error):
        return None
    if not isinstance(claims, dict) or claims.get("iss") != issuer:
        return None
    aud = claims.get("aud", claims.get("client_id"))  # a Cognito access token names its client in client_id
    if audience not in (aud if isinstance(aud, list) else [aud]):
        return None
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or exp <= now or not isinstance(nbf, (int, float)) or nbf > now:
        return None
    return claims


def _kept(folder: Path | None, name: str, make: Callable[[], str]) -> str:
    """A secret made once per data folder (owner-only file), or per process without a folder."""
    if folder is None:
        return make()
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


@dataclass
class ConsoleAuth:
    key: bytes
    password: str
    user: str = USER
    issuer: str = ISSUER
    audience: str = AUDIENCE
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def open(cls, folder: Path | None, password: str | None = None) -> ConsoleAuth:
        key = _kept(folder, KEY_FILE, lambda: secrets.token_hex(32))
        kept = _kept(folder, PASSWORD_FILE, lambda: secrets.token_urlsafe(12))
        return cls(key=bytes.fromhex(key), password=password or kept)

    def token(self, user: str) -> str:
        now = int(self.clock())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": user, "cognito:username": user}
        return sign(self.key, {**claims, "token_use": "id", "iat": now, "exp": now + TOKEN_SECONDS})

    def claims(self, authorization: str | None) -> dict[str, Any] | None:
        """What API Gateway's JWT authorizer passes on for an `Authorization` header, or None (401)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return verify(self.key, token.strip(), issuer=self.issuer, audience=self.audience, now=self.clock())

    def login(self, body: bytes, source: str) -> tuple[int, dict[str, Any]]:
        """`POST /console/login`: (status, JSON answer)."""
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("username"), str):
            return 400, {"error": 'expected a JSON object {"username": …, "password": …}'}
        user, password = data["username"], data.get("password")
        if not isinstance(password, str):
            return 400, {"error": "password must be a string"}
        # Both compared, whatever the first says, each in constant time: the answer's timing tells nothing.
        good_user = hmac.compare_digest(user.encode(), self.user.encode())
        good_password = hmac.compare_digest(password.encode(), self.password.encode())
        if not (good_user & good_password):
            log.warning("console sign-in refused for user %r from %s", user[:40], source)
            return 401, {"error": "wrong user name or password"}
        log.info("console sign-in of %s from %s", user, source)
        return 200, {"token": self.token(user), "expires_in": TOKEN_SECONDS}
