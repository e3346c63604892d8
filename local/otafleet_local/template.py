"""template.yaml, read with AWS's own tools, so the local stack is built from the same definitions as the
deployed one.

- **Loading**: cfn-lint's YAML decoder (`cfnlint.decode`), the one `sam validate --lint` and cfn-lint use:
  short-form intrinsics (`!Ref`, `!Sub`, `!GetAtt a.b`, …) become their long form, duplicate keys and
  other parse errors are reported as cfn-lint reports them.
- **SAM's rules**: the template is translated to plain CloudFormation by samtranslator, offline (as the
  `AWS::Serverless-2016-10-31` transform does on deploy). SAM itself then merges `Globals`, turns
  `HttpApi` events into the API's OpenAPI routes, `S3` events into the bucket's notification
  configuration and `ScheduleV2`/`Schedule` events into schedules/rules. The local stack reads those
  generated resources instead of re-implementing SAM.

Offline means: local `CodeUri`s are replaced by placeholder `s3://` URIs that keep the path (and mapped
back by `code_uri`), the managed-policy lookup (which would list IAM policies on AWS) returns nothing,
and the boto3 session given to the translator only supplies a region and placeholder credentials.

Where template.yaml is: next to the `local/` folder in a source checkout, or inside the installed
package (`otafleet_local/template.yaml`, with the handler folders of its `CodeUri` beside it in
`otafleet_local/functions/`), found with importlib.resources.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from importlib import resources as _package_files
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

ROOT = Path(__file__).resolve().parents[2]

# The transform needs *some* S3 location for each function's code; the key carries the local CodeUri.
_CODE_BUCKET = "otafleet-local-code"
_CODE_PROPERTIES = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
_TRANSLATE_REGION = "us-east-1"
# `${UpdateFunction.Arn}` in an HTTP API integration URI names the function that serves the route.
_INTEGRATION_FUNCTION = re.compile(r"\$\{([A-Za-z0-9]+)\.Arn\}")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "x-amazon-apigateway-any-method")


class TemplateError(ValueError):
    """template.yaml cannot be read or translated."""


def _find_template() -> Path:
    """template.yaml of a source checkout, else the copy inside the installed package."""
    checkout = ROOT / "template.yaml"
    if checkout.is_file() and (ROOT / "local" / "otafleet_local").is_dir():
        return checkout
    packaged = _package_files.files("otafleet_local").joinpath("template.yaml")
    # A wheel installs as plain files, so the resource is a real path (the local stack needs the handler
    # folders beside it on sys.path, which no zip import could give).
    return Path(str(packaged))


TEMPLATE = _find_template()


@lru_cache(maxsize=4)
def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The SAM template as cfn-lint decodes it, as plain dicts, lists and scalars."""
    from cfnlint.decode import decode

    if not path.is_file():
        raise TemplateError(f"no template at {path}")
    data, matches = decode(str(path))
    if matches or not isinstance(data, dict):
        raise TemplateError(f"cannot read {path}: " + "; ".join(str(m.message) for m in matches))
    # cfn-lint's nodes carry line marks; plain types are what the rest of the stack compares against.
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain


