"""Cheaper backups for moto's DynamoDB transactions, so fleet simulations run in seconds.

moto runs TransactWriteItems with its own code, after backing up every table the transaction names with
`copy.deepcopy` so it can restore them when an item fails its condition. That copy is the whole table:
O(devices) per transaction, which made a 500-device simulation spend minutes copying. This keeps moto's
transaction code and its rollback exactly as they are and hands it a backup that deep-copies only the
items the transaction names — the only ones it can change — sharing the rest. The rollback behaviour is
tested in tests/integration/test_moto_transactions.py.
"""

from __future__ import annotations

import copy
import types
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table


def _keys(transact_items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    keys: dict[str, list[dict[str, Any]]] = {}
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        keys.setdefault(op.get("TableName", ""), []).append(op.get("Key") or op.get("Item") or {})
    return keys


def _backup(table: Table, keys: list[dict[str, Any]]) -> Table:
    snapshot = copy.copy(table)
    if table.range_key_attr is None:
        snapshot.items = defaultdict(dict, table.items)
    else:
        snapshot.items = defaultdict(dict, {h: dict(r) for h, r in table.items.items()})
    for key in keys:
        if table.hash_key_attr not in key:
            continue
        h = DynamoType(key[table.hash_key_attr])
        if h not in table.items:
            continue
        if table.range_key_attr is None:
            snapshot.items[h] = copy.deepcopy(table.items[h])
        elif table.range_key_attr in key:
            r = DynamoType(key[table.range_key_attr])
            if r in table.items[h]:
                snapshot.items[h][r] = copy.deepcopy(table.items[h][r])
    return snapshot


@contextmanager
def item_level_backups() -> Iterator[None]:
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        keys = _keys(transact_items)

        def deepcopy(obj: Any, memo: Any = None) -> Any:
            if isinstance(obj, Table):
                return _backup(obj, keys.get(obj.name, []))
            return copy.deepcopy(obj, memo)

        module_copy = models.copy  # type: ignore[attr-defined]
        models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)  # type: ignore[attr-defined,assignment]
        try:
            original(self, transact_items)
        finally:
            models.copy = module_copy  # type: ignore[attr-defined]

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        models.DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]
