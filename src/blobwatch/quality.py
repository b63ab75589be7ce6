"""Data-quality gates: a blob image that is garbage is rejected with a reason, never processed.

A blob image is a flat-field ratio of a CSM dark-Earth exposure: normalized to a background of
about 1 with a few per cent of per-pixel noise, taken by WFC3/IR (installed on HST in May 2009).
`quality_problem` checks the array and date that `blobwatch.fits_io.read_blob_image` read:

* at least `MIN_FINITE_FRACTION` of the pixels are finite (not mostly NaN, not one pixel);
* the median of the finite pixels (the level) lies in `LEVEL_RANGE` (not all zero, negated,
  BSCALE=0 or scaled by 1e38);
* the robust noise, `blobwatch.stats.robust_sigma` (1.4826 x MAD) of the finite pixels, lies in `NOISE_RANGE` (not
  constant, not random numbers);
* the observation date is from `WFC3_IR_FIRST_MJD` to `FUTURE_DAYS` after now (not 1990, not
  year 1007).

The simulator's images (noise 0.2 %-10 %, dates 2021-2026) pass with a wide margin.  Difference
images (level 0) are not blob images and are not checked.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.time import Time
from erfa import ErfaWarning

from blobwatch.stats import robust_sigma

__all__ = [
    "CUBE_PLANES",
    "FUTURE_DAYS",
    "LEVEL_RANGE",
    "MIN_FINITE_FRACTION",
    "NOISE_RANGE",
    "WFC3_IR_FIRST_MJD",
    "quality_problem",
]

#: Smallest fraction of finite pixels (a 1024x1024 image with its 5-px NaN border has 0.98).
MIN_FINITE_FRACTION = 0.5
#: Accepted median of the finite pixels (a blob image is normalized to about 1).
LEVEL_RANGE = (0.5, 2.0)
#: Accepted robust per-pixel noise (MAD standard deviation) of the finite pixels.
NOISE_RANGE = (1e-4, 0.25)
#: 2009-05-14, the day WFC3 was installed on HST: nothing earlier is a WFC3/IR image.
WFC3_IR_FIRST_MJD = 54965.0
#: Days after now an observation date may lie (clock differences, time zones).
FUTURE_DAYS = 1.0
#: Planes of a Quicklook cube (the first one is the blob image).
CUBE_PLANES = 3
#: Finite pixels sampled (evenly) for the level and noise: enough for 3 digits, fast.
_SAMPLE = 1 << 18


def quality_problem(data: np.ndarray, mjd: float | None) -> str | None:
    """What makes ``data`` (observed at ``mjd``) unusable as a blob image, or None if it passes.

    Parameters
    ----------
    data : numpy.ndarray
        The 2-D blob image.
    mjd : float or None
        Observation start (MJD); None or NaN skips the date gate (a file read without a time).
    """
    finite = data[np.isfinite(data)]
    fraction = finite.size / max(data.size, 1)
    if fraction < MIN_FINITE_FRACTION:
        return f"only {fraction:.1%} of the pixels are finite (need {MIN_FINITE_FRACTION:.0%})"
    sample = finite[:: max(1, finite.size // _SAMPLE)].astype(np.float64)
    level = float(np.median(sample))
    if not LEVEL_RANGE[0] <= level <= LEVEL_RANGE[1]:
        return f"median level {level:.4g} is not that of a blob image ({LEVEL_RANGE[0]:g}-{LEVEL_RANGE[1]:g})"
    noise = robust_sigma(sample)
    if not NOISE_RANGE[0] <= noise <= NOISE_RANGE[1]:
        return (
            f"robust noise {noise:.3g} is outside {NOISE_RANGE[0]:g}-{NOISE_RANGE[1]:g} "
            "(constant or random data)"
        )
    if mjd is not None and np.isfinite(mjd):
        latest = float(Time.now().mjd) + FUTURE_DAYS
        if not WFC3_IR_FIRST_MJD <= mjd <= latest:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ErfaWarning)  # "dubious year"
                when = Time(mjd, format="mjd", scale="utc").to_value("iso", subfmt="date")
            return f"observation date {when} (MJD {mjd:.2f}) is outside the WFC3/IR era (2009-05-14 to now)"
    return None
