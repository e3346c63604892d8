"""The events the local stack hands to the handlers: API Gateway payload 2.0 from HTTP requests, and S3
events completed from moto's notifications (versionId, key encoding) as S3 sends them to Lambda."""

from __future__ import annotations

import base64
import errno
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import RunningStack, esp_request, raw_request

from otafleet_local import api, s3events, template
from otafleet_local.lambdas import LocalFunction

pytestmark = pytest.mark.e2e


def _route(method: str, path: str) -> api.Route:
    function = LocalFunction("UpdateFunction", "otafleet-UpdateFunction", "update/app.handler", Path("."), "us-east-1")
    return api.compile_route(method, path, function)


def test_http_request_becomes_a_payload_2_event() -> None:
    route = _route("GET", "/update/{product}")
    request = api.Request(
        method="GET",
        target="/update/door?delivery=inline&x=1&x=2",
        protocol="HTTP/1.0",
        headers=[
            ("Host", "192.168.1.20:3000"),
            ("User-Agent", "ESP8266-http-Update"),
            ("x-ESP8266-STA-MAC", "5C:CF:7F:00:00:01"),
            ("X-Custom", "a"),
            ("x-custom", "b"),
            ("Cookie", "a=1; b=2"),
        ],
        body=b"",
        source_ip="192.168.1.50",
        server_port=3000,
    )
    matched, params, _ = api.Router([route]).match("GET", "/update/door")
    assert matched is route and params == {"product": "door"}
    event = api.build_event(request, route, params)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /update/{product}"
    assert event["rawPath"] == "/update/door"
    assert event["rawQueryString"] == "delivery=inline&x=1&x=2"
    assert event["queryStringParameters"] == {"delivery": "inline", "x": "1,2"}
    assert event["pathParameters"] == {"product": "door"}
    headers = event["headers"]
    assert all(k == k.lower() for k in headers)
    assert headers["x-esp8266-sta-mac"] == "5C:CF:7F:00:00:01"
    assert headers["x-custom"] == "a,b"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "192.168.1.50"
    assert "cookie" not in headers and event["cookies"] == ["a=1", "b=2"]
    http = event["requestContext"]["http"]
    assert http == {
        "method": "GET",
        "path": "/update/door",
        "protocol": "HTTP/1.0",
        "sourceIp": "192.168.1.50",
        "userAgent": "ESP8266-http-Update",
    }
    assert event["requestContext"]["routeKey"] == event["routeKey"]
    assert event["requestContext"]["domainName"] == "192.168.1.20"
    assert "body" not in event and event["isBase64Encoded"] is False


def test_routes_prefer_literal_paths() -> None:
    router = api.Router([_route("GET", "/update/{product}"), _route("GET", "/update/beta"), _route("GET", "/{proxy+}")])
    assert router.match("GET", "/update/beta")[0].path == "/update/beta"  # type: ignore[union-attr]
    assert router.match("GET", "/update/door")[0].path == "/update/{product}"  # type: ignore[union-attr]
    assert router.match("GET", "/a/b/c")[1] == {"proxy": "a/b/c"}
    assert router.match("POST", "/update/door")[0] is None


def test_handler_answers_map_back_to_http() -> None:
    image = b"\xe9\x01\x02\x40" + bytes(100)
    inline = api.to_response(
        {
            "statusCode": 200,
            "headers": {"x-MD5": "abc", "Content-Length": "999", "Transfer-Encoding": "chunked"},
            "body": base64.b64encode(image).decode(),
            "isBase64Encoded": True,
            "cookies": ["s=1"],
        }
    )
    assert inline.status == 200 and inline.body == image
    assert ("x-MD5", "abc") in inline.headers and ("Set-Cookie", "s=1") in inline.headers
    # Framing headers are the server's business: a handler's would be wrong for the decoded body.
    assert not [h for h, _ in inline.headers if h.lower() in ("content-length", "transfer-encoding")]
    assert api.to_response({"statusCode": 304, "headers": {"X": "y"}}).body == b""
    plain = api.to_response({"ok": True})
    assert plain.status == 200 and json.loads(plain.body) == {"ok": True}
    with pytest.raises(api.BadResponse):
        api.to_response({"statusCode": "abc"})
    with pytest.raises(api.BadResponse):
        api.to_response({"statusCode": 200, "body": "%%%", "isBase64Encoded": True})


def test_template_s3_triggers_become_notification_filters() -> None:
    found = s3events.triggers()
    publish = [t for t in found if t.function == "PublishFunction"]
    assert publish, "template.yaml has no S3 events on PublishFunction"
    assert {t.rules for t in publish} == {
        (("prefix", "firmware/"), ("suffix", ".bin")),
        (("prefix", "filesystem/"), ("suffix", ".bin")),
    }
    assert all(t.events == ("s3:ObjectCreated:*",) for t in publish)
    assert {t.bucket for t in publish} == set(template.resources("AWS::S3::Bucket"))


