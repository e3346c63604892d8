"""Tools installed outside the project environment (checkov, like SAM CLI, lives in .tools/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def require_tool(path: Path) -> None:
    """Skip when a separately installed tool is missing, but only outside `make`: the Makefile installs
    the tools before pytest and sets OTAFLEET_REQUIRE_TOOLS, so under `make test` a missing tool fails."""
    if path.exists():
        return
    message = f"{path} is not installed (make installs it)"
    if os.environ.get("OTAFLEET_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)
