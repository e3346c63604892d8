"""Watching the AWS calls the code under test makes, with botocore event hooks on its clients.

`before-call.<service>` fires once per request that goes out (what DynamoDB bills); presigning emits
`before-parameter-build` with `is_presign_request` in its context and sends nothing.
"""

from __future__ import annotations

import copy
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

READ_OPS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
WRITE_OPS = frozenset(
    {"UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "ExecuteStatement"}
)


@dataclass(frozen=True)
class Call:
    service: str  # "dynamodb" / "s3"
    operation: str  # "GetItem", ..., "GetObject"
    params: dict[str, Any]
    presign: bool


@dataclass
class Recorder:
    """Records every call made through the clients it is attached to (until detached)."""

    calls: list[Call] = field(default_factory=list)
    keep_params: bool = False
    # Seconds spent between before-call and after-call: inside the AWS requests (moto included).
    busy_s: float = 0.0
    busy_by_call: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # s by service.Op
    _attached: list[Any] = field(default_factory=list)
    _started: float = 0.0

    def attach(self, clients: Iterable[Any]) -> Recorder:
        seen: set[int] = set()
        for client in clients:
            if id(client) in seen:
                continue
            seen.add(id(client))
            service = client.meta.service_model.service_id.hyphenize()
            events = client.meta.events
            events.register(f"before-call.{service}", self._on_call, unique_id=f"bench-call-{id(self)}")
            events.register(f"after-call.{service}", self._on_done, unique_id=f"bench-done-{id(self)}")
            events.register(f"before-parameter-build.{service}", self._on_params, unique_id=f"bench-params-{id(self)}")
            self._attached.append(client)
        return self

    def detach(self) -> None:
        for client in self._attached:
            service = client.meta.service_model.service_id.hyphenize()
            client.meta.events.unregister(f"before-call.{service}", unique_id=f"bench-call-{id(self)}")
            client.meta.events.unregister(f"after-call.{service}", unique_id=f"bench-done-{id(self)}")
            client.meta.events.unregister(f"before-parameter-build.{service}", unique_id=f"bench-params-{id(self)}")
        self._attached.clear()

    def clear(self) -> None:
        self.calls.clear()
        self.busy_s = 0.0
        self.busy_by_call.clear()

    def _on_call(self, model: Any, event_name: str = "", **_: Any) -> None:
        self.calls.append(Call(event_name.split(".")[1], model.name, {}, presign=False))
        self._started = time.perf_counter()

    def _on_done(self, model: Any, event_name: str = "", **_: Any) -> None:
        elapsed = time.perf_counter() - self._started
        self.busy_s += elapsed
        self.busy_by_call[f"{event_name.split('.')[1]}.{model.name}"] += elapsed

    def _on_params(
        self, params: dict[str, Any], model: Any, context: Any = None, event_name: str = "", **_: Any
    ) -> None:
        presign = bool(context and context.get("is_presign_request"))
        if presign:
            self.calls.append(Call(event_name.split(".")[1], model.name, copy.deepcopy(params), presign=True))
        elif self.keep_params:
            # The request itself is counted by before-call; keep its parameters for replay.
            self.calls.append(Call(event_name.split(".")[1], "params:" + model.name, copy.deepcopy(params), False))

    # --- views -------------------------------------------------------------------------------------

    def requests(self) -> list[Call]:
        return [c for c in self.calls if not c.presign and not c.operation.startswith("params:")]

    def params_of(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.service == service and c.operation == f"params:{operation}"]

    def presigns(self) -> list[Call]:
        return [c for c in self.calls if c.presign]

    def counts(self) -> Counter[str]:
        """Requests by `service.Operation`, plus `s3.presign`."""
        counted: Counter[str] = Counter(f"{c.service}.{c.operation}" for c in self.requests())
        for c in self.presigns():
            counted[f"{c.service}.presign"] += 1
        return counted


def handler_clients() -> list[Any]:
    """The clients the update handler uses: `otafleet.storage.clients` creates them once per process."""
    from otafleet.config import settings
    from otafleet.storage import clients

    cfg = settings()
    return [clients.dynamodb(cfg), clients.s3(cfg), clients.s3(cfg, public=True)]
