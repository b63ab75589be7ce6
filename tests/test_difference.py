"""Tests for blobwatch.difference: the median difference, registration and provenance."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from astropy.io import fits

from blobwatch.difference import (
    FewReferencesWarning,
    OffsetFrame,
    PreparedCache,
    RegistrationWarning,
    align_blob_pattern,
    blob_difference,
    estimate_offset,
    nan_median_stack,
    shift_image,
    write_difference,
)
from blobwatch.errors import InputError
from blobwatch.fits_io import BlobImage

SIZE = 256
BORDER = 5


@functools.lru_cache(maxsize=64)
def _blob_field(shape, dy=0.0, dx=0.0, *, seed=0, n=25):
    """Throughput map of ``n`` Gaussian dips (fixed positions from ``seed``), moved by (dy, dx)."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    y = rng.uniform(20, rows - 20, n)[:, None, None] + dy
    x = rng.uniform(20, cols - 20, n)[:, None, None] + dx
    sigma = rng.uniform(2.0, 4.0, n)[:, None, None]
    depth = rng.uniform(0.03, 0.2, n)[:, None, None]
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    dips = depth * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    field = np.prod(1.0 - dips, axis=0)
    field.flags.writeable = False  # cached: shared between calls
    return field


def _image(dy=0.0, dx=0.0, *, noise=0.003, noise_seed=1, shape=(SIZE, SIZE), hot=True):
    """Blob image: smooth background x shifted blob pattern + noise + static defects + NaN border."""
    rng = np.random.default_rng(noise_seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    background = 1.0 + 0.05 * np.sin(xx / 90.0) + 0.03 * (yy / rows)
    image = background * _blob_field(tuple(shape), float(dy), float(dx)) + noise * rng.standard_normal(shape)
    if hot:  # static detector features: do not move with the blob pattern
        image[50, 60] += 4.0
        image[120, 200] *= 0.3
        image[180, 40] = np.nan
    image[:BORDER] = image[-BORDER:] = np.nan
    image[:, :BORDER] = image[:, -BORDER:] = np.nan
    return image.astype(np.float32)


def _blob(data, mjd, name=None):
    return BlobImage(data=data, mjd=mjd, path=name, filter="F153M", provenance={"kind": "blob"})


def _refs(n, **kwargs):
    return [_blob(_image(noise_seed=100 + i, **kwargs), 100.0 + i, f"ref{i:02d}.fits") for i in range(n)]


# ------------------------------------------------------------------------- the median


def test_nan_median_stack_matches_numpy():
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(7, 40, 33)).astype(np.float32)
    stack[rng.uniform(size=stack.shape) < 0.2] = np.nan
    stack[:, 0, 0] = np.nan  # all-NaN pixel
    stack[:6, 1, 1] = np.nan  # a single finite value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack, axis=0)
    got = nan_median_stack(stack, workers=3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0, 0]) and got[1, 1] == stack[6, 1, 1]


@pytest.mark.parametrize("register", [False, True])
def test_difference_of_identical_images_is_zero(register):
    image = _image()
    refs = [_blob(image.copy(), 10.0 + i) for i in range(5)]
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(image, 20.0), refs, register=register)
    finite = np.isfinite(result.data)
    assert finite.mean() > 0.9
    np.testing.assert_allclose(result.data[finite], 0.0, atol=1e-5)
    assert result.data.dtype == np.float32 and result.stack.dtype == np.float32
    np.testing.assert_allclose(result.offsets, 0.0, atol=1e-3)


def test_injected_blob_is_negative_at_its_position():
    rows, cols = SIZE, SIZE
    current = _image(noise_seed=7)
    yy, xx = np.mgrid[0:rows, 0:cols]
    y0, x0 = 140, 97  # row, column
    current *= (1.0 - 0.1 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 3.0**2))).astype(np.float32)
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(current, 200.0), _refs(9), register=True)
    d = np.nan_to_num(result.data, nan=0.0)
    row, col = np.unravel_index(np.argmin(d), d.shape)
    assert abs(row - y0) <= 1 and abs(col - x0) <= 1  # the minimum, within noise
    assert d[y0, x0] == pytest.approx(-0.1, abs=0.015)
    far = np.hypot(*np.mgrid[0:rows, 0:cols] - np.array([y0, x0])[:, None, None]) > 15
    assert np.nanmin(result.data[far]) > -0.05  # nothing else comparable


# ------------------------------------------------------------------------- references


def test_references_are_sorted_and_latest_30_used():
    refs = _refs(33)[::-1]  # newest first
    result = blob_difference(_blob(_image(), 500.0), refs, register=False)
    assert result.n_references == 30
    assert list(result.reference_mjds) == [100.0 + i for i in range(3, 33)]
    assert result.method == "median"


