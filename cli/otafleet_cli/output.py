"""Printing: aligned tables and `key  value` blocks for people, JSON for scripts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from enum import Enum
from typing import Any, TextIO

from otafleet.shapes import jsonable as jsonable  # re-exported: the CLI and its tests use it from here


def cell(value: object) -> str:
    """How one value reads in a table: `-` for nothing, yes/no for flags."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


# The terminal's width when stdout is one (main sets it), else None: piped output is never cut.
TABLE_WIDTH: ContextVar[int | None] = ContextVar("TABLE_WIDTH", default=None)
NARROWEST = 8  # a cut column keeps at least this many characters, or the table is left wider


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, width: int | None = None) -> str:
    """Columns padded to their widest cell, two spaces apart; no trailing blanks. Wider than `width`
    (default TABLE_WIDTH), the widest column is cut (its cells end in `…`), then the next widest, so a
    long reason or note does not wrap every row of the table."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    widths = _fitted(widths, width if width is not None else TABLE_WIDTH.get())
    lines = []
    for row in [list(headers), *cells]:
        lines.append("  ".join(_cut(text, widths[i]).ljust(widths[i]) for i, text in enumerate(row)).rstrip())
    return "\n".join(lines)


def _fitted(widths: list[int], limit: int | None) -> list[int]:
    if not limit or not widths:
        return widths
    widths = list(widths)
    excess = sum(widths) + 2 * (len(widths) - 1) - limit
    while excess > 0:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        room = widths[widest] - NARROWEST
        if room <= 0:
            break  # every column is as narrow as it may get
        others = sorted(widths, reverse=True)[1] if len(widths) > 1 else 0
        # Cut the widest down to the next widest at most, so the cut spreads over the widest columns.
        cut = min(excess, room, max(1, widths[widest] - others))
        widths[widest] -= cut
        excess -= cut
    return widths


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def csv_cell(value: object) -> str:
    """How one value reads in CSV: like a table cell, but nothing is an empty field, not `-`."""
    return "" if value is None or value == "" else cell(value)


def csv_text(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A header row and one row per record, quoted by the csv module where a cell needs it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue().removesuffix("\n")


def fields(pairs: Sequence[tuple[str, object]], indent: int = 0) -> str:
    """`label  value` lines with the values aligned; an empty label makes a blank line."""
    if not pairs:
        return ""
    width = max(len(label) for label, _ in pairs)
    pad = " " * indent
    return "\n".join(f"{pad}{label.ljust(width)}  {cell(value)}".rstrip() if label else "" for label, value in pairs)


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def whole_percentages(counts: Sequence[int]) -> list[int]:
    """Each count's share in whole percent, adding up to exactly 100 (largest remainder: each share is
    rounded down, then the points left go to the largest remainders, earlier entries first on ties), so
    a distribution never reads 33 % + 33 % + 33 %. All zero for no counts."""
    total = sum(counts)
    if total <= 0:
        return [0 for _ in counts]
    floors = [c * 100 // total for c in counts]
    left = 100 - sum(floors)
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(counts[i] * 100 % total), i))
    for i in by_remainder[:left]:
        floors[i] += 1
    return floors


def duration(seconds: float | None) -> str:
    """A span of time as people read it: `45 s`, `12 min`, `1.5 h`, `3 d`."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{seconds / 86400:.1f} d".replace(".0 d", " d")


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


# --output: table for people (the default), json for scripts, csv for the list commands.
FORMATS = ("table", "json", "csv")


class Output:
    """Where a command writes: its data to stdout (as JSON or CSV with --output), notes and errors to stderr."""

    def __init__(self, stdout: TextIO, stderr: TextIO, *, as_json: bool = False, format: str | None = None) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.format = format or ("json" if as_json else "table")

    @property
    def as_json(self) -> bool:
        return self.format == "json"

    def emit(self, data: Any, human: str) -> None:
        """Print `data` as JSON with --output json, else the human rendering (commands that are not lists
        have no CSV form: main refuses --output csv for them before they run)."""
        self.line(dumps(data) if self.as_json else human)

    def emit_rows(self, data: Any, human: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        """A list command's output: JSON `data`, CSV of `headers` and `rows`, or the human rendering."""
        if self.format == "csv":
            self.line(csv_text(headers, rows))
        else:
            self.emit(data, human)

    def line(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        """A hint for people (stderr, so it never mixes into JSON)."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def error(self, message: str) -> None:
        self.stderr.write(f"otafleet: error: {message}\n")
        self.stderr.flush()
