"""Settings, read once from the environment into a typed object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

# Lambda's response payload limit is 6 MB; an inline image travels base64-encoded
# (4/3 larger) inside a JSON envelope, so this is the largest body that fits with room to spare.
LAMBDA_INLINE_LIMIT = 4_400_000


@dataclass(frozen=True)
class Settings:
    """Everything a function is configured with, read once from its environment (settings())."""

    devices_table: str
    catalog_table: str
    firmware_bucket: str
    region: str
    presign_expiry_seconds: int = 300
    catalog_cache_seconds: float = 30.0
    max_inline_bytes: int = LAMBDA_INLINE_LIMIT
    failure_offer_limit: int = 3
    # Open enrollment: at most this many new devices per product and hour; an enrolled device's verdicts
    # count for rollouts once it is this old and has installed a release; unassigned records expire.
    enroll_per_hour: int = 60
    enroll_trust_hours: float = 24.0
    unassigned_ttl_days: float = 30.0
    # A device handed an image is silent once it has not checked in for max(factor x its usual interval,
    # floor), or for `unlearned` hours while its interval is not learned yet (rhythm.py).
    silence_factor: float = 3.0
    silence_floor_minutes: float = 30.0
    silence_unlearned_hours: float = 24.0
    # A check that changes nothing on the device record is written anyway once the record is this old
    # (check_writes.py); 0 writes every check. Silence is judged at this resolution (rhythm.py).
    check_heartbeat_minutes: float = 60.0
    # Share of the checks that changed nothing whose decision line is logged anyway (the others' lines are
    # skipped; their metrics are exact).
    log_sample_rate: float = 0.01
    # Only for the local stack: the base URL devices should use to reach the S3 endpoint
    # (e.g. http://192.168.1.20:4566 so a real ESP on the LAN can follow the redirect).
    public_s3_endpoint: str | None = None
    endpoint_url: str | None = None
    # SNS topic that rollout notices (halted, advanced, completed) go to; None: they are only logged and
    # counted (the local stack, or a stack deployed without AlarmTopicArn).
    alarm_topic_arn: str | None = None
    # The audit trail of operator actions and automatic rollout transitions (audit.py); entries expire
    # (DynamoDB TTL) this many days after they were written.
    audit_table: str = "otafleet-audit"
    audit_retention_days: float = 365.0


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def load_settings() -> Settings:
    return Settings(
        devices_table=os.environ.get("DEVICES_TABLE", "otafleet-devices"),
        catalog_table=os.environ.get("CATALOG_TABLE", "otafleet-catalog"),
        firmware_bucket=os.environ.get("FIRMWARE_BUCKET", "otafleet-firmware"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        presign_expiry_seconds=_int("PRESIGN_EXPIRY_SECONDS", 300),
        catalog_cache_seconds=_float("CATALOG_CACHE_SECONDS", 30.0),
        max_inline_bytes=min(_int("MAX_INLINE_BYTES", LAMBDA_INLINE_LIMIT), LAMBDA_INLINE_LIMIT),
        failure_offer_limit=_int("FAILURE_OFFER_LIMIT", 3),
        enroll_per_hour=_int("ENROLL_PER_HOUR", 60),
        enroll_trust_hours=_float("ENROLL_TRUST_HOURS", 24.0),
        unassigned_ttl_days=_float("UNASSIGNED_TTL_DAYS", 30.0),
        silence_factor=_float("SILENCE_FACTOR", 3.0),
        silence_floor_minutes=_float("SILENCE_FLOOR_MINUTES", 30.0),
        silence_unlearned_hours=_float("SILENCE_UNLEARNED_HOURS", 24.0),
        check_heartbeat_minutes=max(0.0, _float("CHECK_HEARTBEAT_MINUTES", 60.0)),
        log_sample_rate=min(1.0, max(0.0, _float("LOG_SAMPLE_RATE", 0.01))),
        public_s3_endpoint=os.environ.get("PUBLIC_S3_ENDPOINT") or None,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        alarm_topic_arn=os.environ.get("ALARM_TOPIC_ARN") or None,
        audit_table=os.environ.get("AUDIT_TABLE", "otafleet-audit"),
        audit_retention_days=_float("AUDIT_RETENTION_DAYS", 365.0),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()
