"""`otafleet import`: reading the MAC → version mappings of hand-written update servers, and the plan."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from otafleet.config import Settings
from otafleet.fleet import FleetError
from otafleet.models import Catalog, Channel, Device, Kind, Product, Release, ReleaseState, Reported, Track
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore
from otafleet_cli.importer import (
    Action,
    Entry,
    detect_format,
    parse_entries,
    parse_mapping,
    plan,
    print_plan,
    run_import,
)

# The mapping of the ESP8266 Arduino core's documentation (OTA updates, "Server request handling").
DOCS_EXAMPLE = '$db = array("18:FE:AA:AA:AA:AA" => "DOOR-7-g14f53a19", "18:FE:AA:AA:AA:BB" => "TEMP-1.0.0");'
DOCS_PAIRS = [("18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19"), ("18:FE:AA:AA:AA:BB", "TEMP-1.0.0")]

# A whole hand-written script around the same kind of array: the importer must pick out the entries
# and nothing else (no code is executed).
PHP_SCRIPT = """<?php
// update.php: hands each ESP8266 the binary listed for its MAC
header('Content-type: text/plain; charset=utf8', true);

if ($_SERVER['HTTP_USER_AGENT'] != 'ESP8266-http-Update') {   # only the updater
    header($_SERVER["SERVER_PROTOCOL"] . ' 403 Forbidden', true, 403);
    echo "only for ESP8266 updater! // not a comment\\n";
    exit();
}

$db = array(
    "18:FE:AA:AA:AA:AA"=>"DOOR-7-g14f53a19",
    '18:fe:aa:aa:aa:bb'   =>   'TEMP-1.0.0' ,
    // "18:FE:AA:AA:AA:CC" => "retired",
    # "18:FE:AA:AA:AA:DD" => "retired too",
    /* "18:FE:AA:AA:AA:EE" => "and this",
       "18:FE:AA:AA:AA:FF" => "spanning lines" */
    "5C:CF:7F:00:00:01" => 'LAMP-2.1',
    "5C:CF:7F:00:00:02" => 2,
);

