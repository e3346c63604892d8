from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from support.world import World


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield World.create()
