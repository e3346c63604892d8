"""The audit trail against moto: a CLI action records one entry naming the caller's IAM principal, with
the fields it changed; an automatic halt or stage move records one entry however often it is judged (a
replayed check, an overlapping controller run); `otafleet audit` lists them; a failed entry never undoes
the action."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from otafleet import audit
from otafleet.controller import Controller
from otafleet.fleet import Fleet
from otafleet.models import AuditEntry, Catalog, Device, Kind, TrackState
from otafleet.service import UpdateService
from otafleet.storage import clients
from otafleet.storage.audit import AuditStore
from otafleet.storage.errors import StorageUnavailable
from otafleet.storage.items import channel_sk, counter_name, product_pk
from support.cli import Run, invoker, stack_template
from support.clock import Clock
from support.devices import esp8266_headers
from support.world import World

MAC = "5C:CF:7F:00:00:41"
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"  # who moto's STS says the caller is
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def trail(world: World, product: str | None = "door") -> list[AuditEntry]:
    return AuditStore(world.settings).entries(product, limit=1000)


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return invoker(capsys)


@pytest.fixture
def door(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """A stack the CLI finds by its outputs; door with 1.0.0 and 1.1.0, stable on 1.0.0, one device."""
    boto3.client("cloudformation", region_name=world.settings.region).create_stack(
        StackName="otafleet", TemplateBody=stack_template(world)
    )
    monkeypatch.setenv("AUDIT_TABLE", "not-from-the-environment")  # the CLI takes it from the stack
    monkeypatch.delenv("OTAFLEET_STACK", raising=False)
    world.product("door", "esp8266")
    world.release("door", "1.0.0")
    world.release("door", "1.1.0")
    world.channel("door", app="1.0.0")
    world.device(MAC, "door")
    return world


def test_channel_set_records_one_entry_with_the_principal_and_what_changed(door: World, run: Run) -> None:
    assert run("channel", "set", "door", "stable", "1.1.0", "--percent", "10").code == 0
    [entry] = trail(door)
    assert (entry.actor, entry.action, entry.product) == (MOTO_ARN, "channel.set", "door")
    assert entry.target == {"channel": "stable", "kind": "app", "version": "1.1.0"}
    assert entry.before == {"version": "1.0.0", "previous": None, "percent": 100, "counts_reset": None}
    assert entry.after == {"version": "1.1.0", "previous": "1.0.0", "percent": 10, "counts_reset": True}


def test_pause_resume_and_block_each_record_one_entry(door: World, run: Run) -> None:
    assert run("channel", "pause", "door", "stable").code == 0
    assert run("channel", "resume", "door", "stable").code == 0
    assert run("device", "block", MAC).code == 0
    entries = trail(door)  # newest first
    assert [(e.action, e.before, e.after) for e in reversed(entries)] == [
        ("channel.pause", {"state": "active"}, {"state": "paused"}),
        ("channel.resume", {"state": "paused"}, {"state": "active"}),
        ("device.block", {"blocked": False}, {"blocked": True}),
    ]
    assert {e.actor for e in entries} == {MOTO_ARN}
    assert entries[0].target == {"device": MAC}


def test_revoking_and_deleting_are_recorded(door: World, run: Run) -> None:
    door.channel("door", "beta", app="1.0.0")
    assert run("release", "revoke", "door", "1.1.0").code == 0
    assert run("channel", "delete", "door", "beta").code == 0
    assert run("device", "delete", MAC).code == 0
    entries = list(reversed(trail(door)))
    assert [(e.action, e.target) for e in entries] == [
        ("release.revoke", {"release": "app 1.1.0"}),
        ("channel.delete", {"channel": "beta"}),
        ("device.delete", {"device": MAC}),
    ]
    assert (entries[0].before, entries[0].after) == ({"state": "registered"}, {"state": "revoked"})
    # What is gone shows as None after.
    assert entries[1].before["app"]["version"] == "1.0.0" and entries[1].after == {"app": None}
    assert entries[2].before["product"] == "door" and set(entries[2].after.values()) == {None}


def test_audit_lists_the_trail_newest_first_as_a_table_and_as_json(door: World, run: Run) -> None:
    assert run("channel", "pause", "door", "stable").code == 0
    assert run("device", "block", MAC).code == 0
    table = run("audit", "--product", "door", "--since", "1h")
    assert table.code == 0, table.err
    header, first, second = table.out.strip().splitlines()
    assert header.split() == ["TIME", "ACTOR", "ACTION", "PRODUCT", "TARGET", "CHANGE"]
    assert "device.block" in first and f"device={MAC}" in first and "blocked: false -> true" in first
    assert "channel.pause" in second and "state: active -> paused" in second and MOTO_ARN in second
    data = json.loads(run("audit", "--product", "door", "--since", "1h", "--json").out)
    assert [e["action"] for e in data] == ["device.block", "channel.pause"]
    assert data[1]["before"] == {"state": "active"} and data[1]["after"] == {"state": "paused"}
    assert set(data[0]) == {"at", "id", "actor", "action", "product", "target", "before", "after", "expires_at"}
    assert json.loads(run("audit", "--json", "--limit", "1").out)[0]["action"] == "device.block"  # all products
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert run("audit", "--since", future).out.strip() == "no audit entries"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "yesterday"), "--since 'yesterday': expected a duration such as 30m"),
        (("--limit", "0"), "--limit must be at least 1, not 0"),
        (("--product", "Door!"), "invalid product name"),
    ],
)
def test_audit_refuses_bad_input_in_one_line(door: World, run: Run, argv: tuple[str, ...], message: str) -> None:
    result = run("audit", *argv)
    assert result.code == 1 and message in result.err


def test_an_entry_that_cannot_be_written_leaves_the_action_done_and_says_so(
    door: World, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: AuditStore, entry: AuditEntry) -> None:
        raise StorageUnavailable("ThrottlingException")

    monkeypatch.setattr(AuditStore, "put", refuse)
    result = run("device", "block", MAC)
    assert result.code == 0
    assert "device.block was done, but its audit entry could not be written (ThrottlingException)" in result.err
    device = door.devices.get(MAC)
    assert device is not None and device.blocked
    monkeypatch.undo()
    assert trail(door) == []


# --- automatic transitions -------------------------------------------------------------------------


@pytest.fixture
def halting(world: World) -> World:
    """A rollout that one failed verdict halts (min_devices 1, max failure rate 0.5)."""
    return world.rolling_out(MAC)


def stale_reads(service: UpdateService, snapshot: Device | None) -> None:
    """The service's next device read returns `snapshot`: the same check, in flight twice."""
    real = service.devices.get
    pending = [snapshot]
    service.devices.get = lambda mac: pending.pop() if pending else real(mac)  # type: ignore[method-assign]