def test_too_few_references():
    with pytest.raises(InputError, match=r"4 references given; at least 5 are required"):
        blob_difference(_blob(_image(), 500.0, "cur.fits"), _refs(4))


def test_fewer_than_30_warns():
    with pytest.warns(FewReferencesWarning, match=r"only 6 references \(the seed uses the preceding 30\)"):
        blob_difference(_blob(_image(), 500.0, "cur.fits"), _refs(6), register=False)


def test_reference_not_earlier_than_current():
    refs = _refs(6)
    refs[2] = _blob(refs[2].data, 600.0, "late.fits")
    with pytest.raises(
        InputError,
        match=r"late\.fits: reference \(MJD 600\.00000\) is not earlier than the current image cur\.fits",
    ):
        blob_difference(_blob(_image(), 500.0, "cur.fits"), refs)


def test_reference_shape_mismatch():
    refs = _refs(6)
    refs[3] = _blob(np.ones((SIZE, SIZE + 256), np.float32), 103.5, "wide.fits")
    with pytest.raises(
        InputError, match=r"wide\.fits: shape 256x512 does not match the current image \(256x256\)"
    ):
        blob_difference(_blob(_image(), 500.0, "cur.fits"), refs)


# ------------------------------------------------------------------------- registration


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.3, -0.2), (-0.05, 0.12), (0.8, 1.4), (-2.3, 0.6)])
def test_estimate_offset_recovers_subpixel_shift(shift):
    current = _image(noise_seed=11)
    reference = _image(-shift[0], -shift[1], noise_seed=12)  # current = reference moved by shift
    dy, dx = estimate_offset(reference, current)
    assert dy == pytest.approx(shift[0], abs=0.02)
    assert dx == pytest.approx(shift[1], abs=0.02)


def test_estimate_offset_ignores_a_new_blob():
    rows, cols = SIZE, SIZE
    current = _image(noise_seed=21)
    yy, xx = np.mgrid[0:rows, 0:cols]
    current *= (1.0 - 0.25 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / (2 * 4.0**2))).astype(np.float32)
    reference = _image(-0.25, 0.35, noise_seed=22)
    dy, dx = estimate_offset(reference, current)
    assert (dy, dx) == (pytest.approx(0.25, abs=0.03), pytest.approx(-0.35, abs=0.03))


def test_shift_image_matches_scipy_convention_and_keeps_nan():
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.exp(-((yy - 30.0) ** 2 + (xx - 20.0) ** 2) / 18.0).astype(np.float32)
    image[5, 5] = np.nan
    moved = shift_image(image, 2.5, -1.5)
    assert moved.dtype == np.float32
    peak = np.unravel_index(np.nanargmax(moved), moved.shape)
    assert peak in {(32, 18), (33, 18), (32, 19), (33, 19)}
    assert np.isnan(moved[7, 3]) or np.isnan(moved[8, 4])  # the NaN moved with the image


def test_align_blob_pattern_keeps_defects_in_place():
    shift = (0.4, -0.3)
    reference = _image(noise=0.002, noise_seed=3)
    aligned = align_blob_pattern(reference, *shift)
    target = _image(*shift, noise=0.002, noise_seed=4)
    blobs = (1.0 - _blob_field(reference.shape)) > 0.01
    blobs[:15] = blobs[-15:] = False
    blobs[:, :15] = blobs[:, -15:] = False
    # Blob pattern moved: the aligned reference matches the moved image, down to the noise.
    before = np.sqrt(np.mean((reference - target)[blobs] ** 2))
    after = np.sqrt(np.mean((aligned - target)[blobs] ** 2))
    assert after < 0.5 * before
    # Close to the noise of the two images (pixels flagged as defects, e.g. some blob cores,
    # stay in place and leave a little residual).
    assert after < 2.0 * np.sqrt(2) * 0.002
    # Static features stay: hot pixel, cold pixel and dead pixel are where they were.
    assert aligned[50, 60] == pytest.approx(reference[50, 60], rel=0.01)
    assert aligned[120, 200] == pytest.approx(reference[120, 200], rel=0.05)
    assert np.isnan(aligned[180, 40])


