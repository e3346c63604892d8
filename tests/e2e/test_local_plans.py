"""The demo of a rollout plan on the local stack: its controller runs on a one-second timer, and
`otafleet rollout status --watch` shows the plan's first stage (which holds none of the demo's devices)
advancing to the next without anyone running a tick."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import ROOT, RunningStack, stack_command, stack_env

from otafleet import rollout
from otafleet.models import Kind
from otafleet_local import demo

VERSION = "1.0.2"


@pytest.fixture
def ticking_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    workdir = tmp_path_factory.mktemp("ticking-stack")
    ready = workdir / "ready.json"
    stdout, stderr = workdir / "stdout.log", workdir / "stderr.log"
    argv = stack_command(
        "--port", "0", "--aws-port", "0", "--ready-file", str(ready), "--schedule-seconds", "1",
        "--data", str(workdir / "data"),
    )  # fmt: skip
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(argv, cwd=ROOT, env=stack_env(), stdout=out, stderr=err)
    stack = RunningStack(process, {}, stdout, stderr)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
        stack.info = json.loads(ready.read_text())
        yield stack
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def otafleet(stack: RunningStack, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**stack_env(), "AWS_ENDPOINT_URL": stack.info["aws_endpoint"]}
    return subprocess.run(
        [sys.executable, "-m", "otafleet_cli.main", *argv, "--region", stack.info["region"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_watch_shows_a_plan_advance_on_the_local_controllers_timer(ticking_stack: RunningStack, tmp_path: Path) -> None:
    assert ticking_stack.info["schedules"] == {"ControllerFunction.Tick": 1.0}
    # The demo device is not in the first 1 % of this release: the first stage holds no device.
    assert rollout.bucket(demo.DEVICE, demo.PRODUCT, Kind.APP, VERSION) >= 100
    image = tmp_path / f"{VERSION}.bin"
    made = subprocess.run(
        [sys.executable, "-m", "otafleet_local.sample_images", str(image), "--version", VERSION],
        cwd=ROOT,
        env=stack_env(),
        check=False,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0 and image.exists(), made.stderr  # the README's way to make a demo image
    uploaded = otafleet(ticking_stack, "upload", str(image), "--product", demo.PRODUCT, "--version", VERSION)
    assert uploaded.returncode == 0, uploaded.stderr
    started = otafleet(
        ticking_stack,
        "rollout",
        "start",
        demo.PRODUCT,
        demo.CHANNEL,
        VERSION,
        "--stages",
        "1,100",
        "--soak",
        "0s",
        "--min-devices",
        "1",
    )
    assert started.returncode == 0, started.stderr
    watched = otafleet(
        ticking_stack,
        "rollout",
        "status",
        demo.PRODUCT,
        demo.CHANNEL,
        "--watch",
        "0.5",
        "--iterations",
        "12",
        "--json",
    )
    assert watched.returncode == 0, watched.stderr
    seen = [json.loads(line)[0] for line in watched.stdout.splitlines()]
    percents = [s["percent"] for s in seen]
    assert 100 in percents, (percents, ticking_stack.logs())
    stages = [s["plan"]["stage"] for s in seen]
    assert stages == sorted(stages) and stages[-1] == 2  # it moved on, and only forward
    assert "rollout advanced" in ticking_stack.stdout.read_text()  # the local stack logs the notice
