"""Classical baseline: a multi-scale matched filter on prepared subframes.

Each subframe is smoothed with Gaussians whose widths match blobs of 4-12 px radius; each
smoothed map is normalized by its own robust noise (MAD), and the score of the subframe is the
maximum over pixels and scales.  A threshold on the score gives a detector; `threshold_at_fpr`
picks the threshold that gives a chosen false-positive rate on a set of negatives, so the
baseline can be compared with the CNN at the same false-positive rate.
"""

from __future__ import annotations

import numpy as np

#: Gaussian sigmas (px) matched to blob radii of about 3-12 px.
DEFAULT_SIGMAS: tuple[float, ...] = (2.0, 3.0, 4.5, 6.5)


def matched_filter_maps(subframes: np.ndarray, sigmas: tuple[float, ...] = DEFAULT_SIGMAS) -> np.ndarray:
    """Significance maps: max over scales of the noise-normalized Gaussian-smoothed subframes.

    Parameters
    ----------
    subframes : ndarray
        (N, H, W) or (H, W) prepared subframes (blobs positive).
    sigmas : tuple of float
        Gaussian widths in pixels.

    Returns
    -------
    ndarray, float32
        Same shape as ``subframes``: the best significance (in robust sigma) at each pixel.
    """
    from scipy import ndimage

    from blobwatch.stats import robust_sigma

    x = np.asarray(subframes, dtype=np.float32)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"subframes must be (N, H, W) or (H, W), got shape {x.shape}")
    best = np.full(x.shape, -np.inf, dtype=np.float32)
    for s in sigmas:
        sm = ndimage.gaussian_filter(x, sigma=(0.0, s, s), mode="reflect")
        med = np.median(sm, axis=(1, 2), keepdims=True)
        mad = robust_sigma(sm, axis=(1, 2))[:, None, None]
        np.maximum(best, (sm - med) / np.maximum(mad, 1e-6), out=best)
    return best[0] if single else best


def matched_filter_scores(
    subframes: np.ndarray, sigmas: tuple[float, ...] = DEFAULT_SIGMAS, *, chunk: int = 64
) -> np.ndarray:
    """Score of each subframe: its maximum matched-filter significance, shape (N,)."""
    x = np.asarray(subframes)
    if x.ndim == 2:
        x = x[None]
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        maps = matched_filter_maps(np.asarray(x[start : start + chunk], np.float32), sigmas)
        out[start : start + chunk] = maps.reshape(len(maps), -1).max(axis=1)
    return out


def threshold_at_fpr(negative_scores: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``negative_scores`` is at most ``fpr``.

    A subframe is called positive when its score is ``>=`` the threshold.
    """
    s = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("threshold_at_fpr needs at least one negative score")
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be within [0, 1], got {fpr}")
    k = int(np.floor(fpr * s.size + 1e-9))  # number of negatives allowed at or above threshold
    if k >= s.size:
        return float(s[-1])
    above = s[:k][s[:k] > s[k]]  # distinct values above the (k+1)-th highest (ties stay below)
    if above.size == 0:
        return float(s[k] + max(1.0, abs(s[k])))
    # midway, so the rule holds whatever the precision of the scores compared against it
    return float(0.5 * (s[k] + above[-1]))
