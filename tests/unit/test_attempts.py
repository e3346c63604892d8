"""The attempt model as a table: the stock clients' exact request sequences replayed through the pure
decision, one device record carried from check to check (support.records.apply)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import pytest

from otafleet import attempts
from otafleet.attempts import Verdict
from otafleet.decision import Decision, Outcome, Policy, decide, reported_after
from otafleet.models import (
    AttemptState,
    Build,
    Catalog,
    Channel,
    Device,
    Kind,
    Product,
    Release,
    Rhythm,
    SilenceWatch,
    Track,
    TrackState,
)
from otafleet.protocol import CheckRequest, parse_check
from otafleet.rhythm import SilencePolicy, epoch
from support.devices import esp32_headers, esp8266_headers
from support.records import apply

MAC = "5C:CF:7F:00:00:01"
T0 = "2026-11-24T12:00:00Z"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def app(version: str, size: int, *, flashed: bool = True, chip: str = "esp8266", sha: str | None = None) -> Release:
    file_md5 = md5(f"file-{version}")
    variants = (file_md5, md5(f"dio-{version}"), md5(f"qio-{version}")) if flashed else ()
    return Release(
        product="door",
        kind=Kind.APP,
        version=version,
        size=size - 4096,
        md5=file_md5,
        sha256="0" * 64,
        s3_key=f"firmware/door/{version}.bin",
        chip=chip,
        sketch_size=size if flashed else None,
        flashed_md5s=tuple(sorted(variants)),
        appended_sha256=sha,
    )


def fs(version: str) -> Release:
    return Release(
        product="door",
        kind=Kind.FS,
        version=version,
        size=100_000,
        md5=md5(f"fs-{version}"),
        sha256="1" * 64,
        s3_key=f"filesystem/door/{version}.bin",
    )


OLD = app("1.0.0", 300_016)
NEW = app("1.1.0", 310_032)
SAME_SIZE = app("1.1.0", 300_016)  # a config-only change: the new build is as long as the old one
FS_OLD, FS_NEW = fs("fs-1"), fs("fs-2")


def catalog(
    *releases: Release, app_track: str | None = "1.1.0", fs_track: str | None = None, **track: object
) -> Catalog:
    tracks: dict[Kind, Track] = {}
    if app_track:
        tracks[Kind.APP] = Track(version=app_track, previous="1.0.0", **track)  # type: ignore[arg-type]
    if fs_track:
        tracks[Kind.FS] = Track(version=fs_track, previous="fs-1")
    return Catalog(
        product=Product(name="door", platform="esp8266"),
        channels={"stable": Channel("door", "stable", tracks)},
        releases={(r.kind, r.version): r for r in releases},
    )


CAT = catalog(OLD, NEW, FS_OLD, FS_NEW, fs_track="fs-2")


DEVICE = Device(mac=MAC, product="door", channel="stable", assigned=True)
POLICY = Policy()


@dataclass
class Fleet:
    """One device replayed through the decision, check after check."""

    catalog: Catalog
    device: Device = DEVICE
    policy: Policy = POLICY
    minute: int = 0

    def check(self, req: CheckRequest) -> Decision:
        self.minute += 1
        now = f"2026-11-24T12:{self.minute // 60:02d}:{self.minute % 60:02d}Z"
        d = decide(req, self.device, self.catalog, now=now, policy=self.policy)
        self.device = apply(self.device, d.record)
        return d

    def attempt(self, kind: Kind = Kind.APP) -> AttemptState | None:
        a = self.device.attempts.get(kind)
        return a.state if a else None


def sketch(**kw: object) -> CheckRequest:
    return parse_check(esp8266_headers(MAC, **kw))  # type: ignore[arg-type]


def spiffs(**kw: object) -> CheckRequest:
    return parse_check(esp8266_headers(MAC, mode="spiffs", **kw))  # type: ignore[arg-type]


def old_core(size: int) -> CheckRequest:
    """Core 2.0/2.1: no MD5, no chip id, and a sketch that passes no version."""
    return parse_check(esp8266_headers(MAC, mode=None, chip_id=None, sketch_size=size))


# --- evidence, signal by signal ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "before", "verdict"),
    [
        (Build(version="1.0.0"), Build(version="1.0.0"), Verdict.OLD),
        (Build(version="1.2.0-dev"), Build(version="1.0.0"), Verdict.OTHER),
        (Build(size=310_032), Build(size=300_016), Verdict.TARGET),
        (Build(version="1.0.0", size=310_032), Build(version="1.0.0", size=300_016), Verdict.TARGET),
        (Build(size=300_016), Build(size=300_016), Verdict.OLD),
        (Build(size=299_000), Build(size=300_016), Verdict.OTHER),
        (Build(md5="a" * 32, size=300_016), Build(md5="a" * 32, size=300_016), Verdict.OLD),
        (Build(md5="b" * 32), Build(md5="b" * 32), Verdict.UNCHANGED),
        (Build(md5="c" * 32), Build(md5="b" * 32), Verdict.OTHER),
        (Build(), Build(), Verdict.NONE),
    ],
)
def test_judge_table(now: Build, before: Build, verdict: Verdict) -> None:
    assert attempts.judge(NEW, now, before)[0] is verdict


def test_size_says_nothing_when_both_builds_have_it() -> None:
    assert attempts.judge(SAME_SIZE, Build(size=300_016), Build(size=300_016))[0] is Verdict.NONE


def test_md5_change_proves_the_install_only_for_releases_without_device_facts() -> None:
    legacy = app("1.1.0", 310_032, flashed=False)
    assert attempts.judge(legacy, Build(md5="c" * 32), Build(md5="b" * 32))[0] is Verdict.TARGET


def test_every_flash_mode_variant_of_the_image_identifies_it() -> None:
    device = Device(mac=MAC)
    for variant in NEW.flashed_md5s:
        assert attempts.identifies(NEW, Build(md5=variant), device) is not None
    assert attempts.identifies(NEW, Build(md5="f" * 32), device) is None


# --- whole sequences ------------------------------------------------------------------------------


def test_update_then_update_fs_each_cycle_keeps_two_attempts_apart() -> None:
    """Case 1: `update` then `updateFS` every cycle; the app installs at the second cycle, the filesystem
    reports its new version at the third. Each image is offered until it is seen, then never again."""
    f = Fleet(CAT)
    old_md5, new_md5 = md5("running-1.0.0"), NEW.flashed_md5s[1]
    assert f.check(sketch(version="1.0.0", md5=old_md5, sketch_size=300_016)).outcome is Outcome.OFFER
    assert f.check(spiffs(version="fs-1", md5=old_md5, sketch_size=300_016)).outcome is Outcome.OFFER
    assert (f.attempt(Kind.APP), f.attempt(Kind.FS)) == (AttemptState.OFFERED, AttemptState.OFFERED)
    # Cycle 2: rebooted into 1.1.0 (update() reboots); the filesystem image did not take yet.
    d = f.check(sketch(version="1.1.0", md5=new_md5, sketch_size=310_032))
    assert d.reason == "up-to-date" and d.verdict is AttemptState.INSTALLED
    d = f.check(spiffs(version="fs-1", md5=new_md5, sketch_size=310_032))
    assert d.outcome is Outcome.OFFER and f.device.attempts[Kind.FS].offers == 2
    assert f.attempt(Kind.APP) is AttemptState.INSTALLED
    # Cycle 3 and later: both report the targets; nothing is offered again.
    for _ in range(3):
        assert f.check(sketch(version="1.1.0", md5=new_md5, sketch_size=310_032)).reason == "up-to-date"
        assert f.check(spiffs(version="fs-2", md5=new_md5, sketch_size=310_032)).reason == "up-to-date"
    assert (f.attempt(Kind.APP), f.attempt(Kind.FS)) == (AttemptState.INSTALLED, AttemptState.INSTALLED)
    # Case 10: the filesystem check's version never became the application's.
    assert f.device.reported.version == "1.1.0" and f.device.reported.fs_version == "fs-2"


def test_a_filesystem_at_its_target_version_is_never_rewritten() -> None:
    """Case 2: `updateFS(client, url, "fs-2")` on a device whose filesystem is fs-2 already."""
    f = Fleet(CAT)
    d = f.check(spiffs(version="fs-2"))
    assert d.reason == "up-to-date" and f.attempt(Kind.FS) is None


def test_a_filesystem_image_that_never_installs_fails_and_is_not_counted_installed() -> None:
    """Case 2: the redirect is not followed (or -100, no space): the device keeps reporting fs-1."""
    f = Fleet(CAT)
    for n in range(1, 4):
        d = f.check(spiffs(version="fs-1"))
        assert d.outcome is Outcome.OFFER and f.device.attempts[Kind.FS].offers == n
    d = f.check(spiffs(version="fs-1"))
    assert d.reason == "failed" and d.verdict is AttemptState.FAILED
    assert f.device.fs_version is None
    assert f.check(spiffs(version="fs-1")).reason == "failed-before"


def test_a_filesystem_that_reports_no_version_is_written_once_then_unknown() -> None:
    f = Fleet(CAT)
    assert f.check(spiffs()).outcome is Outcome.OFFER
    d = f.check(spiffs())
    assert d.reason == "unknown" and d.verdict is AttemptState.UNKNOWN
    for _ in range(5):
        assert f.check(spiffs()).reason == "unknown-before"


def test_a_device_that_runs_the_target_with_another_md5_is_not_offered_it() -> None:
    """Case 3: ESP8266 rewrote the flash-mode byte: its MD5 is one of the image's variants."""
    f = Fleet(CAT)
    d = f.check(sketch(md5=NEW.flashed_md5s[0], sketch_size=310_032))
    assert d.reason == "up-to-date" and d.verdict is None


