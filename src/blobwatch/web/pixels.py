"""Pixel data behind the review pages, found through database ids only.

For an image id the store re-reads the image file recorded in the database and, when the image
was processed, reads the median stack and difference its run saved (`blobwatch.monitor.display`).
A run without them (an older database) has them rebuilt exactly as the run did, with
`blobwatch.monitor.catalog.rebuild_difference` (the code path that measures a candidate), once:
they are saved in the app's cache folder, under the image's checksum and the run id.
Results are kept in a small LRU cache; loading one image never holds up another.
Report files (saliency PNGs) are read from the paths recorded in the database; relative paths
are resolved against the reports folder. No path from a request ever reaches the file system.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from sqlalchemy.orm import Session

from blobwatch.errors import BlobwatchError
from blobwatch.monitor.db import Image, Run, latest_run
from blobwatch.monitor.display import load_display_arrays, save_display_arrays
from blobwatch.web.cache import Memo


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

    def __init__(
        self,
        *,
        reports_dir: str | os.PathLike | None = None,
        images_dir: str | os.PathLike | None = None,
        size: int = 3,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: Memo[dict[str, np.ndarray]] = Memo(size)
        #: images whose stack and difference had to be rebuilt (not saved by the monitor)
        self.rebuilt = 0

    def cached_ids(self) -> list[int]:
        """Ids of the images whose arrays are in memory, least recently used first."""
        # keys are (image_id, run_id); a Memo is not a dict (keys() is a snapshot)
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

        return self._cache.get((image_id, run.id if run else None), load)

    def _saved_folders(self, image: Image, run: Run) -> list[Path]:
        """Where the run's display arrays may lie: its report folder, then the app's cache."""
        folders = []
        if run.report_path:
            page = Path(run.report_path)
            if not page.is_absolute() and self.reports_dir is not None:
                page = self.reports_dir / page
            folders.append(page.parent)
        if self.cache_dir is not None:
            folders.append(self.cache_dir / "pixels" / image.sha256[:32])
        return folders

    def _load(self, image: Image, run: Run | None) -> dict[str, np.ndarray]:
        from blobwatch.fits_io import read_blob_image
        from blobwatch.monitor.catalog import locate_image, rebuild_difference

        if run is not None and (run.parameters or {}).get("reference_paths"):
            current = read_blob_image(locate_image(image.path, self.images_dir))
            out = {"image": np.asarray(current.data, dtype=np.float32)}
            for folder in self._saved_folders(image, run):
                saved = load_display_arrays(folder, run.id, shape=out["image"].shape)
                if saved is not None:
                    return {**out, **saved}
        current, result = rebuild_difference(image, run, images_dir=self.images_dir)
        out = {"image": np.asarray(current.data, dtype=np.float32)}
        if result is not None:
            self.rebuilt += 1
            out["stack"] = np.asarray(result.stack, dtype=np.float32)
            out["difference"] = np.asarray(result.data, dtype=np.float32)
            if self.cache_dir is not None and run is not None:
                with contextlib.suppress(OSError):  # a read-only folder: rebuilt again after a restart
                    save_display_arrays(
                        self.cache_dir / "pixels" / image.sha256[:32], run.id, out["stack"], out["difference"]
                    )
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
