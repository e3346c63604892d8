"""boto3 clients, created once per process and only when first needed (cold starts stay short).

The clients are thread-safe and shared; creating them is not: boto3.client() uses boto3's default
session, and a session used from two threads at once can fail half-initialised (KeyError on a
component). One Lambda sandbox never runs two invocations at once, but the local stack runs several in
one process, so creation is serialised here. A rare duplicate from two first uses at once is harmless.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from otafleet.config import Settings

_creating = threading.Lock()


@lru_cache(maxsize=4)
def dynamodb(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    # Devices retry at their next scheduled check; failing fast beats holding the Lambda.
    config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 3, "mode": "standard"})
    with _creating:
        # The endpoint explicitly (None: AWS, or what boto3 finds itself): the operator CLI's --endpoint-url
        # reaches these clients only through settings, not the environment.
        return boto3.client("dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config)


def s3_endpoint(settings: Settings, *, public: bool = False) -> str | None:
    """The S3 endpoint a client uses (None: AWS's own); `public`: the one presigned URLs name."""
    return settings.public_s3_endpoint if public and settings.public_s3_endpoint else settings.endpoint_url


@lru_cache(maxsize=4)
def s3(settings: Settings, *, public: bool = False) -> Any:
    """`public=True` gives the client whose presigned URLs devices follow."""
    import boto3
    from botocore.config import Config

    endpoint = s3_endpoint(settings, public=public)
    local = bool(endpoint)
    config = Config(
        signature_version="s3v4",
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 3, "mode": "standard"},
        # Virtual-host style on the regional endpoint on AWS; path style on a local endpoint, whose
        # host name cannot take the bucket as a subdomain.
        s3={"addressing_style": "path" if local else "virtual", "us_east_1_regional_endpoint": "regional"},
    )
    with _creating:
        return boto3.client("s3", region_name=settings.region, endpoint_url=endpoint, config=config)


@lru_cache(maxsize=4)
def sns(settings: Settings) -> Any:
    """Only rollout notices use it, a few times a day at most: it is created at the first one, never at a
    cold start (storage/notifications.py)."""
    import boto3
    from botocore.config import Config

    # A notice can be published from inside a device's check (the check whose verdict halted a rollout),
    # under the update function's 10 s timeout: a hung SNS costs that check at most 2 x (1 + 2) s, and the
    # transition is written already whatever the publish does.
    config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2, "mode": "standard"})
    with _creating:
        return boto3.client("sns", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config)
