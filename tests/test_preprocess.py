"""Tests for blobwatch.preprocess: the seed's clipping, z-scoring and 256x256 tiling."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.visualization import ZScaleInterval

from blobwatch.preprocess import PreparedImage, prepare, tile


def _difference(shape=(512, 512), *, seed=0, nan_border=5):
    rng = np.random.default_rng(seed)
    image = (0.01 * rng.standard_normal(shape)).astype(np.float32)
    image[100, 100] = 5.0  # hot-pixel residual
    image[200, 300] = -4.0
    if nan_border:
        image[:nan_border] = image[-nan_border:] = np.nan
        image[:, :nan_border] = image[:, -nan_border:] = np.inf
    return image


def test_prepared_image_is_standardized_and_finite():
    prepared = prepare(_difference())
    assert isinstance(prepared, PreparedImage)
    data = prepared.data
    assert data.dtype == np.float32 and data.shape == (512, 512)
    assert np.isfinite(data).all()
    assert abs(float(data.mean())) < 0.02
    assert float(data.std()) == pytest.approx(1.0, abs=0.03)
    assert prepared.stats["n_nonfinite"] == 512 * 512 - 502 * 502


def test_finite_pixels_have_exactly_zero_mean_unit_std():
    image = _difference()
    prepared = prepare(image)
    finite = np.isfinite(image)
    values = prepared.data[finite].astype(np.float64)
    assert values.mean() == pytest.approx(0.0, abs=1e-5)
    assert values.std() == pytest.approx(1.0, abs=1e-5)
    # Non-finite pixels carry the median of the normalized finite values.
    assert np.all(prepared.data[~finite] == np.float32(prepared.stats["median"]))
    assert prepared.stats["median"] == pytest.approx(float(np.median(prepared.data[finite])), abs=1e-6)


def test_clip_limits_are_half_the_zscale_limits_of_the_negated_difference():
    image = _difference(nan_border=0)
    prepared = prepare(image, clip_factor=0.5)
    zmin, zmax = ZScaleInterval().get_limits(-image)
    assert prepared.stats["zmin"] == pytest.approx(zmin)
    assert prepared.stats["lo"] == pytest.approx(0.5 * zmin)
    assert prepared.stats["hi"] == pytest.approx(0.5 * zmax)
    lo_n = (0.5 * zmin - prepared.stats["mean"]) / prepared.stats["std"]
    hi_n = (0.5 * zmax - prepared.stats["mean"]) / prepared.stats["std"]
    assert prepared.data.min() == pytest.approx(lo_n, rel=1e-5)
    assert prepared.data.max() == pytest.approx(hi_n, rel=1e-5)
    # The outliers are clipped: the hot residual (+5 in D) is at the low clip after negation.
    assert prepared.data[100, 100] == pytest.approx(lo_n, rel=1e-5)
    assert prepared.data[200, 300] == pytest.approx(hi_n, rel=1e-5)
    assert prepared.stats["n_clipped_low"] >= 1 and prepared.stats["n_clipped_high"] >= 1


def test_a_blob_dark_in_the_difference_is_positive_after_preparation():
    image = _difference(seed=3)
    yy, xx = np.mgrid[0:512, 0:512]
    image -= (0.05 * np.exp(-((yy - 300) ** 2 + (xx - 150) ** 2) / (2 * 4.0**2))).astype(np.float32)
    prepared = prepare(image)
    data = prepared.data
    assert data[300, 150] > 1.0  # positive, many sigma above the mean
    hi_n = (prepared.stats["hi"] - prepared.stats["mean"]) / prepared.stats["std"]
    assert data[300, 150] == pytest.approx(hi_n, rel=1e-5)  # at the upper clip, as in the seed
    core = np.hypot(yy - 300, xx - 150) <= 3
    assert data[core].mean() > 1.0
    assert data[~core].mean() < 0.01


def test_clip_factor_changes_the_limits():
    image = _difference(nan_border=0)
    narrow = prepare(image, clip_factor=0.25).stats
    wide = prepare(image, clip_factor=1.0).stats
    assert wide["hi"] == pytest.approx(4 * narrow["hi"])


@pytest.mark.parametrize(
    ("bad", "kwargs", "message"),
    [
        (np.zeros((4, 4, 4), np.float32), {}, r"2-D image, got shape \(4, 4, 4\)"),
        (np.full((8, 8), np.nan, np.float32), {}, "no finite pixel"),
        (np.zeros((8, 8), np.float32), {"clip_factor": 0.0}, "clip_factor must be positive"),
    ],
)
def test_prepare_rejects_bad_input(bad, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare(bad, **kwargs)


def test_constant_image_does_not_divide_by_zero():
    prepared = prepare(np.zeros((256, 256), np.float32))
    assert np.isfinite(prepared.data).all()
    assert np.all(prepared.data == 0)


# ------------------------------------------------------------------------------- tiling


def test_tile_gives_the_seeds_16_subframes_in_row_major_order():
    image = np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024)
    subframes, offsets = tile(image)
    assert subframes.shape == (16, 256, 256)
    assert offsets.shape == (16, 2)
    assert offsets[:5].tolist() == [[0, 0], [256, 0], [512, 0], [768, 0], [0, 256]]
    for index, (x0, y0) in enumerate(offsets):
        np.testing.assert_array_equal(subframes[index], image[y0 : y0 + 256, x0 : x0 + 256])


@pytest.mark.parametrize(("shape", "size"), [((512, 768), 256), ((96, 64), 32), ((256, 256), 256)])
def test_offsets_tile_the_image_exactly(shape, size):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    subframes, offsets = tile(image, size=size)
    coverage = np.zeros(shape, dtype=int)
    rebuilt = np.full(shape, np.nan, dtype=np.float32)
    for sub, (x0, y0) in zip(subframes, offsets, strict=True):
        coverage[y0 : y0 + size, x0 : x0 + size] += 1
        rebuilt[y0 : y0 + size, x0 : x0 + size] = sub
    assert np.all(coverage == 1)  # every pixel exactly once
    np.testing.assert_array_equal(rebuilt, image)
    assert len(subframes) == (shape[0] // size) * (shape[1] // size)


@pytest.mark.parametrize("shape", [(1000, 1024), (1024, 1030), (100, 100)])
def test_tile_rejects_sizes_that_are_not_multiples(shape):
    with pytest.raises(ValueError, match=r"is not a multiple of the subframe size 256x256"):
        tile(np.zeros(shape, np.float32))


def test_tile_rejects_non_2d():
    with pytest.raises(ValueError, match="must be 2-D"):
        tile(np.zeros((2, 256, 256), np.float32))


def test_sigma_clipping_keeps_three_robust_sigmas_of_pure_noise() -> None:
    rng = np.random.default_rng(4)
    noise = rng.normal(0.0, 2.0, (512, 512)).astype(np.float32)
    seed = prepare(noise)
    three = prepare(noise, clip_sigma=3.0)
    # the seed's 0.5 x zscale keeps about +/-1.5 sigma; +/-3 sigma clips only ~0.27 % of pixels
    assert 1.2 < -seed.stats["lo"] / 2.0 < 1.8
    assert 2.9 < -three.stats["lo"] / 2.0 < 3.1 and 2.9 < three.stats["hi"] / 2.0 < 3.1
    clipped = (three.stats["n_clipped_low"] + three.stats["n_clipped_high"]) / noise.size
    assert 0.001 < clipped < 0.005
    with pytest.raises(ValueError, match="clip_sigma"):
        prepare(noise, clip_sigma=0.0)
