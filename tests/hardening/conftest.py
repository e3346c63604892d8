"""Fixtures of the hardening suite: a seeded world on moto (in process or as a server on 127.0.0.1),
fresh handlers, and every log line an invocation writes, captured.

Hypothesis budgets: each property sets its own `max_examples` through `hardening.helpers.fuzz_settings`;
`HYPOTHESIS_PROFILE=long` multiplies them (the `long` profile registered here) for a deeper run.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from hardening.helpers import LONG_PROFILE, LogCapture, MotoServer, seeded_world
from hypothesis import settings
from moto import mock_aws

from otafleet.observability import logger
from publish import app as publish_app
from support.world import World
from update import app as update_app

settings.register_profile(LONG_PROFILE, deadline=None, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE") == LONG_PROFILE:
    settings.load_profile(LONG_PROFILE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "load: the bounded load test on the local stack (runs only with OTAFLEET_LOAD=1)"
    )


@pytest.fixture(autouse=True)
def fresh_handlers() -> Iterator[None]:
    """Each test gets handlers that build their service/ingest (and so their clients) anew."""
    update_app._service = None
    publish_app._ingest = None
    yield
    update_app._service = None
    publish_app._ingest = None


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield World.create()


@pytest.fixture
def seeded() -> Iterator[World]:
    """`door` (esp8266, inline, auth, enrollment), `lamp` (esp8266, redirect) and `cam` (esp32s3) with
    releases on `stable`, and one assigned device each; see helpers.seeded_world."""
    with mock_aws():
        yield seeded_world(World.create())


@pytest.fixture(scope="module")
def shared() -> Iterator[World]:
    """The same seeded world for a whole module, for tests whose writes cannot disturb each other (never
    combine it with `world`/`seeded` in one module: moto resets its state when a mock ends)."""
    with mock_aws():
        yield seeded_world(World.create())


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[LogCapture]:
    """Everything written while the test runs: the Powertools logger's JSON lines (its handler's
    stream is swapped, since it was bound to whatever sys.stdout was when it was created), every
    standard logging record at INFO and above, and stdout/stderr (metrics, prints)."""
    log = logger()
    handlers = [h for h in log.handlers if isinstance(h, logging.StreamHandler)]
    buffer = io.StringIO()
    # Assigned, not setStream(): that flushes the old stream, which may be a capture pytest already closed.
    previous = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = buffer
    root_buffer = io.StringIO()
    root_handler = logging.StreamHandler(root_buffer)
    root_handler.setLevel(logging.INFO)
    root_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(root_handler)
    capture = LogCapture(buffer, root_buffer, capsys)
    try:
        yield capture
    finally:
        root.removeHandler(root_handler)
        for handler, stream in zip(handlers, previous, strict=True):
            handler.stream = stream


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """moto as a real server on 127.0.0.1 (a free port), shared by a module's tests."""
    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()
