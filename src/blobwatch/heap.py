"""The C heap of a long-running job (glibc's malloc): give free memory back to the system.

numpy allocates an image-sized array (4 MiB at 1024x1024) many times per monitored image, from
several threads.  glibc keeps freed blocks in its heaps and per-thread arenas, and after the first
large block is freed it raises its mmap threshold, so later image-sized arrays come from the
heaps too; the process's resident memory then keeps every high-water mark of every arena.
`trim` hands the free part back between the steps of an image.  (Setting glibc's
``MALLOC_MMAP_THRESHOLD_=4194304`` in the environment goes further, every image-sized array
its own mapping, at a cost in page faults: docs/benchmarks.md.)  Elsewhere `trim` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["trim"]


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def trim() -> None:
    """Return the heaps' free memory to the system (``malloc_trim(0)``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
