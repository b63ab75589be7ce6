"""blobwatch.stats: the one robust noise, zscale limits and JSON conversion."""

from __future__ import annotations

import json

import numpy as np
from astropy.stats import mad_std

from blobwatch.stats import jsonable, robust_sigma, zscale_limits


def test_robust_sigma_is_the_mad_standard_deviation_and_ignores_outliers() -> None:
    values = np.random.default_rng(0).normal(0.0, 0.02, 100_000).astype(np.float32)
    values[:1000] = 50.0  # 1 % hot pixels
    assert robust_sigma(values) == np.float32(1.4826) * np.float32(
        np.median(np.abs(values - np.median(values)))
    )
    assert abs(robust_sigma(values) - mad_std(values)) < 2e-6 * robust_sigma(values)  # 1.4826 vs 1.482602
    assert abs(robust_sigma(values) - 0.02) < 0.001
    assert robust_sigma(np.array([], np.float32)) == 0.0


def test_zscale_limits_of_finite_pixels_and_degenerate_images() -> None:
    image = np.random.default_rng(1).normal(1.0, 0.01, (256, 256)).astype(np.float32)
    image[:5] = np.nan
    lo, hi = zscale_limits(image)
    assert 0.9 < lo < 1.0 < hi < 1.1
    assert zscale_limits(np.full((8, 8), np.nan)) == (-1.0, 1.0)
    assert zscale_limits(np.full((8, 8), 3.0)) == (2.0, 4.0)


def test_jsonable_makes_numpy_values_plain() -> None:
    value = {1: np.float32(0.5), "a": (np.int64(3), np.array([[1, 2]])), "p": np.bool_(True), "x": object}
    plain = jsonable(value)
    assert plain == {"1": 0.5, "a": [3, [[1, 2]]], "p": True, "x": str(object)}
    json.dumps(plain)


def test_the_web_app_and_the_reports_use_the_one_definition() -> None:
    """Issue 11, item 16: no private copies of the display limits or the JSON sanitizing."""
    import blobwatch.monitor.report as report
    import blobwatch.web.render as render
    from blobwatch import stats

    assert render.zscale_limits is stats.zscale_limits and report.zscale_limits is stats.zscale_limits
