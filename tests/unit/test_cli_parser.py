"""Argument parsing: every command of product.md §5, global options anywhere, usage errors exit 2."""

from __future__ import annotations

import pytest

from otafleet_cli import commands, upload
from otafleet_cli.main import build_parser, describe_failure, main


@pytest.mark.parametrize(
    ("argv", "handler"),
    [
        (["info"], commands.info),
        (["upload", "f.bin", "--product", "door"], upload.run),
        (["releases", "door"], commands.releases),
        (["products"], commands.products),
        (["product", "create", "door", "--platform", "esp32s3"], commands.product_create),
        (["channel", "set", "door", "stable", "1.0", "--percent", "5"], commands.channel_set),
        (["channel", "show", "door", "stable"], commands.channel_show),
        (["channel", "rollback", "door", "stable"], commands.channel_rollback),
        (["channel", "pause", "door", "stable"], commands.channel_pause),
        (["channel", "resume", "door", "stable", "--fs", "--reset-counts"], commands.channel_resume),
        (["device", "assign", "AA:BB:CC:DD:EE:FF", "--product", "door"], commands.device_assign),
        (["device", "block", "AA:BB:CC:DD:EE:FF"], commands.device_block),
        (["device", "unblock", "AA:BB:CC:DD:EE:FF"], commands.device_unblock),
        (["device", "show", "AA:BB:CC:DD:EE:FF"], commands.device_show),
        (["device", "credentials", "AA:BB:CC:DD:EE:FF"], commands.device_credentials),
        (["device", "retry", "AA:BB:CC:DD:EE:FF"], commands.device_retry),
        (["devices", "--product", "door", "--unassigned"], commands.devices),
        (["explain", "AA:BB:CC:DD:EE:FF", "--mode", "spiffs"], commands.explain),
        (["rollout", "tick"], commands.rollout_tick),
        (["rollout", "status", "door", "stable"], commands.rollout_status),
        (["release", "revoke", "door", "1.0", "--fs", "--force"], commands.release_revoke),
        (["channels", "door"], commands.channels),
        (["channel", "delete", "door", "beta"], commands.channel_delete),
        (["device", "delete", "AA:BB:CC:DD:EE:FF"], commands.device_delete),
        (["product", "delete", "door", "--force"], commands.product_delete),
        (["devices", "--version", "1.0", "--state", "silent", "--seen-before", "3d"], commands.devices),
    ],
)
def test_every_command_parses(argv: list[str], handler: object) -> None:
    args = build_parser().parse_args([*argv, "--json"])
    assert args.handler is handler
    assert args.output == "json"


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--stack-name", "s", "--region", "r", "--profile", "p", "--json", "products"])
    after = parser.parse_args(["products", "--stack-name", "s", "--region", "r", "--profile", "p", "--json"])
    for args in (before, after):
        assert (args.stack_name, args.region, args.profile, args.output) == ("s", "r", "p", "json")
    assert "output" not in vars(parser.parse_args(["products"]))


def test_output_option_and_its_json_alias() -> None:
    parser = build_parser()
    assert parser.parse_args(["--output", "csv", "devices"]).output == "csv"
    assert parser.parse_args(["devices", "--output", "table"]).output == "table"
    assert parser.parse_args(["--output", "csv", "devices", "--json"]).output == "json"  # the last one wins


def test_defaults() -> None:
    parser = build_parser()
    up = parser.parse_args(["upload", "f.bin", "--product", "door"])
    assert (up.version, up.fs, up.channel, up.timeout) == (None, False, None, 60.0)
    ch = parser.parse_args(["channel", "set", "door", "stable", "1.0"])
    assert (ch.percent, ch.fs, ch.max_failure_rate, ch.min_devices, ch.max_silence_excess) == (
        100,
        False,
        None,
        None,
        None,
    )
    pc = parser.parse_args(["product", "create", "door"])
    assert (pc.platform, pc.delivery, pc.enroll, pc.auth, pc.allow_downgrade, pc.default_channel) == (None,) * 6
    assert parser.parse_args(["product", "create", "door", "--no-enroll"]).enroll is False
    assert parser.parse_args(["explain", "AA:BB:CC:DD:EE:FF"]).mode == "sketch"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["channel"],
        ["channel", "set", "door", "stable"],
        ["channel", "set", "door", "stable", "1.0", "--percent", "ten"],
        ["upload", "f.bin"],
        ["device", "assign", "AA:BB:CC:DD:EE:FF"],
        ["device", "assign", "AA:BB:CC:DD:EE:FF", "--product", "d", "--pin", "1", "--unpin"],
        ["explain", "AA:BB:CC:DD:EE:FF", "--mode", "version"],
        ["product", "create", "door", "--delivery", "carrier-pigeon"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "otafleet" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: otafleet" in capsys.readouterr().out


def test_describe_failure_names_the_cause() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ProfileNotFound

    from otafleet.storage.errors import StorageUnavailable

    try:
        try:
            raise NoCredentialsError()
        except NoCredentialsError as err:
            raise StorageUnavailable("NoCredentialsError") from err
    except StorageUnavailable as wrapped:
        assert describe_failure(wrapped).startswith("no AWS credentials found")
    assert describe_failure(ProfileNotFound(profile="x")) == "AWS profile 'x' not found in your AWS config"
    assert describe_failure(EndpointConnectionError(endpoint_url="https://x")).startswith("cannot reach https://x")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "Scan")
    assert describe_failure(denied) == "AWS refused the request: AccessDenied: no"
    assert describe_failure(ValueError("odd")) == "ValueError: odd"


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"otafleet {version('otafleet')}"
