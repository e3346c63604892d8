"""The SAM template, checked on its offline translation to plain CloudFormation.

Translating with samtranslator (as CloudFormation's transform does) is what makes the generated
resources visible: roles, permissions, the bucket's notification configuration, and with them the
bucket -> trigger -> function -> bucket cycle that CloudFormation rejects at deploy time.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import template_check  # noqa: E402
from support.rendering import rendered  # noqa: E402
from update.app import ROUTES  # noqa: E402

TEMPLATE = ROOT / "template.yaml"

BUCKET_ID = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
BUCKET_NAME = {"Fn::Sub": ["otafleet-fw-${Id}", {"Id": BUCKET_ID}]}


def object_arn(prefix: str) -> dict[str, Any]:
    return {"Fn::Sub": [f"arn:${{AWS::Partition}}:s3:::otafleet-fw-${{Id}}/{prefix}/*", {"Id": BUCKET_ID}]}


def table_arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
}
MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    # SAM adds it whenever Tracing is set; with EnableTracing=false the mode is PassThrough.
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Everything here is offline: any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return template_check.load_template(TEMPLATE)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return template_check.translate(TEMPLATE)


def resources(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == type_}


NO_VALUE = object()


def resolve_conditions(value: Any, conditions: dict[str, bool]) -> Any:
    """`value` as CloudFormation deploys it when the named conditions have these values: each Fn::If
    replaced by its branch, AWS::NoValue dropped. A condition not given is an error, so a test never
    passes by not looking at a branch."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, yes, no = value["Fn::If"]
            if name not in conditions:
                raise KeyError(f"the test must say whether {name} holds")
            return resolve_conditions(yes if conditions[name] else no, conditions)
        if value == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {k: resolve_conditions(v, conditions) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve_conditions(item, conditions) for item in value) if v is not NO_VALUE]
    return value


def grants(role: dict[str, Any], conditions: dict[str, bool] | None = None) -> set[tuple[str, str]]:
    """(action, resource as JSON) for every Allow in the role's inline policies, with the template's
    conditions resolved as given."""
    out: set[tuple[str, str]] = set()
    for policy in resolve_conditions(role["Properties"].get("Policies", []), conditions or {}):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            res = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in actions:
                for resource in res:
                    out.add((action, json.dumps(resource, sort_keys=True)))
    return out


def expected(actions: set[str], resource_list: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a, json.dumps(r, sort_keys=True)) for a in actions for r in resource_list}


def mentions(value: Any, logical_id: str) -> bool:
    """Does `value` refer to `logical_id` through Ref, GetAtt or a ${...} in Sub?"""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and getatt[0] == logical_id:
            return True
        sub = value.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str) and ("${" + logical_id + "}" in text or "${" + logical_id + "." in text):
            return True
        return any(mentions(v, logical_id) for v in value.values())
    if isinstance(value, list):
        return any(mentions(v, logical_id) for v in value)
    return False


# ------------------------------------------------------------------ whole template


def test_translated_template_has_no_lint_findings(cfn: dict[str, Any]) -> None:
    findings = template_check.lint_translated(cfn)
    assert not [f for f in findings if f.rule == "E3004"], findings
    assert findings == []


def test_functions_never_refer_to_the_bucket_resource(cfn: dict[str, Any]) -> None:
    for name in ("UpdateFunction", "PublishFunction", "ControllerFunction", "AdminFunction"):
        for logical_id in (name, f"{name}Role"):
            assert not mentions(cfn["Resources"][logical_id], "FirmwareBucket"), logical_id


# ------------------------------------------------------------------ functions and their roles


# sns:Publish on exactly the alarm topic, and only when the stack has one (rollout notices).
TOPIC = {"Ref": "AlarmTopicArn"}


def notices(has_topic: bool) -> set[tuple[str, str]]:
    return expected({"sns:Publish"}, [TOPIC]) if has_topic else set()


