"""The cheaper transaction backups (support.moto_transactions) keep moto's all-or-nothing behaviour."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from otafleet.storage import clients
from support.world import World


def _update(table: str, key: dict[str, Any], value: str, condition: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": "SET v = :v",
        "ExpressionAttributeValues": {":v": {"S": value}},
    }
    if condition:
        op["ConditionExpression"] = condition
    return {"Update": op}


def test_a_failed_transaction_changes_nothing_and_a_good_one_everything(world: World) -> None:
    db = clients.dynamodb(world.settings)
    devices, catalog = world.settings.devices_table, world.settings.catalog_table
    a, b = {"mac": {"S": "A"}}, {"mac": {"S": "B"}}
    row = {"pk": {"S": "P#x"}, "sk": {"S": "C#y"}}
    for key, table in ((a, devices), (b, devices), (row, catalog)):
        db.update_item(**_update(table, key, "before")["Update"])
    new = {"Put": {"TableName": devices, "Item": {"mac": {"S": "C"}, "v": {"S": "new"}}}}
    with pytest.raises(ClientError, match="TransactionCanceled"):
        db.transact_write_items(
            TransactItems=[
                _update(devices, a, "after"),
                new,
                _update(catalog, row, "after"),
                _update(devices, b, "after", condition="attribute_not_exists(v)"),
            ]
        )

    def get(table: str, key: dict[str, Any]) -> Any:
        return db.get_item(TableName=table, Key=key).get("Item")

    assert get(devices, a)["v"]["S"] == "before" and get(catalog, row)["v"]["S"] == "before"
    assert get(devices, {"mac": {"S": "C"}}) is None
    db.transact_write_items(TransactItems=[_update(devices, a, "after"), new, _update(catalog, row, "after")])
    assert get(devices, a)["v"]["S"] == "after" and get(catalog, row)["v"]["S"] == "after"
    assert get(devices, {"mac": {"S": "C"}})["v"]["S"] == "new"
