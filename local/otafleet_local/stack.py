"""The local stack in one object: `LocalStack(StackConfig(...)).start()` … `.stop()`.

What `start()` brings up, in this process:

1. moto's `ThreadedMotoServer` as the AWS endpoint (default http://127.0.0.1:4566), and the same
   backends answering the functions' boto3 clients in-process, without HTTP (`otafleet_local.embedded`);
2. the stack's tables and bucket on it, from template.yaml (`otafleet_local.resources`);
3. the template's functions, imported the way Lambda does, after the environment the template gives
   them is set with local values (`otafleet_local.lambdas`);
4. S3 notifications of the bucket to SQS and a poller that invokes the publish function with the
   S3 event (`otafleet_local.s3events`);
5. the HTTP API on the template's routes (default http://127.0.0.1:3000, `otafleet_local.api`);
6. a CloudFormation stack in moto whose outputs are the template's outputs with local values
   (`otafleet_local.discovery`), so `AWS_ENDPOINT_URL=… otafleet …` finds it as it finds a deployed one;
7. the demo data (`otafleet_local.demo`), unless disabled or the state was restored (it is seeded once);
8. a timer per schedule event of the template (the rollout controller, `otafleet_local.schedules`).

With a data folder (`StackConfig.data`; the command's default is `.local-stack/`), the embedded AWS's
state is restored from it before anything else and snapshotted into it while running and at stop
(`otafleet_local.persist`); without one, everything lives in memory only.

Port 0 picks free ports (the chosen ones are on the object afterwards). The process environment gets
fake AWS credentials and the region, and loses any `AWS_ENDPOINT_URL` (the functions' clients are
answered in-process); `stop()` restores it.

Users with Docker can also run `sam local start-api --env-vars events/env.local.json` (or
`sam local invoke … --env-vars events/env.local.json`) against this stack's AWS endpoint: that file sets
the functions' `AWS_ENDPOINT_URL` to `http://host.docker.internal:4566`. The containers must reach the
endpoint, so start this stack with `--aws-host 0.0.0.0` (on Linux also give `sam local` the option
`--add-host host.docker.internal:host-gateway`), and use `--no-demo` or not as you like: the tables,
bucket and S3 -> publish wiring are the same either way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from otafleet_local import console_auth, discovery, embedded, lambdas, persist, s3events, schedules, template
from otafleet_local.api import ApiServer, routes_for
from otafleet_local.intrinsics import NAME_PROPERTIES, Resolver

if TYPE_CHECKING:
    from otafleet.config import Settings
    from otafleet_local.demo import DemoData

log = logging.getLogger("otafleet_local")

DEFAULT_REGION = "us-east-1"
DEFAULT_NAMES = {
    "DevicesTable": "otafleet-devices",
    "CatalogTable": "otafleet-catalog",
    "AuditTable": "otafleet-audit",
    "FirmwareBucket": "otafleet-firmware",
}
# Logical ids of the resources the local stack plays, by the settings field that names them.
SETTINGS_FIELDS = {
    "devices_table": "DevicesTable",
    "catalog_table": "CatalogTable",
    "audit_table": "AuditTable",
    "firmware_bucket": "FirmwareBucket",
}
ENV_FILE = template.ROOT / "events" / "env.local.json"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Never inherited: real sessions, profiles and endpoints must not reach a local stack (or AWS).
SCRUBBED = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
# Local values that differ from the template's defaults: metrics (CloudWatch EMF lines on stdout,
# observability.py) are off because nothing collects them here. `--env NAME=VALUE` overrides these.
# The catalog cache keeps the template's default: the stack empties it at every write (_start).
LOCAL_ENV: dict[str, str] = {}
LOCAL_EXTRA_ENV = {"POWERTOOLS_METRICS_DISABLED": "true"}


class CannotListen(Exception):
    """A server of the stack cannot listen where asked; the message says what to do about it."""

    def __init__(self, host: str, port: int, option: str, error: OSError | None = None) -> None:
        if error is None or error.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is in use; pass {option} to pick another (0: any free port)"
        elif error.errno == errno.EACCES:
            message = f"not allowed to listen on port {port} on {host}; pass {option} with a port above 1023"
        else:
            message = f"cannot listen on {host} port {port}: {error.strerror or error}"
        super().__init__(message)
        self.host, self.port, self.option = host, port, option


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    aws_host: str | None = None  # default: the API's host
    aws_port: int = 4566
    public_host: str | None = None  # host name devices use for the API and presigned URLs
    public_url: str | None = None  # base URL devices use for the AWS endpoint (presigned URLs)
    stack_name: str = "otafleet"
    region: str | None = None  # default: events/env.local.json's, else us-east-1
    demo: bool = True
    quiet: bool = False
    env: dict[str, str] = field(default_factory=dict)  # function environment overrides
    # Seconds between runs of every scheduled function instead of the template's rate; 0: no timers.
    schedule_seconds: float | None = None
    concurrency: int = lambdas.DEFAULT_CONCURRENCY  # invocations of one function at once
    data: Path | None = None  # data folder to keep the state in; None: memory only
    fresh: bool = False  # start empty even when the data folder holds state
    console_password: str | None = None  # the console user's; None: random, kept in the data folder
    template_path: Path = template.TEMPLATE
    env_file: Path = ENV_FILE


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reachable(bind_host: str) -> str:
    """The address a client on this machine uses for a server bound to `bind_host`."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def _check_port(host: str, port: int, option: str) -> None:
    """Fail early and clearly when a port is taken (moto's server thread would just die)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves do
        try:
            probe.bind((host, port))
        except OSError as error:
            raise CannotListen(host, port, option, error) from None


class _MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose start() returns (and reports) when binding fails, instead of hanging,
    and whose requests go through the embedded AWS's lock (`embedded.LockedApp`)."""

    bind_error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            # As ThreadedMotoServer._server_entry, with the application wrapped.
            app = embedded.LockedApp(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True)
            self._server_ready_event.set()
            self._server.serve_forever()
        except BaseException as error:  # handed to the thread waiting in start()
            self.bind_error = error
            self._server_ready_event.set()