def test_a_factory_flashed_target_is_never_a_failure() -> None:
    """Case 3: flashed by esptool with other header bytes, no version: an MD5 no OTA gives. The target is
    offered; the device reflashes (now an OTA variant) or, if it never takes, ends unknown, not failed."""
    f = Fleet(catalog(OLD, SAME_SIZE))
    factory = md5("factory-1.1.0")
    for _ in range(3):
        assert f.check(sketch(md5=factory, sketch_size=300_016)).outcome is Outcome.OFFER
    d = f.check(sketch(md5=factory, sketch_size=300_016))
    assert d.reason == "unknown" and d.verdict is AttemptState.UNKNOWN and not f.device.failed
    assert f.check(sketch(md5=factory, sketch_size=300_016)).reason == "unknown-before"
    # Reflashed once more by OTA: one of the variants. Re-judged by evidence: installed.
    d = f.check(sketch(md5=SAME_SIZE.flashed_md5s[0], sketch_size=300_016))
    assert d.verdict is AttemptState.INSTALLED


@pytest.mark.parametrize(
    ("sizes", "end"),
    [
        ((300_016, 310_032), AttemptState.INSTALLED),  # the size moved to the image's
        ((300_016, 300_016, 300_016, 300_016), AttemptState.FAILED),  # still the old, other size
    ],
)
def test_old_cores_are_judged_by_sketch_size(sizes: tuple[int, ...], end: AttemptState) -> None:
    """Case 4: no MD5, no version. The sketch size every core sends is the evidence."""
    f = Fleet(CAT)
    for size in sizes:
        f.check(old_core(size))
    assert f.attempt() is end
    assert bool(f.device.failed) is (end is AttemptState.FAILED)


