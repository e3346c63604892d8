"""Finding the stack: one path for AWS and the local stack.

Both expose the same CloudFormation outputs (`ApiUrl`, `FirmwareBucketName`, `DevicesTableName`,
`CatalogTableName`, `AuditTableName`, `Region`): a deployed stack because template.yaml declares them, the local stack
because it registers a stack of that name on its embedded endpoint. The AWS endpoint decides which one
answers: `--endpoint-url`, else `AWS_ENDPOINT_URL`, else AWS. It is resolved once (Connection) and passed
to every client explicitly, the service's stores' included (Settings.endpoint_url), so that the option
reaches them as the environment variable does.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from otafleet.audit import AuditEntry, Auditor
from otafleet.config import Settings, load_settings
from otafleet.controller import Controller
from otafleet.fleet import Fleet
from otafleet.service import UpdateService
from otafleet.storage.audit import AuditStore, caller_identity
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore

DEFAULT_STACK = "otafleet"
OUTPUTS = ("ApiUrl", "FirmwareBucketName", "DevicesTableName", "CatalogTableName", "AuditTableName", "Region")
# The local stack's port is its own setting (make run --aws-port), so the hint names no port: make run
# prints the endpoint to use.
LOCAL_HINT = (
    "start the local stack with make run and pass the AWS endpoint it prints as --endpoint-url URL "
    "(or AWS_ENDPOINT_URL)"
)
# Any credentials satisfy the local stack's embedded endpoint; these are used only when none are set.
LOCAL_CREDENTIALS = ("otafleet-local", "otafleet-local")


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Stack:
    name: str
    api_url: str
    bucket: str
    devices_table: str
    catalog_table: str
    audit_table: str
    region: str
    endpoint_url: str | None

    @property
    def local(self) -> bool:
        return is_loopback(self.endpoint_url)


def endpoint_url(option: str | None = None) -> str | None:
    """The AWS endpoint in use: --endpoint-url, else AWS_ENDPOINT_URL, else None (AWS itself)."""
    url = option or os.environ.get("AWS_ENDPOINT_URL") or None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            source = "--endpoint-url" if option else "AWS_ENDPOINT_URL"
            raise CliError(f"{source}: not an endpoint URL: {url!r} (expected http://HOST:PORT or https://HOST)")
    return url


def is_loopback(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_config(**extra: Any) -> Any:
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}, **extra)


def make_session(profile: str | None, region: str | None, endpoint: str | None = None) -> Any:
    """A boto3 session for --profile/--region. With no region configured anywhere, the local stack's
    endpoint gets us-east-1; with no credentials, it gets placeholder ones (it accepts any)."""
    import boto3

    region = region or os.environ.get("AWS_REGION") or None
    session = boto3.session.Session(profile_name=profile, region_name=region)
    local = is_loopback(endpoint_url(endpoint))
    if session.region_name is None:
        if not local:
            raise CliError(
                "no AWS region configured: pass --region, set AWS_REGION, or set a region in your AWS profile"
            )
        session = boto3.session.Session(profile_name=profile, region_name="us-east-1")
    if local and session.get_credentials() is None:
        key, secret = LOCAL_CREDENTIALS
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=session.region_name
        )
    return session


def describe(session: Any, name: str, endpoint: str | None = None) -> Stack:
    from botocore.exceptions import ClientError

    endpoint = endpoint_url(endpoint)
    cfn = session.client("cloudformation", endpoint_url=endpoint, config=client_config())
    try:
        stacks = cfn.describe_stacks(StackName=name).get("Stacks", [])
    except ClientError as err:
        error = err.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            stacks = []
        else:
            raise CliError(f"cannot read stack {name!r}: {error.get('Code')}: {error.get('Message')}") from None
    if not stacks:
        where = f"on {endpoint}" if endpoint else f"in region {session.region_name}"
        raise CliError(
            f"stack {name!r} not found {where}; deploy it with sam deploy (or pass --stack-name/--region), "
            f"or {LOCAL_HINT}"
        )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs", [])}
    missing = [key for key in OUTPUTS if not outputs.get(key)]
    if missing:
        raise CliError(
            f"stack {name!r} has no output {', '.join(missing)}: is it an otafleet stack? (redeploy template.yaml)"
        )
    return Stack(
        name=name,
        api_url=outputs["ApiUrl"].rstrip("/"),
        bucket=outputs["FirmwareBucketName"],
        devices_table=outputs["DevicesTableName"],
        catalog_table=outputs["CatalogTableName"],
        audit_table=outputs["AuditTableName"],
        region=outputs["Region"],
        endpoint_url=endpoint,
    )


def settings_for(stack: Stack) -> Settings:
    """The service's settings pointed at the stack's resources; operators always read fresh data."""
    return replace(
        load_settings(),
        devices_table=stack.devices_table,
        catalog_table=stack.catalog_table,
        audit_table=stack.audit_table,
        firmware_bucket=stack.bucket,
        region=stack.region,
        catalog_cache_seconds=0.0,
        endpoint_url=stack.endpoint_url,
    )


class Connection:
    """The stack and the clients, stores and services on it, each made when first needed."""

    def __init__(self, stack_name: str, profile: str | None, region: str | None, endpoint: str | None = None) -> None:
        self.stack_name = stack_name
        self.profile = profile
        self.region = region
        self.endpoint = endpoint  # --endpoint-url; endpoint_url() falls back to AWS_ENDPOINT_URL

    @cached_property
    def endpoint_url(self) -> str | None:
        return endpoint_url(self.endpoint)

    @cached_property
    def session(self) -> Any:
        return make_session(self.profile, self.region, self.endpoint_url)

    @cached_property
    def stack(self) -> Stack:
        return describe(self.session, self.stack_name, self.endpoint_url)

    @cached_property
    def settings(self) -> Settings:
        return settings_for(self.stack)

    @cached_property
    def dynamodb(self) -> Any:
        return self.session.client(
            "dynamodb", region_name=self.stack.region, endpoint_url=self.stack.endpoint_url, config=client_config()
        )

    @cached_property
    def s3(self) -> Any:
        style = "path" if self.stack.endpoint_url else "virtual"
        return self.session.client(
            "s3",
            region_name=self.stack.region,
            endpoint_url=self.stack.endpoint_url,
            config=client_config(signature_version="s3v4", s3={"addressing_style": style}),
        )

    @cached_property
    def devices(self) -> DeviceStore:
        return DeviceStore(self.settings, client=self.dynamodb)

    @cached_property
    def catalog(self) -> CatalogStore:
        return CatalogStore(self.settings, client=self.dynamodb)

    def identity(self) -> str:
        """Who this process's audit entries name: the IAM principal, asked of STS once, at the first entry.
        Should STS not answer, the action still happens and its entry says so."""
        from otafleet.storage.errors import StorageUnavailable

        sts = self.session.client("sts", region_name=self.stack.region, config=client_config())
        try:
            return caller_identity(sts)
        except StorageUnavailable as fault:
            return f"unknown (GetCallerIdentity failed: {fault})"

    @cached_property
    def auditor(self) -> Auditor:
        return Auditor(
            AuditStore(self.settings, client=self.dynamodb),
            actor=self.identity,
            retention_days=self.settings.audit_retention_days,
            on_failure=audit_not_written,
        )

    @cached_property
    def fleet(self) -> Fleet:
        return Fleet(self.devices, self.catalog, auditor=self.auditor)

    @cached_property
    def service(self) -> UpdateService:
        return UpdateService(self.settings, self.devices, self.catalog, BlobStore(self.settings))

    @cached_property
    def controller(self) -> Controller:
        return Controller(self.settings, self.devices, self.catalog)


def audit_not_written(entry: AuditEntry, error: str) -> None:
    """Tell the operator: the action is done and stays done, but the trail misses it."""
    sys.stderr.write(
        f"otafleet: warning: {entry.action} was done, but its audit entry could not be written ({error}); "
        "the failure is logged and counted (AuditWriteFailures)\n"
    )
    sys.stderr.flush()
