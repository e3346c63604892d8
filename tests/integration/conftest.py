from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from support.moto_transactions import item_level_backups
from support.world import World
from update import app as update_app


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield World.create()


@pytest.fixture(autouse=True)
def _item_level_transaction_backups() -> Iterator[None]:
    with item_level_backups():
        yield


@pytest.fixture(autouse=True)
def _fresh_update_handler() -> Iterator[None]:
    """Tests that install a service into the update handler never leak it into the next test."""
    update_app._service = None
    yield
    update_app._service = None