def test_registration_reduces_residuals_of_existing_blobs():
    rng = np.random.default_rng(5)
    shifts = rng.normal(0, 0.3, (12, 2))
    shifts[-1] = (0.5, -0.4)  # the current image lies off the references' typical position
    current = _blob(_image(*shifts[-1], noise_seed=50), 300.0)
    refs = [_blob(_image(*shifts[i], noise_seed=60 + i), 200.0 + i) for i in range(11)]
    with pytest.warns(FewReferencesWarning):
        plain = blob_difference(current, refs, register=False)
    with pytest.warns(FewReferencesWarning):
        registered = blob_difference(current, refs, register=True)
    true = shifts[-1] - shifts[:-1]
    np.testing.assert_allclose(registered.offsets, true, atol=0.03)
    # Residuals where the existing blobs are (the "dips" of the seed).
    blobs = (1.0 - _blob_field(current.data.shape)) > 0.01
    blobs[:15] = blobs[-15:] = False
    blobs[:, :15] = blobs[:, -15:] = False
    rms_plain = np.sqrt(np.nanmean(plain.data[blobs] ** 2))
    rms_reg = np.sqrt(np.nanmean(registered.data[blobs] ** 2))
    assert rms_reg < 0.5 * rms_plain
    assert rms_reg < 2.0 * 0.003  # close to the noise of the current image
    assert registered.method.startswith("registered-median")


def test_prepared_cache_gives_identical_results_and_prepares_each_image_once():
    rng = np.random.default_rng(9)
    shifts = rng.normal(0, 0.3, (8, 2))
    days = [_blob(_image(*shifts[i], noise_seed=80 + i), 400.0 + i, f"day{i}.fits") for i in range(8)]
    for i, day in enumerate(days):
        day.provenance["sha256"] = f"{i:064x}"
    cache = PreparedCache(capacity=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewReferencesWarning)
        for k in (6, 7):  # day 6 against 0-5, then day 7 against 1-6 (day 6 was the template)
            plain = blob_difference(days[k], days[k - 6 : k], min_references=5, workers=2)
            cached = blob_difference(days[k], days[k - 6 : k], min_references=5, workers=2, prepared=cache)
            np.testing.assert_array_equal(cached.data, plain.data)
            np.testing.assert_array_equal(cached.offsets, plain.offsets)
    assert (cache.misses, cache.hits) == (8, 6)  # 0-6 once, 7 once; 1-6 reused for day 7
    # an image without a file hash is never cached
    unhashed = _blob(days[7].data, 500.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewReferencesWarning)
        blob_difference(unhashed, days[2:8], min_references=5, prepared=cache)
    assert cache.misses == 8 and cache.hits == 12


# ------------------------------------------------------------------------- output


def test_write_difference_records_provenance(tmp_path):
    refs = _refs(5)
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(_image(0.2, 0.1), 500.0, "/data/cur.fits"), refs)
    path = write_difference(tmp_path / "diff.fits", result)
    with fits.open(path) as hdul:
        header = hdul[0].header
        np.testing.assert_array_equal(hdul[0].data, result.data)
    assert header["NREF"] == 5
    assert header["CURFILE"] == "cur.fits"
    assert header["DIFFMETH"] == "registered-median"
    assert header["REF01"] == "ref00.fits" and header["REF05"] == "ref04.fits"
    assert header["REFDY01"] == pytest.approx(0.2, abs=0.03)
    assert header["REFDX05"] == pytest.approx(0.1, abs=0.03)
    assert header["REFMJD03"] == 102.0
    assert header["BWVERS"]
    assert "DATE" in header
    assert any("registered-median" in str(card) for card in header["HISTORY"])


@pytest.mark.parametrize(
    "name", ["día_040\nblob.fits", "\x00\x1b[31m_blob.fits", "50%_blob.fits", "é" * 120 + "_blob.fits"]
)
def test_any_file_name_is_written_to_the_header_and_read_back(tmp_path, name):
    from urllib.parse import unquote

    refs = _refs(5)
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(_image(0.2, 0.1), 500.0, f"/data/{name}"), refs)
    path = write_difference(tmp_path / "diff.fits", result)
    with fits.open(path) as hdul:
        hdul.verify("exception")  # printable ASCII only, long values on CONTINUE cards
        assert unquote(hdul[0].header["CURFILE"]) == name
        assert hdul[0].header["REF01"] == "ref00.fits"


