"""The files a `blobwatch tune` worker leaves in its run folder.

``trials.csv`` and ``trials.md`` (one row per trial: state, objective, parameters, weights,
seconds), ``importance.json`` and ``importance.png`` (fANOVA parameter importances from
`optuna.importance`, drawn with matplotlib) and ``best.json`` (what ``blobwatch train --params``
reads).  `trial_rows` and `parameter_importance` compute; the ``write_*`` and ``plot_*``
functions only format and write.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from blobwatch.atomic import write_text_atomic

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"
IMPORTANCE_JSON = "importance.json"
IMPORTANCE_PNG = "importance.png"
BEST_JSON = "best.json"
#: Columns of the trial table before the parameters.
HEAD = ("number", "state", "value", "auc", "tpr_at_tnr", "epoch", "weights", "seconds", "note")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One plain row per trial, best value first, then unfinished ones by number."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        note = ua.get("baseline") or ua.get("pruned_because") or ""
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        if retried is not None:
            note = (note + "; " if note else "") + f"retry of trial {retried} (its worker died)"
        steps = t.intermediate_values
        value = (
            t.value if t.value is not None else (steps[max(steps)] if steps else None)
        )  # pruned: last epoch
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": value,
                "auc": ua.get("auc"),
                "tpr_at_tnr": ua.get("tpr_at_tnr"),
                "epoch": ua.get("epoch"),
                "weights": ua.get("weights"),
                "seconds": ua.get("seconds"),
                "note": note,
                **{f"param_{k}": v for k, v in sorted(t.params.items())},
            }
        )
    order = {"complete": 0, "pruned": 1}
    rows.sort(
        key=lambda r: (
            order.get(r["state"], 2),
            -(r["value"] if r["value"] is not None and r["state"] == "complete" else -1),
            r["number"],
        )
    )
    return rows


def parameter_importance(study: Any) -> dict[str, float]:
    """fANOVA importance of each parameter for the objective (sums to 1); {} with < 3 completed trials."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    try:
        ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=ev).items()}
    except (ValueError, RuntimeError) as exc:  # e.g. every completed trial has the same value
        log.warning("no parameter importance: %s", exc)
        return {}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The trial rows as CSV text."""
    fields = list(HEAD) + sorted({k for r in rows for k in r if k.startswith("param_")})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k)) for k in fields})
    return buf.getvalue()


def rows_markdown(rows: list[dict[str, Any]], study_name: str, objective: str) -> str:
    """The trial rows as a Markdown table with a title line."""
    params = sorted({k for r in rows for k in r if k.startswith("param_")})
    cols = ["number", "state", "value", "auc", "tpr_at_tnr", "epoch", "weights", "seconds", *params, "note"]
    names = [c.removeprefix("param_") for c in cols]
    names[2] = "partial AUC" if objective.startswith("standardized partial") else "objective"
    names[4] = "TPR@TNR>=0.97"
    lines = [
        f"# Study {study_name}",
        "",
        f"Objective: {objective}. Best first.",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_importance(importance: dict[str, float], path: str | os.PathLike, title: str) -> None:
    """Horizontal bar chart of parameter importances (PNG)."""
    from blobwatch.figures import new_figure, save_png

    names = list(importance)[::-1]
    fig = new_figure(6.5, 0.35 * len(names) + 1.2, layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set(xlabel="fANOVA importance (share of the objective's variance)", title=title, xlim=(0, 1))
    save_png(fig, path, dpi=110)


def write_report(study: Any, cfg: Any) -> dict[str, Path]:
    """Write the trial table, importances, figure and ``best.json`` of ``study`` to ``cfg.outdir``."""
    from blobwatch.tune import best_params

    out = Path(cfg.outdir)
    objective = str(study.user_attrs.get("objective", "objective"))
    rows = trial_rows(study)
    written = {"csv": out / TRIALS_CSV, "markdown": out / TRIALS_MD, "best": out / BEST_JSON}
    write_text_atomic(written["csv"], rows_csv(rows))
    write_text_atomic(written["markdown"], rows_markdown(rows, study.study_name, objective))
    write_text_atomic(written["best"], json.dumps(best_params(study, cfg), indent=1) + "\n")
    importance = parameter_importance(study)
    if importance:
        written["importance"] = out / IMPORTANCE_JSON
        write_text_atomic(written["importance"], json.dumps(importance, indent=1) + "\n")
        written["figure"] = out / IMPORTANCE_PNG
        plot_importance(
            importance, written["figure"], f"study {study.study_name}: what the objective depends on"
        )
    return written
