"""A fleet of 400 devices through the real update handler under moto: staged rollout, auto-halt, rollback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from moto import mock_aws

from otafleet.config import load_settings
from otafleet.models import Kind, TrackState
from support.devices import esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

FLEET = [f"5C:CF:7F:01:{i >> 8:02X}:{i & 255:02X}" for i in range(400)]


def check(mac: str, version: str) -> tuple[int, str]:
    response = update_app.handler(http_api_event("/update", esp8266_headers(mac, version=version)), None)
    location = (response.get("headers") or {}).get("Location", "")
    return response["statusCode"], location


def offered(statuses: dict[str, tuple[int, str]], version: str) -> set[str]:
    return {mac for mac, (status, location) in statuses.items() if status == 302 and f"/{version}.bin" in location}


@pytest.fixture
def fleet() -> Iterator[World]:
    with mock_aws():
        # One catalog store shared by the handler and the test, caching as in production: the test's
        # channel changes invalidate it like operator commands in the same process would.
        world = World.create(replace(load_settings(), catalog_cache_seconds=3600))
        update_app._service = world.service()
        yield seeded(world)


def seeded(world: World) -> World:
    world.product("door", "esp8266")
    world.release("door", "1.0.0")
    world.release("door", "2.0.0")
    world.channel("door", app="2.0.0", previous="1.0.0", percent=10, max_failure_rate=0.2, min_devices=20)
    for mac in FLEET:
        world.device(mac, "door")
    return world


def set_percent(world: World, percent: int) -> None:
    catalog = world.catalog.load("door", fresh=True)
    assert catalog is not None
    channel = catalog.channels["stable"]
    track = replace(channel.tracks[Kind.APP], percent=percent)
    world.catalog.put_channel(replace(channel, tracks={Kind.APP: track}))


def test_staged_rollout_halts_on_failures_and_rolls_back(fleet: World) -> None:
    # 10 %: about a tenth of the fleet is offered 2.0.0, everyone else stays on 1.0.0 (304).
    first = {mac: check(mac, "1.0.0") for mac in FLEET}
    canaries = offered(first, "2.0.0")
    assert abs(len(canaries) / len(FLEET) - 0.10) <= 0.03
    assert all(first[mac][0] == 304 for mac in FLEET if mac not in canaries)

    # 50 %: every device of the first 10 % is still in, and more joined.
    set_percent(fleet, 50)
    second = {mac: check(mac, "1.0.0") for mac in FLEET}
    wave = offered(second, "2.0.0")
    assert canaries <= wave
    assert abs(len(wave) / len(FLEET) - 0.50) <= 0.03

    # Half of the wave updates, the other half keeps coming back on 1.0.0: after 3 offers each of those
    # fails, the failure rate passes 20 % over ≥ 20 devices, and the rollout halts itself.
    succeeded = set(sorted(wave)[: len(wave) // 2])
    for mac in sorted(wave):
        if mac in succeeded:
            assert check(mac, "2.0.0")[0] == 304
    failing = sorted(wave - succeeded)
    for _ in range(3):  # up to the third offer, then the inferred failure (or, once halted, no offer)
        for mac in failing:
            check(mac, "1.0.0")
    catalog = fleet.catalog.load("door", fresh=True)
    assert catalog is not None
    track = catalog.channels["stable"].tracks[Kind.APP]
    assert track.state is TrackState.HALTED
    assert track.successes == len(succeeded)
    assert track.failures / (track.failures + track.successes) > 0.2

    # Halted: nobody on 1.0.0 is offered 2.0.0 any more; devices already on 2.0.0 keep it.
    after = {mac: check(mac, "1.0.0") for mac in FLEET if mac not in succeeded}
    assert all(status == 304 for status, _ in after.values())
    assert all(check(mac, "2.0.0")[0] == 304 for mac in sorted(succeeded)[:20])
    device = fleet.devices.get(failing[0])
    assert device is not None and "app:2.0.0" in device.failed

    # Rollback: the channel points at 1.0.0 again, as a deliberate downgrade devices accept.
    channel = catalog.channels["stable"]
    rolled = replace(track, version="1.0.0", previous="2.0.0", percent=100, state=TrackState.ACTIVE, rollback=True)
    fleet.catalog.put_channel(replace(channel, tracks={Kind.APP: rolled}))
    back = {mac: check(mac, "2.0.0") for mac in sorted(succeeded)}
    assert offered(back, "1.0.0") == succeeded
    assert all(check(mac, "1.0.0")[0] == 304 for mac in FLEET[:50])
