"""The devices table: one item per device, keyed by its normalised MAC."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from otafleet.config import Settings
from otafleet.decision import Record
from otafleet.models import Device
from otafleet.storage import clients
from otafleet.storage.dynamo import from_item, to_av, to_item
from otafleet.storage.errors import NotFound, translated
from otafleet.storage.items import (
    channel_sk,
    counter_name,
    device_from_item,
    device_to_item,
    offer_to_map,
    product_pk,
    reported_to_map,
)


class DeviceStore:
    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.table = settings.devices_table
        self.catalog_table = settings.catalog_table
        self._client = client
        self._settings = settings

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = clients.dynamodb(self._settings)
        return self._client

    def get(self, mac: str) -> Device | None:
        with translated():
            out = self.client.get_item(TableName=self.table, Key={"mac": {"S": mac}}, ConsistentRead=True)
        item = out.get("Item")
        return device_from_item(from_item(item)) if item else None

    def record_check(self, mac: str, record: Record, rollout_event: tuple[str, str, str, str] | None = None) -> None:
        """One write per check. `rollout_event` = (event, product, channel, counter attribute): the
        device update and the channel's rollout counter then go together in one transaction."""
        update = _check_update(mac, record)
        with translated():
            if rollout_event is None:
                try:
                    self.client.update_item(TableName=self.table, **update)
                except self.client.exceptions.ConditionalCheckFailedException:
                    # A concurrent check of this device recorded the same new offer first: count this one
                    # as a repeat instead of resetting offer_count to 1.
                    repeat = _check_update(mac, replace(record, offer_is_new=False))
                    self.client.update_item(TableName=self.table, **repeat)
                return
            _, product, channel, counter = rollout_event
            self.client.transact_write_items(
                TransactItems=[
                    {"Update": {"TableName": self.table, **update}},
                    {
                        "Update": {
                            "TableName": self.catalog_table,
                            "Key": {"pk": {"S": product_pk(product)}, "sk": {"S": channel_sk(channel)}},
                            "UpdateExpression": "ADD #c :one",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeNames": {"#c": counter},
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )

    # --- operator side ---------------------------------------------------------------------------

    def put(self, device: Device) -> None:
        """Write the operator-owned fields, keeping everything the device reported."""
        fields = device_to_item(device)
        fields.pop("mac")
        names = {f"#{k}": k for k in fields}
        values = {f":{k}": to_av(v) for k, v in fields.items()}
        removable = [k for k in ("product", "channel", "pins", "chip", "delivery", "secret_hash") if k not in fields]
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in fields)
        if removable:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in removable)
            names.update({f"#{k}": k for k in removable})
        with translated():
            self.client.update_item(
                TableName=self.table,
                Key={"mac": {"S": device.mac}},
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def clear_failures(self, mac: str) -> None:
        with translated():
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"mac": {"S": mac}},
                    UpdateExpression="REMOVE failed, offer, offer_count",
                    ConditionExpression="attribute_exists(mac)",
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                raise NotFound(mac) from None

    def scan(self) -> Iterator[Device]:
        with translated():
            for page in self.client.get_paginator("scan").paginate(TableName=self.table):
                for item in page.get("Items", []):
                    yield device_from_item(from_item(item))

    def set_blocked(self, mac: str, blocked: bool) -> None:
        """Block or unblock an existing device, touching nothing else; NotFound for an unknown MAC."""
        self._set_existing(mac, "blocked", blocked)

    def set_secret_hash(self, mac: str, secret_hash: str) -> None:
        """Replace an existing device's credential hash, touching nothing else; NotFound for an unknown MAC."""
        self._set_existing(mac, "secret_hash", secret_hash)

    def _set_existing(self, mac: str, name: str, value: Any) -> None:
        with translated():
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"mac": {"S": mac}},
                    UpdateExpression="SET #f = :v",
                    ConditionExpression="attribute_exists(mac)",
                    ExpressionAttributeNames={"#f": name},
                    ExpressionAttributeValues={":v": to_av(value)},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                raise NotFound(mac) from None

    def scan_seen(self) -> Iterator[tuple[Device, str | None]]:
        """Every device with the product it last asked for by URL (`/update/<product>`), if any:
        how operators find unassigned devices of a product."""
        with translated():
            for page in self.client.get_paginator("scan").paginate(TableName=self.table):
                for item in page.get("Items", []):
                    plain = from_item(item)
                    yield device_from_item(plain), plain.get("seen_product")


def _check_update(mac: str, record: Record) -> dict[str, Any]:
    sets = [
        "reported = :reported",
        "last_outcome = :outcome",
        "last_reason = :reason",
        "last_seen = :at",
        "first_seen = if_not_exists(first_seen, :at)",
    ]
    removes: list[str] = []
    adds = ["checks :one"]
    values: dict[str, Any] = {
        ":reported": reported_to_map(record.reported),
        ":outcome": record.outcome,
        ":reason": record.reason,
        ":at": record.at,
        ":one": 1,
    }
    if record.enroll:
        sets += ["product = :eproduct", "channel = :echannel", "assigned = :true"]
        values.update({":eproduct": record.enroll[0], ":echannel": record.enroll[1], ":true": True})
    if record.seen_product:
        sets.append("seen_product = :seen")
        values[":seen"] = record.seen_product
    condition: str | None = None
    if record.offer is not None:
        if record.offer_is_new:
            sets += ["offer = :offer", "offer_count = :one"]
            values[":offer"] = offer_to_map(record.offer)
            # Only while the record holds no offer of this release (see record_check).
            condition = "attribute_not_exists(offer) OR offer.#ov <> :ov OR offer.#ok <> :ok"
            values.update({":ov": record.offer.version, ":ok": record.offer.kind.value})
        else:
            sets.append("offer.#at = :at")
            adds.append("offer_count :one")
    elif record.clear_offer:
        removes += ["offer", "offer_count"]
    if record.failed:
        adds.append("failed :failed")
        values[":failed"] = {record.failed}
    if record.running:
        sets.append("running_version = :rversion")
        values[":rversion"] = record.running[0]
        if record.running[1]:
            sets.append("running_md5 = :rmd5")
            values[":rmd5"] = record.running[1]
        else:
            removes.append("running_md5")
    if record.fs_version:
        sets.append("fs_version = :fsv")
        values[":fsv"] = record.fs_version
    if record.chip:
        sets.append("chip = if_not_exists(chip, :chip)")
        values[":chip"] = record.chip
    expression = "SET " + ", ".join(sets) + " ADD " + ", ".join(adds)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    update: dict[str, Any] = {
        "Key": {"mac": {"S": mac}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": to_item(values),
    }
    if "#at" in expression:
        update["ExpressionAttributeNames"] = {"#at": "at"}
    if condition is not None:
        update["ConditionExpression"] = condition
        names = {**update.get("ExpressionAttributeNames", {}), "#ov": "version", "#ok": "kind"}
        update["ExpressionAttributeNames"] = names
    return update


def counter_for(event: str, kind_version: tuple[Any, str]) -> str:
    kind, version = kind_version
    return counter_name("ok" if event == "success" else "fail", kind, version)
