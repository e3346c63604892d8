"""Benchmarks of the update service against floors measured in the same run (`make bench`).

Every benchmark times our code and the least the same job can cost (the bare AWS calls, a bare
boto3 process, plain hashing, a trivial HTTP server) in one run, and reports the ratio: the machines
these run on are noisy, so ratios are what runs are compared by. Nothing here asserts on timing.

Importing this package makes the process safe to benchmark in before anything imports boto3: fake
credentials, no profile or config file, no endpoint from the caller's environment, the production
defaults for the catalog cache, tracing and logging, and the repository's code on `sys.path`.
AWS itself is never contacted: in-process benchmarks run under moto's `mock_aws`, subprocesses talk
to a moto server on 127.0.0.1, and `bench.common.loopback_only()` refuses any other connection.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"
LOCAL = REPO / "local"
TESTS = REPO / "tests"
REGION = "eu-west-1"

# The environment a deployed update function has (template.yaml), with fake credentials.
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "DEVICES_TABLE": "otafleet-devices",
    "CATALOG_TABLE": "otafleet-catalog",
    "FIRMWARE_BUCKET": "otafleet-firmware",
    "PRESIGN_EXPIRY_SECONDS": "300",
    "POWERTOOLS_SERVICE_NAME": "otafleet",
    "POWERTOOLS_METRICS_NAMESPACE": "otafleet",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
    "SAM_CLI_TELEMETRY": "0",
}
# Never inherited: anything that could point boto3 at a real account or endpoint, and settings whose
# production default the benchmarks rely on (CATALOG_CACHE_SECONDS: 30 s, as deployed).
SCRUBBED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "CATALOG_CACHE_SECONDS",
    "FAILURE_OFFER_LIMIT",
    "MAX_INLINE_BYTES",
    "PUBLIC_S3_ENDPOINT",
)

for _name in SCRUBBED:
    os.environ.pop(_name, None)
os.environ.update(ENVIRONMENT)

for _path in (FUNCTIONS, LOCAL, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
