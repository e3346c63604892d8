"""The sample-image builder against esptool, the independent parser: every image the builder makes is one
esptool accepts (checksum and hash valid), and otafleet.imageformat reports the same facts esptool does.
Also the two toolchain-made fixture images, and corruptions both parsers must notice."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from otafleet.imageformat import ImageError, ImageInfo, inspect_filesystem, parse_app_image
from otafleet_local import sample_images as si

pytest.importorskip("esptool")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
SEGMENT_ROW = re.compile(r"^\s*(\d+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")

EsptoolInfo = dict[str, object]


@pytest.fixture
def esptool_info(tmp_path: Path) -> Callable[..., EsptoolInfo]:
    """Run `esptool image-info` on an image and collect its `Key: value` lines and segment table.
    esptool exits 0 for a bad checksum or hash, so validity is read from the text."""

    def run(data: bytes, chip: str | None = None) -> EsptoolInfo:
        path = tmp_path / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
        path.write_bytes(data)
        command = [sys.executable, "-m", "esptool", *(["--chip", chip] if chip else []), "image-info", str(path)]
        env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        fields: EsptoolInfo = {}
        segments: list[tuple[int, int, int]] = []
        for line in done.stdout.splitlines():
            row = SEGMENT_ROW.match(line)
            if row:
                segments.append((int(row[2], 16), int(row[3], 16), int(row[4], 16)))
                continue
            key, sep, value = line.partition(": ")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        fields["segment rows"] = segments
        fields["output"] = done.stdout + done.stderr
        return fields

    return run


def esptool_chip_name(chip: str) -> str:
    return chip.upper() if chip in ("esp32", "esp8266") else f"ESP32-{chip[5:].upper()}"


def assert_header_agrees(info: ImageInfo, tool: EsptoolInfo, *, offset_shift: int = 0) -> None:
    assert int(str(tool["Entry point"]), 16) == info.entry
    assert int(str(tool["Segments"])) == len(info.segments)
    assert tool["segment rows"] == [(s.length, s.load_address, s.offset - offset_shift) for s in info.segments]
    assert tool["Flash size"] == info.flash_size
    assert tool["Flash freq"] == info.flash_freq
    assert tool["Flash mode"] == info.flash_mode.upper()


def assert_esp32_agrees(info: ImageInfo, tool: EsptoolInfo) -> None:
    assert tool["Detected image type"] == esptool_chip_name(info.chip)
    assert_header_agrees(info, tool)
    assert tool["Chip ID"] == f"{info.chip_id} ({esptool_chip_name(info.chip)})"
    facts = info.facts()
    assert str(tool["Minimal chip revision"]).startswith(f"{facts['min_chip_revision']},")
    assert tool["Maximal chip revision"] == facts["max_chip_revision"]
    assert tool["Checksum"] == f"0x{info.checksum:02x} (valid)"
    if info.appended_sha256 is None:
        assert "Validation hash" not in tool
    else:
        assert tool["Validation hash"] == f"{info.appended_sha256} (valid)"
    assert info.app is not None
    assert tool["Project name"] == info.app.project_name
    assert tool["App version"] == info.app.version
    assert tool["Compile time"] == f"{info.app.date} {info.app.time}"
    assert tool["ELF file SHA256"] == info.app.elf_sha256
    assert tool["ESP-IDF"] == info.app.idf_version
    assert tool["Secure version"] == str(info.app.secure_version)


# ---------------------------------------------------------------------------------------------------------
# ESP32 family
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_appended", [True, False], ids=["hash", "no-hash"])
@pytest.mark.parametrize("chip", si.ESP32_FAMILY)
def test_esp32_family_images_agree_with_esptool(
    chip: str, hash_appended: bool, esptool_info: Callable[..., EsptoolInfo]
) -> None:
    image = si.build_esp32_image(
        chip=chip, version=f"2.{len(chip)}.0", project=f"p-{chip}", hash_appended=hash_appended, seed=3
    )
    info = parse_app_image(image, expect_chip=chip)
    assert info.layout == "esp32-app"
    assert info.app is not None and info.app.version == f"2.{len(chip)}.0"
    assert info.image_size == len(image)
    assert_esp32_agrees(info, esptool_info(image))


@pytest.mark.parametrize(
    ("flash_mode", "flash_size", "flash_freq"),
    [("qio", "16MB", "80m"), ("qout", "2MB", "20m"), ("dout", "1MB", "26m"), ("dio", "128MB", "40m")],
)
@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
def test_esp32_flash_parameters_agree_with_esptool(
    chip: str, flash_mode: str, flash_size: str, flash_freq: str, esptool_info: Callable[..., EsptoolInfo]
) -> None:
    image = si.build_esp32_image(
        chip=chip, flash_mode=flash_mode, flash_size=flash_size, flash_freq=flash_freq, size=4096
    )
    info = parse_app_image(image)
    assert (info.flash_mode, info.flash_size, info.flash_freq) == (flash_mode, flash_size, flash_freq)
    assert_esp32_agrees(info, esptool_info(image))


def test_large_esp32_image_agrees_with_esptool(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = si.build_esp32_image(chip="esp32s3", size=1_500_000, version="9.9.9-rc.1+build.7", seed=11)
    info = parse_app_image(image)
    assert len(image) > 1_400_000
    assert_esp32_agrees(info, esptool_info(image))


def test_signed_esp32_images_keep_esptool_valid(esptool_info: Callable[..., EsptoolInfo]) -> None:
    for scheme in ("secure-boot-v1", "secure-boot-v2"):
        image = si.build_esp32_image(chip="esp32c3", signature=scheme)
        info = parse_app_image(image)
        assert (info.signed, info.signature) == (True, scheme)
        assert_esp32_agrees(info, esptool_info(image))


def test_descriptor_fields_and_secure_version(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = si.build_esp32_image(
        chip="esp32c6",
        version="v10.20.30-beta",
        project="door-controller",
        idf_version="v5.3.1-dirty",
        secure_version=7,
        min_rev_full=101,
    )
    info = parse_app_image(image)
    assert info.app is not None
    assert (info.app.version, info.app.project_name, info.app.idf_version) == (
        "v10.20.30-beta",
        "door-controller",
        "v5.3.1-dirty",
    )
    assert info.app.secure_version == 7
    assert info.facts()["min_chip_revision"] == "v1.1"
    assert_esp32_agrees(info, esptool_info(image))


def test_builder_is_deterministic_and_versions_differ() -> None:
    a = si.build_esp32_image(version="1.0.0")
    assert a == si.build_esp32_image(version="1.0.0")
    b = si.build_esp32_image(version="1.0.1")
    assert a != b
    # Not just the descriptor: the segment data differs too, as it would between two builds.
    assert a[0x200:0x1200] != b[0x200:0x1200]
    assert si.build_esp8266_image(version="1") != si.build_esp8266_image(version="2")
    assert si.build_esp8266_image(seed=1) == si.build_esp8266_image(seed=1)


def test_builder_refuses_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        si.build_esp32_image(version="x" * 32)


# ---------------------------------------------------------------------------------------------------------
# ESP8266
# ---------------------------------------------------------------------------------------------------------


def crc32_reference(data: bytes) -> int:
    """Bit by bit, as the ESP8266 core's crc32() does: MSB first, polynomial 0x04C11DB7, no final XOR."""
    crc = 0xFFFFFFFF
    for byte in data:
        for mask in (0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01):
            bit = bool(crc & 0x80000000) != bool(byte & mask)
            crc = (crc << 1) & 0xFFFFFFFF
            if bit:
                crc ^= 0x04C11DB7
    return crc


