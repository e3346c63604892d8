"""A translated template rendered for one set of parameter values, the way CloudFormation would deploy it.

The SAM transform leaves CloudFormation conditions alone: CloudFormation resolves them at deploy time
from the parameter values. Rendering drops the resources and outputs whose condition is false, replaces
every `Fn::If` by its branch and removes `AWS::NoValue` properties, so cfn-lint, checkov and the tests see
exactly one deployment (tests/unit/test_front_door.py, the function URL's tests).
"""

from __future__ import annotations

import copy
import re
from typing import Any

NO_VALUE = {"Ref": "AWS::NoValue"}


class Rendering:
    """Conditions and `Fn::If` of a translated template, evaluated for one set of parameter values."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str]) -> None:
        unknown = set(overrides) - set(template["Parameters"])
        assert not unknown, f"no such parameters: {unknown}"
        self.template = template
        self.values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
        self.values.update(overrides)
        self.overrides = dict(overrides)
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self.truth(self.template["Conditions"][name])
        return self._conditions[name]

    def truth(self, expression: Any) -> bool:
        ((function, arg),) = expression.items()
        if function == "Fn::Equals":
            left, right = (self.scalar(a) for a in arg)
            return left == right
        if function == "Fn::Not":
            return not self.truth(arg[0])
        if function == "Fn::And":
            return all(self.truth(a) for a in arg)
        if function == "Fn::Or":
            return any(self.truth(a) for a in arg)
        if function == "Condition":
            return self.condition(arg)
        raise AssertionError(f"unsupported condition function {function}")

    def scalar(self, value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"Ref"}:
            return self.values[value["Ref"]]
        assert not isinstance(value, (dict, list)), value
        return str(value)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Fn::If"}:
                name, when_true, when_false = value["Fn::If"]
                return self.resolve(when_true if self.condition(name) else when_false)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v != NO_VALUE}
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v != NO_VALUE]
        return value

    def rule_failures(self) -> list[str]:
        """AssertDescriptions of the template's Rules that these parameter values break."""
        failures = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            failures += [a["AssertDescription"] for a in rule["Assertions"] if not self.truth(a["Assert"])]
        return failures

    def render(self) -> dict[str, Any]:
        """The plain template CloudFormation would deploy: no conditions left, parameters that are still
        used default to the values given, so cfn-lint checks exactly this deployment."""
        doc = copy.deepcopy(self.template)
        for section in ("Resources", "Outputs"):
            kept = {}
            for logical_id, item in doc.get(section, {}).items():
                condition = item.pop("Condition", None)
                if condition is None or self.condition(condition):
                    kept[logical_id] = self.resolve(item)
            doc[section] = kept
        doc.pop("Conditions", None)
        used = _referenced_names({k: doc.get(k) for k in ("Resources", "Outputs", "Rules")})
        doc["Parameters"] = {
            name: {**spec, "Default": self.overrides[name]} if name in self.overrides else spec
            for name, spec in doc["Parameters"].items()
            if name in used
        }
        return doc


def _referenced_names(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("Ref"), str):
            found.add(value["Ref"])
        sub = value.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str):
            found |= {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
        for v in value.values():
            found |= _referenced_names(v)
    elif isinstance(value, list):
        for v in value:
            found |= _referenced_names(v)
    return found


def rendered(translated: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    return Rendering(translated, overrides).render()
