"""The local stack registers itself as a CloudFormation stack in moto, so tools find it as on AWS.

The `otafleet` CLI (and any script) discovers a deployed stack from its CloudFormation outputs; with
`AWS_ENDPOINT_URL` pointing at the local AWS endpoint, the same lookup finds this stack. Its only
resource is a `AWS::CloudFormation::WaitConditionHandle` (moto accepts it and creates nothing); its
outputs are template.yaml's contract outputs, same keys and descriptions, with local values.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from otafleet_local import template
from otafleet_local.intrinsics import Resolver, Unresolvable

log = logging.getLogger("otafleet_local.discovery")

# What the otafleet CLI reads (product.md §5): the outputs the local stack publishes.
CONTRACT_OUTPUTS = (
    "ApiUrl",
    "FirmwareBucketName",
    "DevicesTableName",
    "CatalogTableName",
    "AuditTableName",
    "Region",
    "UpdateFunctionName",
    "PublishFunctionName",
)

# moto warns that it "tried to parse" the handle although it deliberately ignores it (a null model).
warnings.filterwarnings(
    "ignore", message=r"Tried to parse AWS::CloudFormation::WaitConditionHandle", category=UserWarning
)


def local_outputs(resolver: Resolver, overrides: dict[str, str], path: Path = template.TEMPLATE) -> dict[str, Any]:
    """The contract outputs (CONTRACT_OUTPUTS) of template.yaml with local values: `overrides` first
    (ApiUrl), else the template's Value resolved locally. Other outputs (a console URL of a dashboard
    that does not exist here, …) are left out."""
    declared = template.outputs(path)
    found: dict[str, Any] = {}
    for key in CONTRACT_OUTPUTS:
        spec = declared.get(key)
        if spec is None:
            log.warning("template.yaml declares no output %s: the local stack leaves it out too", key)
            continue
        try:
            value = overrides[key] if key in overrides else resolver.string(spec["Value"])
        except (Unresolvable, LookupError, TypeError, ValueError) as error:
            log.warning("output %s has no local value: %s", key, error)
            continue
        found[key] = {"Value": value, **({"Description": str(spec["Description"])} if "Description" in spec else {})}
    return found


def register(cloudformation: Any, stack_name: str, outputs: dict[str, Any]) -> str:
    """Create (or replace) the stack; returns its id."""
    body = json.dumps(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": "otafleet local stack (otafleet-local): resources live on this AWS endpoint",
            "Resources": {"LocalStack": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": outputs,
        }
    )
    existing = {
        s["StackName"]
        for s in cloudformation.list_stacks().get("StackSummaries", [])
        if s.get("StackStatus") != "DELETE_COMPLETE"
    }
    if stack_name in existing:
        cloudformation.delete_stack(StackName=stack_name)
    stack_id: str = cloudformation.create_stack(StackName=stack_name, TemplateBody=body)["StackId"]
    return stack_id
