"""``blobwatch tune``: hyperparameter search over the PaperCNN family (Optuna; see docs/tune.md)."""

from __future__ import annotations

import argparse
from typing import Any

from blobwatch.cli.train import _count, _number


def register(subparsers: Any) -> None:
    """Add the ``tune`` command."""
    p = subparsers.add_parser(
        "tune",
        help="hyperparameter search for the PaperCNN family (Optuna; needs blobwatch[research])",
        description="Search convolutional layers, filters, kernel size, pooling, neurons, dropout, batch size, "
        "epochs, learning rate and the Adam-to-SGD switch epoch. Each trial trains on DATASET; the "
        "objective is the standardized partial ROC AUC (false-positive rate <= 0.05) on the "
        "subframes of the regression suite's calibration split, never the suite. Weak trials are "
        "pruned after any epoch. The study lives in --storage: run the same command on several "
        "machines with a PostgreSQL URL to share it. Writes trials.csv, trials.md, "
        "importance.png and best.json (for `blobwatch train --params`) to --out. See docs/tune.md.",
    )
    p.add_argument(
        "dataset",
        nargs="?",
        default=None,
        help="training dataset (from make-dataset) of the PaperCNN family, e.g. datasets/sky1/train; "
        "not used by --family fcn",
    )
    p.add_argument(
        "--family",
        choices=("papercnn", "fcn"),
        default="papercnn",
        help="papercnn: the PaperCNN family on DATASET (default); fcn: the localizing network's knobs "
        "(width, depth, learning rate, blob-pixel weight, patch, peak smoothing, epochs), each trial "
        "trained on --training-sequences of the training split and scored by its detection rate on the "
        "calibration split",
    )
    p.add_argument(
        "--training-sequences",
        type=_count(2),
        default=12,
        help="--family fcn: training-split sequences per trial (default 12)",
    )
    p.add_argument("--out", default="runs/tune", help="run folder (default runs/tune)")
    p.add_argument(
        "--storage",
        metavar="URL",
        default=None,
        help="study database: sqlite:///PATH or postgresql://user:password@host/db "
        "(default sqlite:///OUT/tune.db)",
    )
    p.add_argument(
        "--study", metavar="NAME", default=None, help="study name (default: the family, papercnn or fcn)"
    )
    p.add_argument(
        "--trials",
        type=_count(1),
        default=20,
        help="finished (complete or pruned) trials the study should reach, all workers together (default 20)",
    )
    p.add_argument(
        "--timeout",
        type=_number(1.0),
        default=None,
        metavar="S",
        help="stop this worker after S seconds (the running trial finishes first)",
    )
    p.add_argument("--max-epochs", type=_count(1), default=6, help="upper end of the epochs knob (default 6)")
    p.add_argument(
        "--max-samples",
        type=_count(0),
        default=2000,
        help="training samples per epoch (default 2000; 0: all)",
    )
    p.add_argument(
        "--max-weights",
        type=_count(1),
        default=4_000_000,
        help="prune networks with more weights before training (default 4,000,000)",
    )
    p.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="pruning rule on the per-epoch objective (default median)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    p.add_argument(
        "--calibration-sequences",
        type=_count(1),
        default=12,
        help="calibration split sequences, 10 cases each (default 12, as blobwatch regress)",
    )
    p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="regression case cache (default $BLOBWATCH_CACHE/regression or ~/.cache/blobwatch/regression)",
    )
    p.add_argument(
        "--heartbeat",
        type=_count(1),
        default=60,
        help="seconds between heartbeats; a trial silent for twice as long (a killed worker) is "
        "failed and retried (default 60)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # small calibration images for tests
    p.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--references", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--cases-per-sequence", type=int, default=10, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``blobwatch tune``."""
    from pathlib import Path

    from blobwatch.cli.regress import default_cache
    from blobwatch.errors import BlobwatchError
    from blobwatch.tune import TuneConfig, require_optuna, run_worker
    from blobwatch.tune_report import BEST_JSON, IMPORTANCE_PNG, TRIALS_MD

    require_optuna()  # one line naming the extra, before any work
    if args.family == "papercnn" and not args.dataset:
        raise BlobwatchError("tune needs a training dataset (from make-dataset), or --family fcn")
    cfg = TuneConfig(
        family=args.family,
        training_sequences=args.training_sequences,
        dataset=args.dataset or "",
        outdir=args.out,
        storage=args.storage,
        study=args.study or args.family,
        trials=args.trials,
        timeout=args.timeout,
        seed=args.seed,
        max_epochs=args.max_epochs,
        max_samples=args.max_samples or None,
        max_parameters=args.max_weights,
        pruner=args.pruner,
        heartbeat=args.heartbeat,
        calibration_sequences=args.calibration_sequences,
        cache=str(Path(args.cache) if args.cache else default_cache()),
        variation={"size": args.size, "n_references": args.references, "cases": args.cases_per_sequence},
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
    )
    study = run_worker(cfg)
    best = study.best_trial
    if cfg.family == "fcn":
        print(f"study {cfg.study}: {len(study.trials)} trials; best trial {best.number}: {best.value:.4f}")
        print(f"train the winner: blobwatch train-fcn --params {Path(cfg.outdir) / BEST_JSON}")
        return 0
    print(
        f"study {cfg.study}: {len(study.trials)} trials; best trial {best.number}: partial AUC "
        f"{best.value:.4f}, AUC {best.user_attrs.get('auc', float('nan')):.4f}, "
        f"TPR {best.user_attrs.get('tpr_at_tnr', float('nan')):.3f} at TNR>=0.97"
    )
    baseline = [t for t in study.trials if t.user_attrs.get("baseline") and t.value is not None]
    if baseline:
        print(f"seed architecture (trial {baseline[0].number}): partial AUC {baseline[0].value:.4f}")
    out = Path(cfg.outdir)
    print(
        f"written: {out / TRIALS_MD}, {out / BEST_JSON}"
        + (f", {out / IMPORTANCE_PNG}" if (out / IMPORTANCE_PNG).is_file() else "")
    )
    print(f"train the winner: blobwatch train {cfg.dataset} --params {out / BEST_JSON}")
    return 0
