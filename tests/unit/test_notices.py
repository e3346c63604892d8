"""Rollout notices (notices.py, storage/notifications.py, halts.halt): what is logged, counted and
published, that a failed publish never raises, and that without a topic no SNS client is ever made.
No network: SNS is a botocore Stubber on a real client, or a client that must not be created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from otafleet import halts, notices
from otafleet.config import Settings
from otafleet.models import Kind, Track, TrackState
from otafleet.notices import Notice, announce
from otafleet.storage import clients

TOPIC = "arn:aws:sns:eu-west-1:123456789012:otafleet-alarms"
SETTINGS = Settings(devices_table="d", catalog_table="c", firmware_bucket="b", region="eu-west-1")
WITH_TOPIC = replace(SETTINGS, alarm_topic_arn=TOPIC)
HALT = Notice(
    "halted",
    "door",
    "stable",
    Kind.APP,
    "1.4.0",
    "failure rate 30.0% over 10 outcomes > 20.0%",
    {"rule": "failures", "failures": 3, "successes": 7, "unknowns": 0, "silents": 0},
)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    monkeypatch.setattr(notices, "count", lambda name, value=1, **dims: names.append(name))
    return names


@pytest.fixture
def sns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    client = boto3.client("sns", region_name="eu-west-1")
    stubber = Stubber(client)
    monkeypatch.setattr(clients, "sns", lambda settings: client)
    with stubber:
        yield stubber


def lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [vars(record) for record in caplog.records if record.getMessage() == message]


def published(notice: Notice) -> dict[str, Any]:
    return {
        "TopicArn": TOPIC,
        "Subject": notice.subject(),
        "Message": notice.message(),
        "MessageAttributes": {
            "event": {"DataType": "String", "StringValue": notice.event},
            "product": {"DataType": "String", "StringValue": notice.product},
        },
    }


# --- with a topic ----------------------------------------------------------------------------------


def test_a_notice_is_logged_counted_and_published_once(
    sns: Stubber, counted: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    sns.add_response("publish", {"MessageId": "m-1"}, published(HALT))
    announce(HALT, WITH_TOPIC)
    sns.assert_no_pending_responses()
    assert counted == ["RolloutsHalted"]
    [line] = lines(caplog, "rollout halted")
    assert line["levelname"] == "WARNING"
    assert {k: line[k] for k in ("event", "product", "channel", "kind", "version", "why", "rule")} == {
        "event": "halted",
        "product": "door",
        "channel": "stable",
        "kind": "app",
        "version": "1.4.0",
        "why": HALT.why,
        "rule": "failures",
    }
    assert (line["failures"], line["successes"], line["unknowns"], line["silents"]) == (3, 7, 0, 0)


def test_the_message_carries_every_field_and_the_subject_is_short() -> None:
    assert HALT.subject() == "otafleet: rollout halted: door/stable app 1.4.0"
    assert json.loads(HALT.message()) == {
        "source": "otafleet",
        "event": "halted",
        "product": "door",
        "channel": "stable",
        "kind": "app",
        "version": "1.4.0",
        "why": HALT.why,
        "details": {"rule": "failures", "failures": 3, "successes": 7, "unknowns": 0, "silents": 0},
    }
    assert HALT.attributes() == {"event": "halted", "product": "door"}


@pytest.mark.parametrize(
    "version",
    ["1.0.0-ünïcode", "1.0\n\r\t0", "v" + "9" * 200, "1.0.0 🚀", "\x00\x7f"],
)
def test_the_subject_is_always_ascii_without_control_characters_and_under_100(version: str) -> None:
    subject = replace(HALT, version=version).subject()
    assert subject.isascii() and subject.isprintable()
    assert len(subject) < 100 and subject.startswith("otafleet: rollout halted: door/stable app ")


def test_advanced_and_completed_have_their_own_metrics(sns: Stubber, counted: list[str]) -> None:
    advanced = replace(HALT, event="advanced", details={"from_percent": 5, "to_percent": 25})
    completed = replace(HALT, event="completed", details={})
    for notice in (advanced, completed):
        sns.add_response("publish", {"MessageId": "m"}, published(notice))
        announce(notice, WITH_TOPIC)
    sns.assert_no_pending_responses()
    assert counted == ["RolloutStagesAdvanced", "RolloutsCompleted"]


def test_a_failed_publish_is_logged_and_counted_never_raised(
    sns: Stubber, counted: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    sns.add_client_error("publish", service_error_code="AuthorizationError", http_status_code=403)
    announce(HALT, WITH_TOPIC)  # does not raise
    assert counted == ["RolloutsHalted", "NotificationsFailed"]
    assert len(lines(caplog, "rollout halted")) == 1  # the transition is still on record
    [error] = lines(caplog, "rollout notice not published")
    assert error["levelname"] == "ERROR" and "AuthorizationError" in error["error"]
    assert (error["product"], error["channel"], error["version"]) == ("door", "stable", "1.4.0")


def test_any_fault_of_the_publish_is_contained(monkeypatch: pytest.MonkeyPatch, counted: list[str]) -> None:
    def broken(settings: Settings) -> Any:
        raise RuntimeError("no client today")

    monkeypatch.setattr(clients, "sns", broken)
    announce(HALT, WITH_TOPIC)
    assert counted == ["RolloutsHalted", "NotificationsFailed"]


# --- without a topic -------------------------------------------------------------------------------


def test_without_a_topic_no_client_is_created(
    monkeypatch: pytest.MonkeyPatch, counted: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    def forbidden(settings: Settings) -> Any:
        raise AssertionError("an SNS client was created without a topic")

    monkeypatch.setattr(clients, "sns", forbidden)
    announce(HALT, SETTINGS)
    assert counted == ["RolloutsHalted"]
    assert len(lines(caplog, "rollout halted")) == 1


def test_the_topic_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from otafleet.config import load_settings

    monkeypatch.setenv("ALARM_TOPIC_ARN", TOPIC)
    assert load_settings().alarm_topic_arn == TOPIC
    monkeypatch.setenv("ALARM_TOPIC_ARN", "")  # the template's default: no topic
    assert load_settings().alarm_topic_arn is None
    monkeypatch.delenv("ALARM_TOPIC_ARN")
    assert load_settings().alarm_topic_arn is None


# --- the notice itself -----------------------------------------------------------------------------


def test_details_never_replace_the_notices_fields_or_break_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    notice = replace(HALT, details={"product": "forged", "message": "x", "name": "y", "to_percent": 25})
    fields = notice.fields()
    assert fields["product"] == "door" and fields["detail_product"] == "forged"
    assert fields["detail_message"] == "x" and fields["detail_name"] == "y" and fields["to_percent"] == 25
    announce(notice, SETTINGS)  # the logging module raises on reserved `extra` keys; these are renamed
    assert lines(caplog, "rollout halted")[0]["to_percent"] == 25


def test_a_detail_json_cannot_encode_becomes_text() -> None:
    body = json.loads(replace(HALT, details={"state": TrackState.HALTED, "at": object}).message())
    assert body["details"]["state"] == "halted" and isinstance(body["details"]["at"], str)


def test_an_unknown_event_is_refused_where_the_notice_is_built() -> None:
    with pytest.raises(ValueError, match="unknown rollout event"):
        Notice("halt", "door", "stable", Kind.APP, "1.4.0", "why")


# --- halts.halt announces only the halt it wrote ---------------------------------------------------


class FakeCatalog:
    def __init__(self, wins: bool) -> None:
        self.wins = wins
        self.calls: list[tuple[Any, ...]] = []

    def set_track_state(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.append((args, kwargs))
        return self.wins


@pytest.mark.parametrize("wins", [True, False])
def test_halt_announces_only_when_its_conditional_write_won(monkeypatch: pytest.MonkeyPatch, wins: bool) -> None:
    announced: list[tuple[Notice, Settings]] = []
    monkeypatch.setattr(halts, "announce", lambda notice, settings: announced.append((notice, settings)))
    catalog = FakeCatalog(wins)
    track = Track(version="1.4.0", successes=7, failures=3, unknowns=1, silents=2, rev=5)
    result = halts.halt(
        catalog,  # type: ignore[arg-type]
        "door",
        "stable",
        Kind.APP,
        track,
        rule="silence",
        why="silent",
        settings=WITH_TOPIC,
        actor="controller",
        at="2026-12-01T08:00:00Z",
    )
    assert result is wins
    [(args, kwargs)] = catalog.calls
    assert args == ("door", "stable", Kind.APP, "1.4.0", TrackState.HALTED)
    entry = kwargs.pop("audit")  # written with the halt, in its transaction
    assert kwargs == {"from_states": (TrackState.ACTIVE,), "expect_rev": 5}
    assert (entry.actor, entry.action, entry.before, entry.after) == (
        "controller",
        "rollout.halt",
        {"state": "active"},
        {"state": "halted"},
    )
    if not wins:
        assert announced == []
        return
    [(notice, settings)] = announced
    assert settings is WITH_TOPIC
    assert notice == Notice(
        "halted",
        "door",
        "stable",
        Kind.APP,
        "1.4.0",
        "silent",
        {"rule": "silence", "failures": 3, "successes": 7, "unknowns": 1, "silents": 2},
    )
