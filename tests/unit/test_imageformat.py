"""otafleet.imageformat: what it accepts, what it refuses and how it says so.

Agreement with esptool on valid images is in test_sample_images.py; here the parser's own semantics:
every rejection class with its reason text and offset, corruption, and property tests."""

from __future__ import annotations

import array
import contextlib
import gzip
import hashlib
import json
import pickle
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otafleet import imageformat
from otafleet.imageformat import (
    AppDescriptor,
    ImageError,
    ImageInfo,
    Segment,
    crc32_msb_first,
    inspect_filesystem,
    parse_app_image,
)
from otafleet.models import PLATFORMS
from otafleet_local import sample_images as si


def reject(
    data: bytes | bytearray | memoryview, *, expect_chip: str | None = None, product: str | None = None
) -> ImageError:
    with pytest.raises(ImageError) as caught:
        parse_app_image(data, expect_chip=expect_chip, product=product)
    return caught.value


def esp32(**kwargs: object) -> bytes:
    options: dict[str, object] = {"size": 6000, **kwargs}
    return si.build_esp32_image(**options)  # type: ignore[arg-type]


def esp32_with_segments(segments: list[tuple[int, bytes]], *, chip: str = "esp32", entry: int = 0x40080000) -> bytes:
    return si.assemble_image(
        segments=segments,
        entry=entry,
        extended_header=si.extended_header(chip=chip, hash_appended=True),
        hash_appended=True,
    )


def descriptor(version: str = "1.2.3") -> bytes:
    return si.app_descriptor(version=version, project="p", idf_version="v5.1", elf_sha256=bytes(32))


# ---------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------


def test_platform_names_match_models() -> None:
    assert {spec.name for spec in imageformat.ESP32_CHIPS.values()} | {"esp8266"} == set(PLATFORMS)
    assert set(imageformat.LAYOUTS) == {"esp8266-arduino", "esp8266", "esp8266-gzip", "esp32-app"}


def test_esp32_image_info() -> None:
    image = esp32(chip="esp32s3", version="3.1.4", project="door", idf_version="v5.2.2")
    info = parse_app_image(image, expect_chip="esp32s3")
    assert info.chip == "esp32s3" and info.chip_id == 9 and info.layout == "esp32-app"
    assert info.app == AppDescriptor(
        version="3.1.4",
        project_name="door",
        time="12:00:00",
        date="Jan  1 2025",
        idf_version="v5.2.2",
        elf_sha256=info.app.elf_sha256 if info.app else "",
        secure_version=0,
    )
    assert info.appended_sha256 == image[-32:].hex()
    assert info.hash_appended
    assert info.segments[0] == Segment(offset=0x18, load_address=0x3C000020, length=info.segments[0].length)
    assert info.segments[0].data_offset == 0x20
    assert (info.min_chip_revision, info.max_chip_revision) == (0, 99)
    assert info.image_size == len(image) and not info.signed and info.padding == 0


def test_facts_are_flat_json_without_none() -> None:
    for info in (
        parse_app_image(esp32()),
        parse_app_image(esp32(hash_appended=False)),
        parse_app_image(si.build_esp8266_image(sketch_size=2000)),
        parse_app_image(si.build_esp8266_image(sketch_size=2000, arduino_layout=False)),
        parse_app_image(si.build_esp8266_gzip(sketch_size=2000, signed=True)),
    ):
        facts = info.facts()
        assert json.loads(json.dumps(facts)) == facts
        for key, value in facts.items():
            assert isinstance(value, str | int | bool), key
            assert not isinstance(value, float)
        assert facts["chip"] == info.chip and facts["layout"] == info.layout
        assert facts["entry"] == f"0x{info.entry:08x}"
        assert facts["segments"] == len(info.segments)
        assert isinstance(facts["signed"], bool)