def _with_placeholder_code(sam: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(sam)

    def placeholder(uri: str) -> str:
        return uri if uri.startswith("s3://") else f"s3://{_CODE_BUCKET}/{quote(uri, safe='')}"

    for resource in (doc.get("Resources") or {}).values():
        prop = _CODE_PROPERTIES.get(str(resource.get("Type"))) if isinstance(resource, dict) else None
        props = resource.get("Properties") if prop else None
        if isinstance(props, dict) and isinstance(props.get(prop), str):
            props[prop] = placeholder(props[prop])
    function_globals = (doc.get("Globals") or {}).get("Function")
    if isinstance(function_globals, dict) and isinstance(function_globals.get("CodeUri"), str):
        function_globals["CodeUri"] = placeholder(function_globals["CodeUri"])
    return doc


class _NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which would list IAM's managed policies on AWS.
    Only policies given by name need it; the template gives statements and ARNs."""

    def load(self) -> dict[str, str]:
        return {}


@lru_cache(maxsize=4)
def transformed(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template translated to plain CloudFormation by samtranslator, offline."""
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The session only supplies the region (partitions, pseudo parameters): the translator never calls AWS.
    session = boto3.session.Session(
        region_name=_TRANSLATE_REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    translator = Translator(None, Parser(), boto_session=session)
    try:
        result = translator.translate(
            _with_placeholder_code(load(path)), parameter_values={}, get_managed_policy_map=_NoManagedPolicies().load
        )
    except InvalidDocumentException as error:
        raise TemplateError("SAM transform failed: " + "; ".join(str(c) for c in error.causes)) from error
    finally:
        translator.metrics.publish()  # to its null publisher; otherwise it warns at exit
    plain: dict[str, Any] = json.loads(json.dumps(result))
    return plain


def resources(kind: str, path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    """Resources of template.yaml itself (SAM types included) of one type."""
    return {name: res for name, res in load(path).get("Resources", {}).items() if res.get("Type") == kind}


def generated(kind: str, path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    """Resources of the translated template (what CloudFormation would create) of one type."""
    return {name: res for name, res in transformed(path).get("Resources", {}).items() if res.get("Type") == kind}


def functions(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    """Logical id -> Properties of every function as CloudFormation gets it: SAM's Globals applied."""
    return {name: res.get("Properties") or {} for name, res in generated("AWS::Lambda::Function", path).items()}


def function_properties(function: str, path: Path = TEMPLATE) -> dict[str, Any]:
    """A function's `AWS::Lambda::Function` Properties after SAM's transform (Globals merged by SAM).
    `Environment.Variables`, `Handler`, `Timeout`, `MemorySize` have the template's shape and values."""
    return functions(path)[function]


def code_uri(function: str, path: Path = TEMPLATE) -> Path:
    """The local folder of a function's code: its CodeUri (or Globals'), relative to the template."""
    code = function_properties(function, path).get("Code") or {}
    if code.get("S3Bucket") != _CODE_BUCKET:
        raise TemplateError(f"{function} has no local CodeUri (its code is {code!r})")
    return (path.parent / unquote(str(code["S3Key"]))).resolve()


def function_of(value: Any) -> str | None:
    """The logical id of the function an ARN expression (`!GetAtt F.Arn`, `!Sub "…${F.Arn}…"`) names."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        parts = target.split(".", 1) if isinstance(target, str) else list(target)
        return str(parts[0]) if len(parts) == 2 and parts[1] == "Arn" else None
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        match = _INTEGRATION_FUNCTION.search(str(text))
        return match[1] if match else None
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    return None


def routes(path: Path = TEMPLATE) -> list[tuple[str, str, str, str]]:
    """(method, path, function logical id, handler) for every Lambda route of the template's HTTP APIs,
    read from the OpenAPI body SAM generates from the functions' `HttpApi` events."""
    handlers = {name: str(props.get("Handler")) for name, props in functions(path).items()}
    found = []
    for api in generated("AWS::ApiGatewayV2::Api", path).values():
        paths = ((api.get("Properties") or {}).get("Body") or {}).get("paths") or {}
        for route, operations in paths.items():
            for method, operation in (operations or {}).items():
                if method.lower() not in _METHODS or not isinstance(operation, dict):
                    continue
                integration = operation.get("x-amazon-apigateway-integration") or {}
                function = function_of(integration.get("uri"))
                if function in handlers:
                    verb = "ANY" if method.startswith("x-amazon") else method.upper()
                    found.append((verb, str(route), function, handlers[function]))
    return found


def outputs(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    return dict(load(path).get("Outputs") or {})


def route_authorizers(path: Path = TEMPLATE) -> dict[tuple[str, str], tuple[str, str]]:
    """(method, path) -> (authorizer name, its type, e.g. "jwt") for every route whose template event
    names an authorizer (`Auth.Authorizer`): the `security` SAM writes into the OpenAPI body, and the
    security scheme it names. A route missing here is public, as on AWS."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for api in generated("AWS::ApiGatewayV2::Api", path).values():
        body = (api.get("Properties") or {}).get("Body") or {}
        schemes = (body.get("components") or {}).get("securitySchemes") or {}
        for route, operations in (body.get("paths") or {}).items():
            for method, operation in (operations or {}).items():
                if method.lower() not in _METHODS or not isinstance(operation, dict):
                    continue
                for requirement in operation.get("security") or []:
                    for name in requirement or {}:
                        kind = ((schemes.get(name) or {}).get("x-amazon-apigateway-authorizer") or {}).get("type")
                        verb = "ANY" if method.startswith("x-amazon") else method.upper()
                        found[(verb, str(route))] = (str(name), str(kind or "unknown"))
    return found
