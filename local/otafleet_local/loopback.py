"""Is a socket address on this machine? The test suite and the benchmarks refuse every other one."""

from __future__ import annotations

import ipaddress
from typing import Any


def is_loopback_address(address: Any) -> bool:
    """True for ("127.x.y.z" | "::1" | "localhost", port…) and for unix sockets (str/bytes paths)."""
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(address, (str, bytes))
