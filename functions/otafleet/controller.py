"""The rollout controller: what depends on time rather than on a device's check. One run (every few
minutes on an EventBridge Scheduler schedule, on a timer in the local stack, on demand by
`otafleet rollout tick`) does, per product:

1. **Silence.** Finds the offers past their deadline in the devices table's sparse `open-offers` index
   (only devices whose latest check that counted was an offer are in it: a run reads the offers in
   flight, never the fleet), reads each device and applies attempts.falls_silent. Each silent verdict
   is one write conditional on the attempt's `seq` and on the watch it read, with the rollout's silent
   counter in the same transaction: a device checking in meanwhile, or another run, makes it lose, and
   it looks again on fresh data.
2. **Halts.** For every active rollout of the product: the failure rate (a halt a check could not
   write is written here too), and, when its silent share could halt it at all (rollout.silence_may_halt),
   the silence rule against its control group. Only then are the product's device records read (the
   `by-product` index), once per product and run. A halt is `set_track_state(..., from_states=(ACTIVE,))`:
   it happens once, and never over an operator's change.

Two runs that overlap change nothing twice: every write is conditional on what the run read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otafleet import attempts, audit, decision, halts, notices, plans, rollout
from otafleet.config import Settings
from otafleet.decision import Policy
from otafleet.models import AttemptState, Catalog, Device, Kind, Track, TrackState
from otafleet.observability import count, logger
from otafleet.rhythm import epoch
from otafleet.service import utc_now
from otafleet.storage.catalog import CatalogStore, TrackChange
from otafleet.storage.devices import DeviceStore
from otafleet.storage.errors import Conflict, StorageUnavailable

# Look again on fresh data at most this often when a concurrent write won.
ROUNDS = 3


@dataclass(frozen=True)
class Silenced:
    mac: str
    product: str
    channel: str | None
    kind: Kind
    version: str
    counted: bool  # whether it moved the rollout's silent counter (a trusted device of that rollout)


@dataclass(frozen=True)
class Halted:
    product: str
    channel: str
    kind: Kind
    version: str
    rule: str  # "failures" or "silence"
    why: str


@dataclass(frozen=True)
class Moved:
    """A plan the run moved along: to its next stage, or to complete."""

    product: str
    channel: str
    kind: Kind
    version: str
    action: plans.Action  # ADVANCE or COMPLETE
    percent: int  # the rollout's percentage after the move
    why: str


@dataclass(frozen=True)
class RunReport:
    at: str
    silenced: tuple[Silenced, ...] = ()
    halted: tuple[Halted, ...] = ()
    faults: tuple[str, ...] = ()
    moved: tuple[Moved, ...] = ()


@dataclass(frozen=True)
class RolloutStatus:
    """One rollout as the controller sees it: counters, device records, the halt rules' verdicts."""

    product: str
    channel: str
    kind: Kind
    track: Track
    observation: rollout.Observation
    silence: rollout.SilenceTest
    stages: tuple[plans.StageTally, ...]  # the plan's stages (one for a rollout without a plan)
    step: plans.Step  # what the plan does next
    at: str  # when this was seen

    @property
    def state(self) -> TrackState:
        return rollout.effective_state(self.track)

    @property
    def verdict(self) -> str:
        t = self.track
        state = self.state
        if state is not TrackState.ACTIVE:
            return f"{state.value}: nothing automatic until an operator resumes or rolls back"
        if rollout.should_halt(t):
            return f"halts: failure rate {rollout.failure_rate(t):.1%} > {t.max_failure_rate:.1%}"
        if self.silence.halts:
            return f"halts on silence: {self.silence.why}"
        if self.step.action is not plans.Action.NONE:
            return f"{self.step.action.value}: {self.step.why}"
        return f"continues: {self.silence.why}"


