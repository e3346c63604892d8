"""The servers the `local` benchmark loads, each run in a process of its own:

    python -m bench.serve stack READY_FILE DEVICES   the local stack (otafleet_local.LocalStack), seeded
    python -m bench.serve floor READY_FILE            a bare stdlib HTTP server answering every GET with 304

Each writes its base URL to READY_FILE once it serves, and stops when its stdin closes. Only
127.0.0.1 is used (ports chosen by the OS).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bench  # noqa: F401 - fake AWS credentials and sys.path before anything else

PRODUCT = "bench"
VERSION = "1.0.0"


def device_macs(count: int) -> list[str]:
    return [f"5C:CF:7F:30:{i // 256:02X}:{i % 256:02X}" for i in range(count)]


class _NotModified(BaseHTTPRequestHandler):
    """The least an update server can do: read the request, answer 304, close (HTTP/1.0)."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response_only(304)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FloorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def floor(ready: Path) -> None:
    server = _FloorServer(("127.0.0.1", 0), _NotModified)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ready.write_text(f"http://127.0.0.1:{server.server_address[1]}\n")
    sys.stdin.read()  # until the parent closes it
    server.shutdown()
    server.server_close()


def stack(ready: Path, devices: int) -> None:
    from bench import scenario
    from otafleet_local.stack import LocalStack, StackConfig

    local = LocalStack(StackConfig(port=0, aws_port=0, demo=False)).start()
    try:
        settings = local.settings()
        dynamodb = local.client("dynamodb")
        scenario.seed_product(settings, dynamodb, local.client("s3"), PRODUCT, versions=(VERSION,), current=VERSION)
        scenario.seed_devices(settings, dynamodb, PRODUCT, device_macs(devices))
        ready.write_text(local.local_api_url + "\n")
        sys.stdin.read()
    finally:
        local.stop()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "floor":
        floor(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "stack":
        stack(Path(argv[1]), int(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
