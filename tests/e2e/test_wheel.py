"""The built package as a user installs it: `uv build`, a clean virtual environment, `pip install
otafleet-….whl[local]`, then the CLI and the local stack from that environment, run from a folder outside
the source tree (nothing of the checkout on sys.path).

The dependencies come from uv.lock, offline from uv's cache when it has them (`make` filled it), else
from the package registry; the wheel itself is then installed with its own metadata (`[local]`), which
must be satisfied by them. About 15-40 s, most of it the stack's first start without bytecode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import ROOT, esp_request, raw_request

from support.tools import require_tool

pytestmark = pytest.mark.e2e

UV = ROOT / ".tools" / "uv" / "bin" / "uv"
START_TIMEOUT = 60.0
DEMO_DEVICE = {
    "User-Agent": "ESP8266-http-Update",
    "x-ESP8266-STA-MAC": "5C:CF:7F:00:00:01",
    "x-ESP8266-free-space": "1044464",
    "x-ESP8266-chip-size": "4194304",
    "x-ESP8266-mode": "sketch",
}


def _uv() -> str:
    found = shutil.which("uv") if not UV.exists() else str(UV)
    if found is None:
        require_tool(UV)
    return str(found or UV)


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _offline_first(*argv: str, cwd: Path, env: dict[str, str]) -> None:
    """Run a uv command offline (uv's cache), else once more with the package registry."""
    result = _run(*argv, "--offline", cwd=cwd, env=env)
    if result.returncode != 0:
        result = _run(*argv, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the built wheel and its [local] extra installed; yields its bin folder."""
    uv = _uv()
    work = tmp_path_factory.mktemp("wheel")
    dist, venv = work / "dist", work / "venv"
    built = _run(uv, "build", "--quiet", "--out-dir", str(dist), str(ROOT), cwd=ROOT, env=_clean_env())
    assert built.returncode == 0, built.stderr
    wheels = sorted(dist.glob("otafleet-*.whl"))
    assert len(wheels) == 1, wheels
    # A plain venv of the interpreter running the tests, as `python3.11 -m venv` makes it.
    made = _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=work)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    env = _clean_env(UV_PROJECT_ENVIRONMENT=str(venv))
    # The locked versions of the runtime dependencies and the local extra (no dev tools), not the project.
    _offline_first(
        uv, "sync", "--frozen", "--quiet", "--no-default-groups", "--extra", "local", "--no-install-project",
        "--python", python, cwd=ROOT, env=env,
    )  # fmt: skip
    # The wheel as pip would install it: its own metadata decides what [local] needs.
    _offline_first(uv, "pip", "install", "--quiet", "--python", python, f"{wheels[0]}[local]", cwd=work, env=env)
    yield venv / "bin"


def test_the_cli_reports_the_packages_version(installed: Path, tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = _run(str(installed / "otafleet"), "--version", cwd=tmp_path, env=_clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"otafleet {version}"


def test_the_wheel_carries_its_license_metadata(installed: Path, tmp_path: Path) -> None:
    probe = "from importlib.metadata import metadata; m = metadata('otafleet'); print(m['License-Expression'])"
    result = _run(str(installed / "python"), "-c", probe, cwd=tmp_path, env=_clean_env())
    assert result.stdout.strip() == "Apache-2.0", result.stderr


def test_the_local_stack_runs_from_the_installed_package(installed: Path, tmp_path: Path) -> None:
    env = _clean_env()
    helped = _run(str(installed / "otafleet-local"), "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "usage: otafleet-local" in helped.stdout, helped.stderr

    # Everything it reads comes from the environment, not from the checkout.
    where = _run(
        str(installed / "python"),
        "-c",
        "import otafleet, otafleet_local.template as t; print(t.TEMPLATE); print(t.code_uri('UpdateFunction'));"
        "print(otafleet.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    site = installed.parent.resolve()
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(site), (line, where.stdout)

    ready = tmp_path / "ready.json"
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(installed / "otafleet-local"), "--port", "0", "--aws-port", "0", "--ready-file", str(ready)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
        )

    def logs() -> str:
        return f"--- stdout ---\n{stdout.read_text()[-4000:]}\n--- stderr ---\n{stderr.read_text()[-4000:]}"

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            assert process.poll() is None, f"otafleet-local exited with {process.returncode}\n{logs()}"
            assert time.monotonic() < deadline, f"not ready within {START_TIMEOUT:g} s\n{logs()}"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        # The demo image went through the publish function (S3 event) of the packaged handlers.
        assert info["demo"]["registered"], logs()
        host, port = info["api_url"].removeprefix("http://").rsplit(":", 1)
        for version, status in (("1.0.0", 302), ("1.0.1", 304)):
            request = esp_request("/update", f"{host}:{port}", {**DEMO_DEVICE, "x-ESP8266-version": version})
            response = raw_request(host, int(port), request)
            assert response.status == status, (version, response.raw_head, logs())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, logs()
