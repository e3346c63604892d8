"""The pure decision, driven without AWS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from otafleet import credentials
from otafleet.decision import Outcome, Policy, decide, failed_key
from otafleet.models import (
    AttemptState,
    Catalog,
    Channel,
    Delivery,
    Device,
    Kind,
    Product,
    Release,
    ReleaseState,
    Track,
    TrackState,
)
from otafleet.protocol import CheckRequest, parse_check
from otafleet.rollout import in_rollout
from support.devices import esp32_headers, esp8266_headers
from support.records import apply

MAC = "5C:CF:7F:00:00:01"
NOW = "2026-11-24T12:00:00Z"


def release(
    version: str, *, kind: Kind = Kind.APP, chip: str = "esp8266", size: int = 300_000, **kw: object
) -> Release:
    return Release(
        product="door",
        kind=kind,
        version=version,
        size=size,
        md5=f"{abs(hash(version)):032x}"[:32],
        sha256="0" * 64,
        s3_key=f"firmware/door/{version}.bin",
        chip=chip,
        **kw,  # type: ignore[arg-type]
    )


def catalog(*releases: Release, track: Track | None = None, product: Product | None = None) -> Catalog:
    product = product or Product(name="door", platform="esp8266")
    tracks = {Kind.APP: track} if track else {}
    return Catalog(
        product=product,
        channels={"stable": Channel("door", "stable", tracks)},
        releases={(r.kind, r.version): r for r in releases},
    )


DEVICE = Device(mac=MAC, product="door", channel="stable", assigned=True)
CAT = catalog(release("1.0.0"), release("1.1.0"), track=Track(version="1.1.0"))


def req(**kw: object) -> CheckRequest:
    return parse_check(esp8266_headers(MAC, **kw))  # type: ignore[arg-type]


def test_offer_and_record() -> None:
    d = decide(req(version="1.0.0"), DEVICE, CAT, now=NOW)
    # a redirect offer is a 302, in the trace too
    assert d.outcome is Outcome.OFFER and d.status == 302 and d.steps[-1].result.startswith("302 offer")
    assert d.release is not None and d.release.version == "1.1.0"
    assert d.delivery is Delivery.REDIRECT
    assert d.record.attempt is not None and d.record.attempt.offers == 1 and d.record.replaces is None
    assert d.record.reported.version == "1.0.0"


def test_steps_explain_each_rule() -> None:
    d = decide(req(version="1.0.0"), DEVICE, CAT, now=NOW)
    names = [s.name for s in d.steps]
    assert names == ["dialect", "identity", "device", "target", "already there", "safety", "delivery", "answer"]
    assert d.status == 302


def test_unknown_device_is_404_and_seen() -> None:
    d = decide(req(), None, None, now=NOW)
    assert d.outcome is Outcome.NOT_FOUND and d.detail == f"no firmware assigned to {MAC}"
    assert d.record.enroll is None


def test_enrollment_needs_product_path_and_open_product() -> None:
    open_cat = replace(CAT, product=replace(CAT.product, enroll=True))
    with_path = parse_check(esp8266_headers(MAC, version="1.0.0"), product="door")
    d = decide(with_path, None, open_cat, now=NOW)
    assert d.outcome is Outcome.OFFER and d.record.enroll == ("door", "stable")
    assert decide(with_path, None, CAT, now=NOW).outcome is Outcome.NOT_FOUND
    assert decide(req(version="1.0.0"), None, open_cat, now=NOW).outcome is Outcome.NOT_FOUND


def test_pin_wins_over_channel() -> None:
    pinned = replace(DEVICE, pins={Kind.APP: "1.0.0"})
    d = decide(req(version="1.1.0"), pinned, CAT, now=NOW)
    # a pin is a deliberate choice: the downgrade is allowed
    assert d.outcome is Outcome.OFFER and d.release is not None and d.release.version == "1.0.0"


def test_downgrade_refused_unless_allowed_or_rollback() -> None:
    cat = catalog(release("1.0.0"), release("1.1.0"), track=Track(version="1.0.0", previous="1.1.0"))
    assert decide(req(version="1.1.0"), DEVICE, cat, now=NOW).reason == "downgrade"
    rolled = catalog(release("1.0.0"), release("1.1.0"), track=Track(version="1.0.0", previous="1.1.0", rollback=True))
    assert decide(req(version="1.1.0"), DEVICE, rolled, now=NOW).outcome is Outcome.OFFER
    lax = replace(cat, product=replace(cat.product, allow_downgrade=True))
    assert decide(req(version="1.1.0"), DEVICE, lax, now=NOW).outcome is Outcome.OFFER


def test_revoked_release_is_not_offered() -> None:
    cat = catalog(release("1.1.0", state=ReleaseState.REVOKED), track=Track(version="1.1.0"))
    d = decide(req(version="1.0.0"), DEVICE, cat, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "target-unavailable"


def test_staged_rollout_splits_by_bucket() -> None:
    cat = catalog(release("1.0.0"), release("1.1.0"), track=Track(version="1.1.0", previous="1.0.0", percent=30))
    macs = [f"5C:CF:7F:00:{i >> 8:02X}:{i & 255:02X}" for i in range(400)]
    for mac in macs:
        r = parse_check(esp8266_headers(mac, version="0.9.0"))
        d = decide(r, replace(DEVICE, mac=mac), cat, now=NOW)
        assert d.release is not None
        expected = "1.1.0" if in_rollout(mac, "door", Kind.APP, "1.1.0", 30) else "1.0.0"
        assert d.release.version == expected


@pytest.mark.parametrize("state", [TrackState.PAUSED, TrackState.HALTED])
def test_paused_or_halted_rollout_stops_new_offers(state: TrackState) -> None:
    cat = catalog(release("1.0.0"), release("1.1.0"), track=Track(version="1.1.0", previous="1.0.0", state=state))
    d = decide(req(version="0.9.0"), DEVICE, cat, now=NOW)
    assert d.release is not None and d.release.version == "1.0.0"
    # a device that already runs the new release keeps it: no flip-flop back, whether it says so by
    # version string or only by the image's MD5
    d = decide(req(version="1.1.0"), DEVICE, cat, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "up-to-date"
    new_md5 = cat.releases[(Kind.APP, "1.1.0")].md5
    d = decide(req(md5=new_md5), DEVICE, cat, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "up-to-date"


def test_failure_inferred_after_limit_offers() -> None:
    device = DEVICE
    for n in range(1, 4):
        d = decide(req(version="1.0.0", md5="a" * 32), device, CAT, now=NOW)
        assert d.outcome is Outcome.OFFER and d.record.attempt is not None and d.record.attempt.offers == n
        device = apply(device, d.record)
    d = decide(req(version="1.0.0", md5="a" * 32), device, CAT, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "failed" and d.verdict is AttemptState.FAILED
    assert d.record.failed == failed_key(Kind.APP, "1.1.0")
    device = apply(device, d.record)
    d = decide(req(version="1.0.0", md5="a" * 32), device, CAT, now=NOW)
    assert d.reason == "failed-before" and d.verdict is None and d.record.attempt is None


def test_failure_limit_is_policy() -> None:
    offered = apply(DEVICE, decide(req(version="1.0.0"), DEVICE, CAT, now=NOW).record)
    d = decide(req(version="1.0.0"), offered, CAT, now=NOW, policy=Policy(failure_offer_limit=1))
    assert d.reason == "failed"


def test_success_inferred_from_reported_version() -> None:
    offered = apply(DEVICE, decide(req(version="1.0.0"), DEVICE, CAT, now=NOW).record)
    d = decide(req(version="1.1.0"), offered, CAT, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.verdict is AttemptState.INSTALLED
    assert d.record.attempt is not None and d.record.attempt.state is AttemptState.INSTALLED


def test_success_inferred_from_new_md5_and_learned_for_releases_without_device_facts() -> None:
    """A release registered before the MD5s a device reports were computed: a new build after the offer is it."""
    offered = apply(DEVICE, decide(req(md5="a" * 32), DEVICE, CAT, now=NOW).record)
    d = decide(req(md5="b" * 32), offered, CAT, now=NOW)
    assert d.verdict is AttemptState.INSTALLED and d.record.running == ("1.1.0", "b" * 32)
    learned = apply(offered, d.record)
    d = decide(req(md5="b" * 32), learned, CAT, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "up-to-date" and d.verdict is None


def test_safety_rules() -> None:
    big = catalog(release("1.1.0", size=2_000_000), track=Track(version="1.1.0"))
    assert decide(req(free_space=1_000_000), DEVICE, big, now=NOW).reason == "no-space"
    flash = catalog(release("1.1.0", flash_size_bytes=4 << 20), track=Track(version="1.1.0"))
    assert decide(req(chip_size=1 << 20), DEVICE, flash, now=NOW).reason == "flash-too-small"
    s3 = catalog(release("1.1.0", chip="esp32s3"), track=Track(version="1.1.0"))
    assert decide(req(), DEVICE, s3, now=NOW).reason == "wrong-platform"


def test_chip_family_guard_for_esp32_variants() -> None:
    cat = catalog(release("2.0.0", chip="esp32c3"), track=Track(version="2.0.0"), product=Product("door", "esp32c3"))
    device = replace(DEVICE, chip="esp32s3")
    d = decide(parse_check(esp32_headers(MAC, version="1.0")), device, cat, now=NOW)
    assert d.reason == "wrong-chip"
    d = decide(parse_check(esp32_headers(MAC, version="1.0")), replace(device, chip="esp32c3"), cat, now=NOW)
    assert d.outcome is Outcome.OFFER


def test_blocked() -> None:
    assert decide(req(), replace(DEVICE, blocked=True), CAT, now=NOW).status == 403


def test_probe_offers_nothing() -> None:
    d = decide(req(version="1.0.0", mode="version"), DEVICE, CAT, now=NOW)
    assert d.outcome is Outcome.PROBE and d.status == 200 and d.record.attempt is None


def test_delivery_choice() -> None:
    inline_product = replace(CAT, product=replace(CAT.product, delivery=Delivery.INLINE))
    assert decide(req(version="1"), DEVICE, inline_product, now=NOW).delivery is Delivery.INLINE
    device_redirect = replace(DEVICE, delivery=Delivery.REDIRECT)
    assert decide(req(version="1"), device_redirect, inline_product, now=NOW).delivery is Delivery.REDIRECT
    q = parse_check(esp8266_headers(MAC, version="1"), query={"delivery": "inline"})
    assert decide(q, device_redirect, CAT, now=NOW).delivery is Delivery.INLINE
    http = parse_check({**esp8266_headers(MAC, version="1"), "x-forwarded-proto": "http"})
    assert decide(http, DEVICE, CAT, now=NOW).delivery is Delivery.INLINE
    assert decide(http, DEVICE, CAT, now=NOW, policy=Policy(redirect_scheme="http")).delivery is Delivery.REDIRECT


def test_inline_limit() -> None:
    cat = catalog(release("1.1.0", size=5_000_000), track=Track(version="1.1.0"))
    q = parse_check(esp8266_headers(MAC, version="1", free_space=9_000_000), query={"delivery": "inline"})
    d = decide(q, DEVICE, cat, now=NOW)
    assert d.outcome is Outcome.NO_UPDATE and d.reason == "too-large-for-inline"


class TestCredentials:
    secret = credentials.issue_secret()
    cat = replace(CAT, product=replace(CAT.product, auth_required=True))
    device = replace(DEVICE, secret_hash=credentials.hash_secret(secret))

    def check(self, auth: tuple[str, str] | None, device: Device | None = None, cat: Catalog | None = None) -> int:
        r = parse_check(esp8266_headers(MAC, version="1.0.0", auth=auth))
        return decide(r, device or self.device, cat or self.cat, now=NOW).status

    def test_right_secret(self) -> None:
        assert self.check((MAC, self.secret)) == 200
        assert self.check((MAC.lower(), self.secret)) == 200

    def test_wrong_secret(self) -> None:
        assert self.check((MAC, self.secret + "x")) == 401

    def test_no_header(self) -> None:
        assert self.check(None) == 401

    def test_secret_of_another_device(self) -> None:
        other = credentials.issue_secret()
        assert self.check(("5C:CF:7F:00:00:02", other)) == 401
        assert self.check((MAC, other)) == 401

    def test_auth_free_product_ignores_header(self) -> None:
        assert self.check((MAC, "anything"), cat=CAT) == 200

    def test_stored_hash_is_not_the_secret(self) -> None:
        assert self.device.secret_hash is not None and self.secret not in self.device.secret_hash

    def test_authenticated_devices_get_inline(self) -> None:
        r = parse_check(esp8266_headers(MAC, version="1.0.0", auth=(MAC, self.secret)))
        assert decide(r, self.device, self.cat, now=NOW).delivery is Delivery.INLINE
