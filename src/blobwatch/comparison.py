"""One table of every detection method on the regression suite (``blobwatch compare``).

Each method is a registered regression detector (`blobwatch.regression`) with its options; it is
calibrated on the calibration split and scored on the suite exactly as ``blobwatch regress`` does
(`blobwatch.cli.regress.evaluate_detector`).  Beside the detection rates this module gathers
what it cost: training time (from the model file's metadata), inference time per image
(measured here), model size (file bytes and stored numbers), and what each misses (the causes
of the per-case table, `blobwatch.regression.case_rows`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.regression import SNR_BINS, case_rows

__all__ = ["Method", "MethodResult", "default_methods", "markdown", "misses", "model_file", "model_size"]


@dataclass
class Method:
    """A row of the comparison: a label, the registered detector and its options."""

    label: str
    detector: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class MethodResult:
    """What a method did (``run`` is None when it could not be run, with ``skipped`` saying why)."""

    method: Method
    run: Any = None
    model_path: str | None = None
    model_bytes: int | None = None
    parameters: int | None = None
    training_seconds: float | None = None
    training_command: str | None = None
    skipped: str | None = None


def default_methods(
    *,
    tuned_model: str | None = None,
    ae_model: str | None = None,
    embed_model: str | None = None,
    fcn_model: str | None = None,
    paper_model: str | None = None,
    sky_model: str | None = None,
) -> list[Method]:
    """The rows of docs/comparison.md (the tuned network only when a model file is given; the
    PaperCNN trained on the sky-like set, ``make-dataset --from-suite``, only when ``sky_model`` is)."""
    tuned = Method(
        "tuned network",
        "paper",
        {"model": tuned_model},
        ""
        if tuned_model
        else "no --tuned-model given (a model file from `blobwatch tune` + `blobwatch train --params`)",
    )
    sky = [Method("PaperCNN, sky-like training", "paper", {"model": sky_model})] if sky_model else []
    return [
        Method("PaperCNN (seed architecture, shipped model)", "paper", {"model": paper_model}),
        *sky,
        tuned,
        Method("autoencoder", "autoencoder", {"ae_model": ae_model}),
        Method("best embedding classifier", "embed", {"embed_model": embed_model}),
        Method("default detector (BlobUNet)", "fcn", {"fcn_model": fcn_model}),
        Method("matched filter", "mf", {}),
    ]


def model_file(det: Any) -> tuple[str | None, dict[str, Any]]:
    """The model file a detector loaded and its metadata (None, {} for the matched filter)."""
    for attr, path_attr in (("_classifier", "model_path"), ("_fcn", "path"), ("_scorer", "path")):
        inner = getattr(det, attr, None)
        if inner is not None:
            path = getattr(inner, path_attr, None)
            return (str(path) if path is not None else None), dict(getattr(inner, "metadata", {}) or {})
    clf = getattr(det, "_clf", None)
    if clf is not None:
        from blobwatch.embed import shipped_embedding_path

        return str(det.model or shipped_embedding_path()), dict(clf.metadata)
    return None, {}


def model_size(path: str | None) -> tuple[int | None, int | None]:
    """File bytes and stored numbers (weights, or arrays of an ``.npz``) of a model file."""
    if path is None:
        return None, None
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as f:
            return p.stat().st_size, int(sum(f[k].size for k in f.files if k != "header"))
    from blobwatch.modelfile import load_model

    loaded = load_model(p)
    return p.stat().st_size, int(sum(t.numel() for t in loaded.model.state_dict().values()))


def training_info(metadata: dict[str, Any]) -> tuple[float | None, str | None]:
    """Training seconds and command recorded in a model file's metadata.

    A fine-tuned model's seconds include those of the model it started from
    (``init_training_seconds``), so the table shows what it cost to make from scratch.
    """
    training = metadata.get("training") or {}
    seconds = next(
        (
            v
            for v in (
                training.get("seconds"),
                training.get("train_seconds"),
                metadata.get("seconds"),
                metadata.get("train_seconds"),
            )
            if isinstance(v, (int, float))
        ),
        None,
    )
    command = metadata.get("command") or training.get("command")
    before = metadata.get("init_training_seconds")
    if seconds is not None and isinstance(before, (int, float)):
        seconds += before
    return (float(seconds) if seconds is not None else None), command


def misses(run: Any) -> dict[str, Any]:
    """From the per-case rows at the calibrated threshold: missed blobs per S/N bin, miss
    causes, false-alarm causes on quiet images, and the placements/profiles of the misses."""
    rows = case_rows(run.calibrated)
    blob_rows = [r for r in rows if r["kind"] == "blob"]
    missed = [r for r in blob_rows if r["detected"] == 0]
    per_bin = []
    for lo, hi in SNR_BINS:
        inside = [r for r in blob_rows if lo <= float(r["snr"]) < hi]
        per_bin.append((sum(r["detected"] == 0 for r in inside), len(inside)))
    return {
        "missed": len(missed),
        "blobs": len(blob_rows),
        "per_bin": per_bin,
        "causes": Counter(c for r in missed for c in r["miss_causes"].split(";") if c),
        "placements": Counter(r["placement"] for r in missed),
        "profiles": Counter(r["profile"] for r in missed),
        "false_alarm_causes": Counter(
            c for r in rows if r["kind"] == "quiet" for c in r["false_alarm_causes"].split(";") if c
        ),
    }


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in c.most_common()) or "none"


def _fmt(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    return f"{nbytes / 1024:.0f} KB" if nbytes < 1024**2 else f"{nbytes / 1024**2:.1f} MB"


def markdown(
    results: Sequence[MethodResult],
    *,
    command: str,
    target: float,
    comp: dict[str, Any],
    calib: dict[str, Any],
    seeds: dict[str, list[int]],
    threads: int,
    figure: str | None,
    commands: dict[str, str],
) -> str:
    """docs/comparison.md."""
    from blobwatch import __version__
    from blobwatch.regression_report import _bin_label, _table

    ran = [r for r in results if r.run is not None]
    lines = [
        "# Every method on the regression suite",
        "",
        "<!-- Generated by `blobwatch compare`; edit the generator (blobwatch/comparison.py), not this file. -->",
        "",
        f"Made by `{command}` (blobwatch {__version__}).",
        "",
        (
            f"Suite: {comp['sequences']} sequences (seeds {seeds['suite'][0]}-{seeds['suite'][-1]}), {comp['cases']} "
            f"whole-image cases ({comp['blob_cases']} with one new blob, {comp['quiet_cases']} quiet); thresholds "
            f"calibrated on {calib['sequences']} calibration sequences (seeds {seeds['calibration'][0]}-"
            f"{seeds['calibration'][-1]}, {calib['cases']} cases) to {target:g} false alarms per quiet image, never on "
            "the suite. What a case is, how a candidate finds a blob and how intervals are made: docs/regression.md."
        ),
        "",
        "## Detection vs S/N and false alarms (calibrated thresholds)",
        "",
        (
            "Each cell: rate [95 % CI] (number of cases). The detector names are those of "
            "`blobwatch regress --detector`; the method of each is in the next table."
        ),
        "",
        *_table([r.run.calibrated for r in ran]),
        "",
    ]
    if figure:
        lines += [f"![detection vs S/N]({figure})", ""]
    for r in ran:
        if r.run.native.threshold <= 1.0 < r.run.calibrated.threshold:
            lines += [
                (
                    f"`{r.run.name}`'s threshold of {r.run.calibrated.threshold:g}, above any probability, means "
                    "that no threshold met the target on the calibration split: it never alarms, and finds nothing."
                ),
                "",
            ]
    lines += [
        f"## Cost (inference on {threads} CPU threads, this machine)",
        "",
        "| method | detector | training time | inference per image (s) | model size | stored numbers | model file |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = f"`{r.run.name}`" if r.run is not None else "-"
        train = (
            "none (no training)"
            if r.method.detector == "mf"
            else (_fmt(r.training_seconds, "{:.0f} s") if r.training_seconds is not None else "not recorded")
        )
        lines.append(
            f"| {r.method.label} | {name} | {train if r.run is not None else '-'} | "
            f"{_fmt(r.run.seconds_per_case) if r.run is not None else '-'} | {_size(r.model_bytes)} | "
            f"{r.parameters if r.parameters is not None else '-'} | "
            f"{Path(r.model_path).name if r.model_path else '-'} |"
        )
    lines += [
        "",
        (
            "Training time is what the model file records (each on its own machine and data: see its "
            "command below; a fine-tuned model's includes the model it started from); inference time is measured here on the suite, per whole 1024x1024 image, "
            "preparation included."
        ),
        "",
    ]
    lines += ["## What each misses (calibrated thresholds, from the per-case table)", ""]
    head = ["method"] + [f"missed, S/N {_bin_label(lo, hi)}" for lo, hi in SNR_BINS]
    head += ["miss causes", "missed placements", "missed profiles", "false-alarm causes (quiet images)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ran:
        m = misses(r.run)
        cells = [r.method.label] + [f"{a} of {n}" if n else "-" for a, n in m["per_bin"]]
        cells += [
            _counts(m["causes"]),
            _counts(m["placements"]),
            _counts(m["profiles"]),
            _counts(m["false_alarm_causes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "A miss can have several causes ('faint' = S/N < 5, 'edge', 'overlap', 'artifact', 'offset' = "
            "misregistration above 1 px); a false alarm is named after the nearest structure ('subframe' for "
            "the subframe methods, which flag a 256x256 box and give no position). Per-case outcomes: "
            "`cases.csv` in the run folder."
        ),
        "",
    ]
    skipped = [r for r in results if r.run is None]
    if skipped:
        lines += ["## Not run", ""]
        lines += [f"- {r.method.label}: {r.skipped}" for r in skipped]
        lines.append("")
    lines += ["## The commands that made them", "", "```sh"]
    lines += [f"# {label}\n{cmd}" for label, cmd in commands.items()]
    lines += ["```", ""]
    for r in results:
        if r.training_command:
            lines.append(f"- {r.method.label}: model trained by `{r.training_command}`")
    lines.append("")
    return "\n".join(lines)
