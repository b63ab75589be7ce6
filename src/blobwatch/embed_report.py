"""Figures and tables of an embedding study (plotting and I/O; the numbers come from
`blobwatch.embed`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from blobwatch.embed import Embedding, FeatureSet
from blobwatch.subframes import CAUSES

__all__ = ["plot_embedding", "results_table"]

_CAUSE_COLOURS = {
    "blob": "tab:red",
    "dip": "tab:blue",
    "cosmic_ray": "tab:green",
    "snowball": "tab:purple",
    "edge": "tab:orange",
    "none": "0.75",
}


def plot_embedding(
    embeddings: Sequence[Embedding],
    sets: dict[str, FeatureSet],
    path: str | os.PathLike,
    *,
    show: str = "suite",
) -> None:
    """One figure of one method: a row per feature kind, coloured by class (left) and by cause
    (right), of the ``show`` set's subframes (training subframes in light grey behind)."""
    from blobwatch.figures import new_figure, save_png

    names = list(sets)
    fig = new_figure(10, 4.2 * len(embeddings), dpi=90, layout="constrained")
    axes = fig.subplots(len(embeddings), 2, squeeze=False)
    for row, emb in zip(axes, embeddings, strict=True):
        coords = emb.others[names.index(show)] if show in names else emb.train
        fs = sets[show]
        for ax in row:
            ax.scatter(emb.train[:, 0], emb.train[:, 1], s=2, c="0.9", label="training", rasterized=True)
        blob = fs.label == 1
        row[0].scatter(
            *coords[~blob, :2].T,
            s=3,
            c="tab:blue",
            label=f"no new blob ({int((~blob).sum())})",
            rasterized=True,
        )
        row[0].scatter(
            *coords[blob, :2].T, s=8, c="tab:red", label=f"new blob ({int(blob.sum())})", rasterized=True
        )
        for cause in CAUSES[::-1]:
            m = fs.cause == cause
            if m.any():
                row[1].scatter(
                    *coords[m, :2].T,
                    s=8 if cause != "none" else 3,
                    c=_CAUSE_COLOURS[cause],
                    label=f"{cause} ({int(m.sum())})",
                    rasterized=True,
                )
        row[0].set_title(f"{emb.method.upper()} of {emb.feature} features: class ({show})")
        row[1].set_title(f"{emb.method.upper()} of {emb.feature} features: cause ({show})")
        for ax in row:
            ax.legend(fontsize=7, markerscale=2, loc="best")
            ax.set_xticks([])
            ax.set_yticks([])
    save_png(fig, path)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def results_table(results: Sequence[dict[str, Any]], sets: Sequence[str]) -> list[str]:
    """Markdown rows: ROC AUC and average precision per set for every embedding classifier."""
    head = ["method", "features", "classifier", "seconds"]
    for s in sets:
        head += [f"{s} ROC AUC", f"{s} AP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["method"], r["feature"], r["classifier"], f"{r['seconds']:.1f}"]
        for s in sets:
            cells += [_fmt(r[s]["roc_auc"]), _fmt(r[s]["average_precision"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
