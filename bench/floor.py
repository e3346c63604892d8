"""The floor of a warm update check: the bare boto3 calls its decision needs, nothing else.

The floor replays the very requests the handler made for the same outcome (recorded with hooks, so it
keeps up with the core's changes): a consistent GetItem of the device, the UpdateItem recording the
check when the check wrote one, and, depending on the outcome, a presigned URL (redirect) or the object's
bytes (inline).
Its clients are plain `boto3.client(...)` calls with the production settings of
`otafleet.storage.clients` written out here, so no otafleet code runs on the floor side.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.hooks import Recorder

# otafleet.storage.clients' configuration, spelled out (the floor must not import the core).
DYNAMODB_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 3,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
S3_CONFIG: dict[str, Any] = {
    "signature_version": "s3v4",
    "connect_timeout": 2,
    "read_timeout": 10,
    "retries": {"max_attempts": 3, "mode": "standard"},
    "s3": {"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
}


def clients(region: str) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    dynamodb = boto3.client("dynamodb", region_name=region, config=Config(**DYNAMODB_CONFIG))
    s3 = boto3.client("s3", region_name=region, config=Config(**S3_CONFIG))
    return dynamodb, s3


def check_floor(
    recorded: Recorder, *, devices_table: str, mac: str | None, region: str, expiry: int
) -> tuple[Callable[[], object], list[str]]:
    """A function making the bare calls for one check like the recorded one, and their names."""
    dynamodb, s3 = clients(region)
    steps: list[Callable[[], object]] = []
    names: list[str] = []
    if mac is not None:
        gets = [p for p in recorded.params_of("dynamodb", "GetItem") if p.get("TableName") == devices_table]
        get = gets[0] if gets else {"TableName": devices_table, "Key": {"mac": {"S": mac}}, "ConsistentRead": True}
        steps.append(partial(dynamodb.get_item, **get))
        names.append("GetItem")
        updates = [p for p in recorded.params_of("dynamodb", "UpdateItem") if p.get("TableName") == devices_table]
        if updates:  # a check that changed nothing wrote nothing (check_writes.py): neither does its floor
            steps.append(
                partial(
                    dynamodb.update_item, **_unconditional({k: v for k, v in updates[0].items() if k != "ReturnValues"})
                )
            )
            names.append("UpdateItem")
    for call in recorded.presigns():
        steps.append(partial(s3.generate_presigned_url, "get_object", Params=call.params, ExpiresIn=expiry))
        names.append("presign")
    for params in recorded.params_of("s3", "GetObject"):
        steps.append(partial(_read, s3, params))
        names.append("GetObject+read")

    def floor() -> object:
        result: object = None
        for step in steps:
            result = step()
        return result

    return floor, names


def _unconditional(update: dict[str, Any]) -> dict[str, Any]:
    """The recorded write without its condition (on the attempt's revision, which the first replay
    bumps), and without the placeholders only the condition used: replayable any number of times."""
    condition = update.pop("ConditionExpression", None)
    if condition is None:
        return update
    expression = update["UpdateExpression"]
    for key in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        kept = {k: v for k, v in update.get(key, {}).items() if re.search(re.escape(k) + r"(?![\w])", expression)}
        if kept:
            update[key] = kept
        else:
            update.pop(key, None)
    return update


def _read(s3: Any, params: dict[str, Any]) -> bytes:
    body: bytes = s3.get_object(**params)["Body"].read()
    return body
