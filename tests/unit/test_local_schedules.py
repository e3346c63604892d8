"""The local stack's timers for the template's schedule events (the rollout controller): which
schedules it finds, how it reads their rates, and that a timer invokes the function once per tick."""

from __future__ import annotations

from typing import Any

import pytest

from otafleet_local import schedules, template
from otafleet_local.intrinsics import Resolver
from otafleet_local.lambdas import LocalFunction


def resolver(**parameters: str) -> Resolver:
    return Resolver(template=template.load(), names={}, region="us-east-1", parameters=parameters)


def test_the_controller_runs_at_the_templates_rate() -> None:
    [schedule] = schedules.schedules(resolver())
    assert (schedule.function, schedule.name, schedule.seconds, schedule.payload) == (
        "ControllerFunction",
        "Tick",
        300.0,
        {},
    )
    assert schedules.schedules(resolver(ControllerRateMinutes="1"))[0].expression == "rate(1 minute)"
    assert schedules.schedules(resolver(ControllerRateMinutes="15"))[0].seconds == 900.0


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60.0),
        ("rate(5 minutes)", 300.0),
        ("rate(2 hours)", 7200.0),
        ("rate(1 day)", 86400.0),
        ("rate(0 minutes)", None),
        ("cron(0/5 * * * ? *)", None),
        ("at(2026-11-24T12:00:00)", None),
    ],
)
def test_rate_expressions(expression: str, seconds: float | None) -> None:
    assert schedules.rate_seconds(expression) == seconds


class FakeFunction(LocalFunction):
    def __init__(self, fail: bool = False) -> None:
        super().__init__("ControllerFunction", "local-ControllerFunction", "controller/app.handler", template.ROOT, "r")
        self.events: list[Any] = []
        self.fail = fail

    def invoke(self, event: Any) -> Any:
        self.events.append(event)
        if self.fail:
            raise RuntimeError("storage fault")
        return {}


@pytest.mark.parametrize("fail", [False, True])
def test_a_timer_invokes_once_per_tick_and_survives_failures(fail: bool) -> None:
    ticks = iter([False, False, False, True])  # three intervals pass, then stop
    waited: list[float] = []

    def wait(seconds: float) -> bool:
        waited.append(seconds)
        return next(ticks)

    function = FakeFunction(fail)
    schedule = schedules.Schedule("ControllerFunction", "Tick", "rate(5 minutes)", 300.0, {})
    timer = schedules.ScheduleTimer(function, schedule, wait=wait)
    timer.run()  # in this thread: no sleeps
    assert function.events == [{}, {}, {}] and timer.runs == 3 and waited == [300.0] * 4


def test_a_started_timer_stops_at_once() -> None:
    schedule = schedules.Schedule("ControllerFunction", "Tick", "rate(5 minutes)", 300.0, {})
    timer = schedules.ScheduleTimer(FakeFunction(), schedule)
    timer.start()
    timer.stop(timeout=5)
    assert not timer.is_alive() and timer.runs == 0
