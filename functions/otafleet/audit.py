"""The audit trail: who changed what, when, from what to what (docs/operations.md, "Audit trail").

The one home of its rules: what an entry holds, which fields of a record it shows, when it expires, how
`--since` is read, and what happens when an entry cannot be written. Storage is storage/audit.py.

Entries are written only by operators (through `Fleet`) and by the service's own rollout transitions
(halts.py, the controller's stage moves); nothing a device sends writes one. A transition that is a
conditional write carries its entry in the same transaction, so a retried check or an overlapping
controller run that loses the condition writes no second entry. An operator's entry is written right
after the action succeeded; when that fails the action stands, and the failure is logged, counted
(`AuditWriteFailures`) and reported to whoever asked (`Auditor.on_failure`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from otafleet.models import AuditEntry, Device, Kind, Product, Track
from otafleet.observability import count, logger
from otafleet.storage.audit import AuditStore
from otafleet.storage.errors import StorageUnavailable

# Actors of the automatic transitions; operators are their IAM principal's ARN.
UPDATE_FUNCTION = "update-function"
CONTROLLER = "controller"
# The partition of entries about a device that belongs to no product (DynamoDB keys cannot be empty;
# no product can be named "-", names.py).
NO_PRODUCT = "-"
# Counters move with every device verdict: an entry shows that an action reset them, not their values.
_COUNTERS = ("successes", "failures", "unknowns", "silents")
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidSince(ValueError):
    """A `--since` value that is neither a duration (30m, 2h, 3d, 1w) nor an ISO 8601 time."""


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (a trailing Z, or no zone, is UTC); ValueError when it is none."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def stamp(moment: datetime) -> str:
    """The one format of an entry's time (and of its sort key's prefix), so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    """Operators' entries are stamped to the millisecond (the service's own clock has whole seconds), so
    that one operator's commands in quick succession list in the order they were made."""
    return stamp(datetime.now(UTC))


def parse_since(value: str, now: datetime) -> str:
    """`--since`: a duration back from `now` (30m, 2h, 3d, 1w) or an ISO time, as a stamp to compare with."""
    text = value.strip().lower()
    duration = _SINCE.match(text)
    if duration:
        return stamp(now - timedelta(seconds=float(duration.group(1)) * _UNITS[duration.group(2)]))
    try:
        return stamp(parse_time(value))
    except ValueError:
        raise InvalidSince(
            f"--since {value[:40]!r}: expected a duration such as 30m, 2h, 3d, 1w or an ISO time such as "
            "2026-12-01T08:00:00Z"
        ) from None


def _plain(value: Any) -> Any:
    """JSON-ready: enums by value, maps with text keys, tuples as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def track_fields(track: Track | None) -> dict[str, Any]:
    """What an entry shows of a track: its settings, never its counters or revision."""
    if track is None:
        return {}
    fields = _plain(asdict(track))
    for name in (*_COUNTERS, "rev"):
        fields.pop(name, None)
    return dict(fields)


def product_fields(product: Product | None) -> dict[str, Any]:
    """A product's settings; of its keys only name and state (the PEM is long and public anyway)."""
    if product is None:
        return {}
    fields = _plain(asdict(product))
    fields["keys"] = {k.name: k.state.value for k in product.keys}
    return dict(fields)


def device_fields(device: Device | None) -> dict[str, Any]:
    """What operators change on a device: never its secret's hash, nor what it reported."""
    if device is None:
        return {}
    return {
        "product": device.product,
        "channel": device.channel,
        "assigned": device.assigned,
        "blocked": device.blocked,
        "pins": _plain(device.pins),
        "failed": sorted(device.failed),
    }


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that differ, on each side (a field missing on one side is None there)."""
    keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def track_target(channel: str, kind: Kind, version: str | None = None) -> dict[str, str]:
    target = {"channel": channel, "kind": kind.value}
    if version is not None:
        target["version"] = version
    return target


def entry(
    product: str | None,
    actor: str,
    action: str,
    target: Mapping[str, str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    at: str,
    retention_days: float,
) -> AuditEntry:
    """An entry at `at` (any ISO time: it is re-stamped) keeping only the fields that changed."""
    moment = parse_time(at)
    old, new = changed(before, after)
    return AuditEntry(
        product=product or NO_PRODUCT,
        at=stamp(moment),
        id=secrets.token_hex(6),
        actor=actor,
        action=action,
        target=dict(target),
        before=old,
        after=new,
        expires_at=int((moment + timedelta(days=retention_days)).timestamp()),
    )


@dataclass
class Auditor:
    """Records operator actions. `actor` is called once, at the first entry (the CLI asks STS then).
    An entry that cannot be written is counted (AuditWriteFailures) and reported: to `on_failure` when
    given (the CLI warns on stderr: a JSON log line on stdout would mix into its output), else logged."""

    store: AuditStore
    actor: Callable[[], str]
    retention_days: float
    on_failure: Callable[[AuditEntry, str], None] | None = None
    clock: Callable[[], str] = now
    _actor: str | None = field(default=None, repr=False)

    def who(self) -> str:
        if self._actor is None:
            self._actor = self.actor()
        return self._actor

    def record(
        self,
        product: str | None,
        action: str,
        target: Mapping[str, str],
        before: Mapping[str, Any],
        after: Mapping[str, Any],
    ) -> AuditEntry | None:
        """Write the entry, stamped now; None (the action stands) when it could not be written."""
        at = self.clock()
        item = entry(product, self.who(), action, target, before, after, at=at, retention_days=self.retention_days)
        try:
            self.store.put(item)
        except StorageUnavailable as fault:
            error = str(fault) or type(fault).__name__
            count("AuditWriteFailures")
            if self.on_failure is not None:
                self.on_failure(item, error)
            else:
                logger().error(
                    "audit entry not written",
                    extra={"product": item.product, "action": action, "target": item.target, "error": error},
                )
            return None
        return item


__all__ = [
    "CONTROLLER",
    "NO_PRODUCT",
    "UPDATE_FUNCTION",
    "AuditEntry",
    "Auditor",
    "InvalidSince",
    "changed",
    "device_fields",
    "entry",
    "parse_since",
    "parse_time",
    "product_fields",
    "stamp",
    "track_fields",
    "track_target",
]
