"""Tests for blobwatch.detect and the ``detect`` command."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from regions import Regions

from blobwatch.classifier import BlobClassifier
from blobwatch.cli import main
from blobwatch.detect import Candidate, Detection, DetectionParameters, SubframeResult, detect, matched_filter
from blobwatch.modelfile import shipped_model_path
from blobwatch.simulate import blob_profile

N = 1024
NOISE = 0.004  # per-pixel noise of the difference (fraction of the background)


def _add_blob(
    image: np.ndarray, x: float, y: float, *, radius: float = 8.0, depth: float = 0.1, kind: str = "disc"
) -> None:
    """Subtract ``depth * profile`` of a blob centred at 0-based (x=column, y=row), in place."""
    half = int(math.ceil(radius * 1.8)) + 2
    ix, iy = int(round(x)), int(round(y))
    prof = blob_profile(radius, kind=kind, size=2 * half + 1, center=(y - iy, x - ix))
    r0, c0 = iy - half, ix - half
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + prof.shape[0], image.shape[0]), min(c0 + prof.shape[1], image.shape[1])
    image[rr0:rr1, cc0:cc1] -= depth * prof[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]


def _difference(seed: int = 0, n: int = N) -> np.ndarray:
    """A blank n x n difference: noise, a gentle gradient and the 5-pixel NaN border."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(0.0, NOISE, size=(n, n)).astype(np.float32)
    yy, xx = np.mgrid[:n, :n] / n
    diff += (0.002 * (xx - 0.5) + 0.001 * (yy - 0.5) ** 2).astype(np.float32)
    diff[:5], diff[-5:], diff[:, :5], diff[:, -5:] = np.nan, np.nan, np.nan, np.nan
    return diff


@pytest.fixture(scope="module")
def blob_diff() -> np.ndarray:
    diff = _difference(1)
    _add_blob(diff, 700.3, 300.6)
    return diff


@pytest.fixture(scope="module")
def blob_detection(blob_diff: np.ndarray, clf: BlobClassifier) -> Detection:
    return detect(blob_diff, clf, name="synthetic.fits")


def test_blob_found_with_x_column_y_row(blob_detection: Detection) -> None:
    assert len(blob_detection.candidates) == 1
    c = blob_detection.candidates[0]
    assert math.hypot(c.x - 700.3, c.y - 300.6) < 2.0, (c.x, c.y)
    assert c.subframe == 6  # row block 1 (y 256-511), column block 2 (x 512-767)
    assert c.significance >= 5 and c.probability >= 0.5
    assert 4.0 < c.radius < 13.0
    payload = blob_detection.to_json()
    assert payload["candidates"][0]["x"] == pytest.approx(700.3, abs=2)
    assert payload["candidates"][0]["y"] == pytest.approx(300.6, abs=2)
    assert blob_detection.alert


