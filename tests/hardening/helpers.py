"""Shared pieces of the hardening suite: fuzz budgets, a seeded world, handler calls, log capture and
moto as a server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, settings
from moto.server import ThreadedMotoServer

from otafleet import credentials
from otafleet.config import Settings
from otafleet.models import Delivery
from otafleet.storage import clients
from support.devices import http_api_event
from support.world import World, fake_image
from update import app as update_app

# --- fuzz budgets ------------------------------------------------------------------------------------

LONG_PROFILE = "long"
# Examples per property: (default run, HYPOTHESIS_PROFILE=long). Quoted in the issue's closing note.
BUDGETS: dict[str, tuple[int, int]] = {
    "handler_headers": (300, 5000),
    "handler_paths": (150, 2000),
    "image_mutations": (2000, 50000),
    "image_structured": (1000, 20000),
    "names": (500, 20000),
}


def long_run() -> bool:
    return os.environ.get("HYPOTHESIS_PROFILE") == LONG_PROFILE


def budget(name: str) -> int:
    default, long = BUDGETS[name]
    return long if long_run() else default


def fuzz_settings(name: str) -> settings:
    """The settings of one property: its budget, no deadline (moto calls vary), and no complaint about the
    function-scoped world fixture, whose state may carry over between examples on purpose."""
    return settings(
        max_examples=budget(name),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- a seeded world ----------------------------------------------------------------------------------

DOOR_MAC = "5C:CF:7F:00:00:01"  # door: esp8266, inline, Basic auth required, enrollment open
LAMP_MAC = "5C:CF:7F:00:00:02"  # lamp: esp8266, redirect
CAM_MAC = "24:0A:C4:00:00:03"  # cam: esp32s3, redirect
UNKNOWN_MAC = "5C:CF:7F:0F:0F:0F"
KNOWN_MACS = (DOOR_MAC, LAMP_MAC, CAM_MAC)
# Issued the way `otafleet device secret` issues them; the device record stores only its hash.
DOOR_SECRET = credentials.issue_secret()
PRODUCTS = ("door", "lamp", "cam")


def seeded_world(world: World) -> World:
    world.product("door", "esp8266", delivery=Delivery.INLINE, auth_required=True, enroll=True)
    world.release("door", "1.0.0")
    world.release("door", "1.1.0", flash_size_bytes=4 * 1024 * 1024)
    world.channel("door", app="1.1.0")
    world.device(DOOR_MAC, "door", secret_hash=credentials.hash_secret(DOOR_SECRET))

    world.product("lamp", "esp8266", delivery=Delivery.REDIRECT)
    world.release("lamp", "2.0.0")
    world.channel("lamp", app="2.0.0")
    world.device(LAMP_MAC, "lamp")

    world.product("cam", "esp32s3")
    world.release("cam", "3.0.0", fake_image("cam-3.0.0", 8192), chip="esp32s3")
    world.channel("cam", app="3.0.0")
    world.device(CAM_MAC, "cam")
    return world


# --- calling the update handler ----------------------------------------------------------------------

DEVICE_STATUSES = frozenset({200, 302, 304, 401, 403, 404})  # esp-http-update.md §2, and nothing else


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = update_app.handler(event, None)
    return response


def header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def body_bytes(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()


def route_event(
    route: str, params: dict[str, str], headers: dict[str, str], *, query: dict[str, str] | None = None
) -> dict[str, Any]:
    """A payload-2.0 event for `route` (e.g. `/update/{product}`) with these raw path parameter values,
    as API Gateway delivers it: the raw path carries the values as sent, `pathParameters` the same.
    Headers go in exactly as given (the fuzz varies their casing too)."""
    raw_path = route
    for name, value in params.items():
        raw_path = raw_path.replace("{" + name + "}", value)
    event = http_api_event(
        raw_path,
        {},
        query=query,
        source_ip="203.0.113.9",
        path_parameters=dict(params) or None,
        route_key=f"GET {route}",
    )
    event["headers"] = headers
    event["requestContext"]["http"]["userAgent"] = headers.get("user-agent", "")
    return event


def s3_event(world: World, key: str, version_id: str | None) -> dict[str, Any]:
    """An S3 ObjectCreated event for the publish handler, the key URL-encoded the way S3 encodes it."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": world.settings.region,
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {
                "name": world.settings.firmware_bucket,
                "arn": f"arn:aws:s3:::{world.settings.firmware_bucket}",
            },
            "object": {"key": quote_plus(key, safe="/"), "versionId": version_id, "size": 1},
        },
    }
    return {"Records": [record]}


# --- logs --------------------------------------------------------------------------------------------


@dataclass
class LogCapture:
    powertools: io.StringIO
    standard: io.StringIO
    capsys: pytest.CaptureFixture[str]
    _captured: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Everything logged or printed so far in this test."""
        out = self.capsys.readouterr()
        self._captured += [out.out, out.err]
        return "".join([self.powertools.getvalue(), self.standard.getvalue(), *self._captured])

    def records(self) -> list[dict[str, Any]]:
        """The Powertools logger's JSON lines."""
        found: list[dict[str, Any]] = []
        for line in self.powertools.getvalue().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def levels(self, level: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if str(r.get("level", "")).upper() == level]


# --- moto as a server --------------------------------------------------------------------------------


@dataclass
class MotoServer:
    server: ThreadedMotoServer
    endpoint: str

    @classmethod
    def start(cls) -> MotoServer:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return cls(server, f"http://{host}:{port}")

    def stop(self) -> None:
        self.server.stop()

    def settings(self, **overrides: Any) -> Settings:
        """Settings naming fresh tables and a fresh bucket on this server, so tests never share state."""
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "devices_table": f"devices-{tag}",
            "catalog_table": f"catalog-{tag}",
            "firmware_bucket": f"firmware-{tag}",
            "region": "eu-west-1",
            "catalog_cache_seconds": 0.0,
            "endpoint_url": self.endpoint,
            **overrides,
        }
        return Settings(**values)

    def world(self, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> World:
        """A world on this server. boto3 reads AWS_ENDPOINT_URL when a client is made, so it is set first
        and the cached clients are dropped."""
        monkeypatch.setenv("AWS_ENDPOINT_URL", self.endpoint)
        settings = self.settings(**overrides)
        for name, value in {
            "DEVICES_TABLE": settings.devices_table,
            "CATALOG_TABLE": settings.catalog_table,
            "FIRMWARE_BUCKET": settings.firmware_bucket,
        }.items():
            monkeypatch.setenv(name, value)
        clients.dynamodb.cache_clear()
        clients.s3.cache_clear()
        monkeypatch.setattr("otafleet.config.settings", _fixed(settings))
        monkeypatch.setattr("update.app.settings", _fixed(settings))
        monkeypatch.setattr("publish.app.settings", _fixed(settings))
        return World.create(settings)


def _fixed(value: Settings) -> Any:
    def get() -> Settings:
        return value

    return get
