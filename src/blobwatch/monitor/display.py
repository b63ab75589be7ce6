"""The display arrays of a run: its median stack and difference, saved once when it is recorded.

The review app shows and measures these pixels; rebuilding them means reading the image and
its 30 references and registering them again (seconds per image). `blobwatch.monitor.runner`
saves them beside the run's report page as float32 ``.npy`` files named after the run
(``stack_run<id>.npy``, ``difference_run<id>.npy``: 4 MB each for a 1024x1024 image), and the
app reads them back by the run id recorded in the database.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from blobwatch.atomic import write_bytes_atomic

#: The arrays saved for each run.
KINDS = ("stack", "difference")


def display_path(folder: str | os.PathLike, run_id: int, kind: str) -> Path:
    """Where run ``run_id``'s ``kind`` array lies in its report ``folder``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return Path(folder) / f"{kind}_run{int(run_id)}.npy"


def npy_bytes(data: np.ndarray) -> bytes:
    """``data`` as float32 ``.npy`` bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(data, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def save_display_arrays(
    folder: str | os.PathLike, run_id: int, stack: np.ndarray, difference: np.ndarray
) -> list[Path]:
    """Save a run's stack and difference (atomically) and remove other runs' arrays there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, data in (("stack", stack), ("difference", difference)):
        path = display_path(folder, run_id, kind)
        write_bytes_atomic(path, npy_bytes(data))
        written.append(path)
    for old in folder.glob("*_run*.npy"):  # a reprocessed image: the older run's arrays
        if old not in written and old.name.split("_run")[0] in KINDS:
            old.unlink(missing_ok=True)
    return written


def load_array(
    path: str | os.PathLike, shape: tuple[int, int] | None = None, *, mmap: bool = False
) -> np.ndarray | None:
    """A float32 2-D ``.npy`` array, or None when it is missing, unreadable, not float32 2-D or
    (given ``shape``) of another shape. With ``mmap`` it is memory-mapped read-only."""
    try:
        data = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError):
        return None
    if data.dtype != np.float32 or data.ndim != 2 or (shape is not None and data.shape != tuple(shape)):
        return None
    return data


def load_display_arrays(
    folder: str | os.PathLike, run_id: int, shape: tuple[int, int] | None = None, *, mmap: bool = False
) -> dict[str, np.ndarray] | None:
    """Run ``run_id``'s ``{"stack": ..., "difference": ...}`` from ``folder``, or None when
    either is missing, unreadable or (given ``shape``) of another shape.

    With ``mmap`` the arrays are memory-mapped read-only: the operating system's page cache holds
    them, shared by every reader, instead of the process's memory. A file replaced later (a
    reprocessed image) stays valid for who mapped it.
    """
    out = {}
    for kind in KINDS:
        data = load_array(display_path(folder, run_id, kind), shape, mmap=mmap)
        if data is None:
            return None
        out[kind] = data
    return out
