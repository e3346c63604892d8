"""`otafleet audit`: the audit trail, newest first (what it records: otafleet.audit)."""

from __future__ import annotations

import json
from typing import Any

from otafleet.models import AuditEntry
from otafleet.shapes import audit_entry_dict
from otafleet_cli.output import Output, table
from otafleet_cli.stack import Connection

DEFAULT_LIMIT = 50
HELP = "who changed what and when: operator actions and the service's own rollout transitions"
DESCRIPTION = (
    "The audit trail, newest first: every operator action (CLI or any caller of the fleet API) with the IAM "
    "principal that made it, and the automatic halts and stage moves (actor update-function or controller), "
    "with the fields each changed, before and after. Entries expire after the stack's AuditRetentionDays."
)
SINCE_HELP = "only entries this recent: a duration (30m, 2h, 3d, 1w) or an ISO time (2026-12-01T08:00:00Z)"


def _value(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def change_text(entry: AuditEntry) -> str:
    """`state: active -> paused, percent: 10 -> 50`: each changed field, before and after."""
    keys = sorted({*entry.before, *entry.after})
    return ", ".join(f"{k}: {_value(entry.before.get(k))} -> {_value(entry.after.get(k))}" for k in keys) or "-"


def target_text(entry: AuditEntry) -> str:
    return " ".join(f"{k}={v}" for k, v in entry.target.items()) or "-"


def entries_table(entries: list[AuditEntry]) -> str:
    if not entries:
        return "no audit entries"
    rows = [(e.at, e.actor, e.action, e.product, target_text(e), change_text(e)) for e in entries]
    return table(("TIME", "ACTOR", "ACTION", "PRODUCT", "TARGET", "CHANGE"), rows)


def run(conn: Connection, args: Any, out: Output) -> int:
    entries = conn.fleet.audit_entries(args.product, since=args.since, limit=args.limit)
    data = [audit_entry_dict(e) for e in entries]
    out.emit(data, entries_table(entries))
    return 0
