"""What a check's record does to a device, without AWS: lets unit tests replay a stock client's request
sequences through the pure decision. The real write is storage/devices.py's, tested against moto in
tests/integration; this mirror covers only the fields the decision reads back."""

from __future__ import annotations

from dataclasses import replace

from otafleet.models import CheckRecord, Device


def apply(device: Device | None, record: CheckRecord, mac: str | None = None) -> Device:
    dev = device or Device(mac=mac or "00:00:00:00:00:00")
    changes: dict[str, object] = {
        "reported": record.reported,
        "checks": dev.checks + 1,
        "last_seen": record.at,
        "answers": {**dev.answers, record.kind.value: record.answer},
        "expires_at": record.expires_at,
    }
    if record.enroll:
        changes.update(product=record.enroll[0], channel=record.enroll[1], assigned=True, enrolled_at=record.at)
    if record.attempt is not None:
        changes["attempts"] = {**dev.attempts, record.attempt.kind: record.attempt}
    if record.failed:
        changes["failed"] = dev.failed | {record.failed}
    if record.unfailed:
        changes["failed"] = dev.failed - {record.unfailed}
    if record.installed:
        changes["installs"] = dev.installs + 1
    if record.running:
        changes.update(running_version=record.running[0], running_md5=record.running[1])
    if record.fs_version:
        changes["fs_version"] = record.fs_version
    if record.seen_product:
        changes["seen_product"] = record.seen_product
    if record.chip and not dev.chip:
        changes["chip"] = record.chip
    if record.rhythm is not None:
        changes.update(rhythm=record.rhythm, watch=record.watch)
    return replace(dev, **changes)  # type: ignore[arg-type]
