"""otafleet.sketchfacts: the sketch size, MD5s and SHA-256 a device reports after installing an image.

Every expectation is computed here independently of the module: sketch sizes by walking the segment
headers with struct the way the cores do (and cross-checked with esptool's LoadFirmwareImage), MD5s by
simulating what the updater leaves in flash (flash-mode byte rewritten, signature dropped, gzip
inflated) and hashing it the way ESP.getSketchMD5() does."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from otafleet import sketchfacts
from otafleet.imageformat import ImageError, ImageInfo, parse_app_image
from otafleet.sketchfacts import DEVICE_FLASH_MODES, DeviceFacts, device_facts
from otafleet_local import sample_images as si

esptool_bin_image = pytest.importorskip("esptool.bin_image")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
MODES = ("qio", "qout", "dio", "dout")


# ---------------------------------------------------------------------------------------------------------
# Independent models of the cores
# ---------------------------------------------------------------------------------------------------------


def esp8266_sketch_size(flash: bytes) -> int:
    """ESP.getSketchSize() on the ESP8266: walk the headers from 0x1000, round the end up with (pos+16)&~15."""
    pos = 0x1000
    count = flash[pos + 1]
    pos += 8
    for _ in range(count):
        _address, length = struct.unpack_from("<II", flash, pos)
        pos += 8 + length
    return (pos + 16) & ~15


def esp32_image_len(flash: bytes) -> int:
    """esp_image_verify's image_len for an app whose build does not verify signatures: 24-byte header,
    segments, checksum padding to 16, 32 more bytes when hash_appended (byte 23)."""
    pos = 24
    for _ in range(flash[1]):
        _address, length = struct.unpack_from("<II", flash, pos)
        pos += 8 + length
    pos = (pos + 16) & ~15
    return pos + (32 if flash[23] else 0)


def esptool_esp8266_sketch_size(data: bytes) -> int:
    image = esptool_bin_image.LoadFirmwareImage("esp8266", data[0x1000:])
    end = 8 + sum(8 + len(segment.data) for segment in image.segments)
    return 0x1000 + (end + 16) // 16 * 16


def esptool_esp32_image_len(chip: str, data: bytes) -> int:
    image = esptool_bin_image.LoadFirmwareImage(chip, data)
    if image.append_digest:
        return int(image.data_length) + 32
    end = 24 + sum(8 + len(segment.data) for segment in image.segments)
    return (end + 16) // 16 * 16


def esp8266_flash_after_update(upload: bytes, device_mode: int, signature_length: int = 0) -> bytes:
    """What the esp8266 core leaves at flash offset 0: Updater::end drops the Arduino signature a
    signing-enabled device expects (signature, u32 length), Updater::_writeBuffer puts the device's flash
    mode into byte 2 unless the upload is gzip, eboot's copy_raw inflates gzip."""
    if signature_length:
        assert struct.unpack_from("<I", upload, len(upload) - 4)[0] == signature_length
    staged = upload[: len(upload) - 4 - signature_length] if signature_length else upload
    if staged[:2] == b"\x1f\x8b":
        return zlib.decompressobj(wbits=31).decompress(staged)
    return staged[:2] + bytes([device_mode]) + staged[3:]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def facts_of(data: bytes, **kwargs: Any) -> tuple[ImageInfo, DeviceFacts]:
    info = parse_app_image(data)
    facts = device_facts(data, info, **kwargs)
    assert facts is not None
    return info, facts


# ---------------------------------------------------------------------------------------------------------
# ESP8266
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flash_mode", MODES)
@pytest.mark.parametrize(("sketch_size", "build_crc"), [(256, True), (48 * 1024, True), (300_000, False)])
def test_esp8266_size_and_md5_per_device_flash_mode(flash_mode: str, sketch_size: int, build_crc: bool) -> None:
    data = si.build_esp8266_image(sketch_size=sketch_size, flash_mode=flash_mode, build_crc=build_crc, seed=5)
    info, facts = facts_of(data)
    assert facts.sketch_size == esp8266_sketch_size(data) == esptool_esp8266_sketch_size(data)
    assert facts.sketch_sizes == (facts.sketch_size,)
    assert facts.sketch_size > 0x1000  # an absolute flash offset: eboot and its padding count
    expected = set()
    for device_mode in DEVICE_FLASH_MODES:
        flash = esp8266_flash_after_update(data, device_mode)
        assert esp8266_sketch_size(flash) == facts.sketch_size
        expected.add(md5_hex(flash[: facts.sketch_size]))
    assert facts.flashed_md5s == tuple(sorted(expected))
    assert len(facts.flashed_md5s) == 4
    assert md5_hex(data[: facts.sketch_size]) in facts.flashed_md5s  # the file's own byte is one of the modes
    assert facts.sketch_sha256 is None and facts.signed_sketch_size is None
    assert info.layout == "esp8266-arduino"


