"""What a device reports about an image after installing it with the stock Arduino OTA client.

At its next check the stock update client (ESP8266httpUpdate in the esp8266 core, HTTPUpdate in
arduino-esp32) sends `x-<chip>-sketch-size` (ESP.getSketchSize()), `x-<chip>-sketch-md5`
(ESP.getSketchMD5()) and, ESP32 only, `x-ESP32-sketch-sha256`. Those values follow from the uploaded
file and a handful of rules in the cores, which this module applies at ingest time so that the service
can tell whether a device is running a given release. Pure functions over the parser's results
(`otafleet.imageformat.ImageInfo`): the file is not parsed again.

ESP8266 (esp8266/Arduino):

* Size: `EspClass::getSketchSize` (cores/esp8266/Esp.cpp) walks the image headers from flash offset
  APP_START_OFFSET (0x1000, after eboot), adding each segment's header and length, and returns the end of
  the last segment rounded up with `(pos + 16) & ~15`: an absolute flash offset that counts eboot and its
  padding, and the image's checksum block, but never a signature or padding after the image. That is the
  parser's `image_size` of an Arduino-layout image (the sketch starts at 0x1000, a multiple of 16).
* MD5: `EspClass::getSketchMD5` hashes getSketchSize() bytes of flash from offset 0.
* What is in flash: `UpdaterClass::_writeBuffer` (cores/esp8266/Updater.cpp, since core 2.4.2) overwrites
  byte 2 of the first buffer it writes, the flash mode in the file's first image header (eboot's), with
  the running device's mode (`EspClass::getFlashChipMode`, byte 2 of flash offset 0: QIO 0, QOUT 1, DIO 2,
  DOUT 3) whenever they differ; it does so only for U_FLASH and only when the file does not start with
  0x1f (gzip). On a device built with update signing `UpdaterClass::end` drops the Arduino signature
  (signature bytes, then their length as a u32) before staging the copy (without, the signature is copied
  but lies past the sketch), and eboot's `copy_raw` (bootloaders/eboot/eboot.c) copies the staged file to
  offset 0, inflating it when it starts 1f 8b (with no flash-mode rewrite). So a plain upload can leave
  four MD5s (one per flash mode; the file's own byte is one of them, or, on cores before 2.4.2, the
  file's own byte whatever it is), a gzip upload exactly one: that of its decompressed content. Not
  modelled: a device whose own mode byte is not 0..3 (getFlashChipMode() is then FM_UNKNOWN, 0xff, and
  the updater writes that into an upload with a valid mode).
* An ESP8266 image without eboot (layout "esp8266") overwrites eboot at offset 0 and is started by the ROM
  directly; no Arduino sketch runs from that layout, so there is nothing to predict (None).

ESP32 family (espressif/arduino-esp32 and ESP-IDF):

* Size: `sketchSize` (cores/esp32/Esp.cpp) returns `image_len` from `esp_image_verify` on the running
  partition. In `image_load` (components/bootloader_support/src/esp_image_format.c) that is the 24-byte
  header, the segments, `process_checksum`'s padding to a 16-byte block and, in
  `process_appended_hash_and_sig`, the 32-byte SHA-256 when hash_appended: the parser's `image_size`.
  Only an app built to verify signatures on update (CONFIG_SECURE_SIGNED_ON_UPDATE, implied by Secure
  Boot) adds its signature in `verify_signature_and_adjust_image_len`: Secure Boot v2 (RSA, ECDSA v2):
  image_len padded to 4 KiB plus the 4096-byte signature sector; Secure Boot v1 (ECDSA): plus the 68-byte
  signature block (IDF 5.0.7, 5.1.4, 5.2.1, 5.3 and later; earlier IDF leaves it out). A signed upload
  therefore has a second possible size, `signed_sketch_size`.
* MD5: `EspClass::getSketchMD5` hashes getSketchSize() bytes from the running partition's start, read
  raw with `EspClass::flashRead` (with flash encryption on, that is ciphertext and cannot be predicted).
  `UpdateClass::_writeBuffer` (libraries/Update/src/Updater.cpp) writes the file unchanged: it only holds
  back the first 16 bytes until `UpdateClass::_enablePartition` writes them at the end.
* SHA-256: `getSketchSHA256` (libraries/HTTPUpdate/src/HTTPUpdate.cpp) sends, in upper-case hex,
  `esp_partition_get_sha256` of the running partition, i.e. `bootloader_common_get_sha256_of_partition`
  (components/bootloader_support/src/bootloader_common.c): the appended SHA-256 as stored in the image
  (the 32 bytes before `image_size`, not the last 32 bytes of a file with padding or a signature after
  them) when hash_appended, else the SHA-256 of the first `image_size` bytes.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from otafleet.imageformat import (
    FLASH_MODES,
    FLASH_SECTOR,
    SECURE_BOOT_V1_TRAILER,
    Buffer,
    ImageInfo,
    _as_view,
)

# The byte of an ESP8266 image header that holds the flash mode, and the modes a running device can have.
FLASH_MODE_OFFSET: Final = 2
DEVICE_FLASH_MODES: Final = tuple(sorted(FLASH_MODES))
SECURE_BOOT_V2_SECTOR: Final = FLASH_SECTOR  # sizeof(ets_secure_boot_signature_t)
_INFLATE_CHUNK: Final = 16 * 1024

Digest = bytes | str


@dataclass(frozen=True)
class DeviceFacts:
    """What the stock Arduino update client reports once a device runs this image.

    `sketch_size` is ESP.getSketchSize() (x-ESP8266-sketch-size / x-ESP32-sketch-size); `flashed_md5s`
    the values ESP.getSketchMD5() can take (lower-case hex, sorted, no duplicates), one per possible flash
    content and, for signed ESP32 images, per possible size; `sketch_sha256` what an ESP32 sends as
    x-ESP32-sketch-sha256 (lower-case here, the device sends upper case); `signed_sketch_size` the
    getSketchSize() of a signed ESP32 image whose app verifies signatures (None for unsigned images and
    the ESP8266)."""

    sketch_size: int
    flashed_md5s: tuple[str, ...]
    sketch_sha256: str | None = None
    signed_sketch_size: int | None = None

    @property
    def sketch_sizes(self) -> tuple[int, ...]:
        """Every value getSketchSize() can return for this image."""
        if self.signed_sketch_size is None or self.signed_sketch_size == self.sketch_size:
            return (self.sketch_size,)
        return (self.sketch_size, self.signed_sketch_size)


def device_facts(
    data: Buffer,
    info: ImageInfo,
    *,
    prefix_md5: tuple[int, Digest] | None = None,
    prefix_sha256: tuple[int, Digest] | None = None,
) -> DeviceFacts | None:
    """What a device that installed `data` (already parsed into `info` by
    `imageformat.parse_app_image`) reports at its next check; None when no Arduino sketch runs from the
    image's layout (an ESP8266 image without eboot, plain or gzipped).

    `prefix_md5` / `prefix_sha256` = (n, digest of data[:n]), bytes or hex, let a caller that hashed the
    file anyway (usually n = len(data)) spare the pass over the image whose digest it already has."""
    view = _as_view(data)
    known_md5 = dict([_hex_pair(prefix_md5)]) if prefix_md5 is not None else {}
    if info.chip == "esp8266":
        if not info.bootloader_segments:
            return None
        if info.layout == "esp8266-gzip":
            return DeviceFacts(sketch_size=info.image_size, flashed_md5s=(_inflated_md5(view, info.image_size),))
        return DeviceFacts(
            sketch_size=info.image_size,
            flashed_md5s=_flash_mode_md5s(view, info.image_size, known_md5.get(info.image_size)),
        )
    return _esp32_facts(view, info, known_md5, prefix_sha256)


def _flash_mode_md5s(view: memoryview, size: int, own: str | None) -> tuple[str, ...]:
    """MD5 of view[:size] with the flash-mode byte set to each mode a device can have, plus the file's own
    byte (pre-2.4.2 cores write the file as it is). The variant that equals the file is taken from `own`
    when the caller has it; every other variant hashes the bytes after the mode byte once."""
    original = view[FLASH_MODE_OFFSET]
    head = hashlib.md5(view[:FLASH_MODE_OFFSET])
    tail = view[FLASH_MODE_OFFSET + 1 : size]
    out: set[str] = set()
    for mode in sorted({original, *DEVICE_FLASH_MODES}):
        if mode == original and own is not None:
            out.add(own)
            continue
        digest = head.copy()
        digest.update(bytes((mode,)))
        digest.update(tail)
        out.add(digest.hexdigest())
    return tuple(sorted(out))


def _inflated_md5(view: memoryview, size: int) -> str:
    """MD5 of the first `size` bytes of the gzip stream's content, inflated piecewise (the parser has
    already checked the stream, and that it holds at least `size` bytes)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    digest = hashlib.md5()
    need = size
    for start in range(0, len(view), _INFLATE_CHUNK):
        out = inflater.decompress(view[start : start + _INFLATE_CHUNK])
        digest.update(memoryview(out)[:need])
        need -= min(need, len(out))
        if need == 0:
            return digest.hexdigest()
    raise ValueError(f"the gzip stream holds fewer than {size} bytes: not the file `info` was parsed from")