def test_facts_of_an_esp32_app_name_the_build() -> None:
    facts = parse_app_image(esp32(version="7.0.0", project="lamp", idf_version="v5.1.4")).facts()
    assert {k: facts[k] for k in ("app_version", "project", "idf_version", "compile_time", "compile_date")} == {
        "app_version": "7.0.0",
        "project": "lamp",
        "idf_version": "v5.1.4",
        "compile_time": "12:00:00",
        "compile_date": "Jan  1 2025",
    }
    assert len(str(facts["elf_sha256"])) == 64
    assert facts["flash_size_bytes"] == 4 * 1024 * 1024
    esp8266_facts = parse_app_image(si.build_esp8266_image(sketch_size=2000)).facts()
    assert "app_version" not in esp8266_facts and "appended_sha256" not in esp8266_facts
    assert esp8266_facts["bootloader_segments"] == 2


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_accepts_bytes_like(wrap: type) -> None:
    image = esp32()
    assert parse_app_image(wrap(image)).chip == "esp32"


def test_accepts_views_into_bigger_buffers_and_wide_item_views() -> None:
    image = esp32()
    framed = memoryview(b"junk" + image + b"tail")[4 : 4 + len(image)]
    assert parse_app_image(framed).image_size == len(image)
    wide = memoryview(array.array("H", image))  # itemsize 2: read as bytes all the same
    assert parse_app_image(wide).appended_sha256 == image[-32:].hex()


def test_image_error_is_a_value_error_and_survives_pickling() -> None:
    error = reject(b"")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.offset, clone.code) == (error.reason, error.offset, error.code)


def test_strings_stop_at_nul_and_survive_bad_utf8() -> None:
    raw = bytearray(descriptor("1.0"))
    raw[0x10:0x30] = b"1.0\0garbage".ljust(32, b"\0")
    raw[0x30:0x50] = b"caf\xe9".ljust(32, b"\0")  # latin-1, not UTF-8
    image = esp32_with_segments([(0x3F400020, bytes(raw)), (0x3FFB0000, bytes(64))])
    info = parse_app_image(image)
    assert info.app is not None
    assert info.app.version == "1.0"
    assert info.app.project_name == "caf\ufffd"


# ---------------------------------------------------------------------------------------------------------
# Not an image at all
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "offset", "text"),
    [
        (b"", "empty", None, "the file is empty"),
        (b"\xaa\x50\x00\x00" + bytes(60), "partition-table", 0, "this is a partition table (partitions.bin"),
        (b"\x7fELF\x01\x01\x01" + bytes(57), "elf", 0, "this is an ELF file"),
        (b"UF2\n" + struct.pack("<I", 0x9E5D5157) + bytes(504), "uf2", 0, "this is a UF2 file"),
        (b":100000000C9434000C9446000C9446000C9446006A\r\n", "intel-hex", 0, "this is an Intel HEX text file"),
        (b"PK\x03\x04" + bytes(40), "archive", 0, "this is a zip archive"),
        (
            b"<html><body>404 Not Found</body></html>",
            "text",
            0,
            "this is a text file (it starts with '<html><body>'), not a binary image",
        ),
        (b"\xea\x04\x02\x20" + bytes(60), "esp8266-v2", 0, "this is an ESP8266 'v2' image (magic 0xEA"),
        (b"\xff" * 300, "bad-magic", 0, "the file starts with 0xFF (erased flash)"),
        (b"\x12\x34" + bytes(60), "bad-magic", 0, "first byte at 0x0 is 0x12, but an ESP application image starts"),
    ],
)
def test_wrong_files_are_named(data: bytes, code: str, offset: int | None, text: str) -> None:
    error = reject(data)
    assert (error.code, error.offset) == (code, offset)
    assert str(error).startswith(text)
    assert error.reason == str(error)


def test_too_short() -> None:
    error = reject(b"\xe9\x01\x02\x20\x00\x00\x10\x40" + b"\xee" * 8)
    assert (error.code, error.offset) == ("truncated", 16)
    assert str(error) == (
        "the file is only 16 bytes (it ends at 0x10): too short for an image header, which takes 24 bytes on the "
        "ESP32 family and 16 on the ESP8266"
    )
    error = reject(b"\xe9\x01\x02\x20\x00\x00\x10\x40" + b"\x00\x00\x10\x40")  # ESP8266, no segment header
    assert (error.code, error.offset) == ("truncated", 8)
    assert str(error) == "image is truncated: segment 0 header at 0x8 is cut off by the end of the file at 0xc"


