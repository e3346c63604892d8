"""The catalog cache: a product's catalog is read once per catalog_cache_seconds, again when asked for
fresh, and again after forget_cached() (what the local stack calls at every write its embedded AWS answers)."""

from __future__ import annotations

from typing import Any

from otafleet.config import Settings
from otafleet.storage import catalog as catalog_module
from otafleet.storage.catalog import CatalogStore, forget_cached


class CountingClient:
    def __init__(self) -> None:
        self.queries = 0

    def query(self, **_: Any) -> dict[str, Any]:
        self.queries += 1
        return {"Items": []}


def store(ttl: float = 30.0) -> tuple[CatalogStore, CountingClient, list[float]]:
    settings = Settings(
        devices_table="d", catalog_table="c", firmware_bucket="b", region="eu-west-1", catalog_cache_seconds=ttl
    )
    client, now = CountingClient(), [100.0]
    return CatalogStore(settings, client=client, clock=lambda: now[0]), client, now


def test_a_catalog_is_read_once_within_its_cache_time() -> None:
    s, client, now = store()
    s.load("door")
    now[0] += 29
    s.load("door")
    assert client.queries == 1
    now[0] += 2
    s.load("door")
    assert client.queries == 2


def test_fresh_reads_again() -> None:
    s, client, _ = store()
    s.load("door")
    s.load("door", fresh=True)
    assert client.queries == 2


def test_forgetting_makes_every_store_of_the_process_read_again() -> None:
    (a, a_client, _), (b, b_client, _) = store(), store()
    a.load("door")
    b.load("door")
    forget_cached()
    a.load("door")
    b.load("door")
    a.load("door")
    assert (a_client.queries, b_client.queries) == (2, 2)


def test_a_write_during_a_read_leaves_what_it_read_stale() -> None:
    """The generation is taken before the read: a write answered while the query ran (after its data was
    read) must not be hidden by the entry that read cached."""
    s, client, _ = store()
    original = client.query

    def query_then_write(**kwargs: Any) -> dict[str, Any]:
        out = original(**kwargs)
        catalog_module.forget_cached()
        return out

    client.query = query_then_write  # type: ignore[method-assign]
    s.load("door")
    client.query = original  # type: ignore[method-assign]
    s.load("door")
    assert client.queries == 2
