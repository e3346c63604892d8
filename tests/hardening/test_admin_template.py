"""Who may reach the operator API (docs/operator-api.md), on the offline translation of template.yaml:
every /admin route behind the JWT authorizer, that authorizer trusting only the console's user pool and
app client, no way to sign oneself up, and an AdminFunction role with exactly what Fleet needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import template_check  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
ISSUER = {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${ConsoleUserPool}"}


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return template_check.translate(TEMPLATE)


def api_body(cfn: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    return body


def test_every_admin_route_needs_the_authorizer_and_every_other_route_is_a_device_route(cfn: dict[str, Any]) -> None:
    paths = api_body(cfn)["paths"]
    admin = {p: ops for p, ops in paths.items() if p.startswith("/admin")}
    assert set(admin) == {"/admin/{proxy+}"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            uri = json.dumps(operation["x-amazon-apigateway-integration"]["uri"])
            if path.startswith("/admin"):
                assert operation["security"] == [{"AdminAuthorizer": []}], (path, method)
                assert "AdminFunction.Arn" in uri
            else:
                # The device routes stay public (devices authenticate with their own headers), and no
                # public route reaches the operator API's function.
                assert "security" not in operation, (path, method)
                assert "AdminFunction" not in uri, (path, method)


def test_the_authorizer_trusts_only_the_console_pool_and_its_client(cfn: dict[str, Any]) -> None:
    schemes = api_body(cfn)["components"]["securitySchemes"]
    assert set(schemes) == {"AdminAuthorizer"}
    authorizer = schemes["AdminAuthorizer"]["x-amazon-apigateway-authorizer"]
    assert authorizer == {
        "type": "jwt",
        "identitySource": "$request.header.Authorization",
        "jwtConfiguration": {"issuer": ISSUER, "audience": [{"Ref": "ConsoleUserPoolClient"}]},
    }


def test_nobody_can_sign_up_and_passwords_are_strong(cfn: dict[str, Any]) -> None:
    pool = cfn["Resources"]["ConsoleUserPool"]
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"] == {"AllowAdminCreateUserOnly": True}
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 14
    assert all(policy[k] for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert policy["TemporaryPasswordValidityDays"] <= 3
    assert props["DeletionProtection"] == "ACTIVE"
    assert (pool["DeletionPolicy"], pool["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_the_console_client_is_public_password_and_refresh_only_with_short_tokens(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["ConsoleUserPoolClient"]["Properties"]
    assert props["UserPoolId"] == {"Ref": "ConsoleUserPool"}
    assert props["GenerateSecret"] is False  # static files in a browser can keep no secret
    assert props["ExplicitAuthFlows"] == ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    assert "AllowedOAuthFlows" not in props and "CallbackURLs" not in props
    units = props["TokenValidityUnits"]
    assert (props["AccessTokenValidity"], units["AccessToken"]) == (60, "minutes")
    assert (props["IdTokenValidity"], units["IdToken"]) == (60, "minutes")
    assert (props["RefreshTokenValidity"], units["RefreshToken"]) == (12, "hours")
    assert props["PreventUserExistenceErrors"] == "ENABLED"


def test_the_stack_names_what_the_console_and_the_user_commands_need(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert outputs["ConsoleUserPoolId"]["Value"] == {"Ref": "ConsoleUserPool"}
    assert outputs["ConsoleUserPoolClientId"]["Value"] == {"Ref": "ConsoleUserPoolClient"}
    assert outputs["ConsoleRegion"]["Value"] == {"Ref": "AWS::Region"}


def grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            for action in statement["Action"]:
                for resource in statement["Resource"]:
                    out.add((action, json.dumps(resource, sort_keys=True)))
    return out


def arn(logical_id: str) -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, "Arn"]}, sort_keys=True)


def test_the_admin_role_is_exactly_what_fleet_needs(cfn: dict[str, Any]) -> None:
    """Devices: read, update (block, retry, assign), Scan only for unassigned devices that asked for a
    product; Query of the by-product index only. Catalog: what rollouts and revokes write. Audit: add
    entries and Query one product's. No S3, no SNS, no deletes, no transactions' ConditionCheckItem."""
    role = cfn["Resources"]["AdminFunctionRole"]
    by_product = json.dumps({"Fn::Sub": "${DevicesTable.Arn}/index/by-product"}, sort_keys=True)
    assert grants(role) == {
        *((f"dynamodb:{a}", arn("DevicesTable")) for a in ("GetItem", "UpdateItem", "Scan")),
        ("dynamodb:Query", by_product),
        *((f"dynamodb:{a}", arn("CatalogTable")) for a in ("GetItem", "PutItem", "UpdateItem", "Query", "Scan")),
        *((f"dynamodb:{a}", arn("AuditTable")) for a in ("PutItem", "Query")),
    }
    assert set(role["Properties"]["ManagedPolicyArns"]) == {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }


def test_the_admin_function_may_be_invoked_only_by_this_api(cfn: dict[str, Any]) -> None:
    permissions = [
        r["Properties"]
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["FunctionName"] == {"Ref": "AdminFunction"}
    ]
    assert len(permissions) == 1
    assert permissions[0]["Principal"] == "apigateway.amazonaws.com"
    text, names = permissions[0]["SourceArn"]["Fn::Sub"]
    assert names["__ApiId__"] == {"Ref": "HttpApi"} and text.endswith("/*/admin/*")
