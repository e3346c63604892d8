"""`otafleet-local` (`make run`): the whole otafleet service on this machine, no AWS account, no Docker.

See otafleet_local.stack for what runs. Ctrl-C (or SIGTERM) stops everything and exits 0; a port that
is taken is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from otafleet_local.lambdas import DEFAULT_CONCURRENCY
from otafleet_local.persist import StoreError
from otafleet_local.stack import CannotListen, LocalStack, StackConfig

PROG = "otafleet-local"
DATA_FOLDER = ".local-stack"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the otafleet stack locally: the HTTP API on the template's routes and handlers, "
        "an embedded AWS endpoint (moto) with the stack's tables and bucket, S3 uploads triggering the "
        "publish function, and demo data.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the HTTP API listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000; 0: any free port)")
    parser.add_argument("--aws-host", help="address the AWS endpoint listens on (default: --host)")
    parser.add_argument("--aws-port", type=int, default=4566, help="AWS endpoint port (default 4566; 0: any free)")
    public = parser.add_mutually_exclusive_group()
    public.add_argument(
        "--public-host",
        help="host name devices use to reach this machine, in ApiUrl and presigned URLs (e.g. 192.168.1.20)",
    )
    public.add_argument(
        "--public-url", help="base URL devices use for the AWS endpoint in presigned URLs (e.g. http://laptop:4566)"
    )
    parser.add_argument("--stack-name", default="otafleet", help="CloudFormation stack name to register (otafleet)")
    parser.add_argument("--region", help="region of the local resources (default us-east-1)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(DATA_FOLDER),
        metavar="DIR",
        help=f"folder that keeps the state (tables, buckets with object versions, queues) across restarts "
        f"(default {DATA_FOLDER} in the current directory)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start empty even if the data folder holds state (the old snapshot is kept as state.pickle.before-fresh)",
    )
    parser.add_argument(
        "--no-demo", dest="demo", action="store_false", help="no demo product, image and device in a new store"
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a function environment variable (repeatable), e.g. CATALOG_CACHE_SECONDS=30",
    )
    parser.add_argument(
        "--schedule-seconds",
        type=float,
        metavar="SECONDS",
        help="run scheduled functions (the rollout controller) every SECONDS instead of the template's rate "
        "(ControllerRateMinutes); 0: never (`otafleet rollout tick` runs it on demand)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"invocations of one function at once, like warm Lambda sandboxes (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--console-password",
        metavar="PASSWORD",
        help="the console user's (admin) password for this run (default: random, kept in the data folder's "
        "console-password)",
    )
    parser.add_argument("--ready-file", type=Path, help="write the stack's URLs and names as JSON here once ready")
    args = parser.parse_args(argv)
    for item in args.env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
    if args.concurrency < 1:
        parser.error("--concurrency: expected 1 or more")
    if args.schedule_seconds is not None and args.schedule_seconds < 0:
        parser.error("--schedule-seconds: expected 0 (no timers) or more")
    return args


def curl_lines(stack: LocalStack) -> tuple[str, str] | None:
    demo = stack.demo
    if demo is None:
        return None
    headers = [
        "User-Agent: ESP8266-http-Update",
        f"x-ESP8266-STA-MAC: {demo.device}",
        "x-ESP8266-free-space: 1044464",
        "x-ESP8266-chip-size: 4194304",
        "x-ESP8266-mode: sketch",
    ]
    base = "curl -0 -i " + " ".join(f"-H {shlex.quote(h)}" for h in headers)
    url = f"{stack.local_api_url}/update"
    # The first asks as a device running an older build: it is offered the release up to three times
    # (then counts as failed); the second as one that runs it.
    return (
        f"{base} -H {shlex.quote('x-ESP8266-version: 1.0.0')} {url}",
        f"{base} -H {shlex.quote(f'x-ESP8266-version: {demo.version}')} {url}",
    )


def banner(stack: LocalStack) -> str:
    lines = [
        f"otafleet local stack '{stack.config.stack_name}' ({stack.region}) is up",
        f"  API           {stack.api_url}",
        f"  AWS endpoint  {stack.aws_endpoint}   bucket {stack.bucket}, "
        f"tables {stack.devices_table} {stack.catalog_table}",
    ]
    if stack.public_aws_endpoint != stack.aws_endpoint:
        lines.append(f"  devices download from {stack.public_aws_endpoint}")
    if stack.config.data is not None:
        state = "restored from" if stack.restored else "new, kept in"
        lines.append(f"  state         {state} {stack.config.data.resolve()} (--fresh starts empty)")
    lines += [
        "",
        f"  export AWS_ENDPOINT_URL={stack.aws_endpoint} AWS_DEFAULT_REGION={stack.region}",
        "  (no AWS credentials? any will do: export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
    ]
    if stack.console is not None:
        lines.append(
            f"  console       user {stack.console.user}, password {stack.console.password} "
            f"(POST {stack.local_api_url}/console/login; /admin needs its token)"
        )
    for timer in stack.timers:
        every = f"{timer.seconds / 60:g} min" if timer.seconds >= 60 else f"{timer.seconds:g} s"
        lines.append(f"  {timer.schedule.function} runs every {every} (`otafleet rollout tick` runs it now)")
    missing = [f.logical_id for f in stack.functions.values() if not f.loaded]
    if missing:
        lines.append(f"  not loaded (see the log): {', '.join(missing)}")
    curls, demo = curl_lines(stack), stack.demo
    if curls is not None and demo is not None:
        state = f"release {demo.version}" if demo.registered else "NO release yet (see the log)"
        lines += [
            "",
            f"  demo device {demo.device} on {demo.product}/{demo.channel}, {state}:",
            f"  302  {curls[0]}",
            f"  304  {curls[1]}",
        ]
    lines += ["", "Ctrl-C to stop"]
    return "\n".join(lines)


def configure_logging(quiet: bool) -> None:
    """The stack's own lines on stderr (the handlers' JSON lines go to stdout, as in Lambda).

    The stack's loggers get their own handler and do not propagate: Powertools' Logger(service="otafleet")
    puts a filter on the root logger's handlers that drops every record whose logger name *contains*
    "otafleet" (its log deduplication), which would swallow `otafleet_local.*` records."""
    formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    level = logging.WARNING if quiet else logging.INFO
    for name in ("otafleet_local", "moto"):
        handler = logging.StreamHandler(sys.stderr)  # not the root's: Powertools filters that one
        handler.setFormatter(formatter)
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    root = logging.StreamHandler(sys.stderr)
    root.setFormatter(formatter)
    logging.basicConfig(level=logging.WARNING, handlers=[root])
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run, then leave at once. Everything is stopped and flushed by then; what
    is left is the interpreter freeing a large heap (moto, botocore models), which takes seconds
    here and is pointless at exit. For in-process use call run()."""
    code = run(argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.quiet)
    config = StackConfig(
        host=args.host,
        port=args.port,
        aws_host=args.aws_host,
        aws_port=args.aws_port,
        public_host=args.public_host,
        public_url=args.public_url,
        stack_name=args.stack_name,
        region=args.region,
        demo=args.demo,
        quiet=args.quiet,
        env=dict(item.split("=", 1) for item in args.env),
        schedule_seconds=args.schedule_seconds,
        concurrency=args.concurrency,
        data=args.data,
        fresh=args.fresh,
        console_password=args.console_password,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(config)
    try:
        try:
            stack.start()
        except (CannotListen, StoreError) as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        except Exception as error:  # one line, never a traceback
            logging.getLogger("otafleet_local").debug("start failed", exc_info=True)
            print(f"{PROG}: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        if stop.is_set():
            return 0
        print(banner(stack), flush=True)
        if args.ready_file:
            _write_ready(args.ready_file, stack.info())
        if stack.aws_host not in ("127.0.0.1", "::1", "localhost"):
            logging.getLogger("otafleet_local").warning(
                "the AWS endpoint on %s accepts any request without credentials: use it on a trusted network only",
                stack.aws_host,
            )
        while not stop.wait(0.5):
            pass
        print("stopping…", file=sys.stderr, flush=True)
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_ready(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
