"""The controller against moto: offers found through the sparse index, silences written once under
overlapping runs and racing checks, the silent counter moved in the same transaction, stale watches
dropped, halts written conditionally. One device at a time, on a simulated clock: no sleeps.

"Overlapping" is replayed deterministically as in test_transitions_once.py: the second run (or check)
decides on the device record as it was before the first one wrote, then writes; its write is
conditional on what it read, so it loses and looks again on fresh data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from otafleet.controller import Controller
from otafleet.fleet import Fleet
from otafleet.models import AttemptState, Device, Kind, TrackState
from otafleet.service import UpdateService
from otafleet.storage.devices import DeviceStore
from otafleet.storage.errors import StorageUnavailable
from support.clock import Clock
from support.devices import esp8266_headers
from support.world import World

MAC = "5C:CF:7F:00:00:41"
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def door(world: World) -> World:
    return world.rolling_out(MAC, max_failure_rate=0.9)


def service(world: World, clock: Clock) -> UpdateService:
    s = world.service()
    s.clock = clock
    return s


def controller_for(world: World, clock: Clock) -> Controller:
    return Controller(world.settings, world.devices, world.catalog, clock=clock)


def check(s: UpdateService, version: str = "1.0.0", mac: str = MAC) -> int:
    return s.check(esp8266_headers(mac, version=version, sketch_size=300_016 if version == "1.0.0" else 310_032)).status


def hourly_then_offer(world: World, clock: Clock, s: UpdateService) -> None:
    """The device checks hourly on the old release (its rhythm is learned), then the channel moves on and
    its next check is offered the new one."""
    world.channel("door", app="1.0.0")
    for _ in range(4):
        assert check(s) == 304
        clock.advance(hours=1)
    world.channel("door", app="1.1.0", previous="1.0.0", min_devices=1, max_failure_rate=0.9)
    assert check(s) == 302


def quiet_limit(world: World) -> float:
    """Seconds an hourly device may stay quiet after an offer: 3 x its hour, plus the heartbeat its
    record may lag behind its last check (rhythm.quiet_limit)."""
    return 3 * 3600 + world.settings.check_heartbeat_minutes * 60


def past_quiet_limit(world: World, clock: Clock) -> None:
    clock.advance(seconds=quiet_limit(world) + 3600)


def attempt_state(world: World, mac: str = MAC) -> AttemptState:
    device = world.devices.get(mac)
    assert device is not None
    return device.attempts[Kind.APP].state


def silents(world: World) -> int:
    channel = world.catalog.get_channel("door", "stable")
    assert channel is not None
    return channel.tracks[Kind.APP].silents


def stale_reads(store: DeviceStore, snapshot: Device | None) -> Callable[[], None]:
    real = store.get
    pending = [snapshot]

    def get(mac: str) -> Device | None:
        return pending.pop() if pending else real(mac)

    store.get = get  # type: ignore[method-assign]
    return lambda: setattr(store, "get", real)


def test_a_device_offered_and_never_heard_from_again_is_silent_once(door: World, clock: Clock) -> None:
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    device = door.devices.get(MAC)
    assert device is not None and device.watch is not None and device.rhythm is not None
    assert device.rhythm.seconds == 3600
    c = controller_for(door, clock)
    clock.advance(seconds=quiet_limit(door) - 60)
    assert c.run().silenced == ()  # within 3 x its hourly rhythm and a heartbeat
    clock.advance(minutes=2)
    report = c.run()
    assert [(x.mac, x.kind, x.version, x.counted) for x in report.silenced] == [(MAC, Kind.APP, "1.1.0", True)]
    assert attempt_state(door) is AttemptState.SILENT and silents(door) == 1
    silent = door.devices.get(MAC)
    assert silent is not None and silent.watch is None  # out of the index
    assert c.run().silenced == () and silents(door) == 1  # a second run changes nothing


def overlapping(world: World, clock: Clock, snapshot: Device | None) -> Controller:
    """A second run that read the index and the device before the first run wrote."""
    devices = DeviceStore(world.settings)
    stale_reads(devices, snapshot)
    seen = list(devices.due_offers("door", 2**40))
    devices.due_offers = lambda product, until: iter(seen)  # type: ignore[method-assign]
    return Controller(world.settings, devices, world.catalog, clock=clock)


def test_two_overlapping_runs_count_one_silence(door: World, clock: Clock) -> None:
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    second = overlapping(door, clock, door.devices.get(MAC))
    assert len(controller_for(door, clock).run().silenced) == 1
    assert second.run().silenced == ()  # its write lost on the watch it read, and it looked again
    assert attempt_state(door) is AttemptState.SILENT and silents(door) == 1


def test_a_check_that_lands_while_the_controller_decides_wins(door: World, clock: Clock) -> None:
    """The controller read the device; the device checks in (installed) before the controller writes."""
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    c = overlapping(door, clock, door.devices.get(MAC))
    assert check(s, "1.1.0") == 304  # back, on the new build
    assert c.run().silenced == ()
    assert attempt_state(door) is AttemptState.INSTALLED and silents(door) == 0


def test_a_check_that_decided_before_the_silence_decides_again_and_is_judged_once(door: World, clock: Clock) -> None:
    """The check read the device while it was still offered; the controller marked it silent first. The
    check's write loses on the attempt's seq, it decides again on the silent attempt: installed, and the
    silent count it had gained moves back."""
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    offered = door.devices.get(MAC)
    assert len(controller_for(door, clock).run().silenced) == 1 and silents(door) == 1
    stale_reads(s.devices, offered)
    assert check(s, "1.1.0") == 304
    channel = door.catalog.get_channel("door", "stable")
    assert channel is not None
    track = channel.tracks[Kind.APP]
    assert (track.successes, track.silents) == (1, 0)
    assert attempt_state(door) is AttemptState.INSTALLED


def test_any_check_that_counts_ends_the_watch_and_a_forged_one_does_not(door: World, clock: Clock) -> None:
    door.product("door", "esp8266", auth_required=True)
    s = service(door, clock)
    door.channel("door", app="1.0.0")
    assert check(s) == 401  # no credentials: does not count, learns nothing
    device = door.devices.get(MAC)
    assert device is not None and device.rhythm is None
    door.product("door", "esp8266")
    assert check(s) == 304
    door.channel("door", app="1.1.0", previous="1.0.0", min_devices=1, max_failure_rate=0.9)
    clock.advance(hours=1)
    assert check(s) == 302
    door.product("door", "esp8266", auth_required=True)
    clock.advance(minutes=10)
    assert check(s) == 401  # a forged check: the device is not shown alive
    device = door.devices.get(MAC)
    assert device is not None and device.watch is not None
    door.product("door", "esp8266")
    assert s.check(esp8266_headers(MAC, mode="spiffs")).status == 304  # the other kind, but it counts
    device = door.devices.get(MAC)
    assert device is not None and device.watch is None
    clock.advance(days=2)
    assert controller_for(door, clock).run().silenced == ()
    assert attempt_state(door) is AttemptState.OFFERED


def test_a_retried_device_is_offered_afresh_and_watched_again_from_that_offer(door: World, clock: Clock) -> None:
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    Fleet(door.devices, door.catalog).retry(MAC)
    device = door.devices.get(MAC)
    assert device is not None and device.watch is None and device.attempts[Kind.APP].offers == 0
    assert controller_for(door, clock).run().silenced == ()  # nothing is watched until it is offered again
    assert check(s) == 302  # four hours after the last check: its interval estimate grew (rhythm.py)
    watched = door.devices.get(MAC)
    assert watched is not None and watched.watch is not None
    clock.now = datetime.fromtimestamp(watched.watch.due + 60, UTC)
    assert len(controller_for(door, clock).run().silenced) == 1


def test_a_stale_watch_is_dropped(door: World, clock: Clock) -> None:
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    # As if the attempt had gone by a path that left its watch behind.
    door.devices.clear_failures(MAC)
    door.devices.client.update_item(
        TableName=door.settings.devices_table,
        Key={"mac": {"S": MAC}},
        UpdateExpression="SET watch_product = :p, watch_due = :d, watch_kind = :k",
        ExpressionAttributeValues={":p": {"S": "door"}, ":d": {"N": "1"}, ":k": {"S": "app"}},
    )
    assert controller_for(door, clock).run().silenced == ()
    device = door.devices.get(MAC)
    assert device is not None and device.watch is None


def test_a_pinned_device_goes_silent_without_moving_a_rollout(door: World, clock: Clock) -> None:
    door.device(MAC, "door", pins={Kind.APP: "1.1.0"})
    s = service(door, clock)
    assert check(s) == 302
    clock.advance(days=2)
    report = controller_for(door, clock).run()
    assert [x.counted for x in report.silenced] == [False]
    assert attempt_state(door) is AttemptState.SILENT and silents(door) == 0


def test_a_failure_halt_a_check_could_not_write_is_written_by_the_controller(door: World, clock: Clock) -> None:
    door.channel("door", app="1.1.0", previous="1.0.0", min_devices=2, max_failure_rate=0.2)
    # Two failures counted by checks whose halt write was then lost to a fault.
    door.catalog.client.update_item(
        TableName=door.settings.catalog_table,
        Key={"pk": {"S": "P#door"}, "sk": {"S": "C#stable"}},
        UpdateExpression="ADD #c :two",
        ExpressionAttributeNames={"#c": "fail#app#1.1.0"},
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    report = controller_for(door, clock).run()
    assert [(h.rule, h.version) for h in report.halted] == [("failures", "1.1.0")]
    channel = door.catalog.get_channel("door", "stable")
    assert channel is not None and channel.tracks[Kind.APP].state is TrackState.HALTED
    assert controller_for(door, clock).run().halted == ()  # once


def test_the_handler_runs_one_pass(door: World, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller import app

    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    monkeypatch.setattr(app, "_controller", controller_for(door, clock))
    result = app.handler({}, None)
    assert [x["mac"] for x in result["silenced"]] == [MAC] and result["faults"] == []


def test_a_storage_fault_fails_the_invocation_after_the_rest_of_the_run(
    door: World, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller import app

    c = controller_for(door, clock)

    def broken(product: str, until: int) -> list[str]:
        raise StorageUnavailable("injected")

    monkeypatch.setattr(c.devices, "due_offers", broken)
    monkeypatch.setattr(app, "_controller", c)
    with pytest.raises(app.RunIncomplete, match="door: injected"):
        app.handler({}, None)


def test_settings_change_the_deadline_of_offers_already_watched(door: World, clock: Clock) -> None:
    s = service(door, clock)
    hourly_then_offer(door, clock, s)
    past_quiet_limit(door, clock)
    patient = replace(door.settings, silence_factor=6.0)
    assert Controller(patient, door.devices, door.catalog, clock=clock).run().silenced == ()
    clock.advance(hours=3)
    assert len(Controller(patient, door.devices, door.catalog, clock=clock).run().silenced) == 1