def _esp32_facts(
    view: memoryview, info: ImageInfo, known_md5: dict[int, str], prefix_sha256: tuple[int, Digest] | None
) -> DeviceFacts:
    size = info.image_size
    signed_size = _signed_sketch_size(len(view), info)
    lengths = [size] if signed_size is None else [size, signed_size]
    md5s = _prefix_md5s(view, lengths, known_md5)
    if info.appended_sha256 is not None:
        sha256 = info.appended_sha256
    elif prefix_sha256 is not None and prefix_sha256[0] == size:
        sha256 = _hex_pair(prefix_sha256)[1]
    else:
        sha256 = hashlib.sha256(view[:size]).hexdigest()
    return DeviceFacts(
        sketch_size=size,
        flashed_md5s=tuple(sorted(set(md5s))),
        sketch_sha256=sha256,
        signed_sketch_size=signed_size,
    )


def _signed_sketch_size(file_size: int, info: ImageInfo) -> int | None:
    """image_len as an app that verifies signatures computes it, when the file holds the signature where
    that app looks for it (otherwise its esp_image_verify fails and the update is refused)."""
    if info.signature == "secure-boot-v1":
        signed = info.image_size + SECURE_BOOT_V1_TRAILER
    elif info.signature == "secure-boot-v2":
        signed = -(-info.image_size // FLASH_SECTOR) * FLASH_SECTOR + SECURE_BOOT_V2_SECTOR
    else:
        return None
    return signed if signed == file_size else None


def _prefix_md5s(view: memoryview, lengths: Iterable[int], known: dict[int, str]) -> list[str]:
    """MD5 of view[:n] for each n, in one pass over the longest prefix that is not known already."""
    running = hashlib.md5()
    position = 0
    out: list[str] = []
    for length in sorted(lengths):
        if length in known:
            out.append(known[length])
            continue
        running.update(view[position:length])
        position = length
        out.append(running.hexdigest())
    return out


def _hex_pair(pair: tuple[int, Digest]) -> tuple[int, str]:
    length, digest = pair
    return length, (digest.hex() if isinstance(digest, bytes) else digest.lower())


__all__ = ["DEVICE_FLASH_MODES", "DeviceFacts", "device_facts"]