$mac = $_SERVER['HTTP_X_ESP8266_STA_MAC'];
if (!isset($db[$mac])) {
    header($_SERVER["SERVER_PROTOCOL"] . ' 500 ESP MAC not configured for updates', true, 500);
    exit();
}
$localBinary = "./bin/" . $db[$mac] . ".bin";
"""


# ------------------------------------------------------------------ formats


def test_the_esp8266_docs_example() -> None:
    assert parse_mapping(DOCS_EXAMPLE, "update.php") == DOCS_PAIRS


def test_the_docs_example_as_a_bare_snippet_without_suffix() -> None:
    assert detect_format(DOCS_EXAMPLE, "mapping") == "php"
    assert parse_mapping(DOCS_EXAMPLE, "mapping") == DOCS_PAIRS


def test_php_script_with_comments_quotes_and_trailing_comma() -> None:
    entries = parse_entries(PHP_SCRIPT, "update.php")
    assert [(e.mac, e.version) for e in entries] == [
        ("18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19"),
        ("18:fe:aa:aa:aa:bb", "TEMP-1.0.0"),
        ("5C:CF:7F:00:00:01", "LAMP-2.1"),
        ("5C:CF:7F:00:00:02", "2"),
    ]
    assert [e.where for e in entries] == ["line 12", "line 13", "line 18", "line 19"]


def test_php_string_escapes() -> None:
    text = r"""$db = array('18:FE:AA:AA:AA:AA' => 'it\'s', "18:FE:AA:AA:AA:BB" => "say \"hi\" \$x");"""
    assert parse_mapping(text, "db.php") == [("18:FE:AA:AA:AA:AA", "it's"), ("18:FE:AA:AA:AA:BB", 'say "hi" $x')]


def test_php_short_array_syntax() -> None:
    text = "<?php\n$db = [\n  '18:FE:AA:AA:AA:AA' => '1.0.0',\n  '18:FE:AA:AA:AA:BB' => '1.0.1'\n];\n"
    assert parse_mapping(text, "db.php") == [("18:FE:AA:AA:AA:AA", "1.0.0"), ("18:FE:AA:AA:AA:BB", "1.0.1")]


def test_php_value_that_is_not_a_literal_is_kept_as_an_empty_version() -> None:
    entries = parse_entries('$db = array("18:FE:AA:AA:AA:AA" => $latest);', "db.php")
    assert [(e.mac, e.version) for e in entries] == [("18:FE:AA:AA:AA:AA", "")]


def test_php_without_entries_is_an_error() -> None:
    with pytest.raises(FleetError, match=r"no .* entries found"):
        parse_entries("<?php\necho 'hello';\n", "update.php")


def test_json_object() -> None:
    text = '{\n  "18:FE:AA:AA:AA:AA": "DOOR-7-g14f53a19",\n  "18-fe-aa-aa-aa-bb": "TEMP-1.0.0"\n}\n'
    assert detect_format(text, "fleet") == "json"
    entries = parse_entries(text, "fleet.json")
    assert [(e.mac, e.version) for e in entries] == [
        ("18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19"),
        ("18-fe-aa-aa-aa-bb", "TEMP-1.0.0"),
    ]
    assert [e.where for e in entries] == ["entry 1", "entry 2"]


def test_json_keeps_duplicate_keys_and_refuses_numbers_as_versions() -> None:
    entries = parse_entries(
        '{"18:FE:AA:AA:AA:AA": "1.0", "18:FE:AA:AA:AA:AA": "1.1", "18:FE:AA:AA:AA:BB": 1.10}', "x.json"
    )
    assert [(e.mac, e.version) for e in entries] == [
        ("18:FE:AA:AA:AA:AA", "1.0"),
        ("18:FE:AA:AA:AA:AA", "1.1"),
        ("18:FE:AA:AA:AA:BB", ""),  # 1.10 would read as 1.1: not taken as a version
    ]


@pytest.mark.parametrize("text", ["[1, 2]", '"18:FE:AA:AA:AA:AA"', '{"a": 1', ""])
def test_json_that_is_not_an_object_is_an_error(text: str) -> None:
    with pytest.raises(FleetError, match=r"fleet\.json"):
        parse_entries(text, "fleet.json")


def test_csv_with_product_and_channel_columns() -> None:
    text = (
        "\ufeffMAC, Version ,product,channel\n"
        "# exported from the old server\n"
        "18:FE:AA:AA:AA:AA,DOOR-7-g14f53a19,,\n"
        "\n"
        "18:FE:AA:AA:AA:BB,TEMP-1.0.0,temp,beta\n"
    )
    entries = parse_entries(text, "fleet.csv")
    assert entries == [
        Entry("line 3", "18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19", None, None),
        Entry("line 5", "18:FE:AA:AA:AA:BB", "TEMP-1.0.0", "temp", "beta"),
    ]


def test_csv_with_semicolons_and_only_the_required_columns() -> None:
    text = "version;mac\n1.0.0;5ccf7f000001\n"
    assert parse_mapping(text, "fleet.csv") == [("5ccf7f000001", "1.0.0")]


@pytest.mark.parametrize("text", ["mac\n18:FE:AA:AA:AA:AA\n", "address,firmware\nx,y\n", "", "# only a comment\n"])
def test_csv_without_a_mac_and_version_header_is_an_error(text: str) -> None:
    with pytest.raises(FleetError, match=r"fleet\.csv"):
        parse_entries(text, "fleet.csv")


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("update.php", "anything", "php"),
        ("db.inc", "anything", "php"),
        ("fleet.JSON", "anything", "json"),
        ("fleet.csv", "{", "csv"),
        ("fleet.txt", "{", "csv"),
        ("fleet", '  {"a": "b"}', "json"),
        ("fleet", "mac,version\n", "csv"),
    ],
)
def test_detect_format(name: str, text: str, fmt: str) -> None:
    assert detect_format(text, name) == fmt


# ------------------------------------------------------------------ the plan


def release(
    product: str, version: str, state: ReleaseState = ReleaseState.REGISTERED, reason: str | None = None
) -> Release:
    return Release(
        product=product,
        kind=Kind.APP,
        version=version,
        size=4096,
        md5="0" * 32,
        sha256="0" * 64,
        s3_key=f"firmware/{product}/{version}.bin",
        state=state,
        reason=reason,
    )


def catalog(name: str, *releases: Release, default_channel: str = "stable", channels: tuple[str, ...] = ()) -> Catalog:
    return Catalog(
        product=Product(name=name, platform="esp8266", default_channel=default_channel),
        channels={c: Channel(name, c, {Kind.APP: Track(version=releases[0].version)}) for c in channels},
        releases={(r.kind, r.version): r for r in releases},
    )


DOOR = catalog("door", release("door", "DOOR-7-g14f53a19"), release("door", "DOOR-6"), channels=("stable",))
TEMP = catalog("temp", release("temp", "TEMP-1.0.0"), channels=("stable", "beta"))
CATALOGS: dict[str, Catalog | None] = {"door": DOOR, "temp": TEMP}


def entries(*pairs: tuple[str, str]) -> list[Entry]:
    return [Entry(f"line {n}", mac, version) for n, (mac, version) in enumerate(pairs, 1)]


def test_plan_for_the_docs_example_into_one_product() -> None:
    result = plan(
        parse_entries(DOCS_EXAMPLE, "update.php"), product="door", channel=None, catalogs=CATALOGS, devices={}
    )
    assert [(c.mac, c.product, c.channel, c.version, c.action) for c in result.changes] == [
        ("18:FE:AA:AA:AA:AA", "door", "stable", "DOOR-7-g14f53a19", Action.NEW),
        ("18:FE:AA:AA:AA:BB", "door", "stable", "TEMP-1.0.0", Action.NEW),
    ]
    assert [c.release for c in result.changes] == ["registered", "missing"]
    assert result.problems == ()
    # TEMP-1.0.0 is no release of door: the device would get 304 until it is uploaded.
    [warning] = result.warnings
    assert "door TEMP-1.0.0 is not a registered release yet" in warning
    assert "1 device pinned to it gets 304" in warning
    assert "otafleet upload FILE --product door --version TEMP-1.0.0" in warning


def test_macs_are_normalised_and_bad_ones_reported_not_fatal() -> None:
    result = plan(
        entries(
            ("18-fe-aa-aa-aa-aa", "DOOR-6"),
            ("18feaaaaaabb", "DOOR-6"),
            ("18:FE:AA:AA:AA", "DOOR-6"),
            ("not a mac", "DOOR-6"),
            ("", "DOOR-6"),
            ("18:FE:AA:AA:AA:ZZ", "DOOR-6"),
        ),
        product="door",
        channel=None,
        catalogs=CATALOGS,
        devices={},
    )
    assert [c.mac for c in result.changes] == ["18:FE:AA:AA:AA:AA", "18:FE:AA:AA:AA:BB"]
    assert [(p.where, p.message.split(":")[0]) for p in result.problems] == [
        ("line 3", "not a MAC address"),
        ("line 4", "not a MAC address"),
        ("line 5", "not a MAC address"),
        ("line 6", "not a MAC address"),
    ]
    assert result.summary() == "2 new, 0 changed, 0 unchanged, 4 skipped"


def test_macs_that_name_no_device_are_reported_not_imported() -> None:
    # A table written from an earlier otafleet's 404s may list the zero MAC every 3.x Ethernet board sent.
    result = plan(
        entries(("00:00:00:00:00:00", "DOOR-6"), ("000000000000", "DOOR-6"), ("ff-ff-ff-ff-ff-ff", "DOOR-6")),
        product="door",
        channel=None,
        catalogs=CATALOGS,
        devices={},
    )
    assert result.changes == ()
    assert [(p.where, p.mac) for p in result.problems] == [
        ("line 1", "00:00:00:00:00:00"),
        ("line 2", "00:00:00:00:00:00"),
        ("line 3", "FF:FF:FF:FF:FF:FF"),
    ]
    assert all("is not a device" in p.message for p in result.problems)
    assert "base MAC" in result.problems[0].message


@pytest.mark.parametrize("version", ["", "  ", "../../etc/passwd", "v 1", "-1.0", "x" * 65])
def test_versions_that_can_never_be_releases_are_reported(version: str) -> None:
    result = plan(entries(("18:FE:AA:AA:AA:AA", version)), product="door", channel=None, catalogs=CATALOGS, devices={})
    assert result.changes == ()
    [problem] = result.problems
    assert "cannot be a release version" in problem.message


def test_duplicates_same_target_once_conflicting_skipped() -> None:
    result = plan(
        entries(
            ("18:FE:AA:AA:AA:AA", "DOOR-6"),
            ("18-fe-aa-aa-aa-aa", "DOOR-6"),
            ("18:FE:AA:AA:AA:BB", "DOOR-6"),
            ("18:FE:AA:AA:AA:BB", "DOOR-7-g14f53a19"),
            ("18:FE:AA:AA:AA:BB", "DOOR-6"),
        ),
        product="door",
        channel=None,
        catalogs=CATALOGS,
        devices={},
    )
    assert [c.mac for c in result.changes] == ["18:FE:AA:AA:AA:AA"]
    assert any("listed twice (line 1, line 2)" in w for w in result.warnings)
    assert [p.where for p in result.problems] == ["line 3", "line 4", "line 5"]
    assert all(p.mac == "18:FE:AA:AA:AA:BB" for p in result.problems)


def test_channel_option_and_product_default_channel() -> None:
    beta_default = {"door": catalog("door", release("door", "DOOR-6"), default_channel="beta", channels=("beta",))}
    result = plan(
        entries(("18:FE:AA:AA:AA:AA", "DOOR-6")), product="door", channel=None, catalogs=beta_default, devices={}
    )
    assert result.changes[0].channel == "beta"
    result = plan(
        entries(("18:FE:AA:AA:AA:AA", "DOOR-6")), product="door", channel="stable", catalogs=CATALOGS, devices={}
    )
    assert result.changes[0].channel == "stable"
    result = plan(
        entries(("18:FE:AA:AA:AA:AA", "DOOR-6")), product="door", channel="b@d", catalogs=CATALOGS, devices={}
    )
    assert result.changes == () and "invalid channel name" in result.problems[0].message


def test_channel_without_a_release_is_a_warning() -> None:
    result = plan(
        entries(("18:FE:AA:AA:AA:AA", "DOOR-6")), product="door", channel="nightly", catalogs=CATALOGS, devices={}
    )
    assert result.changes[0].channel == "nightly"
    assert any("channel door/nightly serves no release yet" in w for w in result.warnings)


def test_csv_rows_may_name_their_product_and_channel() -> None:
    rows = [
        Entry("line 2", "18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19"),
        Entry("line 3", "18:FE:AA:AA:AA:BB", "TEMP-1.0.0", "temp", "beta"),
        Entry("line 4", "18:FE:AA:AA:AA:CC", "1.0", "lamp"),
    ]
    result = plan(rows, product="door", channel=None, catalogs={**CATALOGS, "lamp": None}, devices={})
    assert [(c.mac, c.product, c.channel, c.release) for c in result.changes] == [
        ("18:FE:AA:AA:AA:AA", "door", "stable", "registered"),
        ("18:FE:AA:AA:AA:BB", "temp", "beta", "registered"),
    ]
    [problem] = result.problems
    assert problem.where == "line 4" and problem.message == "unknown product 'lamp'"
    assert result.warnings == ()


def test_rejected_and_revoked_pins_are_warned_about() -> None:
    bad = catalog(
        "door",
        release("door", "DOOR-6"),
        release("door", "DOOR-5", ReleaseState.REJECTED, "segment 2 runs past the end of the file"),
        channels=("stable",),
    )
    result = plan(
        entries(("18:FE:AA:AA:AA:AA", "DOOR-5")), product="door", channel=None, catalogs={"door": bad}, devices={}
    )
    assert result.changes[0].release == "rejected"
    assert result.warnings == (
        "door DOOR-5 is rejected: segment 2 runs past the end of the file; 1 device pinned to it gets 304",
    )


def test_existing_devices_new_changed_unchanged() -> None:
    known = {
        # assigned exactly as the file says: nothing to do
        "18:FE:AA:AA:AA:01": Device("18:FE:AA:AA:AA:01", "door", "stable", True, pins={Kind.APP: "DOOR-6"}),
        # another pin
        "18:FE:AA:AA:AA:02": Device("18:FE:AA:AA:AA:02", "door", "stable", True, pins={Kind.APP: "DOOR-5"}),
        # not pinned, another channel
        "18:FE:AA:AA:AA:03": Device("18:FE:AA:AA:AA:03", "door", "beta", True),
        # another product
        "18:FE:AA:AA:AA:04": Device("18:FE:AA:AA:AA:04", "temp", "stable", True, pins={Kind.APP: "TEMP-1.0.0"}),
        # already checking in against otafleet, never assigned (it got 404)
        "18:FE:AA:AA:AA:05": Device("18:FE:AA:AA:AA:05", reported=Reported(version="DOOR-6")),
    }
    rows = entries(*((f"18:FE:AA:AA:AA:0{n}", "DOOR-6") for n in range(1, 7)))
    result = plan(rows, product="door", channel=None, catalogs=CATALOGS, devices=known)
    got = {c.mac[-2:]: (c.action, c.details) for c in result.changes}
    assert got == {
        "01": (Action.UNCHANGED, ()),
        "02": (Action.CHANGE, ("pin DOOR-5 → DOOR-6",)),
        "03": (Action.CHANGE, ("channel beta → stable", "pin (none) → DOOR-6")),
        "04": (Action.CHANGE, ("product temp → door", "pin TEMP-1.0.0 → DOOR-6")),
        "05": (Action.NEW, ("seen checking in, unassigned",)),
        "06": (Action.NEW, ()),
    }
    assert [c.mac[-2:] for c in result.writes] == ["02", "03", "04", "05", "06"]
    assert result.summary() == "2 new, 3 changed, 1 unchanged, 0 skipped"
    data: dict[str, Any] = result.as_dict()
    assert data["counts"] == {"new": 2, "change": 3, "unchanged": 1, "skipped": 0}
    assert data["changes"][1] == {
        "mac": "18:FE:AA:AA:AA:02",
        "product": "door",
        "channel": "stable",
        "pin": "DOOR-6",
        "action": "change",
        "details": ["pin DOOR-5 → DOOR-6"],
        "release": "registered",
    }


def test_printed_plan() -> None:
    rows = entries(("18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19"), ("18:FE:AA:AA:AA:BB", "TEMP-1.0.0"), ("bad", "1"))
    result = plan(rows, product="door", channel=None, catalogs=CATALOGS, devices={})
    out = io.StringIO()
    print_plan(result, out, source="update.php", dry_run=True)
    text = out.getvalue()
    assert text.splitlines()[0] == "would import 2 devices from update.php"
    assert "  new  18:FE:AA:AA:AA:AA  door/stable  pin DOOR-7-g14f53a19" in text
    assert "skipped:\n  line 3: not a MAC address: 'bad'" in text
    assert "warnings:\n  door TEMP-1.0.0 is not a registered release yet" in text
    assert not any(line != line.rstrip() for line in text.splitlines())


# ------------------------------------------------------------------ run_import with in-memory stores

SETTINGS = Settings(devices_table="devices", catalog_table="catalog", firmware_bucket="bucket", region="eu-west-1")


class MemoryDevices(DeviceStore):
    def __init__(self, devices: dict[str, Device] | None = None) -> None:
        super().__init__(SETTINGS, client=object())
        self.items = dict(devices or {})
        self.cleared: list[str] = []

    def get(self, mac: str) -> Device | None:
        return self.items.get(mac)

    def put(self, device: Device) -> None:
        self.items[device.mac] = device

    def clear_failures(self, mac: str) -> None:
        self.cleared.append(mac)


class MemoryCatalog(CatalogStore):
    def __init__(self, catalogs: dict[str, Catalog | None]) -> None:
        super().__init__(SETTINGS, client=object())
        self.catalogs = catalogs

    def load(self, product: str, *, fresh: bool = False) -> Catalog | None:
        return self.catalogs.get(product)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_run_import_dry_run_writes_nothing(tmp_path: Path) -> None:
    devices, out = MemoryDevices(), io.StringIO()
    path = write(tmp_path, "update.php", PHP_SCRIPT)
    code = run_import(
        path, product="door", channel=None, dry_run=True, devices=devices, catalog=MemoryCatalog(CATALOGS), out=out
    )
    assert code == 0
    assert devices.items == {}
    assert out.getvalue().splitlines()[-1] == (
        "dry run: 4 new, 0 changed, 0 unchanged, 0 skipped; nothing written (run again without --dry-run to apply)"
    )


def test_run_import_writes_devices_with_pins(tmp_path: Path) -> None:
    reported = Reported(version="DOOR-6", sketch_md5="1" * 32)
    moved = Device("18:FE:AA:AA:AA:BB", "temp", "stable", True, pins={Kind.APP: "TEMP-1.0.0"})
    devices = MemoryDevices(
        {
            "18:FE:AA:AA:AA:AA": Device("18:FE:AA:AA:AA:AA", reported=reported, checks=7),
            "18:FE:AA:AA:AA:BB": moved,
        }
    )
    path = write(tmp_path, "update.php", DOCS_EXAMPLE)
    out = io.StringIO()
    code = run_import(
        path, product="door", channel=None, dry_run=False, devices=devices, catalog=MemoryCatalog(CATALOGS), out=out
    )
    assert code == 0
    first = devices.items["18:FE:AA:AA:AA:AA"]
    assert (first.product, first.channel, first.assigned, first.pins) == (
        "door",
        "stable",
        True,
        {Kind.APP: "DOOR-7-g14f53a19"},
    )
    assert first.reported == reported and first.checks == 7  # what it reported is kept
    second = devices.items["18:FE:AA:AA:AA:BB"]
    assert (second.product, second.pins) == ("door", {Kind.APP: "TEMP-1.0.0"})
    assert (
        out.getvalue().splitlines()[-1]
        == "imported: 1 new, 1 changed, 0 unchanged, 0 skipped; 2 device records written"
    )


def test_run_import_exit_code_1_when_entries_were_skipped(tmp_path: Path) -> None:
    devices = MemoryDevices()
    path = write(tmp_path, "fleet.json", '{"18:FE:AA:AA:AA:AA": "DOOR-6", "nope": "DOOR-6"}')
    code = run_import(
        path,
        product="door",
        channel=None,
        dry_run=False,
        devices=devices,
        catalog=MemoryCatalog(CATALOGS),
        out=io.StringIO(),
    )
    assert code == 1
    assert set(devices.items) == {"18:FE:AA:AA:AA:AA"}  # the valid entries are still imported


def test_run_import_unknown_product_or_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "update.php", DOCS_EXAMPLE)
    kwargs: dict[str, Any] = {"channel": None, "dry_run": True, "devices": MemoryDevices(), "out": io.StringIO()}
    with pytest.raises(FleetError, match=r"unknown product 'lamp'.*otafleet product create lamp"):
        run_import(path, product="lamp", catalog=MemoryCatalog(CATALOGS), **kwargs)
    with pytest.raises(FleetError, match="cannot read"):
        run_import(tmp_path / "missing.php", product="door", catalog=MemoryCatalog(CATALOGS), **kwargs)
    with pytest.raises(FleetError, match="CSV header"):
        run_import(write(tmp_path, "x.csv", "a,b\n1,2\n"), product="door", catalog=MemoryCatalog(CATALOGS), **kwargs)
