"""Signed firmware: the public keys a product accepts, and whether an upload's signature is one a device
with those keys will accept (issue 13).

The device verifies; this module makes sure a signed product only ever registers what will pass. Each
format is checked the way the stock verifier checks it, byte for byte:

- ESP8266 Arduino core >= 2.6 (`tools/signing.py`, `Updater.cpp`): `image || signature || u32 LE length`;
  RSA PKCS#1 v1.5 over SHA-256 of the image; the device requires the length to equal its key's modulus
  size. A gzip image is signed after compression: the signature follows the gzip stream.
- arduino-esp32 >= 3.3 (`tools/bin_signing.py`, `Updater.cpp`, `Updater_Signing.cpp`): the image, then
  the signature zero-padded to 512 bytes; RSA-PSS with MGF1 and the maximal salt, or DER ECDSA, over
  SHA-256, -384 or -512 of the image (the device is built for one hash).
- ESP-IDF Secure Boot v2 (`esp_secure_boot.h`, `espsecure`): a 4 KiB signature sector at the first sector
  boundary after the image, up to three 1216-byte blocks (magic 0xE7, version 2 = RSA-3072 PSS, 3 =
  ECDSA; the SHA-256 of everything before the sector; the public key; the signature, little-endian; a
  CRC-32 of the first 1196 bytes). A block names its key by the SHA-256 of its key fields, the digest
  the chip keeps in eFuse: that digest is matched against the product's keys.

Only the publish function and the CLI import this module: it needs `cryptography`, which the update
function never loads (tests/unit/test_signatures.py checks that).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from otafleet.imageformat import (
    ARDUINO_ESP32_SIGNATURE_SIZE,
    FLASH_SECTOR,
    SECURE_BOOT_V2_BLOCK_SIZE,
    Buffer,
    ImageError,
    ImageInfo,
)
from otafleet.models import ProductKey

# Secure Boot v2 as each chip's ROM implements it (esp-idf components/soc/<chip>/include/soc/soc_caps.h:
# SOC_SECURE_BOOT_V2_RSA / _ECC, SOC_EFUSE_SECURE_BOOT_KEY_DIGESTS). The ESP32 checks one block only
# (revision 3; "For ESP32-ECO3 only 1 signature block is supported", espsecure).
_SBV2_RSA = frozenset({"esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c5", "esp32c6", "esp32h2", "esp32p4"})
_SBV2_ECDSA = frozenset({"esp32c2", "esp32c5", "esp32c6", "esp32c61", "esp32h2", "esp32p4"})
_SBV2_P384 = frozenset({"esp32c5", "esp32p4"})
_SBV2_ONE_BLOCK = frozenset({"esp32", "esp32c2"})
_SBV2_MAX_BLOCKS = 3
_SBV2_CRC_LEN = 1196
_RSA = 2
_ECDSA = 3
_CURVES: dict[int, tuple[str, int]] = {1: ("p192", 24), 2: ("p256", 32), 3: ("p384", 48)}
_CURVE_IDS = {"secp192r1": 1, "secp256r1": 2, "secp384r1": 3}
_CURVE_NAMES = {"secp192r1": "p192", "secp256r1": "p256", "secp384r1": "p384"}
_ARDUINO_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
# DigestInfo prefix of SHA-256 in a PKCS#1 v1.5 signature (RFC 8017 §9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class InvalidKey(ValueError):
    """A public key file otafleet cannot use for this product (unreadable, or a kind its devices cannot
    verify with)."""


class SignatureError(ImageError):
    """A signed product refuses the upload: the reason says which check failed. Codes: `unsigned`,
    `wrong-signature-format`, `unknown-key`, `retired-key`, `bad-signature`, `truncated-signature`."""


@dataclass(frozen=True)
class KeyFacts:
    fingerprint: str
    algorithm: str
    pem: str
    sbv2_digest: str | None


@dataclass(frozen=True)
class Verified:
    scheme: str  # e.g. "esp8266-rsa-pkcs1v15-sha256", "arduino-esp32-ecdsa-sha256", "sbv2-rsa3072-pss"
    keys: tuple[str, ...]  # fingerprints of the product keys whose signatures verified, in block order


# ---------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------


def read_key(data: bytes, platform: str) -> KeyFacts:
    """Read a PEM public key (or a private key, of which only the public half is kept) for a product on
    `platform`, refusing what its devices cannot verify with."""
    key = _load_pem(data)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    if isinstance(key, rsa.RSAPublicKey):
        algorithm = f"rsa-{key.key_size}"
        if key.key_size not in (1024, 2048, 3072, 4096):
            raise InvalidKey(f"an RSA key of {key.key_size} bits: the device verifiers take 2048, 3072 or 4096")
    else:
        curve = _CURVE_NAMES.get(key.curve.name)
        if curve is None:
            raise InvalidKey(f"an EC key on {key.curve.name}: the device verifiers take P-192, P-256 or P-384")
        algorithm = f"ecdsa-{curve}"
        if platform == "esp8266":
            # BearSSL's EC verifier expects a raw signature of the key's point length, but signing.py
            # (openssl dgst -sign) writes DER: no stock ESP8266 build accepts an EC-signed update.
            raise InvalidKey(
                "ESP8266 signed updates take RSA keys: signing.py's EC signatures never verify on the device"
            )
    return KeyFacts(hashlib.sha256(der).hexdigest(), algorithm, pem, _sbv2_digest(key))


def _load_pem(data: bytes) -> PublicKey:
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as bad:
        raise InvalidKey(f"not a PEM public key otafleet can read ({bad})") from None
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise InvalidKey(f"a {type(public).__name__}: only RSA and ECDSA keys sign ESP firmware")
    return public


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _sbv2_key_fields(key: PublicKey) -> bytes | None:
    """The key as a Secure Boot v2 block carries it (ets_rsa_pubkey_t: n, e, rinv, mdash, little-endian;
    ECDSA: curve id, then X and Y little-endian, P-192 padded to 64 bytes): the bytes of the eFuse digest."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size != 3072:
            return None  # Secure Boot v2's RSA is RSA-3072 only
        numbers = key.public_numbers()
        n = numbers.n
        rinv = (1 << (2 * key.key_size)) % n  # R^2 mod n for the RSA peripheral's Montgomery form
        mdash = -pow(n, -1, 1 << 32) & 0xFFFFFFFF
        return _le(n, 384) + struct.pack("<I", numbers.e) + _le(rinv, 384) + struct.pack("<I", mdash)
    curve_id = _CURVE_IDS.get(key.curve.name)
    if curve_id is None:
        return None
    size = _CURVES[curve_id][1]
    point = key.public_numbers()
    raw = _le(point.x, size) + _le(point.y, size)
    return bytes([curve_id]) + raw.ljust(96 if curve_id == 3 else 64, b"\0")


