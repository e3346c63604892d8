"""The catalog table: products, their channels and releases, one partition per product.

The update path reads a product's whole partition with one Query and keeps it for a short,
configurable time, so a warm check touches DynamoDB only for the device itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from otafleet.config import Settings
from otafleet.models import (
    COUNTERS,
    AuditEntry,
    Catalog,
    Channel,
    Kind,
    Product,
    Release,
    ReleaseState,
    Track,
    TrackState,
    Window,
)
from otafleet.storage import clients
from otafleet.storage.audit import audit_put
from otafleet.storage.dynamo import from_item, to_item
from otafleet.storage.errors import Conflict, translated
from otafleet.storage.items import (
    PRODUCT_SK,
    REJECTION_PREFIX,
    channel_from_item,
    channel_sk,
    channel_to_item,
    counter_name,
    product_from_item,
    product_pk,
    product_to_item,
    rejection_sk,
    release_from_item,
    release_sk,
    release_to_item,
    track_to_map,
    window_to_map,
)


class _Any:
    """`expect=ANY`: write the track whatever is there (seeding test and demo data)."""


ANY = _Any()


@dataclass(frozen=True)
class TrackChange:
    """One kind's track of a channel to write, conditional on the track read before (see put_track)."""

    product: str
    channel: str
    kind: Kind
    track: Track
    expect: Track | _Any | None
    channel_exists: bool = True
    reset_counters: bool = False


# Bumped by forget_cached(): a catalog cached under an older value is not used.
_generation = 0


def forget_cached() -> None:
    """Forget every catalog cached in this process. Nothing calls it on AWS (there a change shows within
    catalog_cache_seconds); the local stack, whose embedded AWS answers every write in this same process,
    calls it after each one, so it caches as AWS does and still shows a change at the next check."""
    global _generation
    _generation += 1


