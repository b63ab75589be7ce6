"""``blobwatch regress``: run detectors over the regression suite and score them."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

#: Detectors run when none is named.
DEFAULT_DETECTORS = ("mf", "paper", "detect")
#: Sequences of the default suite and calibration split, and of ``--quick``.
DEFAULT_SEQUENCES, DEFAULT_CALIBRATION = 30, 12
QUICK_SEQUENCES, QUICK_CALIBRATION = 4, 4


def default_cache() -> Path:
    """``$BLOBWATCH_CACHE/regression``, else ``~/.cache/blobwatch/regression``."""
    base = os.environ.get("BLOBWATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "blobwatch")
    return Path(base) / "regression"


def add_suite_options(p: argparse.ArgumentParser) -> None:
    """Options that choose the suite and calibration split (shared with ``evaluate --suite``)."""
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SEQUENCES} suite and {QUICK_CALIBRATION} calibration sequences (about 40 cases)",
    )
    p.add_argument(
        "--sequences",
        type=int,
        default=None,
        metavar="N",
        help=f"suite sequences (default {DEFAULT_SEQUENCES}; 10 cases each)",
    )
    p.add_argument(
        "--calibration-sequences",
        type=int,
        default=None,
        metavar="N",
        help=f"calibration sequences (default {DEFAULT_CALIBRATION})",
    )
    p.add_argument(
        "--cases-per-sequence",
        type=int,
        default=10,
        metavar="N",
        help="current images per sequence, half with a new blob (default 10)",
    )
    p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="where the suite is cached (default $BLOBWATCH_CACHE/regression or "
        "~/.cache/blobwatch/regression; the default suite takes about 3.4 GB)",
    )
    p.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--references", type=int, default=30, help=argparse.SUPPRESS)


def suite_specs(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """The suite and calibration `SuiteSpec` and the cache folder chosen by the options.

    Raises
    ------
    SuiteError
        If an option is out of range or a split would hold fewer than 10 cases.
    """
    from blobwatch.regression import MIN_CASES, SuiteError, SuiteSpec
    from blobwatch.variation import VariationConfig

    quick = {"suite": QUICK_SEQUENCES, "calibration": QUICK_CALIBRATION}
    default = {"suite": DEFAULT_SEQUENCES, "calibration": DEFAULT_CALIBRATION}
    given = {"suite": args.sequences, "calibration": args.calibration_sequences}
    try:
        variation = VariationConfig(
            size=args.size, n_references=args.references, cases=args.cases_per_sequence
        )
        variation.validate()
        specs = tuple(
            SuiteSpec(
                split,
                given[split] if given[split] is not None else (quick if args.quick else default)[split],
                variation,
            )
            for split in ("suite", "calibration")
        )
        for spec in specs:
            spec.seeds  # noqa: B018  (raises for a size the split cannot hold)
    except ValueError as exc:
        raise SuiteError(f"bad suite option: {exc}") from None
    for spec in specs:
        if spec.n_cases < MIN_CASES:
            raise SuiteError(
                f"the {spec.split} would hold {spec.n_cases} cases; at least {MIN_CASES} are needed"
            )
    return specs[0], specs[1], Path(args.cache) if args.cache else default_cache()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``regress`` command."""
    p = subparsers.add_parser(
        "regress",
        help="score detectors on the regression suite (sky-like whole-image cases)",
        description=(
            "Build (once, cached) the regression suite and its calibration split of simulated "
            "whole-image cases with blobs injected into the raw images, choose each detector's "
            "threshold on the calibration split, and score it on the suite: detection rate per "
            "matched-filter S/N bin, false alarms per quiet image, localization, paired McNemar "
            "tests. See docs/regression.md."
        ),
    )
    p.add_argument(
        "--detector",
        action="append",
        metavar="NAME",
        help=f"detector to score (repeat; default: {' '.join(DEFAULT_DETECTORS)}; "
        "choose from mf, mf-clip3, paper, detect, fcn, autoencoder, embed)",
    )
    add_suite_options(p)
    p.add_argument(
        "--target-false-alarm",
        type=float,
        default=0.02,
        metavar="F",
        help="false alarms per quiet image the thresholds are calibrated to (default 0.02)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default="runs/regress",
        help="folder for scores.json, cases.csv and the figure (default runs/regress)",
    )
    p.add_argument(
        "--docs", metavar="PATH", help="also write the docs page (markdown) and its figure beside it"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the calibrated scores as JSON (one object for one detector, else a list)",
    )
    p.add_argument("--model", metavar="PATH", help="model file for paper/detect (default: the shipped model)")
    p.add_argument(
        "--fcn-model", metavar="PATH", help="BlobUNet model file for fcn (default: the shipped one)"
    )
    p.add_argument("--ae-model", metavar="PATH", help="autoencoder model file (default: the shipped one)")
    p.add_argument(
        "--embed-model", metavar="PATH", help="embedding classifier file for embed (default: the shipped one)"
    )
    p.add_argument("--device", default="cpu", help="device for the networks (default cpu)")
    p.set_defaults(func=run)