@pytest.mark.parametrize(
    ("chip", "at"), [("esp32", 0x1000), ("esp32s2", 0x1000), ("esp32p4", 0x2000), ("esp32c5", 0x2000)]
)
def test_merged_image_with_padded_bootloader(chip: str, at: int) -> None:
    error = reject(si.build_merged_image(chip=chip))
    assert (error.code, error.offset) == ("merged-image", at)
    assert "this is a merged full-flash image" in str(error)
    assert f"bootloader at 0x{at:x}" in str(error)


@pytest.mark.parametrize("chip", ["esp32s3", "esp32c3", "esp32c6", "esp32h2"])
def test_merged_image_with_bootloader_at_zero(chip: str) -> None:
    error = reject(si.build_merged_image(chip=chip))
    assert (error.code, error.offset) == ("merged-image", 0x8000)
    assert str(error) == (
        f"this is a merged full-flash image for {chip} (bootloader at 0x0, partition table at 0x8000 and an "
        "application at 0x10000); upload only the application image, the part flashed at 0x10000"
    )


def test_bootloader_with_descriptor() -> None:
    error = reject(si.build_esp32_bootloader(chip="esp32c3", idf_version="v5.3"))
    assert (error.code, error.offset) == ("bootloader", 0x20)
    assert str(error) == (
        "this is an ESP-IDF second-stage bootloader for esp32c3 (bootloader descriptor at 0x20, built with IDF "
        "v5.3), not an application; upload the application .bin"
    )


def test_bootloader_without_descriptor() -> None:
    error = reject(si.build_esp32_bootloader(chip="esp32", descriptor=False))
    assert (error.code, error.offset) == ("bootloader", 0x20)
    assert str(error).startswith(
        "this looks like a second-stage bootloader for esp32: all 3 segments load into RAM and there is no "
        "app descriptor (magic 0xABCD5432) at 0x20"
    )


def test_app_without_descriptor() -> None:
    image = esp32_with_segments([(0x3F400020, b"\x11\x22\x33\x44" + bytes(252)), (0x40080000, bytes(64))])
    error = reject(image)
    assert (error.code, error.offset) == ("bad-app-descriptor", 0x20)
    assert str(error).startswith("no app descriptor at 0x20: expected magic 0xABCD5432, found 0x44332211")


def test_app_descriptor_cut_short() -> None:
    error = reject(esp32_with_segments([(0x3F400020, descriptor()[:128]), (0x40080000, bytes(64))]))
    assert (error.code, error.offset) == ("bad-app-descriptor", 0x20)
    assert "the first segment holds only 128 of its 256 bytes" in str(error)


# ---------------------------------------------------------------------------------------------------------
# Header problems
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 17, 255])
def test_absurd_segment_counts(count: int) -> None:
    image = bytearray(esp32())
    image[1] = count
    error = reject(image)
    assert (error.code, error.offset) == ("segments", 0)
    assert str(error).startswith(f"image header at 0x0 declares {count} segments")


def test_unknown_chip_id() -> None:
    image = bytearray(esp32())
    struct.pack_into("<H", image, 12, 77)
    error = reject(image)
    assert (error.code, error.offset) == ("unknown-chip", 0xC)
    assert str(error).startswith("unknown chip id 77 at 0xc: this is neither an ESP8266 image")


def test_chip_esptool_knows_but_otafleet_does_not() -> None:
    image = bytearray(esp32())
    struct.pack_into("<H", image, 12, 25)
    error = reject(image)
    assert str(error) == "the image is for esp32h21 (chip id 25 at 0xc), which otafleet does not support"
    assert error.code == "unsupported-chip"


def test_hash_appended_flag_must_be_boolean() -> None:
    image = bytearray(esp32())
    image[23] = 2
    error = reject(image)
    assert (error.code, error.offset) == ("bad-header", 0x17)
    assert "hash_appended byte at 0x17 is 0x02 but must be 0 or 1" in str(error)


def test_unknown_flash_parameters_are_reported_not_refused() -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=2000, arduino_layout=False))
    image[2] = 9
    image[3] = 0x73
    info = parse_app_image(image)
    assert (info.flash_mode, info.flash_size, info.flash_size_bytes, info.flash_freq) == (
        "unknown(9)",
        "unknown(7)",
        None,
        "unknown(3)",
    )
    assert "flash_size_bytes" not in info.facts()


