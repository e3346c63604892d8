"""End to end on the local stack: device-shaped raw HTTP/1.0 requests, real S3 uploads through the publish
function, CloudFormation discovery, the banner's curl lines, and a clear error for a taken port."""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e.harness import ROOT, RawResponse, RunningStack, esp_request, raw_request, stack_command, stack_env

from otafleet.models import Delivery, Device, Kind, Product, Release, ReleaseState
from otafleet_local.sample_images import build_esp8266_image
from support.devices import esp8266_headers

pytestmark = pytest.mark.e2e

PRODUCT = "e2e"
VERSION = "2.0.0"
REGISTER_TIMEOUT = 10.0
OUTPUTS = {
    "ApiUrl",
    "FirmwareBucketName",
    "DevicesTableName",
    "CatalogTableName",
    "AuditTableName",
    "Region",
    "UpdateFunctionName",
    "PublishFunctionName",
}


@dataclass(frozen=True)
class Published:
    image: bytes
    release: Release


def wait_for_release(stack: RunningStack, product: str, version: str, data: bytes) -> Release:
    """Poll the catalog (bounded) until the publish function registered or rejected the upload."""
    catalog = stack.catalog()
    sha256 = hashlib.sha256(data).hexdigest()
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while time.monotonic() < deadline:
        release = catalog.upload_status(product, Kind.APP, version, sha256)
        if release is not None:
            return release
        time.sleep(0.05)
    pytest.fail(f"{product} {version} not registered within {REGISTER_TIMEOUT:g} s\n{stack.logs()}")


def wait_for_channel(stack: RunningStack, product: str, channel: str, version: str) -> None:
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while time.monotonic() < deadline:
        catalog = stack.catalog().load(product, fresh=True)
        track = catalog.channels[channel].tracks.get(Kind.APP) if catalog and channel in catalog.channels else None
        if track is not None and track.version == version:
            return
        time.sleep(0.05)
    pytest.fail(f"{product}/{channel} not on {version} within {REGISTER_TIMEOUT:g} s\n{stack.logs()}")


@pytest.fixture(scope="module")
def published(local_stack: RunningStack) -> Iterator[Published]:
    """Product `e2e` (esp8266, redirect) with VERSION uploaded through S3 and promoted to `stable`."""
    local_stack.catalog().put_product(Product(name=PRODUCT, platform="esp8266", delivery=Delivery.REDIRECT))
    image = build_esp8266_image(sketch_size=96 * 1024, seed=42, version=VERSION)
    local_stack.client("s3").put_object(
        Bucket=local_stack.info["bucket"],
        Key=f"firmware/{PRODUCT}/{VERSION}.bin",
        Body=image,
        Metadata={"channel": "stable"},
    )
    release = wait_for_release(local_stack, PRODUCT, VERSION, image)
    assert release.state is ReleaseState.REGISTERED, release.reason
    wait_for_channel(local_stack, PRODUCT, "stable", VERSION)
    yield Published(image, release)


def assign(stack: RunningStack, mac: str) -> None:
    stack.devices().put(Device(mac=mac, product=PRODUCT, channel="stable", assigned=True))


def device_check(stack: RunningStack, mac: str, target: str = "/update", version: str | None = None) -> RawResponse:
    host, port = stack.api_host_port
    return raw_request(host, port, esp_request(target, f"{host}:{port}", esp8266_headers(mac, version=version)))


def assert_framing(response: RawResponse) -> None:
    """What the stock clients need of any answer: exact Content-Length, no chunking, closed connection."""
    assert response.all("Transfer-Encoding") == []
    assert response.all("Content-Length") == [str(len(response.body))]
    assert response.version == "HTTP/1.0"
    assert (response.header("Connection") or "").lower() == "close"


def test_redirect_302_then_location_serves_the_exact_bytes(local_stack: RunningStack, published: Published) -> None:
    mac = "5C:CF:7F:E2:E0:01"
    assign(local_stack, mac)
    response = device_check(local_stack, mac)
    assert_framing(response)
    assert response.status == 302, response.raw_head
    assert response.body == b"" and response.header("Content-Length") == "0"
    location = response.header("Location")
    assert location is not None
    assert location.startswith(local_stack.info["public_aws_endpoint"] + "/")
    assert "X-Amz-Signature=" in location and "versionId=" in location

    url = urlsplit(location)
    assert url.scheme == "http"  # same scheme as the request, as the clients require
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", f"{url.path}?{url.query}")
        download = conn.getresponse()
        body = download.read()
    finally:
        conn.close()
    assert download.status == 200
    assert download.getheader("Transfer-Encoding") is None
    assert download.getheader("Content-Length") == str(len(published.image))
    assert body == published.image


