"""How far the demo's new blob and everything else stand from the localizing network's threshold.

Run after ``make demo`` (or ``blobwatch demo OUTDIR``)::

    python scripts/demo_margin.py demo-output

For every image the monitor processed it runs the shipped network on the difference and median
stack the monitor saved (``reports/images/*/difference_run*.npy``, ``stack_run*.npy``), smooths the
probability map as the detector does, and prints the highest probability within 6 px of the new
blob (from the simulator's truth in ``inbox/truth_blobs.ecsv`` and ``truth_shifts.ecsv``) and the
highest anywhere else. The demo passes with margin when the blob's days stay above the threshold
and every other value stays below it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy import ndimage

from blobwatch.fcn import FCNDetector

NEAR = 6.0  # px around the blob's centre that count as the blob


def new_blob(inbox: Path) -> tuple[int, float, float]:
    """Day, x and y (0-based, in that day's frame) of the simulation's first new blob."""
    blobs = Table.read(inbox / "truth_blobs.ecsv")
    shifts = Table.read(inbox / "truth_shifts.ecsv")
    row = blobs[blobs["day"] >= 0][0]
    day = int(row["day"])
    shift = shifts[shifts["day"] == day][0]
    return day, float(row["x"]) + float(shift["dx"]), float(row["y"]) + float(shift["dy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="the demo's output folder")
    args = parser.parse_args()
    day0, bx, by = new_blob(args.outdir / "inbox")
    det = FCNDetector()
    print(f"new blob on day {day0} at x={bx:.1f} y={by:.1f}; threshold {det.threshold:.4f}")
    blob_days, elsewhere = [], []
    for folder in sorted((args.outdir / "reports" / "images").glob("*_day*")):
        diff, stack = sorted(folder.glob("difference_run*.npy")), sorted(folder.glob("stack_run*.npy"))
        if not diff or not stack:
            continue
        day = int(re.search(r"day(\d+)", folder.name).group(1))  # type: ignore[union-attr]
        p = ndimage.gaussian_filter(det.probability(np.load(diff[-1]), np.load(stack[-1])), det.smooth_sigma)
        yy, xx = np.ogrid[: p.shape[0], : p.shape[1]]
        near = np.hypot(xx - bx, yy - by) <= NEAR
        at_blob, other = float(p[near].max()), float(p[~near].max())
        print(f"day {day:3d}: near the blob {at_blob:.4f}, elsewhere {other:.4f}")
        (blob_days if day >= day0 else elsewhere).append(at_blob)
        elsewhere.append(other)
    print(f"blob on days >= {day0}: lowest {min(blob_days):.4f}; highest anything else: {max(elsewhere):.4f}")


if __name__ == "__main__":
    main()