class CatalogStore:
    def __init__(self, settings: Settings, client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = settings.catalog_table
        self.ttl = settings.catalog_cache_seconds
        self._settings = settings
        self._client = client
        self._clock = clock
        self._cache: dict[str, tuple[float, int, Catalog | None]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = clients.dynamodb(self._settings)
        return self._client

    def load(self, product: str, *, fresh: bool = False) -> Catalog | None:
        now = self._clock()
        hit = self._cache.get(product)
        if hit and not fresh and now - hit[0] < self.ttl and hit[1] == _generation:
            return hit[2]
        generation = _generation  # before the read: a write during it leaves this entry stale
        catalog = self._query(product, consistent=fresh)
        self._cache[product] = (now, generation, catalog)
        return catalog

    def _query(self, product: str, *, consistent: bool = False) -> Catalog | None:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": product_pk(product)}},
            # Fresh reads (a check deciding again after a lost write, operator commands) see every write.
            "ConsistentRead": consistent,
        }
        with translated():
            while True:
                out = self.client.query(**kwargs)
                items += [from_item(i) for i in out.get("Items", [])]
                if "LastEvaluatedKey" not in out:
                    break
                kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        head = next((i for i in items if i["sk"] == PRODUCT_SK), None)
        if head is None:
            return None
        channels: dict[str, Channel] = {}
        releases: dict[tuple[Kind, str], Release] = {}
        for item in items:
            if item.get("type") == "channel":
                ch = channel_from_item(item)
                channels[ch.name] = ch
            elif item.get("type") == "release":
                rel = release_from_item(item)
                releases[(rel.kind, rel.version)] = rel
        return Catalog(product=product_from_item(head), channels=channels, releases=releases)

    def invalidate(self, product: str | None = None) -> None:
        if product is None:
            self._cache.clear()
        else:
            self._cache.pop(product, None)

    # --- writes ----------------------------------------------------------------------------------

    def put_product(self, product: Product) -> None:
        with translated():
            self.client.put_item(TableName=self.table, Item=to_item(product_to_item(product)))
        self.invalidate(product.name)

    def put_channel(self, channel: Channel) -> None:
        """Write each of the channel's tracks whatever is there (seeding; operators use put_track)."""
        for kind, track in channel.tracks.items():
            self.put_track(TrackChange(channel.product, channel.name, kind, track, ANY, channel_exists=False))

    def put_track(self, change: TrackChange, *, audit: AuditEntry | None = None) -> Track:
        """Write one kind's track of a channel, conditional on the track `expect`ed there (None: no
        track of that kind yet), so that a concurrent halt, promotion or `channel set` is never
        overwritten, and the other kind's track is never touched. Conflict when it changed. With
        `audit`, the entry is written in the same transaction: exactly when the track is."""
        try:
            with translated():
                op = track_write(self.table, change)
                if audit is not None:
                    self._transact(op, audit)
                elif "Put" in op:
                    self.client.put_item(**op["Put"])
                else:
                    self.client.update_item(**op["Update"])
        except Conflict:
            if change.channel_exists or isinstance(change.expect, Track):
                raise
            # Someone created the channel since it was read: write into it, still on the same condition.
            return self.put_track(replace(change, channel_exists=True), audit=audit)
        finally:
            self.invalidate(change.product)
        return written_track(change)

    def _transact(self, op: dict[str, Any], audit: AuditEntry) -> None:
        """The catalog write `op` and the audit entry of it, all or nothing (Conflict: `op` lost)."""
        self.client.transact_write_items(TransactItems=[op, {"Put": audit_put(self._settings.audit_table, audit)}])

    def set_channel_window(self, product: str, channel: str, window: Window | None) -> None:
        """Set or clear an existing channel's maintenance window, touching nothing else."""
        key = {"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}}
        update: dict[str, Any] = {"UpdateExpression": "REMOVE #w"}
        if window is not None:
            update = {
                "UpdateExpression": "SET #w = :w",
                "ExpressionAttributeValues": to_item({":w": window_to_map(window)}),
            }
        try:
            with translated():
                self.client.update_item(
                    TableName=self.table,
                    Key=key,
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#w": "window"},
                    **update,
                )
        finally:
            self.invalidate(product)

    def set_release_state(self, release: Release, state: ReleaseState) -> None:
        """Change a registered release's state (revoking it), conditional on the state read, so two
        operators never undo each other's change unseen. Its bytes and facts stay as registered.
        Conflict when the release is gone or its state changed."""
        try:
            with translated():
                self.client.update_item(
                    TableName=self.table,
                    Key={
                        "pk": {"S": product_pk(release.product)},
                        "sk": {"S": release_sk(release.kind, release.version)},
                    },
                    UpdateExpression="SET #s = :s",
                    ConditionExpression="attribute_exists(pk) AND #s = :before",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={":s": {"S": state.value}, ":before": {"S": release.state.value}},
                )
        finally:
            self.invalidate(release.product)

    def delete_channel(self, product: str, channel: str) -> None:
        """Delete a channel with its tracks, window and rollout counters (all on its one item).
        Conflict when it does not exist."""
        try:
            with translated():
                self.client.delete_item(
                    TableName=self.table,
                    Key={"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}},
                    ConditionExpression="attribute_exists(pk)",
                )
        finally:
            self.invalidate(product)

    def delete_product(self, product: str) -> int:
        """Delete every item of the product's partition: channels, releases, rejected uploads, quota counts,
        and the product itself last, so that a run cut short leaves a product that can be deleted again
        rather than items nobody can reach. Returns how many items went."""
        keys: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": product_pk(product)}},
            "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        try:
            with translated():
                while True:
                    out = self.client.query(**kwargs)
                    keys += out.get("Items", [])
                    if "LastEvaluatedKey" not in out:
                        break
                    kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
                keys.sort(key=lambda k: k["sk"]["S"] == PRODUCT_SK)  # the product's own item last
                for key in keys:
                    self.client.delete_item(TableName=self.table, Key=key)
        finally:
            self.invalidate(product)
        return len(keys)

    def get_product(self, name: str) -> Product | None:
        item = self._get(product_pk(name), PRODUCT_SK)
        return product_from_item(item) if item else None

    def get_channel(self, product: str, name: str) -> Channel | None:
        item = self._get(product_pk(product), channel_sk(name))
        return channel_from_item(item) if item else None

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        with translated():
            out = self.client.get_item(
                TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
            )
        item = out.get("Item")
        return from_item(item) if item else None

    def set_track_state(
        self,
        product: str,
        channel: str,
        kind: Kind,
        version: str,
        state: TrackState,
        *,
        from_states: Iterable[TrackState] = tuple(TrackState),
        expect_rev: int | None = None,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Change a rollout's state if the channel still serves `version` in one of `from_states` (and,
        with `expect_rev`, is still the revision that was read); False when it moved on, so a halt happens
        once, and never over an operator's later change. With `audit`, the entry is written in the same
        transaction, so it is written exactly once too."""
        allowed = sorted(s.value for s in from_states)
        values: dict[str, Any] = {":state": state.value, ":version": version, ":zero": 0, ":one": 1}
        values.update({f":f{i}": v for i, v in enumerate(allowed)})
        revision = ""
        if expect_rev:
            revision = " AND tracks.#k.rev = :rev"
            values[":rev"] = expect_rev
        elif expect_rev == 0:
            revision = " AND attribute_not_exists(tracks.#k.rev)"
        update = {
            "TableName": self.table,
            "Key": {"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}},
            "UpdateExpression": "SET tracks.#k.#state = :state, tracks.#k.rev = "
            "if_not_exists(tracks.#k.rev, :zero) + :one",
            "ConditionExpression": "tracks.#k.#v = :version AND tracks.#k.#state IN ("
            + ", ".join(f":f{i}" for i in range(len(allowed)))
            + ")"
            + revision,
            "ExpressionAttributeNames": {"#k": kind.value, "#state": "state", "#v": "version"},
            "ExpressionAttributeValues": to_item(values),
        }
        try:
            with translated():
                if audit is not None:
                    self._transact({"Update": update}, audit)
                else:
                    self.client.update_item(**update)
        except Conflict:
            return False
        finally:
            self.invalidate(product)
        return True

    def register(self, release: Release, promotion: TrackChange | None = None) -> None:
        """Register a release once, and with it (in one transaction) its promotion to a channel, so that
        a promotion happens exactly when the registration does. Conflict (`failed` says which item:
        0 the release exists already, 1 the channel changed since it was read)."""
        put = {
            "TableName": self.table,
            "Item": to_item(release_to_item(release)),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        try:
            with translated():
                if promotion is None:
                    try:
                        self.client.put_item(**put)
                    except self.client.exceptions.ConditionalCheckFailedException:
                        raise Conflict("release exists", (0,)) from None
                else:
                    self.client.transact_write_items(TransactItems=[{"Put": put}, track_write(self.table, promotion)])
        finally:
            self.invalidate(release.product)

    def add_release(self, release: Release) -> None:
        """Register a release once: raises Conflict when product+kind+version already exists."""
        self.register(release)

    def add_rejection(self, release: Release) -> None:
        """Record a rejected upload beside (never over) the product's releases, keyed by its bytes,
        so that a rejected second upload of a version leaves the registered release untouched."""
        item = release_to_item(release)
        item["sk"] = rejection_sk(release.kind, release.version, release.sha256)
        item["type"] = "rejection"
        with translated():
            self.client.put_item(TableName=self.table, Item=to_item(item))

    def rejections(self, product: str) -> list[Release]:
        """The product's rejected uploads (each kept under its own key beside the releases, see
        add_rejection), oldest first. A separate Query: the update path's catalog read never needs them."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :x)",
            "ExpressionAttributeValues": {":pk": {"S": product_pk(product)}, ":x": {"S": REJECTION_PREFIX}},
            "ConsistentRead": True,
        }
        found: list[Release] = []
        with translated():
            while True:
                out = self.client.query(**kwargs)
                found += [release_from_item(from_item(i)) for i in out.get("Items", [])]
                if "LastEvaluatedKey" not in out:
                    break
                kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        return sorted(found, key=lambda r: r.uploaded_at or "")

    def upload_status(self, product: str, kind: Kind, version: str, sha256: str) -> Release | None:
        """What became of an upload with these bytes: its release, its rejection, or None (not yet)."""
        release = self.get_release(product, kind, version)
        if release is not None and release.sha256 == sha256:
            return release
        with translated():
            out = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": product_pk(product)}, "sk": {"S": rejection_sk(kind, version, sha256)}},
                ConsistentRead=True,
            )
        item = out.get("Item")
        return release_from_item(from_item(item)) if item else None

    def get_release(self, product: str, kind: Kind, version: str) -> Release | None:
        with translated():
            out = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": product_pk(product)}, "sk": {"S": release_sk(kind, version)}},
                ConsistentRead=True,
            )
        item = out.get("Item")
        return release_from_item(from_item(item)) if item else None

    def products(self) -> list[Product]:
        found: list[Product] = []
        with translated():
            for page in self.client.get_paginator("scan").paginate(
                TableName=self.table,
                FilterExpression="sk = :sk",
                ExpressionAttributeValues={":sk": {"S": PRODUCT_SK}},
            ):
                found += [product_from_item(from_item(i)) for i in page.get("Items", [])]
        return sorted(found, key=lambda p: p.name)