def test_every_reference_keeps_its_own_header_cards_beyond_99(tmp_path):
    import dataclasses

    refs = _refs(5)
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(_image(0.2, 0.1), 500.0, "/data/cur.fits"), refs)
    n = 101  # as if 101 references were used: the header is built from these arrays
    result = dataclasses.replace(
        result,
        reference_paths=[f"ref{i:03d}.fits" for i in range(n)],
        reference_mjds=100.0 + np.arange(n, dtype=float),
        offsets=np.zeros((n, 2)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "keyword too long" VerifyWarning
        write_difference(tmp_path / "diff.fits", result)
    header = fits.getheader(tmp_path / "diff.fits")
    assert header["REFMJD10"] == 109.0 and header["REFMJD100"] == 199.0 and header["REFMJD101"] == 200.0
    assert header["REF100"] == "ref099.fits" and header["REFDX101"] == 0.0


@pytest.mark.parametrize("shape", [(257, 301), (300, 260)])
def test_odd_image_sizes(shape):
    current = _image(0.3, -0.2, noise_seed=31, shape=shape)
    refs = [_blob(_image(noise_seed=40 + i, shape=shape), 10.0 + i) for i in range(5)]
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(_blob(current, 20.0), refs)
    assert result.data.shape == shape
    np.testing.assert_allclose(result.offsets, np.tile([0.3, -0.2], (5, 1)), atol=0.03)


def test_few_blobs_and_a_strong_new_one_leave_no_artifacts():
    """Three existing blobs, a strong new blob and pairs of adjacent hot pixels (simulated).

    Registration must either recover the tiny offsets or fall back to no alignment for a
    reference (with a `RegistrationWarning`); in both cases the only strong feature of the
    difference is the new blob.
    """
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    sim = simulate_sequence(
        SimulationConfig(
            n_days=5,
            size=256,
            seed=11,
            n_existing=3,
            new_blob_days=(4,),
            new_blob_depth=0.12,
            new_blob_radius=8.0,
            noise_sigma=0.004,
            shift_sigma=0.05,
            cosmic_ray_rate=0.0,
            snowball_rate=0.0,
            persistence_rate=0.0,
        )
    )
    images = [_blob(sim.images[d], float(sim.mjd[d]), f"d{d}.fits") for d in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewReferencesWarning)
        warnings.simplefilter("ignore", RegistrationWarning)
        result = blob_difference(images[4], images[:4], min_references=3)
    true = sim.shifts[4] - sim.shifts[:4]
    registered = np.any(result.offsets != 0, axis=1)
    np.testing.assert_allclose(result.offsets[registered], true[registered], atol=0.05)
    new = sim.new_blobs()[0]
    y, x = float(new["y"]) + sim.shifts[4][0], float(new["x"]) + sim.shifts[4][1]
    d = np.nan_to_num(result.data)
    row, col = np.unravel_index(np.argmin(d), d.shape)
    assert np.hypot(row - y, col - x) < 3
    far = np.hypot(*(np.mgrid[0:256, 0:256] - np.array([y, x])[:, None, None])) > 20
    far &= ~sim.unstable_pixels  # they change from day to day, with or without registration
    assert np.abs(d[far]).max() < 0.06  # no hot-pixel ringing, no dips


def test_a_current_image_of_the_wrong_shape_is_the_one_named():
    refs = _refs(6)
    current = _blob(np.ones((SIZE, SIZE + 256), np.float32), 500.0, "cur.fits")
    with pytest.raises(
        InputError, match=r"^cur\.fits: shape 256x512 does not match the references \(256x256\)$"
    ):
        blob_difference(current, refs)
    half = refs[:3] + [
        _blob(np.ones((SIZE, SIZE + 256), np.float32), 103.0 + i, f"wide{i}.fits") for i in range(3)
    ]
    with pytest.raises(InputError, match=r"^ref00\.fits: shape 256x256 does not match the current image"):
        blob_difference(
            _blob(np.ones((SIZE, SIZE + 256), np.float32), 500.0, "cur.fits"), half
        )  # a tie: refs


def test_offsets_stored_against_a_fixed_frame_give_todays_registration():
    """Register once: each image's offset to a fixed frame, measured once, gives the offsets of
    every later difference (reference minus current) within 0.02 px of registering it directly."""
    rng = np.random.default_rng(21)
    shifts = rng.normal(0, 0.3, (12, 2))
    days = [_blob(_image(*shifts[i], noise_seed=90 + i), 600.0 + i, f"day{i}.fits") for i in range(12)]
    frame = OffsetFrame(days[0])
    stored = np.array([frame.offset(day) for day in days])
    np.testing.assert_allclose(stored[0], 0.0, atol=1e-3)
    np.testing.assert_allclose(stored, shifts[0] - shifts, atol=0.03)  # moves each image onto the frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewReferencesWarning)
        for k in (5, 11):
            direct = blob_difference(days[k], days[:k], workers=2)
            given = [tuple(stored[i] - stored[k]) for i in range(k)]
            fast = blob_difference(days[k], days[:k], workers=2, offsets=given)
            np.testing.assert_allclose(fast.offsets, direct.offsets, atol=0.02)
            np.testing.assert_allclose(fast.data, direct.data, atol=0.01)
            assert f"{k} of {k} offsets from the images' stored offsets" in fast.method
            # a reference without a stored offset is registered as before
            partial = blob_difference(days[k], days[:k], workers=2, offsets=[None, *given[1:]])
            np.testing.assert_array_equal(partial.offsets[0], direct.offsets[0])
            np.testing.assert_array_equal(partial.offsets[1:], fast.offsets[1:])
    with pytest.raises(InputError, match="does not match the offset frame"):
        frame.offset(_blob(_image(shape=(128, 128), hot=False), 700.0, "small.fits"))
