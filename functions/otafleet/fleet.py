"""Operator operations on the fleet: products, channels and rollouts, devices and their credentials.

Pure logic over the storage adapters (no boto3 here), so the `otafleet` CLI stays a thin layer of
argument parsing and printing. Every user mistake raises `FleetError` with a message fit to print as is.

Channel rules (product.md §1, §5; issue 5):
- `set_channel` points a channel's track for one kind of image at a registered release. Below 100 % it
  is a staged rollout: the new release for the devices whose rollout bucket (rollout.py) falls under the
  percentage, `previous` for the rest. `previous` is the channel's last good release: the current version
  when its rollout was complete and active, else the current track's own `previous` (a halted or partial
  rollout is never what the rest of the fleet falls back to). Setting the same version again changes
  only the percentage and thresholds: `previous`, the state and the counters stay.
- `rollback` points the track at `previous` with `rollback=True`, so devices accept the older release
  as a deliberate downgrade; the bad release is not kept as anyone's fallback.
- `pause` / `resume` set the rollout state; `resume` also clears a halt (the service halts a rollout
  by itself when its failure rate crosses `max_failure_rate` after `min_devices` outcomes). A halted
  rollout whose counts are still over the threshold would halt again at once, so resuming it needs
  `reset_counts` (or a higher threshold).
- Outcome counts belong to one rollout: pointing a channel at a version anew (including by a
  rollback) starts them from zero.
- Every track write is conditional on the track that was read, so an operator's change never
  overwrites a concurrent halt or promotion (it is tried once more on fresh data, then refused).
- Every change an operator makes here is recorded in the audit trail (audit.py), once it succeeded; a
  Fleet made without an `Auditor` (the publish function's) records nothing.

The rules themselves (targets, thresholds, last good release) are rollout.py's; this module applies them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import cmp_to_key
from typing import Any

from otafleet import attempts, audit, credentials, names, plans, rollout, versions, windows
from otafleet.audit import Auditor
from otafleet.models import (
    PLATFORMS,
    AuditEntry,
    Catalog,
    Channel,
    Delivery,
    Device,
    KeyState,
    Kind,
    Product,
    ProductKey,
    Release,
    ReleaseState,
    Track,
    TrackState,
    Window,
)
from otafleet.protocol import is_device_mac, normalise_mac, not_a_device
from otafleet.rhythm import epoch
from otafleet.service import utc_now
from otafleet.storage.catalog import CatalogStore, TrackChange
from otafleet.storage.devices import DeviceStore
from otafleet.storage.errors import Conflict, NotFound


class FleetError(Exception):
    """A user mistake (unknown product, bad MAC, missing release, …); the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unknown(FleetError):
    """The product, channel or device named does not exist (the operator API answers 404)."""


class Changed(FleetError):
    """The record changed underneath the action, which was not applied: try again (the API answers 409)."""


@dataclass(frozen=True)
class TrackStatus:
    """One channel's track for one kind of image, with its rollout counts."""

    product: str
    channel: str
    kind: Kind
    track: Track

    @property
    def outcomes(self) -> int:
        return rollout.outcomes(self.track)

    @property
    def failure_rate(self) -> float | None:
        return rollout.failure_rate(self.track)

    @property
    def over_threshold(self) -> bool:
        return rollout.over_threshold(self.track)

    @property
    def state(self) -> TrackState:
        """As devices see it: a rollout over its threshold is halted even before the halt is written."""
        return rollout.effective_state(self.track)

    @property
    def staged(self) -> bool:
        return rollout.staged(self.track)


@dataclass(frozen=True)
class VersionCount:
    version: str | None  # None: the devices did not say which version they run
    devices: int


@dataclass(frozen=True)
class ProductVersions:
    product: str | None  # None: devices not assigned to any product
    versions: tuple[VersionCount, ...]


@dataclass(frozen=True)
class FleetOverview:
    devices: tuple[Device, ...]
    distribution: tuple[ProductVersions, ...]
    # Tracks of the listed products that are staged, paused or halted: what an operator must know.
    rollouts: tuple[TrackStatus, ...]
    seen_products: dict[str, str]  # MAC → product an unassigned device asked for


@dataclass(frozen=True)
class ChannelSummary:
    """One channel of a product as `otafleet channels` lists it."""

    channel: Channel
    tracks: tuple[TrackStatus, ...]
    devices: int  # devices assigned to it (from the eventually consistent by-product index)
    default: bool  # the product's default channel: where enrolled and newly assigned devices go


@dataclass(frozen=True)
class Revoked:
    release: Release
    serving: tuple[str, ...]  # channels that serve it still (revoked with force): they now offer nothing of it
    already: bool = False  # it was revoked before: nothing changed


@dataclass(frozen=True)
class Deleted:
    """What a delete removed, for the CLI to report."""

    what: str  # "product door", "channel door/beta", "device 5C:…"
    items: int = 1  # catalog items deleted (a product's channels, releases, rejected uploads, counts)
    unassigned: tuple[str, ...] = ()  # MACs of devices a forced product delete unassigned


@dataclass(frozen=True)
class DevicePage:
    """One page of a device listing, in MAC order."""

    devices: tuple[Device, ...]
    total: int  # devices matching, on every page
    after: str | None  # the MAC the next page starts after; None on the last page


@dataclass(frozen=True)
class ProductOverview:
    """What the operator console's first screen shows of a product (or one of its channels)."""

    product: str
    channel: str | None
    devices: int
    versions: tuple[VersionCount, ...]  # devices per version they run, version order, unknown last
    states: tuple[tuple[str, int], ...]  # devices per DEVICE_STATES entry (a device can be in several)
    rollouts: tuple[TrackStatus, ...]  # the staged, paused and halted tracks


MAX_PAGE = 200  # devices on one page of a listing at most