def test_esp8266_only_byte_2_differs_between_variants() -> None:
    data = si.build_esp8266_image(flash_mode="dio", seed=9)
    _, facts = facts_of(data)
    by_mode = {mode: md5_hex(data[:2] + bytes([mode]) + data[3 : facts.sketch_size]) for mode in range(4)}
    assert set(by_mode.values()) == set(facts.flashed_md5s)
    # The sketch's own header at 0x1000 keeps the file's mode: the updater patches only the first header.
    patched_sketch_header = bytearray(data[: facts.sketch_size])
    patched_sketch_header[0x1002] = 0
    assert md5_hex(bytes(patched_sketch_header)) not in facts.flashed_md5s


def test_esp8266_unknown_flash_mode_byte_adds_the_files_own_md5() -> None:
    # Without a build CRC, which covers byte 2 (so a rewritten flash mode also fails ESP.checkFlashCRC()).
    data = bytearray(si.build_esp8266_image(seed=2, build_crc=False))
    data[2] = 0x07  # not a mode; cores before 2.4.2 wrote it as it is
    _, facts = facts_of(bytes(data))
    own = md5_hex(bytes(data[: facts.sketch_size]))
    patched = {md5_hex(esp8266_flash_after_update(bytes(data), m)[: facts.sketch_size]) for m in range(4)}
    assert set(facts.flashed_md5s) == patched | {own}
    assert len(facts.flashed_md5s) == 5


def test_esp8266_signed_image_reports_as_the_unsigned_one() -> None:
    unsigned = si.build_esp8266_image(seed=4, version="1.2.3")
    signed = si.build_esp8266_image(seed=4, version="1.2.3", signed=True)
    assert signed.startswith(unsigned) and len(signed) == len(unsigned) + 256 + 4
    info, facts = facts_of(signed)
    assert info.signature == "esp8266"
    assert facts == facts_of(unsigned)[1]
    assert facts.sketch_size == esp8266_sketch_size(signed) == len(unsigned)
    for device_mode in DEVICE_FLASH_MODES:
        flash = esp8266_flash_after_update(signed, device_mode, signature_length=256)
        assert md5_hex(flash[: esp8266_sketch_size(flash)]) in facts.flashed_md5s


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed-inside"])
@pytest.mark.parametrize("flash_mode", ["qio", "dout"])
def test_esp8266_gzip_reports_the_inflated_image_only(flash_mode: str, signed: bool) -> None:
    data = si.build_esp8266_gzip(flash_mode=flash_mode, seed=6, sketch_size=100_000, signed=signed)
    info, facts = facts_of(data)
    assert info.layout == "esp8266-gzip"
    inflated = gzip.decompress(data)
    assert facts.sketch_size == esp8266_sketch_size(inflated) == esptool_esp8266_sketch_size(inflated)
    # No flash-mode rewrite for gzip: the device can report exactly one MD5, whatever its flash mode.
    flashes = {esp8266_flash_after_update(data, mode)[: facts.sketch_size] for mode in DEVICE_FLASH_MODES}
    assert len(flashes) == 1
    assert facts.flashed_md5s == (md5_hex(flashes.pop()),)
    assert facts.flashed_md5s == (md5_hex(inflated[: facts.sketch_size]),)


def test_esp8266_gzip_signed_after_compression() -> None:
    """Arduino signing of a .bin.gz: the signature follows the gzip stream and the updater drops it."""
    compressed = si.build_esp8266_gzip(seed=8)
    signature = bytes(range(256))
    data = compressed + signature + struct.pack("<I", len(signature))
    info, facts = facts_of(data)
    assert (info.layout, info.signature) == ("esp8266-gzip", "esp8266")
    flash = esp8266_flash_after_update(data, 0, signature_length=256)
    assert facts.sketch_size == esp8266_sketch_size(flash)
    assert facts.flashed_md5s == (md5_hex(flash[: facts.sketch_size]),)


