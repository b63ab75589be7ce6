"""Tests for blobwatch.simulate and the ``blobwatch simulate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from blobwatch.cli import main as cli_main
from blobwatch.simulate import (
    DQ_BLOB,
    DQ_HOT,
    Simulation,
    SimulationConfig,
    blob_profile,
    draw_blob_shape,
    simulate_sequence,
    write_simulation,
)

SMALL = dict(size=192, n_days=4)


@pytest.fixture(scope="module")
def small_sim() -> Simulation:
    """A small sequence with one strong new blob on day 2 and a large shift scale."""
    return simulate_sequence(
        SimulationConfig(
            **SMALL,
            seed=11,
            new_blob_days=(2,),
            new_blob_depth=0.2,
            new_blob_radius=7.0,
            noise_sigma=0.005,
            shift_sigma=0.6,
            cosmic_ray_rate=0.0,
            snowball_rate=0.0,
            persistence_rate=0.0,
        )
    )


# ------------------------------------------------------------------------- blob profiles
@pytest.mark.parametrize("kind", ["ring", "disc"])
def test_blob_profile_range_and_shape(kind: str) -> None:
    prof = blob_profile(8.0, kind=kind)
    assert prof.dtype == np.float32
    assert prof.ndim == 2 and prof.shape[0] == prof.shape[1] and prof.shape[0] % 2 == 1
    assert prof.min() >= 0.0 and prof.max() <= 1.0
    assert prof.max() == pytest.approx(1.0, abs=0.02)
    c = prof.shape[0] // 2
    assert prof[0, 0] < 1e-3  # corners outside the blob
    assert prof[c, c] > 0.5  # lossy core
    # radius 8: loss half way at the edge, much less two pixels beyond
    assert prof[c, c + 10] < 0.2 * prof[c, c + 6]


def test_ring_profile_has_dip_between_core_and_ring() -> None:
    shape = {"dip_radius": 0.4, "dip_width": 0.1, "dip_depth": 0.7, "edge": 0.1}
    prof = blob_profile(10.0, kind="ring", shape=shape, size=31)
    cut = prof[15, 15:]
    assert cut[4] < 0.6 * cut[0]  # dip at r = 4 px
    assert cut[7] > cut[4] + 0.3  # outer ring at r ~ 7 px


def test_blob_profile_center_offset_moves_centroid() -> None:
    prof = blob_profile(6.0, kind="disc", size=41, center=(1.5, -2.25))
    rows, cols = np.indices(prof.shape)
    cy = (prof * rows).sum() / prof.sum() - 20
    cx = (prof * cols).sum() / prof.sum() - 20
    assert cy == pytest.approx(1.5, abs=0.05)
    assert cx == pytest.approx(-2.25, abs=0.05)


def test_blob_profile_random_shape_is_reproducible() -> None:
    a = blob_profile(5.0, kind="ring", rng=np.random.default_rng(3))
    b = blob_profile(5.0, kind="ring", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    shape = draw_blob_shape("disc", np.random.default_rng(0))
    assert 0.85 <= shape["axis_ratio"] <= 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": 5.0, "kind": "square"}, "kind"),
        ({"radius": 5.0, "size": 0}, "size"),
    ],
)
def test_blob_profile_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        blob_profile(**kwargs)


# ---------------------------------------------------------------------------- sequences
def test_shapes_dtype_and_border(small_sim: Simulation) -> None:
    sim = small_sim
    assert sim.images.shape == (4, 192, 192)
    assert sim.images.dtype == np.float32
    assert sim.mjd.shape == (4,) and np.all(np.diff(sim.mjd) > 0.7)
    assert sim.shifts.shape == (4, 2) and sim.noise.shape == (4,)
    assert sim.bad_pixels.shape == (192, 192) and sim.bad_pixels.dtype == bool
    for img in sim.images:
        bad = ~np.isfinite(img)
        # the 5-px border is entirely non-finite ...
        assert bad[:5].all() and bad[-5:].all() and bad[:, :5].all() and bad[:, -5:].all()
        # ... and inside it only the fixed dead pixels are
        inner = bad[5:-5, 5:-5]
        assert inner.sum() == (~np.isfinite(img[5:-5, 5:-5])).sum()
        assert not inner[~sim.bad_pixels[5:-5, 5:-5]].any()
        # background normalized to ~1
        assert np.nanmedian(img) == pytest.approx(1.0, abs=0.05)


def test_deterministic_per_seed() -> None:
    cfg = SimulationConfig(size=128, n_days=2, seed=5, new_blob_rate=0.5)
    a, b = simulate_sequence(cfg), simulate_sequence(cfg)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.shifts, b.shifts)
    assert a.params == b.params
    assert list(a.blobs["x"]) == list(b.blobs["x"])
    c = simulate_sequence(SimulationConfig(size=128, n_days=2, seed=6))
    assert not np.array_equal(np.nan_to_num(a.images), np.nan_to_num(c.images))


def test_random_seed_is_recorded() -> None:
    sim = simulate_sequence(SimulationConfig(size=96, n_days=1))
    again = simulate_sequence(SimulationConfig(size=96, n_days=1, seed=sim.params["seed"]))
    np.testing.assert_array_equal(sim.images, again.images)


def test_override_leaves_other_parameters_unchanged() -> None:
    a = simulate_sequence(SimulationConfig(size=96, n_days=1, seed=9)).params
    b = simulate_sequence(SimulationConfig(size=96, n_days=1, seed=9, noise_sigma=0.01)).params
    assert b["noise_sigma"] == 0.01
    assert a["shift_sigma"] == b["shift_sigma"] and a["n_existing"] == b["n_existing"]


def test_new_blob_absent_before_and_present_after(small_sim: Simulation) -> None:
    sim = small_sim
    new = sim.new_blobs()
    assert len(new) == 1 and new["day"][0] == 2
    x, y, depth = float(new["x"][0]), float(new["y"][0]), float(new["depth"][0])
    assert depth == pytest.approx(0.2) and new["radius"][0] == pytest.approx(7.0)
    assert 5 + 20 <= x <= 192 - 26 and 5 + 20 <= y <= 192 - 26

    def core(day: int) -> float:
        img = sim.images[day]
        r, c = int(round(y + sim.shifts[day, 0])), int(round(x + sim.shifts[day, 1]))
        ring = np.nanmedian(np.concatenate([img[r - 20, c - 20 : c + 20], img[r + 20, c - 20 : c + 20]]))
        return float(np.nanmedian(img[r - 1 : r + 2, c - 1 : c + 2]) / ring)

    for day in (0, 1):
        assert core(day) == pytest.approx(1.0, abs=0.03)
    for day in (2, 3):
        # the core of a ring blob loses about the full depth
        assert 1.0 - core(day) == pytest.approx(depth, rel=0.35)


def test_recorded_shift_matches_blob_pattern_shift() -> None:
    sim = simulate_sequence(
        SimulationConfig(
            size=128,
            n_days=3,
            seed=8,
            n_existing=0,
            new_blob_days=(0,),
            new_blob_depth=0.3,
            new_blob_radius=8.0,
            noise_sigma=2e-4,
            flat_residual_sigma=0.0,
            shift_sigma=0.6,
            cosmic_ray_rate=0,
            snowball_rate=0,
            persistence_rate=0,
            bad_pixel_fraction=0,
            n_unstable=0,
            gradient_amplitude=0.0,
            earthlight_probability=0.0,
        )
    )
    blob = sim.blobs[0]
    rows, cols = np.indices(sim.images.shape[1:])
    r = np.hypot(rows - blob["y"], cols - blob["x"])
    near = r < blob["radius"] + 14  # the soft edge reaches ~3 edge widths out
    annulus = (r > blob["radius"] + 16) & (r < blob["radius"] + 24)
    centroids = []
    for img in sim.images:
        w = np.where(near, np.median(img[annulus]) - img, 0.0)
        centroids.append(((rows * w).sum() / w.sum(), (cols * w).sum() / w.sum()))
    measured = np.diff(np.asarray(centroids), axis=0)
    expected = np.diff(sim.shifts, axis=0)
    assert np.abs(expected).max() > 0.2  # the test sees a real shift
    np.testing.assert_allclose(measured, expected, atol=0.01)


def test_existing_blobs_leave_dips_in_difference() -> None:
    sim = simulate_sequence(
        SimulationConfig(
            size=160,
            n_days=3,
            seed=2,
            n_existing=1,
            noise_sigma=1e-4,
            shift_sigma=0.5,
            cosmic_ray_rate=0,
            snowball_rate=0,
            persistence_rate=0,
            bad_pixel_fraction=0,
            n_unstable=0,
        )
    )
    blob = sim.blobs[0]
    diff = sim.images[2] - sim.images[1]
    r, c = int(round(blob["y"])), int(round(blob["x"]))
    half = int(blob["radius"]) + 4
    local = diff[r - half : r + half + 1, c - half : c + half + 1]
    assert np.nanmax(np.abs(local)) > 0.1 * blob["depth"]
    assert np.nanmin(local) < 0 < np.nanmax(local)  # a positive/negative residual pair


def test_parameter_ranges() -> None:
    for seed in range(4):
        p = simulate_sequence(SimulationConfig(size=96, n_days=1, seed=seed)).params
        assert 0.005 <= p["noise_sigma"] <= 0.05
        assert 0.05 <= p["shift_sigma"] <= 0.6
        assert 0.3 <= p["ring_fraction"] <= 0.7
        assert 59215 <= p["start_mjd"] <= 61041
        json.dumps(p)  # JSON-serializable
    full = simulate_sequence(SimulationConfig(size=96, n_days=1, seed=1, n_existing=150))
    assert len(full.blobs) == 150
    blobs = full.blobs
    assert blobs["radius"].min() >= 4 and blobs["radius"].max() <= 12
    assert blobs["depth"].min() >= 0.01 and blobs["depth"].max() <= 0.30
    assert np.median(blobs["depth"]) < 0.08  # mostly weak
    assert np.median(blobs["radius"]) < 8  # mostly small
    assert set(blobs["profile"]) <= {"ring", "disc"}
    assert (blobs["day"] < 0).all()


def test_new_blob_rate_and_typical_new_blobs() -> None:
    sim = simulate_sequence(SimulationConfig(size=256, n_days=30, seed=4, new_blob_rate=1.0, n_existing=0))
    new = sim.new_blobs()
    assert 15 <= len(new) <= 50
    assert (new["day"] >= 1).all() and (new["day"] < 30).all()
    assert new["depth"].min() >= 0.03 and new["depth"].max() <= 0.15
    assert new["radius"].min() >= 5 and new["radius"].max() <= 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_days": 0}, "n_days"),
        ({"new_blob_days": (7,), "n_days": 3}, "new blob day 7"),
        ({"noise_sigma": -1.0}, "noise_sigma"),
        ({"ring_fraction": 1.5}, "ring_fraction"),
        ({"new_blob_depth": 1.5}, "new_blob_depth"),
        ({"size": 20}, "size"),
    ],
)
def test_bad_config(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_sequence(SimulationConfig(**{"size": 96, **kwargs}))


# ------------------------------------------------------------------------------- output
def test_write_simulation_files_headers_and_truth(small_sim: Simulation, tmp_path) -> None:
    files = write_simulation(small_sim, tmp_path)
    names = sorted(p.name for p in files)
    assert names == sorted(
        [f"csm_day{d:03d}_blob.fits" for d in range(4)]
        + ["truth_blobs.ecsv", "truth_shifts.ecsv", "simulation.json"]
    )
    with fits.open(tmp_path / "csm_day002_blob.fits") as hdul:
        hdr = hdul[0].header
        data = hdul[0].data
        assert data.dtype == np.dtype(">f4") and data.shape == (192, 192)
        np.testing.assert_array_equal(data, small_sim.images[2])
    assert hdr["INSTRUME"] == "WFC3" and hdr["DETECTOR"] == "IR" and hdr["FILTER"] == "F153M"
    assert hdr["EXPSTART"] == pytest.approx(small_sim.mjd[2])
    assert hdr["SIMDAY"] == 2 and hdr["SIMSEED"] == 11
    assert hdr["SIMDX"] == pytest.approx(small_sim.shifts[2, 1])
    assert hdr["SIMDY"] == pytest.approx(small_sim.shifts[2, 0])
    assert len(hdr["DATE-OBS"]) == 10 and len(hdr["TIME-OBS"]) == 8
    from astropy.time import Time

    t = Time(f"{hdr['DATE-OBS']}T{hdr['TIME-OBS']}", scale="utc")
    assert t.mjd == pytest.approx(hdr["EXPSTART"], abs=2e-5)

    blobs = Table.read(tmp_path / "truth_blobs.ecsv")
    for col in ("id", "x", "y", "radius", "depth", "profile", "day"):
        np.testing.assert_array_equal(blobs[col], small_sim.blobs[col])
    shifts = Table.read(tmp_path / "truth_shifts.ecsv")
    assert list(shifts["file"]) == [f"csm_day{d:03d}_blob.fits" for d in range(4)]
    np.testing.assert_allclose(shifts["dx"], small_sim.shifts[:, 1])
    np.testing.assert_allclose(shifts["dy"], small_sim.shifts[:, 0])
    np.testing.assert_allclose(shifts["mjd"], small_sim.mjd)
    params = json.loads((tmp_path / "simulation.json").read_text())
    assert params == small_sim.params and params["seed"] == 11


def test_write_flt(small_sim: Simulation, tmp_path) -> None:
    write_simulation(small_sim, tmp_path, flt=True)
    with fits.open(tmp_path / "csm_day003_flt.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]
        sci, err, dq = hdul["SCI"].data, hdul["ERR"].data, hdul["DQ"].data
        assert sci.shape == err.shape == dq.shape == (182, 182)
        assert np.isfinite(sci).all()
        assert hdul["SCI"].header["BUNIT"] == "ELECTRONS/S"
        assert hdul[0].header["FILTER"] == "F153M"
    bkg = small_sim.params["background"]
    inner = small_sim.images[3][5:-5, 5:-5]
    ok = np.isfinite(inner)
    np.testing.assert_allclose(sci[ok], inner[ok] * bkg, rtol=1e-5)
    assert (dq[small_sim.hot_pixels[5:-5, 5:-5]] & DQ_HOT).all()
    assert (dq[small_sim.bad_pixels[5:-5, 5:-5]] != 0).all()
    assert (dq & DQ_BLOB).any()  # pre-existing blobs are flagged like in bad-pixel tables
    assert (dq[~ok] != 0).all()


# ---------------------------------------------------------------------------------- CLI
def test_cli_simulate(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    rc = cli_main(
        [
            "simulate",
            str(out),
            "--days",
            "3",
            "--seed",
            "1",
            "--size",
            "128",
            "--new-blob",
            "2",
            "--existing",
            "5",
            "--flt",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "5 existing, 1 new" in text and "day 2" in text and "DS9" in text
    assert (out / "csm_day002_blob.fits").exists() and (out / "csm_day002_flt.fits").exists()
    assert len(Table.read(out / "truth_blobs.ecsv")) == 6
    # refuses a non-empty directory without --overwrite
    assert cli_main(["simulate", str(out), "--days", "2", "--size", "128"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(["simulate", str(out), "--days", "2", "--size", "128", "--overwrite"]) == 0
    assert "removed 4 stale" in capsys.readouterr().out  # day-2 image and 3 flt files of run 1
    assert not (out / "csm_day002_blob.fits").exists() and (out / "csm_day001_blob.fits").exists()
    assert len(Table.read(out / "truth_shifts.ecsv")) == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--days", "3", "--new-blob", "5"], "new blob day 5"),
        (["--days", "0"], "n_days"),
        (["--new-blob-rate", "-1"], "new_blob_rate"),
    ],
)
def test_cli_bad_options(tmp_path, capsys, argv, match) -> None:
    assert cli_main(["simulate", str(tmp_path / "o"), "--size", "96", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blobwatch: error:") and match in err and err.count("\n") == 1


@pytest.mark.slow
def test_full_size_default_sequence() -> None:
    sim = simulate_sequence(SimulationConfig(seed=0, new_blob_days=(30,)))
    assert sim.images.shape == (45, 1024, 1024)
    assert 100 <= sim.params["n_existing"] <= 200
