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


def verify(authorization: str | None, mac: str, secret_hash: str | None) -> bool:
    if not authorization or not secret_hash or not secret_hash.startswith(_PREFIX):
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        # Split at the last colon: a MAC written with colons is a common user name, and issued
        # secrets (URL-safe base64) never contain one.
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().rpartition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: a token with non-ASCII characters
        return False
    if not sep or normalise_mac(user) != mac:
        return False
    return hmac.compare_digest(hash_secret(password), secret_hash)
