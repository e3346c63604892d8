"""DynamoDB and S3 requests per check, counted on the clients the service uses (botocore's before-call
event fires once per request sent, which is what DynamoDB bills): an unchanged device's warm check reads
its record and writes nothing; a check that changes something, or comes a heartbeat after the last write,
reads once and writes once; transitions write exactly what they write when every check is written.

The stock client's cycle is replayed: `update()` then `updateFS()` seconds later, every 10 minutes.
A check's other cost, its decision line, is logged for every check that changed something and for a
sample (LogSampleRate) of those that did not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from moto import mock_aws

from bench.hooks import WRITE_OPS, Recorder
from otafleet.config import load_settings
from otafleet.storage.catalog import CatalogStore
from support.clock import Clock
from support.devices import esp8266_headers
from support.world import World

MAC = "5C:CF:7F:00:00:01"
GET = Counter({"dynamodb.GetItem": 1})
GET_AND_UPDATE = Counter({"dynamodb.GetItem": 1, "dynamodb.UpdateItem": 1})
Counted = tuple[int, Counter[str]]  # a check's status and its requests


class Fleet:
    """One assigned device on 1.0.0, its service on a settable clock, every request counted."""

    def __init__(self, heartbeat_minutes: float, log_sample_rate: float = 0.0) -> None:
        settings = replace(load_settings(), check_heartbeat_minutes=heartbeat_minutes, log_sample_rate=log_sample_rate)
        self.world = World.create(settings)
        self.world.product("door", "esp8266")
        for version in ("1.0.0", "1.1.0"):
            self.world.release("door", version)
        self.world.channel("door", app="1.0.0")
        self.world.device(MAC)
        self.clock = Clock()
        # A warm container: the catalog stays cached (its cache runs on a clock of its own, held still
        # here) until the test changes the channel and says so.
        self.catalog = CatalogStore(settings, clock=lambda: 0.0)
        self.service = replace(self.world.service(), catalog=self.catalog, clock=self.clock)
        self.recorder = Recorder().attach(
            [self.world.devices.client, self.catalog.client, self.world.blobs.client, self.world.catalog.client]
        )
        self.version = "1.0.0"

    def check(self, mode: str = "sketch", free_space: int = 1_000_000, sketch_size: int = 300_000) -> Counted:
        self.recorder.clear()
        headers = esp8266_headers(MAC, version=self.version, mode=mode, free_space=free_space, sketch_size=sketch_size)
        return self.service.check(headers).status, self.recorder.counts()

    def cycle(self, minutes: float = 10, free_space: int = 1_000_000, sketch_size: int = 300_000) -> list[Counted]:
        """The clock moves `minutes`, then update() and updateFS() five seconds apart."""
        self.clock.advance(minutes=minutes)
        sketch = self.check(free_space=free_space, sketch_size=sketch_size)
        self.clock.advance(seconds=5)
        return [sketch, self.check("spiffs", free_space=free_space, sketch_size=sketch_size)]

    def learn(self) -> None:
        """Checks until the rhythm is learned: those are written, whatever the heartbeat."""
        self.check()
        for _ in range(4):
            self.cycle()

    def publish(self, version: str) -> None:
        self.world.channel("door", app=version)
        self.catalog.invalidate()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with mock_aws():
        yield Fleet(heartbeat_minutes=60)


def writes(counts: Counter[str]) -> int:
    return sum(n for key, n in counts.items() if key.split(".")[1] in WRITE_OPS)


def test_an_unchanged_warm_check_reads_once_and_writes_nothing(fleet: Fleet) -> None:
    fleet.learn()
    for _ in range(3):  # 30 minutes of the stock cycle, inside the heartbeat
        assert fleet.cycle() == [(304, GET), (304, GET)]


def test_a_check_that_reports_something_new_reads_once_and_writes_once(fleet: Fleet) -> None:
    fleet.learn()
    assert fleet.cycle() == [(304, GET), (304, GET)]
    # The sketch grew by an OTA of the same version string elsewhere: free space and size change.
    changed = fleet.cycle(free_space=900_000, sketch_size=400_000)
    assert changed[0] == (304, GET_AND_UPDATE)
    assert changed[1] == (304, GET), "the updateFS() check of the same cycle reports nothing new"


def test_a_heartbeat_after_the_last_write_the_check_is_written_once(fleet: Fleet) -> None:
    fleet.learn()
    counted = [c for _ in range(6) for c in fleet.cycle()]  # the clock passes the 60 minute heartbeat
    written = [i for i, (_, counts) in enumerate(counted) if writes(counts)]
    assert len(written) == 1, counted
    assert counted[written[0]] == (304, GET_AND_UPDATE)
    assert all(c == (304, GET) for i, c in enumerate(counted) if i not in written)


def _offer_and_install(fleet: Fleet) -> list[Counted]:
    """From a learned rhythm: a new release and its offer (the download succeeds and the device reboots,
    so that cycle has no updateFS()), the first cycle on the new build, then two more."""
    fleet.learn()
    fleet.publish("1.1.0")
    fleet.clock.advance(minutes=10)
    steps = [fleet.check()]
    fleet.version = "1.1.0"
    steps += fleet.cycle(minutes=1)  # back up a minute later: the verdict, then the new build's updateFS()
    steps += fleet.cycle() + fleet.cycle()
    return steps


def test_transitions_make_the_same_requests_with_and_without_a_heartbeat() -> None:
    with mock_aws():
        every_check = _offer_and_install(Fleet(heartbeat_minutes=0))
    with mock_aws():
        heartbeat = _offer_and_install(Fleet(heartbeat_minutes=60))
    assert [status for status, _ in heartbeat] == [302] + [304] * 6
    # The offer starts a silence watch, the first check on the new build ends it with the verdict, and
    # the new build's first updateFS() reports it: each is written as it is when every check is.
    for step in (0, 1, 2):
        assert heartbeat[step] == every_check[step], step
        assert writes(heartbeat[step][1]) == 1, step
    # The checks after changed nothing: with the heartbeat they read and write nothing.
    for step in (3, 4, 5, 6):
        assert heartbeat[step][1] == GET, step
        assert every_check[step][1] == GET_AND_UPDATE, step


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [vars(r) for r in caplog.records if r.getMessage() == "decision"]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_an_unchanged_checks_decision_line_is_only_logged_in_the_sample(
    rate: float, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_aws():
        fleet = Fleet(heartbeat_minutes=60, log_sample_rate=rate)
        fleet.learn()
        caplog.clear()
        assert fleet.cycle() == [(304, GET), (304, GET)]
        unchanged = decision_lines(caplog)
        caplog.clear()
        fleet.cycle(free_space=900_000)  # the sketch check reports something new: written, always logged
        changed = decision_lines(caplog)
    assert [(line["written"], line["sampled"]) for line in unchanged] == ([(None, True)] * 2 if rate else [])
    assert [(line["written"], line["sampled"]) for line in changed][:1] == [("reported", False)]
