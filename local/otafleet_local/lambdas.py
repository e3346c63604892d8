"""The stack's Lambda functions, loaded and invoked in this process the way the Lambda Python runtime does.

For each `AWS::Serverless::Function` in template.yaml: its `CodeUri` goes on `sys.path`, its `Handler`
(`update/app.handler` -> module `update.app`, attribute `handler`) is imported after the environment
variables the template gives the function are set, and every invocation gets a Lambda-like context.

Like Lambda with several warm sandboxes, a function runs up to `concurrency` invocations at once
(more wait for a free one, up to API Gateway's 30 s, then fail as throttled). Unlike Lambda, the
sandboxes share one interpreter: module state, `os.environ`, the handler's cached service and clients.
So the code must be safe under concurrent invocations (otafleet's is: shared boto3 clients are
thread-safe and created under a lock, log keys are per thread, the metric set is guarded), and a
function's first invocation — its cold start, where handler modules initialise their lazy globals —
runs alone: the others wait until one invocation has finished. The handler modules are imported once
per process: start one local stack per process.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otafleet_local import template
from otafleet_local.intrinsics import ACCOUNT_ID, Resolver, Unresolvable

log = logging.getLogger("otafleet_local.lambda")

DEFAULT_TIMEOUT = 3.0  # Lambda's own default when a template gives none
DEFAULT_MEMORY = 128
# Invocations of one function at once. The handlers' Python is serialised by the GIL anyway: measured
# with `make load`, 1, 2, 4 and 8 sandboxes serve the same warm checks per second (within noise), and more
# only add GIL contention to every latency. Two let a slow invocation (an inline image, a big upload)
# run beside the quick ones.
DEFAULT_CONCURRENCY = 2
QUEUE_SECONDS = 30.0  # API Gateway's longest integration timeout


class FairSlots:
    """A counting semaphore that hands a freed slot to the longest waiter: threading.Semaphore lets a
    newcomer take it first, so under load one request can starve past its timeout while others pass."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=max(0.0, timeout)):
            return True
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:  # handed a slot just as the wait ran out: it is ours
                return True
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()  # the slot passes straight to the first waiter
            else:
                self._free += 1


class FunctionUnavailable(RuntimeError):
    """The handler could not be imported; the invocation fails as Lambda's would (Runtime.ImportModuleError)."""


class FunctionBusy(RuntimeError):
    """Every sandbox of the function stayed busy for longer than its timeout (Lambda would throttle)."""


class LambdaContext:
    """The attributes and method of the context object the Lambda Python runtime passes to handlers."""

    def __init__(self, function: LocalFunction) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class LocalFunction:
    logical_id: str
    name: str
    handler: str
    code_uri: Path
    region: str
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY
    environment: dict[str, str] = field(default_factory=dict)
    concurrency: int = DEFAULT_CONCURRENCY  # sandboxes: invocations that may run at once
    load_error: str | None = None
    _callable: Callable[[Any, Any], Any] | None = None
    _warm: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"{self.logical_id}: concurrency must be at least 1, not {self.concurrency}")
        self._sandboxes = FairSlots(self.concurrency)
        self._cold_start = threading.Lock()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"

    @property
    def loaded(self) -> bool:
        return self._callable is not None

    def load(self) -> bool:
        """Import the handler like the runtime: `dir/module.function`, with CodeUri first on sys.path.
        Call it only after the environment is set: handler modules may read it at import time."""
        module_path, _, attribute = self.handler.rpartition(".")
        module_name = module_path.replace("/", ".")
        root = str(self.code_uri)
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(module_name)
            handler = getattr(module, attribute)
            if not callable(handler):
                raise TypeError(f"{self.handler} is not callable")
        except Exception as error:  # any import failure, reported as Lambda's runtime does
            self.load_error = f"cannot import {self.handler} from {root}: {type(error).__name__}: {error}"
            log.error("%s: %s", self.logical_id, self.load_error)
            return False
        self._callable = handler
        self.load_error = None
        return True

    def invoke(self, event: Any) -> Any:
        if self._callable is None:
            raise FunctionUnavailable(self.load_error or f"{self.logical_id} is not loaded")
        # Where Lambda would start another sandbox, the request queues for one of these: as long as
        # API Gateway waits for an integration at most, so a burst is slow rather than refused.
        deadline = time.monotonic() + QUEUE_SECONDS
        if not self._sandboxes.acquire(timeout=QUEUE_SECONDS):
            raise FunctionBusy(
                f"{self.logical_id}: all {self.concurrency} sandboxes stayed busy for {QUEUE_SECONDS:g} s"
            )
        try:
            if self._warm:
                return self._run(self._callable, event)
            # Cold: one invocation initialises the handler's lazy module state, the others wait for it.
            if not self._cold_start.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise FunctionBusy(f"{self.logical_id}: its cold start took longer than {QUEUE_SECONDS:g} s")
            try:
                result = self._run(self._callable, event)
                self._warm = True
                return result
            finally:
                self._cold_start.release()
        finally:
            self._sandboxes.release()

    def _run(self, handler: Callable[[Any, Any], Any], event: Any) -> Any:
        context = LambdaContext(self)
        started = time.monotonic()
        result = handler(event, context)
        elapsed = time.monotonic() - started
        if elapsed > self.timeout:
            log.warning(
                "%s ran %.1f s, longer than its Timeout of %g s: Lambda would have stopped it",
                self.logical_id,
                elapsed,
                self.timeout,
            )
        return result


def environment(resolver: Resolver, properties: dict[str, Any]) -> dict[str, str]:
    """The function's environment variables from the template, resolved with local values.
    A variable whose value exists only on AWS is left out, with a warning."""
    variables = ((properties.get("Environment") or {}).get("Variables")) or {}
    env: dict[str, str] = {}
    for name, value in variables.items():
        try:
            env[str(name)] = resolver.string(value)
        except (Unresolvable, LookupError, TypeError, ValueError) as error:
            log.warning("environment variable %s left unset locally: %s", name, error)
    return env


def from_template(
    resolver: Resolver,
    names: dict[str, str],
    concurrency: int = DEFAULT_CONCURRENCY,
    path: Path = template.TEMPLATE,
) -> dict[str, LocalFunction]:
    """Every AWS::Serverless::Function of the template, not loaded yet (see LocalFunction.load)."""
    found: dict[str, LocalFunction] = {}
    for logical_id in template.resources("AWS::Serverless::Function", path):
        props = template.function_properties(logical_id, path)
        try:
            timeout = float(resolver.string(props.get("Timeout", DEFAULT_TIMEOUT)))
            memory = int(resolver.string(props.get("MemorySize", DEFAULT_MEMORY)))
        except (Unresolvable, ValueError):
            timeout, memory = DEFAULT_TIMEOUT, DEFAULT_MEMORY
        found[logical_id] = LocalFunction(
            logical_id=logical_id,
            name=names[logical_id],
            handler=str(props["Handler"]),
            code_uri=template.code_uri(logical_id, path),
            region=resolver.region,
            timeout=timeout,
            memory_mb=memory,
            environment=environment(resolver, props),
            concurrency=concurrency,
        )
    return found
