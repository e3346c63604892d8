"""Lambda handler of the rollout controller, invoked by an EventBridge Scheduler schedule (template.yaml)
and, in the local stack, by a timer with the same rate.

Thin on purpose: the event carries nothing the run needs; controller.py does the work. A run that hit
a storage fault did what it could and then fails the invocation, so the fault shows in the function's
errors (and its alarm); the next scheduled run picks up where it stopped, since every write is
conditional on what it read.
"""

from __future__ import annotations

from typing import Any

from otafleet.config import settings
from otafleet.controller import Controller, summary
from otafleet.observability import handler_wrapper

_controller: Controller | None = None


class RunIncomplete(RuntimeError):
    """Part of a run failed on a storage fault; what it did is done, the rest waits for the next run."""


def controller() -> Controller:
    global _controller
    if _controller is None:
        _controller = Controller.create(settings())
    return _controller


@handler_wrapper
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = controller().run()
    if report.faults:
        raise RunIncomplete("; ".join(report.faults))
    return summary(report)
