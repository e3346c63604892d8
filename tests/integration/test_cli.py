"""The `otafleet` CLI in-process against moto: a CloudFormation stack named `otafleet` whose outputs point at
the world's tables and bucket, every command's happy path, its main mistakes and their exit codes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from otafleet import credentials
from otafleet.models import Kind, Release, ReleaseState, Reported, TrackState
from otafleet.storage import clients
from otafleet_cli import upload
from otafleet_cli.main import main
from otafleet_cli.stack import make_session
from support.cli import API_URL, Result, Run, invoker, stack_template
from support.devices import basic, esp8266_headers
from support.world import World, fake_image

MAC = "5C:CF:7F:00:00:01"
ZERO_MAC = "00:00:00:00:00:00"


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return invoker(capsys)


@pytest.fixture
def stack(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    boto3.client("cloudformation", region_name=world.settings.region).create_stack(
        StackName="otafleet", TemplateBody=stack_template(world)
    )
    # The CLI must take the names from the stack's outputs, never from the service's environment.
    for var in ("DEVICES_TABLE", "CATALOG_TABLE", "FIRMWARE_BUCKET"):
        monkeypatch.setenv(var, "not-from-the-environment")
    monkeypatch.delenv("OTAFLEET_STACK", raising=False)
    return world


@pytest.fixture
def door(stack: World) -> World:
    """door (ESP8266) with 1.0.0 and 1.1.0; stable serves 1.0.0; one device on it."""
    stack.product("door", "esp8266")
    stack.release("door", "1.0.0")
    stack.release("door", "1.1.0")
    stack.channel("door", app="1.0.0")
    stack.device(MAC, "door")
    return stack


def check(world: World, mac: str = MAC, **kw: Any) -> int:
    return world.service().check(esp8266_headers(mac, **kw)).status


def error_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert lines, "expected an error on stderr"
    return lines[-1]


# --- parsing ------------------------------------------------------------------------------------------


def test_help_and_usage_errors(run: Run) -> None:
    assert run("--help").code == 0
    result = run()
    assert result.code == 2 and "required: COMMAND" in result.err
    result = run("product", "create", "door", "--platform", "esp31")
    assert result.code == 2 and "invalid choice: 'esp31'" in result.err


def test_upload_help_documents_the_version_rule(run: Run) -> None:
    result = run("upload", "--help")
    assert result.code == 0
    assert "door-1.2.0.bin" in " ".join(result.out.split())


# --- stack discovery and AWS-side errors --------------------------------------------------------------


def test_info(stack: World, run: Run) -> None:
    result = run("info")
    assert result.code == 0
    assert API_URL in result.out and stack.settings.devices_table in result.out
    data = run("info", "--json").json()
    assert data == {
        "stack": "otafleet",
        "api_url": API_URL,
        "update_url": f"{API_URL}/update",
        "bucket": stack.settings.firmware_bucket,
        "devices_table": stack.settings.devices_table,
        "catalog_table": stack.settings.catalog_table,
        "region": "eu-west-1",
        "endpoint_url": None,
    }
    # Global options before the command work too.
    assert run("--json", "--stack-name", "otafleet", "--region", "eu-west-1", "info").json()["stack"] == "otafleet"


def test_stack_name_from_option_and_environment(stack: World, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("cloudformation", region_name="eu-west-1").create_stack(
        StackName="otafleet-staging", TemplateBody=stack_template(stack, ApiUrl="https://staging.example")
    )
    assert run("info", "--json", "--stack-name", "otafleet-staging").json()["api_url"] == "https://staging.example"
    monkeypatch.setenv("OTAFLEET_STACK", "otafleet-staging")
    assert run("info", "--json").json()["stack"] == "otafleet-staging"


def test_no_stack(world: World, run: Run) -> None:
    result = run("info")
    assert result.code == 1
    assert error_line(result).startswith("otafleet: error: stack 'otafleet' not found in region eu-west-1;")
    assert "sam deploy" in result.err and "make run" in result.err
    assert "the AWS endpoint it prints as --endpoint-url URL (or AWS_ENDPOINT_URL)" in result.err
    assert "4566" not in result.err  # the local stack's port is its own setting: make run prints it
    assert run("--region", "us-west-2", "devices").err.count("not found in region us-west-2") == 1


def test_stack_without_the_outputs(world: World, run: Run) -> None:
    boto3.client("cloudformation", region_name="eu-west-1").create_stack(
        StackName="otafleet", TemplateBody=stack_template(world, DevicesTableName="", CatalogTableName="")
    )
    result = run("info")
    assert result.code == 1
    assert "stack 'otafleet' has no output DevicesTableName, CatalogTableName" in result.err


def test_no_credentials(stack: World, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run("devices")
    assert result.code == 1
    assert error_line(result).startswith("otafleet: error: no AWS credentials found")


def test_no_region(stack: World, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = run("products")
    assert result.code == 1 and "no AWS region configured: pass --region" in result.err
    assert run("--region", "eu-west-1", "products").code == 0


def test_unknown_profile(stack: World, run: Run) -> None:
    result = run("--profile", "nosuch", "info")
    assert result.code == 1
    assert error_line(result) == "otafleet: error: AWS profile 'nosuch' not found in your AWS config"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_endpoint_not_running(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    result = run("info")
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: cannot reach {endpoint}")
    assert "is the local stack running?" in result.err


def test_endpoint_url_option_not_running_names_it(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run("--endpoint-url", endpoint, "devices")
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: cannot reach {endpoint}; is the local stack running?")
    # The option wins over the environment variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert f"cannot reach {endpoint}" in run("info", "--endpoint-url", endpoint).err


def test_endpoint_url_mistakes_and_help(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("--endpoint-url", "localhost:4566", "info")
    assert result.code == 1
    assert error_line(result) == (
        "otafleet: error: --endpoint-url: not an endpoint URL: 'localhost:4566' (expected http://HOST:PORT or https://HOST)"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "nonsense")
    assert "AWS_ENDPOINT_URL: not an endpoint URL: 'nonsense'" in run("info").err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://192.0.2.7:4999")
    assert "AWS endpoint without --endpoint-url: http://192.0.2.7:4999" in " ".join(run("--help").out.split())
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert "AWS endpoint without --endpoint-url: AWS itself (AWS_ENDPOINT_URL is not set)" in " ".join(
        run("--help").out.split()
    )


def test_local_endpoint_needs_no_real_credentials_or_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    session = make_session(None, None)
    assert session.region_name == "us-east-1"
    assert session.get_credentials() is not None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://cloudformation.example.com")
    with pytest.raises(Exception, match="no AWS region configured"):
        make_session(None, None)


def test_storage_errors_are_one_line(stack: World, run: Run) -> None:
    clients.dynamodb(stack.settings).delete_table(TableName=stack.settings.devices_table)
    result = run("devices")
    assert result.code == 1
    assert len(result.err.strip().splitlines()) == 1
    assert "ResourceNotFoundException" in result.err


def test_unexpected_errors_are_one_line(stack: World, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from otafleet.fleet import Fleet

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("something broke")

    monkeypatch.setattr(Fleet, "products", boom)
    result = run("products")
    assert (result.code, result.err) == (1, "otafleet: error: RuntimeError: something broke\n")


# --- products and releases ----------------------------------------------------------------------------


def test_product_create_update_and_list(stack: World, run: Run) -> None:
    assert "no products yet" in run("products").out
    result = run("product", "create", "door", "--platform", "esp8266", "--delivery", "inline", "--enroll")
    assert result.code == 0 and "created product door" in result.err
    assert "inline" in result.out
    result = run("product", "create", "door", "--auth", "--no-enroll", "--default-channel", "beta", "--json")
    assert result.code == 0 and "updated product door" in result.err
    assert result.json() == {
        "name": "door",
        "platform": "esp8266",
        "delivery": "inline",
        "enroll": False,
        "auth_required": True,
        "allow_downgrade": False,
        "default_channel": "beta",
        "max_image_bytes": 16 * 1024 * 1024,
        "window": None,
        "signed": False,
        "keys": [],
    }
    run("product", "create", "cam", "--platform", "esp32s3", "--allow-downgrade")
    listed = run("products").out.splitlines()
    assert listed[0].split() == ["PRODUCT", "PLATFORM", "DELIVERY", "ENROLL", "AUTH", "DOWNGRADE", "DEFAULT", "CHANNEL"]
    assert listed[1].split()[:2] == ["cam", "esp32s3"] and listed[2].split()[:2] == ["door", "esp8266"]
    assert [p["name"] for p in run("products", "--json").json()] == ["cam", "door"]


def test_product_create_needs_a_platform(stack: World, run: Run) -> None:
    result = run("product", "create", "door")
    assert result.code == 1
    assert error_line(result) == (
        "otafleet: error: product 'door' does not exist yet: --platform is required to create it"
    )


def test_releases(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0", "--percent", "10")
    result = run("releases", "door")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:3] == ["KIND", "VERSION", "STATE"]
    assert "stable (previous)" in lines[1] and lines[1].split()[:3] == ["app", "1.0.0", "registered"]
    assert "stable 10%" in lines[2]
    data = run("releases", "door", "--json").json()
    assert [(r["version"], r["channels"]) for r in data] == [
        ("1.0.0", ["stable (previous)"]),
        ("1.1.0", ["stable 10%"]),
    ]
    release = door.catalog.get_release("door", Kind.APP, "1.1.0")
    assert release is not None and data[1]["md5"] == release.md5 and data[1]["s3_key"] == "firmware/door/1.1.0.bin"
    result = run("releases", "nope")
    assert result.code == 1 and "unknown product 'nope'" in result.err


# --- channels -----------------------------------------------------------------------------------------


def test_channel_set_show_and_staging(door: World, run: Run) -> None:
    result = run(
        "channel",
        "set",
        "door",
        "stable",
        "1.1.0",
        "--percent",
        "10",
        "--max-failure-rate",
        "0.1",
        "--min-devices",
        "5",
        "--json",
    )
    assert result.code == 0
    assert result.json() == {
        "product": "door",
        "channel": "stable",
        "kind": "app",
        "version": "1.1.0",
        "previous": "1.0.0",
        "percent": 10,
        "state": "active",
        "rollback": False,
        "successes": 0,
        "failures": 0,
        "unknowns": 0,
        "silents": 0,
        "failure_rate": None,
        "max_failure_rate": 0.1,
        "min_devices": 5,
        "max_offers_per_minute": None,
        "max_silence_excess": 0.1,
        "over_threshold": False,
    }
    shown = run("channel", "show", "door", "stable")
    assert shown.code == 0
    header, row = shown.out.splitlines()
    assert header.split()[:4] == ["CHANNEL", "KIND", "VERSION", "PREVIOUS"]
    assert row.split()[:6] == ["door/stable", "app", "1.1.0", "1.0.0", "10%", "active"]
    assert "> 10.0% after 5" in row
    assert run("channel", "show", "door", "stable", "--json").json()[0]["percent"] == 10


def test_channel_set_fs_track(door: World, run: Run) -> None:
    door.release("door", "fs-1", kind=Kind.FS)
    result = run("channel", "set", "door", "stable", "fs-1", "--fs", "--json")
    assert result.code == 0 and result.json()["kind"] == "fs"
    kinds = [t["kind"] for t in run("channel", "show", "door", "stable", "--json").json()]
    assert kinds == ["app", "fs"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["channel", "set", "door", "stable", "9.9"], "door has no app release '9.9' (registered: 1.0.0, 1.1.0)"),
        (["channel", "set", "door", "stable", "1.1.0", "--percent", "0"], "percent must be between 1 and 100, not 0"),
        (["channel", "set", "nope", "stable", "1.1.0"], "unknown product 'nope'"),
        (["channel", "show", "door", "beta"], "product 'door' has no channel 'beta' (channels: stable)"),
        (["channel", "rollback", "door", "stable"], "door/stable has no previous app release to roll back to"),
        (["channel", "pause", "door", "beta"], "door/beta has no app release"),
    ],
)
def test_channel_mistakes(door: World, run: Run, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: {message}")


def test_channel_set_refuses_a_rejected_release(door: World, run: Run) -> None:
    door.catalog.add_release(
        Release(
            "door",
            Kind.APP,
            "2.0.0",
            10,
            "0" * 32,
            "0" * 64,
            "firmware/door/2.0.0.bin",
            state=ReleaseState.REJECTED,
            reason="segment 3 runs past the end of the file at offset 0x1f40",
        )
    )
    result = run("channel", "set", "door", "stable", "2.0.0")
    assert result.code == 1
    assert "door app 2.0.0 was rejected: segment 3 runs past the end of the file at offset 0x1f40" in result.err


def test_rollback_pause_resume(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0")
    assert check(door, version="1.0.0") == 302
    result = run("channel", "pause", "door", "stable", "--json")
    assert result.code == 0 and result.json()["state"] == "paused"
    assert "is paused" in result.err
    result = run("channel", "resume", "door", "stable", "--json")
    assert result.json()["state"] == "active"
    result = run("channel", "rollback", "door", "stable", "--json")
    assert result.code == 0
    data = result.json()
    assert (data["version"], data["rollback"], data["previous"]) == ("1.0.0", True, None)
    # Devices that took 1.1.0 accept 1.0.0 back.
    assert check(door, version="1.1.0") == 302


def test_halted_rollout_is_shown_with_what_to_do(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0", "--percent", "20")
    door.catalog.set_track_state("door", "stable", Kind.APP, "1.1.0", TrackState.HALTED)
    result = run("channel", "show", "door", "stable")
    assert "halted" in result.out
    assert "HALTED itself" in result.err and "otafleet channel resume --reset-counts door stable" in result.err
    devices = run("devices")
    assert "Rollouts in progress" in devices.out and "HALTED itself" in devices.out
    assert run("devices", "--json").json()["rollouts"][0]["state"] == "halted"
    resumed = run("channel", "resume", "door", "stable", "--reset-counts", "--json").json()
    assert (resumed["state"], resumed["failures"]) == ("active", 0)


def test_rollout_tick_marks_a_silent_device_and_status_shows_it(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0", "--min-devices", "1", "--max-silence-excess", "0.5")
    service = door.service()
    service.clock = lambda: "2026-01-01T00:00:00Z"  # offered long ago, never heard from since
    assert service.check(esp8266_headers(MAC, version="1.0.0")).status == 302
    [before] = run("rollout", "status", "door", "stable", "--json").json()
    assert (before["offered"], before["pending"], before["silent"], before["state"]) == (1, 1, 0, "active")
    assert before["verdict"].startswith("continues: 0 of 1 devices judged")

    tick = run("rollout", "tick", "--json")
    assert tick.code == 0
    data = tick.json()
    assert [(x["mac"], x["kind"], x["version"], x["counted"]) for x in data["silenced"]] == [
        (MAC, "app", "1.1.0", True)
    ]
    [halt] = data["halted"]
    assert (halt["product"], halt["channel"], halt["rule"]) == ("door", "stable", "silence")

    [after] = run("rollout", "status", "door", "stable", "--json").json()
    assert (after["silent"], after["pending"], after["state"]) == (1, 0, "halted")
    assert after["silence"]["why"].startswith("silent 100.0% of 1 vs no usable control group")
    human = run("rollout", "status", "door", "stable").out
    header, row, *_ = human.splitlines()
    assert header.split() == [
        "KIND", "VERSION", "PERCENT", "STATE", "OFFERED", "INSTALLED", "FAILED", "UNKNOWN", "SILENT", "PENDING",
        "CONTROL", "SILENT",
    ]  # fmt: skip
    assert row.split()[:10] == ["app", "1.1.0", "100%", "halted", "1", "0", "0", "0", "1", "0"]
    assert "verdict: halted" in human
    assert "nothing to do" in run("rollout", "tick").out  # a second pass changes nothing
    shown = run("channel", "show", "door", "stable")
    assert "HALTED itself: 1 devices went silent" in shown.err
    device = run("device", "show", MAC, "--json").json()
    assert device["attempts"]["app"]["state"] == "silent" and device["silence_watch"] is None
    # The device comes back on the new build: re-judged installed, no longer silent.
    assert check(door, version="1.1.0") == 304
    [back] = run("rollout", "status", "door", "stable", "--json").json()
    assert (back["installed"], back["silent"]) == (1, 0)


def test_rollout_status_mistakes(door: World, run: Run) -> None:
    result = run("rollout", "status", "door", "nightly")
    assert result.code == 1 and "has no channel 'nightly'" in error_line(result)
    result = run("channel", "set", "door", "stable", "1.1.0", "--max-silence-excess", "2")
    assert result.code == 1 and "max silence excess must be between 0 and 1" in error_line(result)


def test_rollout_plan_from_start_to_complete(door: World, run: Run) -> None:
    started = run(
        "rollout", "start", "door", "stable", "1.1.0", "--stages", "1,100", "--soak", "0s", "--min-devices", "1"
    )
    assert started.code == 0 and "rollout status door stable --watch" in started.err
    [status] = run("rollout", "status", "door", "stable", "--json").json()
    assert status["plan"]["stages"] == [1, 100] and status["plan"]["stage"] == 1 and status["percent"] == 1
    assert [s["percent"] for s in status["stages"]] == [1, 100]
    assert sum(s["eligible"] for s in status["stages"]) == 1
    in_first = status["stages"][0]["eligible"] == 1
    human = run("rollout", "status", "door", "stable").out
    assert "plan 1,100 %, soak 0 s, success bar 95.0%; stage 1 of 2" in human
    assert "STAGE" in human and "[--------------------] 0/" in human and "next: " in human
    explained = run("explain", MAC, "--json").json()
    target = next(s["result"] for s in explained["steps"] if s["name"] == "target")
    assert "plan at stage 1 of 2, this device's is stage " in target

    if not in_first:  # the device's bucket is in the second stage: the first holds nobody, so it moves on
        assert [m["percent"] for m in run("rollout", "tick", "--json").json()["moved"]] == [100]
    assert check(door, version="1.0.0") == 302
    assert check(door, version="1.1.0") == 304  # installed
    tick = run("rollout", "tick", "--json").json()
    assert [m["action"] for m in tick["moved"]] == (["complete"] if not in_first else ["advance"])
    if in_first:
        assert [m["action"] for m in run("rollout", "tick", "--json").json()["moved"]] == ["complete"]
    [done] = run("rollout", "status", "door", "stable", "--json").json()
    assert done["plan"]["completed"] and done["next"]["action"] == "none" and done["percent"] == 100
    assert "complete" in run("rollout", "tick").out or "nothing to do" in run("rollout", "tick").out


def test_rollout_status_watch_prints_one_json_line_per_refresh(door: World, run: Run) -> None:
    run("rollout", "start", "door", "stable", "1.1.0", "--soak", "2h")
    watched = run("rollout", "status", "door", "stable", "--watch", "0.01", "--iterations", "2", "--json")
    lines = watched.out.strip().splitlines()
    assert watched.code == 0 and len(lines) == 2
    assert all(json.loads(line)[0]["next"]["action"] == "wait" for line in lines)
    human = run("rollout", "status", "door", "stable", "--watch", "0.01", "--iterations", "1")
    assert "door/stable at " in human.out and "soaking" in human.out


def test_rollout_abort_pause_resume_and_mistakes(door: World, run: Run) -> None:
    assert run("rollout", "start", "door", "stable", "1.1.0").code == 0
    assert run("rollout", "pause", "door", "stable", "--json").json()["state"] == "paused"
    assert run("rollout", "resume", "door", "stable", "--json").json()["state"] == "active"
    assert run("rollout", "abort", "door", "stable", "--json").json()["state"] == "halted"
    result = run("rollout", "resume", "door", "stable")
    assert result.code == 1 and "was aborted; start a new one" in error_line(result)
    result = run("rollout", "abort", "door", "stable")
    assert result.code == 1 and "no plan running" in error_line(result)
    for args, message in (
        (["--stages", "10,5,100"], "stages must rise"),
        (["--stages", "1,50"], "the last stage must be 100"),
        (["--soak", "two hours"], "not a duration"),
        (["--min-success", "150"], "success bar is a share between 0 and 1"),
    ):
        result = run("rollout", "start", "door", "stable", "1.1.0", *args)
        assert result.code == 1 and message in error_line(result), (args, result.err)
    result = run("rollout", "start", "door", "stable", "9.9.9")
    assert result.code == 1 and "has no app release '9.9.9'" in error_line(result)


# --- devices ------------------------------------------------------------------------------------------


def test_device_assign(door: World, run: Run) -> None:
    result = run("device", "assign", "5c-cf-7f-00-00-02", "--product", "door", "--pin", "1.1.0", "--json")
    assert result.code == 0
    data = result.json()
    assert (data["mac"], data["product"], data["channel"], data["pins"]) == (
        "5C:CF:7F:00:00:02",
        "door",
        "stable",
        {"app": "1.1.0"},
    )
    assert "5C:CF:7F:00:00:02 → door/stable" in result.err
    assert check(door, "5C:CF:7F:00:00:02", version="1.0.0") == 302
    moved = run("device", "assign", "5C:CF:7F:00:00:02", "--product", "door", "--channel", "beta", "--unpin", "--json")
    assert moved.json()["channel"] == "beta" and moved.json()["pins"] == {}
    assert "door/beta serves nothing yet: `otafleet channel set door beta VERSION`" in moved.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["device", "assign", "zz:zz", "--product", "door"], "not a MAC address: 'zz:zz'"),
        (["device", "assign", MAC, "--product", "nope"], "unknown product 'nope'"),
        (["device", "assign", MAC, "--product", "door", "--pin", "3.0"], "door has no app release '3.0'"),
        (["device", "show", "5C:CF:7F:00:00:09"], "unknown device 5C:CF:7F:00:00:09"),
        (["device", "block", "5C:CF:7F:00:00:09"], "unknown device 5C:CF:7F:00:00:09: assign it first"),
        (["device", "unblock", "nonsense"], "not a MAC address: 'nonsense'"),
        (["device", "credentials", "5C:CF:7F:00:00:09"], "unknown device 5C:CF:7F:00:00:09: assign it first"),
        (["device", "retry", "5C:CF:7F:00:00:09"], "unknown device 5C:CF:7F:00:00:09"),
        (["explain", "5C:CF:7F:00:00:09"], "unknown device 5C:CF:7F:00:00:09"),
        (["devices", "--product", "nope"], "unknown product 'nope'"),
    ],
)
def test_device_mistakes(door: World, run: Run, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: {message}")


@pytest.mark.parametrize(
    "argv",
    [
        ["device", "assign", ZERO_MAC, "--product", "door"],
        ["device", "assign", "000000000000", "--product", "door", "--json"],
        ["device", "credentials", "00-00-00-00-00-00"],
        ["explain", ZERO_MAC],
    ],
)
def test_the_zero_mac_is_refused_as_a_device(door: World, run: Run, argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == 1
    line = error_line(result)
    assert line.startswith(f"otafleet: error: {ZERO_MAC} is not a device: the all-zero MAC is what arduino-esp32")
    assert "known by its base MAC" in line
    assert door.devices.get(ZERO_MAC) is None


def test_broadcast_mac_is_refused_as_a_device(door: World, run: Run) -> None:
    result = run("device", "assign", "ff:ff:ff:ff:ff:ff", "--product", "door")
    assert result.code == 1
    assert error_line(result).startswith("otafleet: error: FF:FF:FF:FF:FF:FF is not a device: the broadcast")
    assert door.devices.get("FF:FF:FF:FF:FF:FF") is None


def test_no_credentials_for_a_zero_mac_record_an_earlier_version_stored(door: World, run: Run) -> None:
    door.device(ZERO_MAC, "door", blocked=False)
    result = run("device", "credentials", ZERO_MAC)
    assert result.code == 1 and f"{ZERO_MAC} is not a device" in error_line(result)
    legacy = door.devices.get(ZERO_MAC)
    assert legacy is not None and legacy.secret_hash is None


def test_block_and_unblock(door: World, run: Run) -> None:
    result = run("device", "block", MAC.lower())
    assert result.code == 0 and "blocked" in result.err
    assert check(door, version="1.0.0") == 403
    assert run("device", "unblock", MAC, "--json").json()["blocked"] is False
    assert check(door, version="1.0.0") == 304


def test_device_show_everything_known(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0")
    door.service().check(
        esp8266_headers(MAC, version="1.0.0", md5="a" * 32, free_space=500_000), source_ip="198.51.100.4"
    )
    result = run("device", "show", MAC)
    assert result.code == 0
    out = result.out
    for expected in (
        "door",
        "stable",
        "1.0.0",
        "a" * 32,
        "500000",
        "4194304",
        "2.2.2-dev(38a443e)",
        "198.51.100.4",
        "app attempt      1.1.0: offered",
        "offer (offer)",
    ):
        assert expected in out, expected
    data = run("device", "show", MAC, "--json").json()
    assert data["reported"]["free_space"] == 500_000
    assert data["reported"]["source_ip"] == "198.51.100.4"
    attempt = data["attempts"]["app"]
    assert (attempt["version"], attempt["offers"], attempt["state"]) == ("1.1.0", 1, "offered")
    assert (data["last_outcome"], data["last_reason"], data["has_credentials"]) == ("offer", "offer", False)
    assert "secret_hash" not in data


def test_device_credentials(door: World, run: Run) -> None:
    door.product("door", "esp8266", auth_required=True)
    result = run("device", "credentials", MAC, "--json")
    assert result.code == 0
    data = result.json()
    assert (data["mac"], data["user"], data["auth_required"]) == (MAC, MAC, True)
    secret = data["secret"]
    device = door.devices.get(MAC)
    assert device is not None and device.secret_hash == credentials.hash_secret(secret)
    assert credentials.verify(basic(MAC, secret), MAC, device.secret_hash)
    assert "shown once" in result.err
    # Which MAC is the user name: the one the device checks in with (the base MAC on an Ethernet board).
    assert 'setAuthorization("5CCF7F000001", "<secret>")' in result.err
    assert f"the MAC the device checks in with, {MAC}" in result.err and "its base MAC" in result.err
    assert check(door, version="0.1", auth=(MAC, secret)) == 200
    assert run("device", "show", MAC, "--json").json()["has_credentials"] is True
    # Human output shows the secret on stdout, and hints when the product does not ask for it.
    door.product("door", "esp8266")
    human = run("device", "credentials", MAC)
    assert human.out.split()[0] == MAC and len(human.out.split()[1]) >= 40
    assert "does not require auth yet" in human.err


def test_device_retry(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0")
    for _ in range(4):
        check(door, version="1.0.0", md5="b" * 32)
    assert run("device", "show", MAC, "--json").json()["failed"] == ["app:1.1.0"]
    result = run("device", "retry", MAC, "--json")
    assert result.code == 0
    attempt = result.json()["attempts"]["app"]
    assert result.json()["failed"] == [] and (attempt["state"], attempt["offers"], attempt["counted"]) == (
        "offered",
        0,
        "failed",
    )
    assert check(door, version="1.0.0", md5="b" * 32) == 302


def test_devices_with_version_distribution(door: World, run: Run) -> None:
    door.device("5C:CF:7F:00:00:02", "door")
    door.device("5C:CF:7F:00:00:03", "door")
    check(door, MAC, version="1.0.0")
    check(door, "5C:CF:7F:00:00:02", version="1.0.0")
    check(door, "5C:CF:7F:00:00:03", version="0.9.0")
    door.service().check(esp8266_headers("5C:CF:7F:00:00:04", version="0.1"), product="door")
    result = run("devices")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["MAC", "PRODUCT", "CHANNEL", "VERSION"]
    assert "unassigned, asked for door" in result.out
    dist = lines[lines.index("Version distribution") + 1 :]
    assert [line.split() for line in dist] == [
        ["PRODUCT", "VERSION", "DEVICES", "SHARE"],
        ["door", "0.9.0", "1", "33%"],
        ["door", "1.0.0", "2", "67%"],
        ["(unassigned)", "0.1", "1", "100%"],
    ]
    data = run("devices", "--json").json()
    assert [d["mac"] for d in data["devices"]] == [MAC, "5C:CF:7F:00:00:02", "5C:CF:7F:00:00:03", "5C:CF:7F:00:00:04"]
    assert data["distribution"][0] == {
        "product": "door",
        "versions": [{"version": "0.9.0", "devices": 1}, {"version": "1.0.0", "devices": 2}],
    }
    unassigned = run("devices", "--unassigned", "--json").json()
    assert [(d["mac"], d["seen_product"]) for d in unassigned["devices"]] == [("5C:CF:7F:00:00:04", "door")]
    assert len(run("devices", "--product", "door", "--json").json()["devices"]) == 3
    # --state unassigned with a product: the unassigned devices that asked for it, as --unassigned.
    by_state = run("devices", "--product", "door", "--state", "unassigned", "--json").json()["devices"]
    assert [d["mac"] for d in by_state] == ["5C:CF:7F:00:00:04"]


def seen_long_ago(world: World, mac: str, reported: Reported) -> None:
    """What a check long ago wrote (World.device writes only what an operator sets)."""
    from otafleet.storage.dynamo import to_item
    from otafleet.storage.items import reported_to_map

    clients.dynamodb(world.settings).update_item(
        TableName=world.settings.devices_table,
        Key={"mac": {"S": mac}},
        UpdateExpression="SET reported = :r, last_seen = :at",
        ExpressionAttributeValues=to_item({":r": reported_to_map(reported), ":at": reported.at}),
    )


def test_devices_filters(door: World, run: Run) -> None:
    macs = [f"5C:CF:7F:00:00:0{i}" for i in range(2, 5)]
    assert check(door, MAC, version="0.9.0") == 302  # offered 1.0.0 just now
    long_ago = "2026-01-01T00:00:00Z"
    door.device(macs[0])
    seen_long_ago(door, macs[0], Reported(version="1.0.0", at=long_ago))
    door.device(macs[1], blocked=True)
    door.device(macs[2], pins={Kind.APP: "1.1.0"})

    def listed(*argv: str) -> list[str]:
        result = run("devices", "--product", "door", *argv, "--json")
        assert result.code == 0, result.err
        return [d["mac"] for d in result.json()["devices"]]

    assert listed("--state", "offered") == [MAC]
    assert listed("--state", "never-seen") == macs[1:]
    assert listed("--state", "blocked") == [macs[1]]
    assert listed("--state", "pinned") == [macs[2]]
    assert listed("--state", "silent") == []
    assert listed("--state", "unassigned") == listed("--unassigned") == []
    assert listed("--version", "1.0.0") == [macs[0]]
    assert listed("--version", "0.9.0", "--state", "offered") == [MAC]
    assert listed("--seen-before", "3d") == [macs[0]]
    assert listed("--seen-within", "1h") == [MAC]
    assert listed("--seen-before", "1h", "--seen-within", "1000d") == [macs[0]]
    # The distribution is of the listed devices.
    data = run("devices", "--version", "1.0.0", "--json").json()
    assert data["distribution"] == [{"product": "door", "versions": [{"version": "1.0.0", "devices": 1}]}]
    table = run("devices", "--seen-before", "3d").out.splitlines()
    assert table[1].split()[:5] == [macs[0], "door", "stable", "1.0.0", long_ago]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seen-before", "soon"], "--seen-before: not a duration: 'soon'"),
        (["--seen-within=-1h"], "--seen-within: not a duration: '-1h'"),
        (["--seen-before", "2h", "--seen-within", "1h"], "--seen-within must be longer than --seen-before"),
        (["--version", "a b"], "invalid version 'a b'"),
        (["--product", "nope", "--state", "failed"], "unknown product 'nope'"),
    ],
)
def test_devices_filter_mistakes(door: World, run: Run, argv: list[str], message: str) -> None:
    result = run("devices", *argv)
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: {message}")


def test_devices_unknown_state_is_a_usage_error(door: World, run: Run) -> None:
    result = run("devices", "--state", "bricked")
    assert result.code == 2 and "invalid choice: 'bricked'" in result.err


def test_devices_lists_a_zero_mac_record_with_a_warning_and_does_not_count_it(door: World, run: Run) -> None:
    # What an earlier otafleet stored for every arduino-esp32 3.x Ethernet board of the fleet.
    door.device(ZERO_MAC, "door", reported=Reported(version="0.9.0"), checks=40)
    check(door, MAC, version="1.0.0")
    result = run("devices")
    assert result.code == 0
    lines = result.out.splitlines()
    [row] = [line for line in lines if line.startswith(ZERO_MAC)]
    assert "NOT A DEVICE (see below)" in row
    dist = lines[lines.index("Version distribution") + 1 :]
    assert [line.split() for line in dist[:2]] == [
        ["PRODUCT", "VERSION", "DEVICES", "SHARE"],
        ["door", "1.0.0", "1", "100%"],
    ]
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith(f"warning: {ZERO_MAC} is not a device")
    assert "it was assigned to door/stable" in warning and "docs/operations.md" in warning
    assert f"`otafleet device delete {ZERO_MAC}`" in warning
    data = run("devices", "--json").json()
    assert [d["mac"] for d in data["devices"]] == [ZERO_MAC, MAC]
    assert data["distribution"] == [{"product": "door", "versions": [{"version": "1.0.0", "devices": 1}]}]
    assert len(data["warnings"]) == 1 and data["warnings"][0] == warning
    assert run("devices", "--product", "door", "--json").json()["warnings"] == [warning]


def test_devices_when_there_are_none(stack: World, run: Run) -> None:
    result = run("devices")
    assert (result.code, result.out) == (0, "no devices\n")


# --- revoking and deleting ---------------------------------------------------------------------------


def test_release_revoke(door: World, run: Run) -> None:
    result = run("release", "revoke", "door", "1.1.0")
    assert result.code == 0, result.err
    assert "door app 1.1.0 is revoked: no device is offered it" in result.err
    assert "revoked" in result.out
    assert [(r["version"], r["state"]) for r in run("releases", "door", "--json").json()] == [
        ("1.0.0", "registered"),
        ("1.1.0", "revoked"),
    ]
    again = run("release", "revoke", "door", "1.1.0", "--json")
    assert again.code == 0 and "was revoked already" in again.err and again.json()["state"] == "revoked"
    result = run("channel", "set", "door", "stable", "1.1.0")
    assert result.code == 1 and "door app 1.1.0 is revoked and cannot be offered" in result.err


def test_release_revoke_refuses_a_served_release_unless_forced(door: World, run: Run) -> None:
    assert check(door, version="0.9.0") == 302  # stable offers 1.0.0
    result = run("release", "revoke", "door", "1.0.0")
    assert result.code == 1
    assert error_line(result).startswith("otafleet: error: door app 1.0.0 is served by channel stable: point it at")
    assert "--force" in result.err
    # The previous release a staged rollout's other devices run is served too.
    run("channel", "set", "door", "stable", "1.1.0", "--percent", "10")
    assert "served by channel stable" in run("release", "revoke", "door", "1.0.0").err
    run("channel", "set", "door", "stable", "1.0.0")
    result = run("release", "revoke", "door", "1.0.0", "--force")
    assert result.code == 0, result.err
    assert "door/stable serves it and so offers nothing of it" in result.err
    door.catalog.invalidate()
    assert check(door, version="0.9.0") == 304  # a revoked release is never offered


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["release", "revoke", "door", "9.9"], "door has no app release '9.9' (registered: 1.0.0, 1.1.0)"),
        (["release", "revoke", "door", "1.0.0", "--fs"], "door has no fs release '1.0.0'"),
        (["release", "revoke", "nope", "1.0.0"], "unknown product 'nope'"),
        (["channel", "delete", "door", "beta"], "product 'door' has no channel 'beta' (channels: stable)"),
        (["channel", "delete", "nope", "beta"], "unknown product 'nope'"),
        (["device", "delete", "not-a-mac"], "not a MAC address: 'not-a-mac'"),
        (["device", "delete", "5C:CF:7F:00:00:99"], "unknown device 5C:CF:7F:00:00:99"),
        (["product", "delete", "nope"], "unknown product 'nope'"),
    ],
)
def test_revoke_and_delete_mistakes(door: World, run: Run, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: {message}")


def test_release_revoke_of_a_rejected_upload(door: World, run: Run) -> None:
    door.catalog.add_rejection(
        Release(
            "door", Kind.APP, "2.0.0", 3, "0" * 32, "1" * 64, "firmware/door/2.0.0.bin",
            state=ReleaseState.REJECTED, reason="not an ESP image",
        )
    )  # fmt: skip
    result = run("release", "revoke", "door", "2.0.0")
    assert result.code == 1
    assert "door app 2.0.0 was rejected: not an ESP image" in result.err and "nothing to revoke" in result.err


def test_channels(door: World, run: Run) -> None:
    run("channel", "set", "door", "beta", "1.1.0", "--percent", "50")
    run("window", "set", "door", "daily 01:00-05:00", "--channel", "beta")
    result = run("channels", "door")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    headers = ["CHANNEL", "DEFAULT", "KIND", "VERSION", "PREVIOUS", "PERCENT", "STATE", "DEVICES", "WINDOW"]
    assert lines[0].split() == headers
    assert lines[1].split()[:8] == ["beta", "no", "app", "1.1.0", "-", "50%", "active", "0"]
    assert lines[2].split() == ["stable", "yes", "app", "1.0.0", "-", "100%", "active", "1", "-"]
    data = run("channels", "door", "--json").json()
    assert [(c["channel"], c["default"], c["devices"]) for c in data] == [("beta", False, 0), ("stable", True, 1)]
    assert data[0]["window"] and data[0]["tracks"][0]["version"] == "1.1.0"
    run("product", "create", "cam", "--platform", "esp32")
    assert "cam has no channels yet" in run("channels", "cam").out
    assert "unknown product 'nope'" in run("channels", "nope").err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_fit_the_terminal_and_pipes_keep_everything(
    door: World, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setenv("COLUMNS", "120")  # what shutil.get_terminal_size reads first
    captured, terminal = sys.stdout, Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["releases", "door"]) == 0
    lines = terminal.getvalue().splitlines()
    assert lines and all(len(line) <= 120 for line in lines) and "…" in lines[1]
    assert lines[1].split()[:3] == ["app", "1.0.0", "registered"]  # the narrow columns are left whole
    monkeypatch.setattr(sys, "stdout", captured)
    piped = run("releases", "door").out.splitlines()
    assert max(len(line) for line in piped) > 120 and "firmware/door/1.0.0.bin" in piped[1]


def csv_rows(result: Result) -> list[dict[str, str]]:
    import csv
    import io

    assert result.code == 0, result.err
    return list(csv.DictReader(io.StringIO(result.out)))


def test_output_csv_for_the_list_commands(door: World, run: Run) -> None:
    run("channel", "set", "door", "beta", "1.1.0", "--percent", "50")
    run("window", "set", "door", "mon-fri 01:00-05:00", "--channel", "beta")
    products = csv_rows(run("--output", "csv", "products"))
    assert [(p["PRODUCT"], p["PLATFORM"], p["DEFAULT CHANNEL"]) for p in products] == [("door", "esp8266", "stable")]
    releases = csv_rows(run("releases", "door", "--output", "csv"))
    assert [(r["VERSION"], r["STATE"], r["CHANNELS"], r["REASON"]) for r in releases] == [
        ("1.0.0", "registered", "stable", ""),
        ("1.1.0", "registered", "beta 50%", ""),
    ]
    channels = csv_rows(run("channels", "door", "--output", "csv"))
    assert [(c["CHANNEL"], c["DEFAULT"], c["PERCENT"], c["PREVIOUS"]) for c in channels] == [
        ("beta", "no", "50%", ""),
        ("stable", "yes", "100%", ""),
    ]
    assert channels[0]["WINDOW"].startswith("mon")
    devices = csv_rows(run("devices", "--output", "csv"))
    assert [(d["MAC"], d["PRODUCT"], d["CHANNEL"]) for d in devices] == [(MAC, "door", "stable")]
    # No rows: the header alone, so a script reads an empty table rather than a sentence.
    assert run("devices", "--state", "silent", "--output", "csv").out == (
        "MAC,PRODUCT,CHANNEL,VERSION,LAST SEEN,LAST ANSWER,NOTES\n"
    )
    # --output json is --json.
    assert run("channels", "door", "--output", "json").json() == run("channels", "door", "--json").json()


def test_output_csv_is_refused_before_a_command_that_is_no_list_runs(door: World, run: Run) -> None:
    result = run("--output", "csv", "channel", "set", "door", "stable", "1.1.0")
    assert result.code == 2
    assert error_line(result) == (
        "otafleet: error: --output csv is for the list commands (products, releases, channels, devices); "
        "use --output json"
    )
    assert run("channel", "show", "door", "stable", "--json").json()[0]["version"] == "1.0.0"  # nothing changed
    result = run("devices", "--output", "xml")
    assert result.code == 2 and "invalid choice: 'xml'" in result.err


def test_channel_delete(door: World, run: Run) -> None:
    run("channel", "set", "door", "beta", "1.1.0")
    run("device", "assign", "5C:CF:7F:00:00:02", "--product", "door", "--channel", "beta")
    result = run("channel", "delete", "door", "beta")
    assert result.code == 1
    assert error_line(result) == (
        "otafleet: error: 1 device is assigned to door/beta (5C:CF:7F:00:00:02): move them first with "
        "`otafleet device assign MAC --product door --channel OTHER`"
    )
    result = run("channel", "delete", "door", "stable")
    assert result.code == 1 and "stable is door's default channel" in result.err
    run("device", "assign", "5C:CF:7F:00:00:02", "--product", "door", "--channel", "stable")
    result = run("channel", "delete", "door", "beta")
    assert (result.code, result.out) == (0, "deleted channel door/beta\n")
    assert [c["channel"] for c in run("channels", "door", "--json").json()] == ["stable"]


def test_device_delete(door: World, run: Run) -> None:
    result = run("device", "delete", MAC.lower().replace(":", "-"), "--json")
    assert result.code == 0, result.err
    assert result.json() == {"deleted": f"device {MAC}", "items": 1, "unassigned": []}
    assert "unknown device" in run("device", "show", MAC).err
    # The record an earlier otafleet kept under the zero MAC is what this verb is for.
    door.device(ZERO_MAC, "door")
    assert run("device", "delete", ZERO_MAC).code == 0
    assert run("devices", "--json").json()["devices"] == []


def test_product_delete(door: World, run: Run) -> None:
    assert check(door, version="0.9.0") == 302  # an attempt of door's 1.0.0 in flight
    result = run("product", "delete", "door")
    assert result.code == 1
    assert error_line(result).startswith("otafleet: error: product door has channel stable and 1 device: ")
    assert "--force" in result.err
    assert run("products", "--json").json()[0]["name"] == "door"
    result = run("product", "delete", "door", "--force", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"deleted": "product door", "items": 4, "unassigned": [MAC]}
    assert "unassigned 1 device(s)" in result.err
    assert run("products", "--json").json() == []
    device = run("device", "show", MAC, "--json").json()
    assert (device["assigned"], device["product"], device["channel"]) == (False, None, None)
    assert (device["attempts"], device["silence_watch"]) == ({}, None)  # door's releases are gone with it
    # A product with releases only (no channels, no devices) goes without --force.
    run("product", "create", "cam", "--platform", "esp32")
    door.release("cam", "1.0.0")
    assert run("product", "delete", "cam").out == "deleted product cam\n"


# --- explain ------------------------------------------------------------------------------------------


def test_explain_prints_each_step_and_the_answer(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0", "--percent", "100")
    check(door, version="1.0.0")
    result = run("explain", MAC.lower())
    assert result.code == 0
    for step in ("dialect", "identity", "device", "target", "already there", "safety", "delivery"):
        assert f" {step} " in result.out, step
    assert result.out.strip().splitlines()[-1] == "answer: 302 offer: offering app 1.1.0 (redirect, offer 2)"
    data = run("explain", MAC, "--json").json()
    assert (data["outcome"], data["status"], data["reason"], data["delivery"]) == ("offer", 302, "offer", "redirect")
    assert data["release"]["version"] == "1.1.0"
    assert [s["name"] for s in data["steps"]][:3] == ["dialect", "identity", "device"]
    assert data["steps"][-1]["name"] == "answer"
    # Explain writes nothing: the device still has its one check's offer.
    assert door.devices.get(MAC).checks == 1  # type: ignore[union-attr]


def test_explain_staged_rollout_shows_the_bucket(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0", "--percent", "1")
    check(door, version="1.0.0")
    data = run("explain", MAC, "--json").json()
    target = next(s["result"] for s in data["steps"] if s["name"] == "target")
    assert "bucket" in target and "1%" in target


def test_explain_filesystem_mode(door: World, run: Run) -> None:
    check(door, version="1.0.0")
    data = run("explain", MAC, "--mode", "spiffs", "--json").json()
    assert (data["mode"], data["status"], data["reason"]) == ("spiffs", 304, "no-target")


# --- upload -------------------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "door-1.2.0.bin"
    path.write_bytes(fake_image("door-1.2.0", 8192))
    return path


def register_uploads(world: World, state: ReleaseState, reason: str | None) -> None:
    """Stand-in for the publish function: records a verdict on every uploaded object, as ingest does."""
    s3 = clients.s3(world.settings)
    bucket = world.settings.firmware_bucket
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        key = obj["Key"]
        folder, product, name = key.split("/")
        got = s3.get_object(Bucket=bucket, Key=key)
        body = got["Body"].read()
        release = Release(
            product,
            Kind.FS if folder == "filesystem" else Kind.APP,
            name.removesuffix(".bin"),
            len(body),
            hashlib.md5(body).hexdigest(),
            hashlib.sha256(body).hexdigest(),
            key,
            s3_version_id=got.get("VersionId"),
            chip="esp8266",
        )
        if world.catalog.get_release(release.product, release.kind, release.version) is not None:
            continue
        if state is ReleaseState.REJECTED:
            world.catalog.add_rejection(replace(release, state=state, reason=reason))
        else:
            world.catalog.add_release(release)


def publish_on_first_wait(
    monkeypatch: pytest.MonkeyPatch,
    world: World,
    state: ReleaseState = ReleaseState.REGISTERED,
    reason: str | None = None,
) -> list[float]:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:
            register_uploads(world, state, reason)

    monkeypatch.setattr(upload, "_sleep", sleep)
    return naps


def test_upload_puts_the_object_by_convention_and_waits_for_registration(
    door: World, run: Run, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    naps = publish_on_first_wait(monkeypatch, door)
    result = run("upload", str(image), "--product", "door", "--channel", "beta")
    assert result.code == 0, result.err
    obj = clients.s3(door.settings).head_object(Bucket=door.settings.firmware_bucket, Key="firmware/door/1.2.0.bin")
    assert obj["Metadata"] == {"channel": "beta"}
    assert obj["ContentLength"] == 8192
    assert naps and "waiting for registration" in result.err
    assert "door app 1.2.0" in result.out and "registered" in result.out
    assert hashlib.md5(image.read_bytes()).hexdigest() in result.out


def test_upload_fs_with_explicit_version_json(
    door: World, run: Run, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_on_first_wait(monkeypatch, door)
    result = run("upload", str(image), "--product", "door", "--fs", "--version", "fs-7", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert (data["status"], data["key"], data["release"]["kind"]) == ("registered", "filesystem/door/fs-7.bin", "fs")
    head = clients.s3(door.settings).head_object(Bucket=door.settings.firmware_bucket, Key="filesystem/door/fs-7.bin")
    assert head["Metadata"] == {}


def test_upload_rejected_prints_the_reason_and_exits_1(
    door: World, run: Run, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "not an ESP image: byte 0 is 0x00, expected magic 0xE9"
    publish_on_first_wait(monkeypatch, door, ReleaseState.REJECTED, reason)
    result = run("upload", str(image), "--product", "door")
    assert result.code == 1
    assert reason in result.out
    assert error_line(result) == f"otafleet: error: door app 1.2.0 was rejected: {reason}"
    # The same bytes again get a fresh verdict (the product's settings may have changed), not the old one.
    publish_on_first_wait(monkeypatch, door, ReleaseState.REJECTED, "still not an image")
    again = run("upload", str(image), "--product", "door", "--json")
    assert again.code == 1
    assert (again.json()["status"], again.json()["release"]["reason"]) == ("rejected", "still not an image")


def test_upload_timeout_exits_2(door: World, run: Run, image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(upload, "_clock", lambda: clock[0])
    monkeypatch.setattr(upload, "_sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    result = run("upload", str(image), "--product", "door", "--timeout", "5")
    assert result.code == 2
    assert "not registered within 5 s: registration did not happen (is the publish function running?" in result.err
    assert clock[0] == pytest.approx(5.0)
    keys = [
        o["Key"] for o in clients.s3(door.settings).list_objects_v2(Bucket=door.settings.firmware_bucket)["Contents"]
    ]
    assert "firmware/door/1.2.0.bin" in keys


def test_upload_of_an_already_registered_release(
    door: World, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = tmp_path / "1.1.0.bin"
    same.write_bytes(fake_image("door-1.1.0"))  # the bytes World.release registered for 1.1.0
    monkeypatch.setattr(upload, "_sleep", lambda s: pytest.fail("must not wait"))
    result = run("upload", str(same), "--product", "door", "--channel", "stable")
    assert result.code == 0
    assert "already registered with these bytes; nothing uploaded" in result.err
    assert run("channel", "show", "door", "stable", "--json").json()[0]["version"] == "1.1.0"
    other = tmp_path / "door-1.0.0.bin"
    other.write_bytes(b"\xe9different")
    result = run("upload", str(other), "--product", "door")
    assert result.code == 1
    assert "door app 1.0.0 is already registered with other bytes" in result.err
    assert "releases are immutable" in result.err


def ingest_on_first_wait(monkeypatch: pytest.MonkeyPatch, world: World, key: str) -> None:
    """The real ingest core, run as S3 → publish function would run it, while the CLI waits."""
    from otafleet.ingest import Ingest

    def sleep(seconds: float) -> None:
        if world.catalog.get_release("door", Kind.APP, key.split("/")[-1].removesuffix(".bin")) is None:
            head = clients.s3(world.settings).head_object(Bucket=world.settings.firmware_bucket, Key=key)
            logging.disable(logging.CRITICAL)  # its log handler may hold an earlier test's closed stdout
            try:
                Ingest(world.catalog, world.blobs).register(key, head.get("VersionId"))
            finally:
                logging.disable(logging.NOTSET)

    monkeypatch.setattr(upload, "_sleep", sleep)


def test_upload_through_the_real_ingest(door: World, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from otafleet_local.sample_images import build_esp8266_image

    image = tmp_path / "door-1.3.0.bin"
    image.write_bytes(build_esp8266_image(seed=3))
    ingest_on_first_wait(monkeypatch, door, "firmware/door/1.3.0.bin")
    result = run("upload", str(image), "--product", "door", "--channel", "stable", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert (data["status"], data["release"]["md5"]) == ("registered", hashlib.md5(image.read_bytes()).hexdigest())
    assert run("channel", "show", "door", "stable", "--json").json()[0]["version"] == "1.3.0"

    garbage = tmp_path / "door-1.4.0.bin"
    garbage.write_bytes(b"not firmware at all")
    ingest_on_first_wait(monkeypatch, door, "firmware/door/1.4.0.bin")
    result = run("upload", str(garbage), "--product", "door")
    assert result.code == 1
    rejected = door.catalog.upload_status("door", Kind.APP, "1.4.0", hashlib.sha256(garbage.read_bytes()).hexdigest())
    assert rejected is not None and rejected.reason
    assert error_line(result) == f"otafleet: error: door app 1.4.0 was rejected: {rejected.reason}"
    assert door.catalog.get_release("door", Kind.APP, "1.4.0") is None  # never a release


def test_releases_lists_a_rejected_upload_and_channel_set_names_it(
    door: World, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "door-1.4.0.bin"
    garbage.write_bytes(b"not firmware at all")
    ingest_on_first_wait(monkeypatch, door, "firmware/door/1.4.0.bin")
    assert run("upload", str(garbage), "--product", "door").code == 1
    rejected = door.catalog.upload_status("door", Kind.APP, "1.4.0", hashlib.sha256(garbage.read_bytes()).hexdigest())
    assert rejected is not None and rejected.reason and rejected.uploaded_at

    result = run("releases", "door")
    assert result.code == 0
    row = next(line for line in result.out.splitlines() if " 1.4.0 " in line)
    assert row.split()[:3] == ["app", "1.4.0", "rejected"]
    assert rejected.reason in row and "firmware/door/1.4.0.bin" in row and rejected.uploaded_at in row
    data = run("releases", "door", "--json").json()
    assert [(r["version"], r["state"]) for r in data] == [
        ("1.0.0", "registered"),
        ("1.1.0", "registered"),
        ("1.4.0", "rejected"),
    ]
    assert (data[2]["reason"], data[2]["s3_key"], data[2]["channels"]) == (
        rejected.reason,
        "firmware/door/1.4.0.bin",
        [],
    )

    result = run("channel", "set", "door", "stable", "1.4.0")
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: door app 1.4.0 was rejected: {rejected.reason}")
    assert "has no release" not in result.err and "firmware/door/1.4.0.bin" in result.err
    result = run("device", "assign", MAC, "--product", "door", "--pin", "1.4.0")
    assert result.code == 1 and "door app 1.4.0 was rejected" in result.err
    # A version nobody uploaded is still unknown.
    assert "door has no app release '1.5.0'" in run("channel", "set", "door", "stable", "1.5.0").err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["upload", "missing.bin", "--product", "door"], "file not found: missing.bin"),
        (["upload", "{image}", "--product", "nope"], "unknown product 'nope'"),
        (["upload", "{door_bin}", "--product", "door"], "cannot tell the version from the file name 'door.bin'"),
        (["upload", "{image}", "--product", "door", "--version", "a b"], "invalid version 'a b'"),
        (["upload", "{image}", "--product", "door", "--channel", "x/y"], "invalid channel name 'x/y'"),
        (["upload", "{dir}", "--product", "door"], "not a file"),
    ],
)
def test_upload_mistakes(door: World, run: Run, image: Path, argv: list[str], message: str) -> None:
    door_bin = image.with_name("door.bin")
    door_bin.write_bytes(b"\xe9")
    values = {"image": str(image), "door_bin": str(door_bin), "dir": str(image.parent)}
    result = run(*[a.format(**values) for a in argv])
    assert result.code == 1
    assert error_line(result).startswith(f"otafleet: error: {message}")
    assert "Contents" not in clients.s3(door.settings).list_objects_v2(Bucket=door.settings.firmware_bucket) or all(
        not o["Key"].endswith("1.2.0.bin")
        for o in clients.s3(door.settings).list_objects_v2(Bucket=door.settings.firmware_bucket)["Contents"]
    )


# --- the same discovery path against an AWS endpoint on loopback (what the local stack provides) ----------


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # A user of the local stack sets only AWS_ENDPOINT_URL: no credentials, no region.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.delenv("OTAFLEET_STACK", raising=False)
    try:
        yield url
    finally:
        server.stop()


def local_stack(endpoint: str, name: str = "otafleet", prefix: str = "local") -> Any:
    """What make run registers on its AWS endpoint: the tables, the bucket and a stack naming them (the
    endpoint's server shares moto's state across tests: each test takes its own names). Returns its S3."""
    from otafleet.config import Settings
    from otafleet_local import resources

    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    names = (f"{prefix}-devices", f"{prefix}-catalog", f"{prefix}-firmware")
    settings = Settings(*names, "us-east-1", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    resources.create(settings, session.client("dynamodb", endpoint_url=endpoint), s3)
    outputs = {
        "ApiUrl": "http://127.0.0.1:3000",
        "FirmwareBucketName": names[2],
        "DevicesTableName": names[0],
        "CatalogTableName": names[1],
        "AuditTableName": settings.audit_table,
        "Region": "us-east-1",
    }
    session.client("cloudformation", endpoint_url=endpoint).create_stack(
        StackName=name,
        TemplateBody=json.dumps(
            {
                "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()},
            }
        ),
    )
    return s3


def test_local_endpoint_end_to_end(endpoint: str, run: Run, tmp_path: Path) -> None:
    s3 = local_stack(endpoint)

    info = run("info", "--json")
    assert info.code == 0, info.err
    assert (info.json()["endpoint_url"], info.json()["devices_table"]) == (endpoint, "local-devices")
    assert run("product", "create", "door", "--platform", "esp8266").code == 0
    image = tmp_path / "door-2.0.0.bin"
    image.write_bytes(fake_image("door-2.0.0"))
    result = run("upload", str(image), "--product", "door", "--channel", "beta", "--timeout", "0")
    assert result.code == 2  # nothing registers uploads here
    assert "registration did not happen" in result.err and "make run" in result.err
    head = s3.head_object(Bucket="local-firmware", Key="firmware/door/2.0.0.bin")
    assert (head["ContentLength"], head["Metadata"]) == (4096, {"channel": "beta"})
    assert run("device", "assign", MAC, "--product", "door", "--json").json()["channel"] == "stable"
    assert run("devices", "--json").json()["devices"][0]["mac"] == MAC


def test_endpoint_url_option_reaches_every_client(
    endpoint: str, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = local_stack(endpoint, "otafleet-option", "option")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where AWS is
    opt = ("--endpoint-url", endpoint, "--stack-name", "otafleet-option")
    info = run(*opt, "info", "--json")
    assert info.code == 0, info.err
    assert info.json()["endpoint_url"] == endpoint
    assert run(*opt, "product", "create", "door", "--platform", "esp8266").code == 0  # DynamoDB
    image = tmp_path / "door-2.0.0.bin"
    image.write_bytes(fake_image("door-2.0.0"))
    assert run(*opt, "upload", str(image), "--product", "door", "--timeout", "0").code == 2  # S3, nothing registers
    assert s3.head_object(Bucket="option-firmware", Key="firmware/door/2.0.0.bin")["ContentLength"] == 4096
    assert run("rollout", "tick", *opt).code == 0  # the controller's own clients (Settings.endpoint_url)


def test_import_php_mapping_dry_run_then_apply(door: World, run: Run, tmp_path: Path) -> None:
    mapping = tmp_path / "devices.php"
    mapping.write_text(
        '<?php\n$db = array(\n  "18:FE:AA:AA:AA:AA" => "1.0.0",\n  "18:FE:AA:AA:AA:BB" => "1.1.0",\n);\n'
    )
    dry = run("import", str(mapping), "--product", "door", "--dry-run")
    assert dry.code == 0, dry.err
    assert "18:FE:AA:AA:AA:AA" in dry.out and "nothing written" in dry.out
    assert door.devices.get("18:FE:AA:AA:AA:AA") is None
    applied = run("import", str(mapping), "--product", "door")
    assert applied.code == 0, applied.err
    device = door.devices.get("18:FE:AA:AA:AA:BB")
    assert device is not None and device.product == "door" and device.pins == {Kind.APP: "1.1.0"}


def test_import_json(door: World, run: Run, tmp_path: Path) -> None:
    mapping = tmp_path / "devices.csv"
    mapping.write_text("mac,version\n18:FE:AA:AA:AA:AA,1.0.0\n00:00:00:00:00:00,1.0.0\n")
    dry = run("import", str(mapping), "--product", "door", "--dry-run", "--json")
    assert dry.code == 1  # an entry was skipped
    data = dry.json()
    assert (data["dry_run"], data["written"], data["counts"]["new"], data["counts"]["skipped"]) == (True, 0, 1, 1)
    assert [c["mac"] for c in data["changes"]] == ["18:FE:AA:AA:AA:AA"] and "not a device" in data["skipped"][0][
        "reason"
    ]
    assert door.devices.get("18:FE:AA:AA:AA:AA") is None
    applied = run("--output", "json", "import", str(mapping), "--product", "door").json()
    assert (applied["dry_run"], applied["written"]) == (False, 1)
    assert door.devices.get("18:FE:AA:AA:AA:AA") is not None


def test_import_skips_the_zero_mac_with_the_reason(door: World, run: Run, tmp_path: Path) -> None:
    mapping = tmp_path / "devices.csv"
    mapping.write_text("mac,version\n00:00:00:00:00:00,1.0.0\n18:FE:AA:AA:AA:AA,1.0.0\n")
    result = run("import", str(mapping), "--product", "door")
    assert result.code == 1
    assert f"{ZERO_MAC} is not a device" in result.out
    assert door.devices.get(ZERO_MAC) is None and door.devices.get("18:FE:AA:AA:AA:AA") is not None


def test_import_unknown_product_is_one_line(door: World, run: Run, tmp_path: Path) -> None:
    mapping = tmp_path / "devices.json"
    mapping.write_text('{"18:FE:AA:AA:AA:AA": "1.0.0"}')
    result = run("import", str(mapping), "--product", "ghost")
    assert result.code == 1 and result.err.startswith("otafleet: error: unknown product 'ghost'")


def test_window_set_gates_offers_and_clear_lifts_it(door: World, run: Run) -> None:
    run("channel", "set", "door", "stable", "1.1.0")
    # A window that is closed at the service's clock: offers wait, nothing else changes.
    result = run("window", "set", "door", "mon 01:00-02:00", "--tz", "Europe/Berlin", "--json")
    assert result.code == 0 and result.json()["window"] == "mon 01:00-02:00 Europe/Berlin"
    service = replace(door.service(), clock=lambda: "2026-12-01T12:00:00Z")  # a Tuesday
    assert service.check(esp8266_headers(MAC, version="1.0.0")).headers["X-Otafleet-Reason"] == "outside-window"
    assert service.check(esp8266_headers(MAC, version="1.1.0")).status == 304
    inside = replace(service, clock=lambda: "2026-11-30T00:30:00Z")  # Monday 01:30 in Berlin
    assert inside.check(esp8266_headers(MAC, version="1.0.0")).status == 302
    assert "images are handed over mon 01:00-02:00 Europe/Berlin" in run("channel", "show", "door", "stable").err
    # A channel's window overrides the product's; clearing it falls back to the product's.
    assert run("window", "set", "door", "daily 00:00-24:00", "--channel", "stable").code == 0
    service.catalog.invalidate()  # a warm service sees the change once its catalog cache is refreshed
    assert service.check(esp8266_headers(MAC, version="1.0.0")).status == 302
    assert run("window", "clear", "door", "--channel", "stable").code == 0
    assert run("window", "clear", "door").code == 0
    assert "window           always" in run("product", "create", "door").out
    bad = run("window", "set", "door", "weekdays 1-5")
    assert bad.code != 0 and "not a window" in error_line(bad)
    assert "unknown time zone" in error_line(run("window", "set", "door", "mon 01:00-02:00", "--tz", "Nowhere/X"))


# --- signing keys -------------------------------------------------------------------------------------

SIGNING = Path(__file__).parents[1] / "fixtures" / "signing"


def test_product_key_add_list_retire(door: World, run: Run) -> None:
    result = run("product", "key", "add", "door", str(SIGNING / "pub-rsa2048-a.pem"), "--name", "main", "--json")
    assert result.code == 0, result.err
    added = result.json()
    assert (added["name"], added["algorithm"], added["state"]) == ("main", "rsa-2048", "active")
    assert "accepts uploads signed by key main" in result.err

    # the same key again, or a private key file of it: refused with what to do
    again = run("product", "key", "add", "door", str(SIGNING / "rsa2048-a.pem"))
    assert again.code == 1 and "already has this key, as main" in error_line(again)
    ec = run("product", "key", "add", "door", str(SIGNING / "pub-p256-a.pem"))
    assert ec.code == 1 and "RSA" in error_line(ec)
    missing = run("product", "key", "add", "door", str(SIGNING / "nope.pem"))
    assert missing.code == 1 and "cannot read" in error_line(missing)

    assert run("product", "key", "add", "door", str(SIGNING / "pub-rsa2048-b.pem")).code == 0
    listed = run("product", "key", "list", "door", "--json").json()
    assert [k["name"] for k in listed] == ["main", listed[1]["fingerprint"][:12]]
    table = run("product", "key", "list", "door").out
    assert "main" in table and "rsa-2048" in table and added["fingerprint"] in table

    retired = run("product", "key", "retire", "door", "main", "--json")
    assert retired.code == 0 and retired.json()["state"] == "retired"
    assert run("product", "key", "retire", "door", "other").code == 1
    product = door.catalog.get_product("door")
    assert product is not None and product.signed and [k.active for k in product.keys] == [False, True]
    # creating the product again keeps its keys
    assert run("product", "create", "door", "--enroll").code == 0
    assert len(door.catalog.get_product("door").keys) == 2  # type: ignore[union-attr]


def test_releases_and_device_show_name_the_signing_key(door: World, run: Run) -> None:
    assert run("product", "key", "add", "door", str(SIGNING / "pub-rsa2048-a.pem"), "--name", "main").code == 0
    key = door.catalog.get_product("door").keys[0]  # type: ignore[union-attr]
    base = door.catalog.get_release("door", Kind.APP, "1.1.0")
    assert base is not None
    signed = replace(
        base,
        version="1.2.0",
        signature_scheme="esp8266-rsa-pkcs1v15-sha256",
        signed_by=(key.fingerprint,),
    )
    door.catalog.add_release(signed)
    table = run("releases", "door").out
    assert f"esp8266-rsa-pkcs1v15-sha256 by {key.fingerprint[:12]} (main)" in table
    # device show names the signature of the release the device runs (its record learns it at install)
    from otafleet_cli import views

    stored = door.devices.get(MAC)
    assert stored is not None
    device = replace(stored, running_version="1.2.0")
    assert f"{key.fingerprint[:12]} (main)" in views.device_fields(device, signed, [key])
