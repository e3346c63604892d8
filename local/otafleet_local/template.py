"""Reading template.yaml, so the local stack is built from the same definitions as the deployed one."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]  # yaml is untyped without types-PyYAML
    """SafeLoader that keeps CloudFormation short-form tags (`!Ref`, `!Sub`, …) as their long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type,unused-ignore]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@lru_cache(maxsize=4)
def load(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as fh:
        data: dict[str, Any] = yaml.load(fh, Loader=_CfnLoader)
    return data


def resources(kind: str, path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in load(path).get("Resources", {}).items() if res.get("Type") == kind}


def routes(path: Path = TEMPLATE) -> list[tuple[str, str, str, str]]:
    """(method, path, function logical id, handler) for every HttpApi event in the template."""
    found = []
    for name, res in resources("AWS::Serverless::Function", path).items():
        props = res.get("Properties", {})
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                ev = event.get("Properties", {})
                found.append((ev["Method"].upper(), ev["Path"], name, props["Handler"]))
    return found


def code_uri(function: str, path: Path = TEMPLATE) -> Path:
    props = resources("AWS::Serverless::Function", path)[function]["Properties"]
    uri = props.get("CodeUri") or load(path).get("Globals", {}).get("Function", {}).get("CodeUri")
    return (path.parent / str(uri)).resolve()


def _merge_globals(defaults: Any, own: Any) -> Any:
    """SAM's Globals rule: maps merge (the function's keys win), lists add up, anything else is replaced."""
    if isinstance(defaults, dict) and isinstance(own, dict):
        merged = dict(defaults)
        for key, value in own.items():
            merged[key] = _merge_globals(defaults[key], value) if key in defaults else value
        return merged
    if isinstance(defaults, list) and isinstance(own, list):
        return [*defaults, *own]
    return own


def function_properties(function: str, path: Path = TEMPLATE) -> dict[str, Any]:
    """A function's Properties with the template's `Globals.Function` merged in, as SAM does."""
    own = resources("AWS::Serverless::Function", path)[function].get("Properties") or {}
    defaults = (load(path).get("Globals") or {}).get("Function") or {}
    merged: dict[str, Any] = _merge_globals(defaults, own)
    return merged


def outputs(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    return dict(load(path).get("Outputs") or {})
