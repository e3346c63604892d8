"""DynamoDB attribute-value conversion: boto3's own serializer (loaded lazily) for writes, a small reader
for reads.

Every check reads one device item, and boto3's TypeDeserializer (a method lookup and a dispatch per
attribute) was the largest share of the update function's own time on a warm `304`. `from_item` gives
exactly what TypeDeserializer gives — str, Decimal, bool, None, dict, list, set, and boto3's Binary for the
binary types — which tests/unit/test_dynamo_codec.py checks against boto3 on generated items.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

Item = dict[str, Any]


@lru_cache(maxsize=1)
def _serializer() -> Any:
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer()


def to_av(value: Any) -> Any:
    return _serializer().serialize(value)


def to_item(item: Item) -> dict[str, Any]:
    return {k: to_av(v) for k, v in item.items()}


def _binary(value: Any) -> Any:
    from boto3.dynamodb.types import Binary

    return Binary(value)


def from_av(av: dict[str, Any]) -> Any:
    """One attribute value, as TypeDeserializer.deserialize gives it."""
    for tag, value in av.items():  # exactly one entry
        if tag == "S":
            return value
        if tag == "N":
            return Decimal(value)
        if tag == "M":
            return {k: from_av(v) for k, v in value.items()}
        if tag == "BOOL":
            return value
        if tag == "NULL":
            return None
        if tag == "L":
            return [from_av(v) for v in value]
        if tag == "SS":
            return set(value)
        if tag == "NS":
            return {Decimal(v) for v in value}
        if tag == "B":
            return _binary(value)
        if tag == "BS":
            return {_binary(v) for v in value}
        raise TypeError(f"DynamoDB type {tag!r} is not supported")
    raise TypeError("an attribute value names no type")


def from_item(item: dict[str, Any]) -> Item:
    return {k: from_av(v) for k, v in item.items()}
