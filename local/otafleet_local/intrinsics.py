"""CloudFormation intrinsic functions in template.yaml, resolved with the local stack's values.

The local stack takes the functions' environment variables and the stack's outputs from template.yaml,
so it needs `!Ref`, `!Sub`, `!If`, `!Select`, … evaluated the way CloudFormation would, but with local
physical names (`otafleet-devices`, …) instead of generated ones.

One rule goes beyond CloudFormation: an expression that is *the same expression* as a resource's name
property (e.g. the `!Sub "otafleet-fw-${Id}"` that both `FirmwareBucket.BucketName` and the functions'
`FIRMWARE_BUCKET` use, to avoid a circular `!Ref`) resolves to that resource's local name. That is what
it means on AWS too (the same string), and it keeps the local names readable.

SAM's transform (otafleet_local.template) does not do this: it merges Globals and generates resources,
but leaves `!Ref`, `!Sub`, `!If`, … in place for CloudFormation to evaluate at deploy time (its own
resolver only knows Ref/Sub/GetAtt/FindInMap against given values, no conditions). So the values are
evaluated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_ID = "123456789012"
STACK_UUID = "00000000-0000-4000-8000-000000000000"
NAME_PROPERTIES = ("BucketName", "TableName", "FunctionName", "QueueName", "TopicName")
ARN_FORMATS = {
    "AWS::S3::Bucket": "arn:{partition}:s3:::{name}",
    "AWS::DynamoDB::Table": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "AWS::Serverless::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::SQS::Queue": "arn:{partition}:sqs:{region}:{account}:{name}",
}
_SUB = re.compile(r"\$\{([^}]*)\}")


class Unresolvable(ValueError):
    """The expression needs something that exists only on AWS (an attribute of a real resource, …)."""


class _NoValue:
    """`!Ref AWS::NoValue`: the enclosing property disappears."""


NO_VALUE = _NoValue()


@dataclass
class Resolver:
    template: dict[str, Any]
    # Logical id -> local physical name: what `!Ref <id>` gives.
    names: dict[str, str]
    region: str
    stack_name: str = "otafleet"
    parameters: dict[str, str] = field(default_factory=dict)
    account_id: str = ACCOUNT_ID

    def __post_init__(self) -> None:
        self._aliases: list[tuple[Any, str]] = []
        for logical_id, resource in (self.template.get("Resources") or {}).items():
            props = resource.get("Properties") or {}
            for prop in NAME_PROPERTIES:
                if prop in props and logical_id in self.names and isinstance(props[prop], dict):
                    self._aliases.append((props[prop], self.names[logical_id]))

    # --- template parts ------------------------------------------------------------------------------

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        spec = (self.template.get("Parameters") or {}).get(name)
        if spec is None:
            raise Unresolvable(f"no parameter {name!r}")
        if "Default" not in spec:
            raise Unresolvable(f"parameter {name!r} has no default: pass a value")
        return _scalar(spec["Default"])

    def condition(self, name: str) -> bool:
        spec = (self.template.get("Conditions") or {}).get(name)
        if spec is None:
            raise Unresolvable(f"no condition {name!r}")
        return bool(self.resolve(spec))

    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/{STACK_UUID}"
            ),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise Unresolvable(f"pseudo parameter {name!r}")
        return values[name]

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in (self.template.get("Parameters") or {}) or name in self.parameters:
            return self.parameter(name)
        if name in self.names:
            return self.names[name]
        raise Unresolvable(f"!Ref {name} has no local value")

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = (self.template.get("Resources") or {}).get(logical_id)
        if resource is None or logical_id not in self.names:
            raise Unresolvable(f"!GetAtt {logical_id}.{attribute}: no local resource")
        arn = ARN_FORMATS.get(str(resource.get("Type")))
        if attribute != "Arn" or arn is None:
            raise Unresolvable(f"!GetAtt {logical_id}.{attribute} has no local value")
        return arn.format(partition="aws", region=self.region, account=self.account_id, name=self.names[logical_id])

    # --- evaluation ----------------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        for expression, name in self._aliases:
            if value == expression:
                return name
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition":
                return self.condition(str(arg))
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def string(self, value: Any) -> str:
        resolved = self.resolve(value)
        if isinstance(resolved, (dict, list)) or resolved is NO_VALUE:
            raise Unresolvable(f"{value!r} is not a string")
        return _scalar(resolved)

    def _function(self, name: str, arg: Any) -> Any:
        if name == "GetAtt":
            logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(str(logical_id), str(attribute))
        if name == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            return self._sub(str(text), {k: self.string(v) for k, v in variables.items()})
        if name == "If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(str(condition)) else when_false)
        if name == "Equals":
            left, right = (self.resolve(a) for a in arg)
            return _scalar(left) == _scalar(right)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(a) for a in arg)
        if name == "Or":
            return any(self.resolve(a) for a in arg)
        if name == "Join":
            delimiter, items = arg
            return str(delimiter).join(_scalar(v) for v in self.resolve(items))
        if name == "Select":
            index, items = arg
            return self.resolve(items)[int(self.string(index))]
        if name == "Split":
            delimiter, text = arg
            return self.string(text).split(str(delimiter))
        if name == "FindInMap":
            mapping, key, attribute = (self.string(a) for a in arg)
            try:
                return self.resolve(self.template["Mappings"][mapping][key][attribute])
            except KeyError:
                raise Unresolvable(f"!FindInMap {mapping}/{key}/{attribute}") from None
        raise Unresolvable(f"Fn::{name} has no local value")

    def _sub(self, text: str, variables: dict[str, str]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return _scalar(self.ref(name))

        return _SUB.sub(one, text)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)) or value is NO_VALUE:
        raise Unresolvable(f"{value!r} is not a scalar")
    return str(value)
