"""Hyperparameter search (Optuna) over the PaperCNN family, judged on the calibration split.

Each trial trains a `blobwatch.models.ConfigurableCNN` on a `blobwatch.dataset` training set with
`blobwatch.train.train`, the knobs drawn from the seed's list of future work (convolutional
layers, filters, kernel size, pooling, neurons, dropout, batch size, epochs) plus the learning
rate and the Adam-to-SGD switch epoch.  After every epoch the network scores the 16 prepared
subframes of every case of the regression suite's *calibration split* (plain and registered
differences, blobs injected into the raw images); the objective is the standardized partial ROC
AUC up to a false-positive rate of `MAX_FPR` there.  The suite itself is never looked at.

The study lives in a database (`optuna.storages.RDBStorage`): SQLite for one machine, PostgreSQL
for several; every worker is the same command.  Workers send a heartbeat; a trial whose worker
died (kill -9, a lost machine) is marked failed by the next worker and run again with the same
parameters (`optuna.storages.RetryHeartbeatStaleTrialCallback`).  Trial 0 of a new study is the seed's
architecture under the same training budget, the reference every other trial is compared with.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blobwatch.errors import BlobwatchError
from blobwatch.evaluate import SuiteSubframes, suite_subframes

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from blobwatch.regression import Case

log = logging.getLogger(__name__)

__all__ = [
    "MAX_FPR",
    "CalibrationSubframes",
    "TuneConfig",
    "calibration_subframes",
    "network_arguments",
    "objective_metrics",
    "open_study",
    "require_optuna",
    "run_worker",
    "seed_params",
    "suggest_params",
    "training_settings",
]

#: The objective integrates the ROC curve of the calibration subframes up to this false-positive
#: rate (a subframe false-positive rate of 0.05 is 0.8 false alarms per quiet 16-subframe image).
MAX_FPR = 0.05
#: TNR at which the TPR of each trial is also reported.
REPORT_TNR = 0.97
#: Architecture name of the searched family in model files.
FAMILY = "ConfigurableCNN"
#: Format tag of ``best.json``.
PARAMS_FORMAT = "blobwatch-params/1"
#: Choices of the categorical knobs (the seed's value is in each).
FILTER_CHOICES = (4, 8, 16, 32)
KERNEL_CHOICES = (3, 5, 7)
POOL_CHOICES = (2, 4)
POOL_TYPES = ("max", "avg")
HIDDEN_CHOICES = (32, 64, 128, 256)
BATCH_CHOICES = (32, 50, 100, 200)


def require_optuna() -> Any:
    """Import optuna, or fail with one line naming the extra that installs it
    (`blobwatch.extras.MissingExtraError`)."""
    from blobwatch.extras import require

    return require("optuna")


@dataclass
class TuneConfig:
    """One worker of a study.

    Attributes
    ----------
    dataset : str
        Training dataset (``make-dataset``'s ``train``) of the PaperCNN family; unused by ``fcn``.
    outdir : str
        Run folder of this worker (trials, table, figure, ``best.json``).
    storage : str or None
        Database URL of the study; None: ``sqlite:///OUTDIR/tune.db``.
    study : str
        Study name (several workers share it).
    trials : int
        Finished (complete or pruned) trials the study should reach; this worker stops then.
    timeout : float or None
        This worker's time limit in seconds (a running trial finishes first).
    seed : int
        Sampler seed; also the training seed of every trial.
    max_epochs : int
        Upper end of the epochs knob.
    max_samples : int or None
        Training samples per epoch (the first N of each epoch's permutation); None: all.
    max_parameters : int
        Trials whose network has more weights are pruned before training.
    pruner : {'median', 'hyperband', 'none'}
        Pruner of weak trials on the per-epoch calibration objective.
    heartbeat : int
        Seconds between a worker's heartbeats; a trial silent for twice as long is failed.
    calibration_sequences : int
        Sequences of the calibration split.
    cache : str
        Regression case cache.
    variation : dict
        `blobwatch.variation.VariationConfig` fields of the calibration split (tests shrink it).
    device, threads, progress
        As for `blobwatch.train.TrainConfig`.
    family : {'papercnn', 'fcn'}
        The PaperCNN family (`suggest_params`) or the localizing detector
        (`blobwatch.tune_fcn.suggest_fcn_params`).
    training_sequences : int
        Training-split sequences each ``fcn`` trial trains on.
    """

    dataset: str
    outdir: str
    storage: str | None = None
    study: str = "papercnn"
    trials: int = 20
    timeout: float | None = None
    seed: int = 0
    max_epochs: int = 6
    max_samples: int | None = 2000
    max_parameters: int = 4_000_000
    pruner: str = "median"
    heartbeat: int = 60
    calibration_sequences: int = 12
    cache: str = ""
    variation: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    family: str = "papercnn"
    training_sequences: int = 12

    @property
    def storage_url(self) -> str:
        """The study's database URL."""
        return self.storage or f"sqlite:///{Path(self.outdir).resolve() / 'tune.db'}"


# --------------------------------------------------------------------------------------------
# search space
# --------------------------------------------------------------------------------------------


def seed_params(max_epochs: int = 6) -> dict[str, Any]:
    """The seed's PaperCNN under blobwatch's short training recipe, in search-space terms."""
    return {
        "conv_layers": 2,
        "filters": 8,
        "kernel": 5,
        "pool": 4,
        "pool_type": "max",
        "hidden": 128,
        "dropout_conv": 0.15,
        "dropout_hidden": 0.3,
        "batch_size": 100,
        "epochs": min(6, max_epochs),
        "lr": 1e-3,
        "adam_epochs": min(4, max_epochs),
    }


def suggest_params(trial: Any, max_epochs: int) -> dict[str, Any]:
    """Draw one point of the search space from an Optuna trial.

    ``filters`` is the first layer's channel count; each further layer doubles it (the seed's
    8, 16).  ``adam_epochs`` >= ``epochs`` means Adam throughout.
    """
    return {
        "conv_layers": trial.suggest_int("conv_layers", 1, 4),
        "filters": trial.suggest_categorical("filters", FILTER_CHOICES),
        "kernel": trial.suggest_categorical("kernel", KERNEL_CHOICES),
        "pool": trial.suggest_categorical("pool", POOL_CHOICES),
        "pool_type": trial.suggest_categorical("pool_type", POOL_TYPES),
        "hidden": trial.suggest_categorical("hidden", HIDDEN_CHOICES),
        "dropout_conv": trial.suggest_float("dropout_conv", 0.0, 0.5),
        "dropout_hidden": trial.suggest_float("dropout_hidden", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_CHOICES),
        "epochs": trial.suggest_int("epochs", 1, max_epochs),
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "adam_epochs": trial.suggest_int("adam_epochs", 0, max_epochs),
    }


def network_arguments(params: dict[str, Any], size: int) -> dict[str, Any]:
    """`ConfigurableCNN` keyword arguments of a point of the search space."""
    return {
        "size": int(size),
        "filters": [int(params["filters"]) * 2**i for i in range(int(params["conv_layers"]))],
        "kernel": int(params["kernel"]),
        "pool": int(params["pool"]),
        "pool_type": str(params["pool_type"]),
        "hidden": int(params["hidden"]),
        "dropout": [float(params["dropout_conv"]), float(params["dropout_hidden"])],
    }


def training_settings(params: dict[str, Any]) -> dict[str, Any]:
    """`blobwatch.train.TrainConfig` fields of a point of the search space (one lr for both optimizers)."""
    epochs = int(params["epochs"])
    return {
        "epochs": epochs,
        "adam_epochs": min(int(params["adam_epochs"]), epochs),
        "batch_size": int(params["batch_size"]),
        "adam_lr": float(params["lr"]),
        "sgd_lr": float(params["lr"]),
    }


# --------------------------------------------------------------------------------------------
# the objective's data and metric
# --------------------------------------------------------------------------------------------


#: The prepared calibration subframes the objective scores (`blobwatch.evaluate.SuiteSubframes`).
CalibrationSubframes = SuiteSubframes


def calibration_subframes(
    cases: list[Case], *, size: int, clip_factor: float, progress: bool = False
) -> SuiteSubframes:
    """The 16 prepared subframes of the plain and registered difference of every calibration
    case, partial ones dropped (`blobwatch.evaluate.suite_subframes`, the one function that cuts
    them for tuning, for the seed-protocol table and for ``make-dataset --from-suite``)."""
    return suite_subframes(
        cases, size=size, clip_factor=clip_factor, progress=progress, desc="calibration subframes"
    )


def score_subframes(model: Any, x: np.ndarray, *, device: Any, batch_size: int = 128) -> np.ndarray:
    """Blob probabilities of prepared subframes ``x`` (N, size, size) under ``model`` (float64)."""
    import torch

    model.eval()
    out = np.empty(len(x), np.float64)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.asarray(x[start : start + batch_size], np.float32)[:, None]).to(device)
            out[start : start + len(xb)] = torch.softmax(model(xb).float(), dim=1)[:, 1].cpu().numpy()
    return out


def objective_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The objective and what is reported beside it.

    Returns
    -------
    dict
        ``pauc``: standardized partial ROC AUC up to `MAX_FPR` (McClish: 0.5 is chance, 1 is
        perfect; scikit-learn's ``roc_auc_score(max_fpr=...)``); ``auc``: the whole ROC AUC;
        ``tpr_at_tnr``: the TPR at the lowest threshold whose TNR is >= `REPORT_TNR`.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        raise BlobwatchError("the calibration subframes need both blob and blank subframes")
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= 1.0 - REPORT_TNR + 1e-12
    return {
        "pauc": float(roc_auc_score(labels, scores, max_fpr=MAX_FPR)),
        "auc": float(roc_auc_score(labels, scores)),
        "tpr_at_tnr": float(tpr[ok].max()) if ok.any() else 0.0,
    }


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------


def _pruner(name: str, max_epochs: int) -> Any:
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r} (median, hyperband, none)")


def open_study(cfg: TuneConfig) -> optuna.Study:
    """Create or load the study named ``cfg.study`` in ``cfg.storage_url``.

    The storage sends a heartbeat every ``cfg.heartbeat`` s; a RUNNING trial silent for twice as
    long is failed by the next worker and re-enqueued once with the same parameters.  A new study
    gets the seed's architecture enqueued as its first trial.

    Raises
    ------
    blobwatch.errors.BlobwatchError
        If optuna is missing or the database cannot be opened.
    """
    optuna = require_optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from blobwatch.monitor.db import redact_url

    url = cfg.storage_url
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(cfg.outdir).mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 120}}  # several workers wait for the file lock
    for attempt in range(4):  # workers started together race to create the tables: the loser retries
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=cfg.heartbeat,
                grace_period=2 * cfg.heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
            break
        except Exception as exc:
            if attempt < 3 and "already exists" in str(exc):
                time.sleep(1.0 + attempt)
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BlobwatchError(f"cannot open the study database {redact_url(url)} ({first})") from None
    sampler = optuna.samplers.TPESampler(
        seed=cfg.seed, n_startup_trials=5, multivariate=True, constant_liar=True
    )
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.study,
        direction="maximize",
        sampler=sampler,
        pruner=_pruner(cfg.pruner, cfg.max_epochs),
        load_if_exists=True,
    )
    family = study.user_attrs.get("family", "papercnn" if study.trials else cfg.family)
    if family != cfg.family:
        raise BlobwatchError(f"study {cfg.study} searches the {family} family, not {cfg.family}")
    if not study.trials and not study.user_attrs.get("baseline_enqueued"):
        from blobwatch.tune_fcn import FALSE_ALARM_TARGETS, fcn_seed_params

        study.set_user_attr("baseline_enqueued", True)
        study.set_user_attr("family", cfg.family)
        if cfg.family == "fcn":
            targets = ", ".join(f"{t:g}" for t in FALSE_ALARM_TARGETS)
            study.set_user_attr(
                "objective",
                f"mean detection rate of the calibration split's blob images at {targets} false alarms "
                "per quiet image",
            )
            study.enqueue_trial(fcn_seed_params(cfg.max_epochs), user_attrs={"baseline": "shipped BlobUNet"})
        else:
            study.set_user_attr(
                "objective", f"standardized partial ROC AUC (FPR <= {MAX_FPR}) on the calibration split"
            )
            study.enqueue_trial(seed_params(cfg.max_epochs), user_attrs={"baseline": "seed PaperCNN"})
    return study