def _sbv2_digest(key: PublicKey) -> str | None:
    fields = _sbv2_key_fields(key)
    return hashlib.sha256(fields).hexdigest() if fields is not None else None


def _public(key: ProductKey) -> PublicKey:
    return _load_pem(key.pem.encode())


# ---------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------


def verify(data: Buffer, info: ImageInfo, platform: str, keys: Sequence[ProductKey]) -> Verified:
    """Check the parsed upload `data` (`info` from imageformat) of a signed product on `platform` against
    the product's keys; SignatureError says which check failed."""
    view = memoryview(data)
    if info.signature is None:
        raise SignatureError(
            "the product is signed but the image carries no signature: sign the build with one of its "
            f"active keys ({_names(keys)}) before uploading",
            None,
            "unsigned",
        )
    esp8266 = platform == "esp8266"
    if esp8266 and info.signature == "esp8266":
        return _verify_esp8266(view, info, keys)
    if not esp8266 and info.signature == "arduino-esp32":
        return _verify_arduino_esp32(view, info, keys)
    if not esp8266 and info.signature == "secure-boot-v2":
        return _verify_sbv2(view, info, platform, keys)
    expected = (
        "the ESP8266 core's (signing.py: signature and u32 length after the image)"
        if esp8266
        else "arduino-esp32's (bin_signing.py) or an ESP-IDF Secure Boot v2 signature sector"
    )
    raise SignatureError(
        f"the image carries a {info.signature} signature, which {platform} devices do not verify; expected {expected}",
        None,
        "wrong-signature-format",
    )


