"""Rollout plans on a simulated fleet (support/fleetsim.py), through the real handler and controller:

- a release that bricks 30 % of the devices it reaches halts before its second stage, its bricked
  devices reported silent;
- a good release advances stage by stage on schedule, with no false halt under a 5 % background outage;
- a paced rollout never exceeds its rate in any minute, and its pace grows at each stage;
- no offer happens outside a maintenance window.

The fleet is sized for the test suite (OTAFLEET_SIM_FLEET overrides it; `make simulate` runs 2,000
devices with stages 1,10,50,100). The first stage is sized to hold about 20 devices either way, so the
statistics of the first stage, where a bad release must be caught, are those of the full-size run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from moto import mock_aws

from otafleet import plans, rollout
from otafleet.models import AttemptState, Kind, TrackState
from support import fleetsim
from support.clock import iso
from support.fleetsim import CHANNEL, PRODUCT, Sim

FLEET = int(os.environ.get("OTAFLEET_SIM_FLEET", "300"))
FIRST = max(1, round(2000 / FLEET))  # a first stage of about 20 devices
STAGES = tuple(sorted({FIRST, 10, 50, 100}))
SOAK = timedelta(hours=2)


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


def report(scenario: str, sim: Sim, **figures: object) -> None:
    """What a scenario showed, for `make simulate` (OTAFLEET_SIM_REPORT names the file it appends to)."""
    path = os.environ.get("OTAFLEET_SIM_REPORT")
    if not path:
        return
    t = sim.track()
    line = {
        "scenario": scenario,
        "fleet": len(sim.devices),
        "stages": STAGES,
        "checks": sim.checks,
        "state": t.state.value,
        "percent": t.percent,
        "installed": t.successes,
        "failed": t.failures,
        "unknown": t.unknowns,
        "silent": t.silents,
        "halts": [(iso(when), h.rule, h.why) for when, h in sim.halts],
        "moves": [(iso(when), m.action.value, m.percent) for when, m in sim.moves],
        **figures,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line, default=str) + "\n")


def start(sim: Sim, **kw: object) -> None:
    sim.fleet.start_plan(
        PRODUCT,
        CHANNEL,
        "2.0.0",
        stages=STAGES,
        soak_seconds=int(SOAK.total_seconds()),
        min_success=0.95,
        max_failure_rate=0.05,
        min_devices=10,
        **kw,  # type: ignore[arg-type]
    )


def reaches(stage: int, mac: str) -> bool:
    return rollout.in_rollout(mac, PRODUCT, Kind.APP, "2.0.0", STAGES[stage])


def test_a_release_that_bricks_30_percent_halts_in_its_first_stage(moto: None) -> None:
    sim = fleetsim.build(FLEET, seed=3)
    bricks = [mac for i, mac in enumerate(sim.devices) if i % 10 < 3]
    for mac in bricks:
        sim.devices[mac].bricked_by = frozenset({"2.0.0"})
    sim.run_until(fleetsim.START + timedelta(hours=1))  # the fleet in its rhythm
    t0 = sim.clock.now
    start(sim)
    sim.run_while(lambda: sim.track().state is TrackState.ACTIVE, t0 + timedelta(hours=12))

    track = sim.track()
    assert track.state is TrackState.HALTED
    [(when, halt)] = sim.halts
    assert halt.rule == "silence" and when - t0 < timedelta(hours=6)
    assert sim.moves == [] and track.percent == STAGES[0]  # never reached its second stage
    assert track.plan is not None and track.plan.stage == 0
    offered = {mac for _, mac, version in sim.offers if version == "2.0.0"}
    assert offered and all(reaches(0, mac) for mac in offered)
    assert track.failures == 0
    # Halted: nobody else is offered it, however long the fleet keeps checking; every bricked device is
    # reported silent once its own quiet limit has passed.
    sim.run_until(sim.clock.now + timedelta(hours=4))
    assert {mac for _, mac, version in sim.offers if version == "2.0.0"} == offered
    dead = {mac for mac in offered if sim.devices[mac].dead}
    assert dead and {mac for mac in offered if sim.state(mac) is AttemptState.SILENT} == dead
    assert sim.track().silents == len(dead)
    report("bad release", sim, halted_after=str(when - t0), offered=len(offered), bricked=len(dead))


def test_a_good_release_advances_on_schedule_without_false_halts_under_a_background_outage(moto: None) -> None:
    sim = fleetsim.build(FLEET, seed=5, outage_share=0.05)
    sim.run_until(fleetsim.START + timedelta(hours=1))
    t0 = sim.clock.now
    start(sim)

    def running() -> bool:
        t = sim.track()
        return t.state is TrackState.ACTIVE and t.plan is not None and t.plan.completed is None

    sim.run_while(running, t0 + timedelta(hours=24))
    track = sim.track()
    assert sim.halts == [] and track.state is TrackState.ACTIVE
    assert track.plan is not None and track.plan.completed is not None, plans.next_step
    advances = [(when, m.percent) for when, m in sim.moves if m.action is plans.Action.ADVANCE]
    assert [p for _, p in advances] == list(STAGES[1:])
    # On schedule: each stage moves on after its soak, within a couple of device intervals of it.
    begun = t0
    for when, _ in advances:
        assert SOAK <= when - begun <= SOAK + timedelta(hours=2), (when, begun)
        begun = when
    # Silent devices were offline, not bricked: the ones back since are judged by their evidence.
    assert track.failures == 0 and track.successes >= 0.85 * FLEET
    back = [d for d in sim.devices.values() if d.app == "2.0.0" and d.offline_until is None]
    assert all(sim.state(d.mac) is not AttemptState.FAILED for d in back)
    assert sim.answers.get("500", 0) == 0 and sim.answers.get("503", 0) == 0
    report("good release", sim, stage_times=[str(when - t0) for when, _ in advances], outage_share=0.05)


def test_a_paced_plan_never_exceeds_its_rate_in_any_minute_and_grows_it(moto: None) -> None:
    """Half the fleet in the first stage at two offers a minute is more than its checks bring in some
    minutes; the pace doubles when the plan advances."""
    sim = fleetsim.build(FLEET, seed=9, outage_share=0.0)
    sim.run_until(fleetsim.START + timedelta(hours=1))
    t0 = sim.clock.now
    sim.fleet.start_plan(
        PRODUCT,
        CHANNEL,
        "2.0.0",
        stages=(50, 100),
        soak_seconds=int(SOAK.total_seconds()),
        min_success=0.95,
        min_devices=10,
        max_offers_per_minute=2,
        pace_growth=2.0,
    )
    sim.run_until(t0 + SOAK + timedelta(hours=1, minutes=30))
    [(advanced, move)] = sim.moves
    assert move.percent == 100 and sim.track().max_offers_per_minute == 4
    per_minute = sim.offers_per_minute()
    assert sim.answers["paced"] > 0
    for minute, n in per_minute.items():
        assert n <= (4 if minute >= advanced.replace(second=0, microsecond=0) else 2), (minute, n)
    assert max(n for minute, n in per_minute.items() if minute > advanced) > 2  # the grown pace was used
    assert len({mac for _, mac, _ in sim.offers}) == len(sim.offers)  # nobody offered twice
    report("paced", sim, paced=sim.answers["paced"], busiest_minute=max(per_minute.values()), pace=[2, 4])


def test_no_offer_happens_outside_the_window(moto: None) -> None:
    sim = fleetsim.build(FLEET // 2, seed=11, outage_share=0.0)
    sim.fleet.set_window(PRODUCT, "daily 02:00-04:00")
    sim.fleet.set_channel(PRODUCT, CHANNEL, "2.0.0", percent=100)
    sim.run_until(fleetsim.START + timedelta(hours=5))
    assert sim.offers and sim.answers["outside-window"] > 0
    assert all(2 <= when.hour < 4 for when, _, _ in sim.offers)
    assert len({mac for _, mac, _ in sim.offers}) == len(sim.devices)  # and everyone got it inside
    outside = sum(1 for when, _, _ in sim.offers if not 2 <= when.hour < 4)
    report("window", sim, offers=len(sim.offers), outside_window=outside, answered=sim.answers["outside-window"])
