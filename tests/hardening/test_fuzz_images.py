"""Fuzzing the image parser with esptool as the independent judge.

Valid images of every layout otafleet accepts (ESP32-family apps with and without appended hash, Arduino
ESP8266 with and without build CRC, plain and gzip ESP8266, and the two toolchain-made fixtures) are
truncated, bit-flipped, byte-mangled and given wrong segment counts and lengths. Whatever comes out:

- `parse_app_image` raises `ImageError` or returns, nothing else, and within a few seconds (an alarm ends
  a hang as a failure);
- an image it accepts is one esptool (`esptool.bin_image.LoadFirmwareImage`, in process) loads with a
  valid checksum and, where a SHA-256 is appended, a valid digest.

tests/unit/test_imageformat.py already feeds raw random bytes and random edits (only ImageError, quickly);
this file adds the structure-aware mutations and the esptool verdict on everything accepted.
"""

from __future__ import annotations

import signal
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
from hardening.helpers import fuzz_settings
from hypothesis import event, given, note
from hypothesis import strategies as st

from otafleet.imageformat import ImageError, ImageInfo, parse_app_image
from otafleet_local import sample_images as si

esptool_bin_image = pytest.importorskip("esptool.bin_image")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
SECONDS_PER_IMAGE = 5


def _seeds() -> dict[str, bytes]:
    seeds = {
        "esp32-hash": si.build_esp32_image(size=3000, seed=1),
        "esp32s3-hash": si.build_esp32_image(chip="esp32s3", size=2500, seed=2),
        "esp32c3-nohash": si.build_esp32_image(chip="esp32c3", size=2200, hash_appended=False, seed=3),
        "esp32c6-sbv2": si.build_esp32_image(chip="esp32c6", size=2048, signature="secure-boot-v2", seed=4),
        "esp8266-arduino": si.build_esp8266_image(sketch_size=1500, seed=5),
        "esp8266-arduino-nocrc": si.build_esp8266_image(sketch_size=1500, build_crc=False, seed=6),
        "esp8266-plain": si.build_esp8266_image(sketch_size=1200, arduino_layout=False, seed=7),
        "esp8266-signed": si.build_esp8266_image(sketch_size=1200, signed=True, seed=8),
        "esp8266-gzip": si.build_esp8266_gzip(sketch_size=1500, seed=9),
    }
    for path in sorted(FIXTURES.glob("*.bin")):
        seeds[f"fixture-{path.stem}"] = path.read_bytes()
    return seeds


SEEDS = _seeds()
INFOS = {name: parse_app_image(data) for name, data in SEEDS.items()}


# ------------------------------------------------------------------ the judge


def esptool_verdict(data: bytes, info: ImageInfo) -> str | None:
    """None when esptool calls the image valid as what otafleet says it is; else what esptool objects to."""
    if info.layout == "esp8266-gzip":
        inner = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data)
        return esptool_verdict(inner, parse_app_image(inner))
    if info.chip != "esp8266":
        return _esptool_image(data, info.chip, chip_id=info.chip_id)
    if info.layout == "esp8266-arduino":
        eboot = _esptool_image(data, "esp8266")
        if eboot is not None:
            return f"eboot: {eboot}"
        sketch = bytearray(data[si.ARDUINO_SKETCH_OFFSET :])
        if info.build_crc is not None:
            # elf2bin patches the CRC words in after computing the checksum (see test_sample_images.py).
            crc_at = si.ARDUINO_CRC_OFFSET - si.ARDUINO_SKETCH_OFFSET
            sketch[crc_at : crc_at + 8] = bytes(8)
        verdict = _esptool_image(bytes(sketch), "esp8266")
        return None if verdict is None else f"sketch: {verdict}"
    return _esptool_image(data, "esp8266")


def _esptool_image(data: bytes, chip: str, *, chip_id: int | None = None) -> str | None:
    try:
        image = esptool_bin_image.LoadFirmwareImage(chip, data)
    except Exception as exc:
        return f"cannot load: {type(exc).__name__}: {exc}"
    if image.checksum != image.calculate_checksum():
        return f"checksum 0x{image.checksum:02x}, calculated 0x{image.calculate_checksum():02x}"
    if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
        return "appended SHA-256 does not match"
    if chip_id is not None and getattr(image, "chip_id", chip_id) != chip_id:
        return f"chip id {image.chip_id}, otafleet says {chip_id}"
    return None


