"""Per-device secrets for products that require HTTP Basic auth.

Secrets are 32 random bytes issued by the service, so a single SHA-256 is enough to store them (slow
password hashes protect low-entropy human passwords, which these are not). Comparison is constant-time.
The Basic auth user name must be the device's identity MAC (protocol.identity_mac: the base MAC on an
ESP32 Ethernet board; any case or separator, `5CCF7F000001` keeps to RFC 7617, which bars colons in user
names) so one device's secret never opens another's record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from otafleet.protocol import normalise_mac

_PREFIX = "sha256$"


def issue_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return _PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def _basic(authorization: str | None) -> tuple[str, str] | None:
    """(MAC the user name names, password) of a Basic Authorization header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # Split at the last colon: a MAC written with colons is a common user name, and issued
        # secrets (URL-safe base64) never contain one.
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().rpartition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: a token with non-ASCII characters
        return None
    mac = normalise_mac(user) if sep else None
    return (mac, password) if mac else None


def user_mac(authorization: str | None) -> str | None:
    """The device a Basic Authorization header claims to be (to look up its secret), or None."""
    parsed = _basic(authorization)
    return parsed[0] if parsed else None


def verify(authorization: str | None, mac: str, secret_hash: str | None) -> bool:
    parsed = _basic(authorization)
    if parsed is None or not secret_hash or not secret_hash.startswith(_PREFIX) or parsed[0] != mac:
        return False
    return hmac.compare_digest(hash_secret(parsed[1]), secret_hash)