@pytest.mark.parametrize(
    ("nibble", "name", "size"),
    [
        (0, "512KB", 512 << 10),
        (1, "256KB", 256 << 10),
        (2, "1MB", 1 << 20),
        (3, "2MB", 2 << 20),
        (4, "4MB", 4 << 20),
        (5, "2MB-c1", 2 << 20),
        (6, "4MB-c1", 4 << 20),
        (8, "8MB", 8 << 20),
        (9, "16MB", 16 << 20),
    ],
)
def test_esp8266_flash_size_nibble(nibble: int, name: str, size: int) -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=1000, arduino_layout=False))
    image[3] = nibble << 4
    info = parse_app_image(image)
    assert (info.flash_size, info.flash_size_bytes) == (name, size)


# ---------------------------------------------------------------------------------------------------------
# Truncation and corruption
# ---------------------------------------------------------------------------------------------------------


def test_truncated_at_several_points() -> None:
    image = esp32(hash_appended=True)
    info = parse_app_image(image)
    s2 = info.segments[2]
    checksum_at = info.image_size - 32 - 1

    error = reject(image[:0x1C])
    assert (error.code, error.offset) == ("truncated", 0x18)
    assert str(error) == "image is truncated: segment 0 header at 0x18 is cut off by the end of the file at 0x1c"

    cut = s2.data_offset + 100
    error = reject(image[:cut])
    assert (error.code, error.offset) == ("truncated", s2.offset)
    assert str(error) == (
        f"segment 2 header at 0x{s2.offset:x} declares {s2.length} bytes but only 100 bytes remain in the file"
    )

    error = reject(image[:checksum_at])
    assert (error.code, error.offset) == ("truncated", checksum_at)
    assert str(error) == (
        f"image is truncated: its checksum byte belongs at 0x{checksum_at:x} but the file ends at 0x{checksum_at:x}"
    )

    for cut in (len(image) - 1, len(image) - 31, checksum_at + 1):
        error = reject(image[:cut])
        assert (error.code, error.offset) == ("truncated", checksum_at + 1)
        assert str(error).startswith(f"the image is truncated: its SHA-256 belongs at 0x{checksum_at + 1:x}")


def test_every_prefix_of_small_images_is_refused() -> None:
    for image in (esp32(size=2048), si.build_esp8266_image(sketch_size=600, arduino_layout=False)):
        for cut in range(len(image)):
            with pytest.raises(ImageError):
                parse_app_image(image[:cut])


def test_segment_length_running_past_the_end() -> None:
    image = bytearray(esp32())
    info = parse_app_image(image)
    s1 = info.segments[1]
    struct.pack_into("<I", image, s1.offset + 4, 70000)
    error = reject(image)
    remaining = len(image) - s1.data_offset
    assert (error.code, error.offset) == ("truncated", s1.offset)
    assert str(error) == (
        f"segment 1 header at 0x{s1.offset:x} declares 70000 bytes but only {remaining} bytes remain in the file"
    )


@pytest.mark.parametrize("delta", [-8, -4, 4, 8])
def test_wrong_segment_length_is_refused(delta: int) -> None:
    for image in (esp32(), esp32(hash_appended=False), si.build_esp8266_image(sketch_size=3000)):
        data = bytearray(image)
        s = parse_app_image(image).segments[1]
        struct.pack_into("<I", data, s.offset + 4, s.length + delta)
        with pytest.raises(ImageError):
            parse_app_image(data)


@pytest.mark.parametrize("hash_appended", [True, False])
def test_bit_flip_in_segment_data_is_a_checksum_error(hash_appended: bool) -> None:
    image = bytearray(esp32(hash_appended=hash_appended))
    info = parse_app_image(image)
    image[info.segments[3].data_offset + 5] ^= 0x01
    error = reject(image)
    checksum_at = info.image_size - (33 if hash_appended else 1)
    assert (error.code, error.offset) == ("checksum", checksum_at)
    assert str(error).startswith(f"image checksum mismatch: the byte at 0x{checksum_at:x} is 0x{info.checksum:02x}")
    assert str(error).endswith("the file is corrupted or was modified after the build")