def trailer_problem(error: ImageError) -> ImageError:
    """For a signed product, bytes after the image that are no complete signature are a signature problem."""
    if error.code == "trailing-data":
        return SignatureError(
            f"{error.reason} (a signed product's image must end in a complete signature; is it truncated?)",
            error.offset,
            "truncated-signature",
        )
    return error


def _names(keys: Sequence[ProductKey]) -> str:
    active = [k.name for k in keys if k.active]
    return ", ".join(active) if active else "none is active: add one with `otafleet product key add`"


def _accept(scheme: str, signed: list[ProductKey]) -> Verified:
    return Verified(scheme, tuple(k.fingerprint for k in signed))


def _retired(key: ProductKey, where: str) -> SignatureError:
    return SignatureError(
        f"{where} is by key {key.name} ({key.fingerprint[:16]}…), which is retired: sign with an active key",
        None,
        "retired-key",
    )


def _unknown(where: str, keys: Sequence[ProductKey], hint: str = "") -> SignatureError:
    return SignatureError(
        f"{where} is by none of the product's keys ({_names(keys)}){hint}",
        None,
        "unknown-key",
    )


def _changed(where: str, key: ProductKey) -> SignatureError:
    return SignatureError(
        f"{where} is by key {key.name} but does not match the image: the image was changed after signing, "
        "or the signature is damaged",
        None,
        "bad-signature",
    )


# --- ESP8266 --------------------------------------------------------------------------------------------


def _rsa_message(key: rsa.RSAPublicKey, signature: bytes) -> bytes | None:
    """The encoded message inside an RSA signature (s^e mod n), None when it cannot be one of this key's.
    Only to tell "signed by another key" from "signed by this key, image changed": acceptance is always
    cryptography's verify."""
    numbers = key.public_numbers()
    size = (key.key_size + 7) // 8
    if len(signature) != size:
        return None
    value = int.from_bytes(signature, "big")
    if value >= numbers.n:
        return None
    return pow(value, numbers.e, numbers.n).to_bytes(size, "big")


def _is_pkcs1_sha256(message: bytes) -> bool:
    body = message[2 : -len(_SHA256_DIGEST_INFO) - 32]
    return (
        message[:2] == b"\x00\x01"
        and len(body) >= 9
        and body[-1] == 0
        and set(body[:-1]) == {0xFF}
        and message[-32 - len(_SHA256_DIGEST_INFO) : -32] == _SHA256_DIGEST_INFO
    )


