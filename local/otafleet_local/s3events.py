"""S3 -> Lambda on the local stack: the template's S3 event sources, delivered through moto.

On AWS, S3 invokes the publish function asynchronously with an S3 event when an object is created.
moto cannot run a Lambda function in this process, but it does implement bucket notifications to SQS.
So for every function with `Type: S3` events the local stack:

- creates an SQS queue in moto and puts a notification configuration on the bucket with the same
  events (`s3:ObjectCreated:*`) and key filters (prefix/suffix rules) as the template's events;
- runs a poller thread that receives each message, completes the S3 event (below), invokes the real
  handler with it and deletes the message once the handler returned. A failing invocation is retried
  like Lambda's asynchronous invocation (two retries, here after a few seconds rather than minutes),
  then dropped with a log line.

What moto (5.2) puts in the message, compared with what S3 sends to Lambda:

- The same envelope: `{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion",
  "eventTime", "eventName": "ObjectCreated:Put", "s3": {"s3SchemaVersion": "1.0", "configurationId",
  "bucket": {"name", "arn"}, "object": {"key", "size", "eTag"}}}]}`.
- `s3.object.versionId` is missing, even on a versioned bucket. S3 sends it, and the publish function
  binds the release to that exact version. Filled in here from the bucket's object versions: the newest
  version of the key with the event's ETag (so a later overwrite cannot be mistaken for this upload).
- `s3.object.key` is encoded with `quote_plus` including `/` (`firmware%2Fdemo%2F1.0.1.bin`); S3 keeps
  `/` as is (`firmware/demo/1.0.1.bin`) and encodes the rest the same way (space as `+`). Both decode
  to the same key with `unquote_plus`; re-encoded here the way S3 does.
- `s3.object.sequencer`, `userIdentity`, `requestParameters`, `responseElements` and
  `s3.bucket.ownerIdentity` are missing; filled in with local placeholder values of the real shape.
- When the notification configuration is set, moto (like S3 for SQS destinations) first sends an
  `{"Service": "Amazon S3", "Event": "s3:TestEvent", …}` message. S3 never invokes Lambda with it:
  the poller drops it.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from otafleet_local import template
from otafleet_local.lambdas import LocalFunction

log = logging.getLogger("otafleet_local.s3events")

MAX_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
RETRY_DELAY_SECONDS = 2
# Short polls, this often: a long poll would wait inside the embedded AWS, which handles one request
# at a time (otafleet_local.embedded). Also how quickly the poller notices stop().
POLL_SECONDS = 0.2
_sequence = itertools.count(int(time.time() * 1000) << 16)


@dataclass(frozen=True)
class S3Trigger:
    name: str  # the event's name in the template, used as the notification's configurationId
    function: str  # function logical id
    bucket: str  # bucket logical id
    events: tuple[str, ...]
    rules: tuple[tuple[str, str], ...]  # (prefix|suffix, value)


def triggers(path: Path = template.TEMPLATE) -> list[S3Trigger]:
    """Every S3 -> Lambda notification of the template: the bucket `NotificationConfiguration` that SAM
    generates from the functions' `Type: S3` events (one per event, in the translated template)."""
    functions = set(template.functions(path))
    found = []
    for bucket, resource in template.generated("AWS::S3::Bucket", path).items():
        notifications = (resource.get("Properties") or {}).get("NotificationConfiguration") or {}
        for index, config in enumerate(notifications.get("LambdaConfigurations") or []):
            function = template.function_of(config.get("Function"))
            if function not in functions:
                target = config.get("Function")
                raise ValueError(f"{bucket}: a notification invokes {target!r}, no function of the template")
            rules = (((config.get("Filter") or {}).get("S3Key") or {}).get("Rules")) or []
            found.append(
                S3Trigger(
                    # CloudFormation names the configuration itself; locally: the function and its position.
                    name=f"{function}-{index + 1}",
                    function=function,
                    bucket=bucket,
                    events=(str(config["Event"]),),
                    rules=tuple((str(r["Name"]).lower(), str(r["Value"])) for r in rules),
                )
            )
    return found


def configure(
    found: list[S3Trigger], bucket_names: dict[str, str], queue_prefix: str, s3: Any, sqs: Any
) -> dict[str, str]:
    """Create one queue per triggered function and the buckets' notification configurations.
    Returns function logical id -> queue URL."""
    queues: dict[str, str] = {}
    arns: dict[str, str] = {}
    for function in sorted({t.function for t in found}):
        url = sqs.create_queue(
            QueueName=f"{queue_prefix}-{function}-s3-events",
            Attributes={"VisibilityTimeout": "70", "MessageRetentionPeriod": "86400"},
        )["QueueUrl"]
        queues[function] = url
        arns[function] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    per_bucket: dict[str, list[dict[str, Any]]] = {}
    for trigger in found:
        config: dict[str, Any] = {
            "Id": trigger.name,
            "QueueArn": arns[trigger.function],
            "Events": list(trigger.events),
        }
        if trigger.rules:
            config["Filter"] = {"Key": {"FilterRules": [{"Name": n, "Value": v} for n, v in trigger.rules]}}
        per_bucket.setdefault(bucket_names[trigger.bucket], []).append(config)
    for bucket, configs in per_bucket.items():
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
        )
    return queues


