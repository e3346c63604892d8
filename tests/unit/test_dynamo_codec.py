"""The storage layer's own attribute-value reader gives what boto3's TypeDeserializer gives, for every
type DynamoDB returns, so replacing it on the check's hot path changed no value anywhere."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from otafleet.storage.dynamo import from_av, from_item, to_item

# DynamoDB numbers: up to 38 significant digits, magnitude 1e-130 .. 1e125.
numbers = st.one_of(
    st.integers(min_value=-(10**37), max_value=10**37),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
)
scalars = st.one_of(
    st.text(max_size=20),
    numbers,
    st.booleans(),
    st.none(),
    st.binary(min_size=1, max_size=8).map(Binary),
    st.frozensets(st.text(min_size=1, max_size=5), min_size=1, max_size=4).map(set),
    st.frozensets(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=4).map(set),
    st.frozensets(st.binary(min_size=1, max_size=4).map(Binary), min_size=1, max_size=3).map(set),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
items = st.dictionaries(st.text(min_size=1, max_size=12), values, min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(items)
def test_reads_what_boto3_reads(item: dict[str, Any]) -> None:
    wire = to_item(item)
    boto3s = TypeDeserializer()
    expected = {k: boto3s.deserialize(v) for k, v in wire.items()}
    got = from_item(wire)
    assert got == expected
    assert _types(got) == _types(expected)


def _types(value: Any) -> Any:
    """The value's shape with each leaf's type, so Decimal('1') and True cannot pass for each other."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    if isinstance(value, set):
        return sorted(type(v).__name__ for v in value)
    return type(value).__name__


def test_numbers_are_decimals_as_boto3_gives_them() -> None:
    assert from_av({"N": "3"}) == Decimal(3) and isinstance(from_av({"N": "3"}), Decimal)
    assert from_item(TypeSerializer().serialize({"a": 1})["M"]) == {"a": Decimal(1)}


def test_an_unknown_type_is_refused_not_guessed() -> None:
    with pytest.raises(TypeError):
        from_av({"Q": "x"})
    with pytest.raises(TypeError):
        from_av({})
