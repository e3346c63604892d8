"""A small fleet on a simulated clock, through the real update handler and the real controller: a
release that bricks some of the devices it reaches is halted on their silence; a background outage that
silences offered and control devices alike halts nothing, and the devices it silenced are judged by
their evidence when they come back.

Every device checks about hourly (its own minute past the hour, a few minutes of jitter), on the old
release first so that its rhythm is learned, then through a 50 % rollout of 1.1.0. A device handed the
image installs it (or, if the release bricks it, is never heard from again) and checks again at its next
hourly time. The controller runs every simulated 10 minutes, as its schedule would. No sleeps."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from moto import mock_aws

from otafleet import rollout
from otafleet.config import load_settings
from otafleet.controller import Controller, Halted
from otafleet.models import AttemptState, Channel, Kind, Track, TrackState
from support.clock import Clock
from support.devices import esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

OLD_SIZE, NEW_SIZE = 300_016, 310_032
FLEET = 80
STEP = timedelta(minutes=10)
START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


@dataclass
class Sim:
    mac: str
    next_check: datetime
    app: str = "1.0.0"
    bricks: bool = False  # the new release never boots: the device is never heard from again
    dead: bool = False
    offers: int = 0

    def due(self, now: datetime, quiet: tuple[datetime, datetime] | None) -> bool:
        if self.dead or self.next_check > now:
            return False
        return quiet is None or not quiet[0] <= now < quiet[1]


@dataclass
class Run:
    world: World
    clock: Clock
    controller: Controller
    sims: list[Sim]
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    halts: list[tuple[datetime, Halted]] = field(default_factory=list)
    peak_offered_silence: float = 0.0

    def step(self, outage: frozenset[str] = frozenset(), window: tuple[datetime, datetime] | None = None) -> None:
        """Ten minutes: the devices due check in (those in `outage` not during `window`), then a controller run."""
        now = self.clock.now
        for sim in self.sims:
            if not sim.due(now, window if sim.mac in outage else None):
                continue
            size = NEW_SIZE if sim.app == "1.1.0" else OLD_SIZE
            event = http_api_event("/update", esp8266_headers(sim.mac, version=sim.app, sketch_size=size))
            status = update_app.handler(event, None)["statusCode"]
            if status == 302:
                sim.offers += 1
                sim.dead = sim.bricks
                sim.app = "1.1.0"
            sim.next_check = now + timedelta(minutes=60 + self.rng.randint(-4, 4))
        report = self.controller.run()
        self.halts += [(now, h) for h in report.halted]
        t = self.track()
        rate = rollout.offered_group(t).rate
        if rate is not None and rollout.offered_group(t).devices >= t.min_devices:
            self.peak_offered_silence = max(self.peak_offered_silence, rate)
        self.clock.now += STEP

    def until(
        self, end: datetime, outage: frozenset[str] = frozenset(), window: tuple[datetime, datetime] | None = None
    ) -> None:
        while self.clock.now < end:
            self.step(outage, window)

    def track(self) -> Track:
        channel = self.world.catalog.get_channel("door", "stable")
        assert channel is not None
        return channel.tracks[Kind.APP]

    def state(self, mac: str) -> AttemptState | None:
        device = self.world.devices.get(mac)
        assert device is not None
        attempt = device.attempts.get(Kind.APP)
        return attempt.state if attempt is not None else None


@pytest.fixture
def sim() -> Iterator[Run]:
    with mock_aws():
        world = World.create(replace(load_settings(), catalog_cache_seconds=3600))
        clock = Clock(START)
        service = world.service()
        service.clock = clock
        update_app._service = service
        world.product("door", "esp8266")
        world.release("door", "1.0.0", sketch_size=OLD_SIZE)
        world.release("door", "1.1.0", sketch_size=NEW_SIZE)
        world.channel("door", app="1.0.0")
        rng = random.Random(5)
        sims = []
        for i in range(FLEET):
            mac = f"5C:CF:7F:03:00:{i:02X}"
            world.device(mac, "door")
            sims.append(Sim(mac, START + timedelta(minutes=rng.randrange(60))))
        controller = Controller(world.settings, world.devices, world.catalog, clock=clock)
        run = Run(world, clock, controller, sims)
        run.until(START + timedelta(hours=5))  # rhythms learned on the old release
        yield run


def start_rollout(run: Run) -> datetime:
    track = Track("1.1.0", "1.0.0", percent=50, min_devices=10, max_failure_rate=0.5, max_silence_excess=0.1)
    run.world.catalog.put_channel(Channel("door", "stable", {Kind.APP: track}))
    return run.clock.now


def offered(sim: Sim) -> bool:
    return rollout.in_rollout(sim.mac, "door", Kind.APP, "1.1.0", 50)


def test_rhythms_are_learned_before_the_rollout(sim: Run) -> None:
    for s in sim.sims:
        device = sim.world.devices.get(s.mac)
        assert device is not None and device.rhythm is not None
        assert device.rhythm.samples >= 3 and 50 * 60 <= device.rhythm.seconds <= 75 * 60, device.rhythm


def test_a_release_that_bricks_devices_is_halted_on_their_silence(sim: Run) -> None:
    canaries = [s for s in sim.sims if offered(s)]
    bricked = {s.mac for s in canaries[::3]}  # a third of the devices that get it never come back
    for s in sim.sims:
        s.bricks = s.mac in bricked
    t0 = start_rollout(sim)
    sim.until(t0 + timedelta(hours=2, minutes=50))
    assert sim.track().silents == 0  # within 3 x an hourly rhythm nobody is silent yet
    sim.until(t0 + timedelta(hours=6))

    track = sim.track()
    assert track.state is TrackState.HALTED
    [(when, halt)] = sim.halts
    assert (halt.rule, halt.version) == ("silence", "1.1.0") and when >= t0 + timedelta(hours=3)
    assert track.silents == len(bricked) and track.successes == len(canaries) - len(bricked)
    assert track.failures == 0
    for s in sim.sims:
        expected = AttemptState.SILENT if s.bricks else AttemptState.INSTALLED if offered(s) else None
        assert sim.state(s.mac) is expected, s
    status = {s.kind: s for s in sim.controller.status("door", "stable")}[Kind.APP]
    assert status.observation.control.silent == 0 and status.observation.control.devices >= 30
    # Halted: the devices outside the first half are not offered it, nobody is offered it twice.
    assert all(s.offers == (1 if offered(s) else 0) for s in sim.sims)


def test_an_outage_that_silences_offered_and_control_devices_alike_halts_nothing(sim: Run) -> None:
    """40 % of each group loses power right before the offered devices' first check after the offer;
    they come back six hours later, the offered ones on the new build, and are judged installed."""
    t0 = start_rollout(sim)
    inside = [s.mac for s in sim.sims if offered(s)]
    outside = [s.mac for s in sim.sims if not offered(s)]
    hit = frozenset(mac for group in (inside, outside) for i, mac in enumerate(group) if i % 5 < 2)
    window = (t0 + timedelta(minutes=55), t0 + timedelta(hours=6, minutes=55))
    sim.until(t0 + timedelta(hours=9), hit, window)

    track = sim.track()
    assert sim.halts == [] and track.state is TrackState.ACTIVE
    # Silence alone would have halted it: the control group is what tells an outage from a bad release.
    assert sim.peak_offered_silence > track.max_silence_excess
    assert track.silents == 0 and track.successes == len(inside)
    assert all(sim.state(mac) is AttemptState.INSTALLED for mac in inside)
    came_back = [mac for mac in inside if mac in hit]
    assert len(came_back) == 16
    for mac in came_back:
        device = sim.world.devices.get(mac)
        assert device is not None and "matches" in (device.attempts[Kind.APP].why or "")
