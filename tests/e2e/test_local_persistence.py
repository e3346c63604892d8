"""The local stack keeps its state in its data folder: stopped with SIGINT, or killed with SIGKILL a little
over a second after the last write, it comes back with the same products, releases (bound to the same S3
object versions, whose bytes it still serves), channel tracks of a staged rollout and devices, and a
device's next check gets the same answer. The demo data is seeded once, not at every start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e.harness import ROOT, RawResponse, RunningStack, raw_request, stack_command, stack_env
from e2e.test_local_stack import assert_framing, device_check, wait_for_channel, wait_for_release

from otafleet.models import Delivery, Device, Kind, Product, ReleaseState
from otafleet_local.sample_images import build_esp8266_image

pytestmark = pytest.mark.e2e

PRODUCT = "keep"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SNAPSHOT_WAIT = 2.5  # > the store's one-second interval, with room for a slow machine
FIRST, SECOND = "5C:CF:7F:4B:00:01", "5C:CF:7F:4B:00:02"


def start(workdir: Path, data: Path, name: str, *options: str) -> RunningStack:
    ready = workdir / f"{name}.ready.json"
    stdout, stderr = workdir / f"{name}.stdout.log", workdir / f"{name}.stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            stack_command(
                *("--port", "0", "--aws-port", "0", "--ready-file", str(ready), "--data", str(data)), *options
            ),
            cwd=ROOT,
            env=stack_env(),
            stdout=out,
            stderr=err,
        )
    stack = RunningStack(process, {}, stdout, stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(f"otafleet-local exited with {process.returncode} while starting\n{stack.logs()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"otafleet-local was not ready within {START_TIMEOUT:g} s\n{stack.logs()}")
        time.sleep(0.05)
    stack.info = json.loads(ready.read_text())
    return stack


def stop(stack: RunningStack, sig: signal.Signals) -> None:
    stack.process.send_signal(sig)
    try:
        stack.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
        pytest.fail(f"otafleet-local did not stop within {STOP_TIMEOUT:g} s of {sig.name}\n{stack.logs()}")
    if sig is signal.SIGINT:
        assert stack.process.returncode == 0, stack.logs()


def cli(stack: RunningStack, *argv: str) -> Any:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": stack.info["aws_endpoint"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": stack.info["region"],
        "AWS_REGION": stack.info["region"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "otafleet_cli.main", *argv], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout) if "--json" in argv else done.stdout.decode()


def state(stack: RunningStack) -> dict[str, Any]:
    """What must survive, read through the stores and S3 as operators' tools read it."""
    catalog = stack.catalog().load(PRODUCT, fresh=True)
    assert catalog is not None
    s3 = stack.client("s3")
    versions = s3.list_object_versions(Bucket=stack.info["bucket"])["Versions"]
    return {
        "product": catalog.product,
        "releases": catalog.releases,
        "channels": catalog.channels,
        "devices": {mac: stack.devices().get(mac) for mac in (FIRST, SECOND)},
        "object_versions": sorted((v["Key"], v["VersionId"], v["ETag"], v["Size"]) for v in versions),
        "demo": stack.catalog().load("demo", fresh=True),
    }


def answer(response: RawResponse) -> tuple[int, str | None, str | None, dict[str, list[str]]]:
    """A check's answer without what changes with the clock (presigned URLs carry a date and signature)."""
    assert_framing(response)
    location = response.header("Location")
    query = (
        {k: v for k, v in parse_qs(urlsplit(location).query).items() if not k.startswith("X-Amz")} if location else {}
    )
    return response.status, response.header("X-Otafleet-Reason"), urlsplit(location).path if location else None, query


def download(stack: RunningStack, response: RawResponse) -> bytes:
    location = response.header("Location")
    assert location is not None, response.raw_head
    url = urlsplit(location)
    target = url.path + f"?{url.query}"
    got = raw_request(
        url.hostname or "", url.port or 80, f"GET {target} HTTP/1.0\r\nHost: {url.netloc}\r\n\r\n".encode()
    )
    assert got.status == 200, got.raw_head
    return got.body


def test_state_survives_sigint_and_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start(tmp_path, data, "first")
    try:
        assert first.info["restored"] is False
        first.catalog().put_product(Product(name=PRODUCT, platform="esp8266", delivery=Delivery.REDIRECT))
        images = {
            v: build_esp8266_image(sketch_size=64 * 1024, seed=n, version=v) for n, v in enumerate(["1.0", "2.0"])
        }
        s3 = first.client("s3")
        bucket = first.info["bucket"]
        s3.put_object(
            Bucket=bucket, Key=f"firmware/{PRODUCT}/1.0.bin", Body=images["1.0"], Metadata={"channel": "stable"}
        )
        assert wait_for_release(first, PRODUCT, "1.0", images["1.0"]).state is ReleaseState.REGISTERED
        wait_for_channel(first, PRODUCT, "stable", "1.0")
        s3.put_object(Bucket=bucket, Key=f"firmware/{PRODUCT}/2.0.bin", Body=images["2.0"])
        assert wait_for_release(first, PRODUCT, "2.0", images["2.0"]).state is ReleaseState.REGISTERED
        # A staged rollout: the new release for half of the channel, the previous one for the rest.
        cli(first, "channel", "set", PRODUCT, "stable", "2.0", "--percent", "50")
        first.devices().put(Device(mac=FIRST, product=PRODUCT, channel="stable", assigned=True))
        before = device_check(first, FIRST, version="0.9")
        assert before.status == 302, before.raw_head
        served = download(first, before)
        assert served in images.values()
        kept = state(first)
        assert kept["releases"][(Kind.APP, "2.0")].s3_version_id, "the release is bound to an object version"
        assert kept["channels"]["stable"].tracks[Kind.APP].percent == 50
    finally:
        stop(first, signal.SIGINT)
    assert (data / "state.pickle").exists()

    second = start(tmp_path, data, "second")
    try:
        assert second.info["restored"] is True
        assert state(second) == kept, "the state after a SIGINT differs"
        again = device_check(second, FIRST, version="0.9")
        assert answer(again) == answer(before)  # the same release, the same object version
        assert download(second, again) == served
        # A change after the restart, then a crash once the store has had time to write it.
        second.devices().put(Device(mac=SECOND, product=PRODUCT, channel="stable", assigned=True))
        second_before = device_check(second, SECOND, version="0.9")
        kept = state(second)
        time.sleep(SNAPSHOT_WAIT)
    finally:
        stop(second, signal.SIGKILL)

    third = start(tmp_path, data, "third")
    try:
        assert third.info["restored"] is True
        assert state(third) == kept, "the state after a SIGKILL differs"
        assert answer(device_check(third, SECOND, version="0.9")) == answer(second_before)
        assert answer(device_check(third, FIRST, version="0.9")) == answer(before)
        demo_versions = third.client("s3").list_object_versions(Bucket=bucket, Prefix="firmware/demo/")["Versions"]
        assert len(demo_versions) == 1, "the demo image was uploaded again: demo data seeded twice"
    finally:
        stop(third, signal.SIGINT)


def test_fresh_starts_empty_and_keeps_the_old_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stack = start(tmp_path, data, "one")
    try:
        stack.devices().put(Device(mac=FIRST, product="demo", channel="stable", assigned=True))
    finally:
        stop(stack, signal.SIGINT)
    stack = start(tmp_path, data, "fresh", "--fresh")
    try:
        assert stack.info["restored"] is False
        assert stack.devices().get(FIRST) is None
        assert (data / "state.pickle.before-fresh").exists()
    finally:
        stop(stack, signal.SIGINT)
