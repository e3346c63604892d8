"""The stack's Lambda functions, loaded and invoked in this process the way the Lambda Python runtime does.

For each `AWS::Serverless::Function` in template.yaml: its `CodeUri` goes on `sys.path`, its `Handler`
(`update/app.handler` -> module `update.app`, attribute `handler`) is imported after the environment
variables the template gives the function are set, and every invocation gets a Lambda-like context.

Unlike Lambda, all functions share one interpreter (module state, `os.environ`), so invocations are
serialised by one lock: a handler never runs concurrently with itself or with another handler, as in a
single Lambda sandbox. Powertools' event resolver keeps the current event on a module-level object, so
this matters. The handler modules are imported once per process: start one local stack per process.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otafleet_local import template
from otafleet_local.intrinsics import ACCOUNT_ID, Resolver, Unresolvable

log = logging.getLogger("otafleet_local.lambda")

DEFAULT_TIMEOUT = 3.0  # Lambda's own default when a template gives none
DEFAULT_MEMORY = 128


class FunctionUnavailable(RuntimeError):
    """The handler could not be imported; the invocation fails as Lambda's would (Runtime.ImportModuleError)."""


class FunctionBusy(RuntimeError):
    """Another invocation held the stack's sandbox for longer than this function's timeout."""


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
    # Shared by all functions of one stack: the single "sandbox".
    lock: threading.Lock = field(default_factory=threading.Lock)
    load_error: str | None = None
    _callable: Callable[[Any, Any], Any] | None = None

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
        if not self.lock.acquire(timeout=self.timeout):
            raise FunctionBusy(f"{self.logical_id}: the stack's sandbox stayed busy for {self.timeout:g} s")
        try:
            context = LambdaContext(self)
            started = time.monotonic()
            result = self._callable(event, context)
            elapsed = time.monotonic() - started
            if elapsed > self.timeout:
                log.warning(
                    "%s ran %.1f s, longer than its Timeout of %g s: Lambda would have stopped it",
                    self.logical_id,
                    elapsed,
                    self.timeout,
                )
            return result
        finally:
            self.lock.release()


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
    lock: threading.Lock,
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
            lock=lock,
        )
    return found