def test_old_cores_without_any_evidence_get_one_offer_and_no_verdict() -> None:
    """Case 4: the new build is as long as the old one: one offer, then unknown; never a failure."""
    f = Fleet(catalog(OLD, SAME_SIZE))
    assert f.check(old_core(300_016)).outcome is Outcome.OFFER
    d = f.check(old_core(300_016))
    assert d.reason == "unknown" and not f.device.failed
    assert [f.check(old_core(300_016)).reason for _ in range(5)] == ["unknown-before"] * 5


def test_a_device_flashed_with_another_build_is_offered_again() -> None:
    f = Fleet(catalog(OLD, SAME_SIZE))
    f.check(old_core(300_016))
    f.check(old_core(300_016))
    assert f.attempt() is AttemptState.UNKNOWN
    assert f.check(old_core(280_000)).outcome is Outcome.OFFER  # its build changed: a new attempt


def test_esp32_sha256_proves_the_install_and_an_unchanged_one_never_fails() -> None:
    sha = "ab" * 32
    esp_cat = Catalog(
        product=Product(name="door", platform="esp32"),
        channels={"stable": Channel("door", "stable", {Kind.APP: Track(version="2.0.0")})},
        releases={(Kind.APP, "2.0.0"): app("2.0.0", 900_000, chip="esp32", sha=sha)},
    )
    f = Fleet(esp_cat)
    # Core 1.0.x: only sketch-sha256.
    assert f.check(parse_check(esp32_headers(MAC, sha256="cd" * 32))).outcome is Outcome.OFFER
    assert f.check(parse_check(esp32_headers(MAC, sha256=sha))).verdict is AttemptState.INSTALLED


