"""Fleet operations (otafleet.fleet) on moto, checked through the stores and through the real update service."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from otafleet import credentials
from otafleet.fleet import DeviceFilter, Fleet, FleetError, device_states, distribution
from otafleet.models import AttemptState, CheckRecord, Delivery, Device, Kind, ReleaseState, Reported, TrackState
from otafleet.rhythm import epoch
from otafleet.rollout import in_rollout
from otafleet.storage import clients
from support.devices import basic, esp8266_headers
from support.world import World

MAC = "5C:CF:7F:00:00:01"
NOW = "2026-11-24T12:00:00Z"


@pytest.fixture
def fleet(world: World) -> Fleet:
    return Fleet(world.devices, world.catalog)


@pytest.fixture
def door(world: World) -> World:
    """door (ESP8266) with releases 1.0.0, 1.1.0 and 1.2.0; stable serves 1.0.0."""
    world.product("door", "esp8266")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        world.release("door", version)
    world.channel("door", app="1.0.0")
    return world


def check(world: World, mac: str = MAC, **kw: object) -> int:
    return world.service().check(esp8266_headers(mac, **kw)).status  # type: ignore[arg-type]


def macs(n: int) -> list[str]:
    return [f"5C:CF:7F:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}" for i in range(n)]


# --- products ---------------------------------------------------------------------------------------


def test_product_create_then_update_changes_only_what_is_given(fleet: Fleet) -> None:
    product, created = fleet.save_product("door", platform="esp8266", delivery=Delivery.INLINE, enroll=True)
    assert created and product.enroll and product.delivery is Delivery.INLINE
    product, created = fleet.save_product("door", auth_required=True, default_channel="beta")
    assert not created
    assert (product.platform, product.delivery, product.enroll, product.auth_required) == (
        "esp8266",
        Delivery.INLINE,
        True,
        True,
    )
    assert product.default_channel == "beta"
    assert fleet.catalog("door").product == product
    assert [p.name for p in fleet.products()] == ["door"]


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("door", {}, "--platform is required"),
        ("door", {"platform": "esp31"}, "unknown platform 'esp31'"),
        ("door/x", {"platform": "esp8266"}, "invalid product name"),
        ("door", {"platform": "esp8266", "default_channel": "a b"}, "invalid channel name"),
    ],
)
def test_product_mistakes(fleet: Fleet, name: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        fleet.save_product(name, **kw)  # type: ignore[arg-type]


def test_unknown_product_says_how_to_create_it(fleet: Fleet) -> None:
    with pytest.raises(FleetError, match=r"unknown product 'nope'.*otafleet product create nope"):
        fleet.releases("nope")


def test_releases_in_version_order(world: World, fleet: Fleet) -> None:
    world.product("door")
    for version in ("1.10.0", "1.9.0", "1.0.0-rc.1", "1.0.0"):
        world.release("door", version)
    world.release("door", "1.0.0", kind=Kind.FS)
    listed = [(r.kind.value, r.version) for r in fleet.releases("door")]
    assert listed == [("app", "1.0.0-rc.1"), ("app", "1.0.0"), ("app", "1.9.0"), ("app", "1.10.0"), ("fs", "1.0.0")]


# --- channels: staged rollouts ------------------------------------------------------------------------


def test_staged_rollout_keeps_current_as_previous_and_raising_percent_keeps_it(door: World, fleet: Fleet) -> None:
    status = fleet.set_channel("door", "stable", "1.1.0", percent=10)
    assert (status.track.version, status.track.previous, status.track.percent) == ("1.1.0", "1.0.0", 10)
    status = fleet.set_channel("door", "stable", "1.1.0", percent=50)
    assert (status.track.previous, status.track.percent) == ("1.0.0", 50)
    status = fleet.set_channel("door", "stable", "1.1.0")
    assert (status.track.previous, status.track.percent) == ("1.0.0", 100)
    # A full rollout becomes the previous of the next one.
    status = fleet.set_channel("door", "stable", "1.2.0", percent=5)
    assert (status.track.version, status.track.previous) == ("1.2.0", "1.1.0")


def test_a_new_release_over_a_partial_rollout_falls_back_to_the_last_good_one(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=10)
    status = fleet.set_channel("door", "stable", "1.2.0", percent=10)
    assert status.track.previous == "1.0.0"  # not the half-rolled-out 1.1.0


def test_setting_the_previous_version_again_leaves_no_self_reference(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=10)
    status = fleet.set_channel("door", "stable", "1.0.0")
    assert (status.track.version, status.track.previous) == ("1.0.0", None)


def test_thresholds_are_set_and_carried_over(door: World, fleet: Fleet) -> None:
    status = fleet.set_channel("door", "stable", "1.1.0", percent=10, max_failure_rate=0.05, min_devices=3)
    assert (status.track.max_failure_rate, status.track.min_devices) == (0.05, 3)
    status = fleet.set_channel("door", "stable", "1.2.0", percent=10)
    assert (status.track.max_failure_rate, status.track.min_devices) == (0.05, 3)
    shown = fleet.channel_status("door", "stable")
    assert [(s.kind, s.track.version) for s in shown] == [(Kind.APP, "1.2.0")]


def test_other_kind_track_is_untouched(door: World, fleet: Fleet) -> None:
    door.release("door", "fs-1", kind=Kind.FS)
    fleet.set_channel("door", "stable", "fs-1", Kind.FS)
    fleet.set_channel("door", "stable", "1.1.0", percent=20)
    tracks = {s.kind: s.track for s in fleet.channel_status("door", "stable")}
    assert tracks[Kind.FS].version == "fs-1"
    assert tracks[Kind.APP].version == "1.1.0"


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        (("door", "stable", "9.9.9"), {}, r"door has no app release '9.9.9' \(registered: 1.0.0, 1.1.0, 1.2.0\)"),
        (("door", "stable", "1.0.0", Kind.FS), {}, r"no fs release '1.0.0' \(registered: none yet\)"),
        (("door", "stable", "1.1.0"), {"percent": 0}, "percent must be between 1 and 100"),
        (("door", "stable", "1.1.0"), {"percent": 101}, "percent must be between 1 and 100"),
        (("door", "stable", "1.1.0"), {"max_failure_rate": 1.5}, "max failure rate must be between 0 and 1"),
        (("door", "stable", "1.1.0"), {"min_devices": 0}, "min devices must be at least 1"),
        (("door", "bad channel", "1.1.0"), {}, "invalid channel name"),
        (("nope", "stable", "1.1.0"), {}, "unknown product 'nope'"),
    ],
)
def test_channel_set_mistakes(
    door: World, fleet: Fleet, args: tuple[object, ...], kw: dict[str, object], message: str
) -> None:
    with pytest.raises(FleetError, match=message):
        fleet.set_channel(*args, **kw)  # type: ignore[arg-type]


def test_a_rejected_release_cannot_be_served(door: World, fleet: Fleet) -> None:
    good = door.catalog.get_release("door", Kind.APP, "1.2.0")
    assert good is not None
    bad = replace(
        good,
        version="2.0.0",
        state=ReleaseState.REJECTED,
        reason="bad magic 0x00 at offset 0",
    )
    door.catalog.add_release(bad)
    with pytest.raises(FleetError, match=r"door app 2\.0\.0 was rejected: bad magic 0x00 at offset 0"):
        fleet.set_channel("door", "stable", "2.0.0")


def test_staged_rollout_through_the_real_service(door: World, fleet: Fleet) -> None:
    """At 10 % about a tenth of the devices are offered 1.1.0; at 50 % every one of them still is."""
    fleet_macs = macs(200)
    for mac in fleet_macs:
        door.device(mac, "door")
    fleet.set_channel("door", "stable", "1.1.0", percent=10)
    first = {m for m in fleet_macs if check(door, m, version="1.0.0") in (200, 302)}
    assert first == {m for m in fleet_macs if in_rollout(m, "door", Kind.APP, "1.1.0", 10)}
    assert 8 <= len(first) <= 32
    fleet.set_channel("door", "stable", "1.1.0", percent=50)
    second = {m for m in fleet_macs if check(door, m, version="1.0.0") in (200, 302)}
    assert first <= second
    assert 80 <= len(second) <= 120


def test_rollback_lets_devices_go_back_as_a_deliberate_downgrade(door: World, fleet: Fleet) -> None:
    door.device(MAC, "door")
    fleet.set_channel("door", "stable", "1.1.0")
    # Without the rollback flag, pointing the channel at an older release is a refused downgrade.
    fleet.set_channel("door", "stable", "1.0.0")
    assert check(door, version="1.1.0") == 304
    fleet.set_channel("door", "stable", "1.1.0")
    status = fleet.rollback("door", "stable")
    assert (status.track.version, status.track.rollback, status.track.previous) == ("1.0.0", True, None)
    assert check(door, version="1.1.0") == 302
    # The next release after a rollback falls back to the rolled-back-to one.
    status = fleet.set_channel("door", "stable", "1.2.0", percent=10)
    assert (status.track.previous, status.track.rollback) == ("1.0.0", False)


def test_rollback_of_a_halted_rollout_resumes_the_previous_release(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=20)
    door.catalog.set_track_state("door", "stable", Kind.APP, "1.1.0", TrackState.HALTED)
    status = fleet.rollback("door", "stable")
    assert (status.track.version, status.track.state, status.track.percent) == ("1.0.0", TrackState.ACTIVE, 100)


def test_rollback_needs_a_previous_release(door: World, fleet: Fleet) -> None:
    with pytest.raises(FleetError, match="door/stable has no previous app release to roll back to"):
        fleet.rollback("door", "stable")
    with pytest.raises(FleetError, match=r"door/beta has no app release.*otafleet channel set door beta VERSION"):
        fleet.rollback("door", "beta")


def test_pause_and_resume(door: World, fleet: Fleet) -> None:
    door.device(MAC, "door")
    fleet.set_channel("door", "stable", "1.1.0")
    assert fleet.pause("door", "stable").track.state is TrackState.PAUSED
    # Paused: devices not on the new release get the previous one (here: they already run it).
    assert check(door, version="1.0.0") == 304
    assert fleet.resume("door", "stable").track.state is TrackState.ACTIVE
    assert check(door, version="1.0.0") == 302


def test_resume_clears_a_halt(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=30)
    door.catalog.set_track_state("door", "stable", Kind.APP, "1.1.0", TrackState.HALTED)
    assert fleet.channel_status("door", "stable")[0].track.state is TrackState.HALTED
    assert fleet.resume("door", "stable").track.state is TrackState.ACTIVE


def add_counts(world: World, version: str, ok: int, fail: int) -> None:
    """What the service's transactions add to a channel per inferred success/failure."""
    clients.dynamodb(world.settings).update_item(
        TableName=world.settings.catalog_table,
        Key={"pk": {"S": "P#door"}, "sk": {"S": "C#stable"}},
        UpdateExpression="ADD #ok :ok, #fail :fail",
        ExpressionAttributeNames={"#ok": f"ok#app#{version}", "#fail": f"fail#app#{version}"},
        ExpressionAttributeValues={":ok": {"N": str(ok)}, ":fail": {"N": str(fail)}},
    )


