"""The seed's data preparation (WFC3 ISR 2021-08, section 3), exactly, and its 256x256 tiling.

`prepare` turns a blob difference image into the classifier's input:

1. negate it, so that a new (dark) blob is positive like the real stamps;
2. clip at ``clip_factor`` x (zmin, zmax) of IRAF zscale (`astropy.visualization.ZScaleInterval`,
   the maintained equivalent of the ginga zscale the seed used), computed on the finite pixels;
3. z-score with the clipped image's mean and standard deviation;
4. replace non-finite pixels with the median of the normalized finite pixels.

`tile` cuts the prepared image into the seed's 16 subframes of 256x256 with their (x0, y0) offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SUBFRAME_SIZE", "PreparedImage", "prepare", "tile"]

#: The seed's subframe size.
SUBFRAME_SIZE = 256


@dataclass(frozen=True)
class PreparedImage:
    """A normalized NEGATIVE difference image (blobs positive, mean 0, std 1, all finite).

    Attributes
    ----------
    data : numpy.ndarray
        float32 2-D array.
    stats : dict
        ``clip_factor``, ``zmin``, ``zmax`` (zscale of the negated difference), ``lo``, ``hi``
        (clip limits), ``mean``, ``std`` (of the clipped image), ``median`` (fill value, in
        normalized units), ``n_nonfinite``, ``n_clipped_low``, ``n_clipped_high``.
    """

    data: np.ndarray
    stats: dict[str, float | int | None] = field(default_factory=dict)


def prepare(
    difference: np.ndarray, *, clip_factor: float = 0.5, clip_sigma: float | None = None
) -> PreparedImage:
    """Normalize a blob difference image the way the seed prepared its training data.

    Parameters
    ----------
    difference : numpy.ndarray
        2-D difference image (current - median of references); NaN allowed.
    clip_factor : float
        Clip limits are ``clip_factor * zmin`` and ``clip_factor * zmax`` (seed: 0.5).  With
        astropy's zscale this keeps about +/-1.5 sigma of pure noise.
    clip_sigma : float, optional
        If given, clip at the median +/- ``clip_sigma`` robust (MAD) sigmas instead (the real
        stamps were prepared at about +/-3 sigma); ``clip_factor`` is then not used.

    Returns
    -------
    PreparedImage
        float32, finite, mean 0 and standard deviation 1 (unless the image is constant).

    Raises
    ------
    ValueError
        If the input is not 2-D, has no finite pixel, or ``clip_factor`` is not positive.
    """
    from astropy.visualization import ZScaleInterval

    image = np.asarray(difference)
    if image.ndim != 2:
        raise ValueError(f"difference must be a 2-D image, got shape {image.shape}")
    if not clip_factor > 0:
        raise ValueError(f"clip_factor must be positive, got {clip_factor}")
    negated = np.negative(image, dtype=np.float32)
    finite = np.isfinite(negated)
    n_finite = int(finite.sum())
    if n_finite == 0:
        raise ValueError("difference image has no finite pixel")
    values = negated[finite] if n_finite < negated.size else negated.ravel()

    if clip_sigma is not None:
        if not clip_sigma > 0:
            raise ValueError(f"clip_sigma must be positive, got {clip_sigma}")
        from blobwatch.stats import robust_sigma

        centre, spread = float(np.median(values)), robust_sigma(values)
        zmin, zmax = centre - clip_sigma * spread, centre + clip_sigma * spread
        lo, hi = np.float32(zmin), np.float32(zmax)
    else:
        zmin, zmax = ZScaleInterval().get_limits(values)
        lo, hi = np.float32(clip_factor * zmin), np.float32(clip_factor * zmax)
    if lo > hi:  # a negative factor is rejected above; this guards odd zscale output
        lo, hi = hi, lo
    clipped = np.clip(values, lo, hi)
    mean = float(np.mean(clipped, dtype=np.float64))
    std = float(np.std(clipped, dtype=np.float64))
    scale = np.float32(std if std > 0 else 1.0)

    out = np.empty_like(negated)
    normalized = (clipped - np.float32(mean)) / scale
    median = float(np.median(normalized))
    if n_finite < negated.size:
        out[finite] = normalized
        out[~finite] = np.float32(median)
    else:
        out[...] = normalized.reshape(negated.shape)
    stats: dict[str, float | int | None] = {
        "clip_factor": float(clip_factor),
        "clip_sigma": None if clip_sigma is None else float(clip_sigma),
        "zmin": float(zmin),
        "zmax": float(zmax),
        "lo": float(lo),
        "hi": float(hi),
        "mean": mean,
        "std": std,
        "median": median,
        "n_nonfinite": int(negated.size - n_finite),
        "n_clipped_low": int(np.count_nonzero(values < lo)),
        "n_clipped_high": int(np.count_nonzero(values > hi)),
    }
    return PreparedImage(data=out, stats=stats)


def tile(image: np.ndarray, size: int = SUBFRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cut an image into non-overlapping ``size`` x ``size`` subframes, row-major.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image whose sides are multiples of ``size`` (1024x1024 gives the seed's 16).
    size : int
        Subframe side in pixels.

    Returns
    -------
    subframes : numpy.ndarray
        (N, size, size) array, subframe ``i = row_block * ncols + col_block``.
    offsets : numpy.ndarray
        (N, 2) int array of ``(x0, y0)``: subframe ``i`` is ``image[y0:y0+size, x0:x0+size]``.

    Raises
    ------
    ValueError
        If the image is not 2-D or a side is not a positive multiple of ``size``.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = image.shape
    if rows % size or cols % size or rows == 0 or cols == 0:
        raise ValueError(f"image shape {rows}x{cols} is not a multiple of the subframe size {size}x{size}")
    nrows, ncols = rows // size, cols // size
    subframes = image.reshape(nrows, size, ncols, size).swapaxes(1, 2).reshape(nrows * ncols, size, size)
    row_block, col_block = np.divmod(np.arange(nrows * ncols), ncols)
    offsets = np.stack([col_block * size, row_block * size], axis=1).astype(np.int64)
    return subframes, offsets
