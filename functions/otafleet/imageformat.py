"""ESP8266 / ESP32 firmware image parsing: what an uploaded `.bin` is, and whether a device could flash it.

Pure functions over a bytes-like buffer (no I/O, stdlib only). Large regions are never copied: the buffer
is read through a memoryview, hashes and checksums are computed over slices of it.

Image layout (Espressif "v1" image, read by the ROM or the second-stage bootloader):

    0x00  u8  magic 0xE9          0x01  u8 segment count       0x02  u8 flash mode
    0x03  u8  flash size (high nibble) | flash frequency (low nibble)
    0x04  u32 entry point
    ESP32 family only, a 16-byte extended header:
    0x08  u8  wp pin   0x09..0x0B  SPI drive strengths   0x0C u16 chip id   0x0E u8 legacy min revision
    0x0F  u16 min revision (major*100+minor)  0x11 u16 max revision  0x13..0x16 reserved  0x17 u8 hash_appended
    then `count` segments, each an 8-byte header (u32 load address, u32 length) followed by its data;
    zero padding so that the next byte is the last of a 16-byte block, which holds the XOR checksum of all
    segment data (seed 0xEF); ESP32 family: if hash_appended, a SHA-256 of everything before it.

ESP32 applications carry an `esp_app_desc_t` (magic 0xABCD5432) at the start of their first segment, which
is file offset 0x20. An Arduino ESP8266 `.bin` is the eboot bootloader image padded to 0x1000 followed by
the sketch image; its build tool stores the file length and a CRC-32 of the whole file in the first eight
bytes of the sketch's first segment (file offset 0x1010) *after* computing the sketch's XOR checksum.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

# ---------------------------------------------------------------------------------------------------------
# Constants of the format
# ---------------------------------------------------------------------------------------------------------

IMAGE_MAGIC: Final = 0xE9
ESP8266_V2_MAGIC: Final = 0xEA
CHECKSUM_SEED: Final = 0xEF
APP_DESC_MAGIC: Final = 0xABCD5432
BOOTLOADER_DESC_MAGIC: Final = 0x50
APP_DESC_OFFSET: Final = 0x20
APP_DESC_SIZE: Final = 256
ESP32_HEADER_SIZE: Final = 24
ESP8266_HEADER_SIZE: Final = 8
SEGMENT_HEADER_SIZE: Final = 8
SHA256_SIZE: Final = 32
MAX_SEGMENTS: Final = 16
FLASH_SECTOR: Final = 4096
# An Arduino ESP8266 sketch starts here, after eboot; the build's CRC words follow its two headers.
ARDUINO_SKETCH_OFFSET: Final = 0x1000
ARDUINO_CRC_OFFSET: Final = ARDUINO_SKETCH_OFFSET + ESP8266_HEADER_SIZE + SEGMENT_HEADER_SIZE
# The ESP8266 updater can decompress gzip images; refuse anything that inflates beyond any real flash.
MAX_DECOMPRESSED: Final = 16 * 1024 * 1024
PARTITION_MAGIC: Final = b"\xaa\x50"
PARTITION_TABLE_OFFSET: Final = 0x8000
APP_PARTITION_OFFSET: Final = 0x10000
SECURE_BOOT_V2_BLOCK_SIZE: Final = 1216
SECURE_BOOT_V1_TRAILER: Final = 4 + 64
# arduino-esp32 >= 3.3 signed OTA (tools/bin_signing.py): the signature, zero-padded to this size, follows
# the image; the updater hashes everything before it (Updater.cpp: `_signatureSize = 512`).
ARDUINO_ESP32_SIGNATURE_SIZE: Final = 512

FLASH_MODES: Final[dict[int, str]] = {0: "qio", 1: "qout", 2: "dio", 3: "dout"}

ESP8266_FLASH_SIZES: Final[dict[int, str]] = {
    0x0: "512KB",
    0x1: "256KB",
    0x2: "1MB",
    0x3: "2MB",
    0x4: "4MB",
    0x5: "2MB-c1",
    0x6: "4MB-c1",
    0x8: "8MB",
    0x9: "16MB",
}
ESP32_FLASH_SIZES: Final[dict[int, str]] = {
    0x0: "1MB",
    0x1: "2MB",
    0x2: "4MB",
    0x3: "8MB",
    0x4: "16MB",
    0x5: "32MB",
    0x6: "64MB",
    0x7: "128MB",
}

_KB = 1024
_MB = 1024 * 1024
FLASH_SIZE_BYTES: Final[dict[str, int]] = {
    "256KB": 256 * _KB,
    "512KB": 512 * _KB,
    "1MB": _MB,
    "2MB": 2 * _MB,
    "2MB-c1": 2 * _MB,
    "4MB": 4 * _MB,
    "4MB-c1": 4 * _MB,
    "8MB": 8 * _MB,
    "16MB": 16 * _MB,
    "32MB": 32 * _MB,
    "64MB": 64 * _MB,
    "128MB": 128 * _MB,
}

_FREQ_CLASSIC: Final[dict[int, str]] = {0xF: "80m", 0x0: "40m", 0x1: "26m", 0x2: "20m"}


@dataclass(frozen=True)
class ChipSpec:
    """What the parser needs to know about one ESP32-family chip."""

    name: str
    chip_id: int
    # Address windows the MMU maps onto flash (instruction and data); everything else is RAM.
    flash_windows: tuple[tuple[int, int], ...]
    flash_freqs: dict[int, str]
    # Where the second-stage bootloader sits in flash, i.e. how a merged image starts.
    bootloader_offset: int

    def is_flash_mapped(self, address: int) -> bool:
        return any(lo <= address < hi for lo, hi in self.flash_windows)


# Values taken from esptool's target definitions (IMAGE_CHIP_ID, IROM/DROM map, FLASH_FREQUENCY,
# BOOTLOADER_FLASH_OFFSET). On the C6 esptool encodes both 80m and 40m as 0 and prints the first: 80m.
ESP32_CHIPS: Final[dict[int, ChipSpec]] = {
    spec.chip_id: spec
    for spec in (
        ChipSpec("esp32", 0, ((0x3F400000, 0x3F800000), (0x400D0000, 0x40400000)), _FREQ_CLASSIC, 0x1000),
        ChipSpec("esp32s2", 2, ((0x3F000000, 0x3F3F0000), (0x40080000, 0x40B80000)), _FREQ_CLASSIC, 0x1000),
        ChipSpec("esp32c3", 5, ((0x3C000000, 0x3C800000), (0x42000000, 0x42800000)), _FREQ_CLASSIC, 0x0),
        ChipSpec("esp32s3", 9, ((0x3C000000, 0x3E000000), (0x42000000, 0x44000000)), _FREQ_CLASSIC, 0x0),
        ChipSpec(
            "esp32c2",
            12,
            ((0x3C000000, 0x3C400000), (0x42000000, 0x42400000)),
            {0xF: "60m", 0x0: "30m", 0x1: "20m", 0x2: "15m"},
            0x0,
        ),
        ChipSpec("esp32c6", 13, ((0x42000000, 0x43000000),), {0x0: "80m", 0x2: "20m"}, 0x0),
        ChipSpec(
            "esp32h2",
            16,
            ((0x42000000, 0x43000000),),
            {0xF: "48m", 0x0: "24m", 0x1: "16m", 0x2: "12m"},
            0x0,
        ),
        ChipSpec("esp32p4", 18, ((0x40000000, 0x4C000000),), _FREQ_CLASSIC, 0x2000),
        ChipSpec("esp32c61", 20, ((0x42000000, 0x44000000),), {0xF: "80m", 0x0: "40m", 0x2: "20m"}, 0x0),
        ChipSpec("esp32c5", 23, ((0x42000000, 0x44000000),), {0xF: "80m", 0x0: "40m", 0x2: "20m"}, 0x2000),
    )
}
CHIP_IDS: Final[dict[str, int]] = {spec.name: chip_id for chip_id, spec in ESP32_CHIPS.items()}
# Chips esptool knows that otafleet has no platform for: named in the error instead of "unknown".
UNSUPPORTED_CHIP_IDS: Final[dict[int, str]] = {25: "esp32h21", 28: "esp32h4", 31: "esp32e22", 32: "esp32s31"}

LAYOUTS: Final = ("esp8266-arduino", "esp8266", "esp8266-gzip", "esp32-app")


# ---------------------------------------------------------------------------------------------------------
# Results and errors
# ---------------------------------------------------------------------------------------------------------


class ImageError(ValueError):
    """The upload is not a flashable application image (or filesystem image).

    `reason` is a complete sentence for a release engineer; `offset` is the file offset the problem was found
    at, when there is one (it is also named, in hex, inside `reason`); `code` is a short stable identifier
    for programs (metrics, tests, API answers).
    """

    def __init__(self, reason: str, offset: int | None = None, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.code = code

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, int | None, str]]:
        # Keep the extra attributes when the error crosses a process boundary.
        return (type(self), (self.reason, self.offset, self.code))


@dataclass(frozen=True)
class Segment:
    """One image segment. `offset` is the file offset of its 8-byte header (as `esptool image-info` prints
    it); the data follows at `data_offset`."""

    offset: int
    load_address: int
    length: int

    @property
    def data_offset(self) -> int:
        return self.offset + SEGMENT_HEADER_SIZE


@dataclass(frozen=True)
class AppDescriptor:
    """The ESP-IDF `esp_app_desc_t` at file offset 0x20 of an ESP32-family application."""

    version: str
    project_name: str
    time: str
    date: str
    idf_version: str
    elf_sha256: str
    secure_version: int
    # log2 of the MMU page size the app was linked for (IDF >= 5.1), 0 when not recorded.
    mmu_page_size_log2: int = 0


@dataclass(frozen=True)
class ImageInfo:
    chip: str
    layout: str
    entry: int
    segments: tuple[Segment, ...]
    flash_mode: str
    flash_size: str
    flash_size_bytes: int | None
    flash_freq: str
    checksum: int
    appended_sha256: str | None = None
    app: AppDescriptor | None = None
    signed: bool = False
    chip_id: int | None = None
    min_chip_revision: int | None = None
    max_chip_revision: int | None = None
    # Arduino ESP8266 layout: the eboot image's segments (the sketch's are in `segments`).
    bootloader_segments: tuple[Segment, ...] = ()
    # Bytes of the image proper: up to its checksum / appended hash, without signature or padding.
    # For gzip uploads this is the decompressed size.
    image_size: int = 0
    # "esp8266" (Arduino signing: signature + u32 length), "arduino-esp32" (a 512-byte signature block),
    # "secure-boot-v1" or "secure-boot-v2". Recognised by shape only: signatures.py verifies them.
    signature: str | None = None
    # Arduino ESP8266 builds since core 2.7: the CRC-32 the sketch can check with ESP.checkFlashCRC().
    build_crc: int | None = None
    # Trailing 0xFF bytes (erased flash) that round the file up to whole flash sectors.
    padding: int = 0
    compressed_size: int | None = None

    @property
    def hash_appended(self) -> bool:
        return self.appended_sha256 is not None

    def facts(self) -> dict[str, object]:
        """A flat, JSON- and DynamoDB-friendly summary: str / int / bool values only, no None."""
        out: dict[str, object] = {
            "chip": self.chip,
            "layout": self.layout,
            "entry": f"0x{self.entry:08x}",
            "segments": len(self.segments),
            "flash_mode": self.flash_mode,
            "flash_size": self.flash_size,
            "flash_freq": self.flash_freq,
            "checksum": f"0x{self.checksum:02x}",
            "image_size": self.image_size,
            "signed": self.signed,
        }
        optional: dict[str, object | None] = {
            "flash_size_bytes": self.flash_size_bytes,
            "chip_id": self.chip_id,
            "min_chip_revision": _revision(self.min_chip_revision),
            "max_chip_revision": _revision(self.max_chip_revision),
            "appended_sha256": self.appended_sha256,
            "signature": self.signature,
            "build_crc": None if self.build_crc is None else f"0x{self.build_crc:08x}",
            "bootloader_segments": len(self.bootloader_segments) or None,
            "padding": self.padding or None,
            "compressed_size": self.compressed_size,
        }
        if self.app is not None:
            optional.update(
                app_version=self.app.version,
                project=self.app.project_name,
                idf_version=self.app.idf_version,
                compile_time=self.app.time,
                compile_date=self.app.date,
                elf_sha256=self.app.elf_sha256,
                secure_version=self.app.secure_version,
            )
        out.update({key: value for key, value in optional.items() if value is not None})
        return out


def _revision(full: int | None) -> str | None:
    return None if full is None else f"v{full // 100}.{full % 100}"


# ---------------------------------------------------------------------------------------------------------
# Small helpers over memoryviews
# ---------------------------------------------------------------------------------------------------------

Buffer = bytes | bytearray | memoryview

_CHUNK = 64 * 1024
_FF_CHUNK = b"\xff" * _CHUNK
# Bit-reversal of every byte value: turns the stdlib's reflected CRC-32 into the MSB-first one.
_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _as_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _xor_bytes(views: Iterable[memoryview], seed: int = 0) -> int:
    """XOR of every byte, computed on big integers so that megabytes take milliseconds, not seconds."""
    acc = 0
    for view in views:
        for start in range(0, len(view), _CHUNK):
            # Every chunk is byte-aligned at bit 0, so XOR-ing the integers XORs byte lanes together.
            acc ^= int.from_bytes(view[start : start + _CHUNK], "little")
    width = _CHUNK
    while width > 1:
        half = (width + 1) // 2
        acc = (acc >> (8 * half)) ^ (acc & ((1 << (8 * half)) - 1))
        width = half
    return acc ^ seed


def _all_equal(view: memoryview, value: int) -> bool:
    block = _FF_CHUNK if value == 0xFF else bytes([value]) * _CHUNK
    for start in range(0, len(view), _CHUNK):
        piece = view[start : start + _CHUNK]
        if piece != block[: len(piece)]:
            return False
    return True


def _u32(view: memoryview, offset: int) -> int:
    value: int = struct.unpack_from("<I", view, offset)[0]
    return value


def _u16(view: memoryview, offset: int) -> int:
    value: int = struct.unpack_from("<H", view, offset)[0]
    return value


def _cstring(view: memoryview) -> str:
    raw = view.tobytes()  # at most 32 bytes
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def crc32_msb_first(pieces: Iterable[memoryview | bytes]) -> int:
    """CRC-32 as the ESP8266 Arduino core computes it (poly 0x04C11DB7, MSB first, init 0xFFFFFFFF, no
    final XOR; a.k.a. CRC-32/MPEG-2), built on zlib's reflected CRC-32 by reversing the bits of each byte
    and of the result. Chunked so that no more than 64 KiB is ever copied at once."""
    reflected = 0  # zlib.crc32(x, 0) starts from 0xFFFFFFFF internally and XORs the result with it
    for piece in pieces:
        for start in range(0, len(piece), _CHUNK):
            chunk = bytes(piece[start : start + _CHUNK]).translate(_REVERSE_BITS)
            reflected = zlib.crc32(chunk, reflected)
    raw = reflected ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _flash_size(table: dict[int, str], nibble: int) -> tuple[str, int | None]:
    name = table.get(nibble)
    if name is None:
        return f"unknown({nibble})", None
    return name, FLASH_SIZE_BYTES[name]


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------


def parse_app_image(
    data: Buffer,
    *,
    expect_chip: str | None = None,
    product: str | None = None,
    prefix_sha256: tuple[int, bytes] | None = None,
) -> ImageInfo:
    """Validate an OTA application image and describe it; ImageError for anything a device would refuse,
    could not boot, or that is plainly the wrong file. `expect_chip` is the product's platform (one of
    models.PLATFORMS); `product` only names the product in the chip-mismatch message. `prefix_sha256`
    = (n, SHA-256 of data[:n]) lets a caller that hashes the file anyway spare the appended-hash check a
    second pass over the image."""
    if expect_chip is not None and expect_chip != "esp8266" and expect_chip not in CHIP_IDS:
        raise ValueError(f"unknown platform {expect_chip!r}")
    view = _as_view(data)
    info = _parse_any(view, prefix_sha256)
    if expect_chip is not None and info.chip != expect_chip:
        who = f"product '{product}'" if product else "the product"
        raise ImageError(f"image is for {info.chip} but {who} is {expect_chip}", None, "wrong-chip")
    return info


def _parse_any(view: memoryview, prefix_sha256: tuple[int, bytes] | None = None) -> ImageInfo:
    size = len(view)
    if size == 0:
        raise ImageError("the file is empty", None, "empty")
    if size >= 2 and view[0] == 0x1F and view[1] == 0x8B:
        return _parse_gzip(view)
    if view[0] != IMAGE_MAGIC:
        raise _wrong_magic(view)
    if size >= 12 and _looks_like_esp8266(view):
        return _parse_esp8266(view)
    if size < ESP32_HEADER_SIZE:
        raise ImageError(
            f"the file is only {size} bytes (it ends at 0x{size:x}): too short for an image header, which "
            "takes 24 bytes on the ESP32 family and 16 on the ESP8266",
            size,
            "truncated",
        )
    return _parse_esp32(view, prefix_sha256)


def _looks_like_esp8266(view: memoryview) -> bool:
    """Tell the two header flavours apart. In an ESP8266 image bytes 8..11 are the first segment's load
    address, which lies in ESP8266 RAM or flash-mapped space; in an ESP32 image they are the wp pin (0xEE
    or a GPIO number) and SPI drive strengths (0..3 each), which never form such an address."""
    address = _u32(view, 8)
    return (
        0x3FF00000 <= address < 0x40000000  # DPORT and DRAM
        or 0x40100000 <= address < 0x40110000  # IRAM
        or 0x40200000 <= address < 0x40300000  # flash-mapped (irom0)
    )


# ---------------------------------------------------------------------------------------------------------
# Not an image at all: say what it is instead
# ---------------------------------------------------------------------------------------------------------


def _wrong_magic(view: memoryview) -> ImageError:
    size = len(view)
    head = view[:16].tobytes()
    first = head[0]
    if head.startswith(PARTITION_MAGIC):
        return ImageError(
            "this is a partition table (partitions.bin: entries start with AA 50), not an application "
            "image; upload the application .bin instead",
            0,
            "partition-table",
        )
    if head.startswith(b"\x7fELF"):
        return ImageError(
            "this is an ELF file (the linker output, e.g. firmware.elf), not a flashable image; upload the "
            ".bin that the build makes from it (esptool elf2image)",
            0,
            "elf",
        )
    if head.startswith(b"UF2\n"):
        return ImageError(
            "this is a UF2 file (for drag-and-drop flashing over USB), not an OTA image; upload the raw "
            "application .bin instead",
            0,
            "uf2",
        )
    if head.startswith(b"PK\x03\x04"):
        return ImageError("this is a zip archive; extract the application .bin and upload that", 0, "archive")
    if first == ESP8266_V2_MAGIC:
        return ImageError(
            "this is an ESP8266 'v2' image (magic 0xEA, for the NONOS SDK's boot_v1.x / rboot bootloaders); "
            "the Arduino ESP8266 updater only accepts images starting with 0xE9",
            0,
            "esp8266-v2",
        )
    for boot_offset in (0x1000, 0x2000):
        if (
            first in (0xFF, 0x00)
            and size > boot_offset
            and view[boot_offset] == IMAGE_MAGIC
            and _all_equal(view[:boot_offset], first)
        ):
            chips = "ESP32 or ESP32-S2" if boot_offset == 0x1000 else "ESP32-P4 or ESP32-C5"
            return ImageError(
                f"this is a merged full-flash image ({chips} layout: bootloader at 0x{boot_offset:x}, "
                f"padding before it); upload only the application image, the part flashed at 0x10000",
                boot_offset,
                "merged-image",
            )
    if first == 0xFF:
        return ImageError(
            "the file starts with 0xFF (erased flash): this looks like a flash dump, not an application "
            "image, which starts with 0xE9",
            0,
            "bad-magic",
        )
    if first == ord(":") and all(chr(c) in "0123456789ABCDEFabcdef" for c in head[1:9]) and len(head) > 9:
        return ImageError(
            "this is an Intel HEX text file, not a binary image; upload the raw application .bin",
            0,
            "intel-hex",
        )
    if len(head) >= 4 and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return ImageError(
            f"this is a text file (it starts with {head[:12].decode('ascii')!r}), not a binary image; "
            "check that the upload is the build's .bin and not an error page or a listing",
            0,
            "text",
        )
    return ImageError(
        f"first byte at 0x0 is 0x{first:02x}, but an ESP application image starts with 0xE9 "
        "(ESP8266 also accepts gzip, 1f 8b)",
        0,
        "bad-magic",
    )


# ---------------------------------------------------------------------------------------------------------
# The common part: segments and checksum
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawImage:
    start: int
    segment_count: int
    flash_mode: int
    flash_size_freq: int
    entry: int
    segments: tuple[Segment, ...]
    checksum_offset: int
    stored_checksum: int
    calculated_checksum: int

    @property
    def end(self) -> int:
        """First byte after the checksum."""
        return self.checksum_offset + 1


def _read_image(view: memoryview, start: int, header_size: int, what: str) -> _RawImage:
    """Walk the header and segments of the image at `start`; raises for structural damage only (the
    checksum is computed, not compared, so callers can explain a mismatch first)."""
    size = len(view)
    if start + header_size > size:
        raise ImageError(f"{what} header at 0x{start:x} is cut off: the file ends at 0x{size:x}", start, "truncated")
    _, count, mode, size_freq, entry = struct.unpack_from("<BBBBI", view, start)
    if count == 0:
        raise ImageError(
            f"{what} header at 0x{start:x} declares 0 segments: there is nothing to load", start, "segments"
        )
    if count > MAX_SEGMENTS:
        raise ImageError(
            f"{what} header at 0x{start:x} declares {count} segments; the bootloaders load at most "
            f"{MAX_SEGMENTS}, so this is not a valid image",
            start,
            "segments",
        )
    segments: list[Segment] = []
    position = start + header_size
    for index in range(count):
        if position + SEGMENT_HEADER_SIZE > size:
            raise ImageError(
                f"{what} is truncated: segment {index} header at 0x{position:x} is cut off by the end of "
                f"the file at 0x{size:x}",
                position,
                "truncated",
            )
        address, length = struct.unpack_from("<II", view, position)
        remaining = size - position - SEGMENT_HEADER_SIZE
        if length > remaining:
            raise ImageError(
                f"segment {index} header at 0x{position:x} declares {length} bytes but only {remaining} "
                "bytes remain in the file",
                position,
                "truncated",
            )
        segments.append(Segment(position, address, length))
        position += SEGMENT_HEADER_SIZE + length
    # The checksum is the last byte of the 16-byte block the segments end in (counted from image start).
    relative = position - start
    checksum_offset = position + (15 - relative % 16)
    if checksum_offset >= size:
        raise ImageError(
            f"{what} is truncated: its checksum byte belongs at 0x{checksum_offset:x} but the file ends at 0x{size:x}",
            checksum_offset,
            "truncated",
        )
    calculated = _xor_bytes((view[s.data_offset : s.data_offset + s.length] for s in segments), CHECKSUM_SEED)
    return _RawImage(
        start=start,
        segment_count=count,
        flash_mode=mode,
        flash_size_freq=size_freq,
        entry=entry,
        segments=tuple(segments),
        checksum_offset=checksum_offset,
        stored_checksum=view[checksum_offset],
        calculated_checksum=calculated,
    )


def _checksum_error(image: _RawImage, what: str) -> ImageError:
    return ImageError(
        f"{what} checksum mismatch: the byte at 0x{image.checksum_offset:x} is "
        f"0x{image.stored_checksum:02x} but the segment data gives 0x{image.calculated_checksum:02x}; "
        "the file is corrupted or was modified after the build",
        image.checksum_offset,
        "checksum",
    )


def _flash_mode(value: int) -> str:
    return FLASH_MODES.get(value, f"unknown({value})")


# ---------------------------------------------------------------------------------------------------------
# ESP8266
# ---------------------------------------------------------------------------------------------------------


def _parse_esp8266(view: memoryview) -> ImageInfo:
    size = len(view)
    first = _read_image(view, 0, ESP8266_HEADER_SIZE, "image")
    # The updater checks the flash size of the file's first header against the real flash, so the
    # flash parameters come from there (elf2bin writes the same values into both headers).
    flash_size, flash_bytes = _flash_size(ESP8266_FLASH_SIZES, first.flash_size_freq >> 4)
    freq = first.flash_size_freq & 0xF
    arduino = first.end <= ARDUINO_SKETCH_OFFSET < size and view[ARDUINO_SKETCH_OFFSET] == IMAGE_MAGIC
    if not arduino:
        if first.stored_checksum != first.calculated_checksum:
            raise _checksum_error(first, "image")
        if size == ARDUINO_SKETCH_OFFSET and first.end < size:
            raise ImageError(
                "the file ends at 0x1000, right after the eboot bootloader and its padding: the sketch image "
                "that belongs at 0x1000 is missing",
                ARDUINO_SKETCH_OFFSET,
                "truncated",
            )
        program, crc = first, None
        bootloader: tuple[Segment, ...] = ()
    else:
        # The ROM verifies eboot's checksum at every boot, so it must be exact.
        if first.stored_checksum != first.calculated_checksum:
            raise _checksum_error(first, "eboot bootloader image")
        program = _read_image(view, ARDUINO_SKETCH_OFFSET, ESP8266_HEADER_SIZE, "sketch image")
        bootloader = first.segments
        # elf2bin computes the checksum with zeros in the CRC words and patches them in afterwards, so a
        # build with a CRC has a checksum that only matches with those words zeroed.
        raw_ok = program.stored_checksum == program.calculated_checksum
        placeholder_xor = _xor_bytes([view[ARDUINO_CRC_OFFSET : ARDUINO_CRC_OFFSET + 8]])
        if not raw_ok and program.stored_checksum != program.calculated_checksum ^ placeholder_xor:
            raise _checksum_error(program, "sketch image")
        crc = _arduino_crc(view, program)
        if not raw_ok and crc is None:
            raise _checksum_error(program, "sketch image")
    trailer = _esp8266_trailer(view, program.end)
    return ImageInfo(
        chip="esp8266",
        layout="esp8266-arduino" if arduino else "esp8266",
        entry=program.entry,
        segments=program.segments,
        bootloader_segments=bootloader,
        flash_mode=_flash_mode(first.flash_mode),
        flash_size=flash_size,
        flash_size_bytes=flash_bytes,
        flash_freq=_FREQ_CLASSIC.get(freq, f"unknown({freq})"),
        checksum=program.stored_checksum,
        image_size=program.end,
        signed=trailer.signature is not None,
        signature=trailer.signature,
        padding=trailer.padding,
        build_crc=crc,
    )


def _arduino_crc(view: memoryview, sketch: _RawImage) -> int | None:
    """The CRC words elf2bin stores at 0x1010: (file length, CRC-32 of the file with both words zero).
    Returns the verified CRC, None when the build stored none (older cores, other tools)."""
    first = sketch.segments[0]
    if first.data_offset != ARDUINO_CRC_OFFSET or first.length < 8:
        return None
    length, stored = _u32(view, ARDUINO_CRC_OFFSET), _u32(view, ARDUINO_CRC_OFFSET + 4)
    if length != sketch.end:
        return None  # not the length of this image: these words are not a build CRC
    computed = crc32_msb_first([view[:ARDUINO_CRC_OFFSET], b"\0" * 8, view[ARDUINO_CRC_OFFSET + 8 : sketch.end]])
    if computed != stored:
        raise ImageError(
            f"the build CRC at 0x{ARDUINO_CRC_OFFSET + 4:x} is 0x{stored:08x} but the file gives "
            f"0x{computed:08x}; the file is corrupted or was modified after the build",
            ARDUINO_CRC_OFFSET + 4,
            "crc",
        )
    return stored


@dataclass(frozen=True)
class _Trailer:
    signature: str | None = None
    padding: int = 0


def _esp8266_trailer(view: memoryview, end: int) -> _Trailer:
    """Explain the bytes after an ESP8266 image: nothing, an Arduino signature (signature bytes then
    their length as u32 LE), or erased-flash padding to a sector boundary; anything else is an error."""
    size = len(view)
    extra = size - end
    if extra == 0:
        return _Trailer()
    if extra >= 8:
        signature_length = _u32(view, size - 4)
        if signature_length + 4 == extra and 16 <= signature_length <= 4096:
            return _Trailer(signature="esp8266")
        if 16 <= signature_length <= 4096 and signature_length + 4 > extra and signature_length in (128, 256, 384, 512):
            # The length word of signing.py's trailer (an RSA modulus size), with fewer signature bytes
            # before it than it announces: the device reads the signature from the wrong place and refuses.
            raise ImageError(
                f"the signature trailer at the end announces a {signature_length}-byte signature but only "
                f"{extra - 4} bytes lie between the image end at 0x{end:x} and the length word: the signature "
                "is truncated",
                end,
                "truncated-signature",
            )
    return _padding_or_error(view, end)


def _padding_or_error(view: memoryview, end: int) -> _Trailer:
    size = len(view)
    extra = size - end
    tail = view[end:]
    if size % FLASH_SECTOR == 0 and _all_equal(tail, 0xFF):
        return _Trailer(padding=extra)
    if view[end] == IMAGE_MAGIC:
        raise ImageError(
            f"another image starts at 0x{end:x}, right after this one: the file looks like several "
            "images concatenated (a merged or full-flash image?); upload only the application image",
            end,
            "trailing-data",
        )
    if tail[:2].tobytes() == PARTITION_MAGIC:
        raise ImageError(
            f"a partition table follows the image at 0x{end:x}: this looks like a merged image; upload only "
            "the application image",
            end,
            "trailing-data",
        )
    raise ImageError(
        f"{extra} unexpected bytes follow the end of the image at 0x{end:x}; a device would flash them "
        "too, so the upload is probably not the build's .bin (stray output appended, or a different file)",
        end,
        "trailing-data",
    )


def _parse_gzip(view: memoryview) -> ImageInfo:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        content = inflater.decompress(view, MAX_DECOMPRESSED + 1)
    except zlib.error as exc:
        raise ImageError(
            f"the file starts like gzip (1f 8b) but is not a valid gzip stream: {exc}", 0, "gzip"
        ) from None
    if len(content) > MAX_DECOMPRESSED:
        raise ImageError(
            f"the gzip stream inflates to more than {MAX_DECOMPRESSED // _MB} MiB, larger than any ESP8266 flash",
            0,
            "too-large",
        )
    if not inflater.eof:
        raise ImageError(
            f"the gzip stream is truncated: the file ends at 0x{len(view):x} before the end of the compressed data",
            len(view),
            "truncated",
        )
    compressed_end = len(view) - len(inflater.unused_data)
    inner = memoryview(content)
    if len(inner) == 0 or inner[0] != IMAGE_MAGIC:
        found = f"0x{inner[0]:02x}" if len(inner) else "nothing"
        raise ImageError(
            f"the gzip stream does not contain an ESP image: its content starts with {found}, not 0xE9",
            0,
            "gzip",
        )
    if len(inner) < 12 or not _looks_like_esp8266(inner):
        raise ImageError(
            "the gzip stream contains an ESP32-family image, but only the ESP8266 updater accepts "
            "compressed images; upload the uncompressed .bin",
            0,
            "gzip",
        )
    try:
        info = _parse_esp8266(inner)
    except ImageError as exc:
        raise ImageError(f"inside the gzip stream: {exc.reason}", exc.offset, exc.code) from None
    signature: str | None = info.signature
    if compressed_end < len(view):
        trailer = _esp8266_trailer(view, compressed_end)
        signature = trailer.signature or signature
    return replace(
        info,
        layout="esp8266-gzip",
        compressed_size=compressed_end,
        signed=signature is not None,
        signature=signature,
    )


# ---------------------------------------------------------------------------------------------------------
# ESP32 family
# ---------------------------------------------------------------------------------------------------------


def _parse_esp32(view: memoryview, prefix_sha256: tuple[int, bytes] | None = None) -> ImageInfo:
    size = len(view)
    wp_pin = view[8]
    chip_id = _u16(view, 12)
    hash_appended = view[23]
    spec = ESP32_CHIPS.get(chip_id)
    if spec is None:
        if chip_id in UNSUPPORTED_CHIP_IDS:
            raise ImageError(
                f"the image is for {UNSUPPORTED_CHIP_IDS[chip_id]} (chip id {chip_id} at 0xc), which otafleet "
                "does not support",
                0xC,
                "unsupported-chip",
            )
        raise ImageError(
            f"unknown chip id {chip_id} at 0xc: this is neither an ESP8266 image (the first segment's load "
            f"address 0x{_u32(view, 8):08x} is outside ESP8266 memory) nor an image for a known ESP32-family "
            "chip",
            0xC,
            "unknown-chip",
        )
    if hash_appended not in (0, 1):
        raise ImageError(
            f"the extended header's hash_appended byte at 0x17 is 0x{hash_appended:02x} but must be 0 or 1 "
            f"(wp pin byte is 0x{wp_pin:02x}): the header is damaged",
            0x17,
            "bad-header",
        )
    image = _read_image(view, 0, ESP32_HEADER_SIZE, "image")
    app = _app_descriptor(view, image, spec)
    if image.stored_checksum != image.calculated_checksum:
        raise _checksum_error(image, "image")
    end = image.end
    appended: str | None = None
    if hash_appended:
        if end + SHA256_SIZE > size:
            raise ImageError(
                f"the image is truncated: its SHA-256 belongs at 0x{end:x}..0x{end + SHA256_SIZE:x} but the "
                f"file ends at 0x{size:x}",
                end,
                "truncated",
            )
        stored = view[end : end + SHA256_SIZE].tobytes()
        known = prefix_sha256[1] if prefix_sha256 is not None and prefix_sha256[0] == end else None
        if (known or hashlib.sha256(view[:end]).digest()) != stored:
            raise ImageError(
                f"the SHA-256 appended at 0x{end:x} does not match the image data before it; the file is "
                "corrupted or was modified after the build",
                end,
                "hash",
            )
        appended = stored.hex()
        end += SHA256_SIZE
    _check_flash_mapping(image, spec, app)
    trailer = _esp32_trailer(view, end)
    flash_size, flash_bytes = _flash_size(ESP32_FLASH_SIZES, image.flash_size_freq >> 4)
    freq = image.flash_size_freq & 0xF
    return ImageInfo(
        chip=spec.name,
        layout="esp32-app",
        entry=image.entry,
        segments=image.segments,
        flash_mode=_flash_mode(image.flash_mode),
        flash_size=flash_size,
        flash_size_bytes=flash_bytes,
        flash_freq=spec.flash_freqs.get(freq, f"unknown({freq})"),
        checksum=image.stored_checksum,
        appended_sha256=appended,
        app=app,
        signed=trailer.signature is not None,
        signature=trailer.signature,
        padding=trailer.padding,
        chip_id=chip_id,
        min_chip_revision=_u16(view, 15),
        max_chip_revision=_u16(view, 17),
        image_size=end,
    )


def _app_descriptor(view: memoryview, image: _RawImage, spec: ChipSpec) -> AppDescriptor:
    first = image.segments[0]
    magic = _u32(view, APP_DESC_OFFSET) if first.length >= 4 else None
    if magic == APP_DESC_MAGIC:
        if first.length < APP_DESC_SIZE:
            raise ImageError(
                f"the app descriptor at 0x{APP_DESC_OFFSET:x} is cut short: the first segment holds only "
                f"{first.length} of its {APP_DESC_SIZE} bytes",
                APP_DESC_OFFSET,
                "bad-app-descriptor",
            )
        d = view[APP_DESC_OFFSET : APP_DESC_OFFSET + APP_DESC_SIZE]
        return AppDescriptor(
            version=_cstring(d[0x10:0x30]),
            project_name=_cstring(d[0x30:0x50]),
            time=_cstring(d[0x50:0x60]),
            date=_cstring(d[0x60:0x70]),
            idf_version=_cstring(d[0x70:0x90]),
            elf_sha256=d[0x90:0xB0].hex(),
            secure_version=_u32(d, 4),
            mmu_page_size_log2=d[0xB4],
        )
    # Not an application. Say what it is: a merged image, a bootloader, or just broken.
    size = len(view)
    if size >= PARTITION_TABLE_OFFSET + 32 and view[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + 2].tobytes() == (
        PARTITION_MAGIC
    ):
        app_at = (
            " and an application at 0x10000"
            if size > APP_PARTITION_OFFSET and view[APP_PARTITION_OFFSET] == IMAGE_MAGIC
            else ""
        )
        raise ImageError(
            f"this is a merged full-flash image for {spec.name} (bootloader at 0x0, partition table at "
            f"0x8000{app_at}); upload only the application image, the part flashed at 0x10000",
            PARTITION_TABLE_OFFSET,
            "merged-image",
        )
    flash_segments = [s for s in image.segments if spec.is_flash_mapped(s.load_address)]
    if first.length >= 80 and view[APP_DESC_OFFSET] == BOOTLOADER_DESC_MAGIC and not flash_segments:
        idf = _cstring(view[APP_DESC_OFFSET + 8 : APP_DESC_OFFSET + 40])
        raise ImageError(
            f"this is an ESP-IDF second-stage bootloader for {spec.name} (bootloader descriptor at 0x20, "
            f"built with IDF {idf}), not an application; upload the application .bin",
            APP_DESC_OFFSET,
            "bootloader",
        )
    if not flash_segments:
        raise ImageError(
            f"this looks like a second-stage bootloader for {spec.name}: all {len(image.segments)} segments "
            "load into RAM and there is no app descriptor (magic 0xABCD5432) at 0x20; upload the "
            "application .bin",
            APP_DESC_OFFSET,
            "bootloader",
        )
    found = f"0x{magic:08x}" if magic is not None else "nothing"
    raise ImageError(
        f"no app descriptor at 0x20: expected magic 0xABCD5432, found {found}; every ESP-IDF or "
        "Arduino-ESP32 application starts with one, so this is not an application image",
        APP_DESC_OFFSET,
        "bad-app-descriptor",
    )


def _check_flash_mapping(image: _RawImage, spec: ChipSpec, app: AppDescriptor) -> None:
    """The bootloader maps flash-resident segments page by page, so a segment's data must sit at the same
    offset within an MMU page as its load address (the bootloader refuses the image otherwise)."""
    page = 1 << app.mmu_page_size_log2 if 13 <= app.mmu_page_size_log2 <= 16 else 0x10000
    for index, segment in enumerate(image.segments):
        if not spec.is_flash_mapped(segment.load_address):
            continue
        if (segment.data_offset - image.start) % page != segment.load_address % page:
            raise ImageError(
                f"segment {index} at 0x{segment.offset:x} loads at 0x{segment.load_address:08x} but its data "
                f"starts at file offset 0x{segment.data_offset:x}; flash-mapped segments must share the "
                f"offset within a {page // 1024} KB MMU page, so the bootloader would refuse this image",
                segment.offset,
                "bad-mapping",
            )


def _esp32_trailer(view: memoryview, end: int) -> _Trailer:
    """Explain the bytes after an ESP32 image: nothing, a Secure Boot v1 signature (u32 version 0 and a
    64-byte ECDSA signature), a Secure Boot v2 signature sector (4 KiB, blocks starting E7 02/03, at a
    sector boundary after 0xFF padding), an arduino-esp32 signature block (512 bytes), or 0xFF padding to
    a sector boundary."""
    size = len(view)
    extra = size - end
    if extra == 0:
        return _Trailer()
    if extra == SECURE_BOOT_V1_TRAILER and _u32(view, end) == 0:
        return _Trailer(signature="secure-boot-v1")
    # The bootloader reads the signature sector at the first sector boundary after the image (and its
    # appended hash), hashing the padding before it (esp_image_format.c: verify_secure_boot_signature).
    sector = end + (-end % FLASH_SECTOR)
    if sector + 2 <= size and view[sector] == 0xE7 and view[sector + 1] in (2, 3):
        if size < sector + FLASH_SECTOR:
            raise ImageError(
                f"the Secure Boot v2 signature sector at 0x{sector:x} is truncated: the file ends at 0x{size:x}, "
                f"{sector + FLASH_SECTOR - size} bytes short of the sector's 4096",
                sector,
                "truncated-signature",
            )
        block = view[sector : sector + SECURE_BOOT_V2_BLOCK_SIZE]
        crc_ok = zlib.crc32(block[:1196]) == _u32(block, 1196)
        if crc_ok and _all_equal(view[end:sector], 0xFF) and size == sector + FLASH_SECTOR:
            return _Trailer(signature="secure-boot-v2")
        raise ImageError(
            f"the Secure Boot v2 signature sector at 0x{sector:x} is damaged (its block CRC does not match, "
            "non-padding bytes precede it, or bytes follow it)",
            sector,
            "bad-signature",
        )
    if extra == ARDUINO_ESP32_SIGNATURE_SIZE and not _all_equal(view[end:], 0xFF):
        return _Trailer(signature="arduino-esp32")
    return _padding_or_error(view, end)


# ---------------------------------------------------------------------------------------------------------
# Filesystem images
# ---------------------------------------------------------------------------------------------------------


def inspect_filesystem(data: Buffer) -> dict[str, object]:
    """Light checks for a SPIFFS / LittleFS / FAT image uploaded as a filesystem release: refuses what is
    plainly not one, and returns facts about it (no None values)."""
    view = _as_view(data)
    size = len(view)
    if size == 0:
        raise ImageError("the file is empty", None, "empty")
    if view[0] == IMAGE_MAGIC or _gzip_holds_app(view):
        raise ImageError(
            "this is an application image; upload it under firmware/ not filesystem/", 0, "app-as-filesystem"
        )
    head = view[:8].tobytes()
    if head.startswith(b"\x7fELF") or head.startswith(PARTITION_MAGIC) or head.startswith(b"PK\x03\x04"):
        raise _wrong_magic(view)
    if size % FLASH_SECTOR:
        raise ImageError(
            f"a filesystem image must be a whole number of 4096-byte flash sectors, but this one is {size} "
            f"bytes ({size % FLASH_SECTOR} bytes past the last full sector at 0x{size - size % FLASH_SECTOR:x})",
            size - size % FLASH_SECTOR,
            "size",
        )
    facts: dict[str, object] = {"size": size}
    # LittleFS keeps its superblock in both of the first two blocks; the block size is 4 or 8 KiB.
    for offset in (0, 4096, 8192):
        if size >= offset + 32 and view[offset + 8 : offset + 16].tobytes() == b"littlefs":
            facts["filesystem"] = "littlefs"
            version, block_size, block_count = struct.unpack_from("<III", view, offset + 20)
            if 128 <= block_size <= 65536 and block_size & (block_size - 1) == 0:
                facts["littlefs_version"] = f"{version >> 16}.{version & 0xFFFF}"
                facts["block_size"] = block_size
                facts["block_count"] = block_count
            return facts
    if size >= 512 and view[510] == 0x55 and view[511] == 0xAA:
        facts["filesystem"] = "fat"
        return facts
    facts["filesystem"] = "spiffs-or-unknown"
    if _all_equal(view, 0xFF):
        facts["blank"] = True
    return facts


def _gzip_holds_app(view: memoryview) -> bool:
    if len(view) < 2 or view[0] != 0x1F or view[1] != 0x8B:
        return False
    try:
        start = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(view[:4096], 1)
    except zlib.error:
        return False
    return start[:1] == bytes([IMAGE_MAGIC])


__all__ = [
    "CHIP_IDS",
    "ESP32_CHIPS",
    "AppDescriptor",
    "ImageError",
    "ImageInfo",
    "Segment",
    "crc32_msb_first",
    "inspect_filesystem",
    "parse_app_image",
]
