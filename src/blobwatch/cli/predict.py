"""Commands that use a trained model: ``classify``, ``detect`` and ``saliency``.

torch, astropy and matplotlib are imported inside the handlers so ``blobwatch --help`` stays
instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from blobwatch.errors import InputError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``classify``, ``detect`` and ``saliency`` commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", metavar="PATH", help="model file (default: the shipped model)")
    common.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA if available, else CPU), 'cpu' or 'cuda[:N]' (default: auto)",
    )

    p = subparsers.add_parser(
        "classify",
        parents=[common],
        help="blob probabilities of prepared subframes",
        description="Blob probability of each prepared subframe (shape (N, 256, 256) or (256, 256), "
        "z-scored, blobs positive) in a .npy or FITS file.",
    )
    p.add_argument("subframes", metavar="SUBFRAMES", help="prepared subframes (.npy or .fits)")
    p.add_argument("--json", action="store_true", help='print {"probabilities": [...], "threshold": t}')
    p.set_defaults(func=_classify)

    p = subparsers.add_parser(
        "detect",
        parents=[common],
        help="find new blobs in a difference image (or build it from references)",
        description="Prepare a blob difference image, classify its 16 subframes and localize candidates "
        "supported by both the CNN and a matched filter.  With --references, IMAGE is the current blob "
        "image and the difference is built first.  Coordinates are 0-based, x = column, y = row "
        "(the table also shows DS9's 1-based x+1, y+1).",
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="difference image (FITS or .npy), or the current blob image with --references",
    )
    p.add_argument(
        "--references",
        nargs="+",
        metavar="REF",
        help="earlier blob images (FITS) to build the difference from",
    )
    p.add_argument(
        "--no-register", action="store_true", help="with --references: do not register the references"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="with --references: the reference store, which keeps each reference's pixels, its "
        "registration preparation and the offsets measured between two files, keyed by the files' "
        "SHA-256, so that a repeated detect reads and registers nothing again (default "
        "$BLOBWATCH_CACHE/references or ~/.cache/blobwatch/references; bounded at 2 GiB)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="with --references: neither use nor fill the reference store"
    )
    p.add_argument(
        "--threshold", type=float, metavar="T", help="probability threshold (default: the model's)"
    )
    p.add_argument(
        "--detector",
        choices=("fcn", "paper", "mf"),
        default=None,
        help="fcn: the localizing network (BlobUNet) on the whole difference and reference median, "
        "the seed's subframes classified beside it (default: the regression suite's winner, or "
        "$BLOBWATCH_DETECTOR / the config file's detector); paper: PaperCNN subframes + matched-filter "
        "seeds with dip tests; mf: the matched filter alone at --threshold sigma (default 5)",
    )
    p.add_argument(
        "--fcn-model",
        metavar="PATH",
        help="BlobUNet model file for --detector fcn (default: the shipped one)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", metavar="FILE", help="also write the JSON result to FILE (atomically)")
    p.add_argument(
        "--reg", metavar="FILE", help="also write the candidates as a DS9 region file (image frame)"
    )
    p.set_defaults(func=_detect)

    p = subparsers.add_parser(
        "saliency",
        parents=[common],
        help="gradient saliency maps of prepared subframes (PNG + saliency.npy)",
        description="Write one PNG per subframe (subframe | saliency, as in the seed's Fig. 9) and "
        "saliency.npy with all maps, shape (N, H, W).",
    )
    p.add_argument("subframes", metavar="SUBFRAMES", help="prepared subframes (.npy or .fits)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=_saliency)


# ----------------------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------------------
def _is_fits(path: str) -> bool:
    return path.lower().endswith(FITS_SUFFIXES)


def read_array(path: str) -> np.ndarray:
    """Read a numeric array from a ``.npy`` file or the first image HDU of a FITS file.

    Raises
    ------
    InputError
        Missing file, not a regular file (FIFO, device), unknown suffix, unreadable content or
        no image data.
    """
    from blobwatch.fits_io import regular_file_size

    regular_file_size(path)
    if path.lower().endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(
                path,
                f"not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            ) from None
    elif _is_fits(path):
        from astropy.io import fits

        try:
            with fits.open(path, memmap=False) as hdul:
                arr = None
                for hdu in hdul:
                    if getattr(hdu, "data", None) is not None and getattr(hdu.data, "ndim", 0) >= 2:
                        arr = np.array(hdu.data)
                        break
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(
                path,
                f"not a readable FITS file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            ) from None
        if arr is None:
            raise InputError(path, "no image data in any HDU")
    else:
        raise InputError(path, "unknown file type (expected .npy or .fits)")
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(path, f"not a real numeric array (dtype {getattr(arr, 'dtype', type(arr))})")
    return arr


def _subframes(path: str, size: int) -> np.ndarray:
    from blobwatch.classifier import as_subframe_batch

    try:
        return as_subframe_batch(read_array(path), size)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def _difference(path: str) -> np.ndarray:
    """A difference image from FITS (the ingest's checks; a cube's first plane) or ``.npy``."""
    if _is_fits(path):
        from blobwatch.fits_io import read_blob_image

        return read_blob_image(path, require_time=False, check_quality=False).data
    arr = read_array(path)
    if arr.ndim == 3:  # a Quicklook difference cube: the first plane is the image
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2-D difference image, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).any():
        raise InputError(path, "all pixels are non-finite")
    return arr


def _settings(args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """The model (``--model``, ``$BLOBWATCH_MODEL``, the config file) and other ``options``
    resolved by `blobwatch.config.values`."""
    from blobwatch.config import values

    return values({"model": args.model, **options}, config=args.config)


def _classifier(args: argparse.Namespace, model: str | None = None):
    """The classifier on ``model`` (default: the configured one)."""
    from blobwatch.classifier import BlobClassifier

    model = model if model is not None else _settings(args)["model"]
    try:
        return BlobClassifier(model, device=args.device)
    except ValueError as exc:
        raise InputError(model or "<shipped model>", str(exc)) from None


# ----------------------------------------------------------------------------------------
# handlers
# ----------------------------------------------------------------------------------------
def _classify(args: argparse.Namespace) -> int:
    clf = _classifier(args)
    batch = _subframes(args.subframes, clf.size)
    prob = clf.predict_proba(batch)
    if args.json:
        print(json.dumps({"probabilities": [round(float(p), 6) for p in prob], "threshold": clf.threshold}))
        return 0
    print(f"model: {clf.model_path}   threshold: {clf.threshold:.4f}")
    print(f"{'index':>5}  {'probability':>11}  blob")
    for i, p in enumerate(prob):
        print(f"{i:>5}  {p:>11.4f}  {'yes' if p >= clf.threshold else 'no'}")
    return 0


def format_detection(payload: dict[str, Any]) -> str:
    """Human-readable table of a `Detection.to_json` payload (adds DS9 1-based coordinates)."""
    lines = [
        f"image: {payload['image']}   detector: {payload.get('detector', 'paper')}",
        f"model: {payload.get('model')}   threshold: {payload['threshold']:.4f}",
        "",
        f"seed subframes (threshold {payload.get('subframe_threshold', payload['threshold']):.4f}):",
        f"{'sub':>3} {'x0':>5} {'y0':>5} {'size':>4} {'probability':>11}  flagged",
    ]
    for s in payload["subframes"]:
        lines.append(
            f"{s['index']:>3} {s['x0']:>5} {s['y0']:>5} {s['size']:>4} {s['probability']:>11.4f}  {'yes' if s['blob'] else ''}"
        )
    cands = payload["candidates"]
    lines.append("")
    if not cands:
        lines.append("no new-blob candidates")
    else:
        lines.append(f"{len(cands)} new-blob candidate(s); x = column, y = row (0-based), DS9 = (x+1, y+1):")
        lines.append(
            f"{'#':>2} {'x':>8} {'y':>8} {'DS9 x':>8} {'DS9 y':>8} {'prob':>7} {'S/N':>6} {'radius':>6} {'sub':>3}"
        )
        for k, c in enumerate(cands, start=1):
            lines.append(
                f"{k:>2} {c['x']:>8.2f} {c['y']:>8.2f} {c['x'] + 1:>8.2f} {c['y'] + 1:>8.2f} "
                f"{c['probability']:>7.4f} {c['significance']:>6.1f} {c['radius']:>6.1f} {c['subframe']:>3}"
            )
    rejected = payload.get("rejected") or []
    if rejected:
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        lines.append("rejected seeds: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())))
    return "\n".join(lines)


def _detect(args: argparse.Namespace) -> int:
    from blobwatch.detect import detect
    from blobwatch.fcn import detect_fcn

    if args.detector == "mf":
        found = {"threshold": args.threshold, "model": None, "fcn_model": None}
    else:
        found = _settings(args, threshold=args.threshold, detector=args.detector, fcn_model=args.fcn_model)
        args.detector = found["detector"]
    stack = None
    if args.references:
        result = _reference_difference(args)
        difference, stack = result.data, result.stack
    else:
        difference = _difference(args.image)
    if args.detector == "mf":
        return _detect_mf(args, difference)
    clf = _classifier(args, found["model"])
    try:
        if args.detector == "fcn":
            from blobwatch.fcn import FCNDetector

            fcn = FCNDetector(found["fcn_model"], device=args.device)
            detection = detect_fcn(
                difference,
                fcn,
                clf,
                threshold=found["threshold"],
                reference=stack,
                name=os.path.basename(args.image),
            )
            if stack is None:
                print(
                    "blobwatch: warning: no --references, so the network sees no reference median "
                    "(it tells new blobs from old ones' residuals less well)",
                    file=sys.stderr,
                )
        else:
            detection = detect(
                difference,
                clf,
                threshold=found["threshold"],
                name=os.path.basename(args.image),
                reference=stack,
            )
    except ValueError as exc:
        raise InputError(args.image, str(exc)) from None
    payload = detection.to_json()
    if args.output:
        from blobwatch.atomic import write_text_atomic

        write_text_atomic(args.output, json.dumps(payload, indent=2) + "\n")
    if args.reg:
        from blobwatch.interchange import RegionCircle, write_regions

        circles = [
            RegionCircle(
                c["x"], c["y"], c["radius"], f"candidate {k} P={c['probability']:.3f}", "red", "candidate"
            )
            for k, c in enumerate(payload["candidates"], start=1)
        ]
        write_regions(args.reg, circles, title=f"new-blob candidates in {payload['image']}")
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(format_detection(payload))
    return 0


def _reference_difference(args: argparse.Namespace) -> Any:
    """``detect --references``: the difference of IMAGE, through the reference store unless ``--no-cache``.

    The store gives back the references' pixels and registration preparations, and the offsets
    measured before between the same two files (same content, same registration settings); the
    difference is the same as without it (`blobwatch.refstore`).
    """
    from blobwatch.difference import PreparedCache, blob_difference, registration_key
    from blobwatch.fits_io import read_blob_image

    current = read_blob_image(args.image)
    if args.no_cache:
        refs = [read_blob_image(r) for r in args.references]  # shapes: checked by blob_difference
        return blob_difference(current, refs, register=not args.no_register)

    from blobwatch.refstore import ReferenceStore, default_store_dir, file_state

    store = ReferenceStore(args.cache_dir or default_store_dir())
    refs = []
    for path in args.references:
        sha = store.known_sha256(path)
        image = store.image(sha, path) if sha else None
        if image is None:
            state = file_state(path)
            image = read_blob_image(path)
            store.put_image(image, state)
        refs.append(image)
    sha_of = {ref.path: ref.provenance.get("sha256") for ref in refs}
    current_sha = str(current.provenance.get("sha256") or "")
    key = "offsets-" + registration_key(current.data.shape)
    known = store.offsets(current_sha, key) if current_sha else {}
    result = blob_difference(
        current,
        refs,
        register=not args.no_register,
        prepared=PreparedCache(len(refs) + 1, store=store),
        offsets=[known.get(str(sha_of[ref.path])) for ref in refs],
    )
    if not args.no_register and current_sha:
        measured = {
            str(sha_of[path]): (float(dy), float(dx))
            for index, (path, (dy, dx)) in enumerate(zip(result.reference_paths, result.offsets, strict=True))
            if index not in result.unregistered and sha_of.get(path)
        }
        store.put_offsets(current_sha, key, {k: v for k, v in measured.items() if k not in known})
    return result


def _detect_mf(args: argparse.Namespace, difference: np.ndarray) -> int:
    """``detect --detector mf``: the matched filter's peaks at ``--threshold`` sigma."""
    from blobwatch.detectors import matched_filter_peaks
    from blobwatch.preprocess import prepare

    threshold = 5.0 if args.threshold is None else float(args.threshold)
    peaks = matched_filter_peaks(prepare(difference).data, floor=threshold)
    cands = [
        {"x": float(x), "y": float(y), "significance": round(float(v), 3)}
        for x, y, v in zip(peaks.x, peaks.y, peaks.score, strict=True)
    ]
    payload = {
        "image": os.path.basename(args.image),
        "detector": "mf",
        "threshold": threshold,
        "model": None,
        "candidates": cands,
    }
    if args.output:
        from blobwatch.atomic import write_text_atomic

        write_text_atomic(args.output, json.dumps(payload, indent=2) + "\n")
    if args.reg:
        from blobwatch.interchange import RegionCircle, write_regions

        circles = [
            RegionCircle(c["x"], c["y"], 8.0, f"candidate {k}", "red", "candidate")
            for k, c in enumerate(cands, start=1)
        ]
        write_regions(args.reg, circles, title=f"new-blob candidates in {payload['image']} (mf)")
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(f"image: {payload['image']}   detector: mf   threshold: {threshold:.4g} sigma")
        if not cands:
            print("no new-blob candidates")
        for k, c in enumerate(cands, start=1):
            print(
                f"{k:>2} x {c['x']:8.2f} y {c['y']:8.2f} (DS9 {c['x'] + 1:.2f}, {c['y'] + 1:.2f})  "
                f"S/N {c['significance']:.4g}"
            )
    return 0


def _saliency(args: argparse.Namespace) -> int:
    from blobwatch.atomic import atomic_path
    from blobwatch.saliency import save_saliency_figure

    clf = _classifier(args)
    batch = _subframes(args.subframes, clf.size)
    maps = clf.saliency(batch)
    prob = clf.predict_proba(batch)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "saliency.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, maps)
    for i, (sub, sal, p) in enumerate(zip(batch, maps, prob, strict=True)):
        flag = "blob" if p >= clf.threshold else "no blob"
        save_saliency_figure(
            out / f"saliency_{i:03d}.png", sub, sal, title=f"subframe {i}: P(blob) = {p:.3f} ({flag})"
        )
    print(f"wrote {len(maps)} figure(s) and saliency.npy to {out}")
    return 0
