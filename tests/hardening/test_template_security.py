"""Security properties of the stack, on the offline translation of template.yaml, stated for every resource
of a kind (so a table, bucket, function or log group added later is held to them too), and checkov.

tests/unit/test_template.py pins the exact roles, routes and resource settings; this file asks the general
questions: does anything log forever, can anything bypass the API throttle (only the opt-in function URL,
which reserved concurrency can cap), can a lifecycle rule make a released image unreadable, does every
stateful resource survive a stack deletion, does checkov agree, and does every suppressed checkov finding
say why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from support.rendering import rendered
from support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import checkov_check, template_check  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
# CloudWatch Logs' allowed retention values (days); "never expire" is the absence of one.
CLOUDWATCH_RETENTION_DAYS = {
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
}  # fmt: skip
ARCHIVE_CLASSES = {"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return template_check.load_template(TEMPLATE)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return template_check.translate(TEMPLATE)


def of_type(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == type_}


# ------------------------------------------------------------------ logs


def test_every_function_logs_to_a_group_with_retention(cfn: dict[str, Any]) -> None:
    """Lambda creates /aws/lambda/<name> itself, with no retention, unless the stack owns that group."""
    functions = of_type(cfn, "AWS::Lambda::Function")
    groups = of_type(cfn, "AWS::Logs::LogGroup")
    assert functions
    names = {
        (g["Properties"].get("LogGroupName") or {}).get("Fn::Sub")
        for g in groups.values()
        if isinstance(g["Properties"].get("LogGroupName"), dict)
    }
    for logical_id in functions:
        assert f"/aws/lambda/${{{logical_id}}}" in names, f"{logical_id} has no log group of its own"


def test_no_log_group_keeps_logs_forever(cfn: dict[str, Any]) -> None:
    retention = cfn["Parameters"]["LogRetentionDays"]
    assert retention["Type"] == "Number"
    assert set(retention["AllowedValues"]) <= CLOUDWATCH_RETENTION_DAYS
    assert retention["Default"] in retention["AllowedValues"]
    for name, group in of_type(cfn, "AWS::Logs::LogGroup").items():
        assert group["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"}, name


def test_api_access_logs_go_to_a_retained_group_of_the_stack(cfn: dict[str, Any]) -> None:
    groups = of_type(cfn, "AWS::Logs::LogGroup")
    for name, stage in of_type(cfn, "AWS::ApiGatewayV2::Stage").items():
        destination = stage["Properties"]["AccessLogSettings"]["DestinationArn"]
        assert destination.get("Fn::GetAtt", [None])[0] in groups, name
        fmt = stage["Properties"]["AccessLogSettings"]["Format"]
        # The access log names no request header, so no Authorization value can reach it.
        assert "header" not in fmt.lower() and "authorization" not in fmt.lower(), fmt


# ------------------------------------------------------------------ API throttling


def test_api_throttling_comes_from_bounded_parameters(cfn: dict[str, Any]) -> None:
    params = cfn["Parameters"]
    for name in ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit"):
        assert params[name]["Type"] == "Number", name
        assert params[name]["MinValue"] >= 1, name  # 0 would turn the API off
        assert params[name]["Default"] >= params[name]["MinValue"], name
    assert params["ApiThrottlingBurstLimit"]["Default"] >= params["ApiThrottlingRateLimit"]["Default"]
    stages = of_type(cfn, "AWS::ApiGatewayV2::Stage")
    assert stages
    for name, stage in stages.items():
        props = stage["Properties"]
        assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}, name
        assert props["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}, name
        # A per-route setting would replace the default for that route: none may lift the limits.
        for route, route_settings in (props.get("RouteSettings") or {}).items():
            assert route_settings.get("ThrottlingRateLimit") == {"Ref": "ApiThrottlingRateLimit"}, route
            assert route_settings.get("ThrottlingBurstLimit") == {"Ref": "ApiThrottlingBurstLimit"}, route


def test_the_api_has_no_unthrottled_side_door(cfn: dict[str, Any]) -> None:
    """Only the throttled HTTP API invokes the update function and S3 alone the publish function, unless a
    stack asks for the function URL (EnableFunctionUrl, off by default): its public permissions exist only
    under that condition, only for the update function, and invoke it only through its function URL."""
    assert cfn["Parameters"]["EnableFunctionUrl"]["Default"] == "false"
    for name, permission in of_type(cfn, "AWS::Lambda::Permission").items():
        props = permission["Properties"]
        if props["Principal"] == "*":
            assert permission.get("Condition") == "FunctionUrlEnabled", f"{name} is public without the function URL"
            assert props["FunctionName"] == {"Ref": "UpdateFunction"}, name
            # Anyone may call the URL; nobody may invoke the function directly (lambda:Invoke) with it.
            assert (props["Action"], props.get("FunctionUrlAuthType"), props.get("InvokedViaFunctionUrl")) in {
                ("lambda:InvokeFunctionUrl", "NONE", None),
                ("lambda:InvokeFunction", None, True),
            }, name
            continue
        assert props["Principal"] in ("apigateway.amazonaws.com", "s3.amazonaws.com"), name
        assert "SourceArn" in props or "SourceAccount" in props, f"{name} lets any account's resource invoke"
    urls = of_type(cfn, "AWS::Lambda::Url")
    assert urls, "the function URL front (EnableFunctionUrl) is gone: update this test and docs/deploy.md"
    for name, url in urls.items():
        assert url.get("Condition") == "FunctionUrlEnabled", f"{name}: a function URL bypasses the API's throttle"
        assert url["Properties"]["TargetFunctionArn"] == {"Ref": "UpdateFunction"}, name


def test_a_function_url_stack_can_cap_the_update_function(cfn: dict[str, Any]) -> None:
    """A function URL has no throttle: reserved concurrency is its only cap, a bounded parameter that is off
    (not 0, which would stop the function) by default."""
    param = cfn["Parameters"]["UpdateReservedConcurrency"]
    assert param["Type"] == "Number" and param["Default"] == 0 and param["MinValue"] == 0
    assert cfn["Conditions"]["UpdateConcurrencyReserved"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "UpdateReservedConcurrency"}, 0]}]
    }
    assert cfn["Resources"]["UpdateFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["UpdateConcurrencyReserved", {"Ref": "UpdateReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }


# ------------------------------------------------------------------ tables


def test_every_table_is_recoverable_encrypted_and_retained(cfn: dict[str, Any]) -> None:
    tables = of_type(cfn, "AWS::DynamoDB::Table")
    assert tables
    for name, table in tables.items():
        props = table["Properties"]
        assert props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True, name
        assert props.get("SSESpecification", {}).get("SSEEnabled") is True, name
        assert table.get("DeletionPolicy") == "Retain" and table.get("UpdateReplacePolicy") == "Retain", name


# ------------------------------------------------------------------ buckets


def test_every_bucket_is_private_encrypted_versioned_and_tls_only(cfn: dict[str, Any]) -> None:
    buckets = of_type(cfn, "AWS::S3::Bucket")
    policies = of_type(cfn, "AWS::S3::BucketPolicy")
    assert buckets
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}, name
        assert len(props["PublicAccessBlockConfiguration"]) == 4, name
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert bucket.get("DeletionPolicy") == "Retain", name
        denies = [
            statement
            for policy in policies.values()
            if policy["Properties"]["Bucket"] == {"Ref": name}
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
            and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies, f"{name} accepts plain-HTTP requests"
        covered = {
            str(r) for d in denies for r in (d["Resource"] if isinstance(d["Resource"], list) else [d["Resource"]])
        }
        assert any("/*" in r for r in covered) and any("/*" not in r for r in covered), covered


def test_lifecycle_cleans_old_versions_but_never_makes_a_release_unreadable(cfn: dict[str, Any]) -> None:
    """Releases are bound to an exact object version, which becomes non-current when the key is overwritten
    or deleted: no rule may expire versions (current or not), and none may move any version to an archive
    class (a presigned GET of an archived object fails). Old versions only move to a cheaper class."""
    for name, bucket in of_type(cfn, "AWS::S3::Bucket").items():
        rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        enabled = [r for r in rules if r["Status"] == "Enabled"]
        assert not [r for r in enabled if "NoncurrentVersionExpiration" in r], f"{name}: expires release bytes"
        cheaper = [t for r in enabled for t in r.get("NoncurrentVersionTransitions", [])]
        assert cheaper, f"{name}: non-current versions stay in the most expensive class forever"
        assert any("AbortIncompleteMultipartUpload" in r for r in enabled), f"{name}: stale multipart uploads kept"
        for rule in enabled:
            assert "ExpirationInDays" not in rule and "ExpirationDate" not in rule, f"{name}: expires current objects"
            transitions = [*rule.get("Transitions", []), *rule.get("NoncurrentVersionTransitions", [])]
            assert rule.get("Transition") is None and rule.get("NoncurrentVersionTransition") is None, rule
            assert not {t.get("StorageClass") for t in transitions} & ARCHIVE_CLASSES, rule


# ------------------------------------------------------------------ checkov


def skips(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(resource, check id, comment) of every checkov suppression in a template."""
    found = []
    for logical_id, resource in doc["Resources"].items():
        for entry in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            found.append((logical_id, str(entry.get("id", "")), " ".join(str(entry.get("comment", "")).split())))
    return found


