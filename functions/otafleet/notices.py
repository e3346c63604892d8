"""Rollout notices: a rollout halted, advanced a stage, or completed. Each is logged, counted and, when the
stack has an alarm topic (`AlarmTopicArn`), published to it.

Exactly once per transition: a notice is announced only by the caller whose conditional write made the
transition (halts.halt, the controller's advance), so two checks or two controller runs racing for the
same halt announce it once. The publish is not retried and never raises: the transition it reports is
written already, and failing the caller now (a device's check, a controller run) would undo nothing. A
lost publish is logged and counted (`NotificationsFailed`); the log line and the metric stay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otafleet.config import Settings
from otafleet.models import Kind
from otafleet.observability import count, logger
from otafleet.storage import notifications

EVENTS = ("halted", "advanced", "completed")
# SNS rejects a Subject of 100 characters or more, or one with line breaks or control characters.
SUBJECT_MAX = 99
# Keys a log line's `extra` may not use: the standard library raises on them.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@dataclass(frozen=True)
class Notice:
    event: str  # "halted" | "advanced" | "completed"
    product: str
    channel: str
    kind: Kind
    version: str
    why: str
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. counters, from/to percent

    def __post_init__(self) -> None:
        # A misspelt event would reach subscribers' filter policies and miss its metric: fail where it is
        # built (in tests), not in announce, which must never raise.
        if self.event not in EVENTS:
            raise ValueError(f"unknown rollout event {self.event!r}, expected one of {', '.join(EVENTS)}")

    def fields(self) -> dict[str, Any]:
        """The notice as one flat mapping (the log line's fields). A detail never replaces a field of the
        notice itself, nor an attribute the logging module reserves: such a detail gets a `detail_` prefix."""
        out: dict[str, Any] = {
            "event": self.event,
            "product": self.product,
            "channel": self.channel,
            "kind": self.kind.value,
            "version": self.version,
            "why": self.why,
        }
        for key, value in self.details.items():
            name = str(key)
            out[f"detail_{name}" if name in out or name in _RESERVED else name] = value
        return out

    def subject(self) -> str:
        """A short, ASCII-only subject line (email subscribers see it)."""
        text = f"otafleet: rollout {self.event}: {self.product}/{self.channel} {self.kind.value} {self.version}"
        text = "".join(c if " " <= c <= "~" else "?" for c in text)
        return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."

    def message(self) -> str:
        """The JSON body: every field, details nested under their own names."""
        body = {
            "source": "otafleet",
            "event": self.event,
            "product": self.product,
            "channel": self.channel,
            "kind": self.kind.value,
            "version": self.version,
            "why": self.why,
            "details": dict(self.details),
        }
        return json.dumps(body, sort_keys=True, default=str)  # default: a detail JSON cannot encode is text

    def attributes(self) -> dict[str, str]:
        """Message attributes, for subscription filter policies."""
        return {"event": self.event, "product": self.product}


def announce(notice: Notice, settings: Settings) -> None:
    """Log it (one warning line 'rollout <event>' with all fields), emit a metric, publish to the
    alarm topic when one is configured. Never raises: a failed publish is logged (error) and counted
    (metric NotificationsFailed), the transition it reports has already happened."""
    log = logger()
    log.warning(f"rollout {notice.event}", extra=notice.fields())
    _count(notice.event)
    if not settings.alarm_topic_arn:
        return
    try:
        message_id = notifications.publish(
            settings, subject=notice.subject(), message=notice.message(), attributes=notice.attributes()
        )
    except Exception as fault:  # any fault: the caller's transition is done, and nothing here may undo it
        log.error(
            "rollout notice not published",
            extra={
                "event": notice.event,
                "product": notice.product,
                "channel": notice.channel,
                "kind": notice.kind.value,
                "version": notice.version,
                "error": str(fault) or type(fault).__name__,
            },
        )
        count("NotificationsFailed")
        return
    log.info("rollout notice published", extra={"event": notice.event, "message_id": message_id})


def _count(event: str) -> None:
    # Literal names: tests/unit/test_template.py finds the emitted metrics as `count("Name"` and checks
    # that the dashboard plots each. RolloutsHalted is also what RolloutHaltedAlarm watches.
    if event == "halted":
        count("RolloutsHalted")
    elif event == "advanced":
        count("RolloutStagesAdvanced")
    else:
        count("RolloutsCompleted")
