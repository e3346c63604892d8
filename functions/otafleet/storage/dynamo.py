"""DynamoDB attribute-value conversion (boto3's own serializer, loaded lazily)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

Item = dict[str, Any]


@lru_cache(maxsize=1)
def _codec() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def to_av(value: Any) -> Any:
    return _codec()[0].serialize(value)


def to_item(item: Item) -> dict[str, Any]:
    return {k: to_av(v) for k, v in item.items()}


def from_item(item: dict[str, Any]) -> Item:
    deserialize = _codec()[1].deserialize
    return {k: deserialize(v) for k, v in item.items()}
