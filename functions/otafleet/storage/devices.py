"""The devices table: one item per device, keyed by its normalised MAC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from otafleet.config import Settings
from otafleet.models import Attempt, CheckRecord, CounterEvent, Device, Kind, Quota
from otafleet.storage import clients
from otafleet.storage.dynamo import from_item, to_av, to_item
from otafleet.storage.errors import Conflict, NotFound, translated
from otafleet.storage.items import (
    OPEN_OFFERS_INDEX,
    WATCH_ATTRIBUTES,
    answer_attribute,
    attempt_attribute,
    attempt_to_map,
    channel_sk,
    counter_name,
    device_from_item,
    device_to_item,
    product_pk,
    quota_sk,
    reported_to_map,
    rhythm_to_map,
    watch_to_item,
)

BY_PRODUCT_INDEX = "by-product"


class QuotaFull(Conflict):
    """A quota the check would raise is at its limit (`name`: "enroll" or "pace")."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} quota full")
        self.name = name


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

    def record_check(self, mac: str, record: CheckRecord) -> None:
        """One write per check, conditional on the attempt it replaces (and on the device still being
        unassigned when it enrolls). A verdict's rollout counters and the quotas the check raises (an
        enrollment's, an offer's) go in the same transaction, so each counts exactly once. Raises
        Conflict when a concurrent write won (decide again on fresh data), QuotaFull when a quota is."""
        items = [{"Update": {"TableName": self.table, **_check_update(mac, record)}}]
        if record.counter is not None:
            items.append({"Update": {"TableName": self.catalog_table, **_counter_update(record.counter)}})
        first_quota = len(items)
        items += [{"Update": {"TableName": self.catalog_table, **_quota_update(q)}} for q in record.quotas]
        with translated():
            if len(items) == 1:
                self.client.update_item(**items[0]["Update"])
                return
            try:
                self.client.transact_write_items(TransactItems=items)
            except self.client.exceptions.TransactionCanceledException as err:
                reasons = err.response.get("CancellationReasons") or []
                for i, quota in enumerate(record.quotas, start=first_quota):
                    if i < len(reasons) and reasons[i].get("Code") == "ConditionalCheckFailed":
                        raise QuotaFull(quota.name) from None
                raise

    # --- operator side ---------------------------------------------------------------------------

    def put(self, device: Device) -> None:
        """Write the operator-owned fields, keeping everything the device reported."""
        fields = device_to_item(device)
        fields.pop("mac")
        names = {f"#{k}": k for k in fields}
        values = {f":{k}": to_av(v) for k, v in fields.items()}
        removable = [k for k in ("product", "channel", "pins", "chip", "delivery", "secret_hash") if k not in fields]
        if device.assigned:
            removable += ["enrolled_at", "expires_at"]  # an operator's assignment: trusted, kept for good
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
                    UpdateExpression="REMOVE failed, offer, offer_count, "
                    + ", ".join([*(attempt_attribute(k) for k in Kind), *WATCH_ATTRIBUTES]),
                    ConditionExpression="attribute_exists(mac)",
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                raise NotFound(mac) from None

    def reopen_attempts(self, device: Device, attempts: dict[Kind, Attempt]) -> None:
        """`device retry`: forget the failed releases and put each attempt back to be offered again,
        conditional on the attempts read (a check in flight either lands before or decides again)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, conditions = [], ["attribute_exists(mac)"]
        for i, (kind, attempt) in enumerate(sorted(attempts.items(), key=lambda ka: ka[0].value)):
            names[f"#a{i}"] = attempt_attribute(kind)
            values[f":a{i}"] = attempt_to_map(attempt)
            sets.append(f"#a{i} = :a{i}")
            previous = device.attempts.get(kind)
            if previous is not None:
                conditions.append(f"#a{i}.seq = :s{i}")
                values[f":s{i}"] = previous.seq
        # Any silence watch ends too: the attempts are offered afresh, and the next offer starts a new one.
        removes = ", ".join(["failed", "offer", "offer_count", *WATCH_ATTRIBUTES])
        expression = ("SET " + ", ".join(sets) + " " if sets else "") + "REMOVE " + removes
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"mac": {"S": device.mac}},
            "UpdateExpression": expression,
            "ConditionExpression": " AND ".join(conditions),
        }
        if names:
            update["ExpressionAttributeNames"] = names
            update["ExpressionAttributeValues"] = to_item(values)
        with translated():
            self.client.update_item(**update)

    def delete(self, mac: str) -> None:
        """Delete a device's record (its credentials, attempts and history with it); NotFound if none."""
        with translated():
            try:
                self.client.delete_item(
                    TableName=self.table, Key={"mac": {"S": mac}}, ConditionExpression="attribute_exists(mac)"
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

    # --- the controller's side ----------------------------------------------------------------------

    def due_offers(self, product: str, until: int) -> Iterator[str]:
        """MACs of the product's devices whose silence watch is due by `until` (epoch seconds), from the
        sparse `open-offers` index: it holds only devices whose latest check that counted was an offer,
        so a run reads the offers in flight, not the fleet. Eventually consistent: get() each one."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OPEN_OFFERS_INDEX,
            "KeyConditionExpression": "watch_product = :p AND watch_due <= :until",
            "ExpressionAttributeValues": to_item({":p": product, ":until": until}),
        }
        with translated():
            while True:
                out = self.client.query(**kwargs)
                for item in out.get("Items", []):
                    yield item["mac"]["S"]
                if "LastEvaluatedKey" not in out:
                    return
                kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def product_devices(self, product: str) -> Iterator[Device]:
        """Every device record of a product, from the `by-product` index (eventually consistent): what the
        controller reads to build a rollout's control group, only when its silence could halt it."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_PRODUCT_INDEX,
            "KeyConditionExpression": "product = :p",
            "ExpressionAttributeValues": to_item({":p": product}),
        }
        with translated():
            while True:
                out = self.client.query(**kwargs)
                for item in out.get("Items", []):
                    yield device_from_item(from_item(item))
                if "LastEvaluatedKey" not in out:
                    return
                kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def record_silence(self, device: Device, before: Attempt, after: Attempt, counter: CounterEvent | None) -> None:
        """The controller's silent verdict: one write conditional on the attempt it read (its seq) and on
        the silence watch it read still being there (no check that counts came since), with the rollout's
        silent counter in the same transaction. Conflict when a check or another run got there first."""
        assert device.watch is not None
        update: dict[str, Any] = {
            "Key": {"mac": {"S": device.mac}},
            "UpdateExpression": "SET #att = :attempt REMOVE " + ", ".join(WATCH_ATTRIBUTES),
            "ConditionExpression": "#att.seq = :seq AND " + _watch_condition(),
            "ExpressionAttributeNames": {"#att": attempt_attribute(after.kind)},
            "ExpressionAttributeValues": to_item(
                {":attempt": attempt_to_map(after), ":seq": before.seq, **_watch_values(device)}
            ),
        }
        with translated():
            if counter is None:
                self.client.update_item(TableName=self.table, **update)
                return
            self.client.transact_write_items(
                TransactItems=[
                    {"Update": {"TableName": self.table, **update}},
                    {"Update": {"TableName": self.catalog_table, **_counter_update(counter)}},
                ]
            )

    def clear_watch(self, device: Device) -> None:
        """Drop a silence watch that has nothing left to watch, if it is still the one read."""
        assert device.watch is not None
        with translated():
            self.client.update_item(
                TableName=self.table,
                Key={"mac": {"S": device.mac}},
                UpdateExpression="REMOVE " + ", ".join(WATCH_ATTRIBUTES),
                ConditionExpression=_watch_condition(),
                ExpressionAttributeValues=to_item(_watch_values(device)),
            )

    def scan_seen(self) -> Iterator[tuple[Device, str | None]]:
        """Every device with the product it last asked for by URL (`/update/<product>`), if any:
        how operators find unassigned devices of a product."""
        with translated():
            for page in self.client.get_paginator("scan").paginate(TableName=self.table):
                for item in page.get("Items", []):
                    plain = from_item(item)
                    yield device_from_item(plain), plain.get("seen_product")


