"""Pixel data behind the review pages, found through database ids only.

For an image id the store re-reads the image file recorded in the database and, when the image
was processed, rebuilds its median stack and difference exactly as the run did, with
`blobwatch.monitor.catalog.rebuild_difference` (the code path that measures a candidate).
Results are kept in a small LRU cache (`blobwatch.lru`), made one at a time.
Report files (saliency PNGs) are read from the paths recorded in the database; relative paths
are resolved against the reports folder. No path from a request ever reaches the file system.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from sqlalchemy.orm import Session

from blobwatch.errors import BlobwatchError
from blobwatch.lru import LRUCache
from blobwatch.monitor.db import Image, latest_run


class PixelStore:
    """Cached image, median stack and difference arrays per image id.

    Parameters
    ----------
    reports_dir : path-like, optional
        Folder that relative report paths in the database are relative to.
    images_dir : path-like, optional
        Folder to look in (by file name) for images that moved since they were processed.
    size : int
        Number of images whose arrays are kept in memory (about 12 MB each).
    """

    def __init__(self, *, reports_dir: str | os.PathLike | None = None,
                 images_dir: str | os.PathLike | None = None, size: int = 3) -> None:
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self._cache: LRUCache[dict[str, np.ndarray]] = LRUCache(size)

    def cached_ids(self) -> list[int]:
        """Ids of the images whose arrays are in memory, least recently used first."""
        # keys are (image_id, run_id); an LRUCache is not a dict (no __iter__: keys() is a snapshot)
        return [key[0] for key in self._cache.keys() if isinstance(key, tuple)]  # noqa: SIM118

    def cached(self, image_id: int, run_id: int | None) -> dict[str, np.ndarray] | None:
        """The arrays of an image as rebuilt for run ``run_id`` if they are in memory, else None."""
        return self._cache.peek((image_id, run_id))

    def arrays(self, session: Session, image_id: int) -> dict[str, np.ndarray]:
        """``{"image": ..., "stack": ..., "difference": ...}`` (float32, 0-based (row, col)).

        ``stack`` and ``difference`` are present only for processed images.

        Raises
        ------
        fastapi.HTTPException
            404 for an unknown id, 410 when the image files can no longer be read.
        """
        image = session.get(Image, image_id)
        if image is None:
            raise HTTPException(404, f"no image with id {image_id}")
        run = latest_run(session, image_id)

        def load() -> dict[str, np.ndarray]:
            try:
                return self._load(image, run)
            except (BlobwatchError, OSError) as exc:
                raise HTTPException(410, f"image {image_id}: files no longer readable ({exc})") from None

        return self._cache.get_or_make((image_id, run.id if run else None), load)

    def _load(self, image: Image, run) -> dict[str, np.ndarray]:
        from blobwatch.monitor.catalog import rebuild_difference

        current, result = rebuild_difference(image, run, images_dir=self.images_dir)
        out = {"image": np.asarray(current.data, dtype=np.float32)}
        if result is not None:
            out["stack"] = np.asarray(result.stack, dtype=np.float32)
            out["difference"] = np.asarray(result.data, dtype=np.float32)
        return out

    def report_file(self, recorded: str) -> bytes:
        """Bytes of a report file recorded in the database (404 when it is gone)."""
        path = Path(recorded)
        if not path.is_absolute() and self.reports_dir is not None:
            path = self.reports_dir / path
        try:
            return path.read_bytes()
        except OSError:
            raise HTTPException(404, "report file no longer exists") from None
