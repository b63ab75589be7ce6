"""An on-disk store of reference images and their registration work, keyed by file SHA-256.

A daily difference uses the preceding 30 blob images.  Reading each of them again (FITS parsing,
checks, SHA-256) and preparing each again for registration (defect cleaning, gap filling, the
high-passed spectrum: about 60 ms of CPU per 1024x1024 image) is redone every day although
none of it changes: it depends only on the file's content.  `ReferenceStore` keeps it on disk:

* the image's float32 pixels and its `BlobImage` fields (``<sha>.data.npy``, ``<sha>.json``);
* named derived arrays, e.g. the registration preparation (``<sha>.<name>.<part>.npy``);
* the offsets measured between two files (``offsets/<sha>.json``, keyed by the pair's SHA-256);
* a path index (``paths/``): a file whose size and modification time (ns) match the recorded
  ones is taken to hold the recorded content and is not hashed again.  A changed or replaced
  file (other size or mtime) is read and hashed again, so its stale entry is never used.

Arrays are loaded memory-mapped, read-only.  Every file is written atomically (a temporary file
renamed over the final name; the entry's JSON last), so a crash or a concurrent writer never
leaves a half-written entry that a reader would use.  The store is bounded (``max_bytes``; the
least recently used entries go first) and versioned (`STORE_VERSION`, part of the folder name:
a new layout or algorithm starts an empty folder).  Deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.fits_io import BlobImage

__all__ = ["DEFAULT_MAX_BYTES", "STORE_VERSION", "ReferenceStore", "default_store_dir", "file_state"]

log = logging.getLogger(__name__)

#: Layout and algorithm version of the stored files; bump it when a stored array's meaning changes
#: (e.g. the registration preparation's algorithm): the store then starts a new, empty folder.
STORE_VERSION = "refstore-1"

#: Default bound of a store's size: about 200 entries of a 1024x1024 image (4 MiB of pixels and
#: 5 MiB of registration preparation each).
DEFAULT_MAX_BYTES = 2 << 30


#: `numpy.load` parses the .npy header with `ast.literal_eval`, which is not thread-safe in
#: CPython 3.11 ("SystemError: AST constructor recursion depth mismatch" when two threads parse at
#: once); references are loaded from several threads, so the header reads take turns.
_LOAD_LOCK = threading.Lock()


def default_store_dir() -> Path:
    """``$BLOBWATCH_CACHE/references``, else ``~/.cache/blobwatch/references``."""
    base = os.environ.get("BLOBWATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "blobwatch")
    return Path(base) / "references"


def file_state(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when it cannot be examined."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def _path_key(path: str | os.PathLike) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:40]


def _is_sha(sha: str) -> bool:
    return len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


class ReferenceStore:
    """Blob images, derived arrays and pairwise offsets on disk, keyed by file SHA-256.

    Parameters
    ----------
    root : path-like
        The store's folder (created on the first write); files go to ``root/STORE_VERSION``.
    max_bytes : int
        Bound of the stored arrays' total size; the least recently used entries are removed
        beyond it (checked after each new entry).
    """

    def __init__(self, root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) / STORE_VERSION
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0

    # ---------------------------------------------------------------- the path index
    def known_sha256(self, path: str | os.PathLike) -> str | None:
        """The SHA-256 recorded for ``path``, if its size and mtime are still the recorded ones."""
        state = file_state(path)
        if state is None:
            return None
        try:
            record = json.loads((self.root / "paths" / f"{_path_key(path)}.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("path") != os.path.abspath(path) or tuple(record.get("state", ())) != state:
            return None
        sha = str(record.get("sha256", ""))
        return sha if _is_sha(sha) else None

    def remember_path(
        self, path: str | os.PathLike, sha256: str, state: tuple[int, int] | None = None
    ) -> None:
        """Record that ``path`` (at its current, or the given, size and mtime) holds ``sha256``.

        Pass the ``state`` taken before the file was hashed, so that a file changed while it was
        read is not recorded with the new state.
        """
        state = state or file_state(path)
        if state is None or not _is_sha(sha256):
            return
        record = {"path": os.path.abspath(path), "state": list(state), "sha256": sha256}
        self._write_json(self.root / "paths" / f"{_path_key(path)}.json", record)

    # ---------------------------------------------------------------- images
    def _meta_path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.json"

    def _array_path(self, sha: str, name: str) -> Path:
        return self.root / sha[:2] / f"{sha}.{name}.npy"

    def _meta(self, sha: str) -> dict[str, Any] | None:
        if not _is_sha(sha):
            return None
        try:
            meta = json.loads(self._meta_path(sha).read_text())
        except (OSError, ValueError):
            return None
        return meta if meta.get("sha256") == sha else None

    def image(self, sha256: str, path: str | os.PathLike | None = None) -> BlobImage | None:
        """The stored image of content ``sha256`` (pixels memory-mapped, read-only), or None.

        With ``path``, the image is returned only if ``path``'s size and mtime are those recorded
        for it (`known_sha256`): a changed or replaced file is not answered from the store.
        """
        if path is not None and self.known_sha256(path) != sha256:
            self.misses += 1
            return None
        meta = self._meta(sha256)
        data = self._load(sha256, "data") if meta is not None else None
        if meta is None or data is None or list(data.shape) != meta.get("shape"):
            self.misses += 1
            return None
        self.hits += 1
        with contextlib.suppress(OSError):  # least recently used: the JSON's mtime
            os.utime(self._meta_path(sha256))
        return BlobImage(
            data=data,
            mjd=float(meta["mjd"]),
            path=os.fspath(path) if path is not None else meta.get("path"),
            filter=meta.get("filter"),
            provenance=dict(meta.get("provenance") or {}),
        )

    def put_image(self, image: BlobImage, state: tuple[int, int] | None = None) -> bool:
        """Store ``image`` (it must carry its file's ``provenance['sha256']``) and index its path.

        Returns
        -------
        bool
            Whether the store now holds the image (False: no SHA-256, or it could not be written).
        """
        sha = str((image.provenance or {}).get("sha256") or "")
        if not _is_sha(sha):
            return False
        try:
            if self._meta(sha) is None or self._load(sha, "data") is None:
                _save_npy(self._array_path(sha, "data"), np.asarray(image.data, dtype=np.float32))
                meta = {
                    "sha256": sha,
                    "shape": list(image.data.shape),
                    "mjd": float(image.mjd),
                    "path": image.path,
                    "filter": image.filter,
                    "provenance": image.provenance,
                }
                self._write_json(self._meta_path(sha), meta)
                self._evict()
            if image.path is not None:
                self.remember_path(image.path, sha, state)
        except (OSError, TypeError, ValueError) as exc:  # a cache: never fails the job
            log.warning("reference store %s: cannot store %s (%s)", self.root, image.name, exc)
            return False
        return True

    # ---------------------------------------------------------------- derived arrays
    def arrays(self, sha256: str, name: str, parts: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """The derived arrays ``name`` of content ``sha256`` (memory-mapped), or None if any is missing."""
        if not _is_sha(sha256):
            return None
        out = {}
        for part in parts:
            array = self._load(sha256, f"{name}.{part}")
            if array is None:
                self.misses += 1
                return None
            out[part] = array
        self.hits += 1
        return out

    def put_arrays(self, sha256: str, name: str, arrays: Mapping[str, np.ndarray]) -> bool:
        """Store derived arrays ``name`` of content ``sha256`` (written only where missing).

        Returns
        -------
        bool
            Whether the store now holds them.
        """
        if not _is_sha(sha256):
            return False
        try:
            for part, array in arrays.items():
                path = self._array_path(sha256, f"{name}.{part}")
                if not path.exists():
                    _save_npy(path, array)
            self._evict()
        except (OSError, ValueError) as exc:
            log.warning("reference store %s: cannot store %s of %s (%s)", self.root, name, sha256[:12], exc)
            return False
        return True

    # ---------------------------------------------------------------- offsets between two files
    def offsets(self, current_sha: str, key: str) -> dict[str, tuple[float, float]]:
        """Offsets measured (under settings ``key``) of references relative to ``current_sha``, by SHA-256."""
        try:
            record = json.loads((self.root / "offsets" / f"{current_sha}.json").read_text())
        except (OSError, ValueError):
            return {}
        return {sha: (float(o[0]), float(o[1])) for sha, o in (record.get(key) or {}).items()}

    def put_offsets(self, current_sha: str, key: str, offsets: Mapping[str, tuple[float, float]]) -> None:
        """Add offsets of references (by SHA-256) relative to ``current_sha`` under settings ``key``."""
        if not _is_sha(current_sha) or not offsets:
            return
        path = self.root / "offsets" / f"{current_sha}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        mine = record.setdefault(key, {})
        mine.update({sha: [float(dy), float(dx)] for sha, (dy, dx) in offsets.items() if _is_sha(sha)})
        with contextlib.suppress(OSError):
            self._write_json(path, record)

    # ---------------------------------------------------------------- internals
    def _load(self, sha: str, name: str) -> np.ndarray | None:
        try:
            with _LOAD_LOCK:
                return np.load(self._array_path(sha, name), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None

    def _write_json(self, path: Path, record: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record))

    def size(self) -> int:
        """Total bytes of the stored arrays."""
        return sum(f.stat().st_size for f in self.root.glob("??/*.npy"))

    def _evict(self) -> None:
        """Remove the least recently used entries while the arrays exceed ``max_bytes``."""
        entries: dict[str, list[Path]] = {}
        sizes: dict[str, int] = {}
        for f in self.root.glob("??/*"):
            sha = f.name.split(".", 1)[0]
            entries.setdefault(sha, []).append(f)
            if f.suffix == ".npy":
                with contextlib.suppress(OSError):
                    sizes[sha] = sizes.get(sha, 0) + f.stat().st_size
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return

        def used(sha: str) -> int:
            stamps = []
            for f in entries[sha]:
                with contextlib.suppress(OSError):
                    stamps.append(f.stat().st_mtime_ns)
            return max(stamps, default=0)

        for sha in sorted(entries, key=used):
            if total <= self.max_bytes:
                break
            for f in entries[sha]:
                with contextlib.suppress(OSError):
                    f.unlink()
            total -= sizes.get(sha, 0)
            log.info("reference store %s: %s removed (least recently used)", self.root, sha[:12])
