"""Scheduled functions on the local stack: the template's `ScheduleV2` (and `Schedule`) events, on a timer.

On AWS, EventBridge Scheduler invokes the controller function every `ControllerRateMinutes`. moto
cannot invoke a function of this process, so the local stack reads the same events from template.yaml,
resolves their `ScheduleExpression` with the local parameter values (`rate(5 minutes)`), and runs a timer
thread per event that invokes the real handler, through the function's sandboxes like every other
invocation, with the event's `Input` (parsed JSON) or `{}` as the payload. A failing invocation is
logged; the next tick is the retry, as on AWS with the template's `MaximumRetryAttempts: 0`.

Only `rate(...)` expressions are run locally; a `cron(...)` or `at(...)` one is logged and left out.
`--schedule-seconds N` runs every schedule every N seconds instead (0: none), for demos;
`otafleet rollout tick` runs the controller once, at once, without the function.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otafleet_local import template
from otafleet_local.intrinsics import Resolver, Unresolvable
from otafleet_local.lambdas import LocalFunction

log = logging.getLogger("otafleet_local.schedules")

SCHEDULE_EVENTS = ("ScheduleV2", "Schedule")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Schedule:
    function: str  # logical id
    name: str  # the event's name in the template
    expression: str
    seconds: float
    payload: Any


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of an EventBridge `rate(N unit)` expression; None for anything else."""
    match = _RATE.match(expression.strip())
    if match is None or int(match[1]) < 1:
        return None
    return float(int(match[1]) * _UNIT_SECONDS[match[2].rstrip("s")])


def schedules(resolver: Resolver, path: Path = template.TEMPLATE) -> list[Schedule]:
    """Every schedule event of the template's functions that the local stack can run."""
    found = []
    for logical_id in template.resources("AWS::Serverless::Function", path):
        props = template.function_properties(logical_id, path)
        for name, event in (props.get("Events") or {}).items():
            if event.get("Type") not in SCHEDULE_EVENTS:
                continue
            spec = event.get("Properties") or {}
            try:
                expression = resolver.string(spec.get("Schedule") or spec.get("ScheduleExpression"))
            except (Unresolvable, LookupError, TypeError, ValueError) as error:
                log.warning("%s.%s: schedule left out locally: %s", logical_id, name, error)
                continue
            seconds = rate_seconds(expression)
            if seconds is None:
                log.warning("%s.%s: %s is not run locally (only rate(...) is)", logical_id, name, expression)
                continue
            raw = spec.get("Input")
            payload = json.loads(resolver.string(raw)) if raw is not None else {}
            found.append(Schedule(logical_id, str(name), expression, seconds, payload))
    return found


class ScheduleTimer(threading.Thread):
    """Invokes one function every `seconds` until stopped; the first run one interval after the start,
    as a new schedule's first tick is."""

    def __init__(
        self,
        function: LocalFunction,
        schedule: Schedule,
        seconds: float | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        super().__init__(name=f"otafleet-schedule-{schedule.function}-{schedule.name}", daemon=True)
        self.function = function
        self.schedule = schedule
        self.seconds = schedule.seconds if seconds is None else seconds
        self._stopping = threading.Event()  # not `_stop`: Thread has a method of that name
        self._wait = wait or self._stopping.wait  # True once stopped
        self.runs = 0

    def run(self) -> None:
        while not self._wait(self.seconds):
            self.runs += 1
            try:
                self.function.invoke(self.schedule.payload)
            except Exception as error:  # logged; the next tick is the retry
                log.warning("%s (schedule %s) failed: %s", self.function.logical_id, self.schedule.name, error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
