"""How the localizing network's probability map becomes scored candidates, chosen on the
CALIBRATION split only (never the suite).

For each smoothing of the probability map (`blobwatch.fcn.peaks`, ``smooth_sigma``) the threshold
that alarms at most ``--target`` of the quiet calibration images is found (`regression.calibrate`),
and the share of calibration blobs found at it is printed, overall and at S/N >= 8 and >= 15.
The network runs once per case; only the peak finding is repeated.

    python scripts/fcn_peak_study.py [--model PATH] [--target 0.02] [--sequences 12]

docs/detect.md quotes its output for the shipped model.
"""

from __future__ import annotations

import argparse

import numpy as np

from blobwatch.cli.regress import default_cache
from blobwatch.fcn import FCNDetector, fcn_inputs, peaks
from blobwatch.regression import Candidates, SuiteSpec, build_suite, calibrate, outcome

SMOOTHINGS = (1.0, 0.75, 0.5, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="BlobUNet model (default: the shipped one)")
    parser.add_argument("--target", type=float, default=0.02, help="false alarms per quiet image")
    parser.add_argument("--sequences", type=int, default=12, help="calibration sequences")
    args = parser.parse_args()

    cases = build_suite(SuiteSpec("calibration", args.sequences), default_cache(), progress=False)
    fcn = FCNDetector(args.model)
    maps = []
    for case in cases:
        maps.append(fcn._probability(fcn_inputs(case.difference, case.reference)))
        case.release()
    snr = np.array([c.blob["snr"] for c in cases if c.blob is not None])
    print(
        f"model {fcn.path}; {len(cases)} calibration cases ({snr.size} with a new blob); "
        f"target {args.target:g} false alarms per quiet image"
    )
    print("| smoothing (px) | threshold | found | S/N >= 8 | S/N >= 15 | false alarms / quiet image |")
    print("|---|---|---|---|---|---|")
    for sigma in SMOOTHINGS:
        cands = []
        for prob in maps:
            found = peaks(prob, smooth_sigma=sigma)
            cands.append(
                Candidates(
                    np.array([c.x for c in found]),
                    np.array([c.y for c in found]),
                    np.array([c.probability for c in found]),
                )
            )
        threshold = calibrate(cases, cands, args.target)
        outs = [outcome(c, k, threshold) for c, k in zip(cases, cands, strict=True)]
        found = np.array([o.detected for o in outs if o.detected is not None], dtype=bool)
        alarms = np.mean([o.false_candidates > 0 for c, o in zip(cases, outs, strict=True) if c.blob is None])
        print(
            f"| {sigma:g} | {threshold:.4f} | {found.mean():.3f} | {found[snr >= 8].mean():.3f} "
            f"| {found[snr >= 15].mean():.3f} | {alarms:.3f} |"
        )


if __name__ == "__main__":
    main()
