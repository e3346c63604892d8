"""An update check end to end: parse, load, decide, deliver, record.

The Lambda handler and `otafleet explain` both come through here; the handler stays a thin mapping
from API Gateway events to these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from otafleet import delivery, names
from otafleet.config import Settings
from otafleet.decision import Decision, Outcome, Policy, decide
from otafleet.delivery import Answer
from otafleet.models import Catalog, Delivery, Kind, Track, TrackState, dialect_of
from otafleet.observability import count, logger
from otafleet.protocol import CheckRequest, ProtocolError, parse_check
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore
from otafleet.storage.errors import Conflict, NotFound, StorageUnavailable
from otafleet.storage.items import counter_name

RETRY_AFTER_SECONDS = "300"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def unavailable() -> Answer:
    return Answer(503, b"service busy, try again later\n", {"Retry-After": RETRY_AFTER_SECONDS})


@dataclass
class UpdateService:
    settings: Settings
    devices: DeviceStore
    catalog: CatalogStore
    blobs: BlobStore
    clock: Callable[[], str] = utc_now

    @classmethod
    def create(cls, settings: Settings) -> UpdateService:
        return cls(settings, DeviceStore(settings), CatalogStore(settings), BlobStore(settings))

    def policy(self) -> Policy:
        return Policy(
            failure_offer_limit=self.settings.failure_offer_limit,
            max_inline_bytes=self.settings.max_inline_bytes,
            redirect_scheme=self.blobs.redirect_scheme,
        )

    # --- the device-facing checks ----------------------------------------------------------------

    def check(
        self,
        headers: Mapping[str, str],
        *,
        query: Mapping[str, str] | None = None,
        product: str | None = None,
        source_ip: str | None = None,
    ) -> Answer:
        log = logger()
        try:
            req = parse_check(headers, query=query, product=product, source_ip=source_ip)
        except ProtocolError as refused:
            log.info("refused", extra={"status": refused.status, "reason": refused.reason, "source_ip": source_ip})
            count("Refused")
            return delivery.text(refused.status, refused.reason, "bad-request")
        try:
            decision = self.decide(req)
            answer = delivery.answer_for(decision, self.blobs)
            self._record(req, decision)
        except (StorageUnavailable, NotFound, Conflict) as fault:  # Conflict: a record changed under the check
            log.error("storage unavailable", extra={"mac": req.mac, "error": str(fault)})
            count("StorageFaults")
            return unavailable()
        log.info(
            "decision",
            extra={
                "mac": req.mac,
                "product": decision.product,
                "channel": decision.channel,
                "mode": req.mode,
                "outcome": decision.outcome.value,
                "reason": decision.reason,
                "status": answer.status,
                "version": decision.release.version if decision.release else None,
                "delivery": decision.delivery.value if decision.delivery else None,
                "reported_version": req.version,
            },
        )
        self._metrics(decision)
        return answer

    def decide(self, req: CheckRequest, *, fresh: bool = False) -> Decision:
        device = self.devices.get(req.mac)
        name = device.product if device is not None and device.assigned else req.product
        catalog = self.catalog.load(name, fresh=fresh) if name else None
        return decide(req, device, catalog, now=self.clock(), policy=self.policy())

    def explain(self, mac: str, *, mode: str = "sketch") -> Decision | None:
        """Dry run: what `mac` would get at its next check if it reported what it last reported.
        Runs the real decision on fresh data and writes nothing. None for a device never seen."""
        device = self.devices.get(mac)
        if device is None:
            return None
        last = device.reported
        platform = None
        if device.product:
            catalog = self.catalog.load(device.product, fresh=True)
            platform = catalog.product.platform if catalog else None
        req = CheckRequest(
            dialect=dialect_of(device.chip or platform or "esp8266"),
            mac=mac,
            mode=mode,
            free_space=last.free_space,
            sketch_size=last.sketch_size,
            chip_size=last.chip_size,
            sdk_version=last.sdk_version,
            sketch_md5=last.sketch_md5,
            sketch_sha256=last.sketch_sha256,
            version=last.version,
            source_ip=last.source_ip,
            product=device.product,
            # Assume the scheme a redirect needs: devices reach the API the way presigned URLs work.
            scheme=self.blobs.redirect_scheme,
            dry_run=True,
        )
        return self.decide(req, fresh=True)

    def _record(self, req: CheckRequest, decision: Decision) -> None:
        event = self._rollout_event(decision)
        if event is None:
            self.devices.record_check(req.mac, decision.record)
            return
        self.devices.record_check(req.mac, decision.record, rollout_event=event)
        if decision.event == "failure":
            self._maybe_halt(decision)

    def _track(self, decision: Decision, catalog: Catalog | None) -> Track | None:
        if catalog is None or decision.release is None or decision.channel is None:
            return None
        channel = catalog.channels.get(decision.channel)
        track = channel.tracks.get(decision.release.kind) if channel else None
        return track if track and track.version == decision.release.version else None

    def _rollout_event(self, decision: Decision) -> tuple[str, str, str, str] | None:
        """Successes and failures count for a rollout only when the release is the channel's own."""
        if decision.event is None or decision.product is None or decision.channel is None:
            return None
        release = decision.release
        if release is None or self._track(decision, self.catalog.load(decision.product)) is None:
            return None
        name = counter_name("ok" if decision.event == "success" else "fail", release.kind, release.version)
        return (decision.event, decision.product, decision.channel, name)

    def _maybe_halt(self, decision: Decision) -> None:
        assert decision.product is not None and decision.channel is not None and decision.release is not None
        catalog = self.catalog.load(decision.product, fresh=True)
        track = self._track(decision, catalog)
        if track is None or track.state is not TrackState.ACTIVE:
            return
        total = track.successes + track.failures
        if total >= track.min_devices and track.failures / total > track.max_failure_rate:
            halted = self.catalog.set_track_state(
                decision.product, decision.channel, decision.release.kind, track.version, TrackState.HALTED
            )
            if halted:
                logger().warning(
                    "rollout halted",
                    extra={
                        "product": decision.product,
                        "channel": decision.channel,
                        "version": track.version,
                        "failures": track.failures,
                        "successes": track.successes,
                    },
                )
                count("RolloutsHalted")

    def _metrics(self, decision: Decision) -> None:
        count("Checks")
        if decision.outcome is Outcome.OFFER and decision.delivery is not None:
            count("Offers", delivery=decision.delivery.value)
        elif decision.outcome is Outcome.NO_UPDATE:
            count("NotModified", reason=decision.reason)
        elif decision.reason == "unknown-device":
            count("UnknownDevices")
        if decision.event == "failure":
            count("InferredFailures")
        elif decision.event == "success":
            count("InferredSuccesses")

    # --- the simple updater ----------------------------------------------------------------------

    def simple(self, product: str, channel: str, *, scheme: str = "https") -> Answer:
        try:
            names.product(product)
            names.channel(channel)
        except names.InvalidName as bad:
            logger().info("refused", extra={"status": 404, "reason": str(bad)})
            return delivery.text(404, str(bad), "invalid-name")
        try:
            catalog = self.catalog.load(product)
            ch = catalog.channels.get(channel) if catalog else None
            track = ch.tracks.get(Kind.APP) if ch else None
            release = catalog.release(Kind.APP, track.version) if catalog and track else None
            if catalog is None or release is None or not release.offerable:
                return delivery.text(404, f"no release on {product}/{channel}", "no-release")
            mode = catalog.product.delivery
            if mode is Delivery.REDIRECT and scheme != self.blobs.redirect_scheme:
                mode = Delivery.INLINE
            if mode is Delivery.INLINE and release.size > self.settings.max_inline_bytes:
                return delivery.text(
                    404,
                    f"{release.version} is too large for inline delivery; use redirect",
                    "too-large-for-inline",
                )
            count("SimpleDownloads", delivery=mode.value)
            return delivery.deliver(release, mode, self.blobs)
        except (StorageUnavailable, NotFound) as fault:
            logger().error("storage unavailable", extra={"product": product, "error": str(fault)})
            return unavailable()