def counts(fleet: Fleet) -> tuple[str, int, int]:
    (status,) = fleet.channel_status("door", "stable")
    return status.track.version, status.track.successes, status.track.failures


def test_channel_status_counts_and_threshold(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=50, max_failure_rate=0.2, min_devices=4)
    add_counts(door, "1.1.0", 3, 2)
    (status,) = fleet.channel_status("door", "stable")
    assert (status.track.successes, status.track.failures, status.outcomes) == (3, 2, 5)
    assert status.failure_rate == pytest.approx(0.4)
    assert status.over_threshold and status.staged
    with pytest.raises(FleetError, match=r"no channel 'beta' \(channels: stable\)"):
        fleet.channel_status("door", "beta")


# --- devices ------------------------------------------------------------------------------------------


def test_assign_normalises_the_mac_and_uses_the_default_channel(door: World, fleet: Fleet) -> None:
    device = fleet.assign("5c-cf-7f-00-00-01", "door")
    assert (device.mac, device.product, device.channel, device.assigned) == (MAC, "door", "stable", True)
    assert check(door, version="1.0.0") == 304


def test_assign_keeps_what_a_seen_device_reported(door: World, fleet: Fleet) -> None:
    assert check(door, version="0.9.0") == 404  # seen, unassigned
    device = fleet.assign(MAC, "door", "beta", pin="1.1.0")
    assert device.reported.version == "0.9.0" and device.checks == 1
    assert device.pins == {Kind.APP: "1.1.0"} and device.channel == "beta"
    # Re-assigning within the product keeps the pin; --unpin drops it.
    assert fleet.assign(MAC, "door", "stable").pins == {Kind.APP: "1.1.0"}
    assert fleet.assign(MAC, "door", unpin=True).pins == {}


