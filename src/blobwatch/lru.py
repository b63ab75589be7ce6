"""A small thread-safe least-recently-used cache: the one LRU cache of blobwatch (the monitor's
images, registration preparations, the web app's pixel arrays and rendered PNGs)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Keeps the ``capacity`` most recently used values; counts ``hits`` and ``misses`` of `get`.

    Values are made by the caller outside the lock (two threads may make the same one; the
    later `put` wins), so a slow computation never blocks the other threads' lookups
    (`blobwatch.web.cache.Memo` adds one maker per key on top of it).

    Parameters
    ----------
    capacity : int
        Values kept (at least 1).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` as the most recently used; drop the least recently used beyond capacity."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def peek(self, key: Hashable) -> V | None:
        """The value for ``key`` (now the most recently used) or None, without counting a hit or miss."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]