def parse_any_mac(value: str) -> str:
    """A MAC, normalised, whether or not a device can have it (deleting old records takes any)."""
    mac = normalise_mac(value)
    if mac is None:
        raise FleetError(f"not a MAC address: {value!r} (expected e.g. 5C:CF:7F:12:34:56)")
    return mac


def parse_mac(value: str) -> str:
    mac = parse_any_mac(value)
    if not is_device_mac(mac):  # e.g. the zero MAC: no device checks in under it, so none is kept under it
        raise FleetError(not_a_device(mac))
    return mac


def check_name(what: str, value: str) -> str:
    """A product or channel name (`what`), or a version, by the rules of otafleet.names."""
    check = {"product": names.product, "channel": names.channel, "version": names.version}[what]
    try:
        return check(value)
    except names.InvalidName as bad:
        raise FleetError(str(bad)) from None


def _version_cmp(a: str, b: str) -> int:
    """A total order for display: versions.compare where it orders, orderable versions before the rest,
    then by text."""
    c = versions.compare(a, b)
    if c:
        return c
    if c is None:
        pa, pb = versions.parse(a), versions.parse(b)
        if (pa.numbers is None) != (pb.numbers is None):
            return -1 if pa.numbers is not None else 1
    return (a > b) - (a < b)


version_key = cmp_to_key(_version_cmp)


def sort_versions(values: Iterable[str]) -> list[str]:
    return sorted(values, key=version_key)


def device_version(device: Device) -> str | None:
    """The version a device runs as far as the service knows (attempts.running_version's rule), from
    what it last reported."""
    return attempts.running_version(device, device.reported.version, device.reported.sketch_md5)


# What `otafleet devices --state` filters by: the facts the service keeps about each device.
DEVICE_STATES = (
    "unassigned",  # seen checking in, never assigned (or unassigned by a forced product delete)
    "blocked",
    "pinned",
    "offered",  # an attempt in flight: handed an image, the next checks will tell
    "installed",
    "failed",  # an attempt failed, or a release is on its failed list
    "unknown",  # an attempt ended without evidence either way
    "silent",  # handed an image and not heard from since, far longer than its rhythm allows
    "never-seen",  # assigned, but no check of it was ever recorded
)


def device_states(device: Device) -> frozenset[str]:
    """Which of DEVICE_STATES hold for the device (several can)."""
    found = {a.state.value for a in device.attempts.values()}
    if not device.assigned:
        found.add("unassigned")
    if device.blocked:
        found.add("blocked")
    if device.pins:
        found.add("pinned")
    if device.failed:
        found.add("failed")
    if last_seen(device) is None:
        found.add("never-seen")
    return frozenset(found)


def last_seen(device: Device) -> str | None:
    """When the device was last seen, to the heartbeat's resolution: a check that changes nothing is not
    written until the record is CHECK_HEARTBEAT_MINUTES old (check_writes.py)."""
    return device.last_seen or device.reported.at


@dataclass(frozen=True)
class DeviceFilter:
    """`otafleet devices` filters; None passes everything. Seen-spans are seconds before now."""

    version: str | None = None  # the version it runs (device_version)
    state: str | None = None  # one of DEVICE_STATES
    seen_before: int | None = None  # last seen longer ago than this (never-seen devices do not match)
    seen_within: int | None = None  # last seen at most this long ago

    def matches(self, device: Device, now: int) -> bool:
        if self.version is not None and device_version(device) != self.version:
            return False
        if self.state is not None and self.state not in device_states(device):
            return False
        if self.seen_before is None and self.seen_within is None:
            return True
        seen = last_seen(device)
        if seen is None:
            return False
        age = now - epoch(seen)
        if self.seen_before is not None and age <= self.seen_before:
            return False
        return self.seen_within is None or age <= self.seen_within


def distribution(devices: Iterable[Device]) -> tuple[ProductVersions, ...]:
    """Devices per reported version, per product, versions in version order (unknown last)."""
    per_product: dict[str | None, Counter[str | None]] = {}
    for d in devices:
        per_product.setdefault(d.product if d.assigned else None, Counter())[device_version(d)] += 1
    out: list[ProductVersions] = []
    for product in sorted(per_product, key=lambda p: (p is None, p or "")):
        counts = per_product[product]
        known = sort_versions(v for v in counts if v is not None)
        rows = [VersionCount(v, counts[v]) for v in known]
        if None in counts:
            rows.append(VersionCount(None, counts[None]))
        out.append(ProductVersions(product, tuple(rows)))
    return tuple(out)