def moto_record(bucket: str, key_as_moto_encodes_it: str, etag: str) -> dict[str, Any]:
    """A record as moto 5.2 puts it on the queue (see otafleet_local.s3events)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "FirmwareUploaded",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key_as_moto_encodes_it, "size": 3, "eTag": etag},
        },
    }


def test_s3_record_gets_the_exact_version_and_s3_key_encoding(local_stack: RunningStack) -> None:
    s3 = local_stack.client("s3")
    bucket = local_stack.info["bucket"]
    key = "notes/e2e/a b+c.bin"  # outside the publish filters
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"one")
    second = s3.put_object(Bucket=bucket, Key=key, Body=b"two")
    assert first["VersionId"] != second["VersionId"]

    record = s3events.complete_record(moto_record(bucket, "notes%2Fe2e%2Fa+b%2Bc.bin", first["ETag"].strip('"')), s3)
    obj = record["s3"]["object"]
    assert obj["key"] == "notes/e2e/a+b%2Bc.bin"  # S3 keeps "/" and encodes the rest like a form
    assert obj["versionId"] == first["VersionId"]  # the upload of the event, not the newest object
    assert obj["sequencer"]
    for part in ("userIdentity", "requestParameters", "responseElements"):
        assert part in record
    assert record["s3"]["bucket"]["ownerIdentity"]

    latest = s3events.complete_record(moto_record(bucket, "notes%2Fe2e%2Fa+b%2Bc.bin", second["ETag"].strip('"')), s3)
    assert latest["s3"]["object"]["versionId"] == second["VersionId"]


def test_simple_updater_route_with_path_parameters(local_stack: RunningStack) -> None:
    """GET /firmware/{product}/{channel} for the demo: a redirect to the demo image, no device headers."""
    host, port = local_stack.api_host_port
    response = raw_request(host, port, esp_request("/firmware/demo/stable", f"{host}:{port}", {}))
    assert response.status == 302, response.raw_head
    assert response.body == b"" and response.header("Content-Length") == "0"
    assert "/firmware/demo/1.0.1.bin?" in (response.header("Location") or "")


def _fake(name: str, handler: Any) -> LocalFunction:
    function = LocalFunction(name, name, "fake.handler", Path("."), "us-east-1", timeout=2)
    function._callable = handler
    return function


def _boom(event: Any, context: Any) -> Any:
    raise RuntimeError("boom")


@pytest.fixture
def fake_api() -> Iterator[tuple[str, int, list[Any]]]:
    """The HTTP front end alone, in process, over handlers that misbehave in API Gateway's ways."""
    seen: list[Any] = []

    def record(event: Any, context: Any) -> Any:
        seen.append((event, context))
        return {"statusCode": 304, "headers": {"X-Reason": "same"}, "body": "must not be sent"}

    router = api.Router(
        [
            api.compile_route("GET", "/boom", _fake("Boom", _boom)),
            api.compile_route("GET", "/bad", _fake("Bad", lambda event, context: {"statusCode": "nope"})),
            api.compile_route("GET", "/same/{thing}", _fake("Same", record)),
        ]
    )
    server = api.ApiServer(("127.0.0.1", 0), router)
    server.activate()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_handler_errors_are_502_and_304_never_has_a_body(fake_api: tuple[str, int, list[Any]]) -> None:
    host, port, seen = fake_api
    for path in ("/boom", "/bad"):
        response = raw_request(host, port, f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        assert response.status == 502, path
        assert response.header("Content-Length") == str(len(response.body))
        assert response.header("Connection") == "close"
    same = raw_request(host, port, f"GET /same/x%20y HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    assert same.status == 304 and same.body == b"" and same.header("Content-Length") == "0"
    assert same.header("X-Reason") == "same"
    event, context = seen[0]
    assert event["pathParameters"] == {"thing": "x y"} and event["routeKey"] == "GET /same/{thing}"
    assert context.function_name == "Same" and 0 < context.get_remaining_time_in_millis() <= 2000


def test_the_api_port_listens_only_once_ready_and_says_so() -> None:
    """Bound at once (a port in use fails at start), refusing connections until activated: a script
    that waits for the port waits for the stack. /healthz is the documented ready signal."""
    server = api.ApiServer(("127.0.0.1", 0), api.Router([]))
    port = server.server_address[1]
    probe = socket.socket()
    try:
        assert probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    finally:
        probe.close()
        server.activate()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200 and json.loads(answer.read()) == {"ready": True}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