def test_reboot_loop_of_checks_counts_one_verdict() -> None:
    """The same evidence reported again and again after the verdict moves nothing."""
    f = Fleet(CAT)
    f.check(sketch(version="1.0.0"))
    verdicts = [f.check(sketch(version="1.1.0")).verdict for _ in range(4)]
    assert verdicts == [AttemptState.INSTALLED, None, None, None]


def test_counter_events_only_for_trusted_devices_of_the_channels_own_release() -> None:
    f = Fleet(CAT)
    f.check(sketch(version="1.0.0"))
    d = f.check(sketch(version="1.1.0"))
    assert d.record.counter is not None and d.record.counter.deltas == {"ok": 1}
    # An enrolled device with no history: its verdicts are not counted.
    enrolled = Fleet(CAT, device=replace(Fleet(CAT).device, enrolled_at=T0))
    enrolled.check(sketch(version="1.0.0"))
    assert enrolled.check(sketch(version="1.1.0")).record.counter is None
    # A pinned device's attempt counts for no rollout.
    pinned = Fleet(CAT, device=replace(Fleet(CAT).device, pins={Kind.APP: "1.1.0"}))
    pinned.check(sketch(version="1.0.0"))
    assert pinned.check(sketch(version="1.1.0")).record.counter is None


def test_enrolled_devices_are_trusted_after_a_day_and_an_install() -> None:
    from otafleet.decision import trusted

    dev = Device(mac=MAC, enrolled_at="2026-11-20T12:00:00Z")
    assert not trusted(dev, False, now=T0, policy=Policy())
    assert trusted(replace(dev, installs=1), False, now=T0, policy=Policy())
    assert not trusted(replace(dev, installs=1), False, now="2026-11-20T13:00:00Z", policy=Policy())
    assert trusted(dev, True, now=T0, policy=Policy())


def test_unknown_moving_to_installed_moves_the_counters_once() -> None:
    f = Fleet(catalog(OLD, SAME_SIZE))
    f.check(old_core(300_016))
    d = f.check(old_core(300_016))
    assert d.record.counter is not None and d.record.counter.deltas == {"unknown": 1}
    d = f.check(sketch(version="1.1.0", sketch_size=300_016))
    assert d.record.counter is not None and d.record.counter.deltas == {"ok": 1, "unknown": -1}


def test_downgrade_policy_uses_the_learned_version() -> None:
    """Case 9: the device installed 1.1.0 (learned) and reports no version; the channel goes to 1.0.0."""
    f = Fleet(CAT)
    f.check(sketch(md5=md5("x"), sketch_size=300_016))
    f.check(sketch(md5=NEW.flashed_md5s[0], sketch_size=310_032))
    assert f.device.running_version == "1.1.0"
    back = catalog(OLD, NEW, app_track="1.0.0")
    d = decide(sketch(md5=NEW.flashed_md5s[0], sketch_size=310_032), f.device, back, now=T0)
    assert d.reason == "downgrade" and "learned" in d.detail


def test_probe_answers_the_target_also_when_the_device_runs_it() -> None:
    """Case 11: getAvailableVersion() turns every non-200 into a failure."""
    for version in ("1.0.0", "1.1.0"):
        d = decide(sketch(version=version, mode="version"), Fleet(CAT).device, CAT, now=T0)
        assert d.outcome is Outcome.PROBE and d.status == 200 and d.record.attempt is None


def test_filesystem_check_keeps_the_application_version() -> None:
    """Case 10."""
    dev = apply(Fleet(CAT).device, decide(sketch(version="1.1.0"), Fleet(CAT).device, CAT, now=T0).record)
    assert reported_after(spiffs(version="fs-2"), dev, T0).version == "1.1.0"


