"""The localizing detector's search space for `blobwatch tune --family fcn`.

Each trial trains a `blobwatch.models.BlobUNet` with `blobwatch.fcn_train.train_fcn` on
whole-image sequences of the regression generator's training split (as ``blobwatch train-fcn``
does, fewer sequences and epochs to fit a trial), then runs it over the calibration split
(`blobwatch.detectors.LocalizingDetector`) and scores the detection rate of the blob images at
thresholds set for 0.02, 0.05 and 0.10 false alarms per quiet image, averaged (the objective; the
suite is never looked at).  Knobs: U-Net width and depth, learning rate, weight of blob pixels,
patch side, epochs and the smoothing of the probability map before its peaks are taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FALSE_ALARM_TARGETS",
    "FCN_FAMILY",
    "fcn_objective_metrics",
    "fcn_seed_params",
    "fcn_train_settings",
    "make_fcn_objective",
    "suggest_fcn_params",
]

#: Architecture of the localizing family in model files and ``best.json``.
FCN_FAMILY = "BlobUNet"
#: False alarms per quiet calibration image at which the detection rate is averaged.
FALSE_ALARM_TARGETS = (0.02, 0.05, 0.10)
#: Choices of the categorical knobs (the shipped model's value is in each).
WIDTH_CHOICES = (8, 12, 16, 24)
PATCH_CHOICES = (64, 96, 128, 192)
DEPTH_RANGE = (2, 4)


def fcn_seed_params(max_epochs: int = 20) -> dict[str, Any]:
    """The shipped localizing model's settings (``train-fcn`` defaults) in search-space terms."""
    from blobwatch.fcn import PEAK_SMOOTH_SIGMA

    return {
        "width": 12,
        "depth": 3,
        "lr": 2e-3,
        "pos_weight": 5.0,
        "patch": 128,
        "peak_smooth": PEAK_SMOOTH_SIGMA,
        "epochs": min(20, max_epochs),
    }


def suggest_fcn_params(trial: Any, max_epochs: int) -> dict[str, Any]:
    """Draw one point of the localizing family's search space from an Optuna trial.

    Every patch choice is a multiple of every depth's ``BlobUNet.multiple`` (2 x 2**depth <= 32).
    """
    return {
        "width": trial.suggest_categorical("width", WIDTH_CHOICES),
        "depth": trial.suggest_int("depth", *DEPTH_RANGE),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "pos_weight": trial.suggest_float("pos_weight", 1.0, 20.0, log=True),
        "patch": trial.suggest_categorical("patch", PATCH_CHOICES),
        "peak_smooth": trial.suggest_float("peak_smooth", 0.0, 1.5),
        "epochs": trial.suggest_int("epochs", 1, max_epochs),
    }


def fcn_train_settings(params: dict[str, Any]) -> dict[str, Any]:
    """`blobwatch.fcn_train.FCNTrainConfig` fields of a point of the search space."""
    return {
        "width": int(params["width"]),
        "depth": int(params["depth"]),
        "lr": float(params["lr"]),
        "pos_weight": float(params["pos_weight"]),
        "patch": int(params["patch"]),
        "peak_smooth": float(params["peak_smooth"]),
        "epochs": int(params["epochs"]),
    }


def fcn_objective_metrics(cases: Sequence[Any], candidates: Sequence[Any]) -> dict[str, float]:
    """Detection rate of the blob images at thresholds set on the quiet images of the same cases.

    Returns
    -------
    dict
        ``value``: the mean detection rate over `FALSE_ALARM_TARGETS`; ``detection_at_F`` for each
        target F; ``threshold_at_0.02``.

    Raises
    ------
    blobwatch.errors.BlobwatchError
        If the cases hold no blob image or no quiet one.
    """
    from blobwatch.errors import BlobwatchError
    from blobwatch.regression import calibrate, outcome

    blob = [c.blob is not None for c in cases]
    if not any(blob) or all(blob):
        raise BlobwatchError("the calibration split needs both blob and quiet images")
    out: dict[str, float] = {}
    rates = []
    for target in FALSE_ALARM_TARGETS:
        thr = calibrate(cases, candidates, target)
        found = [
            bool(outcome(c, k, thr).detected)
            for c, k in zip(cases, candidates, strict=True)
            if c.blob is not None
        ]
        rates.append(float(np.mean(found)))
        out[f"detection_at_{target:g}"] = rates[-1]
        if target == FALSE_ALARM_TARGETS[0]:
            out[f"threshold_at_{target:g}"] = float(thr)
    out["value"] = float(np.mean(rates))
    return out


def make_fcn_objective(
    cfg: Any, training: Sequence[Any], calibration: Sequence[Any], *, log: Callable[[str], None]
) -> Callable[[Any], float]:
    """The Optuna objective of the localizing family: train on ``training``, score on ``calibration``.

    ``cfg`` is a `blobwatch.tune.TuneConfig` (run folder, seed, epochs cap, device, threads).
    """
    from blobwatch.detectors import LocalizingDetector
    from blobwatch.fcn_train import FCNTrainConfig, train_fcn
    from blobwatch.models.blob_unet import BlobUNet
    from blobwatch.regression import run_detector

    def objective(trial: Any) -> float:
        params = suggest_fcn_params(trial, cfg.max_epochs)
        outdir = Path(cfg.outdir) / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_folder", str(outdir))
        net = BlobUNet(in_channels=2, width=int(params["width"]), depth=int(params["depth"]))
        trial.set_user_attr("weights", sum(p.numel() for p in net.parameters()))
        t0 = time.perf_counter()
        fcfg = FCNTrainConfig(
            outdir=str(outdir),
            cache=cfg.cache,
            sequences=len({c.seed for c in training}),
            seed=cfg.seed,
            device=cfg.device if cfg.device != "auto" else "cpu",
            threads=cfg.threads,
            progress=False,
            **fcn_train_settings(params),
        )
        train_fcn(fcfg, training, log=lambda line: log(f"trial {trial.number}: {line}"))
        det = LocalizingDetector(model=str(outdir / "model.pt"), device=fcfg.device)
        metrics = fcn_objective_metrics(calibration, run_detector(det, calibration, progress=False))
        trial.report(metrics["value"], params["epochs"])
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        trial.set_user_attr("model", str(outdir / "model.pt"))
        log(
            f"trial {trial.number}: mean detection {metrics['value']:.4f} "
            f"(at 0.02 false alarms per quiet image: {metrics['detection_at_0.02']:.3f})"
        )
        return metrics["value"]

    return objective
