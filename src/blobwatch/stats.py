"""One definition of the robust noise, the display limits and JSON-ready values.

`robust_sigma` is 1.4826 x `astropy.stats.median_absolute_deviation` of the values a caller
chose (each subsamples as it needs); `zscale_limits` is IRAF zscale
(`astropy.visualization.ZScaleInterval`) of the finite pixels; `jsonable` turns numpy values
inside dicts and lists into plain Python for JSON columns and files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAD_TO_SIGMA", "jsonable", "robust_sigma", "zscale_limits"]

#: Gaussian sigma per median absolute deviation, as blobwatch has always used it: 1.4826, not
#: `astropy.stats.mad_std`'s 1.482602...: the 1.5e-6 difference would change the bytes of every
#: regenerated training set (and its manifest hash) and every recorded noise level.
MAD_TO_SIGMA = 1.4826
#: Finite pixels sampled (evenly) for the zscale limits: as good as all of them, and fast.
_ZSCALE_SAMPLE = 200_000


def robust_sigma(values: np.ndarray) -> float:
    """Robust standard deviation of (finite) ``values``: `MAD_TO_SIGMA` x
    `astropy.stats.median_absolute_deviation`; 0.0 if empty."""
    from astropy.stats import median_absolute_deviation

    flat = np.asarray(values).ravel()
    return float(MAD_TO_SIGMA * median_absolute_deviation(flat)) if flat.size else 0.0


def zscale_limits(image: np.ndarray) -> tuple[float, float]:
    """Display limits (low, high) of an image: zscale of its finite pixels, (-1, 1) if none,
    widened by 1 on each side when zscale gives an empty range."""
    from astropy.visualization import ZScaleInterval

    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return -1.0, 1.0
    sample = finite[:: max(1, finite.size // _ZSCALE_SAMPLE)]
    lo, hi = ZScaleInterval().get_limits(sample)
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 1.0, float(lo) + 1.0)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays inside dicts, lists and tuples made plain Python
    (dict keys become strings); any other object becomes its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
