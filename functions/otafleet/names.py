"""What product names, channel names and versions may look like.

They become parts of S3 keys and DynamoDB sort keys, and appear in logs and terminals, so they are
restricted to a safe alphabet and length: no path separators, no `..`, no control characters.
"""

from __future__ import annotations

import re

_PRODUCT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CHANNEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")


class InvalidName(ValueError):
    pass


def _check(kind: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
    # fullmatch: `$` would also accept a trailing newline ("door\n").
    if not pattern.fullmatch(value) or ".." in value:
        raise InvalidName(f"invalid {kind} {value[:80]!r}: {rule}")
    return value


def product(value: str) -> str:
    return _check("product name", value, _PRODUCT, "1-64 of a-z 0-9 _ -, starting with a letter or digit")


def channel(value: str) -> str:
    return _check("channel name", value, _CHANNEL, "1-32 of a-z 0-9 _ -, starting with a letter or digit")


def version(value: str) -> str:
    return _check("version", value, _VERSION, "1-64 of A-Z a-z 0-9 . _ + ~ -, starting with a letter or digit")
