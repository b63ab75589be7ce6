"""Measure one blob: sub-pixel centroid, radius and fractional central depth.

Works on the fractional throughput-loss map ``loss = 1 - current / stack`` (a blob is positive:
0.1 means 10 % darker than the median stack), in a box around a first guess.  Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blobwatch.stats import robust_sigma

__all__ = ["BlobMeasurement", "loss_map", "measure_blob"]


@dataclass(frozen=True)
class BlobMeasurement:
    """A measured blob (0-based pixel coordinates, x = column, y = row).

    Attributes
    ----------
    x, y : float
        Sub-pixel centroid of the throughput loss.
    radius : float
        Radius (px) where the azimuthally averaged loss falls to ``edge_fraction`` of its peak.
    depth : float
        Peak of the azimuthally averaged fractional loss (0.1 = 10 % darker).
    background : float
        Median loss in the annulus outside the blob (subtracted before measuring).
    noise : float
        Robust standard deviation of the loss in that annulus.
    """

    x: float
    y: float
    radius: float
    depth: float
    background: float
    noise: float

    @property
    def significance(self) -> float:
        """Depth in units of the background noise."""
        return float(self.depth / self.noise) if self.noise > 0 else float("inf")


def loss_map(current: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """Return ``1 - current / stack`` as float32, NaN where either is non-finite or stack <= 0."""
    cur = np.asarray(current, dtype=np.float32)
    ref = np.asarray(stack, dtype=np.float32)
    if cur.shape != ref.shape:
        raise ValueError(f"current {cur.shape} and stack {ref.shape} differ in shape")
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.float32(1.0) - cur / ref
    loss[~(np.isfinite(loss) & (ref > 0))] = np.nan
    return loss


def _robust_std(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size < 3:
        return 0.0
    return robust_sigma(values)


def measure_blob(
    loss: np.ndarray,
    x: float,
    y: float,
    *,
    search_radius: float = 12.0,
    max_radius: float = 20.0,
    edge_fraction: float = 0.2,
    iterations: int = 5,
) -> BlobMeasurement:
    """Measure the blob near ``(x, y)`` in a fractional-loss map.

    Parameters
    ----------
    loss : numpy.ndarray
        ``1 - current / stack`` (see `loss_map`); blobs positive.
    x, y : float
        First guess of the centre (0-based column, row).
    search_radius : float
        Radius of the aperture used for the iterated, loss-weighted centroid.
    max_radius : float
        Largest radius considered for the profile; the background annulus lies between
        ``max_radius`` and ``1.5 * max_radius``.
    edge_fraction : float
        The radius is where the azimuthal profile first drops below this fraction of its peak.
    iterations : int
        Centroid iterations.

    Returns
    -------
    BlobMeasurement

    Raises
    ------
    ValueError
        If the guess lies outside the image or there are no finite pixels near it.
    """
    data = np.asarray(loss, dtype=np.float32)
    rows, cols = data.shape
    if not (0 <= x < cols and 0 <= y < rows):
        raise ValueError(f"position x={x:.1f} y={y:.1f} is outside the {rows}x{cols} image")
    outer = 1.5 * max_radius
    half = int(np.ceil(outer)) + 1
    r0, r1 = max(0, int(round(y)) - half), min(rows, int(round(y)) + half + 1)
    c0, c1 = max(0, int(round(x)) - half), min(cols, int(round(x)) + half + 1)
    box = data[r0:r1, c0:c1]
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    finite = np.isfinite(box)
    if finite.sum() < 9:
        raise ValueError(f"no finite pixels near x={x:.1f} y={y:.1f}")

    def annulus_stats(cx: float, cy: float) -> tuple[float, float]:
        dist = np.hypot(xx - cx, yy - cy)
        ring = finite & (dist >= max_radius) & (dist < outer)
        values = box[ring]
        if values.size < 10:
            values = box[finite & (dist >= search_radius)]
        if values.size == 0:
            return 0.0, 0.0
        return float(np.median(values)), _robust_std(values)

    cx, cy = float(x), float(y)
    background, noise = annulus_stats(cx, cy)
    for _ in range(max(1, iterations)):
        dist = np.hypot(xx - cx, yy - cy)
        weights = np.where(finite & (dist <= search_radius), box - background, 0.0)
        weights = np.clip(weights, 0.0, None)
        total = float(weights.sum())
        if total <= 0:
            break
        nx = float((weights * xx).sum() / total)
        ny = float((weights * yy).sum() / total)
        if np.hypot(nx - x, ny - y) > search_radius:  # wandered off to something else
            break
        converged = np.hypot(nx - cx, ny - cy) < 1e-3
        cx, cy = nx, ny
        background, noise = annulus_stats(cx, cy)
        if converged:
            break

    # Azimuthally averaged profile in 1-px annuli.
    dist = np.hypot(xx - cx, yy - cy)
    use = finite & (dist < max_radius)
    bins = dist[use].astype(np.int64)
    n_bins = int(np.ceil(max_radius))
    sums = np.bincount(bins, weights=box[use] - background, minlength=n_bins)[:n_bins]
    counts = np.bincount(bins, minlength=n_bins)[:n_bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    if not np.isfinite(profile).any():
        raise ValueError(f"no finite pixels near x={x:.1f} y={y:.1f}")
    peak_bin = int(np.nanargmax(profile))
    depth = float(profile[peak_bin])
    radius = float(max_radius)
    if depth > 0:
        level = edge_fraction * depth
        below = np.nonzero(np.nan_to_num(profile[peak_bin:], nan=0.0) < level)[0]
        if below.size:
            k = peak_bin + int(below[0])  # first bin under the level; interpolate inside it
            hi, lo = profile[k - 1], profile[k]
            frac = (hi - level) / (hi - lo) if hi != lo else 0.0
            radius = float((k - 1) + 0.5 + frac)
    return BlobMeasurement(x=cx, y=cy, radius=radius, depth=depth, background=background, noise=noise)