def finished_trials(study: optuna.Study) -> int:
    """Complete plus pruned trials of the study."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def make_objective(cfg: TuneConfig, subframes: CalibrationSubframes, size: int) -> Callable[[Any], float]:
    """The Optuna objective: train one network, report the calibration objective every epoch."""
    optuna = require_optuna()
    from blobwatch.classifier import resolve_device
    from blobwatch.models.configurable_cnn import feature_side, parameter_count
    from blobwatch.train import TrainConfig, train

    device = resolve_device(cfg.device, strict=True)

    def objective(trial: Any) -> float:
        params = suggest_params(trial, cfg.max_epochs)
        arguments = network_arguments(params, size)
        n_weights = parameter_count(**arguments)
        trial.set_user_attr("weights", n_weights)
        trial.set_user_attr("host", os.uname().nodename)
        if feature_side(size, arguments["pool"], len(arguments["filters"])) < 1:
            trial.set_user_attr(
                "pruned_because", f"{size} px pooled {len(arguments['filters'])} times leaves nothing"
            )
            raise optuna.TrialPruned()
        if n_weights > cfg.max_parameters:
            trial.set_user_attr("pruned_because", f"{n_weights} weights > {cfg.max_parameters}")
            raise optuna.TrialPruned()
        outdir = Path(cfg.outdir) / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_folder", str(outdir))
        settings = training_settings(params)
        tcfg = TrainConfig(
            dataset=cfg.dataset,
            outdir=str(outdir),
            architecture=FAMILY,
            arguments=arguments,
            max_samples=cfg.max_samples,
            seed=cfg.seed,
            device=str(device),
            threads=cfg.threads,
            progress=False,
            command=f"blobwatch tune (study {cfg.study}, trial {trial.number})",
            **settings,
        )
        last: dict[str, float] = {}
        t0 = time.perf_counter()

        def on_epoch(epoch: int, model: Any) -> None:
            metrics = objective_metrics(subframes.label, score_subframes(model, subframes.x, device=device))
            last.update(metrics, epoch=epoch)
            trial.report(metrics["pauc"], epoch)
            log.info(
                "trial %d epoch %d/%d: partial AUC %.4f, AUC %.4f, TPR %.3f at TNR>=%.2f",
                trial.number,
                epoch,
                settings["epochs"],
                metrics["pauc"],
                metrics["auc"],
                metrics["tpr_at_tnr"],
                REPORT_TNR,
            )
            if trial.should_prune():
                trial.set_user_attr("pruned_because", f"{cfg.pruner} pruner after epoch {epoch}")
                _record(trial, last, time.perf_counter() - t0)
                raise optuna.TrialPruned()

        train(tcfg, on_epoch=on_epoch)
        _record(trial, last, time.perf_counter() - t0)
        trial.set_user_attr("model", str(outdir / "model.pt"))
        return float(last["pauc"])

    return objective


def _record(trial: Any, metrics: dict[str, float], seconds: float) -> None:
    for key in ("auc", "tpr_at_tnr", "epoch"):
        if key in metrics:
            trial.set_user_attr(key, metrics[key])
    trial.set_user_attr("seconds", round(seconds, 1))


def run_worker(cfg: TuneConfig, *, log_line: Callable[[str], None] = print) -> optuna.Study:
    """Run trials of the study until it has ``cfg.trials`` finished ones or ``cfg.timeout`` passes.

    Builds (or reads from the cache) the calibration split, prepares its subframes once, then
    optimizes; writes the report files (`blobwatch.tune_report.write_report`) at the end.  Optuna's
    warnings that heartbeats are an experimental feature are not shown.

    Raises
    ------
    blobwatch.errors.BlobwatchError
        If optuna is missing, a dataset or the database cannot be used, or no trial completed.
    """
    optuna = require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _run_worker(cfg, log_line)


def _run_worker(cfg: TuneConfig, log_line: Callable[[str], None]) -> optuna.Study:
    optuna = require_optuna()
    from optuna.storages import fail_stale_trials
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from tqdm import tqdm

    from blobwatch.dataset import read_manifest
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.tune_report import write_report
    from blobwatch.variation import VariationConfig

    if cfg.family not in ("papercnn", "fcn"):
        raise BlobwatchError(f"unknown family {cfg.family!r} (papercnn, fcn)")
    size, clip_factor = 0, 0.5
    if cfg.family == "papercnn":
        manifest = read_manifest(cfg.dataset)  # InputError for a missing or damaged dataset
        size = int(manifest["size"])
        clip_factor = float(manifest.get("preparation", {}).get("clip_factor", 0.5))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg)
    fail_stale_trials(study)
    others = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if others:  # another worker is at it: draw a different random sequence from this one
        study.sampler = optuna.samplers.TPESampler(
            seed=cfg.seed + len(study.trials), n_startup_trials=5, multivariate=True, constant_liar=True
        )
    done = finished_trials(study)
    if done < cfg.trials:
        t0 = time.perf_counter()
        spec = SuiteSpec("calibration", cfg.calibration_sequences, VariationConfig(**cfg.variation))
        cases = build_suite(spec, cfg.cache, progress=cfg.progress)
        if cfg.family == "fcn":
            objective = _fcn_objective(cfg, cases, log_line)
        else:
            subframes = calibration_subframes(
                cases, size=size, clip_factor=clip_factor, progress=cfg.progress
            )
            log_line(
                f"calibration split: {len(cases)} cases, {len(subframes.label)} subframes "
                f"({int(subframes.label.sum())} with the new blob), {time.perf_counter() - t0:.0f} s"
            )
            objective = make_objective(cfg, subframes, size)
        bar = tqdm(
            total=cfg.trials, initial=done, desc=f"study {cfg.study}", unit="trial", disable=not cfg.progress
        )

        def progress(study: Any, trial: Any) -> None:
            bar.n = min(finished_trials(study), cfg.trials)
            try:
                bar.set_postfix(best=f"{study.best_value:.4f}", last=trial.state.name.lower())
            except ValueError:  # no completed trial yet
                bar.set_postfix(last=trial.state.name.lower())
            bar.refresh()

        try:
            study.optimize(
                objective,
                n_trials=cfg.trials - done,
                timeout=cfg.timeout,
                callbacks=[
                    MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                    progress,
                ],
                catch=(RuntimeError,),
            )
        finally:
            bar.close()
    fail_stale_trials(study)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise BlobwatchError(f"study {cfg.study}: no trial completed (see the log above)")
    write_report(study, cfg)
    return study


def _fcn_objective(cfg: TuneConfig, calibration: list[Case], log_line: Callable[[str], None]) -> Any:
    """The localizing family's objective, with the training split's cases built or read."""
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.tune_fcn import make_fcn_objective
    from blobwatch.variation import VariationConfig, training_stamps

    variation = VariationConfig(
        **{**cfg.variation, "cases": 6, "new_blobs": 12, "stamps": training_stamps()}
    )  # as train-fcn builds the training split
    training = build_suite(
        SuiteSpec("training", cfg.training_sequences, variation), cfg.cache, progress=cfg.progress
    )
    log_line(f"training split: {len(training)} cases; calibration split: {len(calibration)} cases")
    return make_fcn_objective(cfg, training, calibration, log=log_line)


def best_params(study: optuna.Study, cfg: TuneConfig) -> dict[str, Any]:
    """The content of ``best.json``: what `blobwatch train --params` (PaperCNN family) or
    `blobwatch train-fcn --params` (localizing family) needs to train the winner."""
    from blobwatch.dataset import read_manifest
    from blobwatch.monitor.db import redact_url

    best = study.best_trial
    if cfg.family == "fcn":
        from blobwatch.tune_fcn import FCN_FAMILY, fcn_train_settings

        settings = fcn_train_settings(best.params)
        return {
            "format": PARAMS_FORMAT,
            "family": "fcn",
            "study": cfg.study,
            "storage": redact_url(cfg.storage_url),
            "trial": best.number,
            "objective": str(study.user_attrs.get("objective", "")),
            "value": best.value,
            "architecture": FCN_FAMILY,
            "arguments": {"in_channels": 2, "width": settings["width"], "depth": settings["depth"]},
            "training": {**settings, "sequences": cfg.training_sequences, "seed": cfg.seed},
            "search_space": dict(best.params),
            "command": "blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        }
    size = int(read_manifest(cfg.dataset)["size"])
    return {
        "format": PARAMS_FORMAT,
        "study": cfg.study,
        "storage": redact_url(cfg.storage_url),
        "trial": best.number,
        "objective": f"standardized partial ROC AUC (FPR <= {MAX_FPR}) on the calibration split subframes",
        "value": best.value,
        "auc": best.user_attrs.get("auc"),
        "tpr_at_tnr_0.97": best.user_attrs.get("tpr_at_tnr"),
        "architecture": FAMILY,
        "arguments": network_arguments(best.params, size),
        "training": {**training_settings(best.params), "max_samples": cfg.max_samples, "seed": cfg.seed},
        "search_space": dict(best.params),
        "dataset": str(cfg.dataset),
        "command": "blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``best.json`` written by `blobwatch tune`.

    Raises
    ------
    blobwatch.errors.InputError
        If the file is missing, not JSON, or not a blobwatch parameter file.
    """
    from blobwatch.errors import InputError
    from blobwatch.models import ARCHITECTURES

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "parameter file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(p, f"not a readable JSON parameter file ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("format") != PARAMS_FORMAT:
        raise InputError(p, f"not a blobwatch parameter file (expected format {PARAMS_FORMAT!r})")
    if (
        doc.get("architecture") not in ARCHITECTURES
        or not isinstance(doc.get("arguments"), dict)
        or not isinstance(doc.get("training"), dict)
    ):
        raise InputError(p, "parameter file lacks a known architecture, its arguments or training settings")
    bad = [
        k
        for k, v in doc["training"].items()
        if not (v is None or isinstance(v, (int, float))) or (isinstance(v, float) and not math.isfinite(v))
    ]
    if bad:
        raise InputError(p, f"parameter file has non-numeric training settings: {', '.join(bad)}")
    return doc