def test_bit_flip_outside_segment_data_is_a_hash_error() -> None:
    original = esp32()
    info = parse_app_image(original)
    for where in (2, 0x13):  # flash mode; a reserved byte of the extended header
        image = bytearray(original)
        image[where] ^= 0x01
        error = reject(image)
        assert (error.code, error.offset) == ("hash", info.image_size - 32)
        assert str(error) == (
            f"the SHA-256 appended at 0x{info.image_size - 32:x} does not match the image data before it; "
            "the file is corrupted or was modified after the build"
        )


def test_bit_flip_in_the_hash_itself() -> None:
    image = bytearray(esp32())
    image[-1] ^= 0x10
    assert reject(image).code == "hash"


def test_stored_checksum_wrong() -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=2000, arduino_layout=False))
    info = parse_app_image(image)
    image[info.image_size - 1] ^= 0xFF
    error = reject(image)
    assert (error.code, error.offset) == ("checksum", info.image_size - 1)


# ---------------------------------------------------------------------------------------------------------
# What may follow an image
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [esp32(), esp32(hash_appended=False), si.build_esp8266_image(sketch_size=3000)],
    ids=["esp32", "esp32-no-hash", "esp8266"],
)
def test_trailing_garbage(image: bytes) -> None:
    error = reject(image + b"\r\nDone.\r\n")
    assert (error.code, error.offset) == ("trailing-data", len(image))
    assert str(error).startswith(f"9 unexpected bytes follow the end of the image at 0x{len(image):x}")


def test_concatenated_images() -> None:
    image = esp32()
    error = reject(image + image)
    assert (error.code, error.offset) == ("trailing-data", len(image))
    assert str(error).startswith(f"another image starts at 0x{len(image):x}")


def test_partition_table_after_the_image() -> None:
    image = esp32()
    error = reject(image + si.build_partition_table())
    assert str(error).startswith(f"a partition table follows the image at 0x{len(image):x}")


def test_erased_flash_padding_to_a_sector_is_fine() -> None:
    image = esp32()
    padded = image + b"\xff" * (-len(image) % 4096)
    info = parse_app_image(padded)
    assert info.padding == len(padded) - len(image) and info.facts()["padding"] == info.padding
    assert reject(image + b"\xff" * 5).code == "trailing-data"


def test_secure_boot_signatures() -> None:
    v1 = parse_app_image(esp32(signature="secure-boot-v1"))
    assert (v1.signed, v1.signature) == (True, "secure-boot-v1")
    signed = bytearray(esp32(signature="secure-boot-v2"))
    v2 = parse_app_image(signed)
    assert (v2.signed, v2.signature, v2.facts()["signed"]) == (True, "secure-boot-v2", True)
    signed[-4096 + 100] ^= 1
    error = reject(signed)
    assert (error.code, error.offset) == ("bad-signature", len(signed) - 4096)


def test_misplaced_flash_segment() -> None:
    drom = descriptor() + bytes(32)  # data 0x20..0x140, next header at 0x140, its data at 0x148
    good = esp32_with_segments([(0x3F400020, drom), (0x400E0148, bytes(64))])
    assert parse_app_image(good).segments[1].data_offset == 0x148
    error = reject(esp32_with_segments([(0x3F400020, drom), (0x400E0150, bytes(64))]))
    assert (error.code, error.offset) == ("bad-mapping", 0x140)
    assert str(error).startswith(
        "segment 1 at 0x140 loads at 0x400e0150 but its data starts at file offset 0x148; flash-mapped segments "
        "must share the offset within a 64 KB MMU page"
    )


# ---------------------------------------------------------------------------------------------------------
# Chip expectations
# ---------------------------------------------------------------------------------------------------------


def test_expected_chip() -> None:
    image = esp32(chip="esp32c3")
    assert parse_app_image(image, expect_chip="esp32c3").chip == "esp32c3"
    error = reject(image, expect_chip="esp32s3", product="door")
    assert str(error) == "image is for esp32c3 but product 'door' is esp32s3"
    assert (error.code, error.offset) == ("wrong-chip", None)
    assert str(reject(image, expect_chip="esp32s3")) == "image is for esp32c3 but the product is esp32s3"
    esp8266 = si.build_esp8266_image(sketch_size=2000)
    assert str(reject(esp8266, expect_chip="esp32", product="x")) == "image is for esp8266 but product 'x' is esp32"
    assert str(reject(image, expect_chip="esp8266", product="x")) == "image is for esp32c3 but product 'x' is esp8266"