def test_a_halt_a_check_causes_is_recorded_once_even_when_the_check_is_replayed(halting: World) -> None:
    service = halting.service()
    for _ in range(3):  # offered three times, and the device stays on 1.0.0
        assert service.check(esp8266_headers(MAC, version="1.0.0")).status == 302
    before_verdict = halting.devices.get(MAC)
    assert service.check(esp8266_headers(MAC, version="1.0.0")).status == 304  # failed: the rollout halts
    stale_reads(service, before_verdict)
    assert service.check(esp8266_headers(MAC, version="1.0.0")).status == 304  # the same check, replayed
    channel = halting.catalog.get_channel("door", "stable")
    assert channel is not None and channel.tracks[Kind.APP].state is TrackState.HALTED
    [entry] = trail(halting)
    assert (entry.actor, entry.action) == (audit.UPDATE_FUNCTION, "rollout.halt")
    assert entry.target == {"channel": "stable", "kind": "app", "version": "1.1.0", "rule": "failures"}
    assert (entry.before, entry.after) == ({"state": "active"}, {"state": "halted"})


def stale_catalog(world: World) -> Callable[[], None]:
    """Arm: the next catalog read returns the catalog as it is now (a run that read before another wrote)."""
    store = world.catalog
    pending = [store.load("door", fresh=True)]
    real = store.load

    def load(product: str, *, fresh: bool = False) -> Catalog | None:
        return pending.pop() if pending else real(product, fresh=fresh)

    return lambda: setattr(store, "load", load)