# The audit trail: the functions that write transitions may add entries (alone or in a transaction with
# the halt or stage move) and do nothing else with them; the publish function has no access at all.
AUDIT_APPEND = expected({"dynamodb:PutItem"}, [table_arn("AuditTable")])


@pytest.mark.parametrize("has_topic", [True, False])
def test_update_function_role_is_least_privilege(cfn: dict[str, Any], has_topic: bool) -> None:
    role = cfn["Resources"]["UpdateFunctionRole"]
    assert grants(role, {"HasAlarmTopic": has_topic}) == (
        expected(TABLE_ACTIONS, [table_arn("DevicesTable"), table_arn("CatalogTable")])
        | expected({"s3:GetObject", "s3:GetObjectVersion"}, [object_arn("firmware"), object_arn("filesystem")])
        | AUDIT_APPEND
        | notices(has_topic)
    )
    assert set(role["Properties"]["ManagedPolicyArns"]) == MANAGED_POLICIES


def test_publish_function_role_is_least_privilege(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["PublishFunctionRole"]
    assert grants(role) == expected(TABLE_ACTIONS, [table_arn("CatalogTable")]) | expected(
        {"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging"},
        [object_arn("firmware"), object_arn("filesystem")],
    )
    assert set(role["Properties"]["ManagedPolicyArns"]) == MANAGED_POLICIES


@pytest.mark.parametrize("has_topic", [True, False])
def test_controller_function_role_is_least_privilege(cfn: dict[str, Any], has_topic: bool) -> None:
    """Reads and conditionally updates devices (no PutItem: it never creates one), queries only the two
    indexes of the devices table, lists products, moves counters and writes halts, publishes its rollout
    notices to the alarm topic if there is one; no S3 at all."""
    role = cfn["Resources"]["ControllerFunctionRole"]
    index = {name: {"Fn::Sub": f"${{DevicesTable.Arn}}/index/{name}"} for name in ("open-offers", "by-product")}
    assert grants(role, {"HasAlarmTopic": has_topic}) == (
        expected({"dynamodb:GetItem", "dynamodb:UpdateItem"}, [table_arn("DevicesTable")])
        | expected({"dynamodb:Query"}, list(index.values()))
        | expected(
            {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem"}, [table_arn("CatalogTable")]
        )
        | AUDIT_APPEND
        | notices(has_topic)
    )
    assert set(role["Properties"]["ManagedPolicyArns"]) == MANAGED_POLICIES


def test_the_controller_runs_on_a_schedule_that_may_only_invoke_it(cfn: dict[str, Any]) -> None:
    [schedule] = resources(cfn, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {
        "Fn::If": ["ControllerEveryMinute", "rate(1 minute)", {"Fn::Sub": "rate(${ControllerRateMinutes} minutes)"}]
    }
    assert props["Name"] == {"Fn::Sub": ["otafleet-controller-${Id}", {"Id": BUCKET_ID}]}  # one per stack
    assert props["Target"]["Arn"] == {"Fn::GetAtt": ["ControllerFunction", "Arn"]}
    assert props["Target"]["RetryPolicy"] == {"MaximumRetryAttempts": 0}
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}  # a flexible window would let silences wait longer
    role = cfn["Resources"][props["Target"]["RoleArn"]["Fn::GetAtt"][0]]
    principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": ["scheduler.amazonaws.com"]}
    assert grants(role) == expected({"lambda:InvokeFunction"}, [{"Fn::GetAtt": ["ControllerFunction", "Arn"]}])
    assert "ManagedPolicyArns" not in role["Properties"]
    assert cfn["Conditions"]["ControllerEveryMinute"] == {"Fn::Equals": [{"Ref": "ControllerRateMinutes"}, 1]}


@pytest.mark.parametrize("has_topic", [True, False])
def test_no_role_grants_wildcards_or_deletes(cfn: dict[str, Any], has_topic: bool) -> None:
    roles = resources(cfn, "AWS::IAM::Role")
    assert set(roles) == {
        "UpdateFunctionRole",
        "PublishFunctionRole",
        "ControllerFunctionRole",
        "ControllerFunctionTickRole",
        "AdminFunctionRole",
    }
    for name, role in roles.items():
        for action, resource in grants(role, {"HasAlarmTopic": has_topic}):
            assert resource != '"*"', (name, action)
            assert "*" not in action, (name, action)
            assert "Delete" not in action, (name, action)


def test_function_configuration(cfn: dict[str, Any]) -> None:
    update = cfn["Resources"]["UpdateFunction"]["Properties"]
    publish = cfn["Resources"]["PublishFunction"]["Properties"]
    controller = cfn["Resources"]["ControllerFunction"]["Properties"]
    admin = cfn["Resources"]["AdminFunction"]["Properties"]
    for props in (update, publish, controller, admin):
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}}
        env = props["Environment"]["Variables"]
        assert env["FIRMWARE_BUCKET"] == BUCKET_NAME
        assert env["DEVICES_TABLE"] == {"Ref": "DevicesTable"}
        assert env["CATALOG_TABLE"] == {"Ref": "CatalogTable"}
        assert env["AUDIT_TABLE"] == {"Ref": "AuditTable"}
        assert env["AUDIT_RETENTION_DAYS"] == {"Ref": "AuditRetentionDays"}
        assert env["PRESIGN_EXPIRY_SECONDS"] == {"Ref": "PresignExpirySeconds"}
        assert env["CATALOG_CACHE_SECONDS"] == {"Ref": "CatalogCacheSeconds"}
        assert env["FAILURE_OFFER_LIMIT"] == {"Ref": "FailureOfferLimit"}
        assert env["SILENCE_FACTOR"] == {"Ref": "SilenceFactor"}
        assert env["SILENCE_FLOOR_MINUTES"] == {"Ref": "SilenceFloorMinutes"}
        assert env["SILENCE_UNLEARNED_HOURS"] == {"Ref": "SilenceUnlearnedHours"}
        assert env["POWERTOOLS_SERVICE_NAME"] == "otafleet"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Fn::Sub": "otafleet/${AWS::StackName}"}
        assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
        assert env["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingEnabled", "false", "true"]}
    assert update["Handler"] == "update/app.handler"
    assert (update["MemorySize"], update["Timeout"]) == (512, 10)
    assert publish["Handler"] == "publish/app.handler"
    assert (publish["MemorySize"], publish["Timeout"]) == (1024, 60)
    assert controller["Handler"] == "controller/app.handler"
    assert (controller["MemorySize"], controller["Timeout"]) == (512, 120)
    assert admin["Handler"] == "admin/app.handler"
    assert (admin["MemorySize"], admin["Timeout"]) == (1024, 29)


