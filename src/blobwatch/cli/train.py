"""``blobwatch make-dataset``, ``blobwatch train`` and ``blobwatch evaluate``.

Heavy libraries (torch, numpy, scipy, matplotlib, astropy) are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from blobwatch.cli.regress import add_suite_options, suite_specs
from blobwatch.errors import BlobwatchError


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_calibrated_training_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that train a detector on the training split and choose its
    threshold on the calibration split (``train-fcn``, ``train-autoencoder``)."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--target-false-alarm",
        type=_number(0.0, 0.99),
        default=0.02,
        metavar="F",
        help="false alarms per quiet calibration image the threshold is set to (default 0.02)",
    )
    p.add_argument(
        "--calibration-sequences", type=_count(1), default=12, help="calibration sequences (default 12)"
    )
    p.add_argument("--cache", metavar="DIR", default=None, help="case cache (default: the regression cache)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _number(low: float, high: float = math.inf) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            upper = "" if high == math.inf else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}{upper}, got {text}")
        return value

    return parse


def register(subparsers: Any) -> None:
    """Add the dataset, training and evaluation commands."""
    p = subparsers.add_parser(
        "make-dataset",
        help="generate training/validation/test subframe datasets",
        description="Simulate non-blob difference images (plus any FILES given), cut 256x256 "
        "subframes (training: left 75%%, validation: right 25%%), superimpose blobs on "
        "half of them and write four streaming datasets with manifests: train, val, "
        "test_images (unseen simulation seeds) and test_stamps (held-out stamps).",
    )
    p.add_argument("outdir", help="output directory (e.g. datasets/v3)")
    p.add_argument("files", nargs="*", help="extra real non-blob difference images (FITS) for training")
    p.add_argument(
        "--n-train", type=_count(0), default=16000, help="training samples (default: the seed's 16000)"
    )
    p.add_argument("--n-val", type=_count(0), default=4000, help="validation samples (default 4000)")
    p.add_argument("--n-test", type=_count(0), default=4000, help="samples in each test set (default 4000)")
    p.add_argument("--seed", type=int, default=33, help="master random seed (default 33)")
    p.add_argument("--train-seeds", type=_ints, default=None, help="simulation seeds of training images")
    p.add_argument("--test-seeds", type=_ints, default=None, help="simulation seeds of unseen test images")
    p.add_argument(
        "--heldout-stamps",
        type=_ints,
        default=None,
        help="real stamp ids kept out of training (default 4,8,12,16,20)",
    )
    p.add_argument(
        "--stamps", default=None, help="blob stamp FITS (default: the 20 real stamps shipped in the package)"
    )
    p.add_argument("--clip-factor", type=float, default=0.5, help="preparation clip factor (default 0.5)")
    p.add_argument(
        "--distractor-fraction",
        type=_number(0.0, 1.0),
        default=0.5,
        help="fraction of training subframes (both classes) given dark distractors "
        "like persistence or trails (default 0.5; 0 for the seed's recipe)",
    )
    p.add_argument(
        "--pedestal-sigma",
        type=_number(0.0),
        default=0.3,
        help="sigma of the random pedestal and gradient (noise sigma) added to every "
        "training subframe (default 0.3; 0 for the seed's recipe)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "sky-like training set (--from-suite)",
        "Write OUTDIR/train and OUTDIR/val from the regression generator's training split instead "
        "(blobs injected into the raw images, offsets 0-3 px, non-translational changes, correlated "
        "noise): the prepared subframes of the plain and registered difference of every case, cut as "
        "the calibration split is. See docs/training.md.",
    )
    g.add_argument(
        "--from-suite",
        action="store_true",
        help="make the sky-like set from the cached training split (built there first if missing)",
    )
    g.add_argument(
        "--sequences",
        type=_count(2),
        default=48,
        help="training-split sequences (default 48, the cached ones)",
    )
    g.add_argument(
        "--val-sequences",
        type=_count(0),
        default=6,
        help="of them, the last N make the validation set (default 6)",
    )
    g.add_argument(
        "--positive-copies",
        type=_count(1),
        default=2,
        help="orientations (1-8) each training blob subframe is written in (default 2)",
    )
    g.add_argument("--new-blobs", type=_count(1), default=12, help="new blobs per blob image (default 12)")
    g.add_argument(
        "--cases-per-sequence", type=_count(1), default=6, help="current images per sequence (default 6)"
    )
    g.add_argument("--image-size", type=_count(64), default=1024, help="image side (default 1024)")
    g.add_argument("--references", type=_count(1), default=30, help="reference images (default 30)")
    g.add_argument("--subframe-size", type=_count(8), default=256, help="subframe side (default 256)")
    g.add_argument("--cache", metavar="DIR", default=None, help="case cache (default: the regression cache)")
    p.set_defaults(func=_make_dataset)

    t = subparsers.add_parser(
        "train",
        help="train a blob classifier on a dataset",
        description="Cross-entropy, batch 100, Adam for the first --adam-epochs epochs then SGD. "
        "Writes checkpoint.pt each epoch, metrics.csv, history.png and the model file. "
        "The seed's recipe is --epochs 200 --adam-epochs 5.",
    )
    t.add_argument("dataset", help="dataset directory (from make-dataset), e.g. datasets/v3/train")
    t.add_argument("--val", default=None, help="validation dataset (default: DATASET/../val if present)")
    t.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    t.add_argument("--model", default=None, help="model file to write (default OUT/model.pt)")
    t.add_argument(
        "--epochs", type=_count(1), default=None, help="epochs (default: the short recipe, 6; the seed: 200)"
    )
    t.add_argument(
        "--adam-epochs",
        type=_count(0),
        default=None,
        help="epochs with Adam before SGD (default 4; the seed: 5)",
    )
    t.add_argument("--batch-size", type=_count(1), default=None, help="batch size (default 100)")
    t.add_argument("--adam-lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    t.add_argument("--sgd-lr", type=float, default=None, help="SGD learning rate (default 1e-3)")
    t.add_argument(
        "--max-samples",
        type=_count(0),
        default=None,
        help="samples per epoch: the first N of each epoch's permutation of the whole set "
        "(default 8000; 0: all, as in the seed)",
    )
    t.add_argument("--seed", type=int, default=None, help="random seed (default 33)")
    t.add_argument(
        "--params",
        metavar="JSON",
        default=None,
        help="architecture and training settings from `blobwatch tune`'s best.json (options given "
        "here override its training settings)",
    )
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    f = subparsers.add_parser(
        "train-fcn",
        help="train the localizing network (BlobUNet) and calibrate its threshold",
        description="Train BlobUNet on whole-image training sequences (blobwatch.variation's 'training' seed "
        "split: raw-injected blobs, registered differences, offsets, non-translational changes, "
        "correlated noise, edges, overlaps, artifacts), then choose its probability threshold on "
        "the regression suite's calibration split (a target false-alarm rate per quiet image).",
    )
    f.add_argument("--out", default="runs/fcn", help="run folder (default runs/fcn)")
    f.add_argument("--sequences", type=_count(2), default=48, help="training sequences (default 48)")
    f.add_argument(
        "--new-blobs", type=_count(1), default=12, help="new blobs per training image (default 12)"
    )
    f.add_argument("--epochs", type=_count(1), default=None, help="epochs (default 20)")
    f.add_argument("--batch-size", type=_count(1), default=16, help="patches per step (default 16)")
    f.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    f.add_argument(
        "--width", type=_count(2), default=None, help="channels of the first U-Net level (default 12)"
    )
    f.add_argument("--depth", type=_count(1), default=None, help="U-Net poolings (default 3)")
    f.add_argument(
        "--pos-weight", type=_number(0.01), default=None, help="weight of blob pixels in the loss (default 5)"
    )
    f.add_argument(
        "--patch",
        type=_count(16),
        default=None,
        help="training patch side, a multiple of 2**(depth+1) (default 128)",
    )
    f.add_argument(
        "--peak-smooth",
        type=_number(0.0),
        default=None,
        help="smoothing (px) of the probability map before its peaks are taken (default 0.5)",
    )
    f.add_argument(
        "--params",
        metavar="JSON",
        default=None,
        help="settings from `blobwatch tune --family fcn`'s best.json (options given here override them)",
    )
    f.add_argument(
        "--extra-stamps",
        type=_count(0),
        default=0,
        help="more blobs shaped like the 15 training stamps injected into each raw training image "
        "(zoom 0.6-1.3, down to compact sizes; default 0)",
    )
    f.add_argument(
        "--init",
        metavar="MODEL",
        default=None,
        help="fine-tune this localizing model instead of starting afresh",
    )
    add_calibrated_training_options(f)
    f.add_argument(
        "--recalibrate",
        metavar="MODEL",
        default=None,
        help="train nothing: choose MODEL's threshold again on the calibration split (after a change "
        "to how candidates are scored) and write it into MODEL",
    )
    f.set_defaults(func=_train_fcn)

    e = subparsers.add_parser(
        "evaluate",
        help="evaluate a model (and the matched-filter baseline) on datasets",
        description="Confusion rates (TN, FP, TP, FN), ROC and precision-recall curves with AUC, "
        "misses by blob strength/size/edge distance, false positives by cause, and a "
        "multi-scale matched filter at the same false-positive rate.",
    )
    e.add_argument(
        "datasets", nargs="*", help="dataset directories (e.g. datasets/v3/val datasets/v3/test_images)"
    )
    e.add_argument(
        "--suite",
        action="store_true",
        help="evaluate on the 16 subframes of the regression suite's whole-image cases instead "
        "(raw-injected blobs, plain and registered differences, bootstrap intervals; the "
        "matched filter's threshold is set on the calibration split)",
    )
    e.add_argument(
        "--seed-protocol",
        action="store_true",
        help="with --suite: the seed's target instead (issue 10): subframes of the plain (unregistered) "
        "differences only, TNR at TPR >= 0.94 and TPR at TNR >= 0.97 with thresholds chosen on the "
        "calibration split, overall and per S/N bin, for --model, --baseline and the matched filter; "
        "McNemar against --baseline",
    )
    e.add_argument(
        "--baseline",
        default=None,
        metavar="MODEL",
        help="with --seed-protocol: the model compared with (default: the shipped PaperCNN)",
    )
    add_suite_options(e)
    e.add_argument("--model", default=None, help="model file (default: the shipped model)")
    e.add_argument("--out", default="runs/evaluate", help="output directory (default runs/evaluate)")
    e.add_argument("--threshold", type=float, default=None, help="override the model's threshold")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    e.add_argument(
        "--max-samples", type=_count(1), default=None, help="evaluate only the first N samples of each"
    )
    e.set_defaults(func=_evaluate)


def _make_dataset(args: argparse.Namespace) -> int:
    import logging

    if args.from_suite:
        return _make_suite_dataset(args)

    from blobwatch.dataset import DatasetPlan, build_datasets

    log = logging.getLogger("blobwatch.make-dataset")
    kw: dict[str, Any] = {
        "n_train": args.n_train,
        "n_val": args.n_val,
        "n_test": args.n_test,
        "seed": args.seed,
        "clip_factor": args.clip_factor,
        "files": list(args.files),
        "stamps_path": args.stamps,
        "distractor_fraction": args.distractor_fraction,
        "pedestal_sigma": args.pedestal_sigma,
    }
    for name in ("train_seeds", "test_seeds", "heldout_stamps"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    out = build_datasets(args.outdir, DatasetPlan(**kw), progress=not args.no_progress, log=log.info)
    for name, path in out.items():
        print(f"{name:12s} {path}")
    return 0


def _make_suite_dataset(args: argparse.Namespace) -> int:
    import json
    import time

    from blobwatch.cli.regress import default_cache
    from blobwatch.dataset.from_suite import make_suite_datasets
    from blobwatch.errors import InputError
    from blobwatch.regression import SUITE_VERSION, SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig, training_stamps

    if args.files:
        raise BlobwatchError("--from-suite takes no FITS files (it reads the training split)")
    cache = Path(args.cache) if args.cache else default_cache()
    # stamp-shaped blobs from the 15 training stamps only, as train-fcn builds the split
    variation = VariationConfig(
        size=args.image_size,
        n_references=args.references,
        cases=args.cases_per_sequence,
        new_blobs=args.new_blobs,
        stamps=training_stamps(),
    )
    spec = SuiteSpec("training", args.sequences, variation)
    for seed in spec.seeds:  # never let a mismatched request rebuild someone's cached sequence
        truth = cache / "training" / f"seq{seed}" / "truth.json"
        if truth.is_file() and json.loads(truth.read_text()).get("key") != spec.key(seed):
            raise InputError(
                truth,
                "cached training sequence made with other settings (--new-blobs, --cases-per-sequence, "
                "--image-size, --references); give matching ones or another --cache",
            )
    t0 = time.perf_counter()
    progress = not args.no_progress and sys.stderr.isatty()
    cases = build_suite(spec, cache, progress=progress)
    command = "blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = make_suite_datasets(
        args.outdir,
        cases,
        size=args.subframe_size,
        clip_factor=args.clip_factor,
        val_sequences=args.val_sequences,
        positive_copies=min(args.positive_copies, 8),
        seed=args.seed,
        extra={
            "split": "training",
            "suite_version": SUITE_VERSION,
            "variation": variation.to_dict(),
            "stamp_ids": list(training_stamps()),
            "cache": str(cache),
            "command": command,
        },
        progress=progress,
    )
    for name, path in out.items():
        print(f"{name:12s} {path}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from blobwatch.train import TrainConfig, train

    val = args.val
    if val is None:
        guess = Path(args.dataset).parent / "val"
        val = str(guess) if (guess / "manifest.json").is_file() else None
    keys = ("epochs", "adam_epochs", "batch_size", "adam_lr", "sgd_lr", "seed", "max_samples")
    kw: dict[str, Any] = {}
    if args.params:
        from blobwatch.tune import read_params

        params = read_params(args.params)
        if params["architecture"] == "BlobUNet":
            raise BlobwatchError(
                f"{args.params}: a localizing-network parameter file; use blobwatch train-fcn"
            )
        kw.update(
            architecture=params["architecture"],
            arguments={k: v for k, v in params["arguments"].items() if k != "size"},
        )
        kw.update({k: params["training"][k] for k in keys if k in params["training"]})
    kw.update({k: getattr(args, k) for k in keys if getattr(args, k) is not None})

    cfg = TrainConfig(
        dataset=args.dataset,
        outdir=args.out,
        val_dataset=val,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        progress=not args.no_progress,
        model_path=args.model,
        command="blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        **kw,
    )
    result = train(cfg)
    v = result.validation
    print(f"model: {result.model_path}  ({result.seconds:.0f} s)")
    if v:
        print(
            f"validation (n={v['n']}): threshold {result.threshold:.3f}  TPR {v['tpr']:.4f}  "
            f"TNR {v['tnr']:.4f}  ROC AUC {v['roc_auc']:.4f}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from blobwatch.evaluate import evaluate_model, format_table

    if args.suite:
        return _evaluate_suite(args)
    if not args.datasets:
        raise BlobwatchError("evaluate needs dataset directories, or --suite")
    report = evaluate_model(
        args.datasets,
        model=args.model,
        outdir=args.out,
        threshold=args.threshold,
        device=args.device,
        max_samples=args.max_samples,
    )
    print(format_table(report))
    print(f"written: {Path(args.out) / 'evaluation.json'}")
    return 0


def _evaluate_suite(args: argparse.Namespace) -> int:
    import json

    from blobwatch.atomic import write_text_atomic
    from blobwatch.classifier import BlobClassifier
    from blobwatch.evaluate import evaluate_suite, format_suite_table, suite_subframe_scores
    from blobwatch.regression import build_suite

    if args.datasets:
        raise BlobwatchError("give dataset directories or --suite, not both")
    if args.seed_protocol:
        return _evaluate_seed_protocol(args)
    suite_spec, calib_spec, cache = suite_specs(args)
    clf = BlobClassifier(args.model, device=args.device)
    threshold = clf.threshold if args.threshold is None else float(args.threshold)
    progress = sys.stderr.isatty()
    calib = suite_subframe_scores(build_suite(calib_spec, cache, progress=progress), clf, progress=progress)
    suite = suite_subframe_scores(build_suite(suite_spec, cache, progress=progress), clf, progress=progress)
    report = evaluate_suite(calib, suite, threshold)
    report.update(
        model=str(clf.model_path),
        suite_sequences=suite_spec.n_sequences,
        calibration_sequences=calib_spec.n_sequences,
    )
    out = Path(args.out)
    write_text_atomic(out / "evaluation_suite.json", json.dumps(report, indent=1) + "\n")
    print(format_suite_table(report))
    print(f"written: {out / 'evaluation_suite.json'}")
    return 0


def _evaluate_seed_protocol(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from blobwatch.atomic import write_text_atomic
    from blobwatch.classifier import BlobClassifier
    from blobwatch.evaluate import suite_subframes
    from blobwatch.regression import build_suite
    from blobwatch.seed_protocol import format_seed_protocol, seed_protocol_report

    suite_spec, calib_spec, cache = suite_specs(args)
    models = {
        "shipped PaperCNN" if args.baseline is None else str(args.baseline): BlobClassifier(
            args.baseline, device=args.device
        ),
        str(args.model) if args.model else "shipped PaperCNN (as --model)": BlobClassifier(
            args.model, device=args.device
        ),
    }
    shapes = {(c.size, c.clip_factor) for c in models.values()}
    if len(shapes) != 1:
        raise BlobwatchError(f"the models differ in subframe size or clip factor: {sorted(shapes)}")
    size, clip = shapes.pop()
    progress = sys.stderr.isatty()
    cut = {}
    for name, spec in (("calibration", calib_spec), ("suite", suite_spec)):
        cut[name] = suite_subframes(
            build_suite(spec, cache, progress=progress),
            size=size,
            clip_factor=clip,
            protocols=("plain",),
            progress=progress,
            desc=f"{name} subframes",
        )

    def proba(clf: Any, x: np.ndarray) -> np.ndarray:
        return np.concatenate([clf.predict_proba(x[i : i + 512]) for i in range(0, len(x), 512)]).astype(
            np.float64
        )

    from blobwatch.baseline import matched_filter_scores

    scores = {
        name: (proba(clf, cut["calibration"].x), proba(clf, cut["suite"].x)) for name, clf in models.items()
    }
    # the classical reference on the same subframes (its thresholds, too, set on the calibration split)
    scores["matched filter"] = tuple(  # type: ignore[assignment]
        matched_filter_scores(cut[split].x).astype(np.float64) for split in ("calibration", "suite")
    )
    report = seed_protocol_report(
        {"label": cut["calibration"].label, "seq": cut["calibration"].seq},
        {"label": cut["suite"].label, "seq": cut["suite"].seq, "snr": cut["suite"].snr},
        scores,
        reference=next(iter(models)),
    )
    report.update(
        difference="plain (the seed's unregistered median difference)",
        suite_sequences=suite_spec.n_sequences,
        calibration_sequences=calib_spec.n_sequences,
        models_files={name: str(clf.model_path) for name, clf in models.items()},
        command="blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    out = Path(args.out)
    write_text_atomic(out / "evaluation_seed_protocol.json", json.dumps(report, indent=1) + "\n")
    print(format_seed_protocol(report))
    print(f"written: {out / 'evaluation_seed_protocol.json'}")
    return 0


def _train_fcn(args: argparse.Namespace) -> int:
    import time

    from blobwatch.classifier import resolve_device
    from blobwatch.cli.regress import default_cache
    from blobwatch.errors import InputError
    from blobwatch.fcn_train import FCNTrainConfig, train_fcn
    from blobwatch.modelfile import load_model
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig, training_stamps

    resolve_device(args.device, strict=True)  # a missing GPU is one line before any work
    cache = Path(args.cache) if args.cache else default_cache()
    progress = sys.stderr.isatty()
    if args.recalibrate:
        load_model(args.recalibrate)  # a missing or foreign file is one line before any work
        threshold = _calibrate_fcn(Path(args.recalibrate), args, cache, progress)
        print(f"model: {args.recalibrate} (threshold {threshold:.4f} on the calibration split)")
        return 0
    if args.init and load_model(args.init).architecture != "BlobUNet":
        raise InputError(args.init, "not a localizing (BlobUNet) model file")
    knobs = ("width", "depth", "lr", "pos_weight", "patch", "peak_smooth", "epochs")
    settings: dict[str, Any] = {}
    if args.params:
        from blobwatch.tune import read_params

        doc = read_params(args.params)
        if doc["architecture"] != "BlobUNet":
            raise BlobwatchError(
                f"{args.params}: a {doc['architecture']} parameter file; use blobwatch train"
            )
        settings.update({k: doc["training"][k] for k in knobs if k in doc["training"]})
    settings.update({k: getattr(args, k) for k in knobs if getattr(args, k) is not None})
    cfg = FCNTrainConfig(
        outdir=args.out,
        cache=str(cache),
        sequences=args.sequences,
        new_blobs=args.new_blobs,
        batch_size=args.batch_size,
        **settings,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        extra_stamps=args.extra_stamps,
        init=args.init,
        extra={"stamps": list(training_stamps())},
    )
    t0 = time.perf_counter()
    # stamp-shaped training blobs come from the 15 training stamps, never the suite's 5
    variation = VariationConfig(cases=cfg.cases, new_blobs=cfg.new_blobs, stamps=tuple(cfg.extra["stamps"]))
    cases = build_suite(SuiteSpec("training", cfg.sequences, variation), cache, progress=progress)
    print(f"training cases: {len(cases)} ({time.perf_counter() - t0:.0f} s to build or read)")
    metrics = train_fcn(cfg, cases)
    model_path = Path(args.out) / "model.pt"
    threshold = _calibrate_fcn(model_path, args, cache, progress)
    print(
        f"model: {model_path} (threshold {threshold:.3f} on the calibration split; "
        f"training {metrics['train_seconds']:.0f} s)"
    )
    return 0


def _calibrate_fcn(model_path: Path, args: argparse.Namespace, cache: Path, progress: bool) -> float:
    """Choose the localizing model's threshold on the calibration split and write it (with how
    it was chosen) into the model file's metadata."""
    from blobwatch.detectors import LocalizingDetector
    from blobwatch.modelfile import load_model, save_model
    from blobwatch.regression import SuiteSpec, build_suite, calibrate, run_detector

    calib = build_suite(SuiteSpec("calibration", args.calibration_sequences), cache, progress=progress)
    det = LocalizingDetector(model=str(model_path), device=args.device)
    threshold = max(
        calibrate(calib, run_detector(det, calib, progress=progress), args.target_false_alarm), det.floor
    )
    loaded = load_model(model_path)
    command = "blobwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = dict(
        loaded.metadata,
        threshold=threshold,
        calibration={
            "split": "calibration",
            "sequences": args.calibration_sequences,
            "target_false_alarm": args.target_false_alarm,
        },
    )
    meta["recalibrated_by" if args.recalibrate else "command"] = command
    save_model(
        model_path, loaded.model, architecture=loaded.architecture, arguments=loaded.arguments, metadata=meta
    )
    return threshold
