"""What the stock ESP update clients send, parsed and validated.

ESP8266httpUpdate and arduino-esp32's HTTPUpdate identify themselves by User-Agent and describe the
device in `x-<dialect>-*` headers. Only the User-Agent and a device identity (`identity_mac`) are
required: older cores omit mode, MD5 and chip id, and a sketch may pass no version. Everything else is
validated when present, so a malformed header is refused with a reason instead of surfacing later as a
crash. An empty optional header is absent, not malformed: arduino-esp32 2.x sends an empty AP-MAC when
Wi-Fi is off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from otafleet import names
from otafleet.models import Delivery, Dialect, Kind

USER_AGENTS = {"esp8266-http-update": Dialect.ESP8266, "esp32-http-update": Dialect.ESP32}

# Filesystem modes the clients send; ESP8266 says "spiffs" for LittleFS too.
FS_MODES = frozenset({"spiffs", "littlefs", "fatfs", "flashfs"})
MODES = FS_MODES | {"sketch", "version"}

MAX_HEADER_VALUE = 256
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*\Z")  # \Z: `$` would let a trailing newline through

# Normalised MACs that never name a device, with why. arduino-esp32 3.x reports 00:00:00:00:00:00 for a
# Wi-Fi interface that is down (STA and AP MAC of an Ethernet board, AP MAC of a station): taken as an
# identity, every such board of a fleet would be one device. The broadcast address is no one's either.
NOT_DEVICE_MACS = {
    "00:00:00:00:00:00": "the all-zero MAC is what arduino-esp32 3.x reports for a Wi-Fi interface that is down",
    "FF:FF:FF:FF:FF:FF": "the broadcast address is not a device's own MAC",
}


class ProtocolError(Exception):
    """A request the service refuses before looking anything up; `status` is what the device gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CheckRequest:
    """One update check as the device's headers state it, parsed and validated (parse_check)."""

    dialect: Dialect
    mac: str  # the identity (identity_mac): what the device is looked up, enrolled, authenticated and logged by
    mode: str = "sketch"
    ap_mac: str | None = None
    free_space: int | None = None
    sketch_size: int | None = None
    chip_size: int | None = None
    sdk_version: str | None = None
    sketch_md5: str | None = None
    sketch_sha256: str | None = None
    chip_id: str | None = None
    version: str | None = None
    # Only whether the client sent one and its value; checking it is the decision's business.
    authorization: str | None = None
    scheme: str = "https"
    source_ip: str | None = None
    product: str | None = None
    delivery: Delivery | None = None
    # Set only by `otafleet explain`'s dry run, which has no device credentials to present.
    dry_run: bool = False

    @property
    def kind(self) -> Kind:
        return Kind.FS if self.mode in FS_MODES else Kind.APP

    @property
    def is_probe(self) -> bool:
        return self.mode == "version"


def normalise_mac(value: str) -> str | None:
    """`aa-bb-cc-dd-ee-ff`, `aabbccddeeff` or `AA:BB:…` → `AA:BB:CC:DD:EE:FF`; None if not a MAC."""
    value = value.strip()
    if not _MAC.match(value):
        return None
    if len(value) == 17:  # separated, and by one separator throughout (the pattern's back-reference)
        return value.upper().replace("-", ":")
    digits = value.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_device_mac(mac: str) -> bool:
    """Whether a normalised MAC can be a device's identity: never stored, enrolled, assigned or counted if not."""
    return mac not in NOT_DEVICE_MACS


def not_a_device(mac: str) -> str:
    """Why a normalised MAC that `is_device_mac` refuses names no device, as a sentence for an operator."""
    return (
        f"{mac} is not a device: {NOT_DEVICE_MACS.get(mac, 'it names no single device')}; "
        "an ESP32 without an active Wi-Fi station (e.g. an Ethernet board) is known by its base MAC"
    )


def identity_mac(sta_mac: str | None, base_mac: str | None) -> str | None:
    """The one identity rule (esp-http-update.md §5): the STA MAC, unless it is absent or not a device's
    (all zeros on arduino-esp32 3.x with Wi-Fi off), then the base MAC (newest cores send it; chips without
    Wi-Fi send only it). Both normalised or None; None when neither names a device."""
    for mac in (sta_mac, base_mac):
        if mac is not None and is_device_mac(mac):
            return mac
    return None


def dialect_for(user_agent: str | None) -> Dialect:
    dialect = USER_AGENTS.get((user_agent or "").strip().lower())
    if dialect is None:
        raise ProtocolError(403, "only ESP8266/ESP32 HTTP update clients are served")
    return dialect


