"""Values the review app makes once: figures and pixel arrays, one maker per key, no global lock.

`Memo` keeps made values in memory (`blobwatch.lru.LRUCache`) and, for bytes with a cache
folder, on disk under a hash of their key, so a restarted app does not render them again.
Keys name the content (image checksum, run id, review state), never a time. Two requests for
the same missing value make it once (the second waits for the first); requests for other
keys never wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

from blobwatch.atomic import write_bytes_atomic
from blobwatch.lru import LRUCache

V = TypeVar("V")


class KeyLocks:
    """One lock per key while someone holds or waits for it (a single-flight guard)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    def acquire(self, key: Hashable) -> threading.Lock:
        """Wait for ``key``'s lock and hold it (give it back with `release`)."""
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[key] = (lock, users + 1)
        lock.acquire()
        return lock

    def release(self, key: Hashable) -> None:
        """Release ``key``'s lock; forget it when nobody else waits."""
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
        lock.release()


def key_digest(key: Hashable) -> str:
    """A file-name-safe digest of a key made of numbers and strings."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:40]


class Memo(Generic[V]):
    """Made-once values by key, in memory and (for bytes, given ``folder``) on disk.

    Parameters
    ----------
    capacity : int
        Values kept in memory.
    folder : path-like, optional
        Where bytes values are also kept, as ``<digest><suffix>`` (created when needed).
    suffix : str
        File name ending of the values on disk.
    """

    def __init__(self, capacity: int, folder: str | os.PathLike | None = None, suffix: str = ".bin") -> None:
        self._memory: LRUCache[V] = LRUCache(capacity)
        self._locks = KeyLocks()
        self.folder = Path(folder) if folder is not None else None
        self.suffix = suffix
        #: values made by ``make`` (not found in memory or on disk), for tests and benchmarks
        self.made = 0

    def keys(self) -> list[Hashable]:
        """Keys in memory, least recently used first."""
        return self._memory.keys()

    def peek(self, key: Hashable) -> V | None:
        """The value in memory for ``key``, else None (never makes one)."""
        return self._memory.get(key)

    def _file(self, key: Hashable) -> Path | None:
        return self.folder / f"{key_digest(key)}{self.suffix}" if self.folder is not None else None

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value for ``key``: from memory, from disk, or made by ``make()`` (once)."""
        value = self._memory.get(key)
        if value is not None:
            return value
        self._locks.acquire(key)
        try:
            value = self._memory.get(key)  # made while this thread waited
            if value is not None:
                return value
            path = self._file(key)
            if path is not None and path.is_file():
                try:
                    value = path.read_bytes()  # type: ignore[assignment]
                except OSError:
                    value = None
            if value is None:
                value = make()
                self.made += 1
                if path is not None and isinstance(value, bytes):
                    with contextlib.suppress(OSError):  # a read-only reports folder: memory only
                        write_bytes_atomic(path, value)
            self._memory.put(key, value)
            return value
        finally:
            self._locks.release(key)
