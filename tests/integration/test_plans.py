"""Rollout plans against moto, through the real service, fleet and controller on a simulated clock: a stage
advances once its soak is over and its devices installed the release, and never twice for overlapping
runs; a halt, a pause or an operator's change wins over an advance; each move is announced once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from otafleet import rollout
from otafleet.controller import Controller
from otafleet.fleet import Fleet, FleetError
from otafleet.models import Catalog, Kind, Track, TrackState
from otafleet.service import UpdateService
from support.clock import Clock
from support.devices import esp8266_headers, http_api_event
from support.topics import Subscription, subscribe
from support.world import World
from update import app as update_app

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SIZES = {"1.0.0": 300_016, "2.0.0": 310_032}
MACS = [f"5C:CF:7F:00:02:{i:02X}" for i in range(60)]
STAGES = (10, 50, 100)


@dataclass
class Rig:
    world: World
    clock: Clock
    service: UpdateService
    fleet: Fleet
    controller: Controller
    topic: Subscription
    running: dict[str, str]

    def track(self) -> Track:
        channel = self.world.catalog.get_channel("door", "stable")
        assert channel is not None
        return channel.tracks[Kind.APP]

    def cycle(self) -> set[str]:
        """Every device checks (and, if offered, installs and checks again a minute later), an hour on."""
        offered = set()
        for mac in MACS:
            version = self.running[mac]
            answer = self.service.check(esp8266_headers(mac, version=version, sketch_size=SIZES[version]))
            if answer.status == 302:
                offered.add(mac)
                self.running[mac] = "2.0.0"
        self.clock.now += timedelta(minutes=1)
        for mac in offered:
            self.service.check(esp8266_headers(mac, version="2.0.0", sketch_size=SIZES["2.0.0"]))
        self.clock.now += timedelta(minutes=59)
        return offered

    def events(self) -> list[dict[str, object]]:
        return [json.loads(m["Message"]) for m in self.topic.received()]

    def start(self, **kw: object) -> Track:
        options: dict[str, object] = {"stages": STAGES, "soak_seconds": 7200, "min_success": 0.9, "min_devices": 3}
        options.update(kw)
        return self.fleet.start_plan("door", "stable", "2.0.0", **options).track  # type: ignore[arg-type]


@pytest.fixture
def rig(world: World) -> Rig:
    world.product("door", "esp8266")
    for version, size in SIZES.items():
        world.release("door", version, sketch_size=size)
    world.channel("door", app="1.0.0")
    for mac in MACS:
        world.device(mac, "door")
    clock = Clock(START)
    topic = subscribe(world.settings.region)
    settings = replace(world.settings, alarm_topic_arn=topic.topic_arn)
    service = UpdateService(settings, world.devices, world.catalog, world.blobs)
    service.clock = clock
    controller = Controller(settings, world.devices, world.catalog, clock=clock)
    rig = Rig(world, clock, service, Fleet(world.devices, world.catalog, clock=clock), controller, topic, {})
    rig.running.update(dict.fromkeys(MACS, "1.0.0"))
    rig.cycle()  # everyone checked in on 1.0.0
    return rig


def in_stage(percent: int) -> set[str]:
    return {m for m in MACS if rollout.in_rollout(m, "door", Kind.APP, "2.0.0", percent)}


def test_a_plan_offers_its_stages_in_turn_and_completes(rig: Rig) -> None:
    track = rig.start()
    assert (track.percent, track.plan and track.plan.stage) == (10, 0)
    assert rig.cycle() == in_stage(10)
    assert rig.controller.run().moved == ()  # an hour in: still soaking
    rig.cycle()
    [moved] = rig.controller.run().moved  # two hours in, every offered device installed
    assert (moved.action.value, moved.percent) == ("advance", 50)
    assert rig.cycle() == in_stage(50) - in_stage(10)  # raising a stage only adds devices
    rig.cycle()
    assert [m.percent for m in rig.controller.run().moved] == [100]
    rig.cycle()
    rig.cycle()
    [done] = rig.controller.run().moved
    assert done.action.value == "complete"
    assert rig.controller.run().moved == ()
    track = rig.track()
    assert rollout.complete(track) and track.plan is not None and track.plan.completed
    assert all(v == "2.0.0" for v in rig.running.values())
    assert [(e["event"], e["details"]["percent"]) for e in rig.events()] == [  # type: ignore[index]
        ("advanced", 50),
        ("advanced", 100),
        ("completed", 100),
    ]


def stale_catalog(rig: Rig) -> Callable[[], None]:
    """From now on, the next catalog read returns the catalog as it is now: what a run that read it
    before another run wrote sees."""
    store = rig.world.catalog
    pending = [store.load("door", fresh=True)]
    real = store.load

    def load(product: str, *, fresh: bool = False) -> Catalog | None:
        return pending.pop() if pending else real(product, fresh=fresh)

    return lambda: setattr(store, "load", load)


def test_two_overlapping_runs_advance_a_stage_once(rig: Rig) -> None:
    rig.start()
    rig.cycle()
    rig.cycle()
    lag = stale_catalog(rig)  # the second run reads the soaked stage before the first one writes
    assert [m.percent for m in rig.controller.run().moved] == [50]
    lag()
    assert rig.controller.run().moved == ()  # same decision, on the revision the first run replaced: lost
    assert rig.track().percent == 50 and rig.track().plan.stage == 1  # type: ignore[union-attr]
    assert [e["event"] for e in rig.events()] == ["advanced"]


def test_a_halt_wins_over_an_advance(rig: Rig) -> None:
    rig.start(max_failure_rate=0.2)
    for _ in range(4):  # the stage's devices take the image and come back on the old build, four times
        for mac in in_stage(10):
            rig.service.check(esp8266_headers(mac, version="1.0.0", sketch_size=SIZES["1.0.0"]))
        rig.clock.now += timedelta(minutes=40)
    assert rig.controller.run().moved == ()
    track = rig.track()
    # Halted by the check that crossed the bar (min_devices 3): the rest are not offered it again.
    assert track.state is TrackState.HALTED and track.percent == 10 and track.failures == 3
    assert [e["event"] for e in rig.events()] == ["halted"]


def test_pause_holds_the_plan_and_resume_soaks_the_stage_afresh(rig: Rig) -> None:
    rig.start()
    rig.cycle()
    rig.fleet.pause("door", "stable")
    rig.cycle()
    assert rig.controller.run().moved == ()
    rig.fleet.resume("door", "stable")
    rig.cycle()
    assert rig.controller.run().moved == ()  # an hour after the resume
    rig.cycle()
    assert [m.percent for m in rig.controller.run().moved] == [50]


def test_abort_halts_for_good_and_channel_set_takes_over_by_hand(rig: Rig) -> None:
    rig.start()
    rig.cycle()
    aborted = rig.fleet.abort("door", "stable").track
    assert aborted.state is TrackState.HALTED and aborted.plan is not None and aborted.plan.aborted
    with pytest.raises(FleetError, match="aborted"):
        rig.fleet.resume("door", "stable")
    with pytest.raises(FleetError, match="no plan running"):
        rig.fleet.abort("door", "stable")
    rig.fleet.start_plan("door", "stable", "2.0.0", stages=STAGES, soak_seconds=0, min_success=0.9)
    by_hand = rig.fleet.set_channel("door", "stable", "2.0.0", percent=30).track
    assert by_hand.plan is None and by_hand.percent == 30
    rig.cycle()
    assert rig.controller.run().moved == ()


def test_a_plan_for_the_release_already_rolling_out_keeps_its_devices_and_counts(rig: Rig) -> None:
    rig.fleet.set_channel("door", "stable", "2.0.0", percent=30)
    rig.cycle()
    rig.cycle()
    counted = rig.track().successes
    assert counted == len(in_stage(30))
    track = rig.start()
    assert track.percent == 50 and track.plan is not None and track.plan.stage == 1
    assert track.successes == counted


def test_status_shows_the_stages_and_the_next_action(rig: Rig) -> None:
    rig.start()
    rig.cycle()
    [status] = rig.controller.status("door", "stable")
    first, second, _ = status.stages
    assert (first.percent, first.eligible, first.installed, first.pending) == (
        10,
        len(in_stage(10)),
        len(in_stage(10)),
        0,
    )
    assert second.offered == 0 and second.eligible == len(in_stage(50) - in_stage(10))
    assert sum(s.eligible for s in status.stages) == len(MACS)
    assert status.step.action.value == "wait" and status.step.at == "2026-11-24T15:00:00Z"


def test_a_stage_whose_devices_do_not_count_yet_waits_for_evidence(world: World) -> None:
    """Devices that enrolled themselves through /update/door are in the stage and take the release, but
    their verdicts do not count for a day (the threat model): the stage is not empty, it has no
    evidence, so the plan never advances on them."""
    world.product("door", "esp8266", enroll=True)
    for version, size in SIZES.items():
        world.release("door", version, sketch_size=size)
    world.channel("door", app="1.0.0")
    clock = Clock(START)
    service = world.service()
    service.clock = clock
    update_app._service = service
    fleet = Fleet(world.devices, world.catalog, clock=clock)
    controller = Controller(world.settings, world.devices, world.catalog, clock=clock)
    fleet.start_plan("door", "stable", "2.0.0", stages=(50, 100), soak_seconds=0, min_success=0.9, min_devices=3)
    running = dict.fromkeys(MACS[:20], "1.0.0")
    for _ in range(3):
        for mac, version in running.items():
            headers = esp8266_headers(mac, version=version, sketch_size=SIZES[version])
            if update_app.handler(http_api_event("/update/door", headers), None)["statusCode"] == 302:
                running[mac] = "2.0.0"
        clock.now += timedelta(hours=1)
        assert controller.run().moved == ()
    [status] = controller.status("door", "stable")
    assert "2.0.0" in running.values()  # they did take it
    assert status.stages[0].present > 0 and status.stages[0].eligible == 0
    assert status.track.percent == 50 and status.track.successes == 0 and status.step.action.value == "wait"
