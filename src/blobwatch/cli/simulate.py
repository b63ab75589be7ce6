"""``blobwatch simulate OUTDIR``: write a simulated CSM-monitor sequence with ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from blobwatch.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    parser = subparsers.add_parser(
        "simulate",
        help="write a realistic simulated sequence of CSM-monitor blob images with ground truth",
        description=(
            "Simulate one 1024x1024 CSM-monitor blob image a day with existing blobs, new blobs, "
            "CSM mis-registration and detector artifacts. Writes csm_dayNNN_blob.fits, "
            "truth_blobs.ecsv, truth_shifts.ecsv and simulation.json into OUTDIR."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="output directory")
    parser.add_argument("--days", type=int, default=45, help="number of daily images (default 45)")
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (default: drawn at random and recorded)"
    )
    parser.add_argument(
        "--new-blob",
        type=int,
        action="append",
        default=[],
        metavar="DAY",
        help="a new blob appears on DAY (0-based; repeat for more)",
    )
    parser.add_argument(
        "--new-blob-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="expected number of further new blobs per day (default 0)",
    )
    parser.add_argument(
        "--existing",
        type=int,
        default=None,
        metavar="N",
        help="blobs present before day 0 (default: drawn 100-200)",
    )
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument(
        "--flt", action="store_true", help="also write WFC3 flt-style files (SCI/ERR/DQ, 1014x1014, e-/s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty OUTDIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``blobwatch simulate``."""
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "exists and is not a directory")
    if outdir.is_dir() and any(outdir.iterdir()) and not args.overwrite:
        raise InputError(outdir, "directory is not empty (use --overwrite)")
    config = SimulationConfig(
        n_days=args.days,
        size=args.size,
        seed=args.seed,
        n_existing=args.existing,
        new_blob_days=tuple(args.new_blob),
        new_blob_rate=args.new_blob_rate,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise InputError(outdir, f"bad option: {exc}") from None
    sim = simulate_sequence(config)
    files = write_simulation(sim, outdir, flt=args.flt)
    stale = _stale_outputs(outdir, files)
    for path in stale:  # left by an earlier, longer simulation: would look like real days
        path.unlink()
    blobs = sim.blobs
    new = sim.new_blobs()
    n_images = sim.n_days * (2 if args.flt else 1)
    print(
        f"wrote {len(files)} files to {outdir} ({n_images} images, seed {sim.params['seed']})"
        + (f"; removed {len(stale)} stale simulator files" if stale else "")
    )
    print(
        f"blobs: {len(blobs) - len(new)} existing, {len(new)} new; "
        f"noise {sim.params['noise_sigma']:.4f}, shift sigma {sim.params['shift_sigma']:.2f} px"
    )
    for row in new:
        print(
            f"  new blob {row['id']} on day {row['day']}: x={row['x']:.1f} y={row['y']:.1f} "
            f"(DS9 {row['x'] + 1:.1f}, {row['y'] + 1:.1f}) radius {row['radius']:.1f} px "
            f"depth {100 * row['depth']:.1f}% {row['profile']}"
        )
    return 0


def _stale_outputs(outdir: Path, written: list[Path]) -> list[Path]:
    """Simulator outputs in ``outdir`` (csm_day*_blob/flt.fits) that this run did not write."""
    keep = {p.resolve() for p in written}
    found = list(outdir.glob("csm_day[0-9][0-9][0-9]*_blob.fits"))
    found += list(outdir.glob("csm_day[0-9][0-9][0-9]*_flt.fits"))
    return sorted(p for p in found if p.resolve() not in keep)
