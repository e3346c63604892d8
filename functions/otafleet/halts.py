"""Writing a halt the rollout rules call for, once, and saying so: the one place both the check path
(service.py) and the controller (controller.py) halt a rollout."""

from __future__ import annotations

from otafleet.models import Kind, Track, TrackState
from otafleet.observability import count, logger
from otafleet.storage.catalog import CatalogStore


def halt(catalog: CatalogStore, product: str, channel: str, kind: Kind, track: Track, *, rule: str, why: str) -> bool:
    """Halt `track` if it is still the active revision whose counts were judged (never over a resume or
    a reset made since); log and count it when this call made the halt. Storage faults propagate."""
    halted = catalog.set_track_state(
        product,
        channel,
        kind,
        track.version,
        TrackState.HALTED,
        from_states=(TrackState.ACTIVE,),
        expect_rev=track.rev,
    )
    if halted:
        logger().warning(
            "rollout halted",
            extra={
                "product": product,
                "channel": channel,
                "kind": kind.value,
                "version": track.version,
                "rule": rule,
                "why": why,
                "failures": track.failures,
                "successes": track.successes,
                "unknowns": track.unknowns,
                "silents": track.silents,
            },
        )
        count("RolloutsHalted")
    return halted
