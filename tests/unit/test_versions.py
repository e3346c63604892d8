from __future__ import annotations

import pytest

from otafleet.versions import compare, is_downgrade


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9", "1.10"),
        ("v1.6.0", "v1.11.0"),
        ("1.6.0", "v1.11.0"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0-rc.2"),
        ("1.2", "1.2.1"),
        ("2.0.0", "10.0.0"),
        ("v1.2.0", "v1.2.0-3-gabc1234"),
        ("v1.2.0-3-gabc1234", "v1.2.0-12-gdef5678"),
        ("v1.2.0-12-gdef5678", "v1.3.0"),
        ("DOOR-7-g14f53a19", "DOOR-12-g0123abcd"),
    ],
)
def test_order(older: str, newer: str) -> None:
    assert compare(older, newer) == -1
    assert compare(newer, older) == 1


@pytest.mark.parametrize(("a", "b"), [("1.2", "1.2.0"), ("v1.2.0", "1.2.0"), ("1.0.0+build.5", "1.0.0")])
def test_equal_in_order(a: str, b: str) -> None:
    assert compare(a, b) == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("DOOR-7-g14f53a19", "WINDOW-9-g14f53a19"),
        ("banana", "apple"),
        ("nightly", "1.0.0"),
        ("DOOR-7-gaaaa", "DOOR-7-gbbbb"),
    ],
)
def test_unorderable(a: str, b: str) -> None:
    assert compare(a, b) is None


def test_downgrade_only_when_known_older() -> None:
    assert is_downgrade("1.10.0", "1.9.0")
    assert not is_downgrade("1.9.0", "1.10.0")
    assert not is_downgrade(None, "1.0.0")
    assert not is_downgrade("nightly", "1.0.0")
    assert not is_downgrade("1.0.0", "1.0.0")
