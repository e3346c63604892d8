"""Scheduled functions on the local stack: the template's `ScheduleV2` (and `Schedule`) events, on a timer.

On AWS, EventBridge Scheduler invokes the controller function every `ControllerRateMinutes`. moto
cannot invoke a function of this process, so the local stack reads the schedules SAM generates from
these events (template.yaml translated by samtranslator),
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

# What SAM generates from `ScheduleV2` and `Schedule` events.
SCHEDULE_RESOURCES = ("AWS::Scheduler::Schedule", "AWS::Events::Rule")
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


def _targets(logical_id: str, resource: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    """(expression, target ARN expression, Input) of a generated schedule (ScheduleV2) or rule (Schedule)."""
    props = resource.get("Properties") or {}
    if resource.get("Type") == "AWS::Scheduler::Schedule":
        target = props.get("Target") or {}
        return [(props.get("ScheduleExpression"), target.get("Arn"), target.get("Input"))]
    return [(props.get("ScheduleExpression"), t.get("Arn"), t.get("Input")) for t in props.get("Targets") or []]


def schedules(resolver: Resolver, path: Path = template.TEMPLATE) -> list[Schedule]:
    """Every schedule of the template's functions that the local stack can run: the EventBridge
    Scheduler schedules (`ScheduleV2` events) and rules (`Schedule` events) SAM generates for them."""
    functions = set(template.functions(path))
    found = []
    for kind in SCHEDULE_RESOURCES:
        for logical_id, resource in template.generated(kind, path).items():
            state = (resource.get("Properties") or {}).get("State")
            for raw_expression, arn, raw_input in _targets(logical_id, resource):
                function = template.function_of(arn)
                if function not in functions or raw_expression is None:
                    continue
                # SAM names the generated resource <Function><Event>: the event's name is the rest.
                name = logical_id.removeprefix(function) or logical_id
                try:
                    if state is not None and resolver.string(state) == "DISABLED":
                        log.info("%s.%s: disabled in the template, not run locally", function, name)
                        continue
                    expression = resolver.string(raw_expression)
                except (Unresolvable, LookupError, TypeError, ValueError) as error:
                    log.warning("%s.%s: schedule left out locally: %s", function, name, error)
                    continue
                seconds = rate_seconds(expression)
                if seconds is None:
                    log.warning("%s.%s: %s is not run locally (only rate(...) is)", function, name, expression)
                    continue
                payload = json.loads(resolver.string(raw_input)) if raw_input is not None else {}
                found.append(Schedule(function, name, expression, seconds, payload))
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
