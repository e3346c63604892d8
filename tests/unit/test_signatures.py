"""Signed uploads (signatures.py) against fixtures made by the stock signing tools (tests/fixtures/signing)."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otafleet import signatures
from otafleet.imageformat import ImageError, parse_app_image
from otafleet.models import KeyState, ProductKey

FIXTURES = Path(__file__).parents[1] / "fixtures" / "signing"
ESPSECURE = Path(sys.executable).with_name("espsecure")


@cache
def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@cache
def key(name: str, platform: str = "esp32c6", state: KeyState = KeyState.ACTIVE) -> ProductKey:
    facts = signatures.read_key(fixture(f"pub-{name}.pem"), platform)
    return ProductKey(name, facts.fingerprint, facts.algorithm, facts.pem, state, facts.sbv2_digest)


def check(data: bytes, platform: str, *keys: ProductKey) -> signatures.Verified:
    """What ingest does for a signed product: parse, then verify."""
    try:
        info = parse_app_image(data, expect_chip=platform)
    except ImageError as bad:
        raise signatures.trailer_problem(bad) from None
    return signatures.verify(data, info, platform, keys)


def reason(data: bytes, platform: str, *keys: ProductKey) -> str:
    with pytest.raises(ImageError) as caught:
        check(data, platform, *keys)
    return caught.value.code


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


# (valid file, platform, the product's key, a file of the same image signed by another key, unsigned image,
#  offset of a byte inside the signed image, offset of the signature, scheme)
FORMATS = {
    "esp8266": ("esp8266-signed-a.bin", "esp8266", "rsa2048-a", "esp8266-signed-b.bin", "esp8266-unsigned.bin"),
    "esp8266-gzip": (
        "esp8266-gz-signed-a.bin.gz",
        "esp8266",
        "rsa2048-a",
        None,
        "esp8266-unsigned.bin.gz",
    ),
    "arduino-esp32-rsa": (
        "esp32s3-arduino-rsa-a.bin",
        "esp32s3",
        "rsa2048-a",
        "esp32s3-arduino-rsa-b.bin",
        "esp32s3-unsigned.bin",
    ),
    "arduino-esp32-ecdsa": (
        "esp32s3-arduino-ecdsa-a.bin",
        "esp32s3",
        "p256-a",
        "esp32s3-arduino-ecdsa-b.bin",
        "esp32s3-unsigned.bin",
    ),
    "sbv2-rsa": ("esp32c3-sbv2-rsa-a.bin", "esp32c3", "rsa3072-a", "esp32c3-sbv2-rsa-b.bin", "esp32c3-unsigned.bin"),
    "sbv2-ecdsa": ("esp32c6-sbv2-ecdsa-a.bin", "esp32c6", "p256-a", None, "esp32c6-unsigned.bin"),
    "sbv2-ecdsa-p192": ("esp32c2-sbv2-ecdsa192-a.bin", "esp32c2", "p192-a", None, "esp32c2-unsigned.bin"),
}
SCHEMES = {
    "esp8266": "esp8266-rsa-pkcs1v15-sha256",
    "esp8266-gzip": "esp8266-rsa-pkcs1v15-sha256",
    "arduino-esp32-rsa": "arduino-esp32-rsa-pss-sha256",
    "arduino-esp32-ecdsa": "arduino-esp32-ecdsa-sha256",
    "sbv2-rsa": "sbv2-rsa3072-pss",
    "sbv2-ecdsa": "sbv2-ecdsa-p256",
    "sbv2-ecdsa-p192": "sbv2-ecdsa-p192",
}


def signature_start(name: str, data: bytes) -> int:
    """Where the signature trailer of a fixture begins (and so the signed image ends)."""
    info = parse_app_image(data)
    if info.signature == "esp8266":
        length: int = struct.unpack_from("<I", data, len(data) - 4)[0]
        return len(data) - 4 - length
    if info.signature == "arduino-esp32":
        return len(data) - 512
    return len(data) - 4096


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_signature_is_accepted_and_names_its_key(fmt: str) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    verified = check(fixture(name), platform, key(key_name, platform))
    assert verified == signatures.Verified(SCHEMES[fmt], (key(key_name, platform).fingerprint,))


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_tampered_by_one_byte_is_a_bad_signature(fmt: str) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    data = fixture(name)
    # A byte of the segment data deep inside the image: parsing still succeeds where a checksum does not
    # cover it; either way the upload is refused.
    tampered = flip(data, signature_start(name, data) - 40)
    code = reason(tampered, platform, key(key_name, platform))
    # ECDSA cannot tell a changed image from another key's signature (arduino-esp32 carries no key).
    expected = {"arduino-esp32-ecdsa": "unknown-key"}.get(fmt, "bad-signature")
    assert code in (expected, "checksum", "hash", "crc", "gzip")


@pytest.mark.parametrize("fmt", [f for f, row in FORMATS.items() if row[3]])
def test_signed_by_another_key_is_an_unknown_key(fmt: str) -> None:
    _, platform, key_name, other, _ = FORMATS[fmt]
    assert other is not None
    assert reason(fixture(other), platform, key(key_name, platform)) == "unknown-key"


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsigned_image_is_refused_as_unsigned(fmt: str) -> None:
    _, platform, key_name, _, unsigned = FORMATS[fmt]
    assert reason(fixture(unsigned), platform, key(key_name, platform)) == "unsigned"


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_signature_is_refused(fmt: str) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    data = fixture(name)
    start = signature_start(name, data)
    # ESP8266: fewer signature bytes than the length word says; the others: the file ends inside it.
    cut = data[: start + 100] + data[-4:] if fmt.startswith("esp8266") else data[:-100]
    assert reason(cut, platform, key(key_name, platform)) in ("truncated-signature", "bad-signature")


@pytest.mark.parametrize("fmt", FORMATS)
def test_signature_without_image_is_refused(fmt: str) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    data = fixture(name)
    with pytest.raises(ImageError):
        check(data[signature_start(name, data) :], platform, key(key_name, platform))


def test_retired_key_is_refused_by_name() -> None:
    retired = key("rsa2048-a", "esp8266", KeyState.RETIRED)
    assert reason(fixture("esp8266-signed-a.bin"), "esp8266", retired) == "retired-key"


def test_sbv2_rsa_block_on_an_ecdsa_only_chip_is_the_wrong_format() -> None:
    data = fixture("esp32c3-sbv2-rsa-a.bin")
    info = parse_app_image(data)
    with pytest.raises(signatures.SignatureError) as caught:
        signatures.verify(data, info, "esp32c2", [key("rsa3072-a")])
    assert caught.value.code == "wrong-signature-format"


def test_esp8266_refuses_an_arduino_esp32_signature() -> None:
    data = fixture("esp32s3-arduino-rsa-a.bin")
    info = parse_app_image(data)
    with pytest.raises(signatures.SignatureError) as caught:
        signatures.verify(data, info, "esp8266", [key("rsa2048-a", "esp8266")])
    assert caught.value.code == "wrong-signature-format"


def test_signed_then_compressed_is_the_wrong_format() -> None:
    packed = gzip.compress(fixture("esp8266-signed-a.bin"), mtime=0)
    assert reason(packed, "esp8266", key("rsa2048-a", "esp8266")) == "wrong-signature-format"


def test_dual_signed_bridge_release_names_both_keys_and_needs_both_known() -> None:
    data = fixture("esp32c3-sbv2-rsa-ab.bin")
    a, b = key("rsa3072-a"), key("rsa3072-b")
    assert check(data, "esp32c3", a, b) == signatures.Verified("sbv2-rsa3072-pss", (a.fingerprint, b.fingerprint))
    assert reason(data, "esp32c3", a) == "unknown-key"  # register the new key before uploading the bridge


def test_esp32_checks_a_single_block() -> None:
    data = fixture("esp32c3-sbv2-rsa-ab.bin")
    info = parse_app_image(data)
    with pytest.raises(signatures.SignatureError) as caught:
        signatures.verify(data, info, "esp32", [key("rsa3072-a"), key("rsa3072-b")])
    assert caught.value.code == "wrong-signature-format"


# --- cross-checks against the tools -----------------------------------------------------------------


def test_esp8266_signature_is_byte_for_byte_what_openssl_writes() -> None:
    """PKCS#1 v1.5 is deterministic: signing.py's openssl call and cryptography give the same bytes."""
    unsigned = fixture("esp8266-unsigned.bin")
    private = serialization.load_pem_private_key(fixture("rsa2048-a.pem"), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(unsigned, padding.PKCS1v15(), hashes.SHA256())
    assert fixture("esp8266-signed-a.bin") == unsigned + signature + struct.pack("<I", 256)
    if shutil.which("openssl"):
        made = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(FIXTURES / "rsa2048-a.pem")],
            input=unsigned,
            capture_output=True,
            check=True,
        ).stdout
        assert made == signature


