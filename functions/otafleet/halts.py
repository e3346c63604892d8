"""Writing a halt the rollout rules call for, once, and saying so: the one place both the check path
(service.py) and the controller (controller.py) halt a rollout."""

from __future__ import annotations

from dataclasses import replace

from otafleet import audit
from otafleet.config import Settings
from otafleet.models import Kind, Track, TrackState
from otafleet.notices import Notice, announce
from otafleet.storage.catalog import CatalogStore


def halt(
    catalog: CatalogStore,
    product: str,
    channel: str,
    kind: Kind,
    track: Track,
    *,
    rule: str,
    why: str,
    settings: Settings,
    actor: str,
    at: str,
) -> bool:
    """Halt `track` if it is still the active revision whose counts were judged (never over a resume or
    a reset made since); announce it (log, metric, alarm topic) only when this call made the halt, so a
    halt is announced once however many checks and runs judge it. The audit entry (by `actor`, at `at`)
    is part of the halt's write, so it too is written once. Storage faults of the write propagate;
    the announcement never raises."""
    entry = audit.entry(
        product,
        actor,
        "rollout.halt",
        {**audit.track_target(channel, kind, track.version), "rule": rule},
        audit.track_fields(track),
        audit.track_fields(replace(track, state=TrackState.HALTED)),
        at=at,
        retention_days=settings.audit_retention_days,
    )
    halted = catalog.set_track_state(
        product,
        channel,
        kind,
        track.version,
        TrackState.HALTED,
        from_states=(TrackState.ACTIVE,),
        expect_rev=track.rev,
        audit=entry,
    )
    if halted:
        details = {
            "rule": rule,
            "failures": track.failures,
            "successes": track.successes,
            "unknowns": track.unknowns,
            "silents": track.silents,
        }
        announce(Notice("halted", product, channel, kind, track.version, why, details), settings)
    return halted
