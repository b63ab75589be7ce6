"""Tables, figure and docs page of a regression run (I/O and plotting; the numbers come from
`blobwatch.regression`)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.regression import SNR_BINS, Case, DetectorScores, case_rows, iter_breakdowns, mcnemar

__all__ = ["DetectorRun", "comparisons", "composition", "markdown", "plot_detection", "write_outputs"]


@dataclass
class DetectorRun:
    """One detector's results: calibrated and native operating points on the suite."""

    name: str
    description: str
    calibrated: DetectorScores
    native: DetectorScores
    calibration: DetectorScores
    seconds_per_case: float


def composition(cases: Sequence[Case]) -> dict[str, Any]:
    """What the suite holds: counts by kind, placement, profile, S/N bin, noise model, ranges."""
    blobs = [c.blob for c in cases if c.blob]
    snr = np.array([b["snr"] for b in blobs])
    truth_noise: Counter[str] = Counter()
    seen = set()
    for c in cases:
        if c.seed not in seen:
            seen.add(c.seed)
            truth = json.loads((c.folder / "truth.json").read_text())
            truth_noise[truth["params"]["noise_model"]["kind"]] += 1
    t = [c.truth["transform"] for c in cases]
    return {
        "sequences": len(seen),
        "cases": len(cases),
        "blob_cases": len(blobs),
        "quiet_cases": len(cases) - len(blobs),
        "placements": dict(Counter(b["placement"] for b in blobs)),
        "profiles": dict(Counter(b["profile"] for b in blobs)),
        "stamps": dict(Counter(str(b["stamp"]) for b in blobs if b["stamp"] is not None)),
        "snr_bins": [int(np.sum((snr >= lo) & (snr < hi))) for lo, hi in SNR_BINS],
        "snr_range": [float(snr.min()), float(snr.max())] if snr.size else None,
        "noise_models": dict(truth_noise),
        "offset_px": [min(x["offset"] for x in t), max(x["offset"] for x in t)],
        "rotation_deg": [min(x["rotation_deg"] for x in t), max(x["rotation_deg"] for x in t)],
        "scale": [min(x["scale"] for x in t), max(x["scale"] for x in t)],
        "blur_px": [min(x["blur"] for x in t), max(x["blur"] for x in t)],
        "unregistered_references": int(sum(c.truth.get("unregistered_references", 0) for c in cases)),
    }


def comparisons(runs: Sequence[DetectorRun], baseline: str = "mf") -> list[dict[str, Any]]:
    """McNemar tests of every detector against ``baseline`` at the calibrated operating points:
    new blobs found (blob cases) and false alarms (quiet cases)."""
    base = next((r for r in runs if r.name == baseline), None)
    if base is None:
        return []
    out = []
    b = base.calibrated
    for r in runs:
        if r.name == baseline:
            continue
        a = r.calibrated
        blob = a.is_blob
        out.append(
            {
                "detector": r.name,
                "baseline": baseline,
                "detection": mcnemar(a.detected[blob], b.detected[blob]),
                "false_alarms": mcnemar(a.false_alarm[~blob], b.false_alarm[~blob]),
            }
        )
    return out


def _verdict(name: str, base: str, test: dict[str, Any], what: str, more: str, fewer: str) -> str:
    a, b, p = test["a_only"], test["b_only"], test["p_value"]
    if p < 0.05:
        word = more if a > b else fewer
        return f"`{name}` {word} {what} than `{base}` ({a} vs {b} discordant cases, McNemar p = {p:.2g})."
    return (
        f"`{name}` and `{base}` do not differ significantly in {what} ({a} vs {b} discordant cases, "
        f"McNemar p = {p:.2g})."
    )


def _fmt_rate(d: dict[str, Any]) -> str:
    if not d["n"]:
        return "-"
    return f"{d['rate']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}] ({d['n']})"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _bin_label(lo: float, hi: float) -> str:
    return f">= {lo:g}" if math.isinf(hi) else (f"< {hi:g}" if lo == 0 else f"{lo:g}-{hi:g}")


