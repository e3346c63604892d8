"""A simulated fleet on a simulated clock, through the real update handler and the real controller.

Each device checks on its own interval (45-75 min, ±5 % jitter), as the stock ESP8266 client does from
a sketch's loop: the headers of the build it runs, `302` → it downloads and reboots into the image (or,
if the release bricks it, is never heard from again). A background outage takes devices offline for 2-6
hours at a time, so that `outage_share` of the fleet is offline at any moment (power cuts, Wi-Fi); a
device back from one checks at once, as a device does after boot. The controller runs every ten minutes,
as its schedule would. Nothing sleeps: the clock jumps from one event to the next.

Used by tests/integration/test_plan_simulation.py (a fleet sized for the test suite) and by
`make simulate` (scripts/simulate.py: 2,000 devices and more).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from otafleet.config import Settings, load_settings
from otafleet.controller import Controller, Halted, Moved
from otafleet.fleet import Fleet
from otafleet.models import AttemptState, Kind, Rhythm, Track
from otafleet.storage.dynamo import to_item
from otafleet.storage.items import rhythm_to_map
from support.clock import Clock
from support.devices import esp8266_headers, http_api_event
from support.world import World
from update import app as update_app

START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
CONTROLLER_EVERY = timedelta(minutes=10)
OUTAGE_HOURS = (2.0, 6.0)
PRODUCT, CHANNEL = "door", "stable"


@dataclass
class SimDevice:
    mac: str
    interval: float  # seconds
    app: str
    bricked_by: frozenset[str] = frozenset()  # versions that never boot on it
    dead: bool = False
    offline_until: datetime | None = None
    offers: int = 0


@dataclass
class Sim:
    world: World
    clock: Clock
    controller: Controller
    fleet: Fleet
    devices: dict[str, SimDevice]
    sizes: dict[str, int]  # release version → the sketch size a device running it reports
    rng: random.Random
    outage_share: float
    queue: list[tuple[datetime, str]] = field(default_factory=list)
    next_tick: datetime = START
    offers: list[tuple[datetime, str, str]] = field(default_factory=list)  # (when, mac, version)
    answers: Counter[str] = field(default_factory=Counter)  # 304 reasons and other statuses
    halts: list[tuple[datetime, Halted]] = field(default_factory=list)
    moves: list[tuple[datetime, Moved]] = field(default_factory=list)
    checks: int = 0

    # --- time ----------------------------------------------------------------------------------------

    def run_until(self, end: datetime) -> None:
        while True:
            at = min(self.queue[0][0] if self.queue else end, self.next_tick, end)
            if at >= end:
                self.clock.now = end
                return
            self.clock.now = at
            if at == self.next_tick:
                self.tick()
                self.next_tick += CONTROLLER_EVERY
                continue
            _, mac = heapq.heappop(self.queue)
            self.visit(self.devices[mac])

    def run_while(self, busy: Callable[[], bool], limit: datetime) -> None:
        """Run in controller steps while `busy()` holds, at most until `limit`."""
        while busy() and self.clock.now < limit:
            self.run_until(min(self.clock.now + CONTROLLER_EVERY, limit))

    def tick(self) -> None:
        report = self.controller.run()
        assert not report.faults, report.faults
        self.halts += [(self.clock.now, h) for h in report.halted]
        self.moves += [(self.clock.now, m) for m in report.moved]

    # --- devices ---------------------------------------------------------------------------------------

    def schedule(self, d: SimDevice, at: datetime) -> None:
        heapq.heappush(self.queue, (at, d.mac))

    def visit(self, d: SimDevice) -> None:
        now = self.clock.now
        if d.dead:
            return
        if d.offline_until is not None and now < d.offline_until:
            self.schedule(d, d.offline_until)
            return
        if d.offline_until is None and self.rng.random() < self.outage_chance(d):
            d.offline_until = now + timedelta(hours=self.rng.uniform(*OUTAGE_HOURS))
            self.schedule(d, d.offline_until)
            return
        d.offline_until = None
        self.check(d)
        if not d.dead:
            self.schedule(d, now + timedelta(seconds=d.interval * self.rng.uniform(0.95, 1.05)))

    def outage_chance(self, d: SimDevice) -> float:
        """The chance that an outage starts before a check, so that `outage_share` of the time is offline."""
        if self.outage_share <= 0:
            return 0.0
        mean = sum(OUTAGE_HOURS) / 2 * 3600
        return self.outage_share * d.interval / ((1 - self.outage_share) * mean + self.outage_share * d.interval)

    def check(self, d: SimDevice) -> None:
        headers = esp8266_headers(d.mac, version=d.app, sketch_size=self.sizes[d.app])
        response = update_app.handler(http_api_event("/update", headers), None)
        self.checks += 1
        status = response["statusCode"]
        if status == 302:
            version = response["headers"]["Location"].rsplit("/", 1)[-1].split(".bin")[0]
            self.offers.append((self.clock.now, d.mac, version))
            d.offers += 1
            d.app = version
            d.dead = version in d.bricked_by
        elif status == 304:
            headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
            self.answers[headers.get("x-otafleet-reason", "304")] += 1
        else:
            self.answers[str(status)] += 1

    # --- what the service knows --------------------------------------------------------------------

    def track(self) -> Track:
        channel = self.world.catalog.get_channel(PRODUCT, CHANNEL)
        assert channel is not None
        return channel.tracks[Kind.APP]

    def state(self, mac: str) -> AttemptState | None:
        device = self.world.devices.get(mac)
        assert device is not None
        attempt = device.attempts.get(Kind.APP)
        return attempt.state if attempt is not None else None

    def offers_per_minute(self) -> Counter[datetime]:
        return Counter(when.replace(second=0, microsecond=0) for when, _, _ in self.offers)


def learned(world: World, mac: str, rhythm: Rhythm) -> None:
    """The rhythm days of checks would have taught the device record (checks write it; `device assign`
    does not), so that a simulation need not replay those days."""
    world.devices.client.update_item(
        TableName=world.settings.devices_table,
        Key={"mac": {"S": mac}},
        UpdateExpression="SET rhythm = :r",
        ExpressionAttributeValues=to_item({":r": rhythm_to_map(rhythm)}),
    )


def build(
    size: int,
    *,
    versions: tuple[str, ...] = ("1.0.0", "2.0.0"),
    seed: int = 7,
    outage_share: float = 0.05,
    settings: Settings | None = None,
) -> Sim:
    """A world (inside moto, which the caller has started) with `size` devices on the first release, their
    rhythms learned (they have checked in on it for days), spread over their first interval."""
    world = World.create(settings or replace(load_settings(), catalog_cache_seconds=3600))
    clock = Clock(START)
    service = world.service()
    service.clock = clock
    update_app._service = service
    world.product(PRODUCT, "esp8266")
    sizes: dict[str, int] = {}
    for i, version in enumerate(versions):
        sizes[version] = 300_016 + 10_016 * i
        world.release(PRODUCT, version, sketch_size=sizes[version])
    world.channel(PRODUCT, CHANNEL, app=versions[0])
    rng = random.Random(seed)
    devices: dict[str, SimDevice] = {}
    sim = Sim(
        world,
        clock,
        Controller(world.settings, world.devices, world.catalog, clock=clock),
        Fleet(world.devices, world.catalog, clock=clock),
        devices,
        sizes,
        rng,
        outage_share,
    )
    for i in range(size):
        mac = f"5C:CF:7F:{i >> 16:02X}:{(i >> 8) & 255:02X}:{i & 255:02X}"
        interval = rng.uniform(45, 75) * 60
        first = START + timedelta(seconds=rng.uniform(0, interval))
        last = int((first - timedelta(seconds=interval)).timestamp())
        world.device(mac, PRODUCT, CHANNEL)
        learned(world, mac, Rhythm(last, round(interval), 10))
        devices[mac] = SimDevice(mac, interval, versions[0])
        sim.schedule(devices[mac], first)
    return sim
