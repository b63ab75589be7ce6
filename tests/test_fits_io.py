"""Tests for blobwatch.fits_io: ingest of blob images, cubes and flt files, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from blobwatch.errors import InputError
from blobwatch.fits_io import (
    FLT_BORDER,
    BlobImage,
    FilterWarning,
    file_sha256,
    read_blob_image,
    write_fits,
)

SIZE = 256


def _header(**cards) -> fits.Header:
    header = fits.Header()
    for key, value in cards.items():
        header[key.replace("_", "-")] = value
    return header


def _image(seed: int = 0, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32)


def test_blob_image_in_primary(tmp_path):
    data = _image()
    path = tmp_path / "blob.fits"
    fits.PrimaryHDU(data, _header(EXPSTART=60000.25, FILTER="F153M")).writeto(path)
    image = read_blob_image(path)
    assert isinstance(image, BlobImage)
    assert image.data.dtype == np.float32 and image.data.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(image.data, data)
    assert image.mjd == 60000.25
    assert image.filter == "F153M"
    assert image.path == str(path)
    assert image.provenance["kind"] == "blob"
    assert image.provenance["hdu"] == 0
    assert image.provenance["sha256"] == file_sha256(path)


def test_image_in_first_extension_and_header_time_from_primary(tmp_path):
    data = _image(1)
    path = tmp_path / "ext.fits"
    fits.HDUList(
        [fits.PrimaryHDU(header=_header(DATE_OBS="2024-03-01", TIME_OBS="12:00:00")), fits.ImageHDU(data)]
    ).writeto(path)
    image = read_blob_image(path)
    assert image.provenance["hdu"] == 1
    np.testing.assert_array_equal(image.data, data)
    assert image.mjd == pytest.approx(60370.5)  # 2024-03-01T12:00 UTC


def test_date_obs_with_time_inside(tmp_path):
    path = tmp_path / "iso.fits"
    fits.PrimaryHDU(_image(), _header(DATE_OBS="2024-03-01T06:00:00")).writeto(path)
    assert read_blob_image(path).mjd == pytest.approx(60370.25)


def test_cube_uses_first_plane(tmp_path):
    cube = np.stack([_image(2), _image(3), _image(4)])
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube, _header(EXPSTART=60001.0)).writeto(path)
    image = read_blob_image(path)
    assert image.provenance["kind"] == "cube"
    np.testing.assert_array_equal(image.data, cube[0])


def test_big_endian_scaled_integer_image_becomes_float32(tmp_path):
    path = tmp_path / "int.fits"
    counts = (np.arange(SIZE * SIZE) % 21 + 990).astype(np.int16).reshape(SIZE, SIZE)  # 990..1010
    hdu = fits.PrimaryHDU(counts, _header(EXPSTART=60000.0))
    hdu.header["BSCALE"] = 0.001
    hdu.writeto(path)
    image = read_blob_image(path)
    assert image.data.dtype == np.float32
    assert image.data.flags.writeable
    np.testing.assert_allclose(image.data, counts * 0.001, rtol=1e-6)


def _write_flt(path, sci, dq, filt="F153M"):
    primary = fits.PrimaryHDU(header=_header(EXPSTART=60010.5, FILTER=filt, INSTRUME="WFC3"))
    fits.HDUList(
        [
            primary,
            fits.ImageHDU(sci, name="SCI"),
            fits.ImageHDU(np.full_like(sci, 0.1), name="ERR"),
            fits.ImageHDU(dq, name="DQ"),
        ]
    ).writeto(path)


def test_flt_is_normalized_masked_and_padded(tmp_path):
    n = 300 - 2 * FLT_BORDER
    rng = np.random.default_rng(5)
    sci = (2.5 * (1 + 0.01 * rng.standard_normal((n, n)))).astype(np.float32)
    sci[10, 10] = 1e4  # an outlier the sigma clipping ignores
    dq = np.zeros((n, n), dtype=np.int16)
    dq[20, 30] = 16
    dq[40, 50] = 512
    path = tmp_path / "x_flt.fits"
    _write_flt(path, sci, dq)
    image = read_blob_image(path)
    assert image.provenance["kind"] == "flt"
    assert image.provenance["n_dq_flagged"] == 2
    assert image.data.shape == (300, 300)
    b = FLT_BORDER
    assert np.isnan(image.data[:b]).all() and np.isnan(image.data[-b:]).all()
    assert np.isnan(image.data[:, :b]).all() and np.isnan(image.data[:, -b:]).all()
    inner = image.data[b:-b, b:-b]
    assert np.isnan(inner[20, 30]) and np.isnan(inner[40, 50])
    assert np.nanmedian(inner) == pytest.approx(1.0, abs=2e-3)
    assert image.mjd == 60010.5
    # Only the requested DQ bits mask pixels.
    only_hot = read_blob_image(path, dq_bits=16)
    assert np.isnan(only_hot.data[b + 20, b + 30]) and np.isfinite(only_hot.data[b + 40, b + 50])


def test_an_flt_file_without_sci_is_refused_not_read_from_err(tmp_path):
    path = tmp_path / "nosci.fits"
    err = fits.ImageHDU(_image(1), name="ERR")
    dq = fits.ImageHDU(np.zeros((SIZE, SIZE), np.int16), name="DQ")
    fits.HDUList([fits.PrimaryHDU(header=_header(EXPSTART=60000.0)), err, dq]).writeto(path)
    with pytest.raises(
        InputError, match=r"nosci\.fits: no SCI extension \(ERR, DQ, SAMP and TIME are not image data\)"
    ):
        read_blob_image(path)


def test_other_filter_warns_not_fails(tmp_path):
    path = tmp_path / "f160w.fits"
    fits.PrimaryHDU(_image(), _header(EXPSTART=60000.0, FILTER="F160W")).writeto(path)
    with pytest.warns(FilterWarning, match=r"f160w\.fits: filter F160W is not F153M"):
        image = read_blob_image(path)
    assert image.filter == "F160W"


def test_no_filter_keyword_is_silent(tmp_path):
    path = tmp_path / "nofilter.fits"
    fits.PrimaryHDU(_image(), _header(EXPSTART=60000.0)).writeto(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_blob_image(path).filter is None


# ----------------------------------------------------------------------------- bad input


def _bad_files(tmp_path):
    good = tmp_path / "good.fits"
    fits.PrimaryHDU(_image(), _header(EXPSTART=60000.0)).writeto(good)
    raw = good.read_bytes()
    files = {}
    files["text"] = tmp_path / "notes.fits"
    files["text"].write_text("this is not a FITS file\n" * 200)
    files["truncated_odd"] = tmp_path / "trunc1.fits"
    files["truncated_odd"].write_bytes(raw[: len(raw) // 2 + 100])
    files["truncated_block"] = tmp_path / "trunc2.fits"
    files["truncated_block"].write_bytes(raw[: 2880 * 5])
    files["table"] = tmp_path / "table.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(header=_header(EXPSTART=60000.0)),
            fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(3.0))]),
        ]
    ).writeto(files["table"])
    files["one_d"] = tmp_path / "spectrum.fits"
    fits.PrimaryHDU(np.ones(1000, dtype=np.float32), _header(EXPSTART=60000.0)).writeto(files["one_d"])
    files["small"] = tmp_path / "small.fits"
    fits.PrimaryHDU(_image(shape=(128, 300)), _header(EXPSTART=60000.0)).writeto(files["small"])
    files["nan"] = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((SIZE, SIZE), np.nan, np.float32), _header(EXPSTART=60000.0)).writeto(
        files["nan"]
    )
    files["notime"] = tmp_path / "notime.fits"
    fits.PrimaryHDU(_image(), _header(FILTER="F153M")).writeto(files["notime"])
    files["baddate"] = tmp_path / "baddate.fits"
    fits.PrimaryHDU(_image(), _header(EXPSTART=1e9)).writeto(files["baddate"])
    files["baddateobs"] = tmp_path / "baddateobs.fits"
    fits.PrimaryHDU(_image(), _header(DATE_OBS="+10000-01-01")).writeto(files["baddateobs"])
    files["empty"] = tmp_path / "empty.fits"
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", r"notes\.fits: not a FITS file"),
        ("empty", r"empty\.fits: not a FITS file"),
        ("truncated_odd", r"trunc1\.fits: truncated FITS file"),
        ("truncated_block", r"trunc2\.fits: truncated FITS file"),
        ("table", r"table\.fits: no 2-D image"),
        ("one_d", r"spectrum\.fits: no 2-D image"),
        ("small", r"small\.fits: image is 128x300, smaller than 256x256"),
        ("nan", r"nan\.fits: all pixels are non-finite"),
        ("notime", r"notime\.fits: no observation time \(EXPSTART or DATE-OBS/TIME-OBS\)"),
        ("baddate", r"baddate\.fits: EXPSTART \(MJD 1e\+09\) is not a date between years 1 and 9999"),
        (
            "baddateobs",
            r"baddateobs\.fits: DATE-OBS \(MJD 2.97348e\+06\) is not a date between years 1 and 9999",
        ),
    ],
)
def test_bad_input_names_file_and_problem(tmp_path, kind, message):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(InputError, match=message) as info:
        read_blob_image(path)
    assert info.value.path == str(path)
    assert "\n" not in str(info.value)


def test_gzip_compressed_file_is_read(tmp_path):
    import gzip

    data = _image(3)
    plain = tmp_path / "day.fits"
    fits.PrimaryHDU(data, _header(EXPSTART=60000.5, FILTER="F153M")).writeto(plain)
    packed = tmp_path / "day.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    image = read_blob_image(packed)
    np.testing.assert_array_equal(image.data, data)
    assert image.mjd == 60000.5 and image.provenance["sha256"] == file_sha256(packed)
    broken = tmp_path / "broken.fits.gz"
    broken.write_bytes(packed.read_bytes()[:500])
    with pytest.raises(InputError, match=r"broken\.fits\.gz: corrupt gzip file"):
        read_blob_image(broken)
    notfits = tmp_path / "text.fits.gz"
    notfits.write_bytes(gzip.compress(b"hello" * 1000))
    with pytest.raises(InputError, match=r"text\.fits\.gz: not a FITS file"):
        read_blob_image(notfits)


def test_gzip_content_is_bounded(tmp_path, monkeypatch):
    import gzip

    from blobwatch import fits_io

    bomb = tmp_path / "bomb.fits.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 100_000))
    monkeypatch.setattr(fits_io, "MAX_FILE_BYTES", 50_000)
    with pytest.raises(InputError, match=r"bomb\.fits\.gz: gzip content is larger than"):
        read_blob_image(bomb)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.fits: file not found"):
        read_blob_image(tmp_path / "nope.fits")


def test_shape_mismatch_with_references(tmp_path):
    path = tmp_path / "a.fits"
    fits.PrimaryHDU(_image(shape=(SIZE, 2 * SIZE)), _header(EXPSTART=60000.0)).writeto(path)
    with pytest.raises(InputError, match=r"a\.fits: shape 256x512 does not match the references \(256x256\)"):
        read_blob_image(path, expected_shape=(SIZE, SIZE))


def test_write_fits_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "out.fits"
    data = _image(7)
    header = fits.Header()
    header["EXPSTART"] = 60100.0
    write_fits(path, data, header)
    assert [p.name for p in path.parent.iterdir()] == ["out.fits"]  # no temporary left behind
    again = read_blob_image(path)
    np.testing.assert_array_equal(again.data, data)
    assert again.mjd == 60100.0
    # A failing write leaves the previous file untouched.
    with pytest.raises(ValueError, match="could not convert string to float"):
        write_fits(path, np.array([["not", "numbers"]]))
    np.testing.assert_array_equal(read_blob_image(path).data, data)
    assert [p.name for p in path.parent.iterdir()] == ["out.fits"]


def test_read_blob_images_in_order_and_first_error(tmp_path):
    from blobwatch.fits_io import read_blob_images

    paths = []
    for i in range(5):
        path = tmp_path / f"day{i}.fits"
        fits.PrimaryHDU(
            _image(i), _header(EXPSTART=60100.0 + i, FILTER="F153M" if i != 3 else "F110W")
        ).writeto(path)
        paths.append(path)
    with pytest.warns(FilterWarning, match=r"day3\.fits: filter F110W"):
        images = read_blob_images(paths, workers=3)
    assert [im.mjd for im in images] == [60100.0, 60101.0, 60102.0, 60103.0, 60104.0]
    bad = tmp_path / "bad.fits"
    bad.write_text("nope")
    with pytest.raises(InputError, match=r"bad\.fits: not a FITS file"):
        read_blob_images([paths[0], bad, tmp_path / "missing.fits"], workers=2)
    with pytest.raises(
        InputError, match=r"day1\.fits: shape 256x256 does not match the references \(512x512\)"
    ):
        read_blob_images(paths[1:3], expected_shape=(512, 512))


# ----------------------------------------------------------------------------- quality gates


def _garbage(kind: str) -> fits.HDUList:
    good = _image(5)
    rng = np.random.default_rng(9)
    header = _header(EXPSTART=60000.0)
    data = {
        "zero": np.zeros_like(good),
        "negated": -good,
        "constant": np.ones_like(good),
        "one_pixel": np.where(np.arange(good.size).reshape(good.shape) == 7, good, np.nan),
        "mostly_nan": np.where(rng.random(good.shape) < 0.7, np.nan, good),
        "scaled": good * np.float32(1e38),
        "uniform": rng.random(good.shape, dtype=np.float32),
        "normal": rng.standard_normal(good.shape, dtype=np.float32),
        "noise_around_1": 1 + rng.standard_normal(good.shape, dtype=np.float32),
        "cube1": good[None],
        "cube2": np.stack([good, good]),
        "cube5": np.stack([good] * 5),
    }.get(kind, good)
    if kind == "1990":
        header["EXPSTART"] = 47892.0  # 1990-01-01
    if kind == "year1007":
        del header["EXPSTART"]
        header["DATE-OBS"] = "1007-06-01"
    if kind == "future":
        header["EXPSTART"] = float(Time.now().mjd) + 30
    hdu = fits.PrimaryHDU(data.astype(np.float32), header)
    if kind == "bscale0":
        hdu = fits.PrimaryHDU((good * 1000).astype(np.int16), header)
        hdu.header["BSCALE"] = 0.0
    return fits.HDUList([hdu])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("zero", r"median level 0 is not that of a blob image \(0.5-2\)"),
        ("negated", r"median level -1 is not that of a blob image"),
        ("bscale0", r"median level 0 is not that of a blob image"),
        ("scaled", r"median level 1e\+38 is not that of a blob image"),
        ("normal", r"median level -?0.00\d+ is not that of a blob image"),
        ("constant", r"robust noise 0 is outside 0.0001-0.25 \(constant or random data\)"),
        ("uniform", r"(median level 0.4\d+ is not that|robust noise 0.3\d+ is outside)"),
        ("noise_around_1", r"robust noise 1 is outside"),
        ("one_pixel", r"only 0.0% of the pixels are finite \(need 50%\)"),
        ("mostly_nan", r"only (29|30).\d% of the pixels are finite"),
        ("cube1", r"cube has 1 planes, not 3"),
        ("cube2", r"cube has 2 planes, not 3"),
        ("cube5", r"cube has 5 planes, not 3"),
        ("1990", r"observation date 1990-01-01 \(MJD 47892.00\) is outside the WFC3/IR era"),
        ("year1007", r"observation date 1007-06-01 .* is outside the WFC3/IR era"),
        ("future", r"observation date 20\d\d-\d\d-\d\d .* is outside the WFC3/IR era \(2009-05-14 to now\)"),
    ],
)
def test_garbage_fails_a_quality_gate_naming_it(tmp_path, kind, message):
    path = tmp_path / f"{kind}.fits"
    _garbage(kind).writeto(path)
    with pytest.raises(InputError, match=rf"{kind}\.fits: {message}"):
        read_blob_image(path)


def test_the_gates_accept_the_simulators_range_and_skip_difference_images(tmp_path):
    rng = np.random.default_rng(2)
    for noise, level in ((0.002, 1.0), (0.1, 1.0), (0.01, 0.6), (0.01, 1.8)):
        path = tmp_path / f"ok_{noise}_{level}.fits"
        data = level * (1 + noise * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
        data[:5] = np.nan
        fits.PrimaryHDU(data, _header(EXPSTART=54965.5)).writeto(path)
        assert read_blob_image(path).mjd == 54965.5
    difference = tmp_path / "difference.fits"
    fits.PrimaryHDU(0.01 * rng.standard_normal((SIZE, SIZE)).astype(np.float32)).writeto(difference)
    assert np.isnan(read_blob_image(difference, require_time=False, check_quality=False).mjd)


# ----------------------------------------------------------------------------- not regular files


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe.fits"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_blob_image(fifo)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("reading a FIFO blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], InputError)
    assert str(outcome[0]) == f"{fifo}: not a regular file (a FIFO)"


def test_a_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zero.fits"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"zero\.fits: not a regular file \(a character device\)"):
        read_blob_image(link)


def test_a_file_larger_than_any_blob_image_is_refused_before_reading(tmp_path, monkeypatch):
    from blobwatch import fits_io

    path = tmp_path / "huge.fits"
    fits.PrimaryHDU(_image(), _header(EXPSTART=60000.0)).writeto(path)
    monkeypatch.setattr(fits_io, "MAX_FILE_BYTES", 10_000)
    monkeypatch.setattr(fits_io, "open", lambda *a, **k: pytest.fail("opened"), raising=False)
    with pytest.raises(
        InputError, match=rf"huge\.fits: file is {path.stat().st_size} bytes, larger than 0 MiB"
    ):
        read_blob_image(path)
