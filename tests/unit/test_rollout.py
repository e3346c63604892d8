from __future__ import annotations

from otafleet.models import Kind
from otafleet.rollout import bucket, in_rollout


def macs(n: int) -> list[str]:
    return [":".join(f"{b:02X}" for b in (0x24, 0x0A, 0xC4, i >> 16 & 255, i >> 8 & 255, i & 255)) for i in range(n)]


def test_share_matches_percent() -> None:
    fleet = macs(5000)
    for percent in (1, 10, 50, 90):
        share = sum(in_rollout(m, "door", Kind.APP, "2.0.0", percent) for m in fleet) / len(fleet)
        assert abs(share - percent / 100) < 0.03, (percent, share)


def test_raising_percent_only_adds_devices() -> None:
    fleet = macs(3000)
    at = {p: {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.0.0", p)} for p in (5, 10, 25, 50, 100)}
    assert at[5] <= at[10] <= at[25] <= at[50] <= at[100] == set(fleet)


def test_bucket_is_stable_and_release_specific() -> None:
    assert bucket("24:0A:C4:00:00:01", "door", Kind.APP, "2.0.0") == bucket(
        "24:0A:C4:00:00:01", "door", Kind.APP, "2.0.0"
    )
    fleet = macs(2000)
    first = {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.0.0", 10)}
    second = {m for m in fleet if in_rollout(m, "door", Kind.APP, "2.1.0", 10)}
    assert first != second  # the same devices are not always the canaries


def test_zero_and_full() -> None:
    assert not any(in_rollout(m, "door", Kind.APP, "1", 0) for m in macs(500))
    assert all(in_rollout(m, "door", Kind.APP, "1", 100) for m in macs(500))