def written_track(change: TrackChange) -> Track:
    """The track as `change` writes it: one revision past the one it replaces."""
    base = change.track.rev if isinstance(change.expect, _Any) else (change.expect.rev if change.expect else 0)
    return replace(change.track, rev=base + 1)


def track_write(table: str, change: TrackChange) -> dict[str, Any]:
    """The Put (new channel) or Update (one kind's track of an existing channel) for a TrackChange,
    ready for a single call or a transaction."""
    track = track_to_map(written_track(change))
    key = {"pk": {"S": product_pk(change.product)}, "sk": {"S": channel_sk(change.channel)}}
    if not change.channel_exists:
        item = channel_to_item(Channel(change.product, change.channel, {}))
        item["tracks"] = {change.kind.value: track}
        return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(pk)"}}
    names = {"#k": change.kind.value}
    values: dict[str, Any] = {":track": track}
    condition = "attribute_exists(tracks)"
    if isinstance(change.expect, Track):
        names["#v"] = "version"
        condition += " AND tracks.#k.#v = :expect_version"
        values[":expect_version"] = change.expect.version
        if change.expect.rev:
            condition += " AND tracks.#k.rev = :rev"
            values[":rev"] = change.expect.rev
        else:  # written before tracks had revisions
            condition += " AND attribute_not_exists(tracks.#k.rev)"
    elif change.expect is None:
        condition += " AND attribute_not_exists(tracks.#k)"
    expression = "SET tracks.#k = :track"
    if change.reset_counters:
        removed = [counter_name(c, change.kind, change.track.version) for c in COUNTERS]
        names.update({f"#c{i}": name for i, name in enumerate(removed)})
        expression += " REMOVE " + ", ".join(f"#c{i}" for i in range(len(removed)))
    return {
        "Update": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }
    }


__all__ = ["ANY", "CatalogStore", "Conflict", "TrackChange"]