def test_moving_a_device_to_another_product_drops_pins_offer_and_failures(door: World, fleet: Fleet) -> None:
    door.product("cam", "esp8266")
    door.device(MAC, "door", pins={Kind.APP: "1.0.0"})
    door.devices.record_check(
        MAC,
        CheckRecord(
            reported=Reported(version="1.0.0"), outcome="no-update", reason="failed", at=NOW, failed="app:1.1.0"
        ),
    )
    assert fleet.device(MAC).failed == frozenset({"app:1.1.0"})
    moved = fleet.assign(MAC, "cam")
    assert (moved.product, moved.channel, moved.pins, moved.failed) == ("cam", "stable", {}, frozenset())
    assert moved.reported.version == "1.0.0"


@pytest.mark.parametrize(
    ("mac", "kw", "message"),
    [
        ("5C:CF:7F:00:00", {"product": "door"}, r"not a MAC address: '5C:CF:7F:00:00'"),
        (MAC, {"product": "nope"}, "unknown product 'nope'"),
        (MAC, {"product": "door", "pin": "7.0"}, "door has no app release '7.0'"),
    ],
)
def test_assign_mistakes(door: World, fleet: Fleet, mac: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        fleet.assign(mac, **kw)  # type: ignore[arg-type]


def test_block_and_unblock(door: World, fleet: Fleet) -> None:
    fleet.assign(MAC, "door")
    assert fleet.block(MAC.lower()).blocked
    assert check(door, version="0.1") == 403
    device = fleet.unblock(MAC)
    assert not device.blocked and device.product == "door"
    assert check(door, version="1.0.0") == 304
    with pytest.raises(FleetError, match="unknown device 5C:CF:7F:00:00:09"):
        fleet.block("5C:CF:7F:00:00:09")


def test_credentials_store_only_a_hash_that_verifies(door: World, fleet: Fleet) -> None:
    door.product("door", "esp8266", auth_required=True)
    fleet.assign(MAC, "door")
    device, secret = fleet.issue_credentials(MAC)
    assert device.secret_hash == credentials.hash_secret(secret)
    assert credentials.verify(basic(MAC, secret), MAC, device.secret_hash)
    raw = clients.dynamodb(door.settings).get_item(TableName=door.settings.devices_table, Key={"mac": {"S": MAC}})
    assert secret not in json.dumps(raw["Item"])
    # The service accepts the secret and refuses anything else.
    assert check(door, version="0.1", auth=(MAC, secret)) == 200  # authenticated devices get inline
    assert check(door, version="0.1", auth=(MAC, secret + "x")) == 401
    # A new secret replaces the old one.
    _, again = fleet.issue_credentials(MAC)
    assert again != secret
    assert check(door, version="0.1", auth=(MAC, secret)) == 401
    with pytest.raises(FleetError, match="unknown device 5C:CF:7F:00:00:09: assign it first"):
        fleet.issue_credentials("5C:CF:7F:00:00:09")


def test_retry_clears_failures_and_reopens_the_attempt(door: World, fleet: Fleet) -> None:
    fleet.assign(MAC, "door")
    fleet.set_channel("door", "stable", "1.1.0")
    md5 = "0" * 32
    for _ in range(4):  # offered 3 times, still on the old build: failed
        check(door, version="1.0.0", md5=md5)
    assert fleet.device(MAC).failed == frozenset({"app:1.1.0"})
    assert check(door, version="1.0.0", md5=md5) == 304
    device = fleet.retry(MAC)
    attempt = device.attempts[Kind.APP]
    assert device.failed == frozenset() and (attempt.state, attempt.offers) == (AttemptState.OFFERED, 0)
    assert check(door, version="1.0.0", md5=md5) == 302
    with pytest.raises(FleetError, match="unknown device"):
        fleet.retry("5C:CF:7F:00:00:09")


def test_list_devices_filters_and_summarises(door: World, fleet: Fleet) -> None:
    door.product("cam", "esp8266")
    door.device("5C:CF:7F:00:00:01", "door")
    door.device("5C:CF:7F:00:00:02", "door")
    door.device("5C:CF:7F:00:00:03", "cam")
    check(door, "5C:CF:7F:00:00:01", version="1.10.0")
    check(door, "5C:CF:7F:00:00:02", version="1.9.0")
    door.service().check(esp8266_headers("5C:CF:7F:00:00:04", version="0.1"), product="door")  # seen, unassigned
    fleet.set_channel("door", "stable", "1.1.0", percent=10)

    everything = fleet.list_devices()
    assert [d.mac[-2:] for d in everything.devices] == ["01", "02", "03", "04"]
    versions = {p.product: [(v.version, v.devices) for v in p.versions] for p in everything.distribution}
    assert versions == {"door": [("1.9.0", 1), ("1.10.0", 1)], "cam": [(None, 1)], None: [("0.1", 1)]}
    assert [(s.product, s.channel, s.track.version) for s in everything.rollouts] == [("door", "stable", "1.1.0")]

    doors = fleet.list_devices("door")
    assert [d.mac[-2:] for d in doors.devices] == ["01", "02"]
    unassigned = fleet.list_devices(unassigned=True)
    assert [d.mac[-2:] for d in unassigned.devices] == ["04"]
    assert unassigned.seen_products == {"5C:CF:7F:00:00:04": "door"}
    assert [d.mac[-2:] for d in fleet.list_devices("door", unassigned=True).devices] == ["04"]
    assert fleet.list_devices("cam", unassigned=True).devices == ()
    with pytest.raises(FleetError, match="unknown product 'nope'"):
        fleet.list_devices("nope")


def test_distribution_orders_versions_and_puts_unknown_last() -> None:
    def dev(mac: str, version: str | None, **kw: object) -> Device:
        return replace(Device(mac=mac, product="door", assigned=True, reported=Reported(version=version)), **kw)  # type: ignore[arg-type]

    devices = [
        dev("1", "1.10"),
        dev("2", "1.9"),
        dev("3", None),
        dev("4", "DOOR-7-gabcdef1"),
        dev("5", "1.0.0-rc.1"),
        dev("6", "1.0.0"),
        dev("7", "1.9"),
        dev("8", None, running_version="2.0", running_md5=None),
    ]
    (door,) = distribution(devices)
    assert [(v.version, v.devices) for v in door.versions] == [
        ("1.0.0-rc.1", 1),
        ("1.0.0", 1),
        ("1.9", 2),
        ("1.10", 1),
        ("2.0", 1),
        ("DOOR-7-gabcdef1", 1),
        (None, 1),
    ]


def test_counts_belong_to_one_rollout(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "stable", "1.1.0", percent=10)
    add_counts(door, "1.1.0", 1, 4)
    assert counts(fleet) == ("1.1.0", 1, 4)
    fleet.set_channel("door", "stable", "1.1.0", percent=50)  # the same rollout, wider
    assert counts(fleet) == ("1.1.0", 1, 4)
    add_counts(door, "1.0.0", 0, 9)  # stale counts of an earlier rollout of 1.0.0
    fleet.rollback("door", "stable")
    assert counts(fleet) == ("1.0.0", 0, 0)
    fleet.set_channel("door", "stable", "1.1.0", percent=10)  # 1.1.0 again: a new rollout
    assert counts(fleet) == ("1.1.0", 0, 0)
    add_counts(door, "1.1.0", 0, 3)
    door.catalog.set_track_state("door", "stable", Kind.APP, "1.1.0", TrackState.HALTED)
    assert fleet.resume("door", "stable").track.failures == 3
    assert fleet.resume("door", "stable", reset_counts=True).track.failures == 0


# --- revoking, deleting, filtering ------------------------------------------------------------------


def test_revoke_is_refused_for_the_baseline_of_a_halted_rollout_and_a_revoked_pin_is_never_offered(
    door: World, fleet: Fleet
) -> None:
    fleet.set_channel("door", "stable", "1.1.0")
    fleet.pause("door", "stable")  # devices outside the rollout, here all, run the previous release
    with pytest.raises(FleetError, match=r"door app 1\.0\.0 is served by channel stable"):
        fleet.revoke("door", "1.0.0")
    done = fleet.revoke("door", "1.2.0")
    assert (done.release.state, done.serving, done.already) == (ReleaseState.REVOKED, (), False)
    assert fleet.revoke("door", "1.2.0").already
    with pytest.raises(FleetError, match=r"door app 1\.2\.0 is revoked and cannot be offered"):
        fleet.assign(MAC, "door", pin="1.2.0")
    # A device pinned before the revocation is offered nothing (the decision's target-unavailable).
    door.device(MAC, "door", pins={Kind.APP: "1.1.0"})
    forced = fleet.revoke("door", "1.1.0", force=True)
    assert forced.serving == ("stable",)
    door.catalog.invalidate()
    decision = door.service().explain(MAC, mode="sketch")
    assert decision is not None and decision.reason == "target-unavailable"


def test_channel_list_counts_only_assigned_devices_of_each_channel(door: World, fleet: Fleet) -> None:
    fleet.set_channel("door", "beta", "1.1.0", percent=10)
    fleet.assign(MAC, "door", "beta")
    door.devices.put(Device(mac="5C:CF:7F:00:00:02", product="door", channel="beta", assigned=False))
    listed = fleet.channel_list("door")
    assert [(c.channel.name, c.devices, c.default, [t.track.version for t in c.tracks]) for c in listed] == [
        ("beta", 1, False, ["1.1.0"]),
        ("stable", 0, True, ["1.0.0"]),
    ]


def test_device_states_and_filter() -> None:
    seen = Device(mac=MAC, product="door", channel="stable", assigned=True, last_seen="2026-11-24T10:00:00Z")
    assert device_states(seen) == frozenset()
    assert device_states(replace(seen, last_seen=None, blocked=True, failed=frozenset({"1.1.0"}))) == {
        "never-seen",
        "blocked",
        "failed",
    }
    now = epoch(NOW)  # the device was seen two hours before
    assert DeviceFilter(seen_before=3600).matches(seen, now)
    assert not DeviceFilter(seen_before=3 * 3600).matches(seen, now)
    assert DeviceFilter(seen_within=3 * 3600).matches(seen, now)
    assert not DeviceFilter(seen_within=3600).matches(seen, now)
    assert not DeviceFilter(seen_before=1).matches(replace(seen, last_seen=None), now)  # never seen: no match
