"""Test-wide guards: fake AWS credentials, and no network beyond this machine's loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from otafleet_local.loopback import is_loopback_address

# Set before anything imports boto3: no real credentials, profile or endpoint can leak in.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "DEVICES_TABLE": "otafleet-devices",
        "CATALOG_TABLE": "otafleet-catalog",
        "FIRMWARE_BUCKET": "otafleet-firmware",
        "CATALOG_CACHE_SECONDS": "0",
        "POWERTOOLS_SERVICE_NAME": "otafleet",
        "POWERTOOLS_METRICS_NAMESPACE": "otafleet",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
        "SAM_CLI_TELEMETRY": "0",
    }
)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests get no sockets at all; every other test may reach loopback only."""
    unit = "tests/unit" in str(request.node.path).replace(os.sep, "/")

    def guard(address: Any) -> None:
        if unit or not is_loopback_address(address):
            raise NetworkBlocked(f"test tried to connect to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        guard(address)
        _real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard(address)
        return _real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
