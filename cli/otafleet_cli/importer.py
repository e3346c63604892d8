"""`otafleet import`: bring a fleet over from a hand-written update server.

Those servers keep a MAC → version mapping and hand each device the binary listed for it. Three forms
are read, never executed:

- the ESP8266 docs' PHP array, e.g. `$db = array("18:FE:AA:AA:AA:AA" => "DOOR-7-g14f53a19", …);`
  (single or double quotes, `array(…)` or `[…]`, any whitespace, trailing commas; commented-out
  entries are skipped);
- a JSON object `{"<mac>": "<version>", …}`;
- a CSV with a header `mac,version[,product][,channel]` (`,` `;` or tab separated); a row's product
  and channel override `--product` / `--channel`.

Each device is assigned to the product (and channel: `--channel`, else the product's default channel)
and **pinned** to its listed version, so it stays on its own build as it did with the script. A pin to a
version that is not yet a registered release of the product is imported with a warning: the device gets
`304` until that release is uploaded. Entries that cannot be imported (not a MAC, a MAC that is no
device's such as 00:00:00:00:00:00, not a valid version, one MAC listed with two versions) are reported
and skipped; the rest are imported.

Exit code of `run_import`: 0 when every entry was imported (or, with `dry_run`, would be), 1 when some
were skipped. A file that cannot be read at all, or an unknown product, raises `FleetError`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from otafleet import names
from otafleet.fleet import FleetError, check_name
from otafleet.models import Catalog, Device, Kind
from otafleet.protocol import is_device_mac, normalise_mac, not_a_device
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore
from otafleet_cli.output import dumps

FORMATS = ("php", "json", "csv")
_SUFFIXES = {".php": "php", ".inc": "php", ".json": "json", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}


class Action(StrEnum):
    NEW = "new"  # not in otafleet yet, or seen checking in but never assigned
    CHANGE = "change"  # assigned, with another product, channel or pin
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Entry:
    """One MAC → version line of the source, as written."""

    where: str  # "line 7" (PHP, CSV) or "entry 3" (JSON)
    mac: str
    version: str
    product: str | None = None
    channel: str | None = None


@dataclass(frozen=True)
class Problem:
    """An entry that is not imported, and why."""

    where: str
    mac: str
    message: str


@dataclass(frozen=True)
class Change:
    mac: str
    product: str
    channel: str
    version: str
    action: Action
    details: tuple[str, ...] = ()  # what changes, e.g. "pin 1.0.0 → 1.0.1"
    release: str = "registered"  # the pinned version's state: registered, missing, rejected, revoked


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def writes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.UNCHANGED)

    def summary(self) -> str:
        return (
            f"{self.count(Action.NEW)} new, {self.count(Action.CHANGE)} changed, "
            f"{self.count(Action.UNCHANGED)} unchanged, {len(self.problems)} skipped"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--json`."""
        return {
            "changes": [
                {
                    "mac": c.mac,
                    "product": c.product,
                    "channel": c.channel,
                    "pin": c.version,
                    "action": c.action.value,
                    "details": list(c.details),
                    "release": c.release,
                }
                for c in self.changes
            ],
            "skipped": [{"where": p.where, "mac": p.mac, "reason": p.message} for p in self.problems],
            "warnings": list(self.warnings),
            "counts": {a.value: self.count(a) for a in Action} | {"skipped": len(self.problems)},
        }


# ------------------------------------------------------------------ reading the mapping


def detect_format(text: str, filename: str) -> str:
    """php, json or csv: by the file's suffix, else by its content."""
    by_suffix = _SUFFIXES.get(Path(filename).suffix.lower())
    if by_suffix:
        return by_suffix
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        return "json"
    if "=>" in text:
        return "php"
    return "csv"


def parse_entries(text: str, filename: str, *, fmt: str | None = None) -> list[Entry]:
    """Every MAC → version entry of the file, in order, exactly as written (nothing validated yet).
    Raises FleetError when the file is not a mapping in the expected form at all."""
    fmt = fmt or detect_format(text, filename)
    text = text.removeprefix("\ufeff")
    if fmt == "php":
        return _parse_php(text, filename)
    if fmt == "json":
        return _parse_json(text, filename)
    if fmt == "csv":
        return _parse_csv(text, filename)
    raise FleetError(f"unknown mapping format {fmt!r} (known: {', '.join(FORMATS)})")