# The "-c1" variants differ from the plain sizes only in where the SDK keeps its config sectors.
ESP8266_FLASH_BYTES = {
    "256KB": 256 * 1024,
    "512KB": 512 * 1024,
    "1MB": 1 << 20,
    "2MB": 2 << 20,
    "2MB-c1": 2 << 20,
    "4MB": 4 << 20,
    "4MB-c1": 4 << 20,
    "8MB": 8 << 20,
    "16MB": 16 << 20,
}


@pytest.mark.parametrize("arduino_layout", [True, False], ids=["arduino", "plain"])
@pytest.mark.parametrize("flash_size", list(ESP8266_FLASH_BYTES))
def test_esp8266_flash_sizes_agree_with_esptool(
    flash_size: str, arduino_layout: bool, esptool_info: Callable[..., EsptoolInfo]
) -> None:
    image = si.build_esp8266_image(sketch_size=6000, flash_size=flash_size, arduino_layout=arduino_layout)
    info = parse_app_image(image, expect_chip="esp8266")
    tool = esptool_info(image)
    assert tool["Detected image type"] == "ESP8266"
    assert info.flash_size == flash_size
    assert info.flash_size_bytes == ESP8266_FLASH_BYTES[flash_size]
    if arduino_layout:
        # esptool reads only the first image of the file: eboot.
        assert info.layout == "esp8266-arduino"
        assert tool["segment rows"] == [(s.length, s.load_address, s.offset) for s in info.bootloader_segments]
        assert str(tool["Checksum"]).endswith("(valid)")
        assert tool["Flash size"] == info.flash_size
    else:
        assert info.layout == "esp8266"
        assert_header_agrees(info, tool)
        assert tool["Checksum"] == f"0x{info.checksum:02x} (valid)"


