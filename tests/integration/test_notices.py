"""Rollout notices reach the alarm topic once per transition, on moto: an SNS topic with an SQS queue
subscribed stands for the operators' subscription. Only the caller whose conditional write made a halt
publishes it: a second attempt at the same halt (another check, another run, a stale cache) loses the
write and publishes nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from otafleet import halts
from otafleet.config import Settings
from otafleet.controller import Controller
from otafleet.models import Kind, Track, TrackState
from otafleet.service import UpdateService
from support.devices import esp8266_headers
from support.topics import Subscription, subscribe
from support.world import World

MAC = "5C:CF:7F:00:00:51"


@pytest.fixture
def door(world: World) -> World:
    return world.rolling_out(MAC)


@pytest.fixture
def topic(door: World) -> Subscription:
    return subscribe(door.settings.region)


def with_topic(world: World, topic: Subscription) -> Settings:
    return replace(world.settings, alarm_topic_arn=topic.topic_arn)


def track(world: World) -> Track:
    channel = world.catalog.get_channel("door", "stable")
    assert channel is not None
    return channel.tracks[Kind.APP]


def test_a_halt_is_published_once_and_a_second_attempt_publishes_nothing(door: World, topic: Subscription) -> None:
    settings = with_topic(door, topic)
    judged = track(door)  # what two checks (or runs) both read before either wrote
    kw: dict[str, Any] = {
        "rule": "failures",
        "why": "failure rate 60.0% over 5 outcomes > 50.0%",
        "settings": settings,
        "actor": "controller",
        "at": "2026-12-01T08:00:00Z",
    }
    assert halts.halt(door.catalog, "door", "stable", Kind.APP, judged, **kw) is True
    assert halts.halt(door.catalog, "door", "stable", Kind.APP, judged, **kw) is False  # lost the conditional write
    assert track(door).state is TrackState.HALTED
    [envelope] = topic.received()
    assert envelope["TopicArn"] == topic.topic_arn
    assert envelope["Subject"] == "otafleet: rollout halted: door/stable app 1.1.0"
    assert {name: a["Value"] for name, a in envelope["MessageAttributes"].items()} == {
        "event": "halted",
        "product": "door",
    }
    body = json.loads(envelope["Message"])
    assert body == {
        "source": "otafleet",
        "event": "halted",
        "product": "door",
        "channel": "stable",
        "kind": "app",
        "version": "1.1.0",
        "why": "failure rate 60.0% over 5 outcomes > 50.0%",
        "details": {"rule": "failures", "failures": 0, "successes": 0, "unknowns": 0, "silents": 0},
    }


def test_the_check_whose_verdict_halts_publishes_it_and_later_checks_do_not(door: World, topic: Subscription) -> None:
    service = UpdateService(with_topic(door, topic), door.devices, door.catalog, door.blobs)
    headers = esp8266_headers(MAC, version="1.0.0", sketch_size=300_016)
    for _ in range(4):  # three offers ignored, then the failure: one failure of one outcome, over 50 %
        service.check(headers)
    assert track(door).state is TrackState.HALTED
    [envelope] = topic.received()
    body = json.loads(envelope["Message"])
    assert (body["event"], body["details"]["rule"], body["details"]["failures"]) == ("halted", "failures", 1)
    service.check(headers)  # the halted rollout is judged again by a later check: nothing new to say
    assert topic.received() == []


def test_the_controller_publishes_the_halt_it_writes_once(door: World, topic: Subscription) -> None:
    door.channel("door", app="1.1.0", previous="1.0.0", min_devices=2, max_failure_rate=0.2)
    # Two failures counted by checks whose halt write was then lost to a fault: the controller halts.
    door.catalog.client.update_item(
        TableName=door.settings.catalog_table,
        Key={"pk": {"S": "P#door"}, "sk": {"S": "C#stable"}},
        UpdateExpression="ADD #c :two",
        ExpressionAttributeNames={"#c": "fail#app#1.1.0"},
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    controller = Controller(with_topic(door, topic), door.devices, door.catalog)
    assert [h.rule for h in controller.run().halted] == ["failures"]
    assert controller.run().halted == ()
    [envelope] = topic.received()
    assert json.loads(envelope["Message"])["details"]["failures"] == 2


def test_without_a_topic_a_halt_publishes_nothing(door: World, topic: Subscription) -> None:
    assert door.settings.alarm_topic_arn is None  # as the local stack runs
    assert halts.halt(
        door.catalog,
        "door",
        "stable",
        Kind.APP,
        track(door),
        rule="failures",
        why="w",
        settings=door.settings,
        actor="controller",
        at="2026-12-01T08:00:00Z",
    )
    assert topic.received() == []