def complete_record(record: dict[str, Any], s3: Any) -> dict[str, Any]:
    """The record as S3 sends it to Lambda, from moto's notification (see the module docstring)."""
    record = json.loads(json.dumps(record))  # a deep copy
    s3_part = record.setdefault("s3", {})
    bucket = s3_part.setdefault("bucket", {})
    obj = s3_part.setdefault("object", {})
    key = unquote_plus(str(obj.get("key", "")))
    obj["key"] = quote_plus(key, safe="/")
    if "versionId" not in obj and bucket.get("name"):
        version = _version_of(s3, str(bucket["name"]), key, str(obj.get("eTag", "")))
        if version:
            obj["versionId"] = version
    obj.setdefault("sequencer", f"{next(_sequence):018X}")
    bucket.setdefault("ownerIdentity", {"principalId": "LOCAL"})
    bucket.setdefault("arn", f"arn:aws:s3:::{bucket.get('name', '')}")
    record.setdefault("userIdentity", {"principalId": "AWS:LOCAL"})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    record.setdefault(
        "responseElements",
        {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": uuid.uuid4().hex},
    )
    return record


def _version_of(s3: Any, bucket: str, key: str, etag: str) -> str | None:
    """The newest version of `key` whose ETag is the event's; None on an unversioned bucket."""
    try:
        out = s3.list_object_versions(Bucket=bucket, Prefix=key)
    except Exception as error:  # the event still goes out, as it would without this field
        log.warning("cannot list versions of s3://%s/%s: %s", bucket, key, error)
        return None
    versions = [v for v in out.get("Versions", []) if v.get("Key") == key]
    matching = [v for v in versions if str(v.get("ETag", "")).strip('"') == etag] or versions
    matching.sort(key=lambda v: str(v.get("LastModified", "")), reverse=True)
    version = matching[0].get("VersionId") if matching else None
    return str(version) if version and version != "null" else None


class S3EventPoller:
    """Receives one function's S3 notifications from its queue and invokes the function with them."""

    def __init__(self, function: LocalFunction, queue_url: str, sqs: Any, s3: Any) -> None:
        self.function = function
        self.queue_url = queue_url
        self.sqs = sqs
        self.s3 = s3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"s3-events-{function.logical_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = POLL_SECONDS + 3) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    AttributeNames=["ApproximateReceiveCount"],
                )
            except Exception as error:  # keep polling: a hiccup of the endpoint is not the end
                if self._stop.is_set():
                    return
                log.warning("receiving S3 events for %s failed: %s", self.function.logical_id, error)
                self._stop.wait(1)
                continue
            if not out.get("Messages") and self._stop.wait(POLL_SECONDS):
                return
            for message in out.get("Messages", []):
                if self._stop.is_set():
                    return  # not deleted: it becomes visible again, as an unprocessed event would
                self.process(message)

    def process(self, message: dict[str, Any]) -> None:
        try:
            body = json.loads(message["Body"])
        except (KeyError, ValueError):
            log.warning("dropping a message that is not an S3 event: %.200s", message.get("Body"))
            self._delete(message)
            return
        if not isinstance(body, dict) or "Records" not in body:
            if isinstance(body, dict) and body.get("Event") != "s3:TestEvent":
                log.warning("dropping a message that is not an S3 event: %.200s", message.get("Body"))
            self._delete(message)
            return
        event = {"Records": [complete_record(r, self.s3) for r in body["Records"]]}
        keys = ", ".join(unquote_plus(str(r["s3"]["object"].get("key"))) for r in event["Records"])
        attempt = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        try:
            result = self.function.invoke(event)
        except Exception:
            if attempt >= MAX_ATTEMPTS:
                log.exception("%s failed on %s (attempt %d): event dropped", self.function.logical_id, keys, attempt)
                self._delete(message)
            else:
                log.exception("%s failed on %s (attempt %d): will retry", self.function.logical_id, keys, attempt)
                self._retry_later(message, attempt)
            return
        log.info("%s handled %s: %s", self.function.logical_id, keys, json.dumps(result, default=str)[:500])
        self._delete(message)

    def _delete(self, message: dict[str, Any]) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        except Exception as error:  # at-least-once delivery: a redelivery is harmless
            log.warning("could not delete an S3 event message: %s", error)

    def _retry_later(self, message: dict[str, Any], attempt: int) -> None:
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=RETRY_DELAY_SECONDS * attempt,
            )
        except Exception as error:  # it comes back after the queue's visibility timeout anyway
            log.warning("could not schedule a retry: %s", error)