def test_esp8266_image_without_eboot_has_no_sketch_facts() -> None:
    for data in (
        (FIXTURES / "esp8266-plain.bin").read_bytes(),
        si.build_esp8266_image(arduino_layout=False, seed=1),
        gzip.compress(si.build_esp8266_image(arduino_layout=False, seed=1), mtime=0),
    ):
        info = parse_app_image(data)
        assert info.chip == "esp8266" and not info.bootloader_segments
        assert device_facts(data, info) is None


def test_gzip_facts_need_the_file_they_were_parsed_from() -> None:
    small = si.build_esp8266_gzip(sketch_size=4096, seed=1)
    large_info = parse_app_image(si.build_esp8266_gzip(sketch_size=200_000, seed=1))
    with pytest.raises(ValueError, match="fewer than"):
        device_facts(small, large_info)


# ---------------------------------------------------------------------------------------------------------
# ESP32 family
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_appended", [True, False], ids=["hash", "no-hash"])
@pytest.mark.parametrize("chip", si.ESP32_FAMILY)
def test_esp32_size_md5_and_sha256(chip: str, hash_appended: bool) -> None:
    data = si.build_esp32_image(chip=chip, hash_appended=hash_appended, size=20_000, seed=2)
    info, facts = facts_of(data)
    assert facts.sketch_size == esp32_image_len(data) == esptool_esp32_image_len(chip, data) == len(data)
    # The updater writes the file unchanged: one MD5, of the first sketch_size bytes.
    assert facts.flashed_md5s == (md5_hex(data[: facts.sketch_size]),)
    if hash_appended:
        assert facts.sketch_sha256 == data[facts.sketch_size - 32 : facts.sketch_size].hex() == info.appended_sha256
        assert facts.sketch_sha256 == hashlib.sha256(data[: facts.sketch_size - 32]).hexdigest()
    else:
        assert facts.sketch_sha256 == hashlib.sha256(data[: facts.sketch_size]).hexdigest()
    assert facts.signed_sketch_size is None and facts.sketch_sizes == (facts.sketch_size,)


@pytest.mark.parametrize("hash_appended", [True, False], ids=["hash", "no-hash"])
def test_esp32_padding_after_the_image_is_not_part_of_the_sketch(hash_appended: bool) -> None:
    image = si.build_esp32_image(chip="esp32s3", hash_appended=hash_appended, size=10_000, seed=3)
    padded = image + b"\xff" * (-len(image) % 4096)
    assert len(padded) > len(image)
    info, facts = facts_of(padded)
    assert info.padding == len(padded) - len(image)
    assert facts.sketch_size == esp32_image_len(padded) == len(image)
    assert facts.flashed_md5s == (md5_hex(image),)
    # The reported SHA-256 is the appended one, not the file's last 32 bytes (0xFF padding here).
    assert facts.sketch_sha256 != padded[-32:].hex()
    expected = image[-32:].hex() if hash_appended else hashlib.sha256(image).hexdigest()
    assert facts.sketch_sha256 == expected


