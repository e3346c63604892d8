"""The optional CloudFront front door (EnableFrontDoor), checked on the offline translation of the template.

The SAM transform leaves CloudFormation conditions alone: CloudFormation resolves them at deploy time
from the parameter values. So each parameter set here is *rendered* the way CloudFormation would deploy
it — resources and outputs whose condition is false dropped, every `Fn::If` replaced by its branch,
`AWS::NoValue` properties removed — and cfn-lint then runs on that plain template, once per setting.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otafleet.decision import Policy, decide
from otafleet.models import Catalog, Channel, Delivery, Device, Kind, Product, Release, Track
from otafleet.protocol import parse_check
from support.rendering import Rendering, rendered

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import template_check  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
CHECKOV = ROOT / ".tools" / "bin" / "checkov"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f2a5b1e-1111-2222-3333-444455556666"

OFF: dict[str, str] = {}
ON = {"EnableFrontDoor": "true"}
ON_HTTP = {"EnableFrontDoor": "true", "FrontDoorAllowHttp": "true"}
ON_DOMAIN = {
    "EnableFrontDoor": "true",
    "FrontDoorDomainName": "ota.example.com",
    "FrontDoorCertificateArn": CERTIFICATE,
}
SETTINGS = {"off": OFF, "on": ON, "on-http": ON_HTTP, "on-domain": ON_DOMAIN}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return template_check.translate(TEMPLATE)


def of_type(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == type_}


def distribution(doc: dict[str, Any]) -> dict[str, Any]:
    [dist] = of_type(doc, "AWS::CloudFront::Distribution").values()
    config: dict[str, Any] = dist["Properties"]["DistributionConfig"]
    return config


# ------------------------------------------------------------------ parameters


def test_front_door_is_off_by_default(translated: dict[str, Any]) -> None:
    params = translated["Parameters"]
    assert params["EnableFrontDoor"]["Default"] == "false"
    assert params["EnableFrontDoor"]["AllowedValues"] == ["false", "true"]
    assert params["FrontDoorAllowHttp"]["Default"] == "false"
    assert params["FrontDoorAllowHttp"]["AllowedValues"] == ["false", "true"]
    assert params["FrontDoorDomainName"]["Default"] == ""
    assert params["FrontDoorCertificateArn"]["Default"] == ""


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("ota.example.com", True),
        ("fw-1.devices.example.co.uk", True),
        ("OTA.example.com", False),
        ("https://ota.example.com", False),
        ("ota", False),
        ("ota.example.com/update", False),
    ],
)
def test_domain_name_pattern(translated: dict[str, Any], value: str, ok: bool) -> None:
    pattern = translated["Parameters"]["FrontDoorDomainName"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        (CERTIFICATE, True),
        (CERTIFICATE.replace("us-east-1", "eu-west-1"), False),  # CloudFront only takes us-east-1 certificates
        ("arn:aws:iam::123456789012:server-certificate/ota", False),
    ],
)
def test_certificate_pattern(translated: dict[str, Any], value: str, ok: bool) -> None:
    pattern = translated["Parameters"]["FrontDoorCertificateArn"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok


@pytest.mark.parametrize(
    ("overrides", "broken"),
    [
        (OFF, False),
        (ON_DOMAIN, False),
        ({"EnableFrontDoor": "true", "FrontDoorDomainName": "ota.example.com"}, True),
        ({"EnableFrontDoor": "true", "FrontDoorCertificateArn": CERTIFICATE}, True),
    ],
)
def test_domain_and_certificate_go_together(
    translated: dict[str, Any], overrides: dict[str, str], broken: bool
) -> None:
    assert bool(Rendering(translated, overrides).rule_failures()) is broken


# ------------------------------------------------------------------ each setting lints clean


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_rendered_template_has_no_lint_findings(translated: dict[str, Any], setting: str) -> None:
    doc = rendered(translated, SETTINGS[setting])
    assert template_check.lint_translated(doc, filename=f"front-door-{setting}.json") == []


def test_off_creates_no_cloudfront_resources(translated: dict[str, Any]) -> None:
    doc = rendered(translated, OFF)
    assert not [k for k, v in doc["Resources"].items() if v["Type"].startswith("AWS::CloudFront::")]
    assert not [k for k in doc["Outputs"] if k.startswith("FrontDoor")]
    # The rest of the stack does not depend on the front door.
    assert {"HttpApi", "UpdateFunction", "PublishFunction", "FirmwareBucket"} <= set(doc["Resources"])


def test_every_cloudfront_resource_and_output_is_conditional(translated: dict[str, Any]) -> None:
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"].startswith("AWS::CloudFront::"):
            assert resource.get("Condition") == "FrontDoorEnabled", logical_id
    for name, output in translated["Outputs"].items():
        if name.startswith("FrontDoor"):
            assert output.get("Condition") == "FrontDoorEnabled", name


# ------------------------------------------------------------------ the distribution


@pytest.mark.parametrize("setting", ["on", "on-http", "on-domain"])
def test_origin_is_the_http_api_over_https(translated: dict[str, Any], setting: str) -> None:
    config = distribution(rendered(translated, SETTINGS[setting]))
    assert config["Enabled"] is True
    [origin] = config["Origins"]
    assert origin["DomainName"] == {"Fn::Sub": "${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert "OriginPath" not in origin
    custom = origin["CustomOriginConfig"]
    assert custom["OriginProtocolPolicy"] == "https-only"
    assert custom["OriginSSLProtocols"] == ["TLSv1.2"]
    assert config["DefaultCacheBehavior"]["TargetOriginId"] == origin["Id"]


@pytest.mark.parametrize("setting", ["on", "on-http", "on-domain"])
def test_nothing_is_cached(translated: dict[str, Any], setting: str) -> None:
    config = distribution(rendered(translated, SETTINGS[setting]))
    behaviors = [config["DefaultCacheBehavior"], *config.get("CacheBehaviors", [])]
    for behavior in behaviors:  # every path: /update, /update/{product}, /firmware/...
        assert behavior["CachePolicyId"] == CACHING_DISABLED
        assert "ForwardedValues" not in behavior  # legacy settings would override the policies
        assert not {"MinTTL", "DefaultTTL", "MaxTTL"} & set(behavior)
        assert behavior["AllowedMethods"] == ["GET", "HEAD"]
        assert behavior["Compress"] is False  # the image must reach the device byte for byte
    # Error answers (a 404 for one device) are cached 10 s by default whatever the cache policy says.
    errors = {e["ErrorCode"]: e for e in config["CustomErrorResponses"]}
    assert {400, 403, 404, 500, 502, 503, 504} <= set(errors)
    for code, error in errors.items():
        assert error["ErrorCachingMinTTL"] == 0, code
        assert "ResponsePagePath" not in error and "ResponseCode" not in error, code


@pytest.mark.parametrize("setting", ["on", "on-http", "on-domain"])
def test_device_headers_and_query_reach_the_function(translated: dict[str, Any], setting: str) -> None:
    doc = rendered(translated, SETTINGS[setting])
    behavior = distribution(doc)["DefaultCacheBehavior"]
    policy_id = behavior["OriginRequestPolicyId"]
    custom = of_type(doc, "AWS::CloudFront::OriginRequestPolicy")
    if policy_id == ALL_VIEWER_EXCEPT_HOST:
        # Managed policy: every viewer header but Host (API Gateway routes on its own host name), all
        # query strings (?delivery=inline), and CloudFront's headers, CloudFront-Forwarded-Proto included.
        assert not custom
        return
    # A custom policy must give the function the same: x-ESP8266-*/x-ESP32-* headers, the query string
    # and the viewer's scheme, but never Host.
    assert policy_id == {"Ref": next(iter(custom))}, policy_id
    [policy] = custom.values()
    config = policy["Properties"]["OriginRequestPolicyConfig"]
    assert config["QueryStringsConfig"]["QueryStringBehavior"] == "all"
    headers = config["HeadersConfig"]
    names = {h.lower() for h in headers.get("Headers", [])}
    assert headers["HeaderBehavior"] in ("allViewerAndWhitelistCloudFront", "allExcept")
    if headers["HeaderBehavior"] == "allExcept":
        assert "host" in names
    else:
        assert "cloudfront-forwarded-proto" in names


def test_https_only_unless_plain_http_is_asked_for(translated: dict[str, Any]) -> None:
    for setting in ("on", "on-domain"):
        behavior = distribution(rendered(translated, SETTINGS[setting]))["DefaultCacheBehavior"]
        assert behavior["ViewerProtocolPolicy"] == "https-only", setting
    behavior = distribution(rendered(translated, ON_HTTP))["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "allow-all"


def test_never_redirects_to_https(translated: dict[str, Any]) -> None:
    # The stock clients refuse a redirect that changes the scheme: http devices would get error -104.
    assert "redirect-to-https" not in str(translated["Resources"])


def test_default_certificate_without_a_custom_domain(translated: dict[str, Any]) -> None:
    config = distribution(rendered(translated, ON))
    assert "Aliases" not in config
    assert config["ViewerCertificate"] == {"CloudFrontDefaultCertificate": True}


def test_custom_domain_with_its_certificate(translated: dict[str, Any]) -> None:
    config = distribution(rendered(translated, ON_DOMAIN))
    assert config["Aliases"] == ["ota.example.com"] or config["Aliases"] == [{"Ref": "FrontDoorDomainName"}]
    certificate = config["ViewerCertificate"]
    assert certificate["AcmCertificateArn"] in (CERTIFICATE, {"Ref": "FrontDoorCertificateArn"})
    assert certificate["SslSupportMethod"] == "sni-only"  # a dedicated-IP certificate costs per month
    assert certificate["MinimumProtocolVersion"].startswith("TLSv1.2")


@pytest.mark.parametrize("setting", ["on-http", "on-domain"])
def test_checkov_passes_with_the_front_door_on(translated: dict[str, Any], setting: str, tmp_path: Path) -> None:
    """scripts/checkov_check.py checks the default translation, where the front door is off; checkov
    evaluates conditions from parameter defaults, so the deployments with it on are checked here."""
    from scripts import checkov_check
    from support.tools import require_tool

    require_tool(CHECKOV)

    path = tmp_path / f"front-door-{setting}.json"
    path.write_text(json.dumps(rendered(translated, SETTINGS[setting]), indent=2), encoding="utf-8")
    verdict = checkov_check.evaluate(checkov_check.run_checkov(path, CHECKOV))
    assert verdict.ok, checkov_check.render(verdict)
    # The distribution was scanned: its suppressions, each with a reason, show up as skipped checks.
    assert {c.check_id for c in verdict.skipped if c.resource.endswith(".FrontDoor")} >= {"CKV_AWS_68", "CKV_AWS_86"}


# ------------------------------------------------------------------ outputs


def test_front_door_url_output(translated: dict[str, Any]) -> None:
    assert "FrontDoorUrl" not in rendered(translated, OFF)["Outputs"]
    outputs = rendered(translated, ON)["Outputs"]
    assert outputs["FrontDoorUrl"]["Value"] == {"Fn::Sub": "https://${FrontDoor.DomainName}"}
    assert outputs["FrontDoorDistributionDomainName"]["Value"] == {"Fn::GetAtt": ["FrontDoor", "DomainName"]}
    outputs = rendered(translated, ON_DOMAIN)["Outputs"]
    assert outputs["FrontDoorUrl"]["Value"] == {"Fn::Sub": "https://${FrontDoorDomainName}"}
    # The API's own URL stays the CLI's contract either way.
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}


# ------------------------------------------------------------------ the function sees the viewer's scheme

ESP8266_HEADERS = {
    # As API Gateway (payload 2.0) hands them to the function: lower-case names. Behind CloudFront the
    # API itself is always reached over HTTPS, so its own x-forwarded-proto says https.
    "user-agent": "ESP8266-http-Update",
    "x-esp8266-sta-mac": "5C:CF:7F:00:00:01",
    "x-esp8266-free-space": "1000000",
    "x-esp8266-version": "1.0.0",
    "x-forwarded-proto": "https",
}


@pytest.mark.parametrize(("viewer", "scheme"), [("http", "http"), ("https", "https")])
def test_scheme_comes_from_cloudfront_forwarded_proto(viewer: str, scheme: str) -> None:
    req = parse_check({**ESP8266_HEADERS, "cloudfront-forwarded-proto": viewer})
    assert req.scheme == scheme


@pytest.mark.parametrize(("viewer", "delivery"), [("http", Delivery.INLINE), ("https", Delivery.REDIRECT)])
def test_plain_http_devices_get_inline_delivery(viewer: str, delivery: Delivery) -> None:
    """Through a plain-HTTP listener a redirect to an https presigned URL would change the scheme, which
    the stock clients refuse: the decision falls back to inline (integrity then rests on x-MD5)."""
    release = Release(
        product="door", kind=Kind.APP, version="1.0.1", size=4096, md5="0" * 32, sha256="0" * 64, s3_key="k"
    )
    catalog = Catalog(
        product=Product(name="door", platform="esp8266", delivery=Delivery.REDIRECT),
        channels={"stable": Channel("door", "stable", {Kind.APP: Track(version="1.0.1")})},
        releases={(Kind.APP, "1.0.1"): release},
    )
    device = Device(mac="5C:CF:7F:00:00:01", product="door", channel="stable", assigned=True)
    req = parse_check({**ESP8266_HEADERS, "cloudfront-forwarded-proto": viewer})
    decision = decide(req, device, catalog, now="2026-11-24T12:00:00Z", policy=Policy(redirect_scheme="https"))
    assert decision.status == (302 if delivery is Delivery.REDIRECT else 200)
    assert decision.delivery is delivery
