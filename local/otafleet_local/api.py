"""The HTTP API: template.yaml's HttpApi routes, served the way API Gateway (HTTP API, payload 2.0) does.

Each request becomes a payload-2.0 event (headers lower-cased and comma-joined when repeated, cookies
in `cookies`, `x-forwarded-*` added, routeKey/pathParameters from the matched route) for the same
handler code that runs in Lambda; the handler's answer goes back to the client with an exact
`Content-Length`, never chunked. HTTP/1.0 clients (every stock ESP updater) get an HTTP/1.0 answer and
`Connection: close`. Unknown path: 404; a method no route has on that path: 405; a handler that
raises or answers something API Gateway could not map: 502 and a log line, as API Gateway would.

A route whose template event names an authorizer is guarded as on AWS, by the local stand-in of the JWT
authorizer (console_auth): no valid token, 401 and the function is never invoked. `POST /console/login`,
Cognito's part on AWS, is answered by this server itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from otafleet_local.console_auth import LOGIN_PATH, ConsoleAuth
from otafleet_local.lambdas import FunctionBusy, FunctionUnavailable, LocalFunction

log = logging.getLogger("otafleet_local.api")
access_log = logging.getLogger("otafleet_local.access")

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
# Hop-by-hop or framing headers: this server sets them itself, whatever a handler says.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
# Statuses that never carry a body (RFC 9110); 204 and 1xx also never carry Content-Length.
_NO_BODY = frozenset({204, 304})
_PARAM = re.compile(r"\{([^}/]+?)(\+?)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: LocalFunction
    pattern: re.Pattern[str]
    params: tuple[str, ...]
    greedy: bool
    authorizer: tuple[str, str] | None = None  # (name, type) of the template's authorizer, None: public

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal paths, then fewer parameters, then greedy `{proxy+}` last."""
        literal = len(_PARAM.sub("", self.path))
        return (1 if self.greedy else 0, len(self.params), -literal)


def compile_route(method: str, path: str, function: LocalFunction, authorizer: tuple[str, str] | None = None) -> Route:
    pattern, names, greedy, last = "", [], False, 0
    for match in _PARAM.finditer(path):
        pattern += re.escape(path[last : match.start()])
        names.append(match[1])
        if match[2]:
            greedy = True
            pattern += f"(?P<p{len(names) - 1}>.+)"
        else:
            pattern += f"(?P<p{len(names) - 1}>[^/]+)"
        last = match.end()
    pattern += re.escape(path[last:])
    return Route(method.upper(), path, function, re.compile(f"^{pattern}$"), tuple(names), greedy, authorizer)


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: r.specificity)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """(route, path parameters, methods the path has) — route None when nothing matches."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method in (method, "ANY"):
                params = {name: unquote(found[f"p{i}"]) for i, name in enumerate(route.params)}
                return route, params, allowed
            allowed.append(route.method)
        return None, {}, allowed


@dataclass
class Request:
    method: str
    target: str  # request-target as sent: path and query, not decoded
    protocol: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    server_port: int


def build_event(request: Request, route: Route, path_params: Mapping[str, str]) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event, as API Gateway would deliver this request."""
    raw_path, _, raw_query = request.target.partition("?")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    forwarded = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{forwarded}, {request.source_ip}" if forwarded else request.source_ip
    headers["x-forwarded-port"] = str(request.server_port)
    headers["x-forwarded-proto"] = "http"
    host = headers.get("host", "localhost").rsplit(":", 1)[0] if headers.get("host") else "localhost"
    now = datetime.now(UTC)
    request_id = uuid.uuid4().hex[:16]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": request.method,
                "path": raw_path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = dict(path_params)
    if request.body:
        try:
            event["body"] = request.body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


