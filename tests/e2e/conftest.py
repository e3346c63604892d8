"""The local stack as users run it: `otafleet-local` in its own process, on free ports, driven over sockets.

A subprocess, not an in-process LocalStack: like Lambda, the handlers then get a fresh interpreter and
an environment of their own, and nothing leaks into the other tests of this session.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from e2e.harness import ROOT, RunningStack, stack_command, stack_env

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    workdir = tmp_path_factory.mktemp("local-stack")
    ready = workdir / "ready.json"
    stdout, stderr = workdir / "stdout.log", workdir / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            stack_command(
                "--port", "0", "--aws-port", "0", "--ready-file", str(ready), "--data", str(workdir / "data")
            ),
            cwd=ROOT,
            env=stack_env(),
            stdout=out,
            stderr=err,
        )
    stack = RunningStack(process, {}, stdout, stderr)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"otafleet-local exited with {process.returncode} while starting\n{stack.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"otafleet-local was not ready within {START_TIMEOUT:g} s\n{stack.logs()}")
            time.sleep(0.05)
        stack.info = json.loads(ready.read_text())
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"otafleet-local did not stop within {STOP_TIMEOUT:g} s of SIGTERM\n{stack.logs()}")
    assert process.returncode == 0, f"otafleet-local exited with {process.returncode} on SIGTERM\n{stack.logs()}"
