"""A Lambda sandbox's collector policy (otafleet.sandbox): off from the first import of otafleet until the
first invocation has ended, raised or not; then what init made is frozen and collection resumes. Outside
Lambda nothing changes. Each case runs in a fresh interpreter: the policy is a process's."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import template_check  # noqa: E402

PROBE = """
import gc
import otafleet
from otafleet.observability import handler_wrapper
print("after import", gc.isenabled())

@handler_wrapper
def handler(event, context):
    print("during first", gc.isenabled())
    raise RuntimeError("the first invocation fails")

try:
    handler({}, None)
except RuntimeError:
    pass
print("after first", gc.isenabled(), gc.get_freeze_count() > 0)
"""


def probe(*, in_lambda: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    env.update(PYTHONPATH=str(ROOT / "functions"), POWERTOOLS_METRICS_DISABLED="true")
    if in_lambda:
        env["AWS_LAMBDA_FUNCTION_NAME"] = "otafleet-UpdateFunction"
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.startswith(("after", "during"))]


def test_in_a_sandbox_the_collector_waits_for_the_first_invocation_to_end() -> None:
    assert probe(in_lambda=True) == ["after import False", "during first False", "after first True True"]


def test_outside_lambda_the_collector_is_left_alone() -> None:
    assert probe(in_lambda=False) == ["after import True", "during first True", "after first True False"]


def _handlers() -> list[str]:
    template = template_check.load_template(ROOT / "template.yaml")
    return sorted(
        r["Properties"]["Handler"]
        for r in template["Resources"].values()
        if r.get("Type") == "AWS::Serverless::Function" and "Handler" in r.get("Properties", {})
    )


@pytest.mark.parametrize("handler", _handlers())
def test_every_function_of_the_template_ends_the_cold_start_policy(handler: str) -> None:
    """Its handler goes through observability.handler_wrapper, which turns the collector back on."""
    module, _, name = handler.rpartition(".")
    entry = getattr(importlib.import_module(module.replace("/", ".")), name)
    assert getattr(entry, "otafleet_handler", False), f"{handler} is not wrapped by handler_wrapper"
