"""A corpus of malformed and hostile input files, built from one good 256x256 blob image.

Every file is one that blobwatch must refuse: bytes that are not FITS, truncations, broken
header cards, wrong structure, garbage pixels, impossible or implausible dates, gzip damage,
and some of these under hostile file names.  Every file has distinct content (the monitor
identifies files by SHA-256), and every name ends in ``.fits`` or ``.fits.gz``.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

SIZE = 256
GOOD_MJD = 60010.0


def good_image(seed: int = 0) -> np.ndarray:
    """A plausible blob image: level 1, 1 % noise, NaN border."""
    data = (1.0 + 0.01 * np.random.default_rng(seed).standard_normal((SIZE, SIZE))).astype(np.float32)
    data[:5] = np.nan
    return data


def good_header(mjd: float = GOOD_MJD) -> fits.Header:
    header = fits.Header()
    header["EXPSTART"] = (mjd, "exposure start (MJD)")
    header["FILTER"] = "F153M"
    return header


def _bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _image_file(data: np.ndarray, header: fits.Header | None = None, **cards: object) -> bytes:
    header = good_header() if header is None else header
    for key, value in cards.items():
        header[key.replace("_", "-")] = value
    return _bytes(fits.HDUList([fits.PrimaryHDU(data, header)]))


def _edit_card(raw: bytes, keyword: str, value: str) -> bytes:
    """``raw`` with the value of the first header card ``keyword`` replaced (80-byte cards)."""
    at = raw.index(keyword.ljust(8).encode("ascii") + b"=")
    card = f"{keyword:<8}= {value:>20}".ljust(80)[:80].encode("ascii")
    return raw[:at] + card + raw[at + 80 :]


def build_corpus(folder: Path) -> dict[str, Path]:
    """Write the corpus into ``folder``; returns {case name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _image_file(good_image())
    cases: dict[str, tuple[str, bytes]] = {}

    def add(case: str, content: bytes, name: str | None = None) -> None:
        cases[case] = (name or f"{case}.fits", content)

    # not FITS at all
    add("empty", b"")
    add("fits_magic_only", b"SIMPLE  =                    T")
    add("text", b"this is not a FITS file\n" * 200)
    add("html", b"<html><body>404 Not Found</body></html>\n")
    add("png_magic", b"\x89PNG\r\n\x1a\n" + bytes(2872))
    for n, size in enumerate((10, 2880, 5760, 8640, 300_000)):
        add(f"random_{size}", np.random.default_rng(100 + n).bytes(size))
    add("simple_then_noise", b"SIMPLE  =" + np.random.default_rng(7).bytes(2871))
    add("zeros_2880", b"\0" * 2880 + b"\1")
    # truncations of a good file, inside and at block boundaries
    for cut in (
        1,
        9,
        80,
        160,
        2879,
        2880,
        2881,
        5760,
        100_000,
        len(good) // 2,
        len(good) - 2880,
        len(good) - 1,
    ):
        add(f"truncated_{cut}", good[:cut])
    add("no_end_card", good.replace(b"END" + b" " * 77, b" " * 80, 1))
    # broken header values
    for n, (keyword, value) in enumerate(
        [
            ("BITPIX", "7"),
            ("BITPIX", "0"),
            ("BITPIX", "99"),
            ("BITPIX", "'x'"),
            ("NAXIS", "0"),
            ("NAXIS", "1"),
            ("NAXIS", "5"),
            ("NAXIS", "-3"),
            ("NAXIS1", "0"),
            ("NAXIS1", "-1"),
            ("NAXIS1", "1000000000"),
            ("NAXIS1", "'abc'"),
            ("NAXIS2", "300"),
            ("NAXIS2", "128"),
            ("NAXIS2", "0"),
            ("BITPIX", "-64"),
            ("BITPIX", "16"),
            ("SIMPLE", "F"),
            ("EXPSTART", "'tomorrow'"),
            ("EXPSTART", "1e9"),
            ("EXPSTART", "-1e9"),
            ("EXPSTART", "1e300"),
            ("EXPSTART", "47892.0"),
            ("EXPSTART", "NaN"),
        ]
    ):
        add(f"card_{n:02d}_{keyword}", _edit_card(good, keyword, value))
    # wrong structure
    add(
        "table_only",
        _bytes(
            fits.HDUList(
                [
                    fits.PrimaryHDU(header=good_header()),
                    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(3.0))]),
                ]
            )
        ),
    )
    add("one_d", _image_file(np.ones(1000, np.float32)))
    add("four_d", _image_file(np.ones((2, 2, SIZE, SIZE), np.float32)))
    add("small", _image_file(good_image()[:128, :300]))
    add("tiny", _image_file(np.ones((2, 2), np.float32)))
    add("header_only", _bytes(fits.HDUList([fits.PrimaryHDU(header=good_header())])))
    for planes in (1, 2, 5):
        add(f"cube_{planes}", _image_file(np.stack([good_image(p) for p in range(planes)])))
    add(
        "err_dq_no_sci",
        _bytes(
            fits.HDUList(
                [
                    fits.PrimaryHDU(header=good_header()),
                    fits.ImageHDU(good_image(1), name="ERR"),
                    fits.ImageHDU(np.zeros((SIZE, SIZE), np.int16), name="DQ"),
                ]
            )
        ),
    )
    add(
        "sci_3d",
        _bytes(
            fits.HDUList(
                [
                    fits.PrimaryHDU(header=good_header()),
                    fits.ImageHDU(np.ones((2, SIZE, SIZE), np.float32), name="SCI"),
                ]
            )
        ),
    )
    add(
        "sci_dq_mismatch",
        _bytes(
            fits.HDUList(
                [
                    fits.PrimaryHDU(header=good_header()),
                    fits.ImageHDU(good_image(2) * 40, name="SCI"),
                    fits.ImageHDU(np.zeros((10, 10), np.int16), name="DQ"),
                ]
            )
        ),
    )
    add(
        "sci_all_flagged",
        _bytes(
            fits.HDUList(
                [
                    fits.PrimaryHDU(header=good_header()),
                    fits.ImageHDU(good_image(3) * 40, name="SCI"),
                    fits.ImageHDU(np.ones((SIZE, SIZE), np.int16), name="DQ"),
                ]
            )
        ),
    )
    add(
        "sci_negative",
        _bytes(
            fits.HDUList([fits.PrimaryHDU(header=good_header()), fits.ImageHDU(-good_image(4), name="SCI")])
        ),
    )
    # garbage pixels
    rng = np.random.default_rng(5)
    image = good_image(5)
    garbage: dict[str, Callable[[], np.ndarray]] = {
        "all_zero": lambda: np.zeros((SIZE, SIZE), np.float32),
        "all_nan": lambda: np.full((SIZE, SIZE), np.nan, np.float32),
        "all_inf": lambda: np.full((SIZE, SIZE), np.inf, np.float32),
        "negated": lambda: -image,
        "constant": lambda: np.full((SIZE, SIZE), 1.0, np.float32),
        "one_finite_pixel": lambda: np.where(np.arange(SIZE * SIZE).reshape(SIZE, SIZE) == 999, 1.0, np.nan),
        "mostly_nan": lambda: np.where(rng.random((SIZE, SIZE)) < 0.8, np.nan, image),
        "scaled_1e38": lambda: image * np.float32(1e38),
        "scaled_1e-30": lambda: image * np.float32(1e-30),
        "uniform_noise": lambda: rng.random((SIZE, SIZE), dtype=np.float32),
        "normal_noise": lambda: rng.standard_normal((SIZE, SIZE), dtype=np.float32),
        "noise_around_1": lambda: 1 + rng.standard_normal((SIZE, SIZE), dtype=np.float32),
        "level_1000": lambda: image * np.float32(1000),
        "half_inf": lambda: np.where(rng.random((SIZE, SIZE)) < 0.6, np.inf, image),
        "checkerboard": lambda: (np.indices((SIZE, SIZE)).sum(axis=0) % 2) * 2.0,
    }
    for case, make in garbage.items():
        add(case, _image_file(np.asarray(make(), dtype=np.float32)))
    scaled = fits.PrimaryHDU((np.nan_to_num(good_image(6), nan=1.0) * 1000).astype(np.int16), good_header())
    scaled.header["BSCALE"] = 0.0
    add("bscale_0", _bytes(fits.HDUList([scaled])))
    add("int_all_blank", _image_file(np.full((SIZE, SIZE), -32768, np.int16), BLANK=-32768))
    # times
    add("no_time", _image_file(good_image(7), fits.Header()))
    add("time_1990", _image_file(good_image(8), good_header(47892.0)))
    add("time_future", _image_file(good_image(9), good_header(99999.0)))
    add("time_year_1007", _image_file(good_image(10), fits.Header(), DATE_OBS="1007-06-01"))
    add("time_year_10000", _image_file(good_image(11), fits.Header(), DATE_OBS="+10000-01-01"))
    add("time_garbage", _image_file(good_image(12), fits.Header(), DATE_OBS="yesterday at noon"))
    add("time_bool", _image_file(good_image(13), fits.Header(), EXPSTART=True, DATE_OBS="not a date"))
    # gzip damage
    add("gz_random", gzip.compress(np.random.default_rng(14).bytes(5000)), "gz_random.fits.gz")
    add("gz_truncated", gzip.compress(good)[:3000], "gz_truncated.fits.gz")
    add("gz_text", gzip.compress(b"not fits\n" * 500), "gz_text.fits.gz")
    add("gz_truncated_fits", gzip.compress(good[:10_000]), "gz_truncated_fits.fits.gz")
    add("gz_header_only", b"\x1f\x8b\x08\x00", "gz_header_only.fits.gz")
    add("gz_twice", gzip.compress(gzip.compress(good)), "gz_twice.fits.gz")
    add(
        "gz_garbage_pixels", gzip.compress(_image_file(np.zeros((SIZE, SIZE), np.float32))), "gz_zero.fits.gz"
    )
    # hostile names (each with its own garbage content)
    for n, name in enumerate(
        [
            "csm_$\\foo$_blob.fits",
            "new\nline_blob.fits",
            "día_ümlaut_blob.fits",
            "esc\x1b[2J_blob.fits",
            "x" * 200 + "_blob.fits",
            "quote'\"_blob.fits",
            "tab\tname_blob.fits",
            "%41percent_blob.fits",
            "-leading-dash_blob.fits",
            "semi;colon & amp_blob.fits",
        ]
    ):
        add(f"name_{n}", _image_file(np.full((SIZE, SIZE), float(n + 10), np.float32)), name)

    written = {}
    for case, (name, content) in cases.items():
        path = folder / name
        path.write_bytes(content)
        written[case] = path
    assert len({p.read_bytes() for p in written.values()}) == len(written), "corpus contents must differ"
    return written