def test_arduino_esp32_layout_matches_bin_signing() -> None:
    """bin_signing.py: image, then the signature zero-padded to 512 bytes."""
    unsigned = fixture("esp32s3-unsigned.bin")
    signed = fixture("esp32s3-arduino-ecdsa-a.bin")
    assert signed[: len(unsigned)] == unsigned and len(signed) == len(unsigned) + 512
    der_length = signed[len(unsigned) + 1] + 2
    assert signed[len(unsigned)] == 0x30 and not any(signed[len(unsigned) + der_length :])


def test_sha384_arduino_signature_is_recognised() -> None:
    verified = check(fixture("esp32s3-arduino-rsa3072-sha384-a.bin"), "esp32s3", key("rsa3072-a"))
    assert verified.scheme == "arduino-esp32-rsa-pss-sha384"


@pytest.mark.skipif(not ESPSECURE.exists(), reason="espsecure (esptool) is not installed")
@pytest.mark.parametrize("name", ["rsa3072-a", "p256-a", "p192-a"])
def test_sbv2_key_digest_is_espsecures(name: str, tmp_path: Path) -> None:
    out = tmp_path / "digest.bin"
    subprocess.run(
        [
            str(ESPSECURE),
            "digest-sbv2-public-key",
            "--keyfile",
            str(FIXTURES / f"pub-{name}.pem"),
            "--output",
            str(out),
        ],
        capture_output=True,
        check=True,
    )
    assert key(name).sbv2_digest == out.read_bytes().hex()


