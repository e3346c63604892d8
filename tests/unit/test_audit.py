"""The audit trail's entry model (audit.py): what an entry keeps, how `--since` reads, how entries are
keyed and stored (storage/items.py), and that a failed write never raises into the action."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from otafleet import audit
from otafleet.audit import Auditor, InvalidSince
from otafleet.models import AuditEntry, Kind, Plan, Track, TrackState
from otafleet.storage.errors import StorageUnavailable
from otafleet.storage.items import audit_from_item, audit_sk, audit_to_item

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("30m", "2026-12-02T11:30:00.000Z"),
        ("2h", "2026-12-02T10:00:00.000Z"),
        ("3d", "2026-11-29T12:00:00.000Z"),
        ("1w", "2026-11-25T12:00:00.000Z"),
        ("90s", "2026-12-02T11:58:30.000Z"),
        ("1.5h", "2026-12-02T10:30:00.000Z"),
        (" 2H ", "2026-12-02T10:00:00.000Z"),
        ("2026-12-01T08:00:00Z", "2026-12-01T08:00:00.000Z"),
        ("2026-12-01T08:00:00", "2026-12-01T08:00:00.000Z"),  # no zone: UTC
        ("2026-12-01T09:00:00+01:00", "2026-12-01T08:00:00.000Z"),
        ("2026-12-01", "2026-12-01T00:00:00.000Z"),
    ],
)
def test_since_is_a_duration_back_from_now_or_a_time(since: str, expected: str) -> None:
    assert audit.parse_since(since, NOW) == expected


@pytest.mark.parametrize("since", ["", "2", "h", "-2h", "2 hours", "yesterday", "2026-13-01", "1y"])
def test_since_refuses_what_it_cannot_read_with_a_message_saying_what_it_takes(since: str) -> None:
    with pytest.raises(InvalidSince, match="expected a duration such as 30m, 2h"):
        audit.parse_since(since, NOW)


def test_stamps_sort_in_time_order_whatever_format_the_clock_gave() -> None:
    times = ["2026-12-02T12:00:00Z", "2026-12-02T12:00:00.5+00:00", "2026-12-02T13:00:01+01:00"]
    stamps = [audit.stamp(audit.parse_time(t)) for t in times]
    assert stamps == ["2026-12-02T12:00:00.000Z", "2026-12-02T12:00:00.500Z", "2026-12-02T12:00:01.000Z"]
    assert sorted(stamps) == stamps


def test_an_entry_keeps_only_the_fields_that_changed_and_expires_after_the_retention() -> None:
    before = Track(version="1.0.0", percent=10, successes=4, failures=1, rev=3)
    after = Track(version="1.0.0", percent=50, state=TrackState.PAUSED, successes=9, rev=4)
    e = audit.entry(
        "door",
        "arn:aws:iam::123456789012:user/alice",
        "channel.set",
        audit.track_target("stable", Kind.APP, "1.0.0"),
        audit.track_fields(before),
        audit.track_fields(after),
        at="2026-12-02T12:00:00Z",
        retention_days=365,
    )
    # counters and revisions move under every verdict: never part of an entry
    assert (e.before, e.after) == ({"percent": 10, "state": "active"}, {"percent": 50, "state": "paused"})
    assert e.target == {"channel": "stable", "kind": "app", "version": "1.0.0"}
    assert e.at == "2026-12-02T12:00:00.000Z" and len(e.id) == 12
    assert e.expires_at == int(datetime(2027, 12, 2, 12, 0, tzinfo=UTC).timestamp())


def test_a_new_field_is_none_before_and_an_unassigned_device_has_a_partition() -> None:
    e = audit.entry(
        None, "a", "device.block", {"device": "X"}, {}, {"blocked": True}, at="2026-12-02T12:00:00Z", retention_days=1
    )
    assert (e.product, e.before, e.after) == (audit.NO_PRODUCT, {"blocked": None}, {"blocked": True})


def test_a_plan_is_shown_as_plain_json() -> None:
    plan = Plan(stages=(10, 50, 100), soak_seconds=3600, min_success=0.9, stage=1, stage_started="2026-12-02T12:00:00Z")
    fields = audit.track_fields(Track(version="2.0.0", plan=plan))
    assert fields["plan"]["stages"] == [10, 50, 100] and fields["state"] == "active"


def test_items_round_trip_and_sort_by_time() -> None:
    e = AuditEntry(
        product="door",
        at="2026-12-02T12:00:00.000Z",
        id="abcdef012345",
        actor="controller",
        action="rollout.advance",
        target={"channel": "stable", "kind": "app"},
        before={"percent": 10, "max_failure_rate": 0.2},
        after={"percent": 50, "max_failure_rate": 0.25},
        expires_at=1_800_000_000,
    )
    item = audit_to_item(e)
    assert (item["product"], item["sk"], item["expires_at"]) == (
        "door",
        "2026-12-02T12:00:00.000Z#abcdef012345",
        e.expires_at,
    )
    assert audit_from_item(item) == e
    assert audit_sk("2026-12-02T12:00:00.000Z", "z") < audit_sk("2026-12-02T12:00:00.001Z", "a")


class FailingStore:
    def __init__(self) -> None:
        self.puts = 0

    def put(self, entry: AuditEntry) -> None:
        self.puts += 1
        raise StorageUnavailable("ThrottlingException")


def test_an_entry_that_cannot_be_written_is_counted_and_reported_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    monkeypatch.setattr(audit, "count", lambda name, *a, **k: counted.append(name))
    heard: list[tuple[str, str]] = []
    asked: list[int] = []

    def who() -> str:
        asked.append(1)
        return "arn:aws:iam::123456789012:user/alice"

    auditor = Auditor(FailingStore(), who, 365, on_failure=lambda e, err: heard.append((e.action, err)))  # type: ignore[arg-type]
    assert auditor.record("door", "device.block", {"device": "X"}, {"blocked": False}, {"blocked": True}) is None
    assert auditor.record("door", "device.unblock", {"device": "X"}, {"blocked": True}, {"blocked": False}) is None
    assert counted == ["AuditWriteFailures", "AuditWriteFailures"]
    assert heard == [("device.block", "ThrottlingException"), ("device.unblock", "ThrottlingException")]
    assert asked == [1]  # the principal is asked for once per process