def _env_file_values(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {
        str(k): {str(n): str(v) for n, v in (vals or {}).items()} for k, vals in data.items() if isinstance(vals, dict)
    }


def local_names(stack_name: str, env_file: Path, path: Path = template.TEMPLATE) -> dict[str, str]:
    """Logical id -> local physical name: tables and bucket as events/env.local.json names them (when it
    does), else the defaults; functions `<stack>-<LogicalId>`; the HTTP API `local`."""
    names = dict(DEFAULT_NAMES)
    data = template.load(path)
    resources = data.get("Resources") or {}
    name_exprs = {
        logical_id: (res.get("Properties") or {}).get(prop)
        for logical_id, res in resources.items()
        for prop in NAME_PROPERTIES
        if (res.get("Properties") or {}).get(prop) is not None
    }
    file_values = _env_file_values(env_file)
    for logical_id in template.resources("AWS::Serverless::Function", path):
        names[logical_id] = f"{stack_name}-{logical_id}"
        local = file_values.get(logical_id) or file_values.get("Parameters") or {}
        variables = (template.function_properties(logical_id, path).get("Environment") or {}).get("Variables") or {}
        for var, expr in variables.items():
            if var not in local or not local[var]:
                continue
            for target, name_expr in name_exprs.items():
                if expr == {"Ref": target} or (isinstance(expr, dict) and expr == name_expr):
                    names[target] = local[var]
    for logical_id, res in resources.items():
        if res.get("Type") == "AWS::Serverless::HttpApi":
            names.setdefault(logical_id, "local")
    return names


class LocalStack:
    """The local stack; `start()` returns once everything (demo data included) is ready.

    The handlers run in this interpreter and are imported once: use one LocalStack per process (tests
    start `otafleet-local` as a subprocess for that reason)."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.region = self.config.region or self._file_region() or DEFAULT_REGION
        self.names = local_names(self.config.stack_name, self.config.env_file, self.config.template_path)
        self.functions: dict[str, lambdas.LocalFunction] = {}
        self.demo: DemoData | None = None
        self.api_port = self.config.port
        self.aws_port = self.config.aws_port
        self._moto: _MotoServer | None = None
        self._api: ApiServer | None = None
        self._api_thread: threading.Thread | None = None
        self._pollers: list[s3events.S3EventPoller] = []
        self.timers: list[schedules.ScheduleTimer] = []
        self._saved_env: dict[str, str | None] = {}
        self._store: persist.Store | None = None
        self.console: console_auth.ConsoleAuth | None = None
        self.restored = False  # whether the state came from the data folder (not new, not fresh)
        self._started = False

    # --- where things are -------------------------------------------------------------------------

    @property
    def aws_host(self) -> str:
        return self.config.aws_host or self.config.host

    @property
    def public_host(self) -> str:
        return self.config.public_host or _reachable(self.config.host)

    @property
    def api_url(self) -> str:
        """The API's base URL for devices and tools (the stack's ApiUrl output)."""
        return f"http://{_url_host(self.public_host)}:{self.api_port}"

    @property
    def local_api_url(self) -> str:
        return f"http://{_url_host(_reachable(self.config.host))}:{self.api_port}"

    @property
    def aws_endpoint(self) -> str:
        """The AWS endpoint for clients on this machine (AWS_ENDPOINT_URL)."""
        return f"http://{_url_host(_reachable(self.aws_host))}:{self.aws_port}"

    @property
    def public_aws_endpoint(self) -> str:
        """Base URL of presigned URLs (PUBLIC_S3_ENDPOINT): what a device follows a redirect to."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = self.config.public_host or _reachable(self.aws_host)
        return f"http://{_url_host(host)}:{self.aws_port}"

    @property
    def bucket(self) -> str:
        return self.names["FirmwareBucket"]

    @property
    def devices_table(self) -> str:
        return self.names["DevicesTable"]

    @property
    def catalog_table(self) -> str:
        return self.names["CatalogTable"]

    @property
    def audit_table(self) -> str:
        return self.names["AuditTable"]

    def settings(self) -> Settings:
        """An otafleet Settings for this stack (catalog cache off), for tools and tests."""
        from otafleet.config import Settings

        return Settings(
            devices_table=self.devices_table,
            catalog_table=self.catalog_table,
            audit_table=self.audit_table,
            firmware_bucket=self.bucket,
            region=self.region,
            catalog_cache_seconds=0.0,
            public_s3_endpoint=self.public_aws_endpoint,
            endpoint_url=self.aws_endpoint,
        )

    def client(self, service: str) -> Any:
        """A boto3 client for this stack's AWS endpoint (fake credentials, the stack's region)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name=self.region,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
        )

    def info(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "local_api_url": self.local_api_url,
            "aws_endpoint": self.aws_endpoint,
            "public_aws_endpoint": self.public_aws_endpoint,
            "stack_name": self.config.stack_name,
            "region": self.region,
            "bucket": self.bucket,
            "devices_table": self.devices_table,
            "catalog_table": self.catalog_table,
            "audit_table": self.audit_table,
            "functions": {k: f.loaded for k, f in self.functions.items()},
            "schedules": {f"{t.schedule.function}.{t.schedule.name}": t.seconds for t in self.timers},
            "data": None if self.config.data is None else str(self.config.data.resolve()),
            "console": None
            if self.console is None
            else {"user": self.console.user, "login_url": f"{self.local_api_url}{console_auth.LOGIN_PATH}"},
            "restored": self.restored,
            "demo": None
            if self.demo is None
            else {
                "product": self.demo.product,
                "channel": self.demo.channel,
                "version": self.demo.version,
                "device": self.demo.device,
                "registered": self.demo.registered,
            },
        }

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        if self._started:
            return self
        cfg = self.config
        try:
            self._api = ApiServer((cfg.host, cfg.port), routes_for([], {}))
        except OSError as error:
            raise CannotListen(cfg.host, cfg.port, "--port", error) from None
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self._api is not None
        cfg = self.config
        self.api_port = self._api.server_address[1]
        _check_port(self.aws_host, cfg.aws_port, "--aws-port")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
        # Before any boto3 session exists: sessions take botocore's built-in handlers when created.
        embedded.install()
        # The functions cache catalogs (CatalogCacheSeconds) as on AWS; every write the embedded AWS
        # answers (CLI, publish, a check's counters) makes them read again, so a change shows at once.
        from otafleet.storage.catalog import forget_cached

        embedded.WRITES.listen(forget_cached)
        if cfg.data is not None:
            store = persist.Store(cfg.data, fresh=cfg.fresh)
            self.restored = store.open()  # into the still empty backends, before anything reaches them
            self._store = store

        moto = _MotoServer(ip_address=self.aws_host, port=cfg.aws_port, verbose=False)
        moto.start()
        if moto.bind_error is not None:
            if isinstance(moto.bind_error, OSError):
                raise CannotListen(self.aws_host, cfg.aws_port, "--aws-port", moto.bind_error)
            raise RuntimeError(f"the AWS endpoint did not start: {moto.bind_error}")
        self._moto = moto
        self.aws_port = int(moto.get_host_and_port()[1])

        resolver = Resolver(
            template=template.load(cfg.template_path),
            names=self.names,
            region=self.region,
            stack_name=cfg.stack_name,
        )
        self.functions = lambdas.from_template(resolver, self.names, cfg.concurrency, cfg.template_path)
        self._set_environment()

        from otafleet_local import resources  # imports otafleet: only once the environment is set

        resources.create(self.settings(), self.client("dynamodb"), self.client("s3"))
        for function in self.functions.values():
            function.load()

        triggers = s3events.triggers(cfg.template_path)
        bucket_names = {t.bucket: self.names[t.bucket] for t in triggers}
        queues = s3events.configure(
            triggers, bucket_names, f"{cfg.stack_name}-local", self.client("s3"), self.client("sqs")
        )
        for logical_id, queue_url in queues.items():
            poller = s3events.S3EventPoller(
                self.functions[logical_id], queue_url, self.client("sqs"), self.client("s3")
            )
            poller.start()
            self._pollers.append(poller)

        if cfg.schedule_seconds != 0:
            for schedule in schedules.schedules(resolver, cfg.template_path):
                timer = schedules.ScheduleTimer(self.functions[schedule.function], schedule, cfg.schedule_seconds)
                timer.start()
                self.timers.append(timer)

        # The console's sign-in and the JWT authorizer's stand-in: their key and password live beside the
        # state in the data folder (or in memory without one).
        self.console = console_auth.ConsoleAuth.open(cfg.data, cfg.console_password)
        self._api.console = self.console
        self._api.router = routes_for(
            template.routes(cfg.template_path), self.functions, template.route_authorizers(cfg.template_path)
        )

        outputs = discovery.local_outputs(resolver, {"ApiUrl": self.api_url}, cfg.template_path)
        discovery.register(self.client("cloudformation"), cfg.stack_name, outputs)

        if cfg.demo and self.restored:
            from otafleet_local import demo

            self.demo = demo.existing(self.settings(), self.client("dynamodb"))
        elif cfg.demo:
            from otafleet_local import demo

            publish = [f for f in self.functions.values() if f.logical_id in queues]
            self.demo = demo.seed(
                self.settings(),
                self.client("dynamodb"),
                self.client("s3"),
                publish_ready=bool(publish) and all(f.loaded for f in publish),
            )

        if self._store is not None:
            self._store.start()
        # Last: the API port accepts connections only once the stack (its outputs, the demo) is ready.
        self._api.activate()
        self._api_thread = threading.Thread(
            target=self._api.serve_forever, kwargs={"poll_interval": 0.1}, name="otafleet-api", daemon=True
        )
        self._api_thread.start()

    def _set_environment(self) -> None:
        env: dict[str, str] = {}
        for function in self.functions.values():
            for name, value in function.environment.items():
                if name in env and env[name] != value:
                    log.warning("%s differs between functions; the local stack shares one environment", name)
                env[name] = value
        for name, value in LOCAL_ENV.items():
            if name in env:
                env[name] = value
        env.update(LOCAL_EXTRA_ENV)
        if self.config.quiet:
            env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        env.update(self.config.env)
        env.update(
            {
                **FAKE_CREDENTIALS,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true",
                "PUBLIC_S3_ENDPOINT": self.public_aws_endpoint,
            }
        )
        # No endpoint for the functions' clients: unset, they address AWS's host names, which the
        # embedded AWS answers in-process (an endpoint would send them over HTTP to the moto server).
        env.pop("AWS_ENDPOINT_URL", None)
        scrub = [*SCRUBBED, "AWS_ENDPOINT_URL", *(k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_"))]
        for function in self.functions.values():
            function.environment = {
                **{k: v for k, v in function.environment.items() if k not in scrub},
                **{k: env[k] for k in function.environment if k in env},
            }
        for name in [*env, *scrub]:
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in scrub:
            os.environ.pop(name, None)
        os.environ.update(env)

    def stop(self) -> None:
        if self._api is not None:
            if self._api_thread is not None:
                self._api.shutdown()
                self._api_thread.join(5)
            self._api.server_close()
            self._api = None
        for poller in self._pollers:
            poller.stop()
        self._pollers.clear()
        for timer in self.timers:
            timer.stop()
        self.timers.clear()
        if self._moto is not None:
            try:
                self._moto.stop()
            except Exception as error:  # shutting down anyway
                log.debug("stopping the AWS endpoint: %s", error)
            self._moto = None
        if self._store is not None:
            try:
                self._store.close()  # the last snapshot, once nothing can write any more
            except Exception:  # stopping anyway; the previous snapshot is intact
                log.exception("the last snapshot to %s failed", self._store.path)
            self._store = None
        embedded.uninstall()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        self._started = False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _file_region(self) -> str | None:
        for values in _env_file_values(self.config.env_file).values():
            region = values.get("AWS_REGION") or values.get("AWS_DEFAULT_REGION")
            if region:
                return region
        return None
