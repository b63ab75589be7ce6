"""The localizing network: its model files, inputs and peaks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from blobwatch.classifier import BlobClassifier
from blobwatch.cli import main
from blobwatch.errors import InputError
from blobwatch.fcn import FCNDetector, fcn_inputs, peaks
from blobwatch.modelfile import save_model, shipped_model_path
from blobwatch.models.blob_unet import BlobUNet


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fcn") / "unet.pt"
    save_model(
        path,
        BlobUNet(width=4, depth=2),
        architecture="BlobUNet",
        arguments={"in_channels": 2, "width": 4, "depth": 2},
        metadata={"threshold": 0.5},
    )
    return path


def test_unet_keeps_the_image_shape_and_needs_multiples(unet_file: Path) -> None:
    det = FCNDetector(unet_file)
    prob = det.probability(np.random.default_rng(0).normal(size=(100, 90)).astype(np.float32), None)
    assert prob.shape == (100, 90) and np.all((prob >= 0) & (prob <= 1))
    assert det.model.multiple == 8


def test_model_of_the_wrong_kind_or_shape_is_one_clear_error(unet_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a BlobUNet"):
        FCNDetector(shipped_model_path())
    with pytest.raises(InputError, match="not a subframe classifier"):
        BlobClassifier(unet_file, device="cpu")
    payload = torch.load(unet_file, weights_only=True)
    payload["arguments"]["width"] = 6  # weights of a width-4 network
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(InputError, match="do not match"):
        FCNDetector(bad)


def test_cli_names_the_wrong_model_file_and_exits_2(capsys, tmp_path: Path) -> None:
    code = main(
        [
            "regress",
            "--detector",
            "fcn",
            "--fcn-model",
            str(shipped_model_path()),
            "--cache",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "papercnn.pt" in err and "not a BlobUNet" in err


def test_inputs_put_new_and_existing_blobs_positive() -> None:
    yy, xx = np.mgrid[:128, :128]
    disc = ((yy - 60) ** 2 + (xx - 70) ** 2 <= 36).astype(np.float32)
    rng = np.random.default_rng(1)
    diff = rng.normal(0, 0.01, (128, 128)).astype(np.float32) - 0.1 * disc  # a new blob is dark
    ref = 1.0 + rng.normal(0, 0.01, (128, 128)).astype(np.float32) - 0.2 * disc
    planes = fcn_inputs(diff, ref)
    assert planes.shape == (2, 128, 128) and planes.dtype == np.float32
    assert planes[0][disc > 0].mean() > 3 and planes[1][disc > 0].mean() > 0.5
    assert np.all(fcn_inputs(diff, None)[1] == 0)


def test_peaks_find_the_centre_and_size_of_a_probability_disc() -> None:
    yy, xx = np.mgrid[:200, :200]
    prob = np.exp(-((yy - 80.3) ** 2 + (xx - 120.6) ** 2) / (2 * 4.0**2)).astype(np.float32)
    found = peaks(prob, floor=0.1)
    assert len(found) == 1
    assert abs(found[0].x - 120.6) < 0.2 and abs(found[0].y - 80.3) < 0.2
    assert 3 < found[0].radius < 7
    assert peaks(prob * 0.05, floor=0.1) == []


# --------------------------------------------------------------------------------------------
# the shipped localizing model
# --------------------------------------------------------------------------------------------


def _scene(
    new: list[tuple[float, float, float, float]],
    old: list[tuple[float, float, float, float]],
    noise: float = 0.01,
    size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """A registered difference and its reference median: discs (y, x, radius, depth)."""
    from blobwatch.simulate import blob_profile

    rng = np.random.default_rng(5)

    def throughput(blobs):
        t = np.ones((size, size), dtype=np.float32)
        for y, x, r, d in blobs:
            prof = blob_profile(r, kind="disc", size=41, center=(y - round(y), x - round(x)))
            iy, ix = int(round(y)), int(round(x))
            t[iy - 20 : iy + 21, ix - 20 : ix + 21] *= 1.0 - d * prof
        return t

    ref_t = throughput(old)
    reference = ref_t + rng.normal(0, noise / 5, (size, size)).astype(np.float32)
    current = throughput(old + new) + rng.normal(0, noise, (size, size)).astype(np.float32)
    return current - reference, reference


def test_shipped_fcn_finds_a_disc_blob_within_one_pixel() -> None:
    det = FCNDetector()
    diff, ref = _scene(
        new=[(120.3, 140.7, 7.0, 0.06)], old=[(60.0, 60.0, 8.0, 0.2), (200.0, 180.0, 6.0, 0.1)]
    )
    found = [c for c in det.candidates(diff, ref) if c.probability >= det.threshold]
    assert len(found) == 1, found
    assert np.hypot(found[0].x - 140.7, found[0].y - 120.3) <= 1.0


def test_shipped_fcn_finds_a_new_blob_on_a_deeper_existing_one() -> None:
    det = FCNDetector()
    diff, ref = _scene(new=[(128.0, 130.0, 6.0, 0.06)], old=[(128.0, 127.0, 9.0, 0.25)])
    found = [c for c in det.candidates(diff, ref) if c.probability >= det.threshold]
    assert any(np.hypot(c.x - 130.0, c.y - 128.0) <= 3.0 for c in found), found


def test_shipped_fcn_stays_quiet_on_a_translated_sequence() -> None:
    from blobwatch.difference import FewReferencesWarning, blob_difference
    from blobwatch.fits_io import BlobImage
    from blobwatch.simulate import SimulationConfig, simulate_sequence

    sim = simulate_sequence(
        SimulationConfig(
            n_days=8,
            size=256,
            seed=11,
            shift_sigma=1.0,
            n_existing=12,
            noise_sigma=0.01,
            cosmic_ray_rate=0,
            snowball_rate=0,
            persistence_rate=0,
        )
    )
    images = [BlobImage(data=sim.images[d], mjd=float(sim.mjd[d]), path=f"d{d}") for d in range(8)]
    with pytest.warns(FewReferencesWarning):
        result = blob_difference(images[-1], images[:-1])
    det = FCNDetector()
    assert [c for c in det.candidates(result.data, result.stack) if c.probability >= det.threshold] == []


def test_train_fcn_refuses_a_missing_gpu_before_any_work(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(
        ["train-fcn", "--device", "cuda", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_recalibrating_a_missing_model_is_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    code = main(["train-fcn", "--recalibrate", str(tmp_path / "none.pt"), "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "none.pt" in err
    assert not (tmp_path / "c").exists()


def test_train_fcn_writes_a_loadable_model_with_its_record(tmp_path: Path) -> None:
    from blobwatch.fcn_train import FCNTrainConfig, train_fcn
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig

    cases = build_suite(
        SuiteSpec("training", 2, VariationConfig(size=256, n_references=3, cases=5, new_blobs=2)),
        tmp_path / "cache",
        progress=False,
    )
    cfg = FCNTrainConfig(
        outdir=str(tmp_path / "run"),
        val_sequences=1,
        negatives_per_case=2,
        epochs=2,
        width=4,
        depth=2,
        batch_size=4,
        progress=False,
    )
    metrics = train_fcn(cfg, cases, log=lambda _: None)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["training_seeds"] == [930_000, 930_001] and metrics["validation_seeds"] == [930_001]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in metrics["history"])
    det = FCNDetector(tmp_path / "run" / "model.pt")
    assert det.metadata["kind"] == "localizing" and det.model.multiple == 8


@pytest.fixture(scope="module")
def tiny_training_cases(tmp_path_factory: pytest.TempPathFactory) -> list:
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig

    return build_suite(
        SuiteSpec("training", 2, VariationConfig(size=256, n_references=3, cases=5, new_blobs=1)),
        tmp_path_factory.mktemp("cache"),
        progress=False,
    )


def test_injected_stamps_darken_the_raw_image_where_the_truth_says(tiny_training_cases: list) -> None:
    from blobwatch.fcn_train import blob_mask, cut_patches, inject_stamps
    from blobwatch.stats import robust_sigma

    case = tiny_training_cases[0]
    rng = np.random.default_rng(3)
    diff, blobs = inject_stamps(case, rng, 3, stamps=(17, 19), snr=(20.0, 20.0))
    assert len(blobs) == 3 and {b["stamp"] for b in blobs} <= {17, 19}
    change = np.nan_to_num(diff - case.difference)  # the border is NaN in both
    assert change.max() <= 1e-6  # losses only: the blobs are dark, nothing brightens
    sigma = robust_sigma(case.difference[np.isfinite(case.difference)])
    inside = blob_mask(diff.shape, blobs).astype(bool)
    assert change[inside].min() < -3 * sigma  # S/N 20 blobs stand out pixel by pixel
    assert np.abs(change[~ndimage.binary_dilation(inside, iterations=8)]).max() < 1e-6  # and only there
    x, y = cut_patches(case, rng, 64, 2, extra_stamps=3, stamps=(17, 19))
    truth = len(case.truth.get("blobs") or [])
    assert x.shape == (truth + 3 + 2, 2, 64, 64) and y[: truth + 3].reshape(truth + 3, -1).max(1).all()


def test_train_fcn_fine_tunes_a_given_model(
    tiny_training_cases: list, unet_file: Path, tmp_path: Path
) -> None:
    from blobwatch.fcn_train import FCNTrainConfig, train_fcn
    from blobwatch.modelfile import load_model

    cfg = FCNTrainConfig(
        outdir=str(tmp_path / "run"),
        val_sequences=1,
        negatives_per_case=1,
        epochs=1,
        batch_size=4,
        patch=64,
        extra_stamps=1,
        init=str(unet_file),
        extra={"stamps": [17, 19]},
        progress=False,
    )
    train_fcn(cfg, tiny_training_cases, log=lambda _: None)
    start, tuned = load_model(unet_file), load_model(tmp_path / "run" / "model.pt")
    assert tuned.arguments["width"] == 4 and tuned.arguments["depth"] == 2  # the given model's size
    assert tuned.metadata["config"]["init"] == str(unet_file)
    assert tuned.metadata["init_sha256"] == hashlib.sha256(unet_file.read_bytes()).hexdigest()
    before, after = start.model.state_dict(), tuned.model.state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    from blobwatch.models import PaperCNN

    save_model(tmp_path / "paper.pt", PaperCNN(), architecture="PaperCNN", arguments={}, metadata={})
    wrong = FCNTrainConfig(outdir=str(tmp_path / "x"), init=str(tmp_path / "paper.pt"), progress=False)
    with pytest.raises(ValueError, match="not a localizing model"):
        train_fcn(wrong, tiny_training_cases, log=lambda _: None)


# --------------------------------------------------------------------------------------------
# the localizing detector as `detect` and the monitor run it
# --------------------------------------------------------------------------------------------


def test_detect_fcn_reports_candidates_beside_the_seed_subframes_with_saliency() -> None:
    from blobwatch.fcn import detect_fcn

    clf = BlobClassifier(device="cpu")
    diff, ref = _scene(new=[(120.3, 140.7, 7.0, 0.06)], old=[(60.0, 60.0, 8.0, 0.2)])
    det = detect_fcn(diff, FCNDetector(), clf, reference=ref, name="scene")
    assert det.detector == "fcn" and det.subframe_threshold == clf.threshold and len(det.subframes) == 1
    assert [c.source for c in det.candidates] == ["fcn"]
    c = det.candidates[0]
    assert np.hypot(c.x - 140.7, c.y - 120.3) <= 1.0 and c.significance > 5 and c.subframe == 0
    maps = det.localizer_saliency()
    assert list(maps) == [0] and maps[0].shape == (256, 256) and maps[0].dtype == np.float32
    peak_y, peak_x = np.unravel_index(np.argmax(ndimage.gaussian_filter(maps[0], 2.0)), maps[0].shape)
    assert np.hypot(peak_x - 140.7, peak_y - 120.3) <= 8.0  # the network looked at the blob
    payload = det.to_json()
    assert payload["detector"] == "fcn" and payload["candidates"][0]["source"] == "fcn"
    with pytest.raises(ValueError, match="threshold"):
        detect_fcn(diff, FCNDetector(), clf, reference=ref, threshold=1.5)


def test_detect_cli_runs_the_localizing_network_by_default(tmp_path: Path, capsys) -> None:
    import json

    diff, _ = _scene(new=[(120.3, 140.7, 7.0, 0.06)], old=[])
    np.save(tmp_path / "diff.npy", diff)
    assert main(["detect", str(tmp_path / "diff.npy"), "--json", "--reg", str(tmp_path / "c.reg")]) == 0
    out = capsys.readouterr()
    payload = json.loads(out.out)
    assert payload["detector"] == "fcn" and "no --references" in out.err
    assert [(round(c["x"]), round(c["y"])) for c in payload["candidates"]] == [(141, 120)]
    assert (tmp_path / "c.reg").read_text().count("circle") == 1
    assert main(["detect", str(tmp_path / "diff.npy"), "--json", "--detector", "paper"]) == 0
    assert json.loads(capsys.readouterr().out)["detector"] == "paper"
