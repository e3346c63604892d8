"""The `otafleet` CLI run in-process by the tests: what a run returns, and a CloudFormation stack whose
outputs name a World's tables and bucket, which is how the CLI finds them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from otafleet_cli.main import main
from support.world import World

API_URL = "https://abc123.execute-api.eu-west-1.amazonaws.com"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Run = Callable[..., Result]


def invoker(capsys: pytest.CaptureFixture[str]) -> Run:
    """`run("channel", "set", ...)`: the CLI's exit code and what it printed; never a traceback."""

    def invoke(*argv: str) -> Result:
        capsys.readouterr()  # drop what the test's own service calls logged
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.out, captured.err)

    return invoke


def stack_template(world: World, **override: str) -> str:
    outputs = {
        "ApiUrl": API_URL,
        "FirmwareBucketName": world.settings.firmware_bucket,
        "DevicesTableName": world.settings.devices_table,
        "CatalogTableName": world.settings.catalog_table,
        "AuditTableName": world.settings.audit_table,
        "Region": world.settings.region,
        **override,
    }
    return json.dumps(
        {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items() if v},
        }
    )
