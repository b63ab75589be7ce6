"""Evaluation of a blob classifier on `blobwatch.dataset` datasets, beside the matched filter.

Computation (`confusion_rates`, `curves`, `miss_breakdown`, `fp_breakdown`, `evaluate_scores`)
returns plain dicts; the figures (`plot_confusion`, `plot_curves`) and files are made by
`evaluate_model`, which the ``blobwatch evaluate`` command calls.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import write_text_atomic

#: Bin edges of the miss breakdowns (strongest blob of each positive subframe).
PEAK_BINS = (0.0, 1.5, 2.5, 3.5, 5.0, 1e9)  # peak in noise sigma
RADIUS_BINS = (0.0, 5.0, 7.0, 9.0, 1e9)  # px
EDGE_BINS = (-1e9, 5.0, 15.0, 40.0, 1e9)  # px from the nearest subframe edge
SUBFRAMES_PER_IMAGE = 16


def confusion_rates(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Confusion matrix as rates (seed Table 1): TN, FP among negatives; TP, FN among positives."""
    from sklearn.metrics import confusion_matrix

    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(predicted).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1])
    neg, pos = max(tn + fp, 1), max(tp + fn, 1)
    return {
        "tn": tn / neg,
        "fp": fp / neg,
        "tp": tp / pos,
        "fn": fn / pos,
        "counts": {"tn": int(tn), "fp": int(fp), "tp": int(tp), "fn": int(fn)},
        "accuracy": float((tn + tp) / max(len(labels), 1)),
        "false_alarms_per_image": float(fp / neg * SUBFRAMES_PER_IMAGE),
    }


