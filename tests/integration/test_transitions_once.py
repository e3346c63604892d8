"""Every transition counts once: two checks of one device in flight, a check racing an operator, a
duplicate verdict, and a fault at each step of a transition.

"In flight" is replayed deterministically: the second check decides on the device record as it was
before the first one wrote (what two Lambda invocations reading at the same moment see), then writes.
Its write is conditional on the attempt it read, so it loses, decides again on fresh data and answers
as the later check should. This tests the code's conditions against DynamoDB's conditional-write
contract (as moto implements it, one request at a time) rather than moto's thread-safety.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from otafleet.fleet import Fleet
from otafleet.models import AttemptState, Device, Kind, TrackState
from otafleet.service import UpdateService
from otafleet.storage import clients
from otafleet.storage.audit import AuditStore
from otafleet.storage.devices import DeviceStore
from otafleet.storage.errors import StorageUnavailable
from support.devices import esp8266_headers
from support.world import World

MAC = "5C:CF:7F:00:00:31"


@pytest.fixture
def door(world: World) -> World:
    return world.rolling_out(MAC, enroll=True)


def stale_reads(service: UpdateService, snapshot: Device | None) -> Callable[[], None]:
    """Make the service's next device read return `snapshot` (as read before another check wrote)."""
    real = service.devices.get
    pending = [snapshot]

    def get(mac: str) -> Device | None:
        return pending.pop() if pending else real(mac)

    service.devices.get = get  # type: ignore[method-assign]
    return lambda: setattr(service.devices, "get", real)


def status(service: UpdateService, **kw: Any) -> int:
    return service.check(esp8266_headers(MAC, **kw)).status


def counts(world: World) -> tuple[int, int, int]:
    channel = world.catalog.get_channel("door", "stable")
    assert channel is not None
    t = channel.tracks[Kind.APP]
    return t.successes, t.failures, t.unknowns


def test_two_checks_in_flight_after_an_install_count_one_success(door: World) -> None:
    service = door.service()
    assert status(service, version="1.0.0") == 302
    before_install = door.devices.get(MAC)
    assert status(service, version="1.1.0") == 304
    stale_reads(service, before_install)
    assert status(service, version="1.1.0") == 304  # decided "installed" too, lost, decided again
    assert counts(door) == (1, 0, 0)
    device = door.devices.get(MAC)
    # The check that lost decided again on the installed record: it changed nothing, so it is not recorded.
    assert device is not None and device.installs == 1 and device.checks == 2


def test_two_checks_in_flight_before_a_failure_count_one_failure(door: World) -> None:
    service = door.service()
    for _ in range(3):
        assert status(service, version="1.0.0") == 302
    before_verdict = door.devices.get(MAC)
    assert status(service, version="1.0.0") == 304
    stale_reads(service, before_verdict)
    assert status(service, version="1.0.0") == 304
    assert counts(door) == (0, 1, 0)


def test_two_first_offers_in_flight_start_one_attempt(door: World) -> None:
    service = door.service()
    never_offered = door.devices.get(MAC)
    assert status(service, version="1.0.0") == 302
    stale_reads(service, never_offered)
    assert status(service, version="1.0.0") == 302  # its new attempt lost; counted as the second offer
    device = door.devices.get(MAC)
    assert device is not None
    attempt = device.attempts[Kind.APP]
    assert (attempt.offers, attempt.state, device.checks) == (2, AttemptState.OFFERED, 2)


def test_an_enrollment_racing_device_assign_keeps_the_operators_assignment(door: World) -> None:
    door.channel("door", "beta", app="1.0.0")
    service = door.service()
    newcomer = "5C:CF:7F:00:00:99"
    unknown = door.devices.get(newcomer)
    Fleet(door.devices, door.catalog).assign(newcomer, "door", "beta")
    stale_reads(service, unknown)
    assert service.check(esp8266_headers(newcomer, version="0.9"), product="door").status == 302
    device = door.devices.get(newcomer)
    assert device is not None and (device.channel, device.enrolled_at) == ("beta", None)


