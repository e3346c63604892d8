"""Tables, field blocks and JSON conversion of the CLI's output module."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from otafleet.models import Kind, TrackState
from otafleet_cli.output import Output, cell, dumps, fields, jsonable, percent, table


def test_table_aligns_columns_without_trailing_blanks() -> None:
    text = table(["NAME", "N", "NOTE"], [["door", 1, None], ["temperature", 12, "x"]])
    assert text.splitlines() == [
        "NAME         N   NOTE",
        "door         1   -",
        "temperature  12  x",
    ]


def test_table_with_no_rows_is_just_the_header() -> None:
    assert table(["A", "B"], []) == "A  B"


def test_cells() -> None:
    assert [cell(None), cell(""), cell(True), cell(False), cell(Kind.FS), cell(3)] == ["-", "-", "yes", "no", "fs", "3"]


def test_fields_align_values_and_blank_labels_make_blank_lines() -> None:
    assert fields([("device", "AA"), ("", ""), ("free space", 5), ("pins", None)]).splitlines() == [
        "device      AA",
        "",
        "free space  5",
        "pins        -",
    ]
    assert fields([]) == ""


def test_percent() -> None:
    assert (percent(None), percent(0.2), percent(1 / 3)) == ("-", "20.0%", "33.3%")


@dataclass(frozen=True)
class Sample:
    kind: Kind
    state: TrackState
    tags: frozenset[str] = frozenset({"b", "a"})
    pins: dict[Kind, str] = field(default_factory=lambda: {Kind.APP: "1.0"})
    steps: tuple[int, ...] = (1, 2)


def test_jsonable_turns_models_into_plain_values() -> None:
    assert jsonable(Sample(Kind.APP, TrackState.HALTED)) == {
        "kind": "app",
        "state": "halted",
        "tags": ["a", "b"],
        "pins": {"app": "1.0"},
        "steps": [1, 2],
    }
    assert json.loads(dumps({"x": Sample(Kind.FS, TrackState.ACTIVE)}))["x"]["kind"] == "fs"


def test_output_separates_data_from_notes_and_errors() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(stdout, stderr, as_json=True)
    out.emit({"a": 1}, "human")
    out.note("a hint")
    out.error("it broke")
    assert json.loads(stdout.getvalue()) == {"a": 1}
    assert stderr.getvalue() == "a hint\notafleet: error: it broke\n"
    human = io.StringIO()
    Output(human, stderr).emit({"a": 1}, "human")
    assert human.getvalue() == "human\n"


def test_csv_has_a_header_quotes_what_needs_it_and_leaves_nothing_empty() -> None:
    from otafleet_cli.output import csv_text

    text = csv_text(["A", "B", "C"], [["x, y", None, True], ['say "hi"', 3, Kind.FS]])
    assert text.splitlines() == ["A,B,C", '"x, y",,yes', '"say ""hi""",3,fs']
    assert csv_text(["A"], []) == "A"


def test_output_csv_writes_rows_and_json_the_data() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    Output(stdout, stderr, format="csv").emit_rows({"a": 1}, "human", ["A"], [[1]])
    Output(stdout, stderr, format="json").emit_rows({"a": 1}, "human", ["A"], [[1]])
    Output(stdout, stderr).emit_rows({"a": 1}, "human", ["A"], [[1]])
    assert stdout.getvalue() == 'A\n1\n{\n  "a": 1\n}\nhuman\n'


def test_whole_percentages_add_up_to_100_by_largest_remainder() -> None:
    from otafleet_cli.output import whole_percentages

    assert whole_percentages([1, 1, 1]) == [34, 33, 33]  # a tie: the earlier entry gets the point
    assert whole_percentages([1, 2]) == [33, 67]
    assert whole_percentages([2, 1, 1, 1, 1, 1]) == [29, 15, 14, 14, 14, 14]
    assert sum(whole_percentages([7, 13, 1, 999])) == 100
    assert whole_percentages([5]) == [100]
    assert whole_percentages([]) == [] and whole_percentages([0, 0]) == [0, 0]


def test_table_fits_a_width_by_cutting_the_widest_column() -> None:
    rows = [["door", "a reason that is far too long for a narrow terminal", 1]]
    text = table(["NAME", "REASON", "N"], rows, width=30)
    assert text.splitlines() == [
        "NAME  REASON                 N",
        "door  a reason that is far…  1",
    ]
    assert all(len(line) <= 30 for line in text.splitlines())
    # Wide enough, or no width: every character stays.
    assert "narrow terminal" in table(["NAME", "REASON", "N"], rows, width=200)
    assert "narrow terminal" in table(["NAME", "REASON", "N"], rows)


def test_table_cuts_the_widest_columns_evenly_and_never_below_a_floor() -> None:
    rows = [["x" * 40, "y" * 40]]
    first, second = table(["A", "B"], rows, width=42).splitlines()[1].split("  ")
    assert (len(first), len(second)) == (20, 20) and first.endswith("…")
    narrow = table(["A", "B"], rows, width=5).splitlines()[1]
    assert narrow == "x" * 7 + "…  " + "y" * 7 + "…"  # 8 characters each at least: wider than asked


def test_table_width_comes_from_the_terminal_only_when_main_sets_it() -> None:
    from otafleet_cli.output import TABLE_WIDTH

    token = TABLE_WIDTH.set(20)
    try:
        assert table(["REASON"], [["z" * 50]]).splitlines()[1] == "z" * 19 + "…"
    finally:
        TABLE_WIDTH.reset(token)