def test_over_threshold_reads_as_halted_before_the_halt_is_written() -> None:
    """Case 14: a lost halt write leaves no rollout running above its threshold."""
    over = catalog(OLD, NEW, percent=100, successes=5, failures=10, min_devices=10)
    d = decide(sketch(version="1.0.0"), Fleet(CAT).device, over, now=T0)
    assert d.release is not None and d.release.version == "1.0.0"
    assert any("halted" in s.result for s in d.steps if s.name == "target")
    halted_cat = catalog(OLD, NEW, state=TrackState.HALTED)
    assert decide(sketch(version="1.1.0"), Fleet(CAT).device, halted_cat, now=T0).reason == "up-to-date"


def test_explain_of_an_authenticating_device_says_inline() -> None:
    """Case 14: a dry run has no Authorization header, the device it stands for does."""
    auth = replace(CAT, product=replace(CAT.product, auth_required=True))
    r = replace(sketch(version="1.0.0"), dry_run=True)
    assert decide(r, Fleet(CAT).device, auth, now=T0).status == 200


def test_unassigned_records_expire() -> None:
    d = decide(sketch(), None, None, now=T0)
    assert d.record.expires_at is not None and d.record.expires_at > 1_795_000_000
    assert decide(sketch(version="1.0.0"), Fleet(CAT).device, CAT, now=T0).record.expires_at is None


# --- a device counts once per rollout ----------------------------------------------------------


def test_a_device_that_reverts_after_installing_is_not_counted_again_nor_offered_without_bound() -> None:
    """An app that boots, checks in, then rolls back (ESP-IDF app rollback), or a forger alternating
    versions: one success at most, offers bounded by the limit, then a failure that replaces it."""
    f = Fleet(CAT)
    deltas: dict[str, int] = {}
    offers = 0
    for _ in range(12):
        for version in ("1.0.0", "1.1.0"):
            d = f.check(sketch(version=version))
            offers += d.outcome is Outcome.OFFER
            for k, v in (d.record.counter.deltas if d.record.counter else {}).items():
                deltas[k] = deltas.get(k, 0) + v
            assert sum(v for v in deltas.values() if v > 0) <= 1, deltas  # one verdict stands at any time
    assert offers == 3  # the limit, across the reverts
    # One verdict stands: the last evidence's (the target, reported last).
    assert {k: v for k, v in deltas.items() if v} == {"ok": 1} and f.attempt() is AttemptState.INSTALLED
    # Back on the old build after its offers are used up: failed, replacing the success.
    d = f.check(sketch(version="1.0.0"))
    assert d.reason == "failed" and d.record.counter is not None
    assert d.record.counter.deltas == {"ok": -1, "fail": 1}


def test_a_failure_later_overcome_is_re_judged_installed() -> None:
    f = Fleet(CAT)
    for _ in range(4):
        f.check(sketch(version="1.0.0"))
    assert f.device.failed
    d = f.check(sketch(version="1.1.0"))
    assert d.verdict is AttemptState.INSTALLED and d.record.unfailed == "app:1.1.0"
    assert d.record.counter is not None and d.record.counter.deltas == {"fail": -1, "ok": 1}
    assert not f.device.failed


def test_retry_reopens_the_attempt_and_its_verdict_replaces_the_counted_one() -> None:
    f = Fleet(CAT)
    for _ in range(4):
        f.check(sketch(version="1.0.0"))
    retried = attempts.retried(f.device.attempts[Kind.APP])
    f.device = replace(f.device, attempts={Kind.APP: retried}, failed=frozenset())
    assert f.check(sketch(version="1.0.0")).outcome is Outcome.OFFER
    d = f.check(sketch(version="1.1.0"))
    assert d.record.counter is not None and d.record.counter.deltas == {"fail": -1, "ok": 1}


def test_an_enrolled_device_keeps_its_expiry_on_every_answer() -> None:
    auth = replace(CAT, product=replace(CAT.product, auth_required=True))
    enrolled = replace(DEVICE, enrolled_at=T0)
    for cat, device in ((auth, enrolled), (CAT, replace(enrolled, blocked=True)), (CAT, enrolled)):
        d = decide(sketch(version="1.0.0"), device, cat, now=T0)
        assert d.record.expires_at is not None, d.reason