@pytest.mark.skipif(not ESPSECURE.exists(), reason="espsecure (esptool) is not installed")
def test_espsecure_agrees_a_tampered_sbv2_image_is_bad(tmp_path: Path) -> None:
    data = fixture("esp32c3-sbv2-rsa-a.bin")
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(flip(data, 0x100))
    run = subprocess.run(
        [
            str(ESPSECURE),
            "verify-signature",
            "--version",
            "2",
            "--keyfile",
            str(FIXTURES / "pub-rsa3072-a.pem"),
            str(tampered),
        ],
        capture_output=True,
    )
    assert run.returncode != 0
    assert reason(tampered.read_bytes(), "esp32c3", key("rsa3072-a")) in ("bad-signature", "checksum", "hash")


# --- keys ---------------------------------------------------------------------------------------------


def test_read_key_accepts_private_keys_but_keeps_the_public_half() -> None:
    from_private = signatures.read_key(fixture("rsa2048-a.pem"), "esp8266")
    assert from_private == signatures.read_key(fixture("pub-rsa2048-a.pem"), "esp8266")
    assert "PRIVATE" not in from_private.pem and from_private.algorithm == "rsa-2048"


def test_read_key_refuses_ec_keys_for_esp8266_and_garbage() -> None:
    with pytest.raises(signatures.InvalidKey, match="RSA"):
        signatures.read_key(fixture("pub-p256-a.pem"), "esp8266")
    with pytest.raises(signatures.InvalidKey):
        signatures.read_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "esp32")


# --- mutations ----------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(FORMATS)), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_no_single_bit_flip_is_ever_accepted(fmt: str, where: float, bit: int) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    data = bytearray(fixture(name))
    data[int(where * len(data))] ^= 1 << bit
    with pytest.raises(ImageError):
        check(bytes(data), platform, key(key_name, platform))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    where=st.floats(0, 1, exclude_max=True),
    cut=st.integers(1, 64),
    insert=st.binary(min_size=0, max_size=8),
)
def test_no_cut_or_splice_is_ever_accepted(fmt: str, where: float, cut: int, insert: bytes) -> None:
    name, platform, key_name, _, _ = FORMATS[fmt]
    data = fixture(name)
    at = int(where * len(data))
    mutated = data[:at] + insert + data[at + cut :]
    assume(mutated != data)  # a splice of the bytes that were there is the signed image itself
    with pytest.raises(ImageError):
        check(mutated, platform, key(key_name, platform))


def test_update_function_never_imports_cryptography() -> None:
    code = "import sys, update.app; print('cryptography' in sys.modules, 'otafleet.signatures' in sys.modules)"
    functions = Path(__file__).parents[2] / "functions"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=functions, check=True)
    assert run.stdout.split() == ["False", "False"]
