"""``blobwatch train-autoencoder``, ``blobwatch embed`` and ``blobwatch compare``: the seed's
future work (autoencoder, embeddings) and one comparison of every method on the regression suite.

Heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from blobwatch.cli.regress import add_suite_options, default_cache, suite_specs
from blobwatch.cli.train import _count, _number, add_calibrated_training_options


def _command(name: str) -> str:
    argv = sys.argv[sys.argv.index(name) + 1 :] if name in sys.argv else []
    return " ".join(["blobwatch", name, *map(shlex.quote, argv)])


def _training_cases(n: int, cache: Path, progress: bool) -> list[Any]:
    """The first ``n`` sequences of the 'training' seed split, as ``train-fcn`` builds them (so
    the cache is shared): several new blobs per image, training stamps only."""
    from blobwatch.fcn_train import FCNTrainConfig
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig, training_stamps

    base = FCNTrainConfig()
    variation = VariationConfig(cases=base.cases, new_blobs=base.new_blobs, stamps=training_stamps())
    return build_suite(SuiteSpec("training", n, variation), cache, progress=progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the research commands."""
    a = subparsers.add_parser(
        "train-autoencoder",
        help="train the convolutional autoencoder (anomaly detection) and calibrate its threshold",
        description="Train a small convolutional autoencoder on the blob-free 256x256 subframes of whole-image "
        "training sequences (blobwatch.variation's 'training' seed split, shared with train-fcn), "
        "then choose the threshold on its smoothed reconstruction error on the regression suite's "
        "calibration split (a target false-alarm rate per quiet image).",
    )
    a.add_argument("--out", default="runs/autoencoder", help="run folder (default runs/autoencoder)")
    a.add_argument("--sequences", type=_count(2), default=6, help="training sequences (default 6)")
    a.add_argument("--epochs", type=_count(1), default=6, help="epochs (default 6)")
    a.add_argument("--batch-size", type=_count(1), default=16, help="subframes per step (default 16)")
    a.add_argument("--lr", type=_number(1e-6, 1.0), default=3e-3, help="peak learning rate (default 3e-3)")
    a.add_argument(
        "--max-subframes", type=_count(1), default=400, help="training subframes at most (default 400)"
    )
    a.add_argument("--channels", default="8,16,32,32", help="encoder channels (default 8,16,32,32)")
    a.add_argument("--latent", type=_count(1), default=4, help="bottleneck channels (default 4)")
    a.add_argument("--sigma", type=_number(0.5, 20.0), default=3.0, help="error smoothing, px (default 3)")
    a.add_argument(
        "--mode", choices=("signed", "squared"), default="signed", help="error map (default signed)"
    )
    a.add_argument(
        "--plain", action="store_true", help="use the plain median difference, not the registered one"
    )
    add_calibrated_training_options(a)
    a.set_defaults(func=_train_autoencoder)

    e = subparsers.add_parser(
        "embed",
        help="PCA, t-SNE and UMAP of subframes (raw and PaperCNN features), with a classifier on each",
        description="Embed the 16 subframes of whole-image cases (training split: fit; calibration split: choose; "
        "suite: score) by PCA, t-SNE and UMAP, of their block-averaged pixels and of the PaperCNN's "
        "penultimate layer; fit a logistic regression and a kNN on each embedding; write a figure per "
        "method coloured by class and by cause, a table, and the best storable (PCA) classifier for "
        "`blobwatch regress --detector embed`. UMAP needs the 'research' extra.",
    )
    add_suite_options(e)
    e.add_argument("--training-sequences", type=_count(2), default=6, help="training sequences (default 6)")
    e.add_argument("--methods", default="pca,tsne,umap", help="embeddings (default pca,tsne,umap)")
    e.add_argument("--features", default="raw,cnn", help="feature kinds (default raw,cnn)")
    e.add_argument("--classifiers", default="logistic,knn", help="classifiers (default logistic,knn)")
    e.add_argument("--dims", type=_count(2), default=2, help="embedding dimensions (default 2)")
    e.add_argument(
        "--model", metavar="PATH", help="PaperCNN model file for the cnn features (default: the shipped one)"
    )
    e.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    e.add_argument("--out", default="runs/embed", help="run folder (default runs/embed)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default cpu")
    e.set_defaults(func=_embed)

    c = subparsers.add_parser(
        "compare",
        help="score every method on the regression suite and write docs/comparison.md",
        description="Calibrate and score PaperCNN, a tuned network, the autoencoder, the best embedding "
        "classifier, the default detector (fcn) and the matched filter on the regression suite "
        "(as `blobwatch regress`), with training time, inference time per image, model size and "
        "what each misses, in one markdown page.",
    )
    add_suite_options(c)
    c.add_argument("--tuned-model", metavar="PATH", help="model file of the tuned PaperCNN-family network")
    c.add_argument("--model", metavar="PATH", help="PaperCNN model file (default: the shipped one)")
    c.add_argument(
        "--sky-model",
        metavar="PATH",
        help="a PaperCNN trained on `make-dataset --from-suite` data: one more row",
    )
    c.add_argument("--ae-model", metavar="PATH", help="autoencoder model file (default: the shipped one)")
    c.add_argument(
        "--embed-model", metavar="PATH", help="embedding classifier file (default: the shipped one)"
    )
    c.add_argument("--fcn-model", metavar="PATH", help="BlobUNet model file (default: the shipped one)")
    c.add_argument(
        "--target-false-alarm",
        type=_number(0.0, 0.99),
        default=0.02,
        metavar="F",
        help="false alarms per quiet calibration image (default 0.02)",
    )
    c.add_argument(
        "--threads", type=_count(1), default=2, help="torch CPU threads for the timing (default 2)"
    )
    c.add_argument("--out", default="runs/compare", help="run folder (default runs/compare)")
    c.add_argument(
        "--docs",
        metavar="PATH",
        default="docs/comparison.md",
        help="markdown page (default docs/comparison.md)",
    )
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default cpu")
    c.set_defaults(func=_compare)


