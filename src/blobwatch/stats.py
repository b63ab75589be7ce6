"""One definition of the robust noise, the display limits and JSON-ready values.

`robust_sigma` is 1.4826 x `astropy.stats.median_absolute_deviation` of the values a caller
chose (each subsamples as it needs), or of each slice along an axis; `zscale_limits` is IRAF zscale
(`astropy.visualization.ZScaleInterval`) of the finite pixels; `jsonable` turns numpy values
inside dicts and lists into plain Python for JSON columns and files.
"""

from __future__ import annotations

import json
from typing import Any, overload

import numpy as np

__all__ = ["MAD_TO_SIGMA", "jsonable", "robust_sigma", "zscale_limits"]

#: Gaussian sigma per median absolute deviation, as blobwatch has always used it: 1.4826, not
#: `astropy.stats.mad_std`'s 1.482602...: the 1.5e-6 difference would change the bytes of every
#: regenerated training set (and its manifest hash) and every recorded noise level.
MAD_TO_SIGMA = 1.4826
#: Finite pixels sampled (evenly) for the zscale limits: as good as all of them, and fast.
_ZSCALE_SAMPLE = 200_000


@overload
def robust_sigma(values: np.ndarray) -> float: ...
@overload
def robust_sigma(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray: ...
def robust_sigma(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> float | np.ndarray:
    """Robust standard deviation of (finite) ``values``: `MAD_TO_SIGMA` x
    `astropy.stats.median_absolute_deviation`; 0.0 if empty.  With ``axis``, one per slice along
    it (an array of the values' dtype), as for a batch of subframes."""
    from astropy.stats import median_absolute_deviation

    if axis is not None:
        return MAD_TO_SIGMA * np.asarray(median_absolute_deviation(np.asarray(values), axis=axis))
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
    """``value`` as plain JSON types: dicts, lists and tuples made dicts and lists, numpy
    scalars and arrays made Python numbers and lists, subclasses of str, int and float (enums)
    made the plain type, dict keys strings as `json` writes them (``1`` -> "1", ``True`` ->
    "true", ``None`` -> "null"); any other object becomes its ``str``.  What it returns is what
    ``torch.load(weights_only=True)`` accepts in a model file's metadata."""
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):  # item() of datetime64, bytes_, complex is not plain yet
        return jsonable(value.item())
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, int):  # bool cannot be subclassed: IntEnum, IntFlag
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)  # the text, not an enum's "Class.MEMBER"
    return str(value)


def _json_key(key: Any) -> str:
    """A dict key as `json.dumps` writes it; other keys (tuples, objects) as their ``str``."""
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(key)
