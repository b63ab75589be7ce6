"""``blobwatch difference``: build a blob difference image from FITS files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from blobwatch.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``difference`` command."""
    parser = subparsers.add_parser(
        "difference",
        help="current blob image minus the median of earlier ones (registered)",
        description=(
            "Blob difference image D = CURRENT - median(REFERENCES), as in the seed (WFC3 ISR "
            "2021-08), with each reference's sub-pixel blob-pattern offset estimated and removed "
            "before the median unless --no-register is given.  References must all be earlier "
            "than CURRENT; at least 5 are required, the latest 30 are used.  A reference list "
            "may be given as @FILE (one path a line, '#' comments)."
        ),
    )
    parser.add_argument("current", metavar="CURRENT", help="newest blob image (FITS)")
    parser.add_argument(
        "--references",
        "-r",
        nargs="+",
        required=True,
        metavar="REF",
        help="earlier blob images (FITS), a folder of them, or @LIST with one path a line",
    )
    parser.add_argument("--out", "-o", required=True, metavar="DIFF.fits", help="output FITS file")
    parser.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="plain median of the references, as in the seed (no sub-pixel alignment)",
    )
    parser.add_argument(
        "--min-references", type=int, default=5, metavar="N", help="fewest references accepted (default 5)"
    )
    parser.set_defaults(func=run_difference)


def expand_references(items: list[str]) -> list[str]:
    """Expand ``@LIST`` files and folders (their ``*.fits`` files) into a list of paths.

    Relative paths in a list file are taken relative to the list file's folder.
    """
    paths: list[str] = []
    for item in items:
        if item.startswith("@"):
            listfile = Path(item[1:])
            try:
                text = listfile.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(listfile, f"cannot read reference list ({exc.strerror or exc})") from None
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entry = Path(line)
                    paths.append(os.fspath(entry if entry.is_absolute() else listfile.parent / entry))
        elif os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).iterdir() if p.name.lower().endswith((".fits", ".fits.gz", ".fit"))
            )
            if not found:
                raise InputError(item, "folder holds no .fits files")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def run_difference(args: argparse.Namespace) -> int:
    """Read the images, build the difference, write it, print a summary."""
    import logging
    import warnings

    import numpy as np

    from blobwatch.difference import blob_difference, write_difference
    from blobwatch.fits_io import read_blob_image, read_blob_images
    from blobwatch.stats import robust_sigma

    log = logging.getLogger("blobwatch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        current = read_blob_image(args.current)
        ref_paths = [
            p
            for p in expand_references(args.references)
            if os.path.abspath(p) != os.path.abspath(args.current)
        ]
        references = read_blob_images(ref_paths)  # a wrong shape: blob_difference names the file at fault
        result = blob_difference(
            current, references, register=args.register, min_references=args.min_references
        )
    for warning in caught:
        log.warning("%s", warning.message)
    out = write_difference(args.out, result)
    print(f"current:    {args.current} (MJD {current.mjd:.5f})")
    print(
        f"references: {result.n_references} (MJD {result.reference_mjds[0]:.5f} .. {result.reference_mjds[-1]:.5f})"
    )
    print(f"method:     {result.method}")
    if args.register:
        offsets = result.offsets
        radius = np.hypot(offsets[:, 0], offsets[:, 1])
        worst = int(np.argmax(radius))
        print(
            "offsets:    dy {:+.3f}..{:+.3f}, dx {:+.3f}..{:+.3f} px; median |d| {:.3f} px; "
            "largest {:.3f} px ({})".format(
                offsets[:, 0].min(),
                offsets[:, 0].max(),
                offsets[:, 1].min(),
                offsets[:, 1].max(),
                float(np.median(radius)),
                float(radius[worst]),
                os.path.basename(result.reference_paths[worst] or "?"),
            )
        )
    finite = np.isfinite(result.data)
    print(
        f"difference: {result.data.shape[0]}x{result.data.shape[1]}, "
        f"{int((~finite).sum())} non-finite pixels, robust sigma "
        f"{robust_sigma(result.data[finite]):.4g}"
    )
    print(f"wrote:      {out}")
    return 0