def parse_check(
    headers: Mapping[str, str],
    *,
    query: Mapping[str, str] | None = None,
    product: str | None = None,
    source_ip: str | None = None,
) -> CheckRequest:
    """Turn the request's headers into a CheckRequest, or raise ProtocolError(403, reason)."""
    h = {k.lower(): v for k, v in headers.items()}
    dialect = dialect_for(h.get("user-agent"))
    prefix = f"x-{dialect.value.lower()}-"
    if product is not None:
        # From the URL path (/update/{product}): no product can have a name outside names.product's rules.
        try:
            names.product(product)
        except names.InvalidName as bad:
            raise ProtocolError(404, str(bad)) from None

    def text(name: str) -> str | None:
        """The header's value, stripped; None when absent or empty (an empty optional header is absent)."""
        value = h.get(prefix + name)
        if value is None:
            return None
        if len(value) > MAX_HEADER_VALUE or not _PRINTABLE.match(value):
            raise ProtocolError(403, f"header {prefix}{name} is too long or not printable text")
        return value.strip() or None

    def mac(name: str) -> str | None:
        """The normalised MAC; None when absent, empty or not a device's (an interface that is down)."""
        value = text(name)
        if value is None:
            return None
        normal = normalise_mac(value)
        if normal is None:
            raise ProtocolError(403, f"header {prefix}{name} is not a MAC address: {value[:40]!r}")
        return normal if is_device_mac(normal) else None

    def count(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        if not value.isdigit() or len(value) > 12:
            raise ProtocolError(403, f"header {prefix}{name} must be a non-negative integer: {value[:40]!r}")
        return int(value)

    def digest(name: str, pattern: re.Pattern[str]) -> str | None:
        value = text(name)
        if value is None:
            return None
        if not pattern.match(value):
            raise ProtocolError(403, f"header {prefix}{name} is not a hex digest: {value[:70]!r}")
        return value.lower()

    identity = identity_mac(mac("sta-mac"), mac("base-mac"))
    if identity is None:
        sent = ", ".join(f"{name} {h[prefix + name]!r}" for name in ("sta-mac", "base-mac") if prefix + name in h)
        raise ProtocolError(
            403,
            f"header {prefix}sta-mac (or {prefix}base-mac) is required and must name the device: an empty, "
            f"all-zero or broadcast MAC names none (sent: {sent or 'neither'})",
        )

    mode = (text("mode") or "sketch").lower()
    if mode not in MODES:
        raise ProtocolError(403, f"header {prefix}mode has an unknown value: {mode[:40]!r}")
    if mode == "version" and dialect is not Dialect.ESP8266:
        raise ProtocolError(403, "the version probe is an ESP8266 client feature")

    chip_id = text("chip-id")
    if chip_id is not None and not chip_id.isdigit():
        raise ProtocolError(403, f"header {prefix}chip-id must be decimal: {chip_id[:40]!r}")

    delivery: Delivery | None = None
    if query and "delivery" in query:
        try:
            delivery = Delivery(query["delivery"])
        except ValueError:
            raise ProtocolError(403, "query parameter delivery must be 'inline' or 'redirect'") from None

    authorization = h.get("authorization")
    if authorization is not None and len(authorization) > 1024:
        raise ProtocolError(403, "Authorization header is too long")
    # An empty one is absent too: it must not switch the device to inline delivery.
    authorization = (authorization or "").strip() or None

    return CheckRequest(
        dialect=dialect,
        mac=identity,
        mode=mode,
        ap_mac=mac("ap-mac"),
        free_space=count("free-space"),
        sketch_size=count("sketch-size"),
        chip_size=count("chip-size"),
        sdk_version=text("sdk-version"),
        sketch_md5=digest("sketch-md5", _MD5),
        sketch_sha256=digest("sketch-sha256", _SHA256),
        chip_id=chip_id,
        version=text("version"),
        authorization=authorization,
        scheme=_scheme(h),
        source_ip=source_ip,
        product=product,
        delivery=delivery,
    )


def _scheme(h: Mapping[str, str]) -> str:
    # CloudFront's plain-HTTP listener and the local stack say "http"; API Gateway itself is TLS only.
    proto = (h.get("cloudfront-forwarded-proto") or h.get("x-forwarded-proto") or "https").split(",")[0]
    return "http" if proto.strip().lower() == "http" else "https"
