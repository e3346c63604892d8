"""A mixed fleet through the real update handler under moto: app and filesystem images, every kind of
evidence the stock clients give (version strings, MD5 drift, old cores with only the sketch size, ESP32
SHA-256, filesystems without a version), devices that really fail, and forged enrollments.

Each simulated device runs the stock client's cycle, `update()` then `updateFS()`, and acts on the
answer as the real client would: a 302 it follows installs the image (the app reboots into it), unless
the device is one that fails; a 304 changes nothing."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from moto import mock_aws

from otafleet import rollout
from otafleet.config import load_settings
from otafleet.models import AttemptState, Channel, Kind, Track, TrackState
from support.devices import esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

OLD_SIZE, NEW_SIZE = 300_016, 310_032


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


NEW_VARIANTS = (md5("1.1.0-qio"), md5("1.1.0-dio"))


@dataclass
class Sim:
    """One device: what its headers say, and how it behaves."""

    mac: str
    style: str  # "version", "drift", "old-core", "fails", "fs-blind"
    app: str = "1.0.0"
    fs: str = "fs-1"
    offers: dict[str, int] = field(default_factory=lambda: {"app": 0, "fs": 0})

    def headers(self, mode: str, mac: str | None = None) -> dict[str, str]:
        new = self.app == "1.1.0"
        size = NEW_SIZE if new else OLD_SIZE
        running_md5 = NEW_VARIANTS[hash(self.mac) % 2] if new else md5(f"1.0.0-{self.mac}")
        kw: dict[str, Any] = {"sketch_size": size, "mode": mode}
        if self.style == "old-core":
            kw.update(mode=None if mode == "sketch" else mode, chip_id=None)
        else:
            kw["md5"] = running_md5
        if mode == "sketch" and self.style in ("version", "fails"):
            kw["version"] = self.app
        if mode == "spiffs" and self.style != "fs-blind":
            kw["version"] = self.fs
        return esp8266_headers(mac or self.mac, **kw)

    def cycle(self, path: str = "/update") -> None:
        for mode, kind in (("sketch", "app"), ("spiffs", "fs")):
            response = update_app.handler(http_api_event(path, self.headers(mode)), None)
            if response["statusCode"] != 302:
                continue
            self.offers[kind] += 1
            if self.style == "fails":
                continue  # downloads, fails to boot it or to write it: comes back on the old build
            if kind == "app":
                self.app = "1.1.0"
                return  # update() reboots into the new sketch: no updateFS this cycle
            self.fs = "fs-2"


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        world = World.create(replace(load_settings(), catalog_cache_seconds=3600))
        update_app._service = world.service()
        world.product("door", "esp8266", enroll=True)
        world.release("door", "1.0.0", sketch_size=OLD_SIZE)
        world.release("door", "1.1.0", sketch_size=NEW_SIZE, flashed_md5s=NEW_VARIANTS)
        world.release("door", "fs-1", kind=Kind.FS, chip=None)
        world.release("door", "fs-2", kind=Kind.FS, chip=None)
        yield world


def start(world: World, min_devices: int = 20) -> None:
    tracks = {
        Kind.APP: Track(version="1.1.0", previous="1.0.0", max_failure_rate=0.2, min_devices=min_devices),
        Kind.FS: Track(version="fs-2", previous="fs-1", max_failure_rate=0.2, min_devices=min_devices),
    }
    world.catalog.put_channel(Channel("door", "stable", tracks))


def fleet(world: World, mix: dict[str, int]) -> list[Sim]:
    sims: list[Sim] = []
    for style, n in mix.items():
        for _ in range(n):
            i = len(sims)
            sim = Sim(f"5C:CF:7F:02:{i >> 8:02X}:{i & 255:02X}", style)
            world.device(sim.mac, "door")
            sims.append(sim)
    random.Random(7).shuffle(sims)
    return sims


def track(world: World, kind: Kind) -> Track:
    catalog = world.catalog.load("door", fresh=True)
    assert catalog is not None
    return catalog.channels["stable"].tracks[kind]


MIX = {"version": 100, "drift": 75, "old-core": 50, "fs-blind": 15, "fails": 10}


def test_mixed_fleet_counts_every_outcome_once_and_nothing_false(world: World) -> None:
    sims = fleet(world, MIX)
    start(world)
    # Forged enrollments: invented MACs through the open product path, every one "failing" forever.
    forgers = [Sim(f"02:00:00:00:{i >> 8:02X}:{i & 255:02X}", "fails") for i in range(40)]
    for _ in range(4):  # three offers and the verdict of a device that fails
        for sim in sims:
            sim.cycle()
        for forger in forgers:
            forger.cycle("/update/door")

    app_track, fs_track = track(world, Kind.APP), track(world, Kind.FS)
    real_failures = MIX["fails"]
    healthy = len(sims) - real_failures
    # Every real failure counted once, every success once, forged devices not at all, no halt at 4 %.
    assert (app_track.successes, app_track.failures, app_track.unknowns) == (healthy, real_failures, 0)
    assert app_track.state is TrackState.ACTIVE
    # Filesystems: those that report a version are judged; those that report none end unknown once.
    with_fs_version = healthy - MIX["fs-blind"]
    assert (fs_track.successes, fs_track.failures) == (with_fs_version, real_failures)
    assert fs_track.unknowns == MIX["fs-blind"]
    for sim in sims:
        device = world.devices.get(sim.mac)
        assert device is not None
        app_attempt, fs_attempt = device.attempts[Kind.APP], device.attempts[Kind.FS]
        # 0 false failures, 0 endless re-offers.
        assert (app_attempt.state is AttemptState.FAILED) is (sim.style == "fails"), sim
        assert sim.offers["app"] <= 3 and sim.offers["fs"] <= 3, sim
        if sim.style == "fs-blind":
            assert fs_attempt.state is AttemptState.UNKNOWN and sim.offers["fs"] == 1
    for forger in forgers:
        device = world.devices.get(forger.mac)
        assert device is not None and device.enrolled_at is not None
        assert not device.attempts[Kind.APP].trusted


def test_the_rollout_halts_at_the_check_that_crosses_its_threshold(world: World) -> None:
    sims = fleet(world, {"version": 70, "fails": 30})
    start(world, min_devices=20)
    halted_at: tuple[int, int] | None = None
    for _ in range(5):
        for sim in sims:
            sim.cycle()
            t = track(world, Kind.APP)
            # After every check: halted exactly when the counts are over the threshold.
            assert (t.state is TrackState.HALTED) is rollout.over_threshold(t) or halted_at is not None, t
            if t.state is TrackState.HALTED and halted_at is None:
                halted_at = (t.successes, t.failures)
    assert halted_at is not None
    ok, fail = halted_at
    assert ok + fail >= 20 and fail / (ok + fail) > 0.2
    # Not one outcome earlier would have crossed it.
    assert ok + fail - 1 < 20 or (fail - 1) / (ok + fail - 1) <= 0.2
