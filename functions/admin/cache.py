"""A warm admin function's short memory of a product's device records.

The overview, a device listing (for its `total`) and rollout status each read every record of the
product from the by-product index: on a 10,000-device fleet about 10 MB and 1,250 read units a request,
and the console asks for all three when it opens, then again for every page and refresh. Within
`seconds` they share one read. The index is eventually consistent anyway, so a few seconds more is no
new kind of staleness; a change made through this function clears it at once (app.py), so an operator
sees their own change on the next answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from otafleet.config import Settings
from otafleet.models import Device
from otafleet.storage.devices import DeviceStore

SECONDS = 10.0
PRODUCTS = 4  # products remembered at once (a 10,000-device product is some tens of MB)


class RecentDeviceStore(DeviceStore):
    """A DeviceStore whose `product_devices` answers from a read at most `seconds` old."""

    def __init__(
        self,
        settings: Settings,
        client: object = None,
        *,
        seconds: float = SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, client)
        self.seconds = seconds
        self.clock = clock
        self._recent: OrderedDict[str, tuple[float, list[Device]]] = OrderedDict()
        # Lambda runs one request per sandbox; the local stack runs several in threads of one process.
        self._lock = threading.Lock()

    def product_devices(self, product: str) -> Iterator[Device]:
        with self._lock:
            found = self._recent.get(product)
        if found is None or self.clock() - found[0] > self.seconds:
            # Stamped when the read is done: a read that took longer than `seconds` is still reused.
            devices = list(super().product_devices(product))
            found = (self.clock(), devices)
        with self._lock:
            self._recent[product] = found
            self._recent.move_to_end(product)
            while len(self._recent) > PRODUCTS:
                self._recent.popitem(last=False)
        return iter(found[1])

    def forget(self) -> None:
        with self._lock:
            self._recent.clear()