def test_a_probe_without_a_version_keeps_the_application_version() -> None:
    dev = replace(DEVICE, reported=replace(DEVICE.reported, version="1.1.0"))
    assert reported_after(sketch(mode="version"), dev, T0).version == "1.1.0"


def test_every_attempt_field_survives_storage() -> None:
    from otafleet.storage.items import attempt_from_map, attempt_to_map

    reopened = attempts.reopen(
        attempts.end(
            attempts.start(NEW, Build(version="1.0.0", md5="a" * 32, size=1), at=T0, channel="stable", trusted=True),
            AttemptState.INSTALLED,
            Build(version="1.1.0"),
            "why",
            at=T0,
        ),
        Build(),
        at=T0,
    )
    for a in (reopened, attempts.end(reopened, AttemptState.UNKNOWN, Build(), "none", at=T0)):
        assert attempt_from_map(attempt_to_map(a)) == a


# --- silence: the controller's verdict, and the device coming back -------------------------------

HOUR = 3600
OFFER_AT = "2026-11-24T12:00:00Z"
HOURLY = Rhythm(0, HOUR, 10)


def at(hours: float) -> str:
    return f"2026-11-24T{12 + int(hours):02d}:{int(hours * 60) % 60:02d}:00Z"


def offered(*, rhythm: Rhythm | None = HOURLY, last_seen: str = OFFER_AT, offers: int = 1) -> Device:
    attempt = replace(
        attempts.start(NEW, Build(version="1.0.0", size=300_016), at=OFFER_AT, channel="stable", trusted=True),
        offers=offers,
    )
    watch = SilenceWatch("door", Kind.APP, 0) if last_seen == OFFER_AT else None  # a later check ended it
    return replace(DEVICE, attempts={Kind.APP: attempt}, last_seen=last_seen, rhythm=rhythm, watch=watch)


@pytest.mark.parametrize(
    ("device", "now", "silent"),
    [
        (offered(), at(2.9), False),  # hourly device: 3 h may pass
        (offered(), at(3.0), False),  # the limit itself is not past it
        (offered(), at(3.1), True),
        (offered(rhythm=Rhythm(0, 300, 10)), at(0.4), False),  # a 5 min device still has the 30 min floor
        (offered(rhythm=Rhythm(0, 300, 10)), at(0.6), True),
        (offered(rhythm=Rhythm(0, HOUR, 2)), at(10), False),  # rhythm not learned yet: 24 h
        (offered(rhythm=None), at(11.9), False),
        (offered(last_seen=at(0.5)), at(5), False),  # it checked in after the offer: alive
    ],
)
def test_silence_deadline_table(device: Device, now: str, silent: bool) -> None:
    verdict = attempts.falls_silent(device, Kind.APP, now=now, policy=SilencePolicy())
    assert (verdict is not None) is silent
    if verdict is not None:
        assert verdict.state is AttemptState.SILENT and verdict.seq == 2 and verdict.ended == now
        assert "since the offer" in (verdict.why or "")


def test_only_an_offered_attempt_can_fall_silent() -> None:
    device = offered()
    for state in (AttemptState.INSTALLED, AttemptState.FAILED, AttemptState.UNKNOWN, AttemptState.SILENT):
        quiet = replace(device, attempts={Kind.APP: replace(device.attempts[Kind.APP], state=state)})
        assert attempts.falls_silent(quiet, Kind.APP, now=at(20), policy=SilencePolicy()) is None
    assert attempts.falls_silent(device, Kind.FS, now=at(20), policy=SilencePolicy()) is None


@pytest.mark.parametrize(
    ("before", "after", "deltas"),
    [
        (AttemptState.OFFERED, AttemptState.SILENT, {"silent": 1}),
        (AttemptState.SILENT, AttemptState.INSTALLED, {"silent": -1, "ok": 1}),
        (AttemptState.SILENT, AttemptState.FAILED, {"silent": -1, "fail": 1}),
        (AttemptState.SILENT, AttemptState.UNKNOWN, {"silent": -1, "unknown": 1}),
        (AttemptState.SILENT, AttemptState.OFFERED, {"silent": -1}),
        (AttemptState.SILENT, AttemptState.SILENT, {}),
    ],
)
def test_silence_moves_its_own_counter(before: AttemptState, after: AttemptState, deltas: dict[str, int]) -> None:
    assert attempts.counter_deltas(before, after) == deltas


