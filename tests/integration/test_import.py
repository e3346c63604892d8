"""`otafleet import` against the real tables (moto): the ESP8266 docs' mapping, dry run and real run, and
what the imported devices then get from the update service."""

from __future__ import annotations

import io
from pathlib import Path

from otafleet.models import Kind
from otafleet_cli.importer import run_import
from support.world import World

# The mapping of the ESP8266 Arduino core's documentation (OTA updates, "Server request handling").
DOCS_EXAMPLE = '$db = array("18:FE:AA:AA:AA:AA" => "DOOR-7-g14f53a19", "18:FE:AA:AA:AA:BB" => "TEMP-1.0.0");'


def esp8266(mac: str, version: str | None = None) -> dict[str, str]:
    headers = {
        "user-agent": "ESP8266-http-Update",
        "x-esp8266-sta-mac": mac,
        "x-esp8266-free-space": "1000000",
        "x-esp8266-chip-size": "4194304",
        "x-esp8266-mode": "sketch",
    }
    if version:
        headers["x-esp8266-version"] = version
    return headers


def seed(world: World) -> None:
    world.product("door")
    world.release("door", "DOOR-6")
    world.release("door", "DOOR-7-g14f53a19")
    world.channel("door", "stable", app="DOOR-6")


def import_file(world: World, path: Path, *, dry_run: bool) -> tuple[int, str]:
    out = io.StringIO()
    code = run_import(
        path, product="door", channel=None, dry_run=dry_run, devices=world.devices, catalog=world.catalog, out=out
    )
    return code, out.getvalue()


def test_dry_run_writes_nothing(world: World, tmp_path: Path) -> None:
    seed(world)
    path = tmp_path / "update.php"
    path.write_text(DOCS_EXAMPLE, encoding="utf-8")

    code, text = import_file(world, path, dry_run=True)

    assert code == 0
    assert list(world.devices.scan()) == []
    assert "  new  18:FE:AA:AA:AA:AA  door/stable  pin DOOR-7-g14f53a19\n" in text
    assert "door TEMP-1.0.0 is not a registered release yet" in text
    assert text.splitlines()[-1].startswith("dry run: 2 new, 0 changed, 0 unchanged, 0 skipped; nothing written")


def test_import_creates_devices_with_pins_and_they_are_served(world: World, tmp_path: Path) -> None:
    seed(world)
    path = tmp_path / "update.php"
    path.write_text(DOCS_EXAMPLE, encoding="utf-8")

    code, text = import_file(world, path, dry_run=False)

    assert code == 0, text
    assert text.splitlines()[-1] == "imported: 2 new, 0 changed, 0 unchanged, 0 skipped; 2 device records written"
    door = world.devices.get("18:FE:AA:AA:AA:AA")
    temp = world.devices.get("18:FE:AA:AA:AA:BB")
    assert door is not None and temp is not None
    assert (door.product, door.channel, door.assigned, door.pins) == (
        "door",
        "stable",
        True,
        {Kind.APP: "DOOR-7-g14f53a19"},
    )
    assert temp.pins == {Kind.APP: "TEMP-1.0.0"}

    service = world.service()
    # Pinned, like the PHP script's per-MAC binary: DOOR-7 although the channel serves DOOR-6.
    offer = service.check(esp8266("18:FE:AA:AA:AA:AA", "DOOR-6"))
    assert offer.status == 302
    assert "firmware/door/DOOR-7-g14f53a19.bin" in offer.headers["Location"]
    # Same version: 304, as the script answered.
    assert service.check(esp8266("18:FE:AA:AA:AA:AA", "DOOR-7-g14f53a19")).status == 304
    # Pinned to a version that is no release of the product yet: 304 until it is uploaded.
    waiting = service.check(esp8266("18:FE:AA:AA:AA:BB", "TEMP-0.9.0"))
    assert (waiting.status, waiting.headers["X-Otafleet-Reason"]) == (304, "target-unavailable")
    # Not in the mapping: the script's "500 no version for ESP MAC" is otafleet's 404.
    assert service.check(esp8266("18:FE:AA:AA:AA:CC", "DOOR-6")).status == 404


def test_reimport_is_idempotent_and_keeps_what_devices_reported(world: World, tmp_path: Path) -> None:
    seed(world)
    path = tmp_path / "fleet.csv"
    path.write_text("mac,version\n18:fe:aa:aa:aa:aa,DOOR-6\n", encoding="utf-8")
    assert import_file(world, path, dry_run=False)[0] == 0
    # The device checks in; then the same mapping is imported again, then a changed one.
    world.service().check(esp8266("18:FE:AA:AA:AA:AA", "DOOR-6"))
    before = world.devices.get("18:FE:AA:AA:AA:AA")
    assert before is not None and before.reported.version == "DOOR-6"

    code, text = import_file(world, path, dry_run=False)
    assert code == 0
    assert text.splitlines()[-1] == "imported: 0 new, 0 changed, 1 unchanged, 0 skipped; 0 device records written"

    path.write_text("mac,version\n18:FE:AA:AA:AA:AA,DOOR-7-g14f53a19\nnot-a-mac,DOOR-6\n", encoding="utf-8")
    code, text = import_file(world, path, dry_run=False)
    assert code == 1  # one entry skipped, the rest imported
    assert "line 3: not a MAC address: 'not-a-mac'" in text
    after = world.devices.get("18:FE:AA:AA:AA:AA")
    assert after is not None
    assert after.pins == {Kind.APP: "DOOR-7-g14f53a19"}
    assert after.reported == before.reported
    assert after.checks == before.checks


def test_a_device_that_already_checked_in_unassigned_is_adopted(world: World, tmp_path: Path) -> None:
    seed(world)
    # Pointed at otafleet before the import: answered 404 and remembered as seen, unassigned.
    assert world.service().check(esp8266("18:FE:AA:AA:AA:AA", "DOOR-6")).status == 404
    seen = world.devices.get("18:FE:AA:AA:AA:AA")
    assert seen is not None and not seen.assigned

    path = tmp_path / "fleet.json"
    path.write_text('{"18:FE:AA:AA:AA:AA": "DOOR-6"}', encoding="utf-8")
    code, text = import_file(world, path, dry_run=False)

    assert code == 0
    assert "seen checking in, unassigned" in text
    device = world.devices.get("18:FE:AA:AA:AA:AA")
    assert device is not None and device.assigned
    assert device.reported == seen.reported
    assert world.service().check(esp8266("18:FE:AA:AA:AA:AA", "DOOR-6")).status == 304
