"""Create the stack's tables and bucket on an AWS endpoint (moto) from template.yaml's definitions."""

from __future__ import annotations

from typing import Any

from otafleet.config import Settings
from otafleet_local import template

# Logical ids in template.yaml and the settings field that names each resource.
TABLES = {"DevicesTable": "devices_table", "CatalogTable": "catalog_table", "AuditTable": "audit_table"}
BUCKET = "FirmwareBucket"
_TABLE_KEYS = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "LocalSecondaryIndexes")


def table_definition(logical_id: str) -> dict[str, Any]:
    props = template.resources("AWS::DynamoDB::Table")[logical_id]["Properties"]
    return {k: props[k] for k in _TABLE_KEYS if k in props}


def create(settings: Settings, dynamodb: Any, s3: Any) -> None:
    existing = set(dynamodb.list_tables().get("TableNames", []))
    for logical_id, field in TABLES.items():
        name = getattr(settings, field)
        if name in existing:
            continue
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **table_definition(logical_id))
        ttl = template.resources("AWS::DynamoDB::Table")[logical_id]["Properties"].get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if settings.firmware_bucket not in buckets:
        kwargs: dict[str, Any] = {"Bucket": settings.firmware_bucket}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        s3.create_bucket(**kwargs)
    bucket_props = template.resources("AWS::S3::Bucket")[BUCKET].get("Properties", {})
    if bucket_props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=settings.firmware_bucket, VersioningConfiguration={"Status": "Enabled"})
