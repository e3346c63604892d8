"""The upload command's pure parts: version from the file name, object keys, progress, the wait loop."""

from __future__ import annotations

import io
from typing import Any

import pytest

from otafleet.models import Kind, Release, ReleaseState
from otafleet_cli import upload
from otafleet_cli.stack import CliError


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("door-1.2.0.bin", "1.2.0"),
        ("door_1.2.0.bin", "1.2.0"),
        ("/tmp/build/door-v1.6.0.bin", "v1.6.0"),
        ("1.2.0.bin", "1.2.0"),
        ("door-DOOR-7-g14f53a19.bin", "DOOR-7-g14f53a19"),
        ("doorbell-2.0.bin", "doorbell-2.0"),  # another product's prefix is not stripped
        ("door-1.2.0.BIN", "1.2.0"),
        ("door-1.2.0", "1.2.0"),  # no .bin: the dots stay
        ("firmware.bin", "firmware"),
    ],
)
def test_version_from_filename(filename: str, version: str) -> None:
    assert upload.version_from_filename(filename, "door") == version


def test_a_file_named_after_the_product_has_no_version() -> None:
    with pytest.raises(CliError, match="pass --version"):
        upload.version_from_filename("door.bin", "door")


@pytest.mark.parametrize("bad", ["", "a b", "../x", "-1.0", "x" * 65, "1.0/2"])
def test_versions_that_cannot_be_keys_are_refused(bad: str) -> None:
    with pytest.raises(CliError, match="invalid version"):
        upload.check_version(bad)


def test_object_keys_follow_the_convention() -> None:
    assert upload.object_key("door", "1.2.0", Kind.APP) == "firmware/door/1.2.0.bin"
    assert upload.object_key("door", "fs-3", Kind.FS) == "filesystem/door/fs-3.bin"


def test_help_text_states_the_rule() -> None:
    assert "door-1.2.0.bin → 1.2.0" in upload.VERSION_RULE


def test_progress_writes_whole_percentages_once() -> None:
    stream = io.StringIO()
    progress = upload.Progress(1000, stream)
    for _ in range(4):
        progress(250)
    progress(0)
    progress.done()
    assert stream.getvalue().count("\r") == 4
    assert stream.getvalue().endswith("\ruploading 100%  1000/1000 bytes\n")


class FakeFleet:
    def __init__(self, answers: list[Release | None]) -> None:
        self.answers = answers
        self.calls = 0

    def upload_status(self, product: str, version: str, kind: Kind, sha256: str) -> Release | None:
        self.calls += 1
        return self.answers[min(self.calls - 1, len(self.answers) - 1)]


def release(md5: str = "a" * 32, *, state: ReleaseState = ReleaseState.REGISTERED, vid: str | None = "v2") -> Release:
    return Release("door", Kind.APP, "1.2.0", 10, md5, "0" * 64, "firmware/door/1.2.0.bin", vid, state=state)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(upload, "_clock", lambda: now[0])
    monkeypatch.setattr(upload, "_sleep", lambda s: now.__setitem__(0, now[0] + s))
    return now


def wait(fleet: Any, before: Release | None = None, vid: str | None = "v2", timeout: float = 60) -> Release | None:
    return upload.wait_for_release(
        fleet, "door", Kind.APP, "1.2.0", "0" * 64, before=before, s3_version_id=vid, timeout=timeout
    )


def test_wait_returns_the_release_once_it_appears(fake_time: list[float]) -> None:
    fleet: Any = FakeFleet([None, None, release()])
    assert wait(fleet) == release()
    assert fleet.calls == 3
    assert fake_time[0] == pytest.approx(100.75)  # 0.25 + 0.5: backing off


def test_wait_ignores_the_verdict_that_was_there_before(fake_time: list[float]) -> None:
    old = release(state=ReleaseState.REJECTED, vid="v1")
    new = release(state=ReleaseState.REJECTED, vid="v2")
    fleet: Any = FakeFleet([old, old, new])
    assert wait(fleet, before=old) == new


def test_wait_wants_the_verdict_on_the_uploaded_object_version(fake_time: list[float]) -> None:
    other = release(state=ReleaseState.REJECTED, vid="v9")
    fleet: Any = FakeFleet([other, release(state=ReleaseState.REJECTED, vid="v2")])
    assert wait(fleet).s3_version_id == "v2"  # type: ignore[union-attr]
    # A registration of the same bytes from another upload is as good as ours.
    assert wait(FakeFleet([release(vid="v9")])) == release(vid="v9")
    # Without object versions, any new verdict counts.
    assert wait(FakeFleet([other]), vid=None) == other


def test_wait_gives_up_at_the_timeout(fake_time: list[float]) -> None:
    fleet: Any = FakeFleet([None])
    assert wait(fleet, timeout=10) is None
    assert fake_time[0] == pytest.approx(110.0)
    assert wait(fleet, timeout=0) is None
