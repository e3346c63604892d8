"""How the local stack reads template.yaml: cfn-lint's decoder, then SAM's own transform (samtranslator),
offline. The stack's functions, routes, S3 triggers and schedules come from what SAM generates."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from otafleet_local import s3events, template


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Translating is offline: any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    template.transformed.cache_clear()
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def sam_functions() -> dict[str, dict[str, object]]:
    return {name: res["Properties"] for name, res in template.resources("AWS::Serverless::Function").items()}


def test_every_sam_function_becomes_a_lambda_function_with_the_globals_applied() -> None:
    sam_globals = template.load()["Globals"]["Function"]
    functions = template.functions()
    assert set(functions) == set(sam_functions())
    for name, own in sam_functions().items():
        props = functions[name]
        assert props["Runtime"] == sam_globals["Runtime"]
        # SAM's rule, applied by SAM: a function's own value wins over the Globals'.
        assert props["Timeout"] == own.get("Timeout", sam_globals["Timeout"])
        assert props["MemorySize"] == own.get("MemorySize", sam_globals["MemorySize"])
        assert props["Handler"] == own["Handler"]
        assert set(sam_globals["Environment"]["Variables"]) <= set(props["Environment"]["Variables"])


def test_code_uri_is_the_functions_folder_next_to_the_template() -> None:
    for name, own in sam_functions().items():
        folder = template.code_uri(name)
        assert folder == (template.TEMPLATE.parent / str(own["CodeUri"])).resolve()
        handler_module = str(own["Handler"]).rpartition(".")[0]
        assert (folder / f"{handler_module}.py").is_file()


def test_routes_are_the_http_api_events() -> None:
    declared = {
        (str(event["Properties"]["Method"]).upper(), str(event["Properties"]["Path"]), name)
        for name, own in sam_functions().items()
        for event in (own.get("Events") or {}).values()  # type: ignore[attr-defined]
        if event["Type"] == "HttpApi"
    }
    assert declared
    assert {(method, path, function) for method, path, function, _ in template.routes()} == declared


def test_s3_triggers_come_from_the_bucket_notifications_sam_generates() -> None:
    declared = sorted(
        (name, str(event["Properties"]["Bucket"]["Ref"]))
        for name, own in sam_functions().items()
        for event in (own.get("Events") or {}).values()  # type: ignore[attr-defined]
        if event["Type"] == "S3"
    )
    assert sorted((t.function, t.bucket) for t in s3events.triggers()) == declared


def test_a_template_cfn_lint_cannot_decode_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    broken.write_text("Resources:\n  A:\n    Type: AWS::S3::Bucket\n  A:\n    Type: AWS::S3::Bucket\n")
    with pytest.raises(template.TemplateError, match="Duplicate"):
        template.load(broken)


def test_a_template_sam_rejects_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "template.yaml"
    bad.write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Resources:\n  F:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: code/, Handler: app.handler, Runtime: python3.13, Events: {E: {Type: Nope}}}\n"
    )
    with pytest.raises(template.TemplateError, match="SAM transform failed"):
        template.transformed(bad)
