"""Deterministic rollout buckets.

A device's bucket for a release is a stable hash of (MAC, product, kind, version) in [0, 10000). A
staged rollout at N % offers the new release to buckets below N * 100, so raising N only adds devices
and a device keeps its answer from one check to the next.
"""

from __future__ import annotations

import hashlib

from otafleet.models import Kind

BUCKETS = 10_000


def bucket(mac: str, product: str, kind: Kind, version: str) -> int:
    digest = hashlib.sha256(f"{mac}|{product}|{kind.value}|{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_rollout(mac: str, product: str, kind: Kind, version: str, percent: int) -> bool:
    return bucket(mac, product, kind, version) < max(0, min(100, percent)) * (BUCKETS // 100)