def _table(scores: Sequence[DetectorScores]) -> list[str]:
    head = ["detector", "threshold"] + [f"S/N {_bin_label(lo, hi)}" for lo, hi in SNR_BINS]
    head += ["all blobs", "false alarms / quiet image", "false cand. / image", "loc. median / p90 (px)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        d = s.summary()
        fa = d["false_alarm_ci"]
        cells = [f"`{s.detector}`", f"{s.threshold:.4g}"] + [_fmt_rate(b) for b in d["detection"]]
        cells += [
            _fmt_rate(d["detection_overall"]),
            f"{d['false_alarm_rate']:.2f} [{fa[0]:.2f}, {fa[1]:.2f}] ({d['quiet_images']})",
            f"{d['false_candidates_per_image']:.2f}",
            f"{_fmt(d['localization_median_px'])} / {_fmt(d['localization_p90_px'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_detection(runs: Sequence[DetectorRun], path: str | os.PathLike) -> None:
    """Detection rate vs matched-filter S/N bin, one curve per detector (calibrated), with the
    bootstrap intervals; the false-alarm rate in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    xs = np.arange(len(SNR_BINS))
    width = 0.8 / max(len(runs), 1)
    for k, r in enumerate(runs):
        d = r.calibrated.summary()
        rate = np.array([b["rate"] if b["n"] else np.nan for b in d["detection"]], dtype=float)
        lo = np.array([b["ci_low"] if b["n"] else np.nan for b in d["detection"]], dtype=float)
        hi = np.array([b["ci_high"] if b["n"] else np.nan for b in d["detection"]], dtype=float)
        x = xs - 0.4 + width * (k + 0.5)
        ax.errorbar(
            x,
            rate,
            yerr=[rate - lo, hi - rate],
            marker="o",
            capsize=3,
            label=f"{r.name} (false alarms {d['false_alarm_rate']:.2f}/quiet image)",
        )
    ax.set_xticks(xs, [_bin_label(lo, hi) for lo, hi in SNR_BINS])
    ax.set_xlabel("matched-filter S/N of the new blob")
    ax.set_ylabel("fraction of new blobs found")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Regression suite: detection at the calibrated thresholds (95% CI)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def markdown(
    runs: Sequence[DetectorRun],
    comp: dict[str, Any],
    calib: dict[str, Any],
    *,
    command: str,
    target: float,
    figure: str,
    seeds: dict[str, list[int]],
    timing: dict[str, float],
) -> str:
    """The docs page: how the suite is made, the tables, the tests, the breakdowns."""
    from blobwatch import __version__
    from blobwatch.variation import PLACEMENTS, PROFILES, VariationConfig

    v = VariationConfig()
    lines = [
        "# The regression suite",
        "",
        "<!-- Generated by `blobwatch regress --docs`; edit the generator, not this file. -->",
        "",
        f"Made by `{command}` (blobwatch {__version__}).",
        "",
        "## What it is",
        "",
        "Whole-image cases made the way the daily job receives them: each sequence is rendered by",
        "`blobwatch.variation` (references and several current images), new blobs are injected into",
        "the RAW current image, and the daily job's input is built from the raw images: the",
        "registered difference (`blobwatch difference`) and, for the seed's protocol, the plain",
        "median difference. Nothing is added after preparation. Per sequence and per case it varies",
        "what the detectors assume:",
        "",
        f"- CSM offset of the current blob pattern 0-{v.max_offset:g} px (uniform in length), plus a",
        f"  rotation (up to {v.max_rotation_deg:g} deg), scale change (up to {v.max_scale:g}) and defocus blur",
        f"  (up to {v.max_blur:g} px). A third of the sequences keep to translations; the others draw their",
        "  largest rotation and scale change log-uniformly over two decades up to those limits, and each",
        "  case draws within its sequence's limits (uniform). The daily job registers translations of up",
        "  to 3 px only: a reference further off is used unaligned, as it would be;",
        "- noise white, correlated pixel to pixel (Gaussian kernel 0.5-1.5 px) or 1/f-like (slope",
        "  0.5-1.5, 20-60 % of the variance), a structured flat-field residual (correlation 3-30 px,",
        "  0.05-0.5 %, 0-30 % of it changed since the references) and a changed illumination gradient;",
        "- new blobs placed " + ", ".join(f"{k} ({w:.0%})" for k, w in PLACEMENTS.items()) + ";",
        "  'edge' = centre 1-12 px inside the 5-px border, 'corner' = within 3 px of a subframe corner,",
        "  'overlap' = centre within 0.6 radius of an existing blob, 'touching' = rims touching,",
        "  'artifact' = beside a snowball;",
        "- profiles "
        + ", ".join(f"{k} ({w:.0%})" for k, w in PROFILES.items())
        + f"; 'stamp' uses only the real stamps held out of training ({', '.join(map(str, v.stamps))});",
        f"- depth set for a target matched-filter S/N of {v.snr_range[0]:g}-{v.snr_range[1]:g} (log-uniform,",
        f"  central loss at most {v.max_depth:.0%}); the S/N used below is measured: depth x the root",
        "  sum of squares of the unit-depth signal / the robust noise of the case's difference.",
        "",
        "A candidate finds the blob when it lies within max(4 px, blob radius) of its centre (for the",
        "seed's subframe protocol: when the flagged subframe contains the centre). A quiet image with",
        "any candidate is a false alarm. Intervals are 95 % percentile bootstraps resampled by",
        "sequence (2,000 draws). Comparisons are exact McNemar tests on the paired cases.",
        "",
        "## Composition",
        "",
        f"- Suite: {comp['sequences']} sequences (seeds {seeds['suite'][0]}-{seeds['suite'][-1]}), "
        f"{comp['cases']} cases: {comp['blob_cases']} with one new blob, {comp['quiet_cases']} quiet.",
        f"- Calibration split: {calib['sequences']} sequences (seeds {seeds['calibration'][0]}-"
        f"{seeds['calibration'][-1]}), {calib['cases']} cases ({calib['quiet_cases']} quiet). Thresholds are",
        "  chosen there only; the seed ranges of suite, calibration and training never overlap (tested,",
        "  `blobwatch.variation.SPLIT_SEEDS`). Nothing is tuned on the suite.",
        "- New blobs by S/N bin: "
        + ", ".join(
            f"{_bin_label(lo, hi)}: {n}" for (lo, hi), n in zip(SNR_BINS, comp["snr_bins"], strict=True)
        )
        + (f" (range {comp['snr_range'][0]:.1f}-{comp['snr_range'][1]:.1f})." if comp["snr_range"] else "."),
        "- Placements: "
        + ", ".join(f"{k} {n}" for k, n in sorted(comp["placements"].items()))
        + "; profiles: "
        + ", ".join(f"{k} {n}" for k, n in sorted(comp["profiles"].items()))
        + ".",
        "- Noise models (sequences): "
        + ", ".join(f"{k} {n}" for k, n in sorted(comp["noise_models"].items()))
        + ".",
        f"- Offsets {comp['offset_px'][0]:.2f}-{comp['offset_px'][1]:.2f} px, rotations "
        f"{comp['rotation_deg'][0]:.3f} to {comp['rotation_deg'][1]:.3f} deg, scale {comp['scale'][0]:.4f}-"
        f"{comp['scale'][1]:.4f}, blur {comp['blur_px'][0]:.2f}-{comp['blur_px'][1]:.2f} px; "
        f"{comp['unregistered_references']} reference registrations failed (used unaligned, as the daily job does).",
        "",
        f"## Results at the calibrated thresholds (false-alarm target {target:g} per quiet image)",
        "",
        "Each cell: rate [95 % CI] (number of cases).",
        "",
        *_table([r.calibrated for r in runs]),
        "",
        f"![detection vs S/N]({figure})",
        "",
        *[
            f"`{r.name}`'s threshold of {r.calibrated.threshold:g}, above any probability, means that no "
            "threshold met the target on the calibration split: it is shown never alarming, and finding nothing."
            for r in runs
            if r.native.threshold <= 1.0 < r.calibrated.threshold
        ],
        "",
        "On the calibration split these thresholds gave: "
        + "; ".join(
            f"`{r.name}` {r.calibration.summary()['false_alarm_rate']:.2f} false alarms per quiet image, "
            f"{r.calibration.summary()['detection_overall']['rate']:.2f} of blobs found"
            for r in runs
        )
        + ".",
        "",
        "## Results at today's thresholds (what the daily job uses now)",
        "",
        *_table([r.native for r in runs]),
        "",
        "## Paired comparisons against the matched filter (calibrated thresholds)",
        "",
    ]
    tests = comparisons(runs)
    if not tests:
        lines.append("The matched filter (`mf`) was not run, so there is no paired comparison.")
    for t in tests:
        lines.append(
            "- "
            + _verdict(t["detector"], t["baseline"], t["detection"], "new blobs", "finds more", "finds fewer")
        )
        lines.append(
            "- "
            + _verdict(
                t["detector"],
                t["baseline"],
                t["false_alarms"],
                "false alarms on quiet images",
                "raises more",
                "raises fewer",
            )
        )
    lines += ["", "## Where detectors break (calibrated thresholds)", ""]
    for r in runs:
        lines += [
            f"### `{r.name}`: {r.description}",
            "",
            "| group | value | rate [95 % CI] (n) |",
            "|---|---|---|",
        ]
        for group, label, d in iter_breakdowns(r.calibrated):
            lines.append(f"| {group} | {label} | {_fmt_rate(d)} |")
        rows = case_rows(r.calibrated)
        misses = Counter(c for row in rows for c in row["miss_causes"].split(";") if c)
        alarms = Counter(
            c for row in rows if row["kind"] == "quiet" for c in row["false_alarm_causes"].split(";") if c
        )
        lines += [
            "",
            "Causes named in the per-case table: misses "
            + (", ".join(f"{k} {n}" for k, n in misses.most_common()) or "none")
            + "; false alarms on quiet images "
            + (", ".join(f"{k} {n}" for k, n in alarms.most_common()) or "none")
            + ". (A miss can have several causes; 'offset' = offset or non-translational change above "
            "1 px; a false alarm is named after the nearest structure.)",
            "",
        ]
    lines += ["## Speed", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timing.items()]
    lines += [
        "",
        "Per-case outcomes with causes: `cases.csv` in the run folder; all scores: `scores.json`.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, runs: Sequence[DetectorRun], payload: dict[str, Any]) -> None:
    """``scores.json``, ``cases.csv`` and the figure in ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scores.json", json.dumps(payload, indent=1))
    rows = [row for r in runs for s in (r.calibrated, r.native) for row in case_rows(s)]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(out / "cases.csv", buf.getvalue())
    plot_detection(runs, out / "detection_vs_snr.png")
