"""Helpers for the end-to-end tests: the stack process, its clients, and raw device-shaped HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from otafleet.config import Settings
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    info: dict[str, Any]
    stdout: Path
    stderr: Path
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def api_host_port(self) -> tuple[str, int]:
        host, port = self.info["api_url"].removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                endpoint_url=self.info["aws_endpoint"],
                region_name=self.info["region"],
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            )
        return self._clients[service]

    def settings(self) -> Settings:
        return Settings(
            devices_table=self.info["devices_table"],
            catalog_table=self.info["catalog_table"],
            audit_table=self.info["audit_table"],
            firmware_bucket=self.info["bucket"],
            region=self.info["region"],
            catalog_cache_seconds=0.0,
            endpoint_url=self.info["aws_endpoint"],
        )

    def catalog(self) -> CatalogStore:
        return CatalogStore(self.settings(), client=self.client("dynamodb"))

    def devices(self) -> DeviceStore:
        return DeviceStore(self.settings(), client=self.client("dynamodb"))

    def logs(self) -> str:
        return f"--- stdout ---\n{_tail(self.stdout)}\n--- stderr ---\n{_tail(self.stderr)}"


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def stack_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "otafleet_local.main", *args]


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RawResponse:
    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def raw_request(host: str, port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send bytes as they are, read until the server closes the connection (as an ESP client does)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(version, int(status), headers, body, head)


def esp_request(target: str, host_header: str, headers: dict[str, str]) -> bytes:
    """The request an ESP8266httpUpdate client sends: HTTP/1.0, Host, User-Agent, Connection: close,
    then its x-ESP8266-* headers and (core >= 2.6) Content-Length: 0."""
    rest = {k: v for k, v in headers.items() if k.lower() not in ("user-agent", "connection", "host")}
    lines = [f"GET {target} HTTP/1.0", f"Host: {host_header}"]
    if "User-Agent" in headers:
        lines.append(f"User-Agent: {headers['User-Agent']}")
    lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in rest.items()]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