def test_every_seed_is_valid_for_both() -> None:
    for name, data in SEEDS.items():
        assert esptool_verdict(data, INFOS[name]) is None, name


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_judge_notices_corrupted_segment_data(name: str) -> None:
    """The judge must be able to say no: one flipped bit in the first segment's data (of the sketch, for
    Arduino ESP8266 images; inside the stream, for gzip) is something esptool calls invalid."""
    info = INFOS[name]
    if info.layout == "esp8266-gzip":
        inner = bytearray(zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(SEEDS[name]))
        inner_info = parse_app_image(bytes(inner))
        inner[inner_info.segments[-1].data_offset + 1] ^= 0x01
        assert esptool_verdict(bytes(inner), inner_info) is not None
        return
    data = bytearray(SEEDS[name])
    data[info.segments[-1].data_offset + 1] ^= 0x01
    assert esptool_verdict(bytes(data), info) is not None


# ------------------------------------------------------------------ running one candidate


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Turn a parse that runs past `seconds` into a failure instead of a stuck test run (main thread)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"parse_app_image ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def judge(data: bytes, seed: str) -> None:
    with deadline(SECONDS_PER_IMAGE):
        try:
            info = parse_app_image(data)
        except ImageError as refused:
            assert refused.reason, "a rejection says why"
            event(f"{seed}: refused ({refused.code})")
            return
    event(f"{seed}: accepted")
    verdict = esptool_verdict(data, info)
    note(f"otafleet accepted {len(data)} bytes as {info.layout} {info.chip}; esptool: {verdict}")
    assert verdict is None, f"accepted an image esptool calls invalid: {verdict}"


# ------------------------------------------------------------------ mutations

seed_names = st.sampled_from(sorted(SEEDS))
edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=0, max_value=7)),
    st.tuples(st.just("set"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(min_value=1, max_value=32)),
    st.tuples(st.just("append"), st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=255)),
)


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << value
        elif kind == "set" and at < len(out):
            out[at] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value])
        elif kind == "delete":
            del out[at : at + value]
        elif kind == "append":
            out += bytes([value]) * where
    return bytes(out)


@given(seed_names, st.lists(edit, min_size=1, max_size=3))
@fuzz_settings("image_mutations")
def test_mutated_images_are_refused_or_valid_for_esptool(seed: str, edits: list[tuple[str, int, int]]) -> None:
    judge(apply(SEEDS[seed], edits), seed)


def segment_header_offsets(data: bytes, info: ImageInfo) -> list[int]:
    """File offsets of every segment header (load address, length) the parser found, the bootloader's too."""
    return [s.offset for s in (*info.bootloader_segments, *info.segments)]


length_change = st.one_of(
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=-64, max_value=-1),
    st.sampled_from([0x1000, -0x1000, 0x10000]),
)
UNCOMPRESSED = sorted(name for name in SEEDS if not name.endswith("gzip"))


@given(st.sampled_from(UNCOMPRESSED), st.data())
@fuzz_settings("image_structured")
def test_wrong_segment_counts_and_lengths_are_refused_or_valid(seed: str, data: st.DataObject) -> None:
    image = bytearray(SEEDS[seed])
    info = INFOS[seed]
    headers = segment_header_offsets(bytes(image), info)
    what = data.draw(st.sampled_from(["length", "length-absolute", "count", "truncate-at-structure"]), label="what")
    if what in ("length", "length-absolute"):
        at = data.draw(st.sampled_from(headers), label="segment header") + 4
        old = struct.unpack_from("<I", image, at)[0]
        new = (
            (old + data.draw(length_change, label="delta")) % 2**32
            if what == "length"
            else data.draw(st.integers(min_value=0, max_value=2**32 - 1), label="length")
        )
        struct.pack_into("<I", image, at, new)
    elif what == "count":
        start = data.draw(
            st.sampled_from(sorted({0, *((si.ARDUINO_SKETCH_OFFSET,) if info.bootloader_segments else ())}))
        )
        image[start + 1] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda c: c != image[start + 1]))
    else:
        boundaries = sorted({0, 1, 8, 24, *headers, *(h + 8 for h in headers), info.image_size - 1, info.image_size})
        cut = data.draw(st.sampled_from(boundaries), label="cut") + data.draw(st.integers(-2, 2), label="shift")
        del image[max(cut, 0) :]
    judge(bytes(image), f"{seed} {what}")