class BadResponse(ValueError):
    """The handler's return value is not something API Gateway can turn into an HTTP answer."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def to_response(result: Any) -> Response:
    """Map a handler's return value to HTTP the way API Gateway does for payload format 2.0."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Payload 2.0: anything without a statusCode is a 200 JSON body.
        text = result if isinstance(result, str) else json.dumps(result)
        return Response(200, [("Content-Type", "application/json")], text.encode())
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        raise BadResponse(f"statusCode {result['statusCode']!r} is not a number") from None
    if not 100 <= status <= 599:
        raise BadResponse(f"statusCode {status} is out of range")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        if str(name).lower() not in _FRAMING:
            headers.append((str(name), _header_value(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if str(name).lower() not in _FRAMING:
            headers += [(str(name), _header_value(v)) for v in (values if isinstance(values, list) else [values])]
    headers += [("Set-Cookie", _header_value(c)) for c in result.get("cookies") or []]
    raw = result.get("body")
    if raw is None:
        body = b""
    elif not isinstance(raw, str):
        raise BadResponse(f"body is a {type(raw).__name__}, not a string")
    elif result.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse("isBase64Encoded is set but the body is not base64") from None
    else:
        body = raw.encode("utf-8")
    return Response(status, headers, body)


def _header_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if "\r" in text or "\n" in text:
        raise BadResponse("a header value contains a line break")
    return text


HEALTH_PATH = "/healthz"


def gateway_error(status: int, message: str) -> Response:
    body = json.dumps({"message": message}).encode()
    return Response(status, [("Content-Type", "application/json")], body)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The whole HTTP API sits behind these; set by LocalStack before serving.
    router: Router
    # Signs console tokens and checks them on guarded routes; None: every guarded route answers 401.
    console: ConsoleAuth | None = None

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.router = router
        # Bound now (a port in use fails at once), listening only from activate(): until the stack is
        # ready, connections are refused, so a script that waits for the port waits for the stack.
        super().__init__(address, _Handler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise

    def activate(self) -> None:
        self.server_activate()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("%s went away: %s", client_address, error)
        else:
            log.exception("error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "otafleet-local"
    sys_version = ""
    timeout = 30  # an idle or stalled connection is dropped, never held forever

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _serve(self) -> None:
        started = time.monotonic()
        if self.request_version != "HTTP/1.1":
            # Answer an HTTP/1.0 client in its own version, and close: no keep-alive, no chunking.
            self.protocol_version = "HTTP/1.0"
            self.close_connection = True
        route_key = "-"
        try:
            body = self._read_body()
        except _BodyError as error:
            self._send(gateway_error(error.status, error.message))
            return
        if self.path.startswith(("http://", "https://")):
            # absolute-form request-target (proxies): keep path and query only
            parts = urlsplit(self.path)
            self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path = self.path.split("?", 1)[0]
        route, params, allowed = self.server.router.match(self.command, path)
        claims: dict[str, Any] | None = None
        if path == LOGIN_PATH and self.command == "POST":
            # Before routing: `/console/{proxy+}` (the console's files) would take it otherwise.
            route_key = f"POST {LOGIN_PATH} (local sign-in)"
            response = self._login(body)
        elif route is not None and route.authorizer is not None and (claims := self._claims(route)) is None:
            route_key = route.route_key
            response = gateway_error(401, "Unauthorized")
        elif route is None and path == HEALTH_PATH and self.command in ("GET", "HEAD"):
            # The local stack's own ready signal (the port listens only once it is ready, too).
            response = Response(200, [("Content-Type", "application/json")], b'{"ready": true}')
        elif route is None:
            response = gateway_error(405, "Method Not Allowed") if allowed else gateway_error(404, "Not Found")
            if allowed:
                response.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
        else:
            route_key = route.route_key
            request = Request(
                method=self.command,
                target=self.path,
                protocol=self.request_version,
                headers=list(self.headers.items()),
                body=body,
                source_ip=str(self.client_address[0]),
                server_port=self.server.server_address[1],
            )
            event = build_event(request, route, params)
            if claims is not None:
                event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
            response = self._invoke(route, event)
        self._send(response)
        access_log.info(
            '%s "%s %s %s" %s %d %.0fms (route %s)',
            self.client_address[0],
            self.command,
            self.path,
            self.request_version,
            response.status,
            len(response.body),
            (time.monotonic() - started) * 1000,
            route_key,
        )

    def _login(self, body: bytes) -> Response:
        if self.server.console is None:
            return gateway_error(404, "Not Found")
        status, data = self.server.console.login(body, str(self.client_address[0]))
        return Response(
            status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], json.dumps(data).encode()
        )

    def _claims(self, route: Route) -> dict[str, Any] | None:
        """The claims of the request's valid token for a guarded route; None, logged, when it has none."""
        assert route.authorizer is not None
        name, kind = route.authorizer
        console = self.server.console
        if kind != "jwt" or console is None:  # nothing here can check it: refused, never served unguarded
            log.error("%s: authorizer %s (%s) cannot be checked locally: refused", route.route_key, name, kind)
            return None
        claims = console.claims(self.headers.get("Authorization"))
        if claims is None:
            log.warning(
                "%s %s: %s refused the token (missing, expired, foreign or for another audience)",
                self.command,
                self.path.split("?", 1)[0],
                name,
            )
        return claims

    def _invoke(self, route: Route, event: dict[str, Any]) -> Response:
        function = route.function
        try:
            return to_response(function.invoke(event))
        except FunctionUnavailable as error:
            log.error("%s %s: %s", route.route_key, function.logical_id, error)
        except FunctionBusy as error:
            log.error("%s: %s", route.route_key, error)
            return gateway_error(503, "Service Unavailable")
        except BadResponse as error:
            log.error(
                "%s: %s returned a response API Gateway cannot map: %s", route.route_key, function.logical_id, error
            )
        except Exception:
            log.exception("%s: %s raised", route.route_key, function.logical_id)
        return gateway_error(502, "Internal Server Error")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if not raw:
            return b""
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise _BodyError(400, "Bad Request") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise _BodyError(413, "Request Entity Too Large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.close_connection = True
                raise _BodyError(400, "Bad Request") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                self.close_connection = True
                raise _BodyError(413, "Request Entity Too Large")
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, response: Response) -> None:
        status, body = response.status, response.body
        if status in _NO_BODY or status < 200:
            if body:
                log.warning("dropping the %d-byte body of a %d answer: it must have none", len(body), status)
            body = b""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self.send_response_only(status, phrase)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", self.server_version)
        for name, value in response.headers:
            self.send_header(name, value)
        if status != 204 and status >= 200:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        # Protocol-level errors (malformed request lines, …); successful requests go to access_log.
        log.info("%s %s", self.client_address[0], format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # replaced by the access_log line in _serve


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def routes_for(
    route_specs: Iterable[tuple[str, str, str, str]],
    functions: Mapping[str, LocalFunction],
    authorizers: Mapping[tuple[str, str], tuple[str, str]] | None = None,
) -> Router:
    """A Router from template.routes() tuples (method, path, function logical id, handler), each route
    guarded by the authorizer template.route_authorizers() gives it, if any."""
    guards = authorizers or {}
    return Router(
        compile_route(method, path, functions[function], guards.get((method, path)))
        for method, path, function, _ in route_specs
    )