@pytest.mark.parametrize("scheme", ["secure-boot-v1", "secure-boot-v2"])
@pytest.mark.parametrize("hash_appended", [True, False], ids=["hash", "no-hash"])
def test_esp32_signed_images_have_a_second_size(scheme: str, hash_appended: bool) -> None:
    chip = "esp32" if scheme == "secure-boot-v1" else "esp32c3"
    data = si.build_esp32_image(chip=chip, signature=scheme, hash_appended=hash_appended, size=30_000, seed=4)
    info, facts = facts_of(data)
    assert info.signature == scheme
    unsigned_len = esp32_image_len(data)
    assert facts.sketch_size == unsigned_len == esptool_esp32_image_len(chip, data)
    # An app built to verify signatures on update counts the signature too (68-byte block for v1, the
    # image padded to 4 KiB plus the 4 KiB signature sector for v2): the whole file.
    if scheme == "secure-boot-v1":
        assert len(data) == unsigned_len + 68
    else:
        assert len(data) == -(-unsigned_len // 4096) * 4096 + 4096
    assert facts.signed_sketch_size == len(data)
    assert facts.sketch_sizes == (unsigned_len, len(data))
    assert facts.flashed_md5s == tuple(sorted({md5_hex(data[:unsigned_len]), md5_hex(data)}))
    if hash_appended:
        assert facts.sketch_sha256 == data[unsigned_len - 32 : unsigned_len].hex()
    else:
        assert facts.sketch_sha256 == hashlib.sha256(data[:unsigned_len]).hexdigest()


def test_esp32_secure_boot_v2_sector_not_where_the_bootloader_looks_is_refused() -> None:
    """The bootloader reads the signature sector at the first 4 KiB boundary after the image; a sector
    one erased sector further is not a signature to it, only bytes a device would flash."""
    image = si.build_esp32_image(chip="esp32c3", size=10_000, seed=5)
    body = image + b"\xff" * (-len(image) % 4096 + 4096)  # one spare erased sector before the signature
    with pytest.raises(ImageError) as caught:
        parse_app_image(body + si.secure_boot_v2_sector(body))
    assert caught.value.code == "trailing-data"


def test_toolchain_made_esp32c3_image() -> None:
    data = (FIXTURES / "esp32c3-app.bin").read_bytes()
    info, facts = facts_of(data)
    size = esp32_image_len(data)
    assert facts.sketch_size == size == esptool_esp32_image_len("esp32c3", data)
    assert facts.flashed_md5s == (md5_hex(data[:size]),)
    assert facts.sketch_sha256 == info.appended_sha256 == data[size - 32 : size].hex()


# ---------------------------------------------------------------------------------------------------------
# Cost: each byte hashed once per distinct flash content, digests the caller has are reused
# ---------------------------------------------------------------------------------------------------------


class _Counting:
    def __init__(self, inner: Any, counter: dict[str, int], name: str) -> None:
        self.inner, self.counter, self.name = inner, counter, name

    def update(self, data: Any) -> None:
        self.counter[self.name] += memoryview(data).nbytes
        self.inner.update(data)

    def copy(self) -> _Counting:
        return _Counting(self.inner.copy(), self.counter, self.name)

    def hexdigest(self) -> str:
        return str(self.inner.hexdigest())


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counter = {"md5": 0, "sha256": 0}

    def factory(name: str) -> Callable[..., _Counting]:
        def make(data: Any = b"") -> _Counting:
            digest = _Counting(getattr(hashlib, name)(), counter, name)
            digest.update(data)
            return digest

        return make

    monkeypatch.setattr(sketchfacts, "hashlib", SimpleNamespace(md5=factory("md5"), sha256=factory("sha256")))
    return counter


def test_esp8266_hashes_each_variant_once(hashed: dict[str, int]) -> None:
    data = si.build_esp8266_image(sketch_size=64 * 1024, seed=3)
    info = parse_app_image(data)
    size = info.image_size
    plain = device_facts(data, info)
    assert hashed["md5"] == 2 + 4 * (size - 2)
    hashed["md5"] = 0
    reused = device_facts(data, info, prefix_md5=(len(data), hashlib.md5(data).hexdigest()))
    assert size == len(data) and hashed["md5"] == 2 + 3 * (size - 2)
    assert reused == plain


def test_esp32_hashes_the_image_once_or_not_at_all(hashed: dict[str, int]) -> None:
    data = si.build_esp32_image(chip="esp32", size=50_000, seed=1, signature="secure-boot-v2")
    info = parse_app_image(data)
    facts = device_facts(data, info)
    assert (hashed["md5"], hashed["sha256"]) == (len(data), 0)  # image, then on to the signature sector
    hashed["md5"] = 0
    again = device_facts(data, info, prefix_md5=(len(data), hashlib.md5(data).digest()))
    assert hashed["md5"] == info.image_size and again == facts


def test_esp32_without_hash_reuses_the_callers_sha256(hashed: dict[str, int]) -> None:
    data = si.build_esp32_image(chip="esp32s3", size=20_000, hash_appended=False, seed=1)
    info = parse_app_image(data)
    whole_md5, whole_sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    facts = device_facts(data, info, prefix_md5=(len(data), whole_md5), prefix_sha256=(len(data), whole_sha256))
    assert hashed == {"md5": 0, "sha256": 0}
    assert facts is not None and facts.sketch_sha256 == whole_sha256 and facts.flashed_md5s == (whole_md5,)
    # A digest of another prefix is not used.
    device_facts(data, info, prefix_sha256=(len(data) - 32, hashlib.sha256(data[:-32]).digest()))
    assert hashed["sha256"] == len(data)
