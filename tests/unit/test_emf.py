"""The metrics an invocation counts leave as CloudWatch EMF: one line, every metric under `service` and
its own dimensions, repeated counts summed, and a second line only for a metric or a dimension value that
would otherwise appear twice with different meanings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from otafleet import observability
from otafleet.observability import count, flush


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    flush()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def metric_values(line: dict[str, Any]) -> dict[tuple[str, tuple[str, ...]], float]:
    """(name, dimension values) -> value, as CloudWatch extracts them from one EMF document."""
    found = {}
    for directive in line["_aws"]["CloudWatchMetrics"]:
        assert directive["Namespace"] == "otafleet"
        [dims] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            assert metric["Unit"] == "Count"
            found[(metric["Name"], tuple(line[d] for d in dims))] = line[metric["Name"]]
    return found


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "otafleet")
    observability._namespace.cache_clear()
    observability._metrics_disabled.cache_clear()
    flush()


def test_a_checks_metrics_leave_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    count("Checks")
    count("RecordsUnchanged")
    count("NotModified", reason="up-to-date")
    count("Checks")
    [line] = emitted(capsys)
    assert metric_values(line) == {
        ("Checks", ("otafleet",)): 2.0,
        ("RecordsUnchanged", ("otafleet",)): 1.0,
        ("NotModified", ("otafleet", "up-to-date")): 1.0,
    }
    assert isinstance(line["_aws"]["Timestamp"], int)
    assert emitted(capsys) == [], "flushed counts are forgotten"


def test_a_dimension_with_two_values_takes_a_second_line(capsys: pytest.CaptureFixture[str]) -> None:
    count("Offers", delivery="redirect")
    count("Offers", delivery="inline")
    count("Checks")
    lines = emitted(capsys)
    assert len(lines) == 2
    merged = {k: v for line in lines for k, v in metric_values(line).items()}
    assert merged == {
        ("Offers", ("otafleet", "redirect")): 1.0,
        ("Offers", ("otafleet", "inline")): 1.0,
        ("Checks", ("otafleet",)): 1.0,
    }


def test_disabled_metrics_write_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    observability._metrics_disabled.cache_clear()
    count("Checks")
    assert emitted(capsys) == []
    observability._metrics_disabled.cache_clear()


@pytest.mark.parametrize(
    "counts",
    [
        [("Checks", {}), ("RecordsUnchanged", {}), ("NotModified", {"reason": "up-to-date"})],
        [("Offers", {"delivery": "redirect"}), ("Offers", {}), ("Offers", {"delivery": "inline"}), ("Checks", {})],
        [("ColdStarts", {}), ("Checks", {}), ("Checks", {}), ("Refused", {})],
        [("NotModified", {"reason": "Checks"}), ("Checks", {})],
    ],
)
def test_the_written_line_is_the_documents_emf_lines_builds(
    counts: list[tuple[str, dict[str, str]]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush writes text laid out once per set of counts; it must be exactly emf_lines' documents."""
    monkeypatch.setattr("otafleet.observability.time.time", lambda: 1_700_000_000.123)
    for _ in range(2):  # the second time from the cached layout
        pending: dict[Any, int] = {}
        for name, dims in counts:
            count(name, 1, **dims)
            key = (name, tuple(sorted(dims.items())))
            pending[key] = pending.get(key, 0) + 1
        assert emitted(capsys) == observability.emf_lines(pending, 1_700_000_000_123)
