"""The audit table: one partition per product, entries in time order (items.audit_sk), expiring by TTL.

The functions only ever add entries (their IAM role allows PutItem and nothing else on the table); the
operators' CLI reads them. Who the operator is comes from STS here too, so that only storage talks to AWS.
"""

from __future__ import annotations

from typing import Any

from otafleet.config import Settings
from otafleet.models import AuditEntry
from otafleet.storage import clients
from otafleet.storage.dynamo import from_item, to_item
from otafleet.storage.errors import translated
from otafleet.storage.items import audit_from_item, audit_to_item


def audit_put(table: str, entry: AuditEntry) -> dict[str, Any]:
    """The Put of one entry, for a single call or as an item of a transaction (catalog.py's halts and
    stage moves). Unconditional: the key's random id never repeats, and a condition would need GetItem."""
    return {"TableName": table, "Item": to_item(audit_to_item(entry))}


class AuditStore:
    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.table = settings.audit_table
        self._settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = clients.dynamodb(self._settings)
        return self._client

    def put(self, entry: AuditEntry) -> None:
        with translated():
            self.client.put_item(**audit_put(self.table, entry))

    def entries(self, product: str | None, *, since: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """Newest first. One product: a Query of its partition from the newest back. All products: a Scan
        (the table holds operator actions and rollout transitions, small next to the devices), sorted here."""
        values: dict[str, Any] = {}
        if since is not None:
            values[":since"] = {"S": since}
        found: list[AuditEntry] = []
        with translated():
            if product is not None:
                kwargs: dict[str, Any] = {
                    "TableName": self.table,
                    "KeyConditionExpression": "product = :p" + (" AND sk >= :since" if since else ""),
                    "ExpressionAttributeValues": {**values, ":p": {"S": product}},
                    "ScanIndexForward": False,
                }
                for page in self.client.get_paginator("query").paginate(**kwargs):
                    found += [audit_from_item(from_item(i)) for i in page.get("Items", [])]
                    if len(found) >= limit:
                        break
            else:
                kwargs = {"TableName": self.table}
                if since is not None:
                    kwargs.update(FilterExpression="sk >= :since", ExpressionAttributeValues=values)
                for page in self.client.get_paginator("scan").paginate(**kwargs):
                    found += [audit_from_item(from_item(i)) for i in page.get("Items", [])]
        found.sort(key=lambda e: (e.at, e.id), reverse=True)
        return found[:limit]


def caller_identity(sts: Any) -> str:
    """The ARN of the principal `sts` (an STS client) signs as: who an operator's entries name."""
    with translated():
        return str(sts.get_caller_identity()["Arn"])


__all__ = ["AuditStore", "audit_put", "caller_identity"]
