"""An update check end to end: parse, load, decide, deliver, record.

The Lambda handler and `otafleet explain` both come through here; the handler stays a thin mapping
from API Gateway events to these calls.

A check's write is conditional on the state it read (the attempt it moves on, an unassigned device it
enrolls); when a concurrent write won, the check is decided again on fresh data, so two checks in
flight, a retry racing `device retry` or an enrollment racing `device assign` each count once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from otafleet import credentials, delivery, names, rollout
from otafleet.check_writes import why_write
from otafleet.config import Settings
from otafleet.decision import Decision, Outcome, Policy, choose_delivery, decide
from otafleet.delivery import Answer, Payload
from otafleet.models import AttemptState, Catalog, Delivery, Device, Kind, Release, dialect_of
from otafleet.observability import count, logger
from otafleet.protocol import FS_MODES, CheckRequest, ProtocolError, parse_check
from otafleet.storage.blobs import BlobStore
from otafleet.storage.catalog import CatalogStore
from otafleet.storage.devices import DeviceStore, QuotaFull
from otafleet.storage.errors import Conflict, NotFound, StorageUnavailable

RETRY_AFTER_SECONDS = "300"
# Decide again on fresh data at most this often when a concurrent write won.
ROUNDS = 3


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def unavailable() -> Answer:
    return Answer(503, b"service busy, try again later\n", {"Retry-After": RETRY_AFTER_SECONDS})


@dataclass
class UpdateService:
    """The device-facing service: reads, decides, records and answers update checks."""

    settings: Settings
    devices: DeviceStore
    catalog: CatalogStore
    blobs: BlobStore
    clock: Callable[[], str] = utc_now

    @classmethod
    def create(cls, settings: Settings) -> UpdateService:
        return cls(settings, DeviceStore(settings), CatalogStore(settings), BlobStore(settings))

    _policy: tuple[Settings, Policy] | None = field(default=None, init=False, repr=False, compare=False)

    def policy(self) -> Policy:
        """The decision's policy, built once per settings (configuration is read once; tests swap settings)."""
        cached = self._policy
        if cached is None or cached[0] is not self.settings:
            cached = self._policy = (
                self.settings,
                Policy.from_settings(self.settings, redirect_scheme=self.blobs.redirect_scheme),
            )
        return cached[1]

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
            decision, answer, written = self._check(req)
        except (StorageUnavailable, NotFound, Conflict) as fault:  # Conflict: lost every round to other writes
            log.error("storage unavailable", extra={"mac": req.mac, "error": str(fault) or type(fault).__name__})
            count("StorageFaults")
            return unavailable()
        # Every decision that changed something or refused the device is logged; the unchanged 304s that
        # make up most of a healthy fleet's checks only in a sample (LogSampleRate), marked as such. The
        # sample is drawn here, not by the logger's level: Lambda's log filter would drop DEBUG lines.
        unchanged = written is None and answer.status == 304
        if not unchanged or random.random() < self.settings.log_sample_rate:
            self._log_decision(req, decision, answer, written, sampled=unchanged)
        self._metrics(decision, written)
        return answer

    def _log_decision(
        self, req: CheckRequest, decision: Decision, answer: Answer, written: str | None, *, sampled: bool
    ) -> None:
        verdict = decision.verdict
        logger().info(
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
                "verdict": verdict.value if verdict else None,
                "written": written,
                "sampled": sampled,
            },
        )

    def _check(self, req: CheckRequest) -> tuple[Decision, Answer, str | None]:
        """The decision, its answer, and why the check was written (None: it changed nothing, unwritten)."""
        full: frozenset[str] = frozenset()
        policy = self.policy()
        for round_ in range(ROUNDS + 2):  # + a round for each quota that can be full
            device, catalog, decision = self._read_and_decide(req, policy, fresh=round_ > 0, full=full)
            answer = self._answer(decision)
            written = why_write(device, decision.record, heartbeat_seconds=policy.silence.heartbeat_seconds)
            if written is not None:
                try:
                    self.devices.record_check(req.mac, decision.record)
                except QuotaFull as quota:
                    full |= {quota.name}
                    continue
                except Conflict:
                    if round_ >= ROUNDS - 1 + len(full):
                        raise
                    # Checks that collided (a burst of verdicts on one channel item) spread out a little.
                    time.sleep(random.uniform(0, 0.02 * (round_ + 1)))
                    continue
            self._halt_if_due(decision, catalog)
            return decision, answer, written
        raise Conflict("no round of the check could record it")

    def _read_and_decide(
        self, req: CheckRequest, policy: Policy, *, fresh: bool = False, full: frozenset[str] = frozenset()
    ) -> tuple[Device | None, Catalog | None, Decision]:
        device = self.devices.get(req.mac)
        name = device.product if device is not None and device.assigned else req.product
        catalog = self.catalog.load(name, fresh=fresh) if name else None
        decision = decide(req, device, catalog, now=self.clock(), policy=policy, full=full)
        return device, catalog, decision

    def decide(self, req: CheckRequest, *, fresh: bool = False) -> Decision:
        return self._read_and_decide(req, self.policy(), fresh=fresh)[2]

    def _answer(self, decision: Decision) -> Answer:
        payload = None
        if decision.outcome is Outcome.OFFER:
            assert decision.release is not None and decision.delivery is not None
            payload = self._fetch(decision.release, decision.delivery)
        return delivery.answer_for(decision, payload)

    def _fetch(self, release: Release, mode: Delivery) -> Payload:
        if mode is Delivery.REDIRECT:
            return Payload(url=self.blobs.presign(release))
        return Payload(body=self.blobs.read_release(release))

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
        fs = mode in FS_MODES
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
            version=last.fs_version if fs else last.version,
            source_ip=last.source_ip,
            product=device.product,
            # Assume the scheme a redirect needs: devices reach the API the way presigned URLs work.
            scheme=self.blobs.redirect_scheme,
            dry_run=True,
        )
        return self.decide(req, fresh=True)

    # --- rollouts --------------------------------------------------------------------------------

    def _halt_if_due(self, decision: Decision, catalog: Catalog | None) -> None:
        """Persist a halt the rollout rules call for. Checked after every verdict (on fresh counts) and
        at every check whose (cached) catalog shows it due: a halt lost to a fault is written later, and
        until then every reader treats the rollout as halted (rollout.effective_state)."""
        counter = decision.record.counter
        if counter is not None:
            # The counts this verdict moved, read back consistently (one item, not the whole catalog).
            product, channel, kind = counter.product, counter.channel, counter.kind
            ch = self.catalog.get_channel(product, channel)
        elif decision.product is not None and decision.channel is not None and decision.release is not None:
            product, channel, kind = decision.product, decision.channel, decision.release.kind
            ch = catalog.channels.get(channel) if catalog else None
        else:
            return
        track = ch.tracks.get(kind) if ch else None
        if track is None or not rollout.should_halt(track):
            return
        # Halting is rare: its writer, the audit trail and the notices are imported only when one is due
        # (they were a sixth of the handler's own import time at every cold start).
        from otafleet import audit, halts

        rate = rollout.failure_rate(track) or 0.0
        why = f"failure rate {rate:.1%} over {rollout.outcomes(track)} outcomes > {track.max_failure_rate:.1%}"
        try:
            halts.halt(
                self.catalog,
                product,
                channel,
                kind,
                track,
                rule="failures",
                why=why,
                settings=self.settings,
                actor=audit.UPDATE_FUNCTION,
                at=self.clock(),
            )
        except StorageUnavailable as fault:
            logger().error("rollout halt not written", extra={"product": product, "error": str(fault)})

    def _metrics(self, decision: Decision, written: str | None) -> None:
        count("Checks")
        if written:
            count("RecordWrites")
        else:
            count("RecordsUnchanged")
        if decision.outcome is Outcome.OFFER and decision.delivery is not None:
            count("Offers", delivery=decision.delivery.value)
        elif decision.outcome is Outcome.NO_UPDATE:
            count("NotModified", reason=decision.reason)
        elif decision.reason in ("unknown-device", "enroll-rate-limited"):
            count("UnknownDevices")
        if decision.verdict is AttemptState.INSTALLED:
            count("InferredSuccesses")
        elif decision.verdict is AttemptState.FAILED:
            count("InferredFailures")
        elif decision.verdict is AttemptState.UNKNOWN:
            count("UnknownOutcomes")

    # --- the simple updater ----------------------------------------------------------------------

    def simple(self, product: str, channel: str, *, scheme: str = "https", authorization: str | None = None) -> Answer:
        """The release the whole channel runs (never a partial, paused or halted rollout's), to anyone
        for an open product, to a device of the product with valid credentials for one that requires them."""
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
            version = rollout.baseline(track) if track else None
            release = catalog.release(Kind.APP, version) if catalog and version else None
            if catalog is None or release is None or not release.offerable:
                return delivery.text(404, f"no release on {product}/{channel}", "no-release")
            if catalog.product.auth_required and not self._authorized(product, authorization):
                logger().info("refused", extra={"status": 401, "reason": "unauthorized", "product": product})
                return delivery.text(401, "valid device credentials required", "unauthorized")
            mode, _ = choose_delivery(
                catalog.product.delivery,
                "product",
                release,
                authenticates=bool(authorization),
                scheme=scheme,
                policy=self.policy(),
            )
            if mode is None:
                return delivery.text(
                    404,
                    f"{release.version} is too large for inline delivery; use redirect",
                    "too-large-for-inline",
                )
            count("SimpleDownloads", delivery=mode.value)
            return delivery.offered(release, self._fetch(release, mode))
        except (StorageUnavailable, NotFound) as fault:
            logger().error("storage unavailable", extra={"product": product, "error": str(fault)})
            return unavailable()

    def _authorized(self, product: str, authorization: str | None) -> bool:
        mac = credentials.user_mac(authorization)
        device = self.devices.get(mac) if mac else None
        return (
            device is not None
            and device.assigned
            and device.product == product
            and credentials.verify(authorization, device.mac, device.secret_hash)
        )