def test_every_checkov_suppression_in_the_template_gives_a_reason(sam: dict[str, Any]) -> None:
    entries = skips(sam)
    assert entries
    for logical_id, check_id, comment in entries:
        assert check_id.startswith(("CKV_AWS_", "CKV2_AWS_")), (logical_id, check_id)
        assert len(comment.split()) >= 12, f"{logical_id} {check_id}: say why in a sentence or two"
    assert len({(r, c) for r, c, _ in entries}) == len(entries), "a check is suppressed twice on one resource"


def test_suppressions_reach_the_translated_template(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    """checkov reads the translated template: the transform must carry each function's Metadata over."""
    assert sorted(skips(sam)) == sorted(skips(cfn))


def test_checkov_finds_nothing_unexplained(tmp_path: Path) -> None:
    checkov = checkov_check.DEFAULT_CHECKOV
    require_tool(Path(checkov))
    translated = tmp_path / "template.translated.json"
    template_check.write_translated(template_check.translate(TEMPLATE), translated)
    verdict = checkov_check.evaluate(checkov_check.run_checkov(translated, checkov))
    assert verdict.ok, checkov_check.render(verdict)
    assert verdict.passed > 0


def test_checkov_finds_nothing_unexplained_with_the_function_url_on(tmp_path: Path) -> None:
    """checkov evaluates conditions from parameter defaults, where the function URL is off: the deployment
    with it on (and capped) is checked here, rendered as CloudFormation would deploy it."""
    checkov = checkov_check.DEFAULT_CHECKOV
    require_tool(Path(checkov))
    on = rendered(template_check.translate(TEMPLATE), {"EnableFunctionUrl": "true", "UpdateReservedConcurrency": "50"})
    path = tmp_path / "function-url-on.json"
    template_check.write_translated(on, path)
    verdict = checkov_check.evaluate(checkov_check.run_checkov(path, checkov))
    assert verdict.ok, checkov_check.render(verdict)
    assert {c.check_id for c in verdict.skipped if c.resource.endswith(".UpdateFunctionUrl")} == {"CKV_AWS_258"}


# The verdict logic itself, on reports shaped like checkov 3's JSON output (no checkov needed).


def report(*, failed: int = 0, skipped: tuple[str, ...] = (), parsing_errors: int = 0) -> dict[str, Any]:
    def entry(i: int, comment: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {"result": "SKIPPED" if comment is not None else "FAILED"}
        if comment is not None:
            result["suppress_comment"] = comment
        return {"check_id": f"CKV_AWS_{i}", "resource": f"AWS::X::Y.R{i}", "check_name": "n", "check_result": result}

    return {
        "check_type": "cloudformation",
        "results": {
            "passed_checks": [],
            "failed_checks": [entry(i) for i in range(failed)],
            "skipped_checks": [entry(100 + i, c) for i, c in enumerate(skipped)],
            "parsing_errors": ["x.json"] * parsing_errors,
        },
        "summary": {
            "passed": 3,
            "failed": failed,
            "skipped": len(skipped),
            "parsing_errors": parsing_errors,
            "resource_count": 5,
            "checkov_version": "3.3.30",
        },
    }


@pytest.mark.parametrize(
    ("doc", "ok"),
    [
        (report(), True),
        (report(skipped=("the reason, in words",)), True),
        (report(failed=1), False),
        (report(skipped=("No comment provided",)), False),
        (report(skipped=("",)), False),
        (report(parsing_errors=1), False),
        ({"summary": {"passed": 0, "failed": 0, "resource_count": 0}}, False),
    ],
)
def test_checkov_verdict(doc: dict[str, Any], ok: bool) -> None:
    verdict = checkov_check.evaluate(doc)
    assert verdict.ok is ok
    assert "passed" in checkov_check.render(verdict)