def test_detection_json_schema(blob_detection: Detection) -> None:
    payload = json.loads(json.dumps(blob_detection.to_json()))  # JSON-serializable
    assert payload["image"] == "synthetic.fits"
    assert payload["threshold"] == pytest.approx(0.5)
    assert len(payload["subframes"]) == 16
    for i, s in enumerate(payload["subframes"]):
        assert set(s) >= {"index", "x0", "y0", "size", "probability", "blob"}
        assert s["index"] == i and s["size"] == 256
        assert (s["x0"], s["y0"]) == (256 * (i % 4), 256 * (i // 4))
        assert isinstance(s["blob"], bool) and 0.0 <= s["probability"] <= 1.0
    for c in payload["candidates"]:
        assert set(c) >= {"x", "y", "probability", "significance", "radius", "subframe"}
        assert all(isinstance(c[k], float) for k in ("x", "y", "probability", "significance", "radius"))
    assert isinstance(blob_detection.subframes[0], SubframeResult)
    assert isinstance(blob_detection.candidates[0], Candidate)
    assert blob_detection.prepared.shape == (N, N) and blob_detection.prepared.dtype == np.float32


def test_blank_difference_has_no_candidate(clf: BlobClassifier) -> None:
    det = detect(_difference(2, 512), clf)
    assert det.candidates == []
    assert not det.alert


def test_dip_pair_is_not_a_candidate(clf: BlobClassifier) -> None:
    """A mis-registered existing blob leaves a positive/negative pair: reject it as a dip."""
    current, reference = np.zeros((512, 512), np.float32), np.zeros((512, 512), np.float32)
    _add_blob(current, 301.2, 401.0, radius=9.0, depth=0.15)
    _add_blob(reference, 300.0, 400.0, radius=9.0, depth=0.15)
    diff = _difference(3, 512) + (current - reference)
    det = detect(diff, clf)
    assert det.candidates == []
    assert any(r.reason == "dip" and math.hypot(r.x - 300, r.y - 400) < 25 for r in det.rejected)


def test_bright_feature_is_not_a_candidate(clf: BlobClassifier) -> None:
    """A bright patch (snowball, persistence) is negative after preparation: never a blob."""
    diff = _difference(4, 512)
    _add_blob(diff, 400.0, 200.0, radius=10.0, depth=-0.2)  # negative depth = brighter
    det = detect(diff, clf)
    assert det.candidates == []


@pytest.mark.parametrize(("x", "y"), [(256.2, 140.7), (255.6, 255.8)])
def test_blob_on_subframe_boundary_is_found(clf: BlobClassifier, x: float, y: float) -> None:
    """On the edge between two subframes, and on the corner of four."""
    diff = _difference(5, 512)
    _add_blob(diff, x, y, radius=7.0, depth=0.08, kind="ring")
    det = detect(diff, clf)
    assert len(det.candidates) == 1
    c = det.candidates[0]
    assert math.hypot(c.x - x, c.y - y) < 2.0, (c.x, c.y)


def test_threshold_override_and_validation(blob_diff: np.ndarray, clf: BlobClassifier) -> None:
    small = blob_diff[256:768, 256:768]
    low = detect(small, clf, threshold=0.0)
    assert low.threshold == 0.0 and all(s.blob for s in low.subframes)
    high = detect(small, clf, threshold=0.99)
    assert high.threshold == pytest.approx(0.99)
    assert [s.blob for s in high.subframes] == [s.probability >= 0.99 for s in high.subframes]
    assert not all(s.blob for s in high.subframes)
    with pytest.raises(ValueError, match="threshold"):
        detect(blob_diff, clf, threshold=1.5)


class _SaysNo:
    """A classifier stand-in that never sees a blob (to check that the CNN has a veto)."""

    threshold, size, clip_factor, model_path = 0.5, 256, 0.5, None

    def predict_proba(self, subframes: np.ndarray) -> np.ndarray:
        return np.zeros(len(subframes), dtype=np.float32)


def test_matched_filter_alone_is_not_enough(blob_diff: np.ndarray) -> None:
    det = detect(blob_diff[256:768, 256:768], _SaysNo())  # type: ignore[arg-type]
    assert det.candidates == []
    (rej,) = [r for r in det.rejected if math.hypot(r.x + 256 - 700.3, r.y + 256 - 300.6) < 2]
    assert rej.reason == "cnn" and rej.probability == 0.0 and rej.significance > 10


@pytest.mark.parametrize(
    ("shape", "match"),
    [((N,), "2-D image"), ((100, 300), "smaller than one 256x256"), ((300, 300), "not a multiple")],
)
def test_bad_difference_shapes(clf: BlobClassifier, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        detect(np.zeros(shape, np.float32), clf)


def test_saliency_maps_of_flagged_subframes(blob_detection: Detection) -> None:
    maps = blob_detection.saliency_maps()
    assert set(maps) == {s.index for s in blob_detection.flagged}
    assert 6 in maps
    row, col = np.unravel_index(int(np.argmax(maps[6])), maps[6].shape)
    assert math.hypot(col + 512 - 700.3, row + 256 - 300.6) < 12
    assert blob_detection.saliency_maps([0])[0].shape == (256, 256)
    with pytest.raises(IndexError, match="no subframe"):
        blob_detection.saliency_maps([16])


def test_matched_filter_is_signal_to_noise() -> None:
    rng = np.random.default_rng(0)
    snr = matched_filter(rng.normal(size=(512, 512)).astype(np.float32), (2.0, 4.0), 16.0)
    assert snr.shape == (2, 512, 512) and snr.dtype == np.float32
    for plane in snr:
        assert 0.9 < np.std(plane) < 1.1


def test_parameters_are_recorded(blob_detection: Detection) -> None:
    params = blob_detection.to_json()["parameters"]
    assert params["min_significance"] == DetectionParameters().min_significance
    assert isinstance(params["sigmas"], list)


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------
def test_detect_cli_json_on_difference(
    tmp_path: Path, model_path: Path, blob_diff: np.ndarray, capsys
) -> None:
    path = tmp_path / "diff.fits"
    fits.PrimaryHDU(blob_diff).writeto(path)
    out_json = tmp_path / "result.json"
    reg = tmp_path / "out" / "cands.reg"
    assert (
        main(
            [
                "detect",
                str(path),
                "--detector",
                "paper",
                "--model",
                str(model_path),
                "--json",
                "--output",
                str(out_json),
                "--reg",
                str(reg),
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload == json.loads(out_json.read_text())
    (region,) = Regions.read(str(reg), format="ds9")  # the candidate's circle, 0-based like the JSON
    assert (region.center.x, region.center.y, region.radius) == pytest.approx(
        (payload["candidates"][0]["x"], payload["candidates"][0]["y"], payload["candidates"][0]["radius"])
    )
    assert region.meta["text"].startswith("candidate 1 P=") and "diff.fits" in reg.read_text()
    assert payload["image"] == "diff.fits"
    assert set(payload) >= {"image", "threshold", "subframes", "candidates"}
    (cand,) = payload["candidates"]
    assert abs(cand["x"] - 700.3) < 2 and abs(cand["y"] - 300.6) < 2


def test_detect_cli_table_shows_ds9_coordinates(
    tmp_path: Path, model_path: Path, blob_diff: np.ndarray, capsys
) -> None:
    path = tmp_path / "diff.npy"
    np.save(path, blob_diff[256:768, 256:768])
    assert (
        main(["detect", str(path), "--model", str(model_path), "--threshold", "0.5", "--detector", "paper"])
        == 0
    )
    out = capsys.readouterr().out
    assert "1 new-blob candidate(s)" in out and "DS9" in out
    line = [ln for ln in out.splitlines() if ln.strip().startswith("1 ")][-1].split()
    x, y, ds9x, ds9y = map(float, line[1:5])
    assert ds9x == pytest.approx(x + 1) and ds9y == pytest.approx(y + 1)


def test_detect_cli_with_references(tmp_path: Path, model_path: Path, capsys) -> None:
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    config = SimulationConfig(
        n_days=6,
        size=512,
        seed=11,
        n_existing=20,
        new_blob_days=(5,),
        new_blob_depth=0.12,
        new_blob_radius=8.0,
    )
    sim = simulate_sequence(config)
    files = sorted(p for p in write_simulation(sim, tmp_path / "sim") if p.name.endswith("_blob.fits"))
    assert len(files) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than 30 references
        code = main(
            [
                "detect",
                str(files[5]),
                "--references",
                *map(str, files[:5]),
                "--model",
                str(model_path),
                "--json",
            ]
        )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["subframes"]) == 4
    truth = sim.new_blobs()[0]
    dy, dx = sim.shifts[5]
    tx, ty = float(truth["x"]) + dx, float(truth["y"]) + dy
    assert [math.hypot(c["x"] - tx, c["y"] - ty) < 3 for c in payload["candidates"]] == [True]


def test_detect_cli_bad_model(tmp_path: Path, blob_diff: np.ndarray, capsys) -> None:
    np.save(tmp_path / "d.npy", blob_diff)
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really")
    assert main(["detect", str(tmp_path / "d.npy"), "--model", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("blobwatch: error: ") and "bad.pt" in err


def test_detect_cli_bad_image(tmp_path: Path, model_path: Path, capsys) -> None:
    np.save(tmp_path / "small.npy", np.zeros((100, 100), np.float32))
    assert main(["detect", str(tmp_path / "small.npy"), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "small.npy" in err and "smaller than" in err


def test_detect_cli_truncated_difference(
    tmp_path: Path, model_path: Path, blob_diff: np.ndarray, capsys
) -> None:
    """A difference FITS gets the ingest's checks: a truncated file is named as truncated."""
    full = tmp_path / "full.fits"
    fits.PrimaryHDU(blob_diff).writeto(full)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(full.read_bytes()[:5000])
    assert main(["detect", str(cut), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cut.fits: truncated FITS file" in err


# ---------------------------------------------------------------------------------------
# the shipped model end to end (must exist in the final state: no silent skip)
# ---------------------------------------------------------------------------------------
def test_shipped_model_detects_blob_and_nothing_else(blob_diff: np.ndarray) -> None:
    path = shipped_model_path()
    assert path.is_file(), f"the shipped model {path} is missing"
    clf = BlobClassifier(device="cpu")
    det = detect(blob_diff, clf)
    assert len(det.candidates) == 1, det.to_json()["candidates"]
    c = det.candidates[0]
    assert math.hypot(c.x - 700.3, c.y - 300.6) < 2.0
    assert detect(_difference(6), clf).candidates == []


def test_matched_filter_peak_is_the_maximum_over_the_scales() -> None:
    from blobwatch.detect import DetectionParameters, matched_filter, matched_filter_peak

    rng = np.random.default_rng(5)
    image = rng.normal(size=(200, 240)).astype(np.float32)
    image[90:110, 100:120] += 3.0
    p = DetectionParameters()
    np.testing.assert_array_equal(
        matched_filter_peak(image, p.sigmas, p.background_sigma),
        matched_filter(image, p.sigmas, p.background_sigma).max(axis=0),
    )