def test_inline_200_has_exact_length_and_md5(local_stack: RunningStack, published: Published) -> None:
    mac = "5C:CF:7F:E2:E0:02"
    assign(local_stack, mac)
    response = device_check(local_stack, mac, "/update?delivery=inline")
    assert_framing(response)
    assert response.status == 200, response.raw_head
    body = response.body
    assert body == published.image and body[0] == 0xE9
    assert response.header("x-MD5") == hashlib.md5(body).hexdigest()


def test_current_version_gets_304_without_body(local_stack: RunningStack, published: Published) -> None:
    mac = "5C:CF:7F:E2:E0:03"
    assign(local_stack, mac)
    response = device_check(local_stack, mac, version=VERSION)
    assert_framing(response)
    assert response.status == 304, response.raw_head
    assert response.body == b""
    assert response.header("Content-Length") == "0"


def test_not_an_esp_client_gets_403(local_stack: RunningStack, published: Published) -> None:
    host, port = local_stack.api_host_port
    headers = esp8266_headers("5C:CF:7F:E2:E0:01")
    headers["User-Agent"] = "curl/8.5.0"
    response = raw_request(host, port, esp_request("/update", f"{host}:{port}", headers))
    assert_framing(response)
    assert response.status == 403
    assert b"ESP" in response.body


def test_unknown_device_gets_404(local_stack: RunningStack) -> None:
    response = device_check(local_stack, "5C:CF:7F:E2:E0:99")
    assert_framing(response)
    assert response.status == 404, response.raw_head


def test_routes_come_from_the_template(local_stack: RunningStack) -> None:
    host, port = local_stack.api_host_port
    missing = raw_request(host, port, f"GET /nope HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    assert missing.status == 404
    assert_framing(missing)
    wrong_method = raw_request(
        host, port, f"POST /update HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert wrong_method.status == 405
    assert wrong_method.header("Allow") == "GET"
    assert_framing(wrong_method)


def test_http11_client_gets_exact_length_too(local_stack: RunningStack) -> None:
    """Tools that speak HTTP/1.1 (curl, browsers) get a sized, unchunked answer as well."""
    host, port = local_stack.api_host_port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/firmware/nothing/stable")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 404
    assert response.getheader("Transfer-Encoding") is None
    assert response.getheader("Content-Length") == str(len(body))


def test_put_object_registers_a_release(local_stack: RunningStack, published: Published) -> None:
    """A plain boto3 upload by the key convention reaches the real publish function with an S3 event."""
    version = "2.1.0"
    image = build_esp8266_image(sketch_size=64 * 1024, seed=7, version=version)
    put = local_stack.client("s3").put_object(
        Bucket=local_stack.info["bucket"], Key=f"firmware/{PRODUCT}/{version}.bin", Body=image
    )
    release = wait_for_release(local_stack, PRODUCT, version, image)
    assert release.state is ReleaseState.REGISTERED, release.reason
    assert release.size == len(image)
    assert release.md5 == hashlib.md5(image).hexdigest()
    assert release.chip == "esp8266"
    # Bound to the exact object version: the poller filled in the versionId moto's event lacks.
    assert release.s3_version_id == put["VersionId"]
    assert release.s3_key == f"firmware/{PRODUCT}/{version}.bin"


def test_upload_outside_the_key_convention_is_not_published(local_stack: RunningStack, published: Published) -> None:
    """The template's prefix/suffix filters apply: other keys never reach the publish function."""
    s3, bucket = local_stack.client("s3"), local_stack.info["bucket"]
    s3.put_object(Bucket=bucket, Key=f"notes/{PRODUCT}/9.9.9.bin", Body=b"\xe9" + b"\0" * 100)
    s3.put_object(Bucket=bucket, Key=f"firmware/{PRODUCT}/9.9.8.txt", Body=b"\xe9" + b"\0" * 100)
    # An upload by the convention after them: once it is handled, anything queued before it was too.
    marker = build_esp8266_image(sketch_size=16 * 1024, seed=9, version="2.2.0")
    s3.put_object(Bucket=bucket, Key=f"firmware/{PRODUCT}/2.2.0.bin", Body=marker)
    assert wait_for_release(local_stack, PRODUCT, "2.2.0", marker).state is ReleaseState.REGISTERED
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while f"PublishFunction handled firmware/{PRODUCT}/2.2.0.bin" not in local_stack.stderr.read_text():
        assert time.monotonic() < deadline, local_stack.logs()
        time.sleep(0.05)
    log = local_stack.stderr.read_text()
    assert f"notes/{PRODUCT}/9.9.9.bin" not in log
    assert f"firmware/{PRODUCT}/9.9.8.txt" not in log


def test_stack_is_discoverable_through_cloudformation(local_stack: RunningStack) -> None:
    stacks = local_stack.client("cloudformation").describe_stacks(StackName="otafleet")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0]["Outputs"]}
    assert set(outputs) == OUTPUTS
    info = local_stack.info
    assert outputs["ApiUrl"] == info["api_url"]
    assert outputs["FirmwareBucketName"] == info["bucket"] == "otafleet-firmware"
    assert outputs["DevicesTableName"] == info["devices_table"] == "otafleet-devices"
    assert outputs["CatalogTableName"] == info["catalog_table"] == "otafleet-catalog"
    assert outputs["AuditTableName"] == info["audit_table"] == "otafleet-audit"
    assert outputs["Region"] == info["region"] == "us-east-1"
    assert outputs["UpdateFunctionName"] and outputs["PublishFunctionName"]