def test_unknown_expected_chip_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown platform 'esp32x9'") as caught:
        parse_app_image(esp32(), expect_chip="esp32x9")
    assert not isinstance(caught.value, ImageError)


# ---------------------------------------------------------------------------------------------------------
# ESP8266 specifics
# ---------------------------------------------------------------------------------------------------------


def test_arduino_layout() -> None:
    image = si.build_esp8266_image(sketch_size=4000, flash_size="1MB", flash_mode="qio")
    info = parse_app_image(image, expect_chip="esp8266")
    assert info.layout == "esp8266-arduino"
    assert [s.load_address for s in info.bootloader_segments] == [0x4010F000, 0x3FFFDD00]
    assert info.segments[0] == Segment(0x1008, 0x40201010, info.segments[0].length)
    assert (info.flash_mode, info.flash_size, info.flash_size_bytes) == ("qio", "1MB", 1 << 20)
    assert info.build_crc == struct.unpack_from("<I", image, 0x1014)[0]


def test_eboot_checksum_must_be_exact() -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=2000))
    image[0x20] ^= 0x04
    error = reject(image)
    assert error.code == "checksum"
    assert str(error).startswith("eboot bootloader image checksum mismatch: the byte at 0x")


def test_sketch_bit_flip() -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=2000))
    info = parse_app_image(image)
    image[info.segments[2].data_offset] ^= 0x40
    error = reject(image)
    assert (error.code, error.offset) == ("checksum", info.image_size - 1)
    assert str(error).startswith("sketch image checksum mismatch")


def test_build_crc_catches_what_the_checksums_do_not() -> None:
    image = bytearray(si.build_esp8266_image(sketch_size=2000))
    image[0x0F00] ^= 0x01  # eboot's 0xAA padding: no checksum covers it, the build CRC does
    error = reject(image)
    assert (error.code, error.offset) == ("crc", 0x1014)
    assert str(error).startswith("the build CRC at 0x1014 is 0x")


def test_corrupted_crc_words() -> None:
    # The sketch checksum was computed with these words zeroed, so it cannot notice; the CRC does.
    image = bytearray(si.build_esp8266_image(sketch_size=2000))
    image[0x1016] ^= 0x01
    assert reject(image).code == "crc"
    image = bytearray(si.build_esp8266_image(sketch_size=2000))
    image[0x1010] ^= 0x01  # the length word: no longer this file's length, so no CRC to trust
    assert reject(image).code == "checksum"


def test_build_crc_is_optional() -> None:
    info = parse_app_image(si.build_esp8266_image(sketch_size=2000, build_crc=False))
    assert info.build_crc is None and "build_crc" not in info.facts()


def test_eboot_without_sketch() -> None:
    image = si.build_esp8266_image(sketch_size=2000)[:0x1000]
    error = reject(image)
    assert (error.code, error.offset) == ("truncated", 0x1000)
    assert "the sketch image that belongs at 0x1000 is missing" in str(error)


def test_esp8266_signed() -> None:
    image = si.build_esp8266_image(sketch_size=2000, signed=True)
    info = parse_app_image(image)
    assert (info.signed, info.signature, info.image_size) == (True, "esp8266", len(image) - 260)
    assert reject(image[:-1]).code == "trailing-data"


def test_gzip() -> None:
    packed = si.build_esp8266_gzip(sketch_size=3000, flash_size="2MB")
    info = parse_app_image(packed, expect_chip="esp8266")
    assert (info.layout, info.flash_size, info.compressed_size) == ("esp8266-gzip", "2MB", len(packed))
    assert info.image_size == len(gzip.decompress(packed))
    assert info.facts()["compressed_size"] == len(packed)


