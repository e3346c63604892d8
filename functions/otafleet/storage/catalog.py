"""The catalog table: products, their channels and releases, one partition per product.

The update path reads a product's whole partition with one Query and keeps it for a short,
configurable time, so a warm check touches DynamoDB only for the device itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from otafleet.config import Settings
from otafleet.models import Catalog, Channel, Kind, Product, Release, TrackState
from otafleet.storage import clients
from otafleet.storage.dynamo import from_item, to_item
from otafleet.storage.errors import Conflict, translated
from otafleet.storage.items import (
    PRODUCT_SK,
    channel_from_item,
    channel_sk,
    channel_to_item,
    product_from_item,
    product_pk,
    product_to_item,
    rejection_sk,
    release_from_item,
    release_sk,
    release_to_item,
)


class CatalogStore:
    def __init__(self, settings: Settings, client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = settings.catalog_table
        self.ttl = settings.catalog_cache_seconds
        self._settings = settings
        self._client = client
        self._clock = clock
        self._cache: dict[str, tuple[float, Catalog | None]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = clients.dynamodb(self._settings)
        return self._client

    def load(self, product: str, *, fresh: bool = False) -> Catalog | None:
        now = self._clock()
        hit = self._cache.get(product)
        if hit and not fresh and now - hit[0] < self.ttl:
            return hit[1]
        catalog = self._query(product)
        self._cache[product] = (now, catalog)
        return catalog

    def _query(self, product: str) -> Catalog | None:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": product_pk(product)}},
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
        """Replace the channel's tracks, keeping its rollout counters (other attributes)."""
        item = channel_to_item(channel)
        with translated():
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}},
                UpdateExpression="SET #type = :type, product = :product, #name = :name, tracks = :tracks",
                ExpressionAttributeNames={"#type": "type", "#name": "name"},
                ExpressionAttributeValues=to_item(
                    {
                        ":type": "channel",
                        ":product": channel.product,
                        ":name": channel.name,
                        ":tracks": item["tracks"],
                    }
                ),
            )
        self.invalidate(channel.product)

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

    def set_track_state(self, product: str, channel: str, kind: Kind, version: str, state: TrackState) -> bool:
        """Change a rollout's state if the channel still serves `version`; False when it moved on."""
        try:
            with translated():
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}},
                    UpdateExpression="SET tracks.#k.#state = :state",
                    ConditionExpression="tracks.#k.version = :version",
                    ExpressionAttributeNames={"#k": kind.value, "#state": "state"},
                    ExpressionAttributeValues={":state": {"S": state.value}, ":version": {"S": version}},
                )
        except Conflict:
            return False
        finally:
            self.invalidate(product)
        return True

    def add_release(self, release: Release) -> None:
        """Register a release once: raises Conflict when product+kind+version already exists."""
        with translated():
            self.client.put_item(
                TableName=self.table,
                Item=to_item(release_to_item(release)),
                ConditionExpression="attribute_not_exists(pk)",
            )
        self.invalidate(release.product)

    def add_rejection(self, release: Release) -> None:
        """Record a rejected upload beside (never over) the product's releases, keyed by its bytes,
        so that a rejected second upload of a version leaves the registered release untouched."""
        item = release_to_item(release)
        item["sk"] = rejection_sk(release.kind, release.version, release.sha256)
        item["type"] = "rejection"
        with translated():
            self.client.put_item(TableName=self.table, Item=to_item(item))

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

    def reset_counters(self, product: str, channel: str, kind: Kind, version: str) -> None:
        """Forget a channel's rollout success/failure counts for one release (a new rollout of it starts
        from zero). Nothing happens when the channel does not exist."""
        from otafleet.storage.items import counter_name

        try:
            with translated():
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}},
                    UpdateExpression="REMOVE #ok, #fail",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={
                        "#ok": counter_name("ok", kind, version),
                        "#fail": counter_name("fail", kind, version),
                    },
                )
        except Conflict:
            pass
        finally:
            self.invalidate(product)


__all__ = ["CatalogStore", "Conflict"]
