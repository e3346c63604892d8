"""The variables the functions read are the ones the template sets and events/env.local.json provides
(`sam local start-api --env-vars events/env.local.json` passes only variables the template declares)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from otafleet_local import template

ROOT = Path(__file__).resolve().parents[2]
# Set by the Lambda runtime itself, never by the template.
RUNTIME = {"AWS_REGION", "AWS_DEFAULT_REGION"}
_READ = re.compile(r"""(?:environ\.get|environ\[|_int|_float)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")


def variables_read() -> set[str]:
    found: set[str] = set()
    for source in (ROOT / "functions").rglob("*.py"):
        found |= set(_READ.findall(source.read_text()))
    return found - RUNTIME


def test_scan_sees_the_settings() -> None:
    read = variables_read()
    # the scan itself must find what config.py reads, or the checks below prove nothing
    assert {"DEVICES_TABLE", "CATALOG_TABLE", "FIRMWARE_BUCKET", "PRESIGN_EXPIRY_SECONDS", "MAX_INLINE_BYTES"} <= read


def test_template_declares_every_variable_the_functions_read() -> None:
    for function in ("UpdateFunction", "PublishFunction"):
        declared = set(template.function_properties(function)["Environment"]["Variables"])
        missing = variables_read() - declared
        assert not missing, f"{function} reads {sorted(missing)} but template.yaml does not set them"


def test_env_local_json_names_every_variable_for_both_functions() -> None:
    env = json.loads((ROOT / "events" / "env.local.json").read_text())
    for function in ("UpdateFunction", "PublishFunction"):
        declared = set(template.function_properties(function)["Environment"]["Variables"])
        given = set(env[function])
        assert variables_read() <= given, f"{function}: env.local.json lacks {sorted(variables_read() - given)}"
        assert given <= declared, f"{function}: SAM ignores {sorted(given - declared)} (not declared in the template)"