def _verify_esp8266(view: memoryview, info: ImageInfo, keys: Sequence[ProductKey]) -> Verified:
    size = len(view)
    length = struct.unpack_from("<I", view, size - 4)[0]
    body_end = size - 4 - length
    if info.layout == "esp8266-gzip" and info.compressed_size == size:
        raise SignatureError(
            "the signature is inside the gzip stream: the device verifies the compressed bytes it receives, "
            "so compress first and sign the .bin.gz (signing.py --bin firmware.bin.gz)",
            None,
            "wrong-signature-format",
        )
    signature, body = view[body_end : size - 4].tobytes(), view[:body_end]
    where = f"the {length}-byte RSA signature at 0x{body_end:x}"
    digest = hashlib.sha256(body).digest()
    rsa_keys = [(k, _public(k)) for k in keys]
    for key, public in rsa_keys:
        if not isinstance(public, rsa.RSAPublicKey):
            continue
        message = _rsa_message(public, signature)
        if message is None or not _is_pkcs1_sha256(message):
            continue  # not made with this key
        if not key.active:
            raise _retired(key, where)
        try:
            public.verify(signature, body.tobytes(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _changed(where, key) from None
        assert message[-32:] == digest
        return _accept("esp8266-rsa-pkcs1v15-sha256", [key])
    sizes = sorted({(p.key_size + 7) // 8 for _, p in rsa_keys if isinstance(p, rsa.RSAPublicKey)})
    hint = (
        f"; its length matches no key's modulus ({', '.join(map(str, sizes))} bytes), which the device requires"
        if length not in sizes
        else ""
    )
    raise _unknown(where, keys, hint)


# --- arduino-esp32 --------------------------------------------------------------------------------------


def _der_length(block: bytes) -> int | None:
    """The length of the DER SEQUENCE at the start of `block` (how Updater_Signing.cpp finds the ECDSA
    signature inside the zero padding), None when it does not start with one."""
    if len(block) < 2 or block[0] != 0x30:
        return None
    first = block[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count not in (1, 2) or len(block) < 2 + count:
        return None
    return 2 + count + int.from_bytes(block[2 : 2 + count], "big")


def _verify_arduino_esp32(view: memoryview, info: ImageInfo, keys: Sequence[ProductKey]) -> Verified:
    size = len(view)
    start = size - ARDUINO_ESP32_SIGNATURE_SIZE
    block, body = view[start:].tobytes(), view[:start]
    where = f"the signature block at 0x{start:x}"
    digests = {algorithm: hashes.Hash(algorithm()) for algorithm in _ARDUINO_HASHES}
    for hasher in digests.values():
        hasher.update(body)
    prehashed = {algorithm: hasher.finalize() for algorithm, hasher in digests.items()}
    der = _der_length(block)
    for key in keys:
        public = _public(key)
        if isinstance(public, rsa.RSAPublicKey):
            used = (public.key_size + 7) // 8
            signature = block[:used]
            message = _rsa_message(public, signature)
            if message is None or message[-1] != 0xBC or any(block[used:]):
                continue  # an EMSA-PSS encoding ends in 0xBC: not made with this key
            for algorithm, digest in prehashed.items():
                try:
                    # The maximal salt, as bin_signing.py signs and mbedtls 3.x devices require.
                    pss = padding.PSS(mgf=padding.MGF1(algorithm()), salt_length=padding.PSS.MAX_LENGTH)
                    public.verify(signature, digest, pss, utils.Prehashed(algorithm()))
                except InvalidSignature:
                    continue
                if not key.active:
                    raise _retired(key, where)
                return _accept(f"arduino-esp32-rsa-pss-{algorithm.name}", [key])
            raise _changed(where, key)
        if der is None or der > len(block) or any(block[der:]):
            continue
        for algorithm, digest in prehashed.items():
            try:
                public.verify(block[:der], digest, ec.ECDSA(utils.Prehashed(algorithm())))
            except InvalidSignature:
                continue
            if not key.active:
                raise _retired(key, where)
            return _accept(f"arduino-esp32-ecdsa-{algorithm.name}", [key])
    # An ECDSA signature does not say which key made it, so a changed image looks the same as another key.
    hint = " (or the image was changed after signing: ECDSA cannot tell the two apart)" if der is not None else ""
    raise _unknown(where, keys, hint)


# --- ESP-IDF Secure Boot v2 -----------------------------------------------------------------------------


def _verify_sbv2(view: memoryview, info: ImageInfo, platform: str, keys: Sequence[ProductKey]) -> Verified:
    sector = info.image_size + (-info.image_size % FLASH_SECTOR)
    digest256 = hashlib.sha256(view[:sector]).digest()
    by_digest = {k.sbv2_digest: k for k in keys if k.sbv2_digest}
    blocks: list[tuple[int, memoryview]] = []
    for index in range(_SBV2_MAX_BLOCKS):
        at = sector + index * SECURE_BOOT_V2_BLOCK_SIZE
        block = view[at : at + SECURE_BOOT_V2_BLOCK_SIZE]
        if block[0] != 0xE7:
            break
        if (
            block[1] not in (_RSA, _ECDSA)
            or zlib.crc32(block[:_SBV2_CRC_LEN]) != struct.unpack_from("<I", block, _SBV2_CRC_LEN)[0]
        ):
            raise SignatureError(
                f"signature block {index} at 0x{at:x} is damaged (its version or CRC-32 is wrong)", at, "bad-signature"
            )
        if any(block[_SBV2_CRC_LEN + 4 :]):
            raise SignatureError(
                f"signature block {index} at 0x{at:x} has non-zero bytes in its padding after the CRC",
                at,
                "bad-signature",
            )
        blocks.append((at, block))
    rest = sector + len(blocks) * SECURE_BOOT_V2_BLOCK_SIZE
    if any(byte != 0xFF for byte in view[rest : sector + FLASH_SECTOR]):
        raise SignatureError(
            f"the signature sector has data after its {len(blocks)} block(s), at 0x{rest:x}: espsecure fills it "
            "with 0xFF",
            rest,
            "bad-signature",
        )
    if len(blocks) > 1 and platform in _SBV2_ONE_BLOCK:
        raise SignatureError(
            f"the signature sector holds {len(blocks)} blocks, but {platform} checks only one key: sign it with "
            "one key",
            sector,
            "wrong-signature-format",
        )
    signed: list[ProductKey] = []
    schemes: set[str] = set()
    problems: list[SignatureError] = []
    for index, (at, block) in enumerate(blocks):
        where = f"signature block {index} at 0x{at:x}"
        scheme, fields, stored_digest, signature = _sbv2_fields(block, platform, where)
        key = by_digest.get(hashlib.sha256(fields).hexdigest())
        if key is None:
            problems.append(_unknown(where, keys, " (its key digest matches no key's Secure Boot v2 digest)"))
            continue
        if not key.active:
            problems.append(_retired(key, where))
            continue
        digest = hashlib.sha384(view[:sector]).digest() if len(stored_digest) == 48 else digest256
        if stored_digest != digest:
            problems.append(_changed(where, key))
            continue
        public = _public(key)
        try:
            if isinstance(public, rsa.RSAPublicKey):
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                public.verify(signature, digest, pss, utils.Prehashed(hashes.SHA256()))
            else:
                algorithm: hashes.HashAlgorithm = hashes.SHA384() if len(digest) == 48 else hashes.SHA256()
                public.verify(signature, digest, ec.ECDSA(utils.Prehashed(algorithm)))
        except InvalidSignature:
            problems.append(_changed(where, key))
            continue
        signed.append(key)
        schemes.add(scheme)
    if problems:
        # Every block must verify: a device that trusts only the failing block's key would refuse the image.
        raise problems[0]
    return _accept("+".join(sorted(schemes)), signed)


def _sbv2_fields(block: memoryview, platform: str, where: str) -> tuple[str, bytes, bytes, bytes]:
    """(scheme, key fields, image digest, signature as cryptography expects it) of one block."""
    if block[1] == _RSA:
        if platform not in _SBV2_RSA:
            raise SignatureError(
                f"{where} is RSA, but {platform} verifies Secure Boot v2 with ECDSA only",
                None,
                "wrong-signature-format",
            )
        signature = block[812 : 812 + 384].tobytes()[::-1]  # stored little-endian for the RSA peripheral
        return "sbv2-rsa3072-pss", block[36:812].tobytes(), block[4:36].tobytes(), signature
    if platform not in _SBV2_ECDSA:
        raise SignatureError(
            f"{where} is ECDSA, but {platform} verifies Secure Boot v2 with RSA only", None, "wrong-signature-format"
        )
    sha384 = block[2] == 1
    base = 52 if sha384 else 36
    curve = block[base]
    if curve not in _CURVES or (curve == 3) != sha384 or (curve == 3 and platform not in _SBV2_P384):
        raise SignatureError(
            f"{where} names ECDSA curve {curve} with hash {'SHA-384' if sha384 else 'SHA-256'}, which {platform} "
            "does not verify",
            None,
            "wrong-signature-format",
        )
    name, size = _CURVES[curve]
    width = 96 if sha384 else 64
    fields = block[base : base + 1 + width].tobytes()
    raw = block[base + 1 + width : base + 1 + 2 * width].tobytes()
    r, s = int.from_bytes(raw[:size], "little"), int.from_bytes(raw[size : 2 * size], "little")
    return (
        f"sbv2-ecdsa-{name}",
        fields,
        block[4 : 4 + (48 if sha384 else 32)].tobytes(),
        utils.encode_dss_signature(r, s),
    )


__all__ = ["InvalidKey", "KeyFacts", "SignatureError", "Verified", "read_key", "trailer_problem", "verify"]