def evaluate_detector(
    det: Any, suite: Any, calib: Any, target: float, *, name: str | None = None, progress: bool = False
) -> tuple[Any, dict[str, float]]:
    """Calibrate ``det`` on ``calib`` at ``target`` false alarms per quiet image and score it on
    ``suite``: its `DetectorRun` (named ``name``, default the detector's) and the timings."""
    import time

    from blobwatch.regression import calibrate, run_detector, score
    from blobwatch.regression_report import DetectorRun

    name = name or det.name
    t0 = time.perf_counter()
    cal_cands = run_detector(det, calib, progress=progress)
    # below a detector's own floor every candidate it reports counts: say so with the floor
    threshold = max(calibrate(calib, cal_cands, target), getattr(det, "floor", -float("inf")))
    t1 = time.perf_counter()
    cands = run_detector(det, suite, progress=progress)
    seconds = time.perf_counter() - t1
    timing = {
        f"`{name}` on the calibration split": t1 - t0,
        f"`{name}` on the suite ({seconds / len(suite):.2f} s per case)": seconds,
    }
    flags = {"localizes": det.localizes, "registered": getattr(det, "registered", True)}
    return DetectorRun(
        name=name,
        description=det.description,
        calibrated=score(name, suite, cands, threshold, "calibrated", **flags),
        native=score(name, suite, cands, det.native_threshold, "native", **flags),
        calibration=score(name, calib, cal_cands, threshold, "calibrated", **flags),
        seconds_per_case=seconds / len(suite),
    ), timing


def run(args: argparse.Namespace) -> int:
    """Handle ``blobwatch regress``."""
    import json
    import shutil
    import time

    from blobwatch.regression import SuiteError, build_suite, make_detector
    from blobwatch.regression_report import composition, markdown, write_outputs

    names = list(dict.fromkeys(args.detector or DEFAULT_DETECTORS))
    if not 0.0 <= args.target_false_alarm < 1.0:
        raise SuiteError(f"--target-false-alarm must be in [0, 1), got {args.target_false_alarm}")
    suite_spec, calib_spec, cache = suite_specs(args)
    options = {
        "model": args.model,
        "fcn_model": args.fcn_model,
        "ae_model": args.ae_model,
        "embed_model": args.embed_model,
        "device": args.device,
    }
    detectors = [make_detector(name, **options) for name in names]  # unknown names fail before any work
    progress = sys.stderr.isatty()

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    suite = build_suite(suite_spec, cache, progress=progress)
    calib = build_suite(calib_spec, cache, progress=progress)
    timing[f"build or read the suite and calibration cases ({len(suite) + len(calib)})"] = (
        time.perf_counter() - t0
    )

    runs = []
    for det in detectors:
        run_, times = evaluate_detector(det, suite, calib, args.target_false_alarm, progress=progress)
        runs.append(run_)
        timing.update(times)

    summaries = [r.calibrated.summary() for r in runs]
    comp, calib_comp = composition(suite), composition(calib)
    payload = {
        "target_false_alarm": args.target_false_alarm,
        "suite": comp,
        "calibration": calib_comp,
        "detectors": [
            {
                **r.calibrated.summary(),
                "native": r.native.summary(),
                "calibration": r.calibration.summary(),
                "seconds_per_case": r.seconds_per_case,
            }
            for r in runs
        ],
    }
    out = Path(args.out)
    write_outputs(out, runs, payload)
    if args.docs:
        docs = Path(args.docs)
        figure = docs.with_name(docs.stem + "_detection.png")
        figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "detection_vs_snr.png", figure)
        argv = sys.argv[sys.argv.index("regress") + 1 :] if "regress" in sys.argv else []
        from blobwatch.atomic import write_text_atomic

        write_text_atomic(
            docs,
            markdown(
                runs,
                comp,
                calib_comp,
                command=" ".join(["blobwatch regress", *map(shlex.quote, argv)]),
                target=args.target_false_alarm,
                figure=figure.name,
                seeds={"suite": suite_spec.seeds, "calibration": calib_spec.seeds},
                timing=timing,
            ),
        )
    if args.json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries))
    else:
        for s in summaries:
            bins = ", ".join(f"{b['rate']:.2f}" if b["n"] else "-" for b in s["detection"])
            print(
                f"{s['detector']:>8}: threshold {s['threshold']:.4g}; found per S/N bin [{bins}]; "
                f"all {s['detection_overall']['rate']:.2f}; false alarms {s['false_alarm_rate']:.2f}/quiet image"
            )
        print(f"scores and per-case table in {out}/")
    return 0