class Fleet:
    def __init__(
        self,
        devices: DeviceStore | None,
        catalog: CatalogStore,
        clock: Callable[[], str] = utc_now,
        auditor: Auditor | None = None,
    ) -> None:
        # The publish function promotes releases with only the catalog (it has no access to devices).
        self._devices = devices
        self.catalog_store = catalog
        self.clock = clock
        self.auditor = auditor

    def _record(
        self,
        product: str | None,
        action: str,
        target: Mapping[str, str],
        before: Mapping[str, Any],
        after: Mapping[str, Any],
    ) -> None:
        """After an action succeeded: its audit entry (a failure to write it is the Auditor's to report)."""
        if self.auditor is not None:
            self.auditor.record(product, action, target, before, after)

    def audit_entries(
        self, product: str | None = None, *, since: str | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """The audit trail newest first: one product's (or all), since a duration or time (audit.parse_since)."""
        if self.auditor is None:
            raise RuntimeError("this Fleet was created without the audit table")
        if product is not None and product != audit.NO_PRODUCT:
            check_name("product", product)
        if limit < 1:
            raise FleetError(f"--limit must be at least 1, not {limit}")
        start = None
        if since is not None:
            try:
                start = audit.parse_since(since, audit.parse_time(self.clock()))
            except audit.InvalidSince as bad:
                raise FleetError(str(bad)) from None
        return self.auditor.store.entries(product, since=start, limit=limit)

    @property
    def devices_store(self) -> DeviceStore:
        if self._devices is None:
            raise RuntimeError("this Fleet was created without the devices table")
        return self._devices

    # --- products and releases --------------------------------------------------------------------

    def catalog(self, product: str) -> Catalog:
        catalog = self.catalog_store.load(product, fresh=True)
        if catalog is None:
            raise Unknown(
                f"unknown product {product!r}; create it with `otafleet product create {product} --platform …`"
            )
        return catalog

    def products(self) -> list[Product]:
        return self.catalog_store.products()

    def save_product(
        self,
        name: str,
        *,
        platform: str | None = None,
        delivery: Delivery | None = None,
        enroll: bool | None = None,
        auth_required: bool | None = None,
        allow_downgrade: bool | None = None,
        default_channel: str | None = None,
    ) -> tuple[Product, bool]:
        """Create the product, or change the given settings of an existing one (None keeps a setting).
        Returns the product and whether it was created."""
        check_name("product", name)
        if platform is not None and platform not in PLATFORMS:
            raise FleetError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
        if default_channel is not None:
            check_name("channel", default_channel)
        existing = self.catalog_store.load(name, fresh=True)
        if existing is None and platform is None:
            raise FleetError(f"product {name!r} does not exist yet: --platform is required to create it")
        base = existing.product if existing else Product(name=name, platform=platform or "")
        changes: dict[str, object] = {
            "platform": platform,
            "delivery": delivery,
            "enroll": enroll,
            "auth_required": auth_required,
            "allow_downgrade": allow_downgrade,
            "default_channel": default_channel,
        }
        product = replace(base, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
        self.catalog_store.put_product(product)
        before = audit.product_fields(existing.product if existing else None)
        action = "product.create" if existing is None else "product.update"
        self._record(name, action, {}, before, audit.product_fields(product))
        return product, existing is None

    # --- signing keys ---------------------------------------------------------------------------------

    def add_key(self, product: str, pem: bytes, name: str | None = None) -> ProductKey:
        """Make `product` a signed product accepting uploads signed by this public key (or add a key for a
        rotation). The name defaults to the fingerprint's first 12 hex digits."""
        # Imported here: cryptography is for the key commands and the publish function, not every command.
        from otafleet import signatures

        base = self.catalog(product).product
        try:
            facts = signatures.read_key(pem, base.platform)
        except signatures.InvalidKey as bad:
            raise FleetError(f"cannot use that key for {product} ({base.platform}): {bad}") from None
        name = name or facts.fingerprint[:12]
        check_name("channel", name)  # the same rules as a channel name: short, no spaces or slashes
        for existing in base.keys:
            if existing.fingerprint == facts.fingerprint:
                raise FleetError(f"product {product} already has this key, as {existing.name} ({existing.state.value})")
            if existing.name == name:
                raise FleetError(f"product {product} already has a key named {name}: choose another --name")
        key = ProductKey(
            name=name,
            fingerprint=facts.fingerprint,
            algorithm=facts.algorithm,
            pem=facts.pem,
            sbv2_digest=facts.sbv2_digest,
            added_at=self.clock(),
        )
        updated = replace(base, keys=(*base.keys, key))
        self.catalog_store.put_product(updated)
        self._record(product, "key.add", {"key": name}, audit.product_fields(base), audit.product_fields(updated))
        return key

    def keys(self, product: str) -> list[ProductKey]:
        return list(self.catalog(product).product.keys)

    def retire_key(self, product: str, name: str) -> ProductKey:
        """Stop accepting uploads signed by the key (name or fingerprint). Releases it signed stay, and keep
        naming it; the product stays signed even when no active key is left (then every upload is refused)."""
        base = self.catalog(product).product
        key = base.key(name)
        if key is None:
            raise FleetError(f"product {product} has no key {name!r}: `otafleet product key list {product}` lists them")
        retired = replace(key, state=KeyState.RETIRED, retired_at=key.retired_at or self.clock())
        updated = replace(base, keys=tuple(retired if k is key else k for k in base.keys))
        self.catalog_store.put_product(updated)
        self._record(
            product, "key.retire", {"key": key.name}, audit.product_fields(base), audit.product_fields(updated)
        )
        return retired

    def releases(self, product: str, *, with_rejections: bool = False) -> list[Release]:
        """The product's releases by kind and version; `with_rejections` adds its rejected uploads (state
        rejected, with their reason), each after the release of its version, oldest first, so an operator
        sees why an upload never became a release."""
        catalog = self.catalog(product)
        found = list(catalog.releases.values())
        if with_rejections:
            found += self.catalog_store.rejections(product)
        return sorted(
            found,
            key=lambda r: (
                r.kind.value,
                version_key(r.version),
                r.state is ReleaseState.REJECTED,
                r.uploaded_at or "",
            ),
        )

    def rejection(self, product: str, kind: Kind, version: str) -> Release | None:
        """The latest rejected upload of this version, if any."""
        found = [r for r in self.catalog_store.rejections(product) if r.kind is kind and r.version == version]
        return found[-1] if found else None

    def release(self, product: str, version: str, kind: Kind = Kind.APP) -> Release | None:
        return self.catalog_store.get_release(product, kind, version)

    def upload_status(self, product: str, version: str, kind: Kind, sha256: str) -> Release | None:
        """What became of an upload of these bytes: its release, its rejection, or None (not yet)."""
        return self.catalog_store.upload_status(product, kind, version, sha256)

    def channels(self, product: str) -> list[Channel]:
        return sorted(self.catalog(product).channels.values(), key=lambda c: c.name)

    def channel_list(self, product: str) -> list[ChannelSummary]:
        """Every channel of the product with its tracks and how many devices are assigned to it."""
        catalog = self.catalog(product)
        members = Counter(d.channel for d in self._assigned_devices(product))
        return [
            ChannelSummary(
                channel=ch,
                tracks=tuple(
                    TrackStatus(product, ch.name, k, t)
                    for k, t in sorted(ch.tracks.items(), key=lambda kt: kt[0].value)
                ),
                devices=members[ch.name],
                default=ch.name == catalog.product.default_channel,
            )
            for ch in sorted(catalog.channels.values(), key=lambda c: c.name)
        ]

    def _assigned_devices(self, product: str) -> list[Device]:
        return [d for d in self.devices_store.product_devices(product) if d.assigned and d.product == product]

    # --- deleting and revoking ----------------------------------------------------------------------

    def revoke(self, product: str, version: str, kind: Kind = Kind.APP, *, force: bool = False) -> Revoked:
        """Revoke a registered release: from now on it is offered to no device (decision.py answers
        `target-unavailable` for a revoked target), although its record and bytes stay. A release a channel
        serves (its version, or the baseline the rest of a staged rollout runs) is revoked only with
        `force`: that channel then offers nothing of this kind until it is pointed at another release.
        Revoking a revoked release changes nothing."""
        catalog = self.catalog(product)
        release = catalog.release(kind, version)
        if release is None:
            rejected = self.rejection(product, kind, version)
            if rejected is not None:
                raise FleetError(f"{rejection_text(rejected)}; a rejected upload is never offered, nothing to revoke")
            _offerable(catalog, kind, version)  # raises the "no release" error with the registered versions
            raise AssertionError("unreachable")
        if release.state is ReleaseState.REJECTED:
            raise FleetError(f"{product} {kind.value} {version} was rejected; it is never offered, nothing to revoke")
        serving = tuple(
            ch.name
            for ch in sorted(catalog.channels.values(), key=lambda c: c.name)
            if (track := ch.tracks.get(kind)) is not None and version in (track.version, rollout.baseline(track))
        )
        if release.state is ReleaseState.REVOKED:
            return Revoked(release, serving, already=True)
        if serving and not force:
            flag = " --fs" if kind is Kind.FS else ""
            raise FleetError(
                f"{product} {kind.value} {version} is served by channel {', '.join(serving)}: point "
                f"{'it' if len(serving) == 1 else 'them'} at another release first (`otafleet channel set "
                f"{product} {serving[0]} VERSION{flag}` or `channel rollback`), or pass --force to revoke it anyway "
                "(the channel then offers nothing until pointed at another release)"
            )
        revoked = replace(release, state=ReleaseState.REVOKED)
        try:
            self.catalog_store.set_release_state(release, ReleaseState.REVOKED)
        except Conflict:
            raise Changed(f"{product} {kind.value} {version} changed while revoking it; try again") from None
        target = {"release": f"{kind.value} {version}"}
        self._record(product, "release.revoke", target, {"state": release.state.value}, {"state": revoked.state.value})
        return Revoked(revoked, serving)

    def delete_channel(self, product: str, channel: str) -> Deleted:
        """Delete a channel (its tracks, window and rollout counts). Refused for the product's default
        channel (enrolled and newly assigned devices go there) and while devices are assigned to it (they
        would be offered nothing): move them first. A device assigned to it in the instant between the check
        and the delete is offered nothing, as on any channel that serves nothing, until it is moved."""
        catalog = self.catalog(product)
        _channel(catalog, channel)
        if channel == catalog.product.default_channel:
            raise FleetError(
                f"{channel} is {product}'s default channel (enrolled and newly assigned devices go there): "
                f"choose another with `otafleet product create {product} --default-channel CHANNEL` first"
            )
        members = sorted(d.mac for d in self._assigned_devices(product) if d.channel == channel)
        if members:
            shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
            raise FleetError(
                f"{len(members)} device{'s are' if len(members) != 1 else ' is'} assigned to {product}/{channel} "
                f"({shown}): move them first with `otafleet device assign MAC --product {product} --channel OTHER`"
            )
        try:
            self.catalog_store.delete_channel(product, channel)
        except Conflict:
            raise Changed(f"{product}/{channel} was deleted meanwhile") from None
        before = {k.value: audit.track_fields(t) for k, t in catalog.channels[channel].tracks.items()}
        self._record(product, "channel.delete", {"channel": channel}, before, {})
        return Deleted(f"channel {product}/{channel}")

    def delete_product(self, product: str, *, force: bool = False) -> Deleted:
        """Delete a product with its channels, releases, rejected uploads and counts. Refused while it has
        channels or devices assigned to it, unless `force`: then its devices are unassigned first (they keep
        their records and history, lose its pins, attempts and failed releases, and are answered as
        unassigned devices until assigned again). The
        firmware objects in the bucket stay: the bucket is versioned, and deleting builds is not undoable."""
        catalog = self.catalog(product)
        devices = self._assigned_devices(product)
        if (catalog.channels or devices) and not force:
            has = []
            if catalog.channels:
                has.append(f"channel{'s' if len(catalog.channels) != 1 else ''} {', '.join(sorted(catalog.channels))}")
            if devices:
                has.append(f"{len(devices)} device{'s' if len(devices) != 1 else ''}")
            raise FleetError(
                f"product {product} has {' and '.join(has)}: delete the channels (`otafleet channel delete "
                f"{product} CHANNEL`) and move the devices first, or pass --force to delete it with its channels "
                "and unassign its devices"
            )
        for device in devices:
            self.devices_store.put(replace(device, product=None, channel=None, assigned=False, pins={}))
            if device.failed or device.attempts or device.watch:
                # They were the deleted product's releases: kept, they would meet another product's
                # versions of the same name once the device is assigned again (assign keeps them when the
                # device comes from no product), and a silence watch would look for a product that is gone.
                self.devices_store.clear_failures(device.mac)
        items = self.catalog_store.delete_product(product)
        unassigned = sorted(d.mac for d in devices)
        self._record(product, "product.delete", {}, audit.product_fields(catalog.product), {"unassigned": unassigned})
        return Deleted(f"product {product}", items=items, unassigned=tuple(sorted(d.mac for d in devices)))

    def delete_device(self, mac: str) -> Deleted:
        """Delete a device's record: its assignment, credentials, attempts and history. Rollout counts its
        verdicts moved stay. If it checks in again it is a new, unassigned device (or enrolls). Unlike the
        other device commands this takes a MAC that names no device (00:00:00:00:00:00): an earlier otafleet
        kept such records (docs/operations.md, "Records that are not devices"), and deleting them is the fix."""
        found = parse_any_mac(mac)
        before = self.devices_store.get(found)
        try:
            self.devices_store.delete(found)
        except NotFound:
            raise FleetError(_unknown_device(found)) from None
        product = before.product if before is not None and before.assigned else None
        self._record(product, "device.delete", {"device": found}, audit.device_fields(before), {})
        return Deleted(f"device {found}")

    # --- channels and rollouts --------------------------------------------------------------------

    def set_channel(
        self,
        product: str,
        channel: str,
        version: str,
        kind: Kind = Kind.APP,
        percent: int = 100,
        *,
        max_failure_rate: float | None = None,
        min_devices: int | None = None,
        max_offers_per_minute: int | None = None,
        max_silence_excess: float | None = None,
    ) -> TrackStatus:
        check_name("channel", channel)
        if not 1 <= percent <= 100:
            raise FleetError(f"percent must be between 1 and 100, not {percent}")
        _check_thresholds(max_failure_rate, min_devices, max_silence_excess)
        if max_offers_per_minute is not None and max_offers_per_minute < 0:
            raise FleetError(f"max offers per minute must be 0 (no limit) or more, not {max_offers_per_minute}")

        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            self._offerable(catalog, kind, version)
            return rollout.pointed(
                current,
                version,
                percent,
                max_failure_rate,
                min_devices,
                max_offers_per_minute,
                max_silence_excess=max_silence_excess,
            )

        return self._change_track(product, channel, kind, change, "channel.set", need_track=False)

    def rollback(self, product: str, channel: str, kind: Kind = Kind.APP) -> TrackStatus:
        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            assert current is not None
            if current.previous is None:
                raise FleetError(f"{product}/{channel} has no previous {kind.value} release to roll back to")
            self._offerable(catalog, kind, current.previous)
            return rollout.rolled_back(current), True

        return self._change_track(product, channel, kind, change, "channel.rollback")

    def pause(self, product: str, channel: str, kind: Kind = Kind.APP) -> TrackStatus:
        return self._set_state(product, channel, kind, TrackState.PAUSED, "channel.pause")

    def resume(self, product: str, channel: str, kind: Kind = Kind.APP, *, reset_counts: bool = False) -> TrackStatus:
        """Resume a paused or halted rollout, keeping its counts unless `reset_counts`. A rollout whose
        counts are over its threshold would halt again at once: it is resumed only with `reset_counts`."""

        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            assert current is not None
            if rollout.over_threshold(current) and not reset_counts:
                rate = rollout.failure_rate(current) or 0.0
                raise FleetError(
                    f"{product}/{channel} {kind.value} {current.version} has {current.failures} failures in "
                    f"{rollout.outcomes(current)} outcomes ({rate:.0%}, over its {current.max_failure_rate:.0%}): "
                    "it would halt again at once; resume with --reset-counts, or raise --max-failure-rate "
                    "with `channel set`"
                )
            if current.plan is not None and current.plan.aborted:
                raise FleetError(
                    f"the plan of {product}/{channel} {kind.value} {current.version} was aborted; start a new one "
                    f"with `otafleet rollout start`, or steer by hand with `otafleet channel set`"
                )
            return plans.resumed(current, self.clock()), reset_counts

        return self._change_track(product, channel, kind, change, "channel.resume")

    def start_plan(
        self,
        product: str,
        channel: str,
        version: str,
        kind: Kind = Kind.APP,
        *,
        stages: tuple[int, ...],
        soak_seconds: int,
        min_success: float,
        max_failure_rate: float | None = None,
        min_devices: int | None = None,
        max_offers_per_minute: int | None = None,
        pace_growth: float = 1.0,
        max_silence_excess: float | None = None,
    ) -> TrackStatus:
        """Point the channel at `version` as a rollout plan: its first stage now, the next ones as the
        controller finds each stage soaked and successful (plans.py). Starting a plan for the version the
        channel already rolls out keeps its counts and moves it to the plan's first stage that is not
        below its current percentage (raising a stage only adds devices; a plan never takes any away)."""
        check_name("channel", channel)
        _check_thresholds(max_failure_rate, min_devices, max_silence_excess)
        if max_offers_per_minute is not None and max_offers_per_minute < 0:
            raise FleetError(f"max offers per minute must be 0 (no limit) or more, not {max_offers_per_minute}")
        try:
            plan = plans.new_plan(stages, soak_seconds, min_success, now=self.clock(), pace_growth=pace_growth)
        except plans.InvalidPlan as bad:
            raise FleetError(str(bad)) from None

        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            self._offerable(catalog, kind, version)
            again = current if current is not None and current.version == version else None
            if again and again.state is not TrackState.ACTIVE and not (again.plan and again.plan.aborted):
                raise FleetError(
                    f"{product}/{channel} {kind.value} {version} is {again.state.value}; resume or roll it back "
                    "before starting a plan for it"
                )
            at = plan
            if again is not None:
                at = replace(plan, stage=next((i for i, p in enumerate(plan.stages) if p >= again.percent), 0))
            track, reset = rollout.pointed(
                current,
                version,
                at.percent,
                max_failure_rate,
                min_devices,
                max_offers_per_minute,
                max_silence_excess=max_silence_excess,
            )
            return plans.started(track, at), reset

        return self._change_track(product, channel, kind, change, "rollout.start", need_track=False)

    def abort(self, product: str, channel: str, kind: Kind = Kind.APP) -> TrackStatus:
        """Stop a plan for good: the rollout is halted where it stands."""

        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            assert current is not None
            if current.plan is None or current.plan.aborted or current.plan.completed:
                what = "has no plan" if current.plan is None else "has no plan running"
                raise FleetError(
                    f"{product}/{channel} {kind.value} {current.version} {what}; "
                    "use `otafleet channel pause` or `channel rollback`"
                )
            return plans.aborted(current), False

        return self._change_track(product, channel, kind, change, "rollout.abort")

    def set_window(
        self, product: str, spec: str | None, *, tz: str = "UTC", channel: str | None = None
    ) -> Window | None:
        """Set (or with `spec` None clear) the maintenance window of a product, or of one of its channels
        (which then overrides the product's). Returns the window set."""
        try:
            window = windows.parse(spec, tz) if spec is not None else None
        except windows.InvalidWindow as bad:
            raise FleetError(str(bad)) from None
        catalog = self.catalog(product)
        action = "window.set" if window is not None else "window.clear"
        if channel is None:
            self.catalog_store.put_product(replace(catalog.product, window=window))
            self._record(product, action, {}, _window(catalog.product.window), _window(window))
            return window
        _channel(catalog, channel)
        try:
            self.catalog_store.set_channel_window(product, channel, window)
        except Conflict:
            raise Changed(f"{product}/{channel} was deleted meanwhile") from None
        self._record(product, action, {"channel": channel}, _window(catalog.channels[channel].window), _window(window))
        return window

    def channel_status(self, product: str, channel: str) -> list[TrackStatus]:
        catalog = self.catalog(product)
        found = _channel(catalog, channel)
        return [
            TrackStatus(product, channel, k, t) for k, t in sorted(found.tracks.items(), key=lambda kt: kt[0].value)
        ]

    def _offerable(self, catalog: Catalog, kind: Kind, version: str) -> Release:
        """The release a channel or pin may point at; a version with no release whose upload was
        rejected is refused with the rejection's reason (not as unknown), which the operator can act on."""
        if catalog.release(kind, version) is None:
            rejected = self.rejection(catalog.product.name, kind, version)
            if rejected is not None:
                raise FleetError(rejection_text(rejected))
        return _offerable(catalog, kind, version)

    def _set_state(self, product: str, channel: str, kind: Kind, state: TrackState, action: str) -> TrackStatus:
        def change(catalog: Catalog, current: Track | None) -> tuple[Track, bool]:
            assert current is not None
            return replace(current, state=state), False

        return self._change_track(product, channel, kind, change, action)

    def _change_track(
        self,
        product: str,
        channel: str,
        kind: Kind,
        change: Callable[[Catalog, Track | None], tuple[Track, bool]],
        action: str,
        *,
        need_track: bool = True,
    ) -> TrackStatus:
        """Apply `change` (current track → new track, reset counters?) as a write conditional on the
        track it read; on a concurrent change, once more on fresh data. Recorded as `action`."""
        for _ in range(2):
            catalog = self.catalog(product)
            found = catalog.channels.get(channel)
            current = _track(catalog, channel, kind) if need_track else (found.tracks.get(kind) if found else None)
            track, reset = change(catalog, current)
            try:
                self.catalog_store.put_track(
                    TrackChange(
                        product,
                        channel,
                        kind,
                        track,
                        expect=current,
                        channel_exists=found is not None,
                        reset_counters=reset,
                    )
                )
            except Conflict:
                continue
            status = self._status(product, channel, kind)
            after = audit.track_fields(status.track) | ({"counts_reset": True} if reset else {})
            target = audit.track_target(channel, kind, status.track.version)
            self._record(product, action, target, audit.track_fields(current), after)
            return status
        raise Changed(f"{product}/{channel} changed while updating it; try again")

    def _status(self, product: str, channel: str, kind: Kind) -> TrackStatus:
        return TrackStatus(product, channel, kind, _track(self.catalog(product), channel, kind))

    def rollouts(self, products: Iterable[str]) -> list[TrackStatus]:
        """The staged, paused and halted tracks of these products."""
        found: list[TrackStatus] = []
        for name in sorted(set(products)):
            catalog = self.catalog_store.load(name, fresh=True)
            if catalog is None:
                continue
            for ch in sorted(catalog.channels.values(), key=lambda c: c.name):
                for kind, track in sorted(ch.tracks.items(), key=lambda kt: kt[0].value):
                    status = TrackStatus(name, ch.name, kind, track)
                    if status.staged:
                        found.append(status)
        return found

    # --- devices ------------------------------------------------------------------------------------

    def device(self, mac: str) -> Device:
        mac = parse_mac(mac)
        device = self.devices_store.get(mac)
        if device is None:
            raise Unknown(_unknown_device(mac))
        return device

    def assign(
        self,
        mac: str,
        product: str,
        channel: str | None = None,
        pin: str | None = None,
        *,
        unpin: bool = False,
    ) -> Device:
        """Register a device or move it. A device that already checked in keeps what it reported; its
        pins stay while it stays in the same product. Moving it to another product drops its pins,
        its pending offer and its failed releases (they were another product's versions)."""
        mac = parse_mac(mac)
        catalog = self.catalog(product)
        channel = check_name("channel", channel) if channel else catalog.product.default_channel
        if pin is not None:
            self._offerable(catalog, Kind.APP, pin)
        existing = self.devices_store.get(mac)
        base = existing or Device(mac=mac)
        moved = base.product is not None and base.product != product
        pins = {} if moved else dict(base.pins)
        if pin is not None:
            pins[Kind.APP] = pin
        elif unpin:
            pins.pop(Kind.APP, None)
        self.devices_store.put(replace(base, product=product, channel=channel, assigned=True, pins=pins))
        if moved and existing is not None and (existing.failed or existing.attempts):
            self.devices_store.clear_failures(mac)
        device = self.device(mac)
        before, after = audit.device_fields(existing), audit.device_fields(device)
        self._record(product, "device.assign", {"device": mac}, before, after)
        return device

    def block(self, mac: str) -> Device:
        return self._set_blocked(mac, True)

    def unblock(self, mac: str) -> Device:
        return self._set_blocked(mac, False)

    def _set_blocked(self, mac: str, blocked: bool) -> Device:
        mac = parse_mac(mac)
        existing = self.devices_store.get(mac)  # for the audit trail's "before"
        try:
            self.devices_store.set_blocked(mac, blocked)
        except NotFound:
            raise Unknown(f"unknown device {mac}: assign it first with `otafleet device assign {mac}`") from None
        device = self.device(mac)
        action = "device.block" if blocked else "device.unblock"
        before, after = audit.device_fields(existing), audit.device_fields(device)
        self._record(device.product, action, {"device": mac}, before, after)
        return device

    def issue_credentials(self, mac: str) -> tuple[Device, str]:
        """A new secret for the device, returned once; only its hash is stored. Replaces any earlier one."""
        mac = parse_mac(mac)
        existing = self.devices_store.get(mac)
        secret = credentials.issue_secret()
        try:
            self.devices_store.set_secret_hash(mac, credentials.hash_secret(secret))
        except NotFound:
            raise FleetError(
                f"unknown device {mac}: assign it first with `otafleet device assign {mac} --product …`"
            ) from None
        device = self.device(mac)
        # Only that a secret was issued (or replaced): never the secret, nor its hash.
        had = existing is not None and existing.secret_hash is not None
        self._record(
            device.product, "device.credentials", {"device": mac}, {"secret": "set" if had else None}, {"secret": "new"}
        )
        return device, secret

    def retry(self, mac: str) -> Device:
        """Forget the releases that failed on this device and offer its targets again. Its attempts stay,
        reopened, so the verdict each reaches replaces the one it counted for its rollout."""
        mac = parse_mac(mac)
        for _ in range(2):
            device = self.devices_store.get(mac)
            if device is None:
                raise Unknown(_unknown_device(mac))
            reopened = {kind: attempts.retried(a) for kind, a in device.attempts.items()}
            try:
                self.devices_store.reopen_attempts(device, reopened)
            except Conflict:
                continue  # a check wrote in between: read it again
            after = self.device(mac)
            before_fields, after_fields = audit.device_fields(device), audit.device_fields(after)
            self._record(after.product, "device.retry", {"device": mac}, before_fields, after_fields)
            return after
        raise Changed(f"{mac} changed while retrying it; try again")

    def device_page(
        self,
        product: str,
        *,
        channel: str | None = None,
        where: DeviceFilter | None = None,
        mac_prefix: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> DevicePage:
        """A page of the product's devices in MAC order: those `where` (and `channel`, `mac_prefix`: the
        MAC's first hex digits, colons optional) match, `limit` of them after the MAC `after`. Read from
        the by-product index, with one exception: the unassigned devices that asked for the product
        are only found by reading the whole table (as `otafleet devices --unassigned` does)."""
        check_name("product", product)
        if not 1 <= limit <= MAX_PAGE:
            raise FleetError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        if channel is not None:
            check_name("channel", channel)
        prefix = _mac_prefix(mac_prefix) if mac_prefix else ""
        if after is not None:
            after = parse_any_mac(after)
        if where is not None and where.state == "unassigned":
            found: Iterable[Device] = self.list_devices(product, where=where).devices
        else:
            self.catalog(product)
            self._check_filter(where)
            now = epoch(self.clock())
            found = (d for d in self._assigned_devices(product) if where is None or where.matches(d, now))
        matching = sorted(
            (
                d
                for d in found
                if (channel is None or d.channel == channel) and d.mac.replace(":", "").startswith(prefix)
            ),
            key=lambda d: d.mac,
        )
        start = 0 if after is None else next((i for i, d in enumerate(matching) if d.mac > after), len(matching))
        page = tuple(matching[start : start + limit])
        more = start + limit < len(matching)
        return DevicePage(page, len(matching), page[-1].mac if more and page else None)

    def product_overview(self, product: str, channel: str | None = None) -> ProductOverview:
        """Devices of the product (or of one channel) counted by the version they run and by state,
        and its rollouts to watch: counted here, so a console never downloads the fleet to count it."""
        catalog = self.catalog(check_name("product", product))
        if channel is not None:
            _channel(catalog, channel)
        devices = [
            d
            for d in self._assigned_devices(product)
            if (channel is None or d.channel == channel) and is_device_mac(d.mac)
        ]
        per_product = distribution(devices)
        states: Counter[str] = Counter(s for d in devices for s in device_states(d))
        return ProductOverview(
            product=product,
            channel=channel,
            devices=len(devices),
            versions=per_product[0].versions if per_product else (),
            states=tuple((s, states[s]) for s in DEVICE_STATES if states[s]),
            rollouts=tuple(r for r in self.rollouts([product]) if channel is None or r.channel == channel),
        )

    def _check_filter(self, where: DeviceFilter | None) -> None:
        if where is None:
            return
        if where.state is not None and where.state not in DEVICE_STATES:
            raise FleetError(f"unknown device state {where.state!r}; choose one of {', '.join(DEVICE_STATES)}")
        if where.version is not None:
            check_name("version", where.version)
        if where.seen_before is not None and where.seen_within is not None and where.seen_within <= where.seen_before:
            raise FleetError("--seen-within must be longer than --seen-before, or no device can match both")

    def list_devices(
        self, product: str | None = None, *, unassigned: bool = False, where: DeviceFilter | None = None
    ) -> FleetOverview:
        """The fleet (optionally one product's devices, or only the unassigned ones: with a product, the
        unassigned devices that asked for it by URL; and only those `where` matches), the version
        distribution of the listed devices and the rollouts to watch."""
        if product is not None:
            self.catalog(product)
        self._check_filter(where)
        if where is not None:
            # A product's devices are its assigned ones; its unassigned ones are those that asked for it.
            unassigned = unassigned or where.state == "unassigned"
        now = epoch(self.clock())
        devices: list[Device] = []
        seen: dict[str, str] = {}
        for device, seen_product in self.devices_store.scan_seen():
            if unassigned:
                if device.assigned or (product is not None and seen_product != product):
                    continue
            elif product is not None and not (device.assigned and device.product == product):
                continue
            if where is not None and not where.matches(device, now):
                continue
            devices.append(device)
            if seen_product and not device.assigned:
                seen[device.mac] = seen_product
        devices.sort(key=lambda d: d.mac)
        products = {d.product for d in devices if d.assigned and d.product}
        if product is not None:
            products.add(product)
        return FleetOverview(
            devices=tuple(devices),
            # A record an earlier otafleet kept under e.g. the zero MAC is listed (with a warning), never counted.
            distribution=distribution(d for d in devices if is_device_mac(d.mac)),
            rollouts=tuple(self.rollouts(products)),
            seen_products=seen,
        )


def _check_thresholds(
    max_failure_rate: float | None, min_devices: int | None, max_silence_excess: float | None = None
) -> None:
    if max_failure_rate is not None and not 0.0 <= max_failure_rate <= 1.0:
        raise FleetError(f"max failure rate must be between 0 and 1 (e.g. 0.2 for 20 %), not {max_failure_rate}")
    if max_silence_excess is not None and not 0.0 <= max_silence_excess <= 1.0:
        raise FleetError(f"max silence excess must be between 0 and 1 (e.g. 0.1 for 10 %), not {max_silence_excess}")
    if min_devices is not None and min_devices < 1:
        raise FleetError(f"min devices must be at least 1, not {min_devices}")


def _window(window: Window | None) -> dict[str, Any]:
    """A maintenance window as the audit trail shows it."""
    return {"window": asdict(window) if window is not None else None}


def _offerable(catalog: Catalog, kind: Kind, version: str) -> Release:
    product = catalog.product.name
    release = catalog.release(kind, version)
    if release is None:
        known = sort_versions(v for (k, v), r in catalog.releases.items() if k is kind and r.offerable)
        listing = ", ".join(known[-8:]) if known else "none yet"
        raise FleetError(f"{product} has no {kind.value} release {version!r} (registered: {listing})")
    if release.state is ReleaseState.REJECTED:
        raise FleetError(rejection_text(release))
    if not release.offerable:
        raise FleetError(f"{product} {kind.value} {version} is {release.state.value} and cannot be offered")
    return release


def rejection_text(release: Release) -> str:
    """Why a version cannot be offered because its upload was rejected, and what to do."""
    what = f"{release.product} {release.kind.value} {release.version}"
    text = f"{what} was rejected: {release.reason or 'no reason recorded'}"
    where = " at ".join(x for x in (release.s3_key, release.uploaded_at) if x)
    if where:
        text += f" (upload {where})"
    return text + f"; upload a fixed image (`otafleet releases {release.product}` lists its uploads)"


_HEX = frozenset("0123456789ABCDEF")


def _mac_prefix(value: str) -> str:
    """A MAC prefix as hex digits without separators (`5c:cf:7` -> `5CCF7`)."""
    digits = value.replace(":", "").replace("-", "").upper()
    if len(digits) > 12 or not set(digits) <= _HEX:
        raise FleetError(f"not the start of a MAC address: {value[:20]!r} (expected e.g. 5C:CF:7F)")
    return digits


def _unknown_device(mac: str) -> str:
    return f"unknown device {mac}: it never checked in and was never assigned"


def _channel(catalog: Catalog, name: str) -> Channel:
    found = catalog.channels.get(name)
    if found is None:
        known = ", ".join(sorted(catalog.channels)) or "none yet"
        raise Unknown(f"product {catalog.product.name!r} has no channel {name!r} (channels: {known})")
    return found


def _track(catalog: Catalog, channel: str, kind: Kind) -> Track:
    product = catalog.product.name
    found = catalog.channels.get(channel)
    track = found.tracks.get(kind) if found else None
    if track is None:
        raise FleetError(
            f"{product}/{channel} has no {kind.value} release; point it at one with "
            f"`otafleet channel set {product} {channel} VERSION{' --fs' if kind is Kind.FS else ''}`"
        )
    return track


__all__ = [
    "DEVICE_STATES",
    "MAX_PAGE",
    "Changed",
    "ChannelSummary",
    "Deleted",
    "DeviceFilter",
    "DevicePage",
    "Fleet",
    "FleetError",
    "FleetOverview",
    "ProductOverview",
    "ProductVersions",
    "Revoked",
    "TrackStatus",
    "Unknown",
    "VersionCount",
    "check_name",
    "device_states",
    "device_version",
    "distribution",
    "last_seen",
    "parse_mac",
    "sort_versions",
]