def test_a_repeat_offer_racing_device_retry_is_served(door: World) -> None:
    service = door.service()
    assert status(service, version="1.0.0") == 302
    offered = door.devices.get(MAC)
    Fleet(door.devices, door.catalog).retry(MAC)  # clears the attempt the check below decided on
    stale_reads(service, offered)
    assert status(service, version="1.0.0") == 302  # was a 503: the repeat offer's write found no offer
    device = door.devices.get(MAC)
    assert device is not None and device.attempts[Kind.APP].offers == 1


def test_an_enrollment_over_the_hourly_quota_is_refused_and_remembered(door: World) -> None:
    settings = replace(door.settings, enroll_per_hour=2)
    service = UpdateService(settings, DeviceStore(settings), door.catalog, door.blobs)
    macs = [f"02:00:00:00:01:{i:02X}" for i in range(4)]
    answers = [service.check(esp8266_headers(mac), product="door") for mac in macs]
    assert [a.status for a in answers] == [302, 302, 404, 404]
    assert answers[2].headers["X-Otafleet-Reason"] == "enroll-rate-limited"
    late = door.devices.get(macs[3])
    assert late is not None and not late.assigned and late.seen_product == "door"


# --- faults at each step of a verdict ------------------------------------------------------------


class Faults:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
        self.monkeypatch, self.client = monkeypatch, client

    def once(self, method: str, where: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Fail the next call of `method` (the next one whose arguments `where` picks)."""
        real = getattr(self.client, method)
        state = {"done": False}

        def failing(*args: Any, **kwargs: Any) -> Any:
            if not state["done"] and (where is None or where(kwargs)):
                state["done"] = True
                raise StorageUnavailable(f"injected fault in {method}")
            return real(*args, **kwargs)

        self.monkeypatch.setattr(self.client, method, failing)


@pytest.fixture
def faults(door: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    yield Faults(monkeypatch, clients.dynamodb(door.settings))


@pytest.mark.parametrize("method", ["get_item", "query", "transact_write_items"])
def test_a_fault_at_any_step_of_a_verdict_leaves_no_half_state_and_the_retry_counts_once(
    door: World, faults: Faults, method: str
) -> None:
    service = door.service()
    status(service, version="1.0.0")
    before = door.devices.get(MAC)
    service.catalog.invalidate()
    faults.once(method)
    assert status(service, version="1.1.0") == 503
    after = door.devices.get(MAC)
    assert after is not None and before is not None
    assert (after.attempts, after.checks, counts(door)) == (before.attempts, before.checks, (0, 0, 0))
    assert status(service, version="1.1.0") == 304
    assert status(service, version="1.1.0") == 304
    assert counts(door) == (1, 0, 0)


def test_a_fault_while_halting_leaves_the_rollout_halted_for_devices_and_a_later_check_writes_it(
    door: World, faults: Faults
) -> None:
    service = door.service()
    for _ in range(3):
        status(service, version="1.0.0")
    # the halt's write: a transaction with its audit entry (the verdict is a transaction of its own)
    audit_table = door.settings.audit_table
    faults.once("transact_write_items", lambda kw: any(audit_table in json.dumps(i) for i in kw["TransactItems"]))
    assert status(service, version="1.0.0") == 304  # failed: 1 of 1 over 50 %; the halt write failed
    assert AuditStore(door.settings).entries("door") == []  # nor its entry
    channel = door.catalog.get_channel("door", "stable")
    assert channel is not None and channel.tracks[Kind.APP].state is TrackState.ACTIVE
    # Devices see it halted at once: another device on 1.0.0 is not offered 1.1.0.
    other = "5C:CF:7F:00:00:32"
    door.device(other, "door")
    assert service.check(esp8266_headers(other, version="1.0.0")).status == 304
    channel = door.catalog.get_channel("door", "stable")
    assert channel is not None and channel.tracks[Kind.APP].state is TrackState.HALTED
    assert [e.action for e in AuditStore(door.settings).entries("door")] == ["rollout.halt"]


# --- a device counts once per rollout --------------------------------------------------------------


def test_retry_then_install_replaces_the_counted_failure(door: World) -> None:
    door.channel("door", app="1.1.0", previous="1.0.0", min_devices=100)  # no halt in the way
    service = door.service()
    for _ in range(4):
        status(service, version="1.0.0")
    assert counts(door) == (0, 1, 0)
    Fleet(door.devices, door.catalog).retry(MAC)
    assert status(service, version="1.0.0") == 302
    assert status(service, version="1.1.0") == 304
    assert counts(door) == (1, 0, 0)


def test_a_device_alternating_versions_counts_once(door: World) -> None:
    door.channel("door", app="1.1.0", previous="1.0.0", min_devices=100)
    service = door.service()
    for _ in range(10):
        status(service, version="1.0.0")
        status(service, version="1.1.0")
    ok, fail, _ = counts(door)
    assert ok + fail == 1


def test_a_transaction_lost_to_another_transaction_is_decided_again(
    door: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TransactWriteItems cancelled with TransactionConflict (a verdict burst on one channel item)."""
    from botocore.exceptions import ClientError

    service = door.service()
    status(service, version="1.0.0")
    client = clients.dynamodb(door.settings)
    real = client.transact_write_items
    calls = {"n": 0}

    def conflicting(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )
        return real(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", conflicting)
    assert status(service, version="1.1.0") == 304
    assert calls["n"] == 2 and counts(door) == (1, 0, 0)


def test_a_stale_cache_never_halts_a_rollout_an_operator_resumed(door: World) -> None:
    """Another sandbox's cached catalog still shows the old, over-threshold counts."""
    fleet = Fleet(door.devices, door.catalog)
    first, second = door.service(), UpdateService.create(replace(door.settings, catalog_cache_seconds=3600))
    for _ in range(4):
        status(first, version="1.0.0")  # one failure of one outcome: over 50 %, halted
    assert door.catalog.get_channel("door", "stable").tracks[Kind.APP].state is TrackState.HALTED  # type: ignore[union-attr]
    other = "5C:CF:7F:00:00:33"
    door.device(other, "door")
    second.check(esp8266_headers(other, version="1.0.0"))  # caches the halted, over-threshold track
    fleet.resume("door", "stable", reset_counts=True)
    fleet.set_channel("door", "stable", "1.1.0", max_failure_rate=0.5)  # touch: caches stay stale
    second.check(esp8266_headers(other, version="1.0.0"))
    track = door.catalog.get_channel("door", "stable").tracks[Kind.APP]  # type: ignore[union-attr]
    assert (track.state, track.failures) == (TrackState.ACTIVE, 0)


# --- pacing ----------------------------------------------------------------------------------------


def test_a_paced_rollout_never_hands_over_more_than_its_rate_in_any_minute(door: World) -> None:
    Fleet(door.devices, door.catalog).set_channel("door", "stable", "1.1.0", min_devices=100, max_offers_per_minute=5)
    macs = [f"5C:CF:7F:00:05:{i:02X}" for i in range(23)]
    for mac in macs:
        door.device(mac, "door")
    waiting, per_minute = set(macs), []
    for minute in range(6):
        at = f"2026-12-01T12:{minute:02d}:30Z"
        service = replace(door.service(), clock=lambda: at)  # noqa: B023 (used within this iteration)
        offered = 0
        for mac in sorted(waiting):
            answer = service.check(esp8266_headers(mac, version="1.0.0"))
            if answer.status == 302:
                offered += 1
                waiting.discard(mac)
            else:
                assert answer.headers["X-Otafleet-Reason"] == "paced"
        per_minute.append(offered)
    assert per_minute == [5, 5, 5, 5, 3, 0] and not waiting


def test_quotas_full_on_one_device_never_block_its_other_answers(door: World) -> None:
    Fleet(door.devices, door.catalog).set_channel("door", "stable", "1.1.0", max_offers_per_minute=1)
    service = replace(door.service(), clock=lambda: "2026-12-01T12:00:00Z")
    assert status(service, version="1.0.0") == 302
    other = "5C:CF:7F:00:00:34"
    door.device(other, "door")
    assert service.check(esp8266_headers(other, version="1.1.0")).status == 304  # up to date, not paced
    assert service.check(esp8266_headers(other, version="1.0.0")).headers["X-Otafleet-Reason"] == "paced"
