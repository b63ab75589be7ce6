"""blobwatch.stats: the one robust noise, zscale limits and JSON conversion."""

from __future__ import annotations

import enum
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from astropy.stats import mad_std

from blobwatch.stats import MAD_TO_SIGMA, jsonable, robust_sigma, zscale_limits


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


def test_robust_sigma_along_an_axis_is_the_per_slice_value() -> None:
    """One value per subframe, as the matched filter and the autoencoder's error maps use it: the
    same bits as the per-subframe hand-written MAD those modules had."""
    flat = np.random.default_rng(2).normal(0.0, 0.5, (7, 4096)).astype(np.float32)
    per_row = robust_sigma(flat, axis=1)
    assert per_row.dtype == np.float32 and per_row.shape == (7,)
    med = np.median(flat, axis=1)
    assert np.array_equal(per_row, np.median(np.abs(flat - med[:, None]), axis=1) * MAD_TO_SIGMA)
    assert np.allclose(per_row, [robust_sigma(row) for row in flat], rtol=1e-6)
    cube = flat.reshape(7, 64, 64)
    assert np.array_equal(robust_sigma(cube, axis=(1, 2)), per_row)


class _Kind(enum.IntEnum):
    DISC = 1


class _Name(str, enum.Enum):
    RING = "ring"


def test_jsonable_makes_what_weights_only_loading_accepts() -> None:
    """What train's private `_plain` (a JSON round trip) did and `jsonable` did not: enums made
    plain, numpy datetimes and bytes as text, bool/None keys as JSON writes them."""
    import torch

    value = {
        "kind": _Kind.DISC,
        "name": _Name.RING,
        "when": np.datetime64("2026-12-07T23:00:00"),
        "raw": np.bytes_(b"x"),
        True: 1,
        None: np.float32(2.5),
        "path": Path("/tmp/m.pt"),
        "nan": float("nan"),
    }
    plain = jsonable(value)
    assert type(plain["kind"]) is int and plain["kind"] == 1
    assert type(plain["name"]) is str and plain["name"] == "ring"
    assert plain["when"] == "2026-12-07 23:00:00" and plain["raw"] == "b'x'"
    assert plain["true"] == 1 and plain["null"] == 2.5 and plain["path"] == "/tmp/m.pt"
    # the JSON round trip train used to make gives the same (NaN aside: NaN != NaN)
    assert json.loads(json.dumps(plain)).keys() == plain.keys()
    buf = io.BytesIO()
    torch.save({"metadata": plain}, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["metadata"]["name"] == "ring"
    raw = io.BytesIO()
    torch.save({"metadata": {"name": _Name.RING}}, raw)
    raw.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(raw, weights_only=True)


def test_no_private_copies_of_the_json_cleaning_the_mad_or_an_lru_cache() -> None:
    """Issue 11, item 16: `blobwatch.stats` and `blobwatch.lru` are the one definition."""
    src = Path(__file__).resolve().parents[1] / "src" / "blobwatch"
    found = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(src).as_posix()
        for pattern in ("def _plain(", "def _jsonable(", "median(np.abs(", "* 1.4826", "1.4826 *"):
            if pattern in text and name != "stats.py":
                found.append(f"{name}: {pattern}")
        if "OrderedDict(" in text and name != "lru.py":
            found.append(f"{name}: OrderedDict")
    assert found == []