def _train_autoencoder(args: argparse.Namespace) -> int:
    import time

    from blobwatch.anomaly import (
        AutoencoderConfig,
        AutoencoderDetector,
        clean_subframes,
        train_autoencoder,
    )
    from blobwatch.classifier import resolve_device
    from blobwatch.errors import BlobwatchError
    from blobwatch.modelfile import load_model, save_model
    from blobwatch.regression import SuiteSpec, build_suite, calibrate, run_detector

    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise BlobwatchError(f"--channels must be comma-separated integers, got {args.channels!r}") from None
    resolve_device(args.device, strict=True)
    cache = Path(args.cache) if args.cache else default_cache()
    progress = sys.stderr.isatty()
    cfg = AutoencoderConfig(
        outdir=args.out,
        channels=channels,
        latent=args.latent,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        sigma=args.sigma,
        mode=args.mode,
        registered=not args.plain,
        max_subframes=args.max_subframes,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    t0 = time.perf_counter()
    cases = _training_cases(args.sequences, cache, progress)
    x, seeds = clean_subframes(cases, registered=cfg.registered, clip_factor=cfg.clip_factor)
    print(f"training cases: {len(cases)}, blob-free subframes: {len(x)} ({time.perf_counter() - t0:.0f} s)")
    metrics = train_autoencoder(cfg, x, seeds)
    model_path = Path(args.out) / "model.pt"
    calib = build_suite(SuiteSpec("calibration", args.calibration_sequences), cache, progress=progress)
    det = AutoencoderDetector(model=str(model_path), device=args.device)
    threshold = max(
        calibrate(calib, run_detector(det, calib, progress=progress), args.target_false_alarm), det.floor
    )
    loaded = load_model(model_path)
    meta = dict(
        loaded.metadata,
        threshold=threshold,
        calibration={
            "split": "calibration",
            "sequences": args.calibration_sequences,
            "target_false_alarm": args.target_false_alarm,
        },
        command=_command("train-autoencoder"),
    )
    save_model(
        model_path, loaded.model, architecture=loaded.architecture, arguments=loaded.arguments, metadata=meta
    )
    print(
        f"model: {model_path} ({model_path.stat().st_size / 1024:.0f} KB; threshold {threshold:.3f} robust sigmas "
        f"on the calibration split; training {metrics['train_seconds']:.0f} s)"
    )
    return 0


def _split_list(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    from blobwatch.errors import BlobwatchError

    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise BlobwatchError(f"{option}: {bad[0] if bad else 'nothing'} is not one of {', '.join(allowed)}")
    return items


def _embed(args: argparse.Namespace) -> int:
    import json
    import time

    from blobwatch.atomic import write_text_atomic
    from blobwatch.classifier import BlobClassifier
    from blobwatch.embed import (
        CLASSIFIERS,
        FEATURES,
        METHODS,
        EmbeddingClassifier,
        best_storable,
        case_features,
        study,
    )
    from blobwatch.embed_report import plot_embedding, results_table
    from blobwatch.extras import require
    from blobwatch.regression import build_suite
    from blobwatch.stats import jsonable

    methods = _split_list(args.methods, METHODS, "--methods")
    features = _split_list(args.features, FEATURES, "--features")
    classifiers = _split_list(args.classifiers, CLASSIFIERS, "--classifiers")
    if "umap" in methods:
        require("umap", package="umap-learn")  # one line, before any work
    suite_spec, calib_spec, cache = suite_specs(args)
    progress = sys.stderr.isatty()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cnn = BlobClassifier(args.model, device=args.device) if "cnn" in features else None
    clip = cnn.clip_factor if cnn is not None else 0.5
    sets = {}
    for name, cases in (
        ("training", _training_cases(args.training_sequences, cache, progress)),
        ("calibration", build_suite(calib_spec, cache, progress=progress)),
        ("suite", build_suite(suite_spec, cache, progress=progress)),
    ):
        sets[name] = case_features(cases, features, classifier=cnn, clip_factor=clip, progress=progress)
        print(f"{name}: {len(sets[name])} subframes, {int(sets[name].label.sum())} with a new blob")
    feature_seconds = time.perf_counter() - t0
    others = {k: v for k, v in sets.items() if k != "training"}
    results, embeddings = study(
        sets["training"],
        others,
        methods=methods,
        features=features,
        classifiers=classifiers,
        dims=args.dims,
        seed=args.seed,
    )
    figures = []
    for method in methods:
        path = out / f"embed_{method}.png"
        plot_embedding([e for e in embeddings if e.method == method], others, path)
        figures.append(path.name)
    lines = [
        "# Embeddings of subframes",
        "",
        f"Made by `{_command('embed')}`.",
        "",
        (
            "Fitted on the training split, chosen on the calibration split, scored on the suite "
            "(ROC AUC and average precision of the blob probability per subframe)."
        ),
        "",
        *results_table(results, list(others)),
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    saved = None
    if "pca" in methods:
        best = best_storable(results)
        emb, clf = best["_fitted"]
        meta = {
            "method": "pca",
            "dims": args.dims,
            "registered": False,
            "clip_factor": clip,
            "cnn_model": str(cnn.model_path) if cnn is not None and args.model else None,
            "threshold": 0.5,
            "seconds": best["seconds"] + feature_seconds,
            "scores": {k: best[k] for k in others},
            "training_sequences": args.training_sequences,
            "command": _command("embed"),
        }
        saved = out / "embed_classifier.npz"
        EmbeddingClassifier.from_fitted(emb, clf, best["classifier"], meta).save(saved)
        lines += [
            "",
            (
                f"Best storable classifier on the calibration split: {best['classifier']} on the PCA of "
                f"{best['feature']} features, written to `{saved.name}` (`blobwatch regress --detector embed "
                f"--embed-model {saved}`)."
            ),
        ]
    write_text_atomic(out / "embed.md", "\n".join(lines) + "\n")
    write_text_atomic(
        out / "embed.json",
        json.dumps(jsonable([{k: v for k, v in r.items() if k != "_fitted"} for r in results]), indent=1),
    )
    print("\n".join(results_table(results, list(others))))
    print(f"figures, table{' and classifier' if saved else ''} in {out}/")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from blobwatch.atomic import write_text_atomic
    from blobwatch.cli.regress import evaluate_detector
    from blobwatch.comparison import (
        MethodResult,
        default_methods,
        markdown,
        model_file,
        model_size,
        training_info,
    )
    from blobwatch.errors import BlobwatchError
    from blobwatch.regression import build_suite, make_detector
    from blobwatch.regression_report import composition, write_outputs

    torch.set_num_threads(args.threads)
    suite_spec, calib_spec, cache = suite_specs(args)
    progress = sys.stderr.isatty()
    methods = default_methods(
        tuned_model=args.tuned_model,
        ae_model=args.ae_model,
        embed_model=args.embed_model,
        fcn_model=args.fcn_model,
        paper_model=args.model,
        sky_model=args.sky_model,
    )
    detectors: list[Any] = []
    for m in methods:  # every model file is read before any work
        if m.note:
            detectors.append(None)
            continue
        detectors.append(make_detector(m.detector, device=args.device, **m.options))
    suite = build_suite(suite_spec, cache, progress=progress)
    calib = build_suite(calib_spec, cache, progress=progress)
    results, runs, timing = [], [], {}
    names: set[str] = set()
    for m, det in zip(methods, detectors, strict=True):
        if det is None:
            results.append(MethodResult(m, skipped=m.note))
            continue
        name = det.name if det.name not in names else f"{det.name}-{len(names)}"
        if m.label == "tuned network":
            name = "tuned"
        elif m.label.startswith("PaperCNN, sky"):
            name = "paper-sky"
        names.add(name)
        run, times = evaluate_detector(
            det, suite, calib, args.target_false_alarm, name=name, progress=progress
        )
        timing.update(times)
        path, meta = model_file(det)
        nbytes, numbers = model_size(path)
        seconds, command = training_info(meta)
        results.append(MethodResult(m, run, path, nbytes, numbers, seconds, command))
        runs.append(run)
        print(
            f"{m.label:>45}: threshold {run.calibrated.threshold:.4g}, found "
            f"{run.calibrated.summary()['detection_overall']['rate']:.2f}, false alarms "
            f"{run.calibrated.summary()['false_alarm_rate']:.2f}/quiet image, {run.seconds_per_case:.2f} s/image"
        )
    if not runs:
        raise BlobwatchError("no method could be run")
    out = Path(args.out)
    comp, calib_comp = composition(suite), composition(calib)
    payload = {
        "target_false_alarm": args.target_false_alarm,
        "suite": comp,
        "calibration": calib_comp,
        "methods": [
            {
                "label": r.method.label,
                "detector": r.method.detector,
                "skipped": r.skipped,
                "model": r.model_path,
                "model_bytes": r.model_bytes,
                "stored_numbers": r.parameters,
                "training_seconds": r.training_seconds,
                "seconds_per_image": r.run.seconds_per_case if r.run else None,
                **({"scores": r.run.calibrated.summary()} if r.run else {}),
            }
            for r in results
        ],
        "timing": timing,
    }
    write_outputs(out, runs, payload)
    docs = Path(args.docs)
    figure = docs.with_name(docs.stem + "_detection.png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "detection_vs_snr.png", figure)
    commands = {"this page": _command("compare")}
    write_text_atomic(
        docs,
        markdown(
            results,
            command=_command("compare"),
            target=args.target_false_alarm,
            comp=comp,
            calib=calib_comp,
            seeds={"suite": suite_spec.seeds, "calibration": calib_spec.seeds},
            threads=args.threads,
            figure=figure.name,
            commands=commands,
        ),
    )
    print(f"written: {docs} and {out}/")
    return 0
