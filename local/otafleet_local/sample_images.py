"""Format-valid firmware images for tests and the local stack's demo data.

Every image is deterministic: its bytes follow from the arguments alone (segment data comes from a PRNG
seeded with them, so two versions of the same product differ). Checksums, appended hashes, the Arduino
ESP8266 build CRC and signature trailers are computed the way the real tools do, so `esptool image-info`
accepts the images and reports the facts `otafleet.imageformat` reports.

The signatures are made of pseudo-random bytes: right shape, no key behind them.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from otafleet.imageformat import CHIP_IDS, crc32_msb_first

FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
ESP8266_FLASH_SIZES = {
    "512KB": 0x0,
    "256KB": 0x1,
    "1MB": 0x2,
    "2MB": 0x3,
    "4MB": 0x4,
    "2MB-c1": 0x5,
    "4MB-c1": 0x6,
    "8MB": 0x8,
    "16MB": 0x9,
}
ESP32_FLASH_SIZES = {"1MB": 0, "2MB": 1, "4MB": 2, "8MB": 3, "16MB": 4, "32MB": 5, "64MB": 6, "128MB": 7}
FLASH_FREQS = {"80m": 0xF, "40m": 0x0, "26m": 0x1, "20m": 0x2}

APP_DESC_MAGIC = 0xABCD5432
ARDUINO_SKETCH_OFFSET = 0x1000
ARDUINO_CRC_OFFSET = 0x1010
FLASH_SECTOR = 4096


@dataclass(frozen=True)
class _ChipMemory:
    """Where a realistic image for one chip puts its segments (from the chips' memory maps)."""

    drom: int  # first segment: rodata with the app descriptor, file offset 0x20
    irom: int  # code executed from flash, in another 64 KB MMU page than drom
    dram: int
    iram: int
    bootloader_offset: int
    max_rev_full: int = 99


ESP32_MEMORY: dict[str, _ChipMemory] = {
    "esp32": _ChipMemory(0x3F400020, 0x400D0000, 0x3FFB0000, 0x40080000, 0x1000, max_rev_full=399),
    "esp32s2": _ChipMemory(0x3F000020, 0x40080000, 0x3FFB0000, 0x40022000, 0x1000, max_rev_full=199),
    "esp32s3": _ChipMemory(0x3C000020, 0x42000000, 0x3FC88000, 0x40374000, 0x0),
    "esp32c3": _ChipMemory(0x3C000020, 0x42000000, 0x3FC88000, 0x40380000, 0x0, max_rev_full=199),
    "esp32c2": _ChipMemory(0x3C000020, 0x42000000, 0x3FCA0000, 0x4037C000, 0x0, max_rev_full=199),
    "esp32c6": _ChipMemory(0x42800020, 0x42000000, 0x40810000, 0x40800000, 0x0),
    "esp32h2": _ChipMemory(0x42800020, 0x42000000, 0x40810000, 0x40800000, 0x0),
    "esp32c61": _ChipMemory(0x42800020, 0x42000000, 0x40810000, 0x40800000, 0x0),
    "esp32c5": _ChipMemory(0x42800020, 0x42000000, 0x40810000, 0x40800000, 0x2000),
    "esp32p4": _ChipMemory(0x40800020, 0x40000000, 0x4FF10000, 0x4FF00000, 0x2000),
}
ESP32_FAMILY: tuple[str, ...] = tuple(ESP32_MEMORY)


def _rng(*material: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, material)).encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _align4(n: int) -> int:
    return (n + 3) & ~3


def checksum(parts: Sequence[bytes]) -> int:
    value = 0xEF
    for part in parts:
        for byte in part:
            value ^= byte
    return value


def assemble_image(
    *,
    segments: Sequence[tuple[int, bytes]],
    entry: int,
    flash_mode: int = 2,
    flash_size_freq: int = 0x20,
    extended_header: bytes | None = None,
    hash_appended: bool = False,
) -> bytes:
    """Lay out an image exactly as esptool does: header, [extended header], segments, zero padding to the
    last byte of a 16-byte block, the XOR checksum there, [SHA-256 of all that]."""
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segments), flash_mode, flash_size_freq, entry))
    if extended_header is not None:
        out += extended_header
    for address, data in segments:
        out += struct.pack("<II", address, len(data)) + data
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum([data for _, data in segments]))
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def extended_header(*, chip: str, hash_appended: bool, min_rev_full: int = 0, max_rev_full: int | None = None) -> bytes:
    max_rev = ESP32_MEMORY[chip].max_rev_full if max_rev_full is None else max_rev_full
    return struct.pack(
        "<BBBBHBHH4sB",
        0xEE,  # wp pin: disabled
        0,
        0,
        0,
        CHIP_IDS[chip],
        min_rev_full // 100,
        min_rev_full,
        max_rev,
        b"\0" * 4,
        1 if hash_appended else 0,
    )