def _watch_condition() -> str:
    return "watch_kind = :wkind AND watch_due = :wdue"


def _watch_values(device: Device) -> dict[str, Any]:
    assert device.watch is not None
    return {":wkind": device.watch.kind.value, ":wdue": device.watch.due}


def _check_update(mac: str, record: CheckRecord) -> dict[str, Any]:
    sets = [
        "reported = :reported",
        "last_outcome = :outcome",
        "last_reason = :reason",
        "last_seen = :at",
        "first_seen = if_not_exists(first_seen, :at)",
        "#ans = :answer",
    ]
    removes: list[str] = []
    adds = ["checks :one"]
    names: dict[str, str] = {"#ans": answer_attribute(record.kind)}
    values: dict[str, Any] = {
        ":answer": record.answer,
        ":reported": reported_to_map(record.reported),
        ":outcome": record.outcome,
        ":reason": record.reason,
        ":at": record.at,
        ":one": 1,
    }
    conditions: list[str] = []
    if record.expires_at is not None:
        sets.append("expires_at = :expires")
        values[":expires"] = record.expires_at
    else:
        removes.append("expires_at")
    if record.enroll:
        sets += ["product = :eproduct", "channel = :echannel", "assigned = :true", "enrolled_at = :at"]
        values.update({":eproduct": record.enroll[0], ":echannel": record.enroll[1], ":true": True})
        # Never over an operator's assignment made while this check was in flight.
        conditions.append("(attribute_not_exists(assigned) OR assigned = :false)")
        values[":false"] = False
    if record.seen_product:
        sets.append("seen_product = :seen")
        values[":seen"] = record.seen_product
    if record.changes_attempt:
        assert record.attempt is not None
        names["#att"] = attempt_attribute(record.attempt.kind)
        sets.append("#att = :attempt")
        values[":attempt"] = attempt_to_map(record.attempt)
        if record.replaces is None:
            conditions.append("attribute_not_exists(#att)")
        else:
            conditions.append("#att.seq = :seq")
            values[":seq"] = record.replaces.seq
    if record.failed:
        adds.append("failed :failed")
        values[":failed"] = {record.failed}
    if record.installed:
        adds.append("installs :one")
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
    if record.rhythm is not None:
        sets.append("rhythm = :rhythm")
        values[":rhythm"] = rhythm_to_map(record.rhythm)
        if record.watch is not None:
            sets += [f"{name} = :{name}" for name in WATCH_ATTRIBUTES]
            values.update({f":{k}": v for k, v in watch_to_item(record.watch).items()})
        else:  # a check that counts and offers nothing: the device is alive, any silence watch ends
            removes += WATCH_ATTRIBUTES
    expression = "SET " + ", ".join(sets) + " ADD " + ", ".join(adds)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    if record.unfailed:
        expression += " DELETE failed :unfailed"
        values[":unfailed"] = {record.unfailed}
    update: dict[str, Any] = {
        "Key": {"mac": {"S": mac}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": to_item(values),
        "ExpressionAttributeNames": names,
    }
    if conditions:
        update["ConditionExpression"] = " AND ".join(conditions)
    return update


def _quota_update(quota: Quota) -> dict[str, Any]:
    return {
        "Key": {"pk": {"S": product_pk(quota.product)}, "sk": {"S": quota_sk(quota.name, quota.period)}},
        "UpdateExpression": "ADD #n :one SET expires_at = if_not_exists(expires_at, :exp)",
        "ConditionExpression": "attribute_not_exists(#n) OR #n < :limit",
        "ExpressionAttributeNames": {"#n": "count"},
        "ExpressionAttributeValues": to_item({":one": 1, ":limit": quota.limit, ":exp": quota.expires_at}),
    }


def _counter_update(event: CounterEvent) -> dict[str, Any]:
    """Move a rollout's counters, only while the channel still rolls out that release."""
    names = {"#k": event.kind.value, "#v": "version"}
    values: dict[str, Any] = {":version": event.version}
    adds = []
    for i, (counter, delta) in enumerate(sorted(event.deltas.items())):
        names[f"#c{i}"] = counter_name(counter, event.kind, event.version)
        values[f":d{i}"] = delta
        adds.append(f"#c{i} :d{i}")
    return {
        "Key": {"pk": {"S": product_pk(event.product)}, "sk": {"S": channel_sk(event.channel)}},
        "UpdateExpression": "ADD " + ", ".join(adds),
        "ConditionExpression": "tracks.#k.#v = :version",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item(values),
    }
