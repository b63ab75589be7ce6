"""Tests of the localizing detector's search space (``blobwatch tune --family fcn``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blobwatch.cli import main
from blobwatch.fcn_train import FCNTrainConfig
from blobwatch.models.blob_unet import BlobUNet
from blobwatch.regression import Candidates, Case
from blobwatch.tune_fcn import (
    DEPTH_RANGE,
    PATCH_CHOICES,
    WIDTH_CHOICES,
    fcn_objective_metrics,
    fcn_seed_params,
    fcn_train_settings,
    suggest_fcn_params,
)


def test_the_seed_point_is_the_shipped_recipe_and_inside_the_space() -> None:
    seed = fcn_seed_params()
    shipped = FCNTrainConfig()
    assert fcn_train_settings(seed) == {
        "width": shipped.width,
        "depth": shipped.depth,
        "lr": shipped.lr,
        "pos_weight": shipped.pos_weight,
        "patch": shipped.patch,
        "peak_smooth": shipped.peak_smooth,
        "epochs": shipped.epochs,
    }
    assert seed["width"] in WIDTH_CHOICES and seed["patch"] in PATCH_CHOICES
    assert DEPTH_RANGE[0] <= seed["depth"] <= DEPTH_RANGE[1]
    assert fcn_seed_params(max_epochs=4)["epochs"] == 4


def test_every_point_of_the_space_builds_a_network_that_fits_its_patch() -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest_fcn_params(trial, max_epochs=5)
        settings = fcn_train_settings(params)
        cfg = FCNTrainConfig(**settings)  # every knob is a training setting
        assert 1 <= cfg.epochs <= 5 and 3e-4 <= cfg.lr <= 1e-2 and 1.0 <= cfg.pos_weight <= 20.0
        assert 0.0 <= cfg.peak_smooth <= 1.5
        net = BlobUNet(in_channels=2, width=cfg.width, depth=cfg.depth)
        assert cfg.patch % net.multiple == 0
        seen.add((cfg.width, cfg.depth, cfg.patch))
        study.tell(trial, 0.0)
    assert len(seen) > 10  # the knobs really vary
    with torch.no_grad():  # the largest network on the largest patch still runs
        net = BlobUNet(in_channels=2, width=max(WIDTH_CHOICES), depth=DEPTH_RANGE[1])
        assert tuple(net(torch.zeros(1, 2, max(PATCH_CHOICES), max(PATCH_CHOICES))).shape) == (1, 1, 192, 192)


def _case(i: int, blob: dict | None) -> Case:
    return Case("calibration", 1, i, {"blob": blob, "blobs": [blob] if blob else []}, Path("."), {}, 256)


def test_fcn_objective_averages_detection_at_calibrated_false_alarm_rates() -> None:
    quiet = [_case(i, None) for i in range(20)]
    blobs = [_case(20 + i, {"x": 100.0, "y": 100.0, "radius": 5.0}) for i in range(10)]
    # quiet images: one false candidate each, scores 0.00-0.95; blob images: the blob at 0.1 .. 1.0
    cands = [Candidates(np.array([10.0]), np.array([10.0]), np.array([i / 20])) for i in range(20)]
    cands += [Candidates(np.array([101.0]), np.array([100.0]), np.array([(i + 1) / 10])) for i in range(10)]
    m = fcn_objective_metrics(quiet + blobs, cands)
    # 0.02 of 20 quiet images allows none (the threshold goes above every score): nothing found;
    # 0.05 allows one (threshold 0.925): the blob at 1.0 found; 0.10 allows two (0.875): 0.9 and 1.0
    assert m["detection_at_0.02"] == 0.0 and m["threshold_at_0.02"] > 1.0
    assert m["detection_at_0.05"] == pytest.approx(0.1) and m["detection_at_0.1"] == pytest.approx(0.2)
    assert m["value"] == pytest.approx(0.1)
    with pytest.raises(Exception, match="both blob and quiet"):
        fcn_objective_metrics(quiet, cands[:20])


def test_tune_without_a_dataset_needs_the_fcn_family(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna")
    assert main(["tune"]) == 2
    assert "--family fcn" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_family_fcn_runs_trials_and_writes_a_params_file_train_fcn_reads(tmp_path: Path) -> None:
    import json

    pytest.importorskip("optuna")
    out, cache = tmp_path / "tune", tmp_path / "cache"
    small = [
        "--size",
        "256",
        "--references",
        "3",
        "--cases-per-sequence",
        "2",
        "--calibration-sequences",
        "5",
    ]
    args = ["tune", "--family", "fcn", "--out", str(out), "--trials", "2", "--max-epochs", "1"]
    assert main([*args, "--training-sequences", "2", "--cache", str(cache), "--no-progress", *small]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["architecture"] == "BlobUNet" and best["family"] == "fcn"
    assert set(best["training"]) >= {"width", "depth", "lr", "pos_weight", "patch", "peak_smooth", "epochs"}
    table = (out / "trials.md").read_text()
    assert "shipped BlobUNet" in table and "| objective |" in table
    model = out / "trials" / f"trial_{best['trial']:04d}" / "model.pt"
    from blobwatch.fcn import FCNDetector

    assert FCNDetector(model).smooth_sigma == pytest.approx(best["training"]["peak_smooth"])
    # the PaperCNN trainer refuses a localizing parameter file with one line
    assert main(["train", str(tmp_path), "--params", str(out / "best.json")]) == 2