def parse_mapping(text: str, filename: str) -> list[tuple[str, str]]:
    """(MAC, version) pairs of the file, in order, as written."""
    return [(e.mac, e.version) for e in parse_entries(text, filename)]


# PHP, tokenised just enough to find `'key' => 'value'` pairs outside comments. Strings are matched
# whole before anything else, so `//` or `#` inside a string is not a comment, and a `=>` in a comment
# is not a pair.
_PHP_TOKENS = re.compile(
    r"""
      (?P<comment>//[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>[0-9][0-9A-Za-z._+~-]*)
    | (?P<arrow>=>)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_DOUBLE_QUOTED_ESCAPES = {"\\": "\\", '"': '"', "$": "$", "n": "\n", "t": "\t", "r": "\r"}


def _php_string(token: str) -> str:
    quote, body = token[0], token[1:-1]
    if quote == "'":
        return re.sub(r"\\([\\'])", r"\1", body)
    return re.sub(r"\\(.)", lambda m: _DOUBLE_QUOTED_ESCAPES.get(m[1], m[0]), body)


def _parse_php(text: str, filename: str) -> list[Entry]:
    tokens: list[tuple[str, str, int]] = []  # (kind, text, line)
    line = 1
    for match in _PHP_TOKENS.finditer(text):
        kind = match.lastgroup or "other"
        if kind not in ("comment", "space"):
            tokens.append((kind, match[0], line))
        line += match[0].count("\n")
    entries: list[Entry] = []
    for i, token in enumerate(tokens):
        if token[0] != "arrow" or i == 0 or i + 1 >= len(tokens):
            continue
        (key_kind, key, key_line), (value_kind, version, _) = tokens[i - 1], tokens[i + 1]
        if key_kind != "string":
            continue
        mac = _php_string(key)
        if value_kind == "string":
            entries.append(Entry(f"line {key_line}", mac, _php_string(version)))
        elif value_kind == "number":
            entries.append(Entry(f"line {key_line}", mac, version))
        else:  # `"mac" => $variable`, `"mac" => array(…)`: not a version we can read
            entries.append(Entry(f"line {key_line}", mac, ""))
    if not entries:
        raise FleetError(
            f'{filename}: no `"<mac>" => "<version>"` entries found (expected the ESP8266 docs\' PHP array, '
            'e.g. $db = array("18:FE:AA:AA:AA:AA" => "1.0.0");)'
        )
    return entries


def _parse_json(text: str, filename: str) -> list[Entry]:
    try:
        pairs = json.loads(text, object_pairs_hook=lambda items: items)
    except json.JSONDecodeError as bad:
        raise FleetError(f"{filename}: not valid JSON: {bad.msg} at line {bad.lineno} column {bad.colno}") from None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        raise FleetError(f'{filename}: expected a JSON object {{"<mac>": "<version>", …}}')
    entries = []
    for n, (mac, version) in enumerate(pairs, 1):
        # A number would lose its spelling (1.10 → 1.1): only strings are versions.
        entries.append(Entry(f"entry {n}", mac, version if isinstance(version, str) else ""))
    return entries


def _parse_csv(text: str, filename: str) -> list[Entry]:
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), None)
    if first is None:
        raise FleetError(f"{filename}: empty (expected a CSV header mac,version[,product][,channel])")
    header_line = lines[first]
    delimiter = max(",;\t", key=header_line.count)
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    if "mac" not in header or "version" not in header:
        raise FleetError(
            f"{filename}: the CSV header must name the columns mac and version (optional: product, channel); "
            f"found {header_line.strip()[:80]!r}"
        )
    column: dict[str, int] = {
        name: header.index(name) for name in ("mac", "version", "product", "channel") if name in header
    }

    def get(row: Sequence[str], name: str) -> str | None:
        index = column.get(name)
        value = row[index].strip() if index is not None and index < len(row) else ""
        return value or None

    entries = []
    for row in reader:
        at = f"line {first + reader.line_num}"
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        entries.append(
            Entry(at, get(row, "mac") or "", get(row, "version") or "", get(row, "product"), get(row, "channel"))
        )
    return entries


# ------------------------------------------------------------------ planning


def plan(
    entries: Iterable[Entry],
    *,
    product: str,
    channel: str | None,
    catalogs: Mapping[str, Catalog | None],
    devices: Mapping[str, Device],
) -> Plan:
    """What importing `entries` would change, given the products' catalogs (by name; None: unknown product)
    and the devices already known (by normalised MAC). Pure: reads and writes nothing."""
    valid: dict[str, tuple[Entry, str, str, str]] = {}  # mac -> (entry, product, channel, version)
    problems: list[Problem] = []
    conflicting: set[str] = set()
    warnings: list[str] = []
    for entry in entries:
        mac = normalise_mac(entry.mac)
        if mac is None:
            problems.append(Problem(entry.where, entry.mac, f"not a MAC address: {entry.mac[:40]!r}"))
            continue
        if not is_device_mac(mac):  # the same rule as `device assign`: e.g. the zero MAC is no one's
            problems.append(Problem(entry.where, mac, not_a_device(mac)))
            continue
        try:
            version = names.version(entry.version.strip())
        except names.InvalidName:
            what = repr(entry.version[:70]) if entry.version else "no version"
            problems.append(
                Problem(entry.where, mac, f"{what} cannot be a release version (1-64 of A-Z a-z 0-9 . _ + ~ -)")
            )
            continue
        name = entry.product or product
        catalog = catalogs.get(name)
        if catalog is None:
            problems.append(Problem(entry.where, mac, f"unknown product {name!r}"))
            continue
        chosen = entry.channel or channel or catalog.product.default_channel
        try:
            check_name("channel", chosen)
        except FleetError as bad:
            problems.append(Problem(entry.where, mac, bad.message))
            continue
        earlier = valid.get(mac)
        if mac in conflicting:
            problems.append(Problem(entry.where, mac, f"{mac} is listed more than once with different targets"))
        elif earlier is None:
            valid[mac] = (entry, name, chosen, version)
        elif earlier[1:] == (name, chosen, version):
            warnings.append(f"{mac} is listed twice ({earlier[0].where}, {entry.where}); imported once")
        else:
            conflicting.add(mac)
            del valid[mac]
            message = f"{mac} is listed more than once with different targets ({earlier[0].where}: {earlier[3]})"
            problems += [Problem(earlier[0].where, mac, message), Problem(entry.where, mac, message)]

    changes: list[Change] = []
    unregistered: dict[tuple[str, str], list[str]] = {}
    for mac, (_, name, chosen, version) in valid.items():
        catalog = catalogs[name]
        assert catalog is not None
        release = catalog.release(Kind.APP, version)
        state = "missing" if release is None else release.state.value
        if state != "registered":
            unregistered.setdefault((name, version), []).append(mac)
        changes.append(_change(mac, name, chosen, version, devices.get(mac), state))

    for (name, version), macs in sorted(unregistered.items()):
        catalog = catalogs[name]
        assert catalog is not None
        release = catalog.release(Kind.APP, version)
        count = f"{len(macs)} device{'s' if len(macs) != 1 else ''}"
        get = "gets" if len(macs) == 1 else "get"
        if release is None:
            warnings.append(
                f"{name} {version} is not a registered release yet: {count} pinned to it {get} 304 until it is "
                f"uploaded (otafleet upload FILE --product {name} --version {version})"
            )
        else:
            why = f": {release.reason}" if release.reason else ""
            warnings.append(f"{name} {version} is {release.state.value}{why}; {count} pinned to it {get} 304")
    missing_channels = set()
    for c in changes:
        serving = catalogs[c.product]
        if serving is not None and c.channel not in serving.channels:
            missing_channels.add((c.product, c.channel))
    for name, chosen in sorted(missing_channels):
        warnings.append(
            f"channel {name}/{chosen} serves no release yet; pinned devices do not need it, but once unpinned they "
            f"get 304 until `otafleet channel set {name} {chosen} VERSION`"
        )
    return Plan(tuple(changes), tuple(problems), tuple(warnings))


def _change(mac: str, product: str, channel: str, version: str, before: Device | None, state: str) -> Change:
    if before is None or not before.assigned:
        seen = ("seen checking in, unassigned",) if before is not None else ()
        return Change(mac, product, channel, version, Action.NEW, seen, state)
    details: list[str] = []
    if before.product != product:
        details.append(f"product {before.product} → {product}")
    if before.channel != channel:
        details.append(f"channel {before.channel} → {channel}")
    pin = before.pins.get(Kind.APP)
    if pin != version:
        details.append(f"pin {pin or '(none)'} → {version}")
    action = Action.CHANGE if details else Action.UNCHANGED
    return Change(mac, product, channel, version, action, tuple(details), state)


# ------------------------------------------------------------------ applying


def apply(plan_: Plan, devices: DeviceStore) -> int:
    """Write the plan's new and changed devices; returns how many were written. Like `device assign`:
    what a device reported is kept; a device moved to another product loses its old product's pins,
    pending offer and failed releases."""
    written = 0
    for change in plan_.writes:
        existing = devices.get(change.mac)
        base = existing or Device(mac=change.mac)
        moved = base.product is not None and base.product != change.product
        pins = {} if moved else dict(base.pins)
        pins[Kind.APP] = change.version
        devices.put(replace(base, product=change.product, channel=change.channel, assigned=True, pins=pins))
        if moved and existing is not None and (existing.failed or existing.attempts):
            devices.clear_failures(change.mac)
        written += 1
    return written


def run_import(
    path: Path,
    *,
    product: str,
    channel: str | None,
    dry_run: bool,
    devices: DeviceStore,
    catalog: CatalogStore,
    out: TextIO,
    as_json: bool = False,
) -> int:
    """Read `path`, plan, print the plan to `out` (with `as_json`: as one JSON document, Plan.as_dict with
    `dry_run` and `written`) and (unless `dry_run`) apply it. See the module doc."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as bad:
        raise FleetError(f"cannot read {path}: {bad}") from None
    entries = parse_entries(text, path.name)
    main_catalog = catalog.load(product, fresh=True)
    if main_catalog is None:
        raise FleetError(
            f"unknown product {product!r}; create it first with `otafleet product create {product} --platform …`"
        )
    catalogs: dict[str, Catalog | None] = {product: main_catalog}
    for name in {e.product for e in entries if e.product} - {product}:
        catalogs[name] = catalog.load(name, fresh=True)
    known: dict[str, Device] = {}
    for mac in dict.fromkeys(m for m in (normalise_mac(e.mac) for e in entries) if m):
        found = devices.get(mac)
        if found is not None:
            known[mac] = found
    result = plan(entries, product=product, channel=channel, catalogs=catalogs, devices=known)
    if as_json:
        written = 0 if dry_run else apply(result, devices)
        out.write(dumps({**result.as_dict(), "dry_run": dry_run, "written": written}) + "\n")
        return 1 if result.problems else 0
    print_plan(result, out, source=path.name, dry_run=dry_run)
    if dry_run:
        out.write(f"dry run: {result.summary()}; nothing written (run again without --dry-run to apply)\n")
    else:
        written = apply(result, devices)
        out.write(f"imported: {result.summary()}; {written} device record{'s' if written != 1 else ''} written\n")
    return 1 if result.problems else 0


def print_plan(result: Plan, out: TextIO, *, source: str, dry_run: bool) -> None:
    verb = "would import" if dry_run else "importing"
    out.write(f"{verb} {len(result.changes)} device{'s' if len(result.changes) != 1 else ''} from {source}\n")
    if result.changes:
        rows = [
            (c.action.value, c.mac, f"{c.product}/{c.channel}", f"pin {c.version}", "; ".join(c.details))
            for c in sorted(result.changes, key=lambda c: (list(Action).index(c.action), c.mac))
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            line = "  ".join(v.ljust(widths[i]) for i, v in enumerate(row[:4])) + "  " + row[4]
            out.write(f"  {line.rstrip()}\n")
    if result.problems:
        out.write("skipped:\n")
        for p in result.problems:
            out.write(f"  {p.where}: {p.message}\n")
    if result.warnings:
        out.write("warnings:\n")
        for w in result.warnings:
            out.write(f"  {w}\n")


__all__ = [
    "Action",
    "Change",
    "Entry",
    "Plan",
    "Problem",
    "apply",
    "detect_format",
    "parse_entries",
    "parse_mapping",
    "plan",
    "print_plan",
    "run_import",
]
