"""The per-invocation log sample: a sampled invocation logs at DEBUG (where an unchanged check's decision
line goes), the next unsampled one at the configured level again, and the level is only set when it
changes (setLevel empties every logger's cache)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from otafleet import observability


@pytest.fixture
def log() -> Iterator[object]:
    logger = observability.logger()
    rate, level = logger.sampling_rate, logger.log_level
    yield logger
    logger.sampling_rate = rate
    logger.setLevel(level)


def test_a_sampled_invocation_logs_at_debug_and_the_next_one_does_not(
    log: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = observability.logger()
    logger.sampling_rate = 0.5
    draws = iter([0.2, 0.9, 0.9])
    monkeypatch.setattr("otafleet.observability.random.random", lambda: next(draws))
    observability._draw_log_sample()
    assert logger.log_level == logging.DEBUG
    observability._draw_log_sample()
    assert logger.log_level == logger.initial_log_level != logging.DEBUG
    calls: list[object] = []
    monkeypatch.setattr(logger, "setLevel", calls.append)
    observability._draw_log_sample()
    assert calls == [], "an unchanged level is not set again"


def test_no_sample_rate_keeps_the_configured_level(log: object) -> None:
    logger = observability.logger()
    logger.sampling_rate = 0.0
    for _ in range(3):
        observability._draw_log_sample()
        assert logger.log_level == logger.initial_log_level