def test_gzip_signed() -> None:
    packed = si.build_esp8266_gzip(sketch_size=3000)
    signed = packed + bytes(range(64)) + struct.pack("<I", 64)
    info = parse_app_image(signed)
    assert (info.signed, info.signature, info.compressed_size) == (True, "esp8266", len(packed))


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        (si.build_esp8266_gzip(sketch_size=3000)[:-100], "truncated", "the gzip stream is truncated"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip", "the file starts like gzip (1f 8b) but is not a valid gzip stream"),
        (
            gzip.compress(b"hello world", mtime=0),
            "gzip",
            "the gzip stream does not contain an ESP image: its content starts with 0x68, not 0xE9",
        ),
        (
            gzip.compress(b"", mtime=0),
            "gzip",
            "the gzip stream does not contain an ESP image: its content starts with nothing",
        ),
        (
            gzip.compress(si.build_esp32_image(size=3000), mtime=0),
            "gzip",
            "the gzip stream contains an ESP32-family image, but only the ESP8266 updater accepts compressed images",
        ),
        (gzip.compress(bytes(17 * 1024 * 1024), mtime=0), "too-large", "the gzip stream inflates to more than 16 MiB"),
    ],
    ids=["truncated", "not-gzip", "not-an-image", "empty", "esp32-inside", "bomb"],
)
def test_bad_gzip(data: bytes, code: str, text: str) -> None:
    error = reject(data)
    assert error.code == code
    assert str(error).startswith(text)


def test_gzip_with_broken_crc() -> None:
    packed = bytearray(si.build_esp8266_gzip(sketch_size=3000))
    packed[-6] ^= 0xFF  # the gzip trailer's CRC-32
    assert reject(packed).code == "gzip"


def test_errors_inside_gzip_say_so() -> None:
    inner = bytearray(si.build_esp8266_image(sketch_size=2000))
    inner[0x20] ^= 1
    error = reject(gzip.compress(bytes(inner), mtime=0))
    assert str(error).startswith("inside the gzip stream: eboot bootloader image checksum mismatch")


# ---------------------------------------------------------------------------------------------------------
# Filesystem images
# ---------------------------------------------------------------------------------------------------------


def test_filesystem_kinds() -> None:
    assert inspect_filesystem(si.build_littlefs_image(size=8 * 4096)) == {
        "size": 8 * 4096,
        "filesystem": "littlefs",
        "littlefs_version": "2.1",
        "block_size": 4096,
        "block_count": 8,
    }
    assert inspect_filesystem(si.build_fat_image(size=4096)) == {"size": 4096, "filesystem": "fat"}
    assert inspect_filesystem(b"\xff" * 8192) == {"size": 8192, "filesystem": "spiffs-or-unknown", "blank": True}
    assert inspect_filesystem(bytes(range(256)) * 16) == {"size": 4096, "filesystem": "spiffs-or-unknown"}


def test_filesystem_superblock_in_second_block() -> None:
    image = bytearray(si.build_littlefs_image(size=4 * 8192, block_size=8192))
    image[0:8192] = b"\xff" * 8192  # block 0 mid-erase: block 1 still holds the superblock
    facts = inspect_filesystem(image)
    assert (facts["filesystem"], facts["block_size"]) == ("littlefs", 8192)


@pytest.mark.parametrize(
    ("data", "code", "offset", "text"),
    [
        (b"", "empty", None, "the file is empty"),
        (
            si.build_esp8266_image(sketch_size=2000),
            "app-as-filesystem",
            0,
            "this is an application image; upload it under firmware/ not filesystem/",
        ),
        (
            si.build_esp8266_gzip(sketch_size=2000),
            "app-as-filesystem",
            0,
            "this is an application image; upload it under firmware/ not filesystem/",
        ),
        (
            b"\x00" * 5000,
            "size",
            4096,
            "a filesystem image must be a whole number of 4096-byte flash sectors, but "
            "this one is 5000 bytes (904 bytes past the last full sector at 0x1000)",
        ),
        (b"\x7fELF" + bytes(4092), "elf", 0, "this is an ELF file"),
    ],
    ids=["empty", "app", "gzip-app", "size", "elf"],
)
def test_filesystem_rejections(data: bytes, code: str, offset: int | None, text: str) -> None:
    with pytest.raises(ImageError) as caught:
        inspect_filesystem(data)
    assert (caught.value.code, caught.value.offset) == (code, offset)
    assert str(caught.value).startswith(text)