def test_a_halt_the_controller_writes_is_recorded_once_for_overlapping_runs(world: World) -> None:
    world.product("door", "esp8266")
    world.release("door", "1.0.0")
    world.release("door", "1.1.0")
    world.channel("door", app="1.1.0", previous="1.0.0", min_devices=2)
    # over its threshold, and no check wrote the halt (a fault, say): the controller does
    clients.dynamodb(world.settings).update_item(
        TableName=world.settings.catalog_table,
        Key={"pk": {"S": product_pk("door")}, "sk": {"S": channel_sk("stable")}},
        UpdateExpression="SET #f = :two, #o = :one",
        ExpressionAttributeNames={
            "#f": counter_name("fail", Kind.APP, "1.1.0"),
            "#o": counter_name("ok", Kind.APP, "1.1.0"),
        },
        ExpressionAttributeValues={":two": {"N": "2"}, ":one": {"N": "1"}},
    )
    clock = Clock(START)
    controller = Controller(world.settings, world.devices, world.catalog, clock=clock)
    lag = stale_catalog(world)
    assert len(controller.run().halted) == 1
    lag()
    assert controller.run().halted == ()  # the same judgement on the revision the first run replaced
    [entry] = trail(world)
    assert (entry.actor, entry.action, entry.at) == (audit.CONTROLLER, "rollout.halt", "2026-11-24T12:00:00.000Z")


MACS = [f"5C:CF:7F:00:03:{i:02X}" for i in range(20)]


@pytest.fixture
def plan_rig(world: World) -> Iterator[tuple[World, Clock, UpdateService, Controller]]:
    world.product("door", "esp8266")
    world.release("door", "1.0.0", sketch_size=300_016)
    world.release("door", "2.0.0", sketch_size=310_032)
    world.channel("door", app="1.0.0")
    for mac in MACS:
        world.device(mac, "door")
    clock = Clock(START)
    service = world.service()
    service.clock = clock
    controller = Controller(world.settings, world.devices, world.catalog, clock=clock)
    yield world, clock, service, controller


def cycle(service: UpdateService, clock: Clock, running: dict[str, str]) -> None:
    """Every device checks; those offered 2.0.0 install it and check again; an hour passes."""
    sizes = {"1.0.0": 300_016, "2.0.0": 310_032}
    offered = []
    for mac in MACS:
        if service.check(esp8266_headers(mac, version=running[mac], sketch_size=sizes[running[mac]])).status == 302:
            offered.append(mac)
            running[mac] = "2.0.0"
    clock.advance(minutes=1)
    for mac in offered:
        service.check(esp8266_headers(mac, version="2.0.0", sketch_size=sizes["2.0.0"]))
    clock.advance(minutes=59)


def test_a_stage_advance_is_recorded_once_for_overlapping_runs(
    plan_rig: tuple[World, Clock, UpdateService, Controller],
) -> None:
    world, clock, service, controller = plan_rig
    running = dict.fromkeys(MACS, "1.0.0")
    cycle(service, clock, running)
    operator: dict[str, Any] = {"stages": (50, 100), "soak_seconds": 7200, "min_success": 0.9, "min_devices": 3}
    Fleet(world.devices, world.catalog, clock=clock).start_plan("door", "stable", "2.0.0", **operator)
    assert trail(world) == []  # a Fleet without an Auditor (the publish function's) records nothing
    cycle(service, clock, running)
    cycle(service, clock, running)
    lag = stale_catalog(world)
    assert [m.percent for m in controller.run().moved] == [100]
    lag()
    assert controller.run().moved == ()
    [entry] = trail(world)
    assert (entry.actor, entry.action) == (audit.CONTROLLER, "rollout.advance")
    assert (entry.before["percent"], entry.after["percent"]) == (50, 100)
    assert (entry.before["plan"]["stage"], entry.after["plan"]["stage"]) == (0, 1)
    assert entry.target == {"channel": "stable", "kind": "app", "version": "2.0.0"}
