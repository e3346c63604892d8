"""When a check writes the device record: the stock cycle replayed through the pure decision, with the
write rule deciding which checks reach the record (tests/support/records.apply mirrors the write)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from otafleet.check_writes import why_write
from otafleet.decision import Policy, decide
from otafleet.models import Catalog, Channel, Device, Kind, Product, Release, Track
from otafleet.protocol import parse_check
from support.devices import esp8266_headers
from support.records import apply

MAC = "5C:CF:7F:00:00:01"
HEARTBEAT = 3600
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RUNNING = Release(
    product="door", kind=Kind.APP, version="1.0.0", size=300_016, md5="a" * 32, sha256="1" * 64, s3_key="a.bin"
)
NEXT = replace(RUNNING, version="1.1.0", size=310_032, md5="b" * 32, s3_key="b.bin")


def catalog(version: str) -> Catalog:
    return Catalog(
        product=Product(name="door", platform="esp8266"),
        channels={"stable": Channel("door", "stable", {Kind.APP: Track(version=version)})},
        releases={(Kind.APP, r.version): r for r in (RUNNING, NEXT)},
    )


class Replay:
    """One device's checks; the record changes only when the rule says the check is written."""

    def __init__(self) -> None:
        self.device: Device | None = Device(mac=MAC, product="door", channel="stable", assigned=True)
        self.writes: list[str] = []
        self.skipped = 0

    def check(self, at: datetime, cat: Catalog, *, mode: str = "sketch", free_space: int = 1_000_000) -> str | None:
        headers = esp8266_headers(MAC, version="1.0.0", mode=mode, free_space=free_space)
        d = decide(parse_check(headers), self.device, cat, now=at.strftime("%Y-%m-%dT%H:%M:%SZ"), policy=Policy())
        why = why_write(self.device, d.record, heartbeat_seconds=HEARTBEAT)
        if why is None:
            self.skipped += 1
        else:
            self.writes.append(why)
            self.device = apply(self.device, d.record)
        return why

    def cycle(self, at: datetime, cat: Catalog) -> tuple[str | None, str | None]:
        """The stock client's cycle: update() then updateFS() seconds later."""
        return self.check(at, cat), self.check(at + timedelta(seconds=5), cat, mode="spiffs")


def test_an_unchanged_device_is_written_while_learning_then_once_per_heartbeat() -> None:
    r, cat = Replay(), catalog("1.0.0")
    for i in range(4):  # every 10 minutes: the first gaps teach the rhythm, so they are written
        r.cycle(START + timedelta(minutes=10 * i), cat)
    assert r.writes[:2] == ["reported", "reported"]  # its first headers, then its filesystem version
    assert "rhythm-learning" in r.writes
    written = len(r.writes)
    for i in range(4, 4 + 18):  # three more hours of the same cycle
        r.cycle(START + timedelta(minutes=10 * i), cat)
    # About one written check per heartbeat (the filesystem check seconds later is never due again).
    assert len(r.writes) - written == 3
    assert r.writes[written:] == ["heartbeat"] * 3
    assert r.skipped == 2 * 22 - len(r.writes)


def test_what_changes_is_always_written() -> None:
    r, cat = Replay(), catalog("1.0.0")
    for i in range(5):
        r.cycle(START + timedelta(minutes=10 * i), cat)
    at = START + timedelta(minutes=55)
    assert r.check(at, cat) is None  # unchanged, inside the heartbeat
    assert r.check(at + timedelta(minutes=1), cat, free_space=900_000) == "reported"  # a new header value
    assert r.check(at + timedelta(minutes=2), catalog("1.1.0"), free_space=900_000) == "transition"  # an offer
    # The offer started a silence watch: the next check that counts ends it, and is written whatever it says.
    assert r.check(at + timedelta(minutes=3), catalog("1.1.0"), free_space=900_000) is not None


def test_rule_table() -> None:
    r, cat = Replay(), catalog("1.0.0")
    for i in range(5):
        r.cycle(START + timedelta(minutes=10 * i), cat)
    device = r.device
    assert device is not None
    at = (START + timedelta(minutes=50, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = decide(parse_check(esp8266_headers(MAC, version="1.0.0")), device, cat, now=at, policy=Policy()).record
    assert why_write(device, record, heartbeat_seconds=HEARTBEAT) is None
    assert why_write(None, record, heartbeat_seconds=HEARTBEAT) == "new-device"
    assert why_write(device, record, heartbeat_seconds=0) == "heartbeat"
    assert why_write(device, replace(record, failed="app:1.1.0"), heartbeat_seconds=HEARTBEAT) == "transition"
    assert why_write(device, replace(record, reason="blocked"), heartbeat_seconds=HEARTBEAT) == "answer"
    assert why_write(device, replace(record, expires_at=1), heartbeat_seconds=HEARTBEAT) == "facts"
    assert why_write(replace(device, rhythm=None), record, heartbeat_seconds=HEARTBEAT) == "rhythm-learning"


def test_while_learning_a_gap_too_short_to_count_is_not_written() -> None:
    """A burst (a reboot's quick re-check, the updateFS() seconds after update()) teaches the rhythm
    nothing: written, it would only move `last` and make the next real gap look shorter."""
    r, cat = Replay(), catalog("1.0.0")
    r.cycle(START, cat)
    r.cycle(START + timedelta(minutes=10), cat)  # one gap learned, the rhythm is not yet
    device = r.device
    assert device is not None and device.rhythm is not None and device.rhythm.samples == 1
    assert r.check(START + timedelta(minutes=10, seconds=20), cat) is None  # a burst: nothing learned
    assert r.check(START + timedelta(minutes=20), cat) == "rhythm-learning"  # a real gap: learned from
    assert r.device is not None and r.device.rhythm is not None and r.device.rhythm.samples == 2


def test_what_a_device_reports_is_every_field_but_when_and_how_it_asked() -> None:
    """_reports builds its copy field by field; a field added to Reported must be compared too (or a
    change in it would never be written)."""
    from dataclasses import fields

    from otafleet.check_writes import _reports
    from otafleet.models import Reported

    values: dict[str, Any] = {f.name: (7 if f.type in ("int | None", int) else f"v-{f.name}") for f in fields(Reported)}
    full = Reported(**values)
    assert _reports(full) == replace(full, mode=None, at=None)
