"""Train a blob classifier on a `blobwatch.dataset` directory (seed section 5).

Cross-entropy, batch 100, Adam for the first ``adam_epochs`` epochs, then SGD.  The data order is a
fixed function of ``(seed, epoch)``; a checkpoint (model, optimizer, RNG state, history) is written
after every epoch and ``resume=True`` continues from it, reproducing an uninterrupted run exactly.
Outputs in ``outdir``: ``checkpoint.pt``, ``metrics.csv``, ``history.png`` and the model file.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.errors import InputError
from blobwatch.stats import jsonable

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
HISTORY_PNG = "history.png"
CHECKPOINT_FORMAT = "blobwatch-checkpoint/1"

METRIC_FIELDS = [
    "epoch",
    "optimizer",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_tpr",
    "val_tnr",
    "seconds",
]


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    The defaults are the short recipe shipped with blobwatch (see docs/training.md): 6 epochs of
    8000 samples each (the first 8000 of each epoch's permutation of the whole training set), Adam
    for 4 of them, then SGD.  The seed's recipe is ``epochs=200, adam_epochs=5, max_samples=None``.
    """

    dataset: str
    outdir: str
    val_dataset: str | None = None
    epochs: int = 6
    adam_epochs: int = 4
    batch_size: int = 100
    adam_lr: float = 1e-3
    sgd_lr: float = 1e-3
    sgd_momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 33
    device: str = "auto"
    channels_last: bool = True
    threads: int | None = None
    resume: bool = False
    progress: bool = True
    max_samples: int | None = 8000
    architecture: str = "PaperCNN"
    arguments: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    command: str | None = None


@dataclass
class TrainResult:
    """What `train` returns: the model (eval mode), per-epoch history and the final metrics."""

    model: Any
    history: list[dict[str, Any]]
    threshold: float
    validation: dict[str, Any]
    model_path: Path
    seconds: float


def hardware_description(device: Any) -> str:
    """One line naming the hardware a run used."""
    import torch

    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads"


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of ``epoch``: a permutation fixed by ``(seed, epoch)`` alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _make_optimizer(model: Any, cfg: TrainConfig, epoch: int) -> tuple[Any, str, float]:
    import torch

    if epoch < cfg.adam_epochs:
        return (
            torch.optim.Adam(model.parameters(), lr=cfg.adam_lr, weight_decay=cfg.weight_decay),
            "adam",
            cfg.adam_lr,
        )
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.sgd_lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay
    )
    return opt, "sgd", cfg.sgd_lr


def predict_scores(
    model: Any, dataset: Any, *, device: Any, batch_size: int = 200, channels_last: bool = False
) -> tuple[np.ndarray, float]:
    """Blob probabilities for every sample of ``dataset`` and the mean cross-entropy loss."""
    import torch

    model.eval()
    probs = np.empty(len(dataset), np.float32)
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            idx = np.arange(start, min(start + batch_size, len(dataset)))
            xb, yb = dataset.batch(idx)
            xb, yb = xb.to(device), yb.to(device)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            logits = model(xb)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            probs[idx] = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
    return probs, loss_sum / max(len(dataset), 1)


def rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """TPR, TNR, FPR, FNR and accuracy of ``probs >= threshold``."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(probs) >= threshold
    pos, neg = max(labels.sum(), 1), max((~labels).sum(), 1)
    tpr = float((pred & labels).sum() / pos)
    tnr = float((~pred & ~labels).sum() / neg)
    return {
        "tpr": tpr,
        "tnr": tnr,
        "fpr": 1 - tnr,
        "fnr": 1 - tpr,
        "accuracy": float((pred == labels).mean()),
    }


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """Operating point maximizing Youden's J = TPR + TNR - 1 (ties: the threshold nearest 0.5)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.asarray(labels).astype(int), probs)
    j = tpr - fpr
    finite = np.isfinite(thr) & (thr <= 1.0)
    j = np.where(finite, j, -np.inf)
    best = np.flatnonzero(j >= j.max() - 1e-12)
    pick = best[np.argmin(np.abs(thr[best] - 0.5))]
    return float(np.clip(thr[pick], 1e-6, 1.0))


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def plot_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write the loss and accuracy curves (train and validation) as a PNG."""
    from blobwatch.figures import new_figure, save_png

    ep = [h["epoch"] for h in history]
    fig = new_figure(9, 3.5, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax1.plot(ep, [h.get("val_loss", math.nan) for h in history], "s-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax1.legend()
    ax2.plot(ep, [h["train_acc"] for h in history], "o-", label="train accuracy")
    if any(h.get("val_acc") is not None for h in history):
        ax2.plot(ep, [h.get("val_acc", math.nan) for h in history], "s-", label="val accuracy")
        ax2.plot(ep, [h.get("val_tpr", math.nan) for h in history], "^--", label="val TPR")
        ax2.plot(ep, [h.get("val_tnr", math.nan) for h in history], "v--", label="val TNR")
    ax2.set(xlabel="epoch", ylabel="rate", ylim=(0.4, 1.01))
    ax2.legend(fontsize=8)
    save_png(fig, path, dpi=110)


def _versions() -> dict[str, str]:
    import torch

    from blobwatch import __version__

    return {
        "blobwatch": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def train(config: TrainConfig, *, on_epoch: Callable[[int, Any], None] | None = None) -> TrainResult:
    """Train a model as described by ``config`` and save it with `blobwatch.modelfile.save_model`.

    ``on_epoch(epoch, model)``, when given, is called after each epoch (1-based) has been
    checkpointed; an exception it raises (`blobwatch tune` prunes a weak trial so) ends training.

    Raises
    ------
    InputError
        If a dataset is missing or damaged, or ``resume`` finds no usable checkpoint.
    """
    import torch
    from tqdm import tqdm

    from blobwatch.classifier import resolve_device
    from blobwatch.dataset import SubframeDataset, manifest_sha256
    from blobwatch.modelfile import save_model
    from blobwatch.models import build_model

    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, strict=True)
    outdir = Path(cfg.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    train_ds = SubframeDataset(cfg.dataset)
    val_ds = SubframeDataset(cfg.val_dataset) if cfg.val_dataset else None
    n_train = len(train_ds) if not cfg.max_samples else min(cfg.max_samples, len(train_ds))
    size = int(train_ds.manifest["size"])
    arguments = {"size": size, **cfg.arguments}

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.architecture, arguments).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits memory_format
    history: list[dict[str, Any]] = []
    start_epoch = 0
    optimizer, opt_name, lr = _make_optimizer(model, cfg, 0)
    elapsed = 0.0
    ckpt_path = outdir / CHECKPOINT
    if cfg.resume:
        if not ckpt_path.is_file():
            raise InputError(ckpt_path, "no checkpoint to resume from")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(ckpt_path, f"unusable checkpoint ({first})") from None
        try:
            if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a blobwatch checkpoint")
            model.load_state_dict(ckpt["model"])
            start_epoch = int(ckpt["epoch"]) + 1
            optimizer, opt_name, lr = _make_optimizer(model, cfg, min(start_epoch, cfg.epochs - 1))
            if ckpt["optimizer_name"] == opt_name:
                optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["torch_rng"])
            if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
            history = list(ckpt["history"])
            elapsed = float(ckpt["seconds"])
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
            raise InputError(ckpt_path, f"unusable checkpoint ({str(exc).splitlines()[0]})") from None
        log.info("resuming after epoch %d", start_epoch)

    n_batches = math.ceil(n_train / cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        if epoch == cfg.adam_epochs and opt_name != "sgd":
            optimizer, opt_name, lr = _make_optimizer(model, cfg, epoch)
        model.train()
        order = epoch_order(len(train_ds), cfg.seed, epoch)[:n_train]
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{cfg.epochs} ({opt_name})",
            unit="batch",
            disable=not cfg.progress,
            leave=False,
        )
        for b in bar:
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = train_ds.batch(idx)
            xb, yb = xb.to(device), yb.to(device)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        bar.close()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "optimizer": opt_name,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
        }
        if val_ds is not None:
            probs, vloss = predict_scores(model, val_ds, device=device, channels_last=cfg.channels_last)
            r = rates(val_ds.labels, probs, 0.5)
            row.update(val_loss=vloss, val_acc=r["accuracy"], val_tpr=r["tpr"], val_tnr=r["tnr"])
        elapsed += time.perf_counter() - t0
        row["seconds"] = round(elapsed, 2)
        history.append(row)
        log.info(
            "epoch %d/%d %s loss %.4f acc %.4f%s",
            epoch + 1,
            cfg.epochs,
            opt_name,
            row["train_loss"],
            row["train_acc"],
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} TPR {row['val_tpr']:.4f}"
            f" TNR {row['val_tnr']:.4f}"
            if "val_loss" in row
            else "",
        )
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "optimizer_name": opt_name,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": history,
            "seconds": elapsed,
            "config": asdict(cfg),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(ckpt, tmp)
        _write_metrics(outdir / METRICS_CSV, history)
        plot_history(history, outdir / HISTORY_PNG)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)

    # operating point and validation metrics on the validation set (seed protocol)
    threshold = 0.5
    validation: dict[str, Any] = {}
    if val_ds is not None and cfg.val_dataset is not None:
        probs, vloss = predict_scores(model, val_ds, device=device, channels_last=cfg.channels_last)
        threshold = choose_threshold(val_ds.labels, probs)
        from sklearn.metrics import roc_auc_score

        validation = {
            "dataset": str(cfg.val_dataset),
            "dataset_manifest_sha256": manifest_sha256(cfg.val_dataset),
            "n": len(val_ds),
            "loss": vloss,
            "threshold_rule": "max Youden J = TPR + TNR - 1",
            **rates(val_ds.labels, probs, threshold),
            "roc_auc": float(roc_auc_score(val_ds.labels, probs)),
            "at_0.5": rates(val_ds.labels, probs, 0.5),
        }
    model.eval()
    model_path = Path(cfg.model_path) if cfg.model_path else outdir / "model.pt"
    metadata = {
        "threshold": threshold,
        "preparation": {
            "clip_factor": float(train_ds.manifest.get("preparation", {}).get("clip_factor", 0.5)),
            "subframe": size,
            "size": size,
            "augmentation_noise_sigma": float(
                train_ds.manifest.get("parameters", {}).get("noise_sigma", 0.75)
            ),
            "input": "prepare(difference): negative difference, clipped at clip_factor x zscale "
            "limits, z-scored, non-finite -> median (blobs positive)",
        },
        "architecture": cfg.architecture,
        "arguments": arguments,
        "dataset_manifest_sha256": manifest_sha256(cfg.dataset),
        "dataset": {
            "path": str(cfg.dataset),
            "n_samples": len(train_ds),
            "n_used": n_train,
            "generator_version": train_ds.manifest.get("generator_version"),
        },
        "validation": validation,
        "versions": _versions(),
        "training": {
            "command": cfg.command or " ".join(shlex.quote(a) for a in sys.argv),
            "epochs": cfg.epochs,
            "adam_epochs": cfg.adam_epochs,
            "batch_size": cfg.batch_size,
            "adam_lr": cfg.adam_lr,
            "sgd_lr": cfg.sgd_lr,
            "sgd_momentum": cfg.sgd_momentum,
            "weight_decay": cfg.weight_decay,
            "seed": cfg.seed,
            "seconds": round(elapsed, 1),
            "hardware": hardware_description(device),
            "reproduce": "scripts/reproduce_model.sh (see docs/training.md)",
            "history": history,
        },
    }
    metadata = jsonable(metadata)  # only the types weights_only loading accepts
    save_model(
        model_path,
        model.to("cpu").to(memory_format=torch.contiguous_format),  # type: ignore[call-overload]
        architecture=cfg.architecture,
        arguments=arguments,
        metadata=metadata,
    )
    # a human-readable copy of the metadata beside the weights
    import json

    write_text_atomic(
        model_path.with_suffix(".json"),
        json.dumps({"architecture": cfg.architecture, "arguments": arguments, **metadata}, indent=1) + "\n",
    )
    return TrainResult(
        model=model,
        history=history,
        threshold=threshold,
        validation=validation,
        model_path=model_path,
        seconds=elapsed,
    )
