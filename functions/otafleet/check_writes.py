"""Whether a check writes the device record: only when something changed, or the record is a heartbeat old.

Most checks of a healthy fleet change nothing: the device reports what it reported, the service answers
what it answered. Writing such a check costs a write unit and teaches nothing, so it is skipped until the
record is `heartbeat` seconds old; then one check is written, which keeps `last_seen`, the rhythm and the
expiry of unassigned records moving at that resolution (rhythm.py says what it means for silence).

A check is written whenever any of these hold (`why_write` names the first that does):

- the device is new, or the check moves state: an enrollment, an attempt transition, a verdict and its
  rollout counters, a quota it raises, a failure set change, an install learned;
- a silence watch starts (an offer) or ends (the first check that counts after one);
- the device reports something new (any header, its source IP included; not which mode it asked in,
  since the stock cycle alternates `update` and `updateFS`);
- the answer for the kind it asked about differs from the last recorded one for that kind;
- a fact the record keeps changes: the filesystem version, the chip, the product asked for by URL, the
  expiry of an untrusted record set or dropped;
- its rhythm is still being learned and this check's gap taught it something (the first gaps must be
  measured, not inferred; a gap too short to count teaches nothing);
- the last recorded check is `heartbeat` seconds old or older (0: every check is written).

A pure function of the record read and the record the decision would write.
"""

from __future__ import annotations

from otafleet.models import CheckRecord, Device, Reported
from otafleet.rhythm import epoch, learned


def _reports(r: Reported) -> Reported:
    # Built directly: dataclasses.replace introspects the fields at every call, and this runs twice per check.
    return Reported(
        version=r.version,
        sketch_md5=r.sketch_md5,
        sketch_sha256=r.sketch_sha256,
        free_space=r.free_space,
        sketch_size=r.sketch_size,
        chip_size=r.chip_size,
        sdk_version=r.sdk_version,
        source_ip=r.source_ip,
        fs_version=r.fs_version,
    )


def _teaches(device: Device, record: CheckRecord) -> bool:
    """Whether the check's gap moved the interval being learned: a gap under rhythm.MIN_GAP_SECONDS (the
    stock cycle's updateFS() seconds after update(), a burst of retries) teaches nothing, and the next
    gap is then measured from the last recorded check instead."""
    if device.rhythm is None or record.rhythm is None:
        return True
    return (record.rhythm.seconds, record.rhythm.samples) != (device.rhythm.seconds, device.rhythm.samples)


def why_write(device: Device | None, record: CheckRecord, *, heartbeat_seconds: int) -> str | None:
    """The reason this check must be written, or None when writing it would change nothing that matters."""
    if device is None:
        return "new-device"
    if (
        record.enroll
        or record.changes_attempt
        or record.failed
        or record.unfailed
        or record.installed
        or record.counter is not None
        or record.quotas
    ):
        return "transition"
    if record.watch is not None or (record.rhythm is not None and device.watch is not None):
        return "silence-watch"
    if _reports(record.reported) != _reports(device.reported):
        return "reported"
    if device.answers.get(record.kind.value) != record.answer:
        return "answer"
    if (
        (record.fs_version and record.fs_version != device.fs_version)
        or (record.chip and device.chip is None)
        or (record.running and record.running != (device.running_version, device.running_md5))
        or (record.seen_product and record.seen_product != device.seen_product)
        or (record.expires_at is None) != (device.expires_at is None)
    ):
        return "facts"
    if (
        record.rhythm is not None
        and not (learned(device.rhythm) and learned(record.rhythm))
        and _teaches(device, record)
    ):
        return "rhythm-learning"
    if device.last_seen is None or epoch(record.at) - epoch(device.last_seen) >= heartbeat_seconds:
        return "heartbeat"
    return None


__all__ = ["why_write"]