# ---------------------------------------------------------------------------------------------------------
# Helpers and speed
# ---------------------------------------------------------------------------------------------------------


def crc32_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
@settings(max_examples=200, deadline=None)
def test_crc32_msb_first_matches_the_bitwise_definition(data: bytes, split: int) -> None:
    assert crc32_msb_first([data[:split], memoryview(data)[split:]]) == crc32_bitwise(data)


def test_crc32_msb_first_check_value() -> None:
    assert crc32_msb_first([b"123456789"]) == 0x0376E6E7  # CRC-32/MPEG-2 check value
    assert crc32_msb_first([]) == 0xFFFFFFFF == zlib.crc32(b"") ^ 0xFFFFFFFF


def test_large_images_parse_quickly() -> None:
    image = si.build_esp32_image(chip="esp32s3", size=8 * 1024 * 1024)
    started = time.perf_counter()
    info = parse_app_image(image)
    assert time.perf_counter() - started < 2.0
    assert info.image_size == len(image)


# ---------------------------------------------------------------------------------------------------------
# Properties: nothing but ImageError, ever, and quickly
# ---------------------------------------------------------------------------------------------------------

BASES: tuple[bytes, ...] = (
    si.build_esp32_image(size=2048, seed=1),
    si.build_esp32_image(chip="esp32c6", size=2048, hash_appended=False, seed=2),
    si.build_esp32_image(chip="esp32c3", size=2048, signature="secure-boot-v2"),
    si.build_esp8266_image(sketch_size=600, seed=3),
    si.build_esp8266_image(sketch_size=600, arduino_layout=False, signed=True),
    si.build_esp8266_gzip(sketch_size=600),
    si.build_esp32_bootloader(chip="esp32s3"),
)

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("word"), st.integers(min_value=0), st.integers(min_value=0, max_value=0xFFFFFFFF)),
)


def mutate(image: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(image)
    for kind, where, value in steps:
        at = where % (len(data) + 1)
        if kind == "set" and at < len(data):
            data[at] = value
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif kind == "delete":
            del data[at : at + value]
        elif kind == "word" and at + 4 <= len(data):
            struct.pack_into("<I", data, at, value)
    return bytes(data)


def parse_or_refuse(data: bytes) -> None:
    started = time.perf_counter()
    try:
        info = parse_app_image(data)
    except ImageError as error:
        assert error.reason and str(error) == error.reason
        assert error.offset is None or 0 <= error.offset <= max(len(data), 0x10000)
    else:
        assert isinstance(info, ImageInfo)
        json.dumps(info.facts())
    with contextlib.suppress(ImageError):
        inspect_filesystem(data)
    assert time.perf_counter() - started < 5.0


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_raise_only_image_error(data: bytes) -> None:
    parse_or_refuse(data)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_after_a_magic_raise_only_image_error(tail: bytes) -> None:
    parse_or_refuse(b"\xe9" + tail)
    parse_or_refuse(b"\xe9\x03\x02\x20" + tail)


@given(st.sampled_from(BASES), st.lists(mutation, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_images_raise_only_image_error(base: bytes, steps: list[tuple[str, int, int]]) -> None:
    parse_or_refuse(mutate(base, steps))


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
@settings(max_examples=300, deadline=None)
def test_any_byte_change_in_a_hashed_image_is_refused(where: int, xor: int) -> None:
    image = bytearray(BASES[0])
    image[where % len(image)] ^= xor
    with pytest.raises(ImageError):
        parse_app_image(image)


def test_prefix_sha256_spares_a_pass_but_is_still_checked() -> None:
    image = si.build_esp32_image(chip="esp32s3", version="1.0.0")
    n = len(image) - 32
    good = hashlib.sha256(image[:n]).digest()
    info = parse_app_image(image, expect_chip="esp32s3", prefix_sha256=(n, good))
    assert info.appended_sha256 == image[-32:].hex()
    with pytest.raises(ImageError) as caught:
        parse_app_image(image, expect_chip="esp32s3", prefix_sha256=(n, bytes(32)))
    assert caught.value.code == "hash"
    # a digest for another length is ignored, not trusted
    assert parse_app_image(image, prefix_sha256=(n - 1, bytes(32))).chip == "esp32s3"