def test_the_cli_records_an_action_in_the_local_stacks_audit_table(local_stack: RunningStack) -> None:
    env = {**stack_env(), "AWS_ENDPOINT_URL": local_stack.info["aws_endpoint"]}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "otafleet_cli.main", *argv, "--region", local_stack.info["region"]]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)

    mac = "5C:CF:7F:00:0A:D1"  # a device of its own: the session's other tests never see it
    assigned = cli("device", "assign", mac, "--product", "demo")
    assert assigned.returncode == 0, assigned.stderr
    listed = cli("audit", "--product", "demo", "--since", "10m", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["target"] == {"device": mac}]
    assert entry["action"] == "device.assign" and entry["actor"].startswith("arn:aws:")
    assert entry["after"]["product"] == "demo" and entry["before"]["product"] is None


def test_the_controller_runs_on_the_templates_schedule_and_on_demand(local_stack: RunningStack) -> None:
    """The local stack loads the controller and times it at ControllerRateMinutes (5 min: no run during
    these tests); `otafleet rollout tick` runs one pass against the stack at once."""
    assert local_stack.info["functions"]["ControllerFunction"] is True
    assert local_stack.info["schedules"] == {"ControllerFunction.Tick": 300.0}
    assert "ControllerFunction runs every 5 min" in local_stack.stdout.read_text()
    env = {**stack_env(), "AWS_ENDPOINT_URL": local_stack.info["aws_endpoint"]}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "otafleet_cli.main",
            "rollout",
            "tick",
            "--json",
            "--region",
            local_stack.info["region"],
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["faults"] == []


def test_banner_curl_lines_get_302_and_304(local_stack: RunningStack) -> None:
    """The demo works at once: the banner's two curl lines, replayed as an ESP sends them."""
    assert local_stack.info["demo"]["registered"], local_stack.logs()
    banner = local_stack.stdout.read_text()
    lines = {}
    for line in banner.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[0] in ("302", "304") and words[1].startswith("curl "):
            lines[int(words[0])] = shlex.split(words[1])
    assert set(lines) == {302, 304}, banner
    host, port = local_stack.api_host_port
    for expected in (302, 304):
        argv = lines[expected]
        headers = dict(h.split(": ", 1) for flag, h in itertools.pairwise(argv) if flag == "-H")
        url = urlsplit(argv[-1])
        assert "-0" in argv  # HTTP/1.0, like the devices
        response = raw_request(host, port, esp_request(url.path, f"{host}:{port}", headers))
        assert response.status == expected, (argv, response.raw_head)
        assert_framing(response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("option", ["--port", "--aws-port"])
def test_port_in_use_is_one_clear_line(option: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--aws-port" if option == "--port" else "--port"
        done = subprocess.run(
            stack_command(option, str(port), other, "0", "--no-demo", "--data", str(tmp_path / "data")),
            cwd=ROOT,
            env=stack_env(),
            capture_output=True,
            timeout=30,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert errors == [
        f"otafleet-local: port {port} on 127.0.0.1 is in use; pass {option} to pick another (0: any free port)"
    ]
