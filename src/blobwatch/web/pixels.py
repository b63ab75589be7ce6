"""Pixel data behind the review pages, found through database ids only.

For an image id the store re-reads the image file recorded in the database and, when the image
was processed, reads the median stack and difference its run saved (`blobwatch.monitor.display`).
A run without them (an older database) has them rebuilt exactly as the run did, with
`blobwatch.monitor.catalog.rebuild_difference` (the code path that measures a candidate), once:
they are saved in the app's cache folder, under the image's checksum and the run id. The
image's own pixels are copied there too, as float32 ``.npy``, the first time they are read.
Every saved array is memory-mapped, so the operating system's page cache holds the pixels and
the store keeps many images at little cost to the process; loading one image never holds up
another.
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

from blobwatch.atomic import write_bytes_atomic
from blobwatch.errors import BlobwatchError, InputError
from blobwatch.monitor.db import Image, Run, latest_run
from blobwatch.monitor.display import load_array, load_display_arrays, npy_bytes, save_display_arrays
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
        Number of images whose arrays are kept at hand: memory maps of saved files, or, when
        there is no cache folder to save them in, 12 MB of memory each for a 1024x1024 image.
    cache_dir : path-like, optional
        The app's cache folder: rebuilt arrays and copies of the images' pixels go there.
    """

    def __init__(
        self,
        *,
        reports_dir: str | os.PathLike | None = None,
        images_dir: str | os.PathLike | None = None,
        size: int = 64,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: Memo[dict[str, np.ndarray]] = Memo(size if cache_dir is not None else min(size, 3))
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
        cached = self._pixel_folder(image)
        if cached is not None:
            folders.append(cached)
        return folders

    def _pixel_folder(self, image: Image) -> Path | None:
        """The app's cache folder for an image's arrays (None without a cache folder)."""
        return self.cache_dir / "pixels" / image.sha256[:32] if self.cache_dir is not None else None

    def _image_pixels(self, image: Image) -> np.ndarray:
        """The image's pixels: its memory-mapped copy in the cache, or read (and copied there)."""
        from blobwatch.fits_io import read_blob_image
        from blobwatch.monitor.catalog import locate_image

        path = locate_image(image.path, self.images_dir)
        if not path.is_file():  # the copy would do, but the team should hear that the file is gone
            raise InputError(path, "no such file")
        folder = self._pixel_folder(image)
        copy = folder / "image.npy" if folder is not None else None
        if copy is not None and (cached := load_array(copy, mmap=True)) is not None:
            return cached
        data = np.asarray(read_blob_image(path).data, dtype=np.float32)
        if copy is not None:
            with contextlib.suppress(OSError):  # a read-only folder: read again next time
                copy.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(copy, npy_bytes(data))
                mapped = load_array(copy, data.shape, mmap=True)
                if mapped is not None:
                    return mapped
        return data

    def _load(self, image: Image, run: Run | None) -> dict[str, np.ndarray]:
        from blobwatch.monitor.catalog import rebuild_difference

        if run is not None and (run.parameters or {}).get("reference_paths"):
            out = {"image": self._image_pixels(image)}
            for folder in self._saved_folders(image, run):
                saved = load_display_arrays(folder, run.id, shape=out["image"].shape, mmap=True)
                if saved is not None:
                    return {**out, **saved}
        elif run is None:
            return {"image": self._image_pixels(image)}
        current, result = rebuild_difference(image, run, images_dir=self.images_dir)
        out = {"image": np.asarray(current.data, dtype=np.float32)}
        if result is not None:
            self.rebuilt += 1
            out["stack"] = np.asarray(result.stack, dtype=np.float32)
            out["difference"] = np.asarray(result.data, dtype=np.float32)
            keep = self._pixel_folder(image)
            if keep is not None and run is not None:
                with contextlib.suppress(OSError):  # a read-only folder: rebuilt again after a restart
                    save_display_arrays(keep, run.id, out["stack"], out["difference"])
                    saved = load_display_arrays(keep, run.id, shape=out["image"].shape, mmap=True)
                    out.update(saved or {})
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
