"""The embedded AWS: moto's backends in this process, reached two ways, with one state.

- The stack's functions run in this process; their boto3 clients (which name no endpoint) are answered
  by moto's backends directly, in-process, through a botocore `before-send` handler: no HTTP hop, no
  socket, no JSON over loopback. They are still the real boto3 clients: botocore serialises the
  request, signs it and parses the answer exactly as on AWS.
- The CLI, `aws` and scripts reach the same backends over HTTP on the moto server (:4566), which
  serves moto's global backend objects in this same process: a table item written in-process is read
  over HTTP and the other way round.

Both ways go through `AWS_LOCK`, so the backends handle one request at a time. moto's backends are not
thread-safe: a DynamoDB conditional write (check, then write) must be atomic as it is on AWS, or two
concurrent device checks could both pass the condition. Requests are CPU-bound Python under the GIL
anyway, so this costs little; what runs in parallel is everything around them (the handlers' own code,
HTTP parsing, socket I/O). Request bodies are read before the lock is taken, so a slow upload does not
stall everyone else. For the same reason nothing may wait inside a request: SQS long polls are not used.

`Writes` counts requests that may have changed state (anything but reads such as GetItem, Query,
GetObject, ReceiveMessage), so the store (otafleet_local.persist) knows when to snapshot. A
ReceiveMessage counts as a read on purpose: if it is lost in a crash, the message is simply delivered
again, as SQS does anyway.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from typing import Any

import boto3
from botocore.handlers import BUILTIN_HANDLERS
from moto.core.botocore_stubber import BotocoreStubber

AWS_LOCK = threading.RLock()

# Operation name prefixes that only read (DynamoDB, SQS, CloudFormation, …; S3 reads are GET/HEAD).
_READS = ("Get", "BatchGet", "Query", "Scan", "Describe", "List", "Receive", "Head")


class Writes:
    """A counter of requests that may have changed the backends' state, and who to tell of each."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def count(self) -> int:
        return self._count

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every write (once per listener however often it is registered)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def bump(self) -> None:
        with self._lock:
            self._count += 1
        for listener in self._listeners:
            listener()


WRITES = Writes()


def is_read(operation: str | None, method: str) -> bool:
    """Whether a request only reads: by its operation name when the protocol carries one, else (S3's
    REST protocol) by its HTTP method."""
    if operation:
        return operation.startswith(_READS)
    return method.upper() in ("GET", "HEAD")


class InProcessStubber(BotocoreStubber):
    """moto's botocore stubber (what `mock_aws` uses), answering under AWS_LOCK and counting writes.

    Only requests to AWS's own host names are answered (that is how moto recognises a service); a client
    with an explicit endpoint (the moto server's) passes through to it as before. Installed for every
    botocore session created after `install()` — the handlers' clients are created lazily, later."""

    def __call__(self, event_name: str, request: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        with AWS_LOCK:
            response = super().__call__(event_name, request, **kwargs)
        # event_name is "before-send.<service>.<Operation>"
        if response is not None and not is_read(event_name.rsplit(".", 1)[-1], str(request.method)):
            WRITES.bump()
        return response


_STUBBER = InProcessStubber()
_ENTRY = ("before-send", _STUBBER)


def install() -> None:
    """Answer boto3 clients of this process that name no endpoint from the in-process backends."""
    if _ENTRY not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(_ENTRY)
    _STUBBER.enabled = True
    # A default session made earlier lacks the handler (and may hold real credentials): start anew.
    boto3.DEFAULT_SESSION = None


def uninstall() -> None:
    """Clients created before stay registered; disabled, the handler passes every request on."""
    _STUBBER.enabled = False
    if _ENTRY in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.remove(_ENTRY)


def _operation(environ: dict[str, Any], body: bytes) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET")  # JSON protocols: DynamoDB_20120810.GetItem
    if target:
        return str(target).rsplit(".", 1)[-1]
    texts = [str(environ.get("QUERY_STRING") or "")]
    if str(environ.get("CONTENT_TYPE") or "").startswith("application/x-www-form-urlencoded"):
        texts.append(body[:4096].decode("latin-1"))  # never an object's bytes: they may hold anything
    for text in texts:
        for part in text.split("&"):  # query protocol: Action=DescribeStacks
            if part.startswith("Action="):
                return part[len("Action=") :]
    return None


class LockedApp:
    """A WSGI wrapper of the moto server's application: the body is read first, then the request is
    handled and its answer produced under AWS_LOCK (a lazily produced body included)."""

    def __init__(self, app: Callable[[dict[str, Any], Any], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):  # chunked: the server marks where it ends
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        with AWS_LOCK:
            result = self.app(environ, start_response)
            try:
                chunks = list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        if not is_read(_operation(environ, body), str(environ.get("REQUEST_METHOD", "GET"))):
            WRITES.bump()
        return chunks