def app_descriptor(
    *,
    version: str,
    project: str,
    idf_version: str,
    elf_sha256: bytes,
    time: str = "12:00:00",
    date: str = "Jan  1 2025",
    secure_version: int = 0,
    mmu_page_size_log2: int = 0,
) -> bytes:
    """The 256-byte esp_app_desc_t."""
    fields = {"version": version, "project": project, "idf_version": idf_version}
    for name, value in fields.items():
        if len(value.encode()) > 31:
            raise ValueError(f"{name} {value!r} does not fit the descriptor's 32-byte field")
    return struct.pack(
        "<II8s32s32s16s16s32s32sHHB3s72s",
        APP_DESC_MAGIC,
        secure_version,
        b"",
        version.encode(),
        project.encode(),
        time.encode(),
        date.encode(),
        idf_version.encode(),
        elf_sha256,
        0,
        0,
        mmu_page_size_log2,
        b"",
        b"",
    )


# ---------------------------------------------------------------------------------------------------------
# ESP8266
# ---------------------------------------------------------------------------------------------------------


def build_esp8266_image(
    *,
    sketch_size: int = 48 * 1024,
    flash_size: str = "4MB",
    flash_mode: str = "dio",
    flash_freq: str = "40m",
    seed: int = 0,
    arduino_layout: bool = True,
    version: str = "",
    build_crc: bool = True,
    signed: bool = False,
) -> bytes:
    """An ESP8266 image. Arduino layout (default): eboot padded to 0x1000 with 0xAA, then the sketch, whose
    first segment is irom0 at 0x40201010 starting with the two CRC words that elf2bin fills in after the
    checksum (`build_crc`). Plain layout: one image with irom0, iram, data and rodata segments.
    `version` is written into the sketch's rodata and mixed into the PRNG; `signed` appends a (fake)
    256-byte signature and its u32 length, as Arduino's signing.py does."""
    rng = _rng("esp8266", sketch_size, seed, version, arduino_layout)
    size_freq = ESP8266_FLASH_SIZES[flash_size] << 4 | FLASH_FREQS[flash_freq]
    mode = FLASH_MODES[flash_mode]
    sketch_size = max(sketch_size, 256)
    irom_len = _align4(sketch_size * 70 // 100)
    text_len = _align4(sketch_size * 15 // 100)
    data_len = _align4(sketch_size * 5 // 100)
    rodata = version.encode() + b"\0" + rng.randbytes(_align4(sketch_size * 10 // 100))
    rodata += b"\0" * (_align4(len(rodata)) - len(rodata))
    irom = bytearray(rng.randbytes(irom_len))
    if arduino_layout:
        irom[0:8] = b"\0" * 8  # __crc_len, __crc_val placeholders
        irom_address = 0x40201010
    else:
        irom_address = 0x40200010  # data at file offset 0x10 of an image flashed at 0
    text = rng.randbytes(text_len)
    entry = 0x40100000 + _align4(rng.randrange(0, text_len))
    program = [
        (irom_address, bytes(irom)),
        (0x40100000, text),
        (0x3FFE8000, rng.randbytes(data_len)),
        (0x3FFE8000 + data_len, rodata),
    ]
    sketch = assemble_image(segments=program, entry=entry, flash_mode=mode, flash_size_freq=size_freq)
    if not arduino_layout:
        image = _esp8266_autodetectable(sketch)
    else:
        boot_text = bytearray(_rng("eboot", seed).randbytes(0x600))
        boot_rodata = _rng("eboot-rodata", seed).randbytes(0x80)
        eboot = assemble_image(
            segments=[(0x4010F000, _esp8266_autodetect_byte(boot_text)), (0x3FFFDD00, boot_rodata)],
            entry=0x4010F000 + 0x4B8,
            flash_mode=mode,
            flash_size_freq=size_freq,
        )
        whole = bytearray(eboot + b"\xaa" * (ARDUINO_SKETCH_OFFSET - len(eboot)) + sketch)
        if build_crc:
            crc = crc32_msb_first([bytes(whole)])  # the CRC words are still zero here
            struct.pack_into("<II", whole, ARDUINO_CRC_OFFSET, len(whole), crc)
        image = bytes(whole)
    if signed:
        signature = _rng("signature", seed, version).randbytes(256)
        image += signature + struct.pack("<I", len(signature))
    return image


def _esp8266_autodetect_byte(first_segment: bytearray) -> bytes:
    # esptool's image-info (without --chip) takes an image for ESP32 when byte 23, here the first segment's
    # 8th data byte, is 0 or 1 and byte 12 is a known chip id; keep the builder's images unambiguous.
    if first_segment[7] in (0, 1):
        first_segment[7] |= 0x40
    return bytes(first_segment)


def _esp8266_autodetectable(image: bytes) -> bytes:
    if image[23] not in (0, 1):
        return image
    segments = _split(image, 8)
    first = bytearray(segments[0][1])
    return assemble_image(
        segments=[(segments[0][0], _esp8266_autodetect_byte(first)), *segments[1:]],
        entry=struct.unpack_from("<I", image, 4)[0],
        flash_mode=image[2],
        flash_size_freq=image[3],
    )


def _split(image: bytes, header_size: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    position = header_size
    for _ in range(image[1]):
        address, length = struct.unpack_from("<II", image, position)
        out.append((address, image[position + 8 : position + 8 + length]))
        position += 8 + length
    return out


def build_esp8266_gzip(**kwargs: object) -> bytes:
    """A gzip-compressed Arduino ESP8266 image (what the core's `-g Arduino` option writes as .bin.gz)."""
    return gzip.compress(build_esp8266_image(**kwargs), mtime=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# ESP32 family
# ---------------------------------------------------------------------------------------------------------


def build_esp32_image(
    *,
    chip: str = "esp32",
    version: str = "1.0.0",
    project: str = "demo",
    size: int = 96 * 1024,
    hash_appended: bool = True,
    seed: int = 0,
    idf_version: str = "v5.1",
    flash_mode: str = "dio",
    flash_size: str = "4MB",
    flash_freq: str = "40m",
    secure_version: int = 0,
    min_rev_full: int = 0,
    signature: str | None = None,
) -> bytes:
    """An ESP32-family application image: DROM (app descriptor + rodata) at file offset 0x20, DRAM, IRAM,
    then IROM at a load address that shares its data's offset within a 64 KB MMU page, as the bootloader
    requires. `signature`: None, "secure-boot-v1" (u32 0 + 64 bytes) or "secure-boot-v2" (0xFF padding to
    a sector, then a 4 KiB signature sector with one RSA block)."""
    memory = ESP32_MEMORY[chip]
    rng = _rng("esp32", chip, version, project, size, seed, idf_version)
    size = max(size, 2048)
    elf_sha256 = hashlib.sha256(f"elf|{chip}|{project}|{version}|{seed}".encode()).digest()
    descriptor = app_descriptor(
        version=version,
        project=project,
        idf_version=idf_version,
        elf_sha256=elf_sha256,
        secure_version=secure_version,
    )
    drom = descriptor + rng.randbytes(_align4(size * 25 // 100))
    dram = rng.randbytes(_align4(size * 10 // 100))
    iram = rng.randbytes(_align4(size * 20 // 100))
    irom = rng.randbytes(_align4(size * 40 // 100))
    header_len = 24
    irom_data_offset = header_len + sum(8 + len(part) for part in (drom, dram, iram)) + 8
    irom_address = memory.irom + 0x10000 + irom_data_offset % 0x10000
    entry = memory.iram + _align4(rng.randrange(0, len(iram)))
    freq = {"80m": 0xF, "40m": 0x0, "26m": 0x1, "20m": 0x2}[flash_freq]
    image = assemble_image(
        segments=[(memory.drom, drom), (memory.dram, dram), (memory.iram, iram), (irom_address, irom)],
        entry=entry,
        flash_mode=FLASH_MODES[flash_mode],
        flash_size_freq=ESP32_FLASH_SIZES[flash_size] << 4 | freq,
        extended_header=extended_header(chip=chip, hash_appended=hash_appended, min_rev_full=min_rev_full),
        hash_appended=hash_appended,
    )
    if signature == "secure-boot-v1":
        image += struct.pack("<I", 0) + _rng("sbv1", image[-32:]).randbytes(64)
    elif signature == "secure-boot-v2":
        image += b"\xff" * (-len(image) % FLASH_SECTOR)
        image += secure_boot_v2_sector(image)
    elif signature is not None:
        raise ValueError(f"unknown signature scheme {signature!r}")
    return image


def secure_boot_v2_sector(contents: bytes) -> bytes:
    """A 4 KiB signature sector with one RSA-3072 block shaped like espsecure's (fake key and signature)."""
    rng = _rng("sbv2", hashlib.sha256(contents).hexdigest())
    block = bytes([0xE7, 0x02, 0, 0]) + hashlib.sha256(contents).digest() + rng.randbytes(1196 - 36)
    block += struct.pack("<I", zlib.crc32(block)) + b"\0" * 16
    return block + b"\xff" * (FLASH_SECTOR - len(block))


def bootloader_descriptor(*, idf_version: str, version: int = 1, date_time: str = "Jan  1 2025 12:00:00") -> bytes:
    """The 80-byte esp_bootloader_desc_t of ESP-IDF >= 5.2 bootloaders (magic byte 0x50)."""
    return struct.pack("<B3sI32s24s16s", 0x50, b"", version, idf_version.encode(), date_time.encode(), b"")


def build_esp32_bootloader(
    *, chip: str = "esp32", idf_version: str = "v5.2", descriptor: bool = True, seed: int = 0
) -> bytes:
    """A second-stage bootloader image: RAM segments only (DRAM first, with the bootloader descriptor
    when `descriptor`), no app descriptor, no appended hash (as IDF builds it without secure boot)."""
    memory = ESP32_MEMORY[chip]
    rng = _rng("bootloader", chip, seed)
    head = bootloader_descriptor(idf_version=idf_version) if descriptor else rng.randbytes(80)
    if not descriptor and head[0] == 0x50:
        head = b"\x51" + head[1:]
    dram = head + rng.randbytes(0x200)
    iram_text = rng.randbytes(0x1800)
    iram_loader = rng.randbytes(0x600)
    return assemble_image(
        segments=[(memory.dram + 0x4000, dram), (memory.iram + 0x8000, iram_loader), (memory.iram, iram_text)],
        entry=memory.iram + 0x100,
        flash_mode=FLASH_MODES["dio"],
        flash_size_freq=0x20,
        extended_header=extended_header(chip=chip, hash_appended=False),
    )


# (label, type, subtype, offset, size) of a two-OTA-slot table like Arduino-ESP32's "default".
DEFAULT_PARTITIONS: tuple[tuple[str, int, int, int, int], ...] = (
    ("nvs", 0x01, 0x02, 0x9000, 0x5000),
    ("otadata", 0x01, 0x00, 0xE000, 0x2000),
    ("app0", 0x00, 0x10, 0x10000, 0x140000),
    ("app1", 0x00, 0x11, 0x150000, 0x140000),
    ("spiffs", 0x01, 0x82, 0x290000, 0x160000),
)


def build_partition_table(entries: Sequence[tuple[str, int, int, int, int]] = DEFAULT_PARTITIONS) -> bytes:
    """partitions.bin: 32-byte entries (AA 50, type, subtype, offset, size, label, flags), the MD5 entry
    (EB EB, 14 x FF, MD5 of the entries), 0xFF up to 0xC00."""
    table = b"".join(
        struct.pack("<2sBBII16sI", b"\xaa\x50", kind, subtype, offset, size, label.encode(), 0)
        for label, kind, subtype, offset, size in entries
    )
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table + b"\xff" * (0xC00 - len(table))


def build_merged_image(*, chip: str = "esp32", app: bytes | None = None, seed: int = 0) -> bytes:
    """What `esptool merge-bin` writes for a full flash: bootloader at the chip's offset, partition table
    at 0x8000, the application at 0x10000, 0xFF everywhere else."""
    app = build_esp32_image(chip=chip, seed=seed) if app is None else app
    bootloader = build_esp32_bootloader(chip=chip, seed=seed)
    out = bytearray(b"\xff" * (0x10000 + len(app)))
    boot_at = ESP32_MEMORY[chip].bootloader_offset
    out[boot_at : boot_at + len(bootloader)] = bootloader
    table = build_partition_table()
    out[0x8000 : 0x8000 + len(table)] = table
    out[0x10000:] = app
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------
# Filesystem images
# ---------------------------------------------------------------------------------------------------------


def build_littlefs_image(*, size: int = 64 * 1024, block_size: int = 4096) -> bytes:
    """An (empty) LittleFS-shaped image: superblock with the "littlefs" name at offset 8 of blocks 0 and 1,
    the rest erased. Enough for inspect_filesystem; not mountable."""
    out = bytearray(b"\xff" * size)
    for block in (0, 1):
        base = block * block_size
        superblock = struct.pack("<I", 1) + b"\x0f\xf0\x00\x08" + b"littlefs"
        superblock += b"\x2f\xe0\x00\x18" + struct.pack("<III", 0x00020001, block_size, size // block_size)
        out[base : base + len(superblock)] = superblock
    return bytes(out)


def build_fat_image(*, size: int = 64 * 1024) -> bytes:
    """A FAT-shaped image: boot sector ending in 55 AA at offset 510, the rest zero. Not mountable."""
    out = bytearray(size)
    out[0:3] = b"\xeb\x3c\x90"
    out[3:11] = b"MSDOS5.0"
    out[510:512] = b"\x55\xaa"
    return bytes(out)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m otafleet_local.sample_images OUT.bin --version V`: a demo ESP8266 application image, like
    the local stack's demo release, to upload to it."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m otafleet_local.sample_images", description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    image = build_esp8266_image(sketch_size=256 * 1024, flash_size="4MB", flash_mode="dio", version=args.version)
    args.out.write_bytes(image)
    print(f"{args.out}: ESP8266 application image {args.version}, {len(image)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
