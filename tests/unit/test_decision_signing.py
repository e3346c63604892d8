"""Offer safety for signed builds: the decision never offers what the device's verifier refuses."""

from __future__ import annotations

import pytest

from otafleet.decision import Outcome, decide
from otafleet.models import Catalog, Channel, Device, Kind, Product, Release, Track
from otafleet.protocol import CheckRequest, parse_check
from support.devices import esp8266_headers

MAC = "5C:CF:7F:00:00:01"
NOW = "2026-11-24T12:00:00Z"
A, B = "a" * 64, "b" * 64


def release(version: str, *, signed_by: tuple[str, ...] = (), trusts: tuple[str, ...] = ()) -> Release:
    return Release(
        product="door",
        kind=Kind.APP,
        version=version,
        size=300_000,
        md5=f"{abs(hash(version)):032x}"[:32],
        sha256="0" * 64,
        s3_key=f"firmware/door/{version}.bin",
        chip="esp8266",
        signature_scheme="esp8266-rsa-pkcs1v15-sha256" if signed_by else None,
        signed_by=signed_by,
        trusts=trusts,
    )


def catalog(running: Release, target: Release) -> Catalog:
    return Catalog(
        product=Product(name="door", platform="esp8266"),
        channels={"stable": Channel("door", "stable", {Kind.APP: Track(version=target.version)})},
        releases={(r.kind, r.version): r for r in (running, target)},
    )


DEVICE = Device(mac=MAC, product="door", channel="stable", assigned=True)


def check(version: str | None) -> CheckRequest:
    return parse_check(esp8266_headers(MAC, version=version))


@pytest.mark.parametrize(
    ("running", "target", "reason"),
    [
        (release("1.0.0"), release("1.1.0"), "offer"),  # unsigned to unsigned
        (release("1.0.0"), release("1.1.0", signed_by=(A,)), "offer"),  # the migration: first signed release
        (release("1.0.0", signed_by=(A,)), release("1.1.0"), "unsigned-offer"),
        (release("1.0.0", signed_by=(A,)), release("1.1.0", signed_by=(A,)), "offer"),
        (release("1.0.0", signed_by=(A,)), release("1.1.0", signed_by=(B,)), "untrusted-key"),
        (release("1.0.0", signed_by=(A,)), release("1.1.0", signed_by=(A, B)), "offer"),  # dual-signed bridge
        (release("1.0.0", signed_by=(A, B)), release("1.1.0", signed_by=(B,)), "offer"),  # after the bridge
        (release("1.0.0", signed_by=(A,), trusts=(B,)), release("1.1.0", signed_by=(B,)), "offer"),  # carries B
        (release("1.0.0", signed_by=(A,), trusts=(B,)), release("1.1.0", signed_by=(A,)), "untrusted-key"),
    ],
)
def test_signed_devices_get_only_what_they_verify(running: Release, target: Release, reason: str) -> None:
    d = decide(check(running.version), DEVICE, catalog(running, target), now=NOW)
    assert d.reason == reason
    if reason != "offer":
        assert d.outcome is Outcome.NO_UPDATE and d.status == 304
        assert [s.name for s in d.steps][-2:] == ["signature", "answer"]


def test_learned_install_counts_when_the_device_sends_no_version() -> None:
    running, target = release("1.0.0", signed_by=(A,)), release("1.1.0")
    device = Device(mac=MAC, product="door", channel="stable", assigned=True, running_version="1.0.0")
    d = decide(check(None), device, catalog(running, target), now=NOW)
    assert (d.status, d.reason) == (304, "unsigned-offer")


def test_unknown_running_build_is_the_migration_path() -> None:
    d = decide(check("0.9.0"), DEVICE, catalog(release("1.0.0", signed_by=(A,)), release("1.1.0")), now=NOW)
    assert d.reason == "offer"
