"""`otafleet`: argument parsing, dispatch, and errors as one line on stderr (product.md §5)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from otafleet import plans
from otafleet.fleet import DEVICE_STATES, FleetError
from otafleet.models import PLATFORMS, Delivery
from otafleet_cli import auditlog, commands, upload
from otafleet_cli.output import FORMATS, TABLE_WIDTH, Output
from otafleet_cli.stack import DEFAULT_STACK, LOCAL_HINT, CliError, Connection, endpoint_url

Handler = Callable[[Connection, Any, Output], int]

DESCRIPTION = """\
Operate an otafleet stack: upload firmware, point channels at releases, stage and roll back rollouts,
assign and inspect devices.

The stack is found by its CloudFormation outputs (--stack-name, default 'otafleet' or $OTAFLEET_STACK).
Against the local stack (make run): --endpoint-url URL (or AWS_ENDPOINT_URL) with the AWS endpoint it prints.
"""


def _global_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: the options may come before or after the command without one overwriting the other.
    parser.add_argument(
        "--stack-name",
        default=argparse.SUPPRESS,
        help=f"CloudFormation stack to operate (default: $OTAFLEET_STACK or {DEFAULT_STACK!r})",
    )
    parser.add_argument("--profile", default=argparse.SUPPRESS, help="AWS profile to use")
    parser.add_argument("--region", default=argparse.SUPPRESS, help="AWS region of the stack")
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="AWS endpoint for every client, like the AWS CLI's (default: $AWS_ENDPOINT_URL, else AWS); for "
        "the local stack the one make run prints",
    )
    parser.add_argument(
        "--output",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help=f"table (default), json, or csv (the list commands: {commands.CSV_COMMAND_NAMES})",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", default=argparse.SUPPRESS, help="--output json"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otafleet")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    try:
        now = endpoint_url() or "AWS itself (AWS_ENDPOINT_URL is not set)"
    except CliError as bad:
        now = bad.message
    parser = argparse.ArgumentParser(
        prog="otafleet",
        description=f"{DESCRIPTION}AWS endpoint without --endpoint-url: {now}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"otafleet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: Any, name: str, handler: Handler, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=kw.pop("description", help_text), parents=[common], **kw
        )
        p.set_defaults(handler=handler)
        return p

    def nested(name: str, help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

    command(sub, "info", commands.info, "API URL, bucket, table names and region of the stack")

    p = command(
        sub,
        "upload",
        upload.run,
        "upload an image and wait for the publish function to register (or reject) it",
        description=(
            "Upload FILE to firmware/<product>/<version>.bin (filesystem/… with --fs) and wait for its "
            "registration. " + upload.VERSION_RULE + " Exit status: 0 registered, 1 rejected (the reason is "
            "printed), 2 not registered within --timeout."
        ),
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--product", required=True)
    p.add_argument("--version", help="release version (default: from the file name, see above)")
    p.add_argument("--fs", action="store_true", help="a filesystem image (SPIFFS/LittleFS), not the application")
    p.add_argument("--channel", help="promote the release to this channel once registered")
    p.add_argument(
        "--trusts",
        action="append",
        metavar="KEY",
        help="signed products: a key the build carries (repeatable; default: the keys it is signed by), e.g. "
        "the new key in a rotation's bridge release",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=upload.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for registration (default {upload.DEFAULT_TIMEOUT:g})",
    )

    p = command(sub, "releases", commands.releases, "a product's releases with state, facts and channels")
    p.add_argument("product", metavar="PRODUCT")

    release = nested("release", "revoke releases")
    p = command(
        release,
        "revoke",
        commands.release_revoke,
        "offer a release to no device from now on (its record and bytes stay)",
        description=(
            "Revoke release VERSION of product P: no device is offered it any more (a device whose target it "
            "is gets 304 target-unavailable). A release a channel serves (its version, or the previous release "
            "the rest of a staged rollout runs) is refused unless --force: point the channel elsewhere first."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--fs", action="store_true", help="a filesystem image, not the application")
    p.add_argument("--force", action="store_true", help="revoke it even while channels serve it")

    command(sub, "products", commands.products, "list products")
    p = command(sub, "channels", commands.channels, "a product's channels with their tracks and device counts")
    p.add_argument("product", metavar="PRODUCT")

    product = nested("product", "create or update products")
    p = command(
        product,
        "create",
        commands.product_create,
        "create a product, or change the given settings of an existing one",
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("--platform", choices=PLATFORMS, help="chip platform (required to create)")
    p.add_argument("--delivery", choices=[d.value for d in Delivery], help="how images reach devices")
    p.add_argument(
        "--enroll", action=argparse.BooleanOptionalAction, help="enroll unknown devices that ask /update/PRODUCT"
    )
    p.add_argument("--auth", action=argparse.BooleanOptionalAction, help="require per-device Basic auth")
    p.add_argument(
        "--allow-downgrade", action=argparse.BooleanOptionalAction, help="offer releases older than the running one"
    )
    p.add_argument("--default-channel", metavar="CHANNEL", help="channel for enrolled and newly assigned devices")

    p = command(
        product,
        "delete",
        commands.product_delete,
        "delete a product with its releases (refused while it has channels or devices, unless --force)",
        description=(
            "Delete product P with its releases, rejected uploads and counts. Refused while it has channels "
            "or assigned devices, unless --force: then its channels go too and its devices are unassigned "
            "(their records stay). The firmware objects in the bucket are kept."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("--force", action="store_true", help="delete its channels too and unassign its devices")

    keys = product.add_parser(
        "key", help="signing keys: a product with keys accepts only uploads signed by one of them"
    ).add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    p = command(
        keys,
        "add",
        commands.key_add,
        "accept uploads signed by this key (the first key makes the product a signed product)",
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument(
        "key_file", metavar="KEY.pem", help="the public key (PEM); of a private key only the public half is kept"
    )
    p.add_argument("--name", help="a short name for the key (default: its fingerprint's first 12 hex digits)")
    p = command(keys, "list", commands.key_list, "the product's keys: name, algorithm, state, fingerprint")
    p.add_argument("product", metavar="PRODUCT")
    p = command(keys, "retire", commands.key_retire, "refuse new uploads signed by this key; its releases stay")
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("key", metavar="KEY", help="the key's name or fingerprint")

    channel = nested("channel", "point channels at releases and control rollouts")
    p = command(
        channel,
        "set",
        commands.channel_set,
        "point a channel at a release, optionally as a staged rollout",
        description=(
            "Point channel C of product P at release VERSION. With --percent N < 100 it is a staged rollout: the "
            "new release for a stable N % of the channel's devices, the previous release for the rest; raising N "
            "only adds devices. Setting the current version again changes only the percentage and thresholds."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--percent", type=int, default=100, help="share of the channel's devices (1-100, default 100)")
    p.add_argument("--fs", action="store_true", help="the channel's filesystem image, not its application")
    p.add_argument(
        "--max-failure-rate",
        type=float,
        metavar="RATE",
        help="halt the rollout when failures / outcomes exceeds this (0-1, default 0.2)",
    )
    p.add_argument("--min-devices", type=int, metavar="N", help="outcomes needed before it can halt (default 10)")
    p.add_argument(
        "--max-offers-per-minute",
        type=int,
        metavar="N",
        help="pace the rollout: at most N images handed over a minute, the rest at later checks (0: no limit)",
    )
    p.add_argument(
        "--max-silence-excess",
        type=float,
        metavar="RATE",
        help="halt the rollout when the share of its devices that went silent exceeds a control group's by more "
        "than this (0-1, default 0.1; docs/operations.md)",
    )

    def track_command(group: Any, name: str, handler: Handler, text: str) -> None:
        """A command on one channel's track: `channel show|rollback|pause|resume`, `rollout pause|…`."""
        p = command(group, name, handler, text)
        p.add_argument("product", metavar="PRODUCT")
        p.add_argument("channel", metavar="CHANNEL")
        if name != "show":
            p.add_argument("--fs", action="store_true", help="the filesystem image's track")
        if name == "resume":
            p.add_argument(
                "--reset-counts",
                action="store_true",
                help="start the outcome counts from zero (needed to resume a rollout whose failure rate is still "
                "over its threshold: it would halt again at once)",
            )

    for name, handler, text in (
        ("show", commands.channel_show, "a channel's releases, rollout state and success/failure counts"),
        ("rollback", commands.channel_rollback, "point the channel back at its previous release"),
        ("pause", commands.channel_pause, "pause a rollout: devices not on the new release get the previous one"),
        ("resume", commands.channel_resume, "resume a paused or halted rollout"),
    ):
        track_command(channel, name, handler, text)

    p = command(
        channel,
        "delete",
        commands.channel_delete,
        "delete a channel (refused while devices are assigned to it, and for the default channel)",
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("channel", metavar="CHANNEL")

    window = nested("window", "maintenance windows: when images may be handed to devices")
    p = command(
        window,
        "set",
        commands.window_set,
        "hand images to a product's (or a channel's) devices only inside a window",
        description=(
            "Outside the window a device that would be handed an image gets 304 (outside-window) and is served "
            "at a check inside it. A channel's window overrides its product's. WINDOW is DAYS HH:MM-HH:MM, e.g. "
            "'mon-fri 01:00-05:00', 'daily 22:00-06:00' (an end before the start crosses midnight)."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("window", metavar="WINDOW")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the window (default UTC), e.g. Europe/Berlin")
    p.add_argument("--channel", help="the window of one channel, overriding the product's")
    p = command(window, "clear", commands.window_clear, "remove a product's (or a channel's) window")
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("--channel", help="the window of one channel")
    rollout_group = nested("rollout", "rollout plans and the rollout controller: stages, silence, halts")
    p = command(
        rollout_group,
        "start",
        commands.rollout_start,
        "roll a release out in stages that advance by themselves",
        description=(
            "Point channel C of product P at release VERSION as a rollout plan: the first stage's share of the "
            "channel now; each next stage once the current one has soaked for --soak and its devices meet "
            "--min-success (installed over judged and overdue devices; silence counts beyond the control group's). "
            "It halts by itself on --max-failure or on excess silence. Raising a stage only adds devices. "
            "`rollout pause|resume|rollback|abort` act on it; `channel set` takes it over by hand."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--fs", action="store_true", help="the channel's filesystem image, not its application")
    p.add_argument(
        "--stages", default=plans.DEFAULT_STAGES, help=f"percentages of the channel (default {plans.DEFAULT_STAGES})"
    )
    p.add_argument(
        "--soak",
        default=plans.DEFAULT_SOAK,
        help=f"time each stage runs before it may advance (default {plans.DEFAULT_SOAK})",
    )
    p.add_argument(
        "--min-success",
        type=float,
        default=plans.DEFAULT_MIN_SUCCESS * 100,
        metavar="PERCENT",
        help=f"success bar to advance (default {plans.DEFAULT_MIN_SUCCESS * 100:g})",
    )
    p.add_argument(
        "--max-failure", type=float, metavar="PERCENT", help="halt when failures / outcomes exceeds this (default 20)"
    )
    p.add_argument("--min-devices", type=int, metavar="N", help="devices judged before a bar applies (default 10)")
    p.add_argument("--max-offers-per-minute", type=int, metavar="N", help="pace: at most N images handed over a minute")
    p.add_argument(
        "--pace-growth",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply the pace by this at each stage advance (default 1: constant)",
    )
    p.add_argument(
        "--max-silence-excess",
        type=float,
        metavar="PERCENT",
        help="halt when the silent share exceeds the control group's by more than this (default 10)",
    )
    for name, handler, text in (
        ("pause", commands.channel_pause, "pause the rollout: its plan waits, no new device is offered the release"),
        ("resume", commands.channel_resume, "resume a paused or halted rollout; its stage soaks afresh"),
        ("rollback", commands.channel_rollback, "point the channel back at its previous release; the plan ends"),
        ("abort", commands.rollout_abort, "stop the plan for good: halted where it stands"),
    ):
        track_command(rollout_group, name, handler, text)
    command(
        rollout_group,
        "tick",
        commands.rollout_tick,
        "run one pass of the rollout controller now (it also runs on its schedule)",
        description=(
            "Run one pass of the rollout controller against the stack, as its schedule does every few minutes: "
            "mark devices silent that were handed an image and have not checked in since, for longer than "
            "their usual interval allows, and halt rollouts whose failure rate or silence calls for it. "
            "Safe to run at any time: a pass changes nothing another pass already changed."
        ),
    )
    p = command(
        rollout_group,
        "status",
        commands.rollout_status,
        "a channel's rollouts: offered, installed, failed, unknown, silent, pending, control-group silence",
        description=(
            "Each rollout of the channel with its plan's stages (eligible, offered, installed, failed, unknown, "
            "silent, pending, a progress bar of the judged devices), the control group's silence, time in stage "
            "and the next automatic action. --watch refreshes it (with --json: one JSON line per refresh)."
        ),
    )
    p.add_argument("product", metavar="PRODUCT")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=5.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until Ctrl-C",
    )
    p.add_argument("--iterations", type=int, default=0, metavar="N", help="with --watch: stop after N refreshes")

    device = nested("device", "assign, block and inspect devices")
    p = command(device, "assign", commands.device_assign, "register a device or move it to a product/channel")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--product", required=True)
    p.add_argument("--channel", help="default: the product's default channel")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--pin", metavar="VERSION", help="always offer this application version")
    pin.add_argument("--unpin", action="store_true", help="remove the device's pin")
    for name, handler, text in (
        ("block", commands.device_block, "refuse the device's checks (403)"),
        ("unblock", commands.device_unblock, "serve the device again"),
        ("show", commands.device_show, "everything known about one device"),
        ("credentials", commands.device_credentials, "issue a new secret for Basic auth (shown once)"),
        ("retry", commands.device_retry, "offer releases that failed on the device again"),
        ("delete", commands.device_delete, "delete the device's record: assignment, credentials, history"),
    ):
        p = command(device, name, handler, text)
        p.add_argument("mac", metavar="MAC")

    p = command(sub, "devices", commands.devices, "the fleet, its version distribution and rollouts to watch")
    p.add_argument("--product", help="only this product's devices")
    p.add_argument(
        "--unassigned",
        action="store_true",
        help="only devices seen checking in but never assigned (with --product: those that asked for it)",
    )
    p.add_argument("--version", metavar="VERSION", help="only devices running this version")
    p.add_argument("--state", choices=DEVICE_STATES, help="only devices in this state (a device can be in several)")
    p.add_argument(
        "--seen-before",
        metavar="DURATION",
        help="only devices last seen longer ago than this, e.g. 2h, 3d (to the check heartbeat's resolution)",
    )
    p.add_argument("--seen-within", metavar="DURATION", help="only devices last seen at most this long ago, e.g. 30m")

    p = command(sub, "import", commands.import_mapping, "import a hand-written update server's MAC → version table")
    p.add_argument("file", metavar="FILE", help="PHP array ($db = array(...)), JSON {mac: version} or CSV mac,version")
    p.add_argument("--product", required=True, help="product the devices belong to")
    p.add_argument("--channel", help="channel (default: the product's default channel)")
    p.add_argument("--dry-run", action="store_true", help="print what would change and write nothing")

    p = command(sub, "audit", auditlog.run, auditlog.HELP, description=auditlog.DESCRIPTION)
    p.add_argument("--product", help="only this product's entries")
    p.add_argument("--since", metavar="WHEN", help=auditlog.SINCE_HELP)
    p.add_argument("--limit", type=int, default=auditlog.DEFAULT_LIMIT, metavar="N", help="at most N entries")

    p = command(sub, "explain", commands.explain, "dry run: what a device would get at its next check, and why")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--mode", choices=commands.EXPLAIN_MODES, default="sketch", help="the check's mode")
    return parser


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_failure(exc: BaseException, profile: str | None = None, endpoint: str | None = None) -> str:
    """One line for an AWS-side failure, saying what to do about it when we can tell."""
    from botocore import exceptions as bx

    for e in _chain(exc):
        if isinstance(e, bx.NoCredentialsError):
            return (
                "no AWS credentials found: pass --profile, set AWS_PROFILE, or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (any values work for the local stack)"
            )
        if isinstance(e, bx.PartialCredentialsError):
            return f"incomplete AWS credentials: {e}"
        if isinstance(e, bx.ProfileNotFound):
            return f"AWS profile {e.kwargs.get('profile', profile)!r} not found in your AWS config"
        if isinstance(e, bx.NoRegionError):
            return "no AWS region configured: pass --region or set AWS_REGION"
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
            where = endpoint or e.kwargs.get("endpoint_url") or "AWS"  # as the operator gave it
            hint = f"; is the local stack running? ({LOCAL_HINT})" if endpoint else ""
            return f"cannot reach {where}{hint}"
        if isinstance(e, bx.ClientError):
            error = e.response.get("Error", {})
            return f"AWS refused the request: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        if isinstance(e, bx.BotoCoreError):
            return f"AWS error: {e}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _endpoint(conn: Connection) -> str | None:
    try:
        return conn.endpoint_url
    except CliError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse already printed
        return done.code if isinstance(done.code, int) else 2
    options = vars(args)
    out = Output(sys.stdout, sys.stderr, format=options.get("output", "table"))
    handler: Handler = args.handler
    if out.format == "csv" and handler not in commands.CSV_COMMANDS:
        # Refused before the command runs: a change must not be made and then fail to print.
        out.error(f"--output csv is for the list commands ({commands.CSV_COMMAND_NAMES}); use --output json")
        return 2
    profile: str | None = options.get("profile")
    conn = Connection(
        options.get("stack_name") or os.environ.get("OTAFLEET_STACK") or DEFAULT_STACK,
        profile,
        options.get("region"),
        options.get("endpoint_url"),
    )
    # Tables fit a terminal; in a pipe or a file they keep every character.
    width = shutil.get_terminal_size().columns if out.stdout.isatty() else None
    token = TABLE_WIDTH.set(width)
    try:
        return handler(conn, args, out)
    except FleetError as err:
        out.error(err.message)
        return 1
    except CliError as err:
        out.error(err.message)
        return err.code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as err:
        if os.environ.get("OTAFLEET_DEBUG"):
            raise
        out.error(describe_failure(err, profile, _endpoint(conn)))
        return 1
    finally:
        TABLE_WIDTH.reset(token)


if __name__ == "__main__":
    sys.exit(main())