def curves(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """ROC and precision-recall curves with their areas (scikit-learn)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"precision": precision.tolist(), "recall": recall.tolist()},
    }


def _binned(values: np.ndarray, hit: np.ndarray, edges: Sequence[float], name: str) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (values >= lo) & (values < hi)
        n = int(sel.sum())
        rows.append(
            {
                "quantity": name,
                "low": float(lo),
                "high": float(hi),
                "n": n,
                "missed": int((sel & ~hit).sum()),
                "miss_rate": float((sel & ~hit).sum() / n) if n else None,
            }
        )
    return rows


def miss_breakdown(
    meta: dict[str, np.ndarray], labels: np.ndarray, predicted: np.ndarray
) -> list[dict[str, Any]]:
    """Miss rates of positives by the strongest blob's peak (sigma), radius (px) and edge distance."""
    pos = np.asarray(labels).astype(bool)
    hit = np.asarray(predicted).astype(bool)[pos]
    rows = _binned(meta["peak"][pos], hit, PEAK_BINS, "peak_sigma")
    rows += _binned(meta["radius"][pos], hit, RADIUS_BINS, "radius_px")
    rows += _binned(meta["edge_distance"][pos], hit, EDGE_BINS, "edge_distance_px")
    rows += _binned(meta["n_blobs"][pos].astype(float), hit, (1, 2, 3, 4, 5, 6), "n_blobs")
    return rows


def fp_breakdown(
    meta: dict[str, np.ndarray], labels: np.ndarray, predicted: np.ndarray
) -> list[dict[str, Any]]:
    """False-positive rates of negatives with and without each flagged hard case.

    A subframe may carry several causes; a cause whose FP rate is far above the rate of
    subframes without it is what drives the false positives.
    """
    from blobwatch.dataset import CAUSE_NAMES

    neg = ~np.asarray(labels).astype(bool)
    fp = np.asarray(predicted).astype(bool) & neg
    causes = meta["causes"]
    rows = []
    for flag, name in CAUSE_NAMES.items():
        has = neg & ((causes & flag) > 0)
        lacks = neg & ((causes & flag) == 0)
        rows.append(
            {
                "cause": name,
                "n_with": int(has.sum()),
                "fp_with": int((fp & has).sum()),
                "fp_rate_with": float((fp & has).sum() / has.sum()) if has.any() else None,
                "n_without": int(lacks.sum()),
                "fp_rate_without": float((fp & lacks).sum() / lacks.sum()) if lacks.any() else None,
                "share_of_fps": float((fp & has).sum() / fp.sum()) if fp.any() else None,
            }
        )
    none = neg & (causes == 0)
    rows.append(
        {
            "cause": "none flagged",
            "n_with": int(none.sum()),
            "fp_with": int((fp & none).sum()),
            "fp_rate_with": float((fp & none).sum() / none.sum()) if none.any() else None,
            "n_without": None,
            "fp_rate_without": None,
            "share_of_fps": float((fp & none).sum() / fp.sum()) if fp.any() else None,
        }
    )
    return rows


def registration_breakdown(
    manifest: dict[str, Any], meta: dict[str, np.ndarray], labels: np.ndarray, predicted: np.ndarray
) -> dict[str, dict[str, Any]]:
    """FP rate and TPR separately for subframes cut from registered and unregistered differences.

    Uses each source's ``provenance["registered"]`` in the dataset manifest; sources without it
    (real files) are grouped as ``"unknown"``.
    """
    flags = []
    for src in manifest.get("sources", []):
        reg = src.get("provenance", {}).get("registered")
        flags.append("unknown" if reg is None else ("registered" if reg else "unregistered"))
    group = np.asarray(flags, dtype=object)[np.asarray(meta["source"], dtype=int)]
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    out: dict[str, dict[str, Any]] = {}
    for g in ("registered", "unregistered", "unknown"):
        sel = group == g
        if not sel.any():
            continue
        neg, pos = sel & ~labels, sel & labels
        out[g] = {
            "n_negative": int(neg.sum()),
            "n_positive": int(pos.sum()),
            "fp_rate": float(predicted[neg].mean()) if neg.any() else None,
            "tpr": float(predicted[pos].mean()) if pos.any() else None,
        }
    return out


def evaluate_scores(
    labels: np.ndarray,
    probs: np.ndarray,
    meta: dict[str, np.ndarray],
    threshold: float,
    baseline_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics of one dataset: CNN at ``threshold``, matched filter at the same FPR."""
    from blobwatch.baseline import threshold_at_fpr

    labels = np.asarray(labels).astype(int)
    pred = np.asarray(probs) >= threshold
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "n_positive": int(labels.sum()),
        "threshold": float(threshold),
        "cnn": {
            **confusion_rates(labels, pred),
            **curves(labels, probs),
            "misses": miss_breakdown(meta, labels, pred),
            "false_positives": fp_breakdown(meta, labels, pred),
        },
    }
    if baseline_scores is not None:
        fpr = out["cnn"]["fp"]
        thr = threshold_at_fpr(baseline_scores[labels == 0], fpr)
        bpred = baseline_scores >= thr
        out["matched_filter"] = {
            "threshold_sigma": thr,
            "matched_fpr": fpr,
            **confusion_rates(labels, bpred),
            **curves(labels, baseline_scores),
            "misses": miss_breakdown(meta, labels, bpred),
            "false_positives": fp_breakdown(meta, labels, bpred),
        }
        # where each detector wins: positives found by one and missed by the other
        out["disagreement"] = {
            "cnn_only_hits": int((pred & ~bpred & (labels == 1)).sum()),
            "baseline_only_hits": int((~pred & bpred & (labels == 1)).sum()),
            "cnn_only_false_alarms": int((pred & ~bpred & (labels == 0)).sum()),
            "baseline_only_false_alarms": int((~pred & bpred & (labels == 0)).sum()),
        }
    return out


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def plot_confusion(rates: dict[str, Any], path: str | os.PathLike, *, title: str = "") -> None:
    """Confusion matrix as rates, laid out like the seed's Fig. 8 (rows: true, cols: predicted)."""
    from blobwatch.figures import new_figure, save_png

    m = np.array([[rates["tn"], rates["fp"]], [rates["fn"], rates["tp"]]])
    fig = new_figure(4.2, 3.8, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j, i, f"{v:.3f}", ha="center", va="center", color="white" if v > 0.5 else "black", fontsize=13
        )
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted label", ylabel="true label")
    ax.set_title(title or "CNN confusion matrix (rates)", parse_math=False)  # names are data, not TeX
    ax.set_xticklabels(["0 (non-blob)", "1 (blob)"])
    ax.set_yticklabels(["0", "1"])
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_png(fig, path, dpi=120)


def plot_curves(result: dict[str, Any], path: str | os.PathLike, *, title: str = "") -> None:
    """ROC and precision-recall curves of the CNN and the matched filter, operating points marked."""
    from blobwatch.figures import new_figure, save_png

    fig = new_figure(9, 4, layout="constrained")
    a, b = fig.subplots(1, 2)
    for key, label, style in (("cnn", "CNN", "-"), ("matched_filter", "matched filter", "--")):
        if key not in result:
            continue
        r = result[key]
        a.plot(r["roc"]["fpr"], r["roc"]["tpr"], style, label=f"{label} (AUC {r['roc_auc']:.3f})")
        a.plot([r["fp"]], [r["tp"]], "o", color=a.lines[-1].get_color())
        b.plot(
            r["pr"]["recall"], r["pr"]["precision"], style, label=f"{label} (AP {r['average_precision']:.3f})"
        )
    a.plot([0, 1], [0, 1], ":", color="grey")
    a.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    b.set(xlabel="recall (TPR)", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    a.legend(loc="lower right", fontsize=8)
    b.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title, parse_math=False)
    save_png(fig, path, dpi=120)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


#: Pedestals (background noise sigma) added to whole subframes by `level_sensitivity`.
LEVELS = (-0.5, -0.3, -0.15, 0.0, 0.15, 0.3, 0.5)


class _Samples:
    """Samples ``idx`` of a dataset, with ``level`` added to every pixel (same ``batch`` interface)."""

    def __init__(self, ds: Any, idx: np.ndarray, level: float = 0.0) -> None:
        self.ds, self.idx, self.level = ds, idx, level
        self.labels = ds.labels[idx]

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, idx: np.ndarray) -> Any:
        xb, yb = self.ds.batch(self.idx[idx])
        return (xb + self.level if self.level else xb), yb


def level_sensitivity(
    model: Any,
    ds: Any,
    n: int,
    threshold: float,
    *,
    device: Any,
    per_class: int = 500,
    levels: Sequence[float] = LEVELS,
) -> list[dict[str, float | None]]:
    """FP and TP rates when the whole subframe is raised or lowered by a constant.

    A blob is local contrast.  Large-scale residuals of a real difference image (earthlight,
    persistence halos, a changed dark level) raise or lower whole subframes by a fraction of the
    noise; a detector that reads that as blob flux false-alarms on them.  Uses the first
    ``per_class`` negatives and positives of the first ``n`` samples.  Levels are in prepared
    units (noise sigma) and added to the stored samples as they are, without re-clipping.
    Rates of a class with no samples are None.
    """
    from blobwatch.train import predict_scores, rates

    labels = ds.labels[:n]
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in (0, 1)])
    rows = []
    for level in levels:
        sub = _Samples(ds, idx, float(level))
        probs, _ = predict_scores(model, sub, device=device)
        r = rates(sub.labels, probs, threshold)
        n_neg, n_pos = int((sub.labels == 0).sum()), int((sub.labels == 1).sum())
        rows.append(
            {
                "level_sigma": float(level),
                "fp_rate": r["fpr"] if n_neg else None,
                "tp_rate": r["tpr"] if n_pos else None,
                "n_negative": n_neg,
                "n_positive": n_pos,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def evaluate_model(
    datasets: Sequence[str | os.PathLike],
    *,
    model: str | os.PathLike | None = None,
    outdir: str | os.PathLike = "runs/evaluate",
    threshold: float | None = None,
    device: str = "auto",
    max_samples: int | None = None,
    baseline: bool = True,
) -> dict[str, Any]:
    """Evaluate a model file on each dataset and write ``evaluation.json``, figures and CSVs.

    Returns
    -------
    dict
        ``model`` (path, threshold, metadata summary) and ``datasets`` (name -> metrics).
    """
    from blobwatch.baseline import matched_filter_scores
    from blobwatch.classifier import resolve_device
    from blobwatch.dataset import SubframeDataset
    from blobwatch.modelfile import load_model
    from blobwatch.train import predict_scores

    dev = resolve_device(device, strict=True)
    mf = load_model(model, device=dev)
    thr = float(threshold if threshold is not None else mf.metadata.get("threshold", 0.5))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "model": {
            "path": mf.path,
            "threshold": thr,
            "architecture": mf.architecture,
            "dataset_manifest_sha256": mf.metadata.get("dataset_manifest_sha256"),
            "training": {
                k: mf.metadata.get("training", {}).get(k)
                for k in ("command", "epochs", "seconds", "hardware")
            },
        },
        "datasets": {},
    }
    for d in datasets:
        ds = SubframeDataset(d)
        n = len(ds) if max_samples is None else min(max_samples, len(ds))
        sub = _Samples(ds, np.arange(n))
        probs, loss = predict_scores(mf.model, sub, device=dev)
        meta = {k: v[:n] for k, v in ds.meta.items()}
        labels = ds.labels[:n]
        bscores = matched_filter_scores(ds.x[:n]) if baseline else None
        name = ds.manifest.get("name", Path(d).name)
        res = evaluate_scores(labels, probs, meta, thr, bscores)
        res["cnn"]["by_registration"] = registration_breakdown(ds.manifest, meta, labels, probs >= thr)
        if bscores is not None:
            bthr = res["matched_filter"]["threshold_sigma"]
            res["matched_filter"]["by_registration"] = registration_breakdown(
                ds.manifest, meta, labels, bscores >= bthr
            )
        res["cnn"]["level_sensitivity"] = level_sensitivity(mf.model, ds, n, thr, device=dev)
        res.update(path=str(d), loss=loss, manifest_generator=ds.manifest.get("generator_version"))
        report["datasets"][name] = res
        plot_confusion(
            res["cnn"], outdir / f"{name}_confusion.png", title=f"CNN on {name} (threshold {thr:.2f})"
        )
        plot_curves(res, outdir / f"{name}_roc_pr.png", title=name)
        _write_csv(
            outdir / f"{name}_misses.csv",
            [{"detector": k, **r} for k in ("cnn", "matched_filter") if k in res for r in res[k]["misses"]],
        )
        _write_csv(
            outdir / f"{name}_false_positives.csv",
            [
                {"detector": k, **r}
                for k in ("cnn", "matched_filter")
                if k in res
                for r in res[k]["false_positives"]
            ],
        )
        scores = {"labels": labels, "cnn": probs}
        if bscores is not None:
            scores["matched_filter"] = bscores
        np.savez(outdir / f"{name}_scores.npz", allow_pickle=False, **scores)
    slim = json.loads(json.dumps(report, default=float))
    for res in slim["datasets"].values():  # curves are in the figures and the .npz scores
        for k in ("cnn", "matched_filter"):
            if k in res:
                res[k].pop("roc", None)
                res[k].pop("pr", None)
    write_text_atomic(outdir / "evaluation.json", json.dumps(slim, indent=1) + "\n")
    return report


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: per dataset, CNN vs matched filter at the same false-positive rate."""
    lines = [f"model {report['model']['path']}  threshold {report['model']['threshold']:.3f}", ""]
    head = f"{'dataset':<13} {'detector':<15} {'TN':>6} {'FP':>6} {'TP':>6} {'FN':>6} {'ROC AUC':>8} {'AP':>6} {'FA/image':>9}"
    lines += [head, "-" * len(head)]
    for name, res in report["datasets"].items():
        for key, label in (("cnn", "CNN"), ("matched_filter", "matched filter")):
            if key not in res:
                continue
            r = res[key]
            lines.append(
                f"{name:<13} {label:<15} {r['tn']:6.3f} {r['fp']:6.3f} {r['tp']:6.3f} {r['fn']:6.3f} "
                f"{r['roc_auc']:8.4f} {r['average_precision']:6.3f} {r['false_alarms_per_image']:9.2f}"
            )
    lines += [
        "",
        "CNN false-positive / true-positive rate with whole subframes raised by a constant (noise sigma):",
    ]
    for name, res in report["datasets"].items():
        rows = res["cnn"].get("level_sensitivity", [])
        lines.append(
            f"{name:<13} "
            + "  ".join(f"{r['level_sigma']:+.2f}: {_rate(r['fp_rate'])}/{_rate(r['tp_rate'])}" for r in rows)
        )
    lines.append("")
    lines.append(
        "TN/FP: rates among non-blob subframes; TP/FN: among blob subframes; FA/image: FP rate x 16 "
        "subframes. The matched filter is thresholded at the CNN's false-positive rate."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Evaluation on the regression suite's whole-image cases (the daily job's input)
# --------------------------------------------------------------------------------------------

#: Difference images the subframes are cut from: the seed's plain median, and the registered one.
SUITE_PROTOCOLS = ("plain", "registered")


def subframe_truth(offsets: np.ndarray, blobs: Sequence[dict[str, Any]], size: int) -> dict[str, np.ndarray]:
    """Labels of ``size`` x ``size`` subframes at ``offsets`` (``(N, 2)`` of ``x0, y0``) given new blobs.

    Returns
    -------
    dict
        ``label`` (bool: the subframe holds a new blob's centre), ``partial`` (bool: it holds
        part of a blob, within its radius, but no blob's centre: counts neither way), ``snr``
        (float64: the largest matched-filter S/N of the blobs centred in it, NaN without one)
        and ``n_blobs`` (int: how many blob centres it holds).
    """
    n = len(offsets)
    if not blobs:
        return {
            "label": np.zeros(n, bool),
            "partial": np.zeros(n, bool),
            "snr": np.full(n, np.nan),
            "n_blobs": np.zeros(n, np.int64),
        }
    x0 = np.asarray(offsets[:, 0], np.float64)[:, None]
    y0 = np.asarray(offsets[:, 1], np.float64)[:, None]
    bx = np.array([float(b["x"]) for b in blobs])[None]
    by = np.array([float(b["y"]) for b in blobs])[None]
    radius = np.array([float(b["radius"]) for b in blobs])[None]
    snr = np.array([float(b.get("snr", np.nan)) for b in blobs])[None]
    inside = (bx >= x0) & (bx < x0 + size) & (by >= y0) & (by < y0 + size)
    gap = np.hypot(
        np.maximum(np.maximum(x0 - bx, bx - (x0 + size - 1)), 0.0),
        np.maximum(np.maximum(y0 - by, by - (y0 + size - 1)), 0.0),
    )
    label = inside.any(axis=1)
    with np.errstate(invalid="ignore"):
        best = np.where(inside, snr, -np.inf).max(axis=1)
    return {
        "label": label,
        "partial": ~label & (gap < radius).any(axis=1),
        "snr": np.where(label, best, np.nan),
        "n_blobs": inside.sum(axis=1),
    }


def case_subframes(
    case: Any, protocol: str, *, size: int, clip_factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The prepared subframes of one regression case and their labels.

    Parameters
    ----------
    case : blobwatch.regression.Case
        A whole-image case (blobs injected into the raw image; one in the suite, several in the
        training split's images).
    protocol : {'plain', 'registered'}
        Cut from the plain median difference (the seed's) or the registered one (the daily job's).
    size, clip_factor : int, float
        Subframe side and preparation clip factor of the model.

    Returns
    -------
    tiles : numpy.ndarray
        ``(N, size, size)`` float32 prepared subframes, row-major.
    label : numpy.ndarray
        ``(N,)`` bool: the subframe holds a new blob's centre.
    partial : numpy.ndarray
        ``(N,)`` bool: it holds part of a blob but no blob's centre (counts neither way).
    info : dict
        ``offsets`` (``(N, 2)`` ``x0, y0``), ``snr`` and ``n_blobs`` (`subframe_truth`).
    """
    from blobwatch.preprocess import prepare, tile

    diff = case.plain_difference if protocol == "plain" else case.difference
    tiles, offsets = tile(prepare(diff, clip_factor=clip_factor).data, size=size)
    blobs = case.truth.get("blobs") or ([case.blob] if case.blob is not None else [])
    truth = subframe_truth(offsets, blobs, size)
    info = {"offsets": offsets, "snr": truth["snr"], "n_blobs": truth["n_blobs"]}
    return tiles, truth["label"], truth["partial"], info


@dataclass
class SuiteSubframes:
    """Prepared subframes of whole-image cases, partial ones dropped (what `suite_subframes` gives).

    ``x`` is ``(N, size, size)`` float16 (half the memory; the network sees float32),
    ``label`` ``(N,)`` bool, ``seq`` the sequence seed, ``protocol`` 'plain' or 'registered',
    ``case`` the case's index in its sequence, ``offsets`` ``(N, 2)`` ``x0, y0`` in the image,
    ``snr`` the largest matched-filter S/N of the blobs centred in the subframe (NaN for a blank
    one) and ``n_blobs`` how many blob centres it holds.
    """

    x: np.ndarray
    label: np.ndarray
    seq: np.ndarray
    protocol: np.ndarray
    case: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    snr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_blobs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def suite_subframes(
    cases: Sequence[Any],
    *,
    size: int,
    clip_factor: float,
    protocols: Sequence[str] = SUITE_PROTOCOLS,
    progress: bool = False,
    desc: str = "subframes",
) -> SuiteSubframes:
    """Cut and prepare the 16 subframes of the plain and/or registered difference of every case.

    Prepared exactly as at inference (`case_subframes`).  Subframes holding part of a blob but no
    blob's centre are dropped (neither class), as in `evaluate_suite`.  This is what `blobwatch
    tune` scores on the calibration split, what the seed-protocol table scores on the suite, and
    what `blobwatch make-dataset --from-suite` writes from the training split.

    Raises
    ------
    blobwatch.errors.BlobwatchError
        If there are no cases.
    """
    from tqdm import tqdm

    from blobwatch.errors import BlobwatchError

    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("x", "label", "seq", "protocol", "case", "offsets", "snr", "n_blobs")
    }
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress):
        for protocol in protocols:
            tiles, label, partial, info = case_subframes(case, protocol, size=size, clip_factor=clip_factor)
            keep = ~partial
            n = int(keep.sum())
            parts["x"].append(tiles[keep].astype(np.float16))
            parts["label"].append(label[keep])
            parts["seq"].append(np.full(n, case.seed))
            parts["protocol"].append(np.full(n, protocol))
            parts["case"].append(np.full(n, case.index))
            parts["offsets"].append(info["offsets"][keep])
            parts["snr"].append(info["snr"][keep])
            parts["n_blobs"].append(info["n_blobs"][keep])
        case.release()
    if not parts["x"]:
        raise BlobwatchError("no cases to cut subframes from")
    return SuiteSubframes(**{k: np.concatenate(v) for k, v in parts.items()})