def silent_device(offers: int = 1) -> Device:
    device = offered(offers=offers)
    verdict = attempts.falls_silent(device, Kind.APP, now=at(4), policy=SilencePolicy())
    assert verdict is not None
    return replace(device, attempts={Kind.APP: verdict})


@pytest.mark.parametrize(
    ("offers", "req", "state", "deltas"),
    [
        (1, sketch(version="1.1.0"), AttemptState.INSTALLED, {"ok": 1, "silent": -1}),
        (1, sketch(sketch_size=310_032), AttemptState.INSTALLED, {"ok": 1, "silent": -1}),
        (3, sketch(version="1.0.0", sketch_size=300_016), AttemptState.FAILED, {"fail": 1, "silent": -1}),
        # Back on the old build with offers to spare: offered again, and no longer silent.
        (1, sketch(version="1.0.0", sketch_size=300_016), AttemptState.OFFERED, {"silent": -1}),
        (1, sketch(version="1.2.0-dev"), AttemptState.UNKNOWN, {"unknown": 1, "silent": -1}),
    ],
)
def test_a_silent_device_that_comes_back_is_judged_by_its_evidence(
    offers: int, req: CheckRequest, state: AttemptState, deltas: dict[str, int]
) -> None:
    device = silent_device(offers)
    d = decide(req, device, CAT, now=at(5))
    assert d.record.attempt is not None and d.record.attempt.state is state
    assert d.record.replaces == device.attempts[Kind.APP]  # conditional on the silent attempt
    assert d.record.counter is not None and d.record.counter.deltas == deltas
    if state is AttemptState.OFFERED:
        assert d.outcome is Outcome.OFFER and d.record.attempt.offers == 2 and d.record.attempt.why is None


def test_checks_that_count_learn_the_rhythm_and_watch_offers() -> None:
    f = Fleet(CAT)
    first = f.check(sketch(version="1.0.0"))
    assert first.outcome is Outcome.OFFER and first.record.rhythm is not None and first.record.rhythm.samples == 0
    # Watched for silence: nothing learned yet, so the unlearned limit (24 h) from the offer.
    assert first.record.watch == SilenceWatch("door", Kind.APP, epoch(first.record.at) + 24 * HOUR)
    later = f.check(sketch(version="1.1.0"))  # it came back: installed, and the watch ends
    assert later.record.rhythm is not None and later.record.watch is None and f.device.watch is None


def test_checks_that_do_not_count_leave_rhythm_and_watch_alone() -> None:
    """A forged check of a device whose product requires auth (401), of a blocked or an unknown device."""
    auth = replace(CAT, product=replace(CAT.product, auth_required=True))
    watched = offered()
    for device, cat in ((watched, auth), (replace(watched, blocked=True), CAT), (None, CAT)):
        d = decide(sketch(version="1.0.0"), device, cat, now=at(1))
        assert d.outcome is not Outcome.OFFER
        assert d.record.rhythm is None and d.record.watch is None


def test_a_reopened_attempt_that_falls_silent_moves_its_counted_verdict_once() -> None:
    """A device that installed, reverted and was offered again (the attempt carries its counted success),
    then went silent: the success becomes a silence, and its coming back moves the silence back."""
    installed = attempts.end(
        offered().attempts[Kind.APP], AttemptState.INSTALLED, Build(version="1.1.0"), "reported", at=OFFER_AT
    )
    reopened = attempts.reopen(installed, Build(version="1.0.0", size=300_016), at=OFFER_AT)
    device = replace(offered(), attempts={Kind.APP: reopened})
    silent = attempts.falls_silent(device, Kind.APP, now=at(4), policy=SilencePolicy())
    assert silent is not None and silent.counted_as is AttemptState.SILENT
    assert attempts.counter_deltas(reopened.counted_as, silent.state) == {"ok": -1, "silent": 1}
    back = attempts.reoffer(silent, at=at(5))
    assert back.counted_as is None  # counted for nothing until its next verdict
    assert attempts.counter_deltas(silent.counted_as, back.state) == {"silent": -1}