@dataclass
class Controller:
    settings: Settings
    devices: DeviceStore
    catalog: CatalogStore
    clock: Callable[[], str] = utc_now
    _products: dict[str, list[Device]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Controller:
        return cls(settings, DeviceStore(settings), CatalogStore(settings))

    def policy(self) -> Policy:
        return Policy.from_settings(self.settings)

    # --- one run ---------------------------------------------------------------------------------

    def run(self) -> RunReport:
        now = self.clock()
        policy = self.policy()
        silenced: list[Silenced] = []
        halted: list[Halted] = []
        moved: list[Moved] = []
        faults: list[str] = []
        self._products.clear()
        try:
            products = [p.name for p in self.catalog.products()]
        except StorageUnavailable as fault:
            products, faults = [], [f"listing products: {fault}"]
        for product in products:
            try:
                silenced += self._silence_due(product, now, policy)
                halted_now, moved_now = self._rollouts_due(product, now, policy)
                halted += halted_now
                moved += moved_now
            except StorageUnavailable as fault:  # the next run picks up where this one stopped
                logger().error("controller fault", extra={"product": product, "error": str(fault)})
                faults.append(f"{product}: {fault}")
        self._products.clear()
        report = RunReport(now, tuple(silenced), tuple(halted), tuple(faults), tuple(moved))
        logger().info(
            "controller run",
            extra={
                "at": now,
                "silenced": len(silenced),
                "halted": len(halted),
                "moved": len(moved),
                "faults": len(faults),
            },
        )
        return report

    def _silence_due(self, product: str, now: str, policy: Policy) -> list[Silenced]:
        found = []
        for mac in self.devices.due_offers(product, epoch(now)):
            silenced = self._silence(mac, now, policy)
            if silenced is not None:
                found.append(silenced)
        return found

    def _silence(self, mac: str, now: str, policy: Policy) -> Silenced | None:
        for round_ in range(ROUNDS):
            device = self.devices.get(mac)
            if device is None or device.watch is None:
                return None  # a check, or another run, ended the watch since the index was read
            kind = device.watch.kind
            before = device.attempts.get(kind)
            after = attempts.falls_silent(device, kind, now=now, policy=policy.silence)
            if before is None or after is None:
                if before is None or before.state is not AttemptState.OFFERED:
                    self._drop_stale_watch(device)
                return None  # otherwise not due yet by the current settings: a later run looks again
            catalog = self.catalog.load(device.product, fresh=round_ > 0) if device.product else None
            counter = decision.counter_event(catalog, device, before, after) if catalog else None
            try:
                self.devices.record_silence(device, before, after, counter)
            except Conflict:
                continue
            count("InferredSilences")
            logger().warning(
                "device silent",
                extra={
                    "mac": mac,
                    "product": device.product,
                    "channel": after.channel,
                    "kind": kind.value,
                    "version": after.version,
                    "why": after.why,
                    "counted": counter is not None,
                },
            )
            return Silenced(mac, device.watch.product, after.channel, kind, after.version, counter is not None)
        return None

    def _drop_stale_watch(self, device: Device) -> None:
        """A watch whose attempt is gone (`device retry` cleared it) or closed: nothing left to watch."""
        with contextlib.suppress(Conflict):  # it changed since: the device checked in
            self.devices.clear_watch(device)

    def _rollouts_due(self, product: str, now: str, policy: Policy) -> tuple[list[Halted], list[Moved]]:
        """Halt the rollouts the halt rules call for; move the others' plans along where they are due."""
        catalog = self.catalog.load(product, fresh=True)  # the counts the silences above just moved
        if catalog is None:
            return [], []
        halted, moved = [], []
        for channel in sorted(catalog.channels.values(), key=lambda c: c.name):
            for kind, track in sorted(channel.tracks.items(), key=lambda kt: kt[0].value):
                rule, why = "", ""
                if rollout.should_halt(track):
                    rule = "failures"
                    why = f"failure rate {rollout.failure_rate(track):.1%} > {track.max_failure_rate:.1%}"
                elif rollout.silence_may_halt(track):
                    test = self._silence_test(catalog, channel.name, kind, track, now, policy)
                    if test.halts:
                        rule, why = "silence", test.why
                if rule:
                    if self._halt(product, channel.name, kind, track, rule, why, now):
                        halted.append(Halted(product, channel.name, kind, track.version, rule, why))
                elif plans.due(track, now):
                    move = self._move(catalog, channel.name, kind, track, now, policy)
                    if move is not None:
                        moved.append(move)
        return halted, moved

    def _move(self, catalog: Catalog, channel: str, kind: Kind, track: Track, now: str, policy: Policy) -> Moved | None:
        """Advance or complete a plan whose stage has soaked, if its devices meet the bar: one write
        conditional on the revision judged (another run, a check's halt or an operator's change since
        makes it lose, and the next run judges afresh)."""
        seen, stages = self._evidence(catalog, channel, kind, track, now, policy)
        step = plans.step_of(track, now, seen, stages)
        if step.action is plans.Action.ADVANCE:
            moved = plans.advanced(track, now, plans.control_rate(track, seen))
        elif step.action is plans.Action.COMPLETE:
            moved = plans.completed(track, now)
        else:
            return None
        product = catalog.product.name
        event = "advanced" if step.action is plans.Action.ADVANCE else "completed"
        entry = audit.entry(
            product,
            audit.CONTROLLER,
            "rollout.advance" if step.action is plans.Action.ADVANCE else "rollout.complete",
            audit.track_target(channel, kind, track.version),
            audit.track_fields(track),
            audit.track_fields(moved),
            at=now,
            retention_days=self.settings.audit_retention_days,
        )
        try:  # the entry in the same transaction: a run that loses the condition writes none
            self.catalog.put_track(TrackChange(product, channel, kind, moved, expect=track), audit=entry)
        except Conflict:
            return None
        details = {
            "from_percent": track.percent,
            "percent": moved.percent,
            "stage": (moved.plan.stage + 1) if moved.plan else None,
            "successes": track.successes,
            "failures": track.failures,
            "unknowns": track.unknowns,
            "silents": track.silents,
        }
        notices.announce(notices.Notice(event, product, channel, kind, track.version, step.why, details), self.settings)
        return Moved(product, channel, kind, track.version, step.action, moved.percent, step.why)

    def _evidence(
        self, catalog: Catalog, channel: str, kind: Kind, track: Track, now: str, policy: Policy
    ) -> tuple[rollout.Observation, tuple[plans.StageTally, ...]]:
        """What the product's device records say about a rollout: its observation and its stages."""
        return (
            self._observe(catalog, channel, kind, track, now, policy),
            self._tally(catalog, channel, kind, track, now, policy),
        )

    def _tally(
        self, catalog: Catalog, channel: str, kind: Kind, track: Track, now: str, policy: Policy
    ) -> tuple[plans.StageTally, ...]:
        product = catalog.product
        return plans.tally(
            self._devices_of(product.name),
            product=product.name,
            channel=channel,
            kind=kind,
            track=track,
            trusted=self._trust(product.auth_required, now, policy),
        )

    def _devices_of(self, product: str) -> list[Device]:
        if product not in self._products:  # once per product and run
            self._products[product] = list(self.devices.product_devices(product))
        return self._products[product]

    @staticmethod
    def _trust(auth_required: bool, now: str, policy: Policy) -> Callable[[Device], bool]:
        def trusted(device: Device) -> bool:
            # A device of a product that requires auth only counts through authenticated checks.
            return decision.trusted(device, auth_required, now=now, policy=policy)

        return trusted

    def _silence_test(
        self, catalog: Catalog, channel: str, kind: Kind, track: Track, now: str, policy: Policy
    ) -> rollout.SilenceTest:
        return rollout.silence_test(track, self._observe(catalog, channel, kind, track, now, policy).control)

    def _observe(
        self, catalog: Catalog, channel: str, kind: Kind, track: Track, now: str, policy: Policy
    ) -> rollout.Observation:
        product = catalog.product
        return rollout.observe(
            self._devices_of(product.name),
            product=product.name,
            channel=channel,
            kind=kind,
            track=track,
            now=now,
            silence=policy.silence,
            trusted=self._trust(product.auth_required, now, policy),
        )

    def _halt(self, product: str, channel: str, kind: Kind, track: Track, rule: str, why: str, now: str) -> bool:
        return halts.halt(
            self.catalog,
            product,
            channel,
            kind,
            track,
            rule=rule,
            why=why,
            settings=self.settings,
            actor=audit.CONTROLLER,
            at=now,
        )

    # --- what `otafleet rollout status` shows ------------------------------------------------------

    def status(self, product: str, channel: str) -> list[RolloutStatus]:
        """Each kind's rollout of the channel, with what the halt rules make of it now. Reads the
        product's device records (the control group); writes nothing. [] for an unknown channel."""
        return self._statuses(product, channel)

    def product_status(self, product: str) -> list[RolloutStatus]:
        """status() of every channel of the product (by name), reading its device records once."""
        return self._statuses(product, None)

    def _statuses(self, product: str, channel: str | None) -> list[RolloutStatus]:
        now = self.clock()
        policy = self.policy()
        self._products.clear()
        catalog = self.catalog.load(product, fresh=True)
        if catalog is None:
            return []
        names = sorted(catalog.channels) if channel is None else [channel]
        found = []
        for name in names:
            ch = catalog.channels.get(name)
            if ch is None:
                continue
            for kind, track in sorted(ch.tracks.items(), key=lambda kt: kt[0].value):
                seen, stages = self._evidence(catalog, name, kind, track, now, policy)
                step = plans.step_of(track, now, seen, stages)
                test = rollout.silence_test(track, seen.control)
                found.append(RolloutStatus(product, name, kind, track, seen, test, stages, step, now))
        self._products.clear()
        return found


def summary(report: RunReport) -> dict[str, Any]:
    """The run as the Lambda handler returns it (and `otafleet rollout tick --json` prints it)."""
    return {
        "at": report.at,
        "silenced": [
            {
                "mac": s.mac,
                "product": s.product,
                "channel": s.channel,
                "kind": s.kind.value,
                "version": s.version,
                "counted": s.counted,
            }
            for s in report.silenced
        ],
        "halted": [
            {
                "product": h.product,
                "channel": h.channel,
                "kind": h.kind.value,
                "version": h.version,
                "rule": h.rule,
                "why": h.why,
            }
            for h in report.halted
        ],
        "moved": [
            {
                "product": m.product,
                "channel": m.channel,
                "kind": m.kind.value,
                "version": m.version,
                "action": m.action.value,
                "percent": m.percent,
                "why": m.why,
            }
            for m in report.moved
        ],
        "faults": list(report.faults),
    }