@pytest.mark.parametrize("flash_freq", ["80m", "40m", "26m", "20m"])
@pytest.mark.parametrize("flash_mode", ["qio", "qout", "dio", "dout"])
def test_esp8266_sketch_agrees_with_esptool(
    flash_mode: str, flash_freq: str, esptool_info: Callable[..., EsptoolInfo]
) -> None:
    image = si.build_esp8266_image(sketch_size=5000, flash_mode=flash_mode, flash_freq=flash_freq, seed=2)
    info = parse_app_image(image)
    assert (info.flash_mode, info.flash_freq) == (flash_mode, flash_freq)
    sketch = esptool_info(image[si.ARDUINO_SKETCH_OFFSET :], chip="esp8266")
    assert_header_agrees(info, sketch, offset_shift=si.ARDUINO_SKETCH_OFFSET)
    # elf2bin patches the CRC words into the first segment after computing the checksum, so esptool
    # (rightly) finds the sketch checksum invalid; it matches once those words are zeroed again.
    assert str(sketch["Checksum"]).startswith(f"0x{info.checksum:02x} (invalid - calculated")
    assert info.build_crc is not None
    zeroed = bytearray(image)
    zeroed[si.ARDUINO_CRC_OFFSET : si.ARDUINO_CRC_OFFSET + 8] = bytes(8)
    assert esptool_info(bytes(zeroed[si.ARDUINO_SKETCH_OFFSET :]), chip="esp8266")["Checksum"] == (
        f"0x{info.checksum:02x} (valid)"
    )
    assert struct.unpack_from("<II", image, si.ARDUINO_CRC_OFFSET) == (len(image), info.build_crc)
    assert crc32_reference(bytes(zeroed)) == info.build_crc