def suite_subframe_scores(
    cases: Sequence[Any], classifier: Any, *, progress: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """CNN probabilities and matched-filter scores of the 16 subframes of every case.

    Subframes are cut from the prepared plain and registered differences of the regression
    suite's cases (blobs injected into the raw images; nothing added after preparation).  A
    subframe is positive when it holds the new blob's centre.

    Returns
    -------
    dict
        Per protocol: ``seq`` (sequence seed of each subframe), ``label``, ``partial`` (holds part
        of the blob but not its centre: neither positive nor negative), ``cnn``, ``mf``.
    """
    from tqdm import tqdm

    from blobwatch.baseline import matched_filter_scores

    out: dict[str, dict[str, list[np.ndarray]]] = {
        p: {"seq": [], "label": [], "partial": [], "cnn": [], "mf": []} for p in SUITE_PROTOCOLS
    }
    for case in tqdm(cases, desc="subframes", unit="case", disable=not progress):
        for protocol in SUITE_PROTOCOLS:
            tiles, label, partial, _ = case_subframes(
                case, protocol, size=classifier.size, clip_factor=classifier.clip_factor
            )
            d = out[protocol]
            d["seq"].append(np.full(len(tiles), case.seed))
            d["label"].append(label)
            d["partial"].append(partial)
            d["cnn"].append(classifier.predict_proba(tiles).astype(np.float64))
            d["mf"].append(matched_filter_scores(tiles).astype(np.float64))
        case.release()
    return {p: {k: np.concatenate(v) for k, v in d.items()} for p, d in out.items()}


def _auc_with_ci(
    seq: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_boot: int = 300
) -> dict[str, float]:
    """ROC AUC and a 95 % bootstrap interval resampling sequences."""
    from sklearn.metrics import roc_auc_score

    uniq = np.unique(seq)
    groups = [np.flatnonzero(seq == s) for s in uniq]
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        if labels[idx].any() and not labels[idx].all():
            values.append(roc_auc_score(labels[idx], scores[idx]))
    lo, hi = np.quantile(values, [0.025, 0.975]) if values else (float("nan"), float("nan"))
    return {"auc": float(roc_auc_score(labels, scores)), "ci_low": float(lo), "ci_high": float(hi)}


def evaluate_suite(
    calibration: dict[str, dict[str, np.ndarray]], suite: dict[str, dict[str, np.ndarray]], threshold: float
) -> dict[str, Any]:
    """Subframe confusion rates of the CNN (at ``threshold``) and of the matched filter on the suite.

    Subframes that hold part of the blob but not its centre count neither way.  The matched
    filter's threshold is chosen on the calibration split, at the CNN's
    false-positive rate there (nothing is chosen on the suite).  Rates carry 95 % bootstrap
    intervals resampled by sequence; the two detectors are compared with McNemar's test on the
    positive and on the negative subframes.
    """
    from blobwatch.baseline import threshold_at_fpr
    from blobwatch.regression import mcnemar, rate_with_ci

    report: dict[str, Any] = {"threshold": float(threshold), "protocols": {}}
    for protocol in SUITE_PROTOCOLS:
        cal, s = calibration[protocol], suite[protocol]
        cal_neg = ~cal["label"] & ~cal["partial"]
        cal_fpr = float(np.mean(cal["cnn"][cal_neg] >= threshold))
        mf_thr = threshold_at_fpr(cal["mf"][cal_neg], cal_fpr)
        res: dict[str, Any] = {
            "subframes": int(s["label"].size),
            "positives": int(s["label"].sum()),
            "cnn_calibration_fpr": cal_fpr,
            "mf_threshold": float(mf_thr),
        }
        flags = {"cnn": s["cnn"] >= threshold, "mf": s["mf"] >= mf_thr}
        pos, neg = s["label"], ~s["label"] & ~s["partial"]
        for name, flag in flags.items():
            res[name] = {
                "tpr": rate_with_ci(s["seq"], flag, pos),
                "tnr": rate_with_ci(s["seq"], ~flag, neg),
                "roc_auc": _auc_with_ci(s["seq"], pos, s[name]),
            }
        res["mcnemar_positives"] = mcnemar(flags["cnn"][pos], flags["mf"][pos])
        res["mcnemar_negatives"] = mcnemar(~flags["cnn"][neg], ~flags["mf"][neg])
        report["protocols"][protocol] = res
    return report


def format_suite_table(report: dict[str, Any]) -> str:
    """Markdown table of `evaluate_suite`."""

    def cell(d: dict[str, Any]) -> str:
        return f"{d['rate']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"

    lines = [
        "| difference | detector | threshold | TPR [95 % CI] | TNR [95 % CI] | ROC AUC [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, res in report["protocols"].items():
        for name, thr in (("cnn", f"{report['threshold']:.3f}"), ("mf", f"{res['mf_threshold']:.2f} sigma")):
            r = res[name]
            auc = r["roc_auc"]
            lines.append(
                f"| {protocol} | {'PaperCNN' if name == 'cnn' else 'matched filter'} | {thr} | "
                f"{cell(r['tpr'])} | {cell(r['tnr'])} | {auc['auc']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}] |"
            )
    lines.append("")
    for protocol, res in report["protocols"].items():
        p, n = res["mcnemar_positives"], res["mcnemar_negatives"]
        lines.append(
            f"- {protocol}: {res['subframes']} subframes, {res['positives']} with the new blob. "
            f"Blob subframes found by the CNN only / the matched filter only: {p['a_only']} / {p['b_only']} "
            f"(McNemar p = {p['p_value']:.2g}); blank subframes passed by the CNN only / the matched "
            f"filter only: {n['a_only']} / {n['b_only']} (p = {n['p_value']:.2g})."
        )
    return "\n".join(lines)