def test_the_functions_that_announce_rollout_notices_know_the_alarm_topic(cfn: dict[str, Any]) -> None:
    """Halts are announced by the update function (a check's verdict) and the controller; the publish
    function never halts anything, so it gets neither the topic nor sns:Publish."""
    functions = (("UpdateFunction", True), ("ControllerFunction", True), ("PublishFunction", False))
    # The operator API changes rollouts by hand only: an operator's change is announced by no one.
    for name, has in (*functions, ("AdminFunction", False)):
        env = cfn["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert (env.get("ALARM_TOPIC_ARN") == TOPIC) is has, name
        assert ("ALARM_TOPIC_ARN" in env) is has, name
    publish = cfn["Resources"]["PublishFunctionRole"]
    assert not [a for a, _ in grants(publish) if a.startswith("sns:")]
    assert cfn["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}


def test_the_alarm_topic_parameter_takes_a_standard_topic_arn_or_nothing(cfn: dict[str, Any]) -> None:
    import re

    pattern = re.compile(cfn["Parameters"]["AlarmTopicArn"]["AllowedPattern"])
    for good in ("", "arn:aws:sns:eu-west-1:123456789012:ops-alarms", "arn:aws-cn:sns:cn-north-1:123456789012:a_b"):
        assert pattern.fullmatch(good), good
    # CloudWatch alarms cannot notify a FIFO topic, and a publish to one needs a message group.
    for bad in ("ops-alarms", "arn:aws:sns:eu-west-1:123456789012:ops.fifo", "arn:aws:sqs:eu-west-1:123456789012:q"):
        assert not pattern.fullmatch(bad), bad


def test_code_uri_is_the_shared_functions_folder(sam: dict[str, Any]) -> None:
    for name in ("UpdateFunction", "PublishFunction", "ControllerFunction", "AdminFunction"):
        assert sam["Resources"][name]["Properties"]["CodeUri"] == "functions/"


def test_http_api_routes_and_throttling(cfn: dict[str, Any]) -> None:
    api = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    assert set(api["paths"]) == {"/update", "/update/{product}", "/firmware/{product}/{channel}", "/admin/{proxy+}"}
    admin = api["paths"].pop("/admin/{proxy+}")  # the operator API: tests/hardening/test_admin_template.py
    assert set(admin) == {"x-amazon-apigateway-any-method"}
    assert "AdminFunction.Arn" in json.dumps(admin["x-amazon-apigateway-any-method"])
    for path, item in api["paths"].items():
        assert set(item) == {"get"}, path
        uri = item["get"]["x-amazon-apigateway-integration"]["uri"]
        assert "UpdateFunction.Arn" in json.dumps(uri), path
    stage = cfn["Resources"]["HttpApiApiGatewayDefaultStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }


def test_http_api_routes_are_the_handlers_route_table(cfn: dict[str, Any]) -> None:
    """A function URL's requests are routed by the handler's ROUTES: they must be the HTTP API's routes."""
    api = cfn["Resources"]["HttpApi"]["Properties"]["Body"]
    devices = {path: item for path, item in api["paths"].items() if not path.startswith("/admin/")}
    declared = {f"{method.upper()} {path}" for path, item in devices.items() for method in item}
    assert declared == set(ROUTES)


# ------------------------------------------------------------------ the function URL (EnableFunctionUrl)

FUNCTION_URL_ON = {"EnableFunctionUrl": "true"}
FUNCTION_URL_RESOURCES = {
    "UpdateFunctionUrl",
    "UpdateFunctionUrlPublicPermissions",
    "UpdateFunctionURLInvokeAllowPublicAccess",
}


def test_function_url_is_off_by_default_and_uncapped(cfn: dict[str, Any]) -> None:
    params = cfn["Parameters"]
    assert params["EnableFunctionUrl"]["Default"] == "false"
    assert params["EnableFunctionUrl"]["AllowedValues"] == ["false", "true"]
    assert params["UpdateReservedConcurrency"]["Default"] == 0
    assert params["UpdateReservedConcurrency"]["MinValue"] == 0
    doc = rendered(cfn, {})
    assert not FUNCTION_URL_RESOURCES & set(doc["Resources"])
    assert not resources(doc, "AWS::Lambda::Url")
    assert "FunctionUrl" not in doc["Outputs"]
    assert "ReservedConcurrentExecutions" not in doc["Resources"]["UpdateFunction"]["Properties"]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        FUNCTION_URL_ON,
        {**FUNCTION_URL_ON, "UpdateReservedConcurrency": "50"},
        {**FUNCTION_URL_ON, "EnableFrontDoor": "true"},
    ],
    ids=["off", "on", "on-capped", "on-with-front-door"],
)
def test_function_url_settings_lint_clean(cfn: dict[str, Any], overrides: dict[str, str]) -> None:
    name = "-".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
    assert template_check.lint_translated(rendered(cfn, overrides), filename=f"{name}.json") == []


def test_function_url_resources_are_all_conditional(cfn: dict[str, Any]) -> None:
    urls = resources(cfn, "AWS::Lambda::Url")
    public = {k for k, v in resources(cfn, "AWS::Lambda::Permission").items() if v["Properties"]["Principal"] == "*"}
    assert set(urls) | public == FUNCTION_URL_RESOURCES
    for logical_id in FUNCTION_URL_RESOURCES:
        assert cfn["Resources"][logical_id].get("Condition") == "FunctionUrlEnabled", logical_id
    assert cfn["Outputs"]["FunctionUrl"]["Condition"] == "FunctionUrlEnabled"


def test_function_url_is_public_buffered_and_serves_the_update_function(cfn: dict[str, Any]) -> None:
    doc = rendered(cfn, FUNCTION_URL_ON)
    [(_, url)] = resources(doc, "AWS::Lambda::Url").items()
    assert url["Properties"] == {
        "TargetFunctionArn": {"Ref": "UpdateFunction"},
        "AuthType": "NONE",
        "InvokeMode": "BUFFERED",
    }
    public = {
        k: v["Properties"] for k, v in resources(doc, "AWS::Lambda::Permission").items() if k in FUNCTION_URL_RESOURCES
    }
    assert public == {
        "UpdateFunctionUrlPublicPermissions": {
            "Action": "lambda:InvokeFunctionUrl",
            "FunctionName": {"Ref": "UpdateFunction"},
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
        "UpdateFunctionURLInvokeAllowPublicAccess": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": "UpdateFunction"},
            "Principal": "*",
            "InvokedViaFunctionUrl": True,
        },
    }
    # The HTTP API stays: plain-HTTP devices, the CLI's ApiUrl and the front door's origin need it.
    assert "HttpApi" in doc["Resources"] and "ApiUrl" in doc["Outputs"]
    assert doc["Outputs"]["FunctionUrl"]["Value"] == {
        "Fn::Sub": [
            "https://${Host}",
            {"Host": {"Fn::Select": [2, {"Fn::Split": ["/", {"Fn::GetAtt": ["UpdateFunctionUrl", "FunctionUrl"]}]}]}},
        ]
    }


def test_function_url_resources_are_what_sam_generates_for_function_url_config(sam: dict[str, Any]) -> None:
    """The resources are written out only because SAM cannot make FunctionUrlConfig conditional: they must be
    exactly what SAM generates for it, so nothing SAM would add (a permission) is missing."""
    written = {
        k: v for k, v in template_check.translate_document(sam)["Resources"].items() if k in FUNCTION_URL_RESOURCES
    }
    plain = copy.deepcopy(sam)
    for logical_id in FUNCTION_URL_RESOURCES:
        del plain["Resources"][logical_id]
    del plain["Outputs"]["FunctionUrl"]
    plain["Resources"]["UpdateFunction"]["Properties"]["FunctionUrlConfig"] = {
        "AuthType": "NONE",
        "InvokeMode": "BUFFERED",
    }
    generated = {
        k: v for k, v in template_check.translate_document(plain)["Resources"].items() if k in FUNCTION_URL_RESOURCES
    }
    assert set(generated) == FUNCTION_URL_RESOURCES
    assert {k: {**v, "Condition": "FunctionUrlEnabled"} for k, v in generated.items()} == {
        k: {key: value for key, value in v.items() if key != "Metadata"} for k, v in written.items()
    }


def test_reserved_concurrency_caps_the_update_function_only_when_set(cfn: dict[str, Any]) -> None:
    capped = rendered(cfn, {"UpdateReservedConcurrency": "50"})["Resources"]
    assert capped["UpdateFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Ref": "UpdateReservedConcurrency"
    }
    for name in ("PublishFunction", "ControllerFunction"):
        assert "ReservedConcurrentExecutions" not in capped[name]["Properties"], name


def test_log_groups_have_retention(cfn: dict[str, Any]) -> None:
    groups = resources(cfn, "AWS::Logs::LogGroup")
    assert groups["UpdateFunctionLogGroup"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${UpdateFunction}"
    }
    assert groups["PublishFunctionLogGroup"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${PublishFunction}"
    }
    assert groups["ControllerFunctionLogGroup"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${ControllerFunction}"
    }
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_only_the_update_function_drops_lambdas_start_and_report_lines(cfn: dict[str, Any]) -> None:
    """A third of an unchanged check's log bytes would be Lambda's own lines (docs/cost.md); the other
    functions run rarely and keep them."""
    functions = resources(cfn, "AWS::Lambda::Function")
    assert functions["UpdateFunction"]["Properties"]["LoggingConfig"] == {
        "LogFormat": "JSON",
        "SystemLogLevel": "WARN",
        # Lambda filters JSON application logs too; Powertools then takes that level: both follow LogLevel.
        "ApplicationLogLevel": {"Fn::FindInMap": ["LambdaLogLevels", {"Ref": "LogLevel"}, "Name"]},
    }
    levels = cfn["Mappings"]["LambdaLogLevels"]
    assert {k: v["Name"] for k, v in levels.items()} == {
        "DEBUG": "DEBUG",
        "INFO": "INFO",
        "WARNING": "WARN",
        "ERROR": "ERROR",
    }
    assert set(levels) == set(cfn["Parameters"]["LogLevel"]["AllowedValues"])
    assert "LoggingConfig" not in functions["PublishFunction"]["Properties"]
    assert "LoggingConfig" not in functions["ControllerFunction"]["Properties"]


def test_checks_that_change_nothing_are_written_once_an_hour_by_default(cfn: dict[str, Any]) -> None:
    heartbeat = cfn["Parameters"]["CheckHeartbeatMinutes"]
    assert (heartbeat["Default"], heartbeat["MinValue"]) == (60, 0)
    env = resources(cfn, "AWS::Lambda::Function")["UpdateFunction"]["Properties"]["Environment"]["Variables"]
    assert env["CHECK_HEARTBEAT_MINUTES"] == {"Ref": "CheckHeartbeatMinutes"}


# ------------------------------------------------------------------ bucket


def test_bucket_is_private_versioned_encrypted(cfn: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["FirmwareBucket"]
    props = bucket["Properties"]
    assert props["BucketName"] == BUCKET_NAME
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    noncurrent = [r for r in props["LifecycleConfiguration"]["Rules"] if "NoncurrentVersionTransitions" in r]
    assert noncurrent and noncurrent[0]["Status"] == "Enabled"
    assert bucket["DeletionPolicy"] == "Retain"


def test_bucket_policy_denies_plain_http(cfn: dict[str, Any]) -> None:
    [policy] = resources(cfn, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "FirmwareBucket"}
    [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*"
    assert deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [
        {"Fn::GetAtt": ["FirmwareBucket", "Arn"]},
        {"Fn::Sub": "${FirmwareBucket.Arn}/*"},
    ]


def test_uploads_trigger_the_publish_function(cfn: dict[str, Any]) -> None:
    configs = cfn["Resources"]["FirmwareBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    seen = set()
    for config in configs:
        assert config["Function"] == {"Fn::GetAtt": ["PublishFunction", "Arn"]}
        assert config["Event"] == "s3:ObjectCreated:*"
        rules = {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        assert rules["suffix"] == ".bin"
        seen.add(rules["prefix"])
    assert seen == {"firmware/", "filesystem/"}
    permissions = resources(cfn, "AWS::Lambda::Permission")
    s3_permissions = [p for p in permissions.values() if p["Properties"]["Principal"] == "s3.amazonaws.com"]
    assert len(s3_permissions) == 2
    assert all(p["Properties"]["FunctionName"] == {"Ref": "PublishFunction"} for p in s3_permissions)


# ------------------------------------------------------------------ tables


def test_tables_are_protected(cfn: dict[str, Any]) -> None:
    tables = resources(cfn, "AWS::DynamoDB::Table")
    assert set(tables) == {"DevicesTable", "CatalogTable", "AuditTable"}
    for name, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
        assert props["SSESpecification"] == {"SSEEnabled": True}, name
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert table["DeletionPolicy"] == "Retain", name
        assert table["UpdateReplacePolicy"] == "Retain", name


def test_table_keys(cfn: dict[str, Any]) -> None:
    devices = cfn["Resources"]["DevicesTable"]["Properties"]
    assert devices["KeySchema"] == [{"AttributeName": "mac", "KeyType": "HASH"}]
    by_product, open_offers = devices["GlobalSecondaryIndexes"]
    assert by_product["IndexName"] == "by-product"
    assert by_product["KeySchema"] == [
        {"AttributeName": "product", "KeyType": "HASH"},
        {"AttributeName": "mac", "KeyType": "RANGE"},
    ]
    assert by_product["Projection"] == {"ProjectionType": "ALL"}
    # Sparse and keys only: written when a silence watch starts or ends, not at every check.
    assert open_offers["IndexName"] == "open-offers"
    assert open_offers["KeySchema"] == [
        {"AttributeName": "watch_product", "KeyType": "HASH"},
        {"AttributeName": "watch_due", "KeyType": "RANGE"},
    ]
    assert open_offers["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in devices["AttributeDefinitions"]}
    assert types == {"mac": "S", "product": "S", "watch_product": "S", "watch_due": "N"}
    catalog = cfn["Resources"]["CatalogTable"]["Properties"]
    assert catalog["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]


def test_the_audit_table_is_per_product_in_time_order_and_expires(cfn: dict[str, Any]) -> None:
    audit = cfn["Resources"]["AuditTable"]["Properties"]
    assert audit["KeySchema"] == [
        {"AttributeName": "product", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in audit["AttributeDefinitions"]}
    assert types == {"product": "S", "sk": "S"}
    assert "GlobalSecondaryIndexes" not in audit
    # the attribute storage/items.py writes; AUDIT_RETENTION_DAYS from the parameter says when
    assert audit["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert cfn["Parameters"]["AuditRetentionDays"]["Default"] == 365
    assert cfn["Outputs"]["AuditTableName"]["Value"] == {"Ref": "AuditTable"}


def test_no_function_reads_the_audit_table(cfn: dict[str, Any]) -> None:
    """Only operators read the trail; a function (compromised, or fed by a device) can only add to it."""
    for role in ("UpdateFunctionRole", "PublishFunctionRole", "ControllerFunctionRole"):
        on_audit = {a for a, r in grants(cfn["Resources"][role], {"HasAlarmTopic": True}) if "AuditTable" in r}
        assert on_audit <= {"dynamodb:PutItem"}, role


# ------------------------------------------------------------------ parameters and outputs


def test_outputs_are_the_cli_contract(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert set(outputs) >= {
        "ApiUrl",
        "FirmwareBucketName",
        "DevicesTableName",
        "CatalogTableName",
        "AuditTableName",
        "Region",
        "UpdateFunctionName",
        "PublishFunctionName",
        "ControllerFunctionName",
    }
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert outputs["FirmwareBucketName"]["Value"] == {"Ref": "FirmwareBucket"}
    assert outputs["Region"]["Value"] == {"Ref": "AWS::Region"}


def test_parameter_defaults(cfn: dict[str, Any]) -> None:
    defaults = {name: p.get("Default") for name, p in cfn["Parameters"].items()}
    assert (
        defaults.items()
        >= {
            "PresignExpirySeconds": 300,
            "CatalogCacheSeconds": 30,
            "FailureOfferLimit": 3,
            "LogLevel": "INFO",
            "EnableTracing": "false",
            "ApiThrottlingRateLimit": 100,
            "ApiThrottlingBurstLimit": 200,
            "LogRetentionDays": 30,
            "AlarmTopicArn": "",
            "SilenceFactor": 3,
            "SilenceFloorMinutes": 30,
            "SilenceUnlearnedHours": 24,
            "ControllerRateMinutes": 5,
            "AuditRetentionDays": 365,
        }.items()
    )


# ------------------------------------------------------------------ the checker catches the cycle


def _publish_env(sam: dict[str, Any]) -> dict[str, Any]:
    props = sam["Resources"]["PublishFunction"]["Properties"]
    variables: dict[str, Any] = props.setdefault("Environment", {}).setdefault("Variables", {})
    return variables


def test_checker_reports_the_bucket_trigger_cycle(sam: dict[str, Any]) -> None:
    broken = copy.deepcopy(sam)
    _publish_env(broken)["FIRMWARE_BUCKET"] = {"Ref": "FirmwareBucket"}
    findings = template_check.lint_translated(template_check.translate_document(broken))
    cycle = [f for f in findings if f.rule == "E3004"]
    assert cycle, findings
    assert any("FirmwareBucket" in f.message for f in cycle)


def test_checker_reports_a_cycle_through_the_policy(sam: dict[str, Any]) -> None:
    broken = copy.deepcopy(sam)
    statements = broken["Resources"]["PublishFunction"]["Properties"]["Policies"][0]["Statement"]
    statements[-1]["Resource"] = [{"Fn::Sub": "${FirmwareBucket.Arn}/firmware/*"}]
    findings = template_check.lint_translated(template_check.translate_document(broken))
    assert [f for f in findings if f.rule == "E3004"], findings


def test_main_fails_on_the_cycle(sam: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = copy.deepcopy(sam)
    _publish_env(broken)["FIRMWARE_BUCKET"] = {"Ref": "FirmwareBucket"}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")
    output = tmp_path / "translated.json"

    assert template_check.main(["--template", str(path), "--output", str(output)]) == 1

    err = capsys.readouterr().err
    assert "E3004" in err
    assert "circular dependency" in err
    assert json.loads(output.read_text())["Resources"]["FirmwareBucket"]


def test_main_passes_on_the_real_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "translated.json"
    assert template_check.main(["--template", str(TEMPLATE), "--output", str(output)]) == 0
    assert "template check: ok" in capsys.readouterr().out


# ------------------------------------------------------------------ observability


def test_alarms_watch_the_metrics_the_functions_emit(cfn: dict[str, Any]) -> None:
    alarms = {name: r["Properties"] for name, r in cfn["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    by_metric = {p.get("MetricName"): p for p in alarms.values() if "MetricName" in p}
    # the names the code emits (observability.count calls), with only the `service` dimension
    for metric in ("StorageFaults", "RolloutsHalted", "UploadsRejected"):
        alarm = by_metric[metric]
        assert alarm["Namespace"] == {"Fn::Sub": "otafleet/${AWS::StackName}"}
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "otafleet"}]
        assert alarm["TreatMissingData"] == "notBreaching"
    errors = next(p for p in alarms.values() if "Metrics" in p)
    functions = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in errors["Metrics"] if "MetricStat" in m
    }
    assert functions == {"UpdateFunction", "PublishFunction", "ControllerFunction", "AdminFunction"}
    dashboards = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert len(dashboards) == 1
    # the body is JSON once CloudFormation substitutes the names
    template, names = dashboards[0]["Properties"]["DashboardBody"]["Fn::Sub"]
    body = template.replace("${Ns}", "otafleet/stack").replace("${AWS::Region}", "eu-west-1")
    body = body.replace("${UpdateFunction}", "update-fn").replace("${PublishFunction}", "publish-fn")
    widgets = json.loads(body)["widgets"]
    assert len(widgets) >= 6 and "Ns" in names


def test_emitted_metric_names_are_on_the_dashboard(cfn: dict[str, Any]) -> None:
    import re

    root = Path(__file__).resolve().parents[2] / "functions" / "otafleet"
    emitted = set()
    for source in root.glob("*.py"):
        emitted |= set(re.findall(r'count\("([A-Za-z]+)"', source.read_text()))
    assert {"Checks", "Offers", "NotModified", "RolloutsHalted", "UploadsRejected"} <= emitted
    body = json.dumps(next(r for r in cfn["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"))
    missing = {name for name in emitted if name not in body}
    assert not missing, f"metrics emitted but not on the dashboard: {missing}"