def test_esp8266_sketch_without_build_crc_is_plainly_valid(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = si.build_esp8266_image(sketch_size=5000, build_crc=False)
    info = parse_app_image(image)
    assert info.build_crc is None
    sketch = esptool_info(image[si.ARDUINO_SKETCH_OFFSET :], chip="esp8266")
    assert sketch["Checksum"] == f"0x{info.checksum:02x} (valid)"


def test_esp8266_gzip_and_signed_images() -> None:
    plain = si.build_esp8266_image(sketch_size=20000, seed=4)
    packed = si.build_esp8266_gzip(sketch_size=20000, seed=4)
    assert gzip.decompress(packed) == plain
    info = parse_app_image(packed)
    assert info.layout == "esp8266-gzip"
    assert info.compressed_size == len(packed)
    assert info.segments == parse_app_image(plain).segments
    signed = parse_app_image(si.build_esp8266_image(signed=True))
    assert (signed.signed, signed.signature) == (True, "esp8266")


# ---------------------------------------------------------------------------------------------------------
# Negative-test builders: real-looking bootloaders, partition tables, merged images
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
def test_bootloader_builder_agrees_with_esptool(chip: str, esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = si.build_esp32_bootloader(chip=chip, idf_version="v5.2.1")
    tool = esptool_info(image)
    assert tool["Detected image type"] == esptool_chip_name(chip)
    assert str(tool["Checksum"]).endswith("(valid)")
    assert "Application Information" not in str(tool["output"])
    if chip == "esp32":  # esptool reads the last DRAM segment; on the ESP32 that is the descriptor's
        assert tool["ESP-IDF"] == "v5.2.1"
    with pytest.raises(ImageError) as caught:
        parse_app_image(image)
    assert caught.value.code == "bootloader"


def test_partition_table_builder_is_well_formed() -> None:
    table = si.build_partition_table()
    assert len(table) == 0xC00
    entries = len(si.DEFAULT_PARTITIONS)
    for index, (label, kind, subtype, offset, size) in enumerate(si.DEFAULT_PARTITIONS):
        magic, k, s, o, n, name, flags = struct.unpack_from("<2sBBII16sI", table, index * 32)
        assert (magic, k, s, o, n, name.rstrip(b"\0").decode(), flags) == (
            b"\xaa\x50",
            kind,
            subtype,
            offset,
            size,
            label,
            0,
        )
    md5_entry = table[entries * 32 : entries * 32 + 32]
    assert md5_entry[:16] == b"\xeb\xeb" + b"\xff" * 14
    assert md5_entry[16:] == hashlib.md5(table[: entries * 32]).digest()


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c6", "esp32p4"])
def test_merged_image_parts_are_valid(chip: str, esptool_info: Callable[..., EsptoolInfo]) -> None:
    app = si.build_esp32_image(chip=chip, size=8000)
    merged = si.build_merged_image(chip=chip, app=app)
    assert merged[0x10000:] == app
    assert merged[0x8000:0x8002] == b"\xaa\x50"
    boot_at = si.ESP32_MEMORY[chip].bootloader_offset
    bootloader = si.build_esp32_bootloader(chip=chip)
    assert merged[boot_at : boot_at + len(bootloader)] == bootloader
    assert str(esptool_info(bootloader)["Checksum"]).endswith("(valid)")
    with pytest.raises(ImageError) as caught:
        parse_app_image(merged)
    assert caught.value.code == "merged-image"


def test_filesystem_builders() -> None:
    assert inspect_filesystem(si.build_littlefs_image(size=32768))["filesystem"] == "littlefs"
    assert inspect_filesystem(si.build_fat_image())["filesystem"] == "fat"


# ---------------------------------------------------------------------------------------------------------
# Toolchain-made fixtures (see tests/fixtures/images/README.md)
# ---------------------------------------------------------------------------------------------------------


def test_real_esp32c3_image(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = (FIXTURES / "esp32c3-app.bin").read_bytes()
    info = parse_app_image(image, expect_chip="esp32c3")
    assert_esp32_agrees(info, esptool_info(image))
    assert info.app is not None
    assert (info.app.project_name, info.app.version) == ("otafleet-fixture", "0.1.0")
    assert info.app.elf_sha256.startswith("92ccf0c5")
    # esptool inserted a zero-address padding segment to bring the flash code to its MMU-page offset.
    assert [s.load_address for s in info.segments].count(0) == 1
    assert info.appended_sha256 == hashlib.sha256(image[:-32]).hexdigest()


def test_real_esp8266_image(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = (FIXTURES / "esp8266-plain.bin").read_bytes()
    info = parse_app_image(image, expect_chip="esp8266")
    tool = esptool_info(image)
    assert tool["Detected image type"] == "ESP8266"
    assert_header_agrees(info, tool)
    assert tool["Checksum"] == f"0x{info.checksum:02x} (valid)"
    assert (info.layout, info.flash_mode, info.flash_size, info.flash_freq) == ("esp8266", "dout", "1MB", "26m")


# ---------------------------------------------------------------------------------------------------------
# Corruption: where esptool reports a bad checksum or hash, the parser refuses the image
# ---------------------------------------------------------------------------------------------------------


def test_bit_flip_in_segment_data(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = bytearray(si.build_esp32_image(chip="esp32s2", size=6000))
    info = parse_app_image(bytes(image))
    target = info.segments[2].data_offset + 17
    image[target] ^= 0x08
    tool = esptool_info(bytes(image))
    assert "invalid - calculated" in str(tool["Checksum"])
    assert str(tool["Validation hash"]).endswith("(invalid)")
    with pytest.raises(ImageError) as caught:
        parse_app_image(bytes(image))
    assert caught.value.code == "checksum"


def test_bit_flip_outside_segment_data(esptool_info: Callable[..., EsptoolInfo]) -> None:
    image = bytearray(si.build_esp32_image(chip="esp32c3", size=6000))
    image[2] = 0x03  # flash mode byte: not covered by the checksum, covered by the hash
    tool = esptool_info(bytes(image))
    assert str(tool["Checksum"]).endswith("(valid)")
    assert str(tool["Validation hash"]).endswith("(invalid)")
    with pytest.raises(ImageError) as caught:
        parse_app_image(bytes(image))
    assert caught.value.code == "hash"
