"""The regression suite: whole-image new-blob cases that look like the sky, and detector scores.

A suite is a set of sequences from `blobwatch.variation` (disjoint seed ranges for the suite and
its calibration split).  For every current image the daily job's input is built and cached on
disk: the registered difference (`blobwatch.difference.blob_difference`) and, per sequence, the
plain median of the references (the seed's own difference).  Any detector — a callable that
turns a `Case` into scored candidates — runs over the cases; its threshold is chosen on the
calibration split (a target false-alarm rate per quiet image) and never on the suite.

Scores: detection rate per matched-filter S/N bin with 95 % bootstrap intervals resampled by
sequence, false-alarm rate per quiet image, false candidates per image, localization error, a
per-case table with the cause of every miss and false alarm, and paired McNemar tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from blobwatch.atomic import atomic_path, write_text_atomic
from blobwatch.errors import BlobwatchError, InputError
from blobwatch.variation import VariationConfig, simulate_varied_sequence, split_seeds, transform_points

__all__ = [
    "SNR_BINS",
    "Candidates",
    "Case",
    "Detector",
    "DetectorScores",
    "SuiteSpec",
    "build_suite",
    "calibrate",
    "detector_names",
    "make_detector",
    "mcnemar",
    "register_detector",
    "run_detector",
    "score",
]

#: Bumped whenever the cached cases would change for the same spec (the cache key hashes no code;
#: tests/test_regression.py pins what this version produces).
SUITE_VERSION = "blobwatch-suite/2"
#: Detection-rate bins of matched-filter S/N (lower edge inclusive).
SNR_BINS: tuple[tuple[float, float], ...] = ((0.0, 5.0), (5.0, 8.0), (8.0, 15.0), (15.0, math.inf))
#: Smallest suite the scores mean anything on.
MIN_CASES = 10
#: A candidate matches the new blob within max(MATCH_MIN_PX, blob radius) of its centre.
MATCH_MIN_PX = 4.0
#: Distances (px) used to name the cause of a miss or a false alarm.
EDGE_PX = 12.0
ARTIFACT_PX = 8.0
#: Non-translational displacement (px at the image corner) or offset above which a case's
#: misregistration is named as a cause.
OFFSET_CAUSE_PX = 1.0


class SuiteError(BlobwatchError):
    """A suite cannot be built or used as asked."""


# --------------------------------------------------------------------------------------------
# the suite on disk
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteSpec:
    """Which sequences make a suite.

    Attributes
    ----------
    split : str
        'suite' or 'calibration' (their seeds never overlap, see `blobwatch.variation`).
    n_sequences : int
        Sequences; each gives ``variation.cases`` cases, half with one new blob.
    variation : VariationConfig
        What varies, and the image size.
    """

    split: str
    n_sequences: int
    variation: VariationConfig = field(default_factory=VariationConfig)

    @property
    def seeds(self) -> list[int]:
        """Sequence seeds of this suite."""
        return split_seeds(self.split, self.n_sequences)

    @property
    def n_cases(self) -> int:
        """Number of whole-image cases."""
        return self.n_sequences * self.variation.cases

    def key(self, seed: int) -> str:
        """Cache key of one sequence: the generator's version, the variation ranges, the seed and
        the real stamps file.

        The generating code itself is not hashed, so that an edit that changes nothing it
        produces (a comment, a lint fix, a new scoring function) keeps the cache. A change to
        what it produces must bump `SUITE_VERSION`: ``tests/test_regression.py`` pins a
        fingerprint of a small suite and fails until it is bumped and the fingerprint updated.
        """
        from blobwatch import dataset

        h = hashlib.sha256()
        h.update(f"{SUITE_VERSION}|{self.split}|{seed}|".encode())
        h.update(json.dumps(self.variation.to_dict(), sort_keys=True).encode())
        h.update(dataset.default_stamps_path().read_bytes())
        return h.hexdigest()


@dataclass
class Case:
    """One whole-image case: the daily job's input and the truth.

    Attributes
    ----------
    split, seed, index : str, int, int
        Which suite, sequence and current image.
    truth : dict
        The case record of the sequence's ``truth.json``: ``blobs`` (empty for a quiet image;
        one in the suite, several in training images) and ``blob``, the first or None; each
        blob's ``snr`` is its matched-filter S/N against the measured noise of the difference.
    folder : Path
        The sequence's cache folder.
    existing : dict
        Blobs on the mirror (reference frame) of the sequence.
    size : int
        Image side.
    """

    split: str
    seed: int
    index: int
    truth: dict[str, Any]
    folder: Path
    existing: dict[str, np.ndarray]
    size: int
    border: int = 5

    @property
    def name(self) -> str:
        """``split/seedNNN/caseKK``."""
        return f"{self.split}/seq{self.seed}/case{self.index:02d}"

    @property
    def blob(self) -> dict[str, Any] | None:
        """The new blob, or None for a quiet image."""
        return self.truth.get("blob")

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"case{self.index:02d}.npz", allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    @property
    def current(self) -> np.ndarray:
        """The raw current image (float32)."""
        return self._arrays["current"]

    @property
    def difference(self) -> np.ndarray:
        """The registered difference, ``current - median(registered references)``."""
        return self._arrays["difference"]

    @property
    def reference(self) -> np.ndarray:
        """The registered reference median (``current - difference``)."""
        return self.current - self.difference

    @property
    def plain_difference(self) -> np.ndarray:
        """The seed's difference: ``current - median(references)``, no registration."""
        return self.current - np.load(self.folder / "references_median.npy", allow_pickle=False)

    def existing_in_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and radii of the existing blobs in this current image."""
        y, x = transform_points(self.existing["y"], self.existing["x"], self.truth["transform"], self.size)
        return y, x, self.existing["radius"]

    def release(self) -> None:
        """Forget the loaded arrays (they are re-read on the next access)."""
        self.__dict__.pop("_arrays", None)


def _check_writable(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = cache / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(cache, f"cache folder is not writable ({exc.strerror or exc})") from None


def _robust_sigma(values: np.ndarray) -> float:
    """`blobwatch.stats.robust_sigma` of the finite values; NaN when there are none."""
    from blobwatch.stats import robust_sigma

    finite = values[np.isfinite(values)]
    return robust_sigma(finite) if finite.size else float("nan")


def _matched_filter_snr(
    difference: np.ndarray, template: np.ndarray, where: tuple[slice, slice], depth: float
) -> float:
    """S/N of a new blob for a matched filter that knows its exact signal: ``depth * sum(t**2)``
    over the robust noise of the difference correlated with the template ``t`` (so correlated
    noise counts as it does for a real filter)."""
    from scipy.signal import fftconvolve

    filled = np.where(np.isfinite(difference), difference, 0.0).astype(np.float32)
    response = fftconvolve(filled, template[::-1, ::-1], mode="same")
    noise = _robust_sigma(response)
    return float(depth * np.sum(template.astype(np.float64) ** 2) / noise) if noise > 0 else float("nan")


def _build_sequence(spec: SuiteSpec, seed: int, folder: Path) -> None:
    """Render one sequence, difference every current image, and write its folder."""
    from blobwatch.difference import (
        FewReferencesWarning,
        PreparedCache,
        RegistrationWarning,
        blob_difference,
        nan_median_stack,
    )
    from blobwatch.fits_io import BlobImage

    seq = simulate_varied_sequence(seed, spec.variation)
    refs = [
        BlobImage(
            data=img, mjd=float(mjd), path=f"seq{seed}_ref{i:02d}", provenance={"sha256": f"{seed}-ref{i}"}
        )
        for i, (img, mjd) in enumerate(zip(seq.references, seq.reference_mjd, strict=True))
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # a stale build (other settings, older code): nothing of it stays
        if old.is_file():
            old.unlink()
    with np.errstate(invalid="ignore"):
        plain = nan_median_stack(seq.references)
    with atomic_path(folder / "references_median.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, plain.astype(np.float32))
    prepared = PreparedCache(capacity=len(refs) + 1)
    records = []
    for case in seq.cases:
        current = BlobImage(data=case.image, mjd=case.mjd, path=f"seq{seed}_case{case.index:02d}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RegistrationWarning)
            warnings.simplefilter("ignore", FewReferencesWarning)
            result = blob_difference(
                current, refs, prepared=prepared, max_references=len(refs), min_references=min(5, len(refs))
            )
        unregistered = sum(issubclass(w.category, RegistrationWarning) for w in caught)
        sigma = _robust_sigma(result.data)
        with atomic_path(folder / f"case{case.index:02d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, current=case.image, difference=result.data)
        blobs = [
            {**b, "snr": _matched_filter_snr(result.data, template, where, b["depth"])}
            for b, (template, where) in zip(case.blobs, case.templates, strict=True)
        ]
        shifts = np.asarray(seq.params["reference_shifts"])
        truth_offsets = np.array([case.transform["dy"], case.transform["dx"]]) - shifts[-len(refs) :]
        records.append(
            {
                "index": case.index,
                "mjd": case.mjd,
                "noise": case.noise,
                "difference_sigma": sigma,
                "transform": case.transform,
                "blob": blobs[0] if blobs else None,
                "blobs": blobs,
                "artifacts": case.artifacts,
                "registration_offsets": result.offsets.tolist(),
                "unregistered_references": unregistered,
                "registration_error_px": float(np.median(np.hypot(*(result.offsets - truth_offsets).T))),
            }
        )
    truth = {
        "version": SUITE_VERSION,
        "split": spec.split,
        "seed": seed,
        "key": spec.key(seed),
        "variation": spec.variation.to_dict(),
        "params": seq.params,
        "existing": {k: v.tolist() for k, v in seq.existing.items()},
        "cases": records,
    }
    write_text_atomic(
        folder / "truth.json", json.dumps(truth, indent=1)
    )  # written last: the folder is complete


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_suite(spec: SuiteSpec, cache: str | os.PathLike, *, progress: bool = True) -> list[Case]:
    """Build (or reuse from ``cache``) every sequence of ``spec``; return its cases in order.

    A sequence folder is reused when its ``truth.json`` carries the same key (version,
    variation ranges, seed, stamps; see `SuiteSpec.key`); otherwise it is rebuilt.  ``manifest.json`` in
    the split folder lists every file with its SHA-256.

    Raises
    ------
    SuiteError
        If the suite would hold fewer than `MIN_CASES` cases.
    InputError
        If the cache folder cannot be written.
    """
    if spec.n_cases < MIN_CASES:
        raise SuiteError(
            f"a suite needs at least {MIN_CASES} cases; {spec.n_sequences} sequences x "
            f"{spec.variation.cases} cases give {spec.n_cases}"
        )
    spec.variation.validate()
    root = Path(cache) / spec.split
    _check_writable(root)
    from tqdm import tqdm

    cases: list[Case] = []
    files: dict[str, str] = {}
    for seed in tqdm(spec.seeds, desc=f"{spec.split} sequences", unit="seq", disable=not progress):
        folder = root / f"seq{seed}"
        truth_path = folder / "truth.json"
        truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
        if truth is None or truth.get("key") != spec.key(seed):
            _build_sequence(spec, seed, folder)
            truth = json.loads(truth_path.read_text())
        existing = {k: np.asarray(v, dtype=np.float64) for k, v in truth["existing"].items()}
        for record in truth["cases"]:
            cases.append(
                Case(
                    spec.split,
                    seed,
                    int(record["index"]),
                    record,
                    folder,
                    existing,
                    spec.variation.size,
                    spec.variation.border,
                )
            )
        for path in sorted(folder.iterdir()):
            if not path.name.startswith("."):
                files[f"seq{seed}/{path.name}"] = _file_sha256(path)
    manifest = {
        "version": SUITE_VERSION,
        "split": spec.split,
        "seeds": spec.seeds,
        "variation": spec.variation.to_dict(),
        "files": files,
    }
    write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return cases


# --------------------------------------------------------------------------------------------
# detectors
# --------------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """Scored candidates of one case.

    Attributes
    ----------
    x, y : ndarray
        0-based column and row (for subframe detectors: the subframe centre).
    score : ndarray
        Higher is more blob-like; a candidate counts at threshold t when ``score >= t``.
    boxes : ndarray or None
        (n, 3) ``x0, y0, size`` for detectors that flag boxes (a box matches a blob whose
        centre lies inside it); None for localizing detectors.
    """

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    boxes: np.ndarray | None = None

    @classmethod
    def empty(cls) -> Candidates:
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy())


class Detector(Protocol):
    """What `run_detector` needs: a name, a native threshold, and a call on a case."""

    name: str
    description: str
    native_threshold: float
    localizes: bool

    def __call__(self, case: Case) -> Candidates: ...


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    """Make ``factory(**options)`` available as detector ``name``."""
    _REGISTRY[name] = factory


def detector_names() -> list[str]:
    """Registered detector names (the built-in ones included)."""
    import blobwatch.detectors  # noqa: F401  (registers the built-in detectors)

    return sorted(_REGISTRY)


def make_detector(name: str, **options: Any) -> Detector:
    """The detector registered as ``name``.

    Raises
    ------
    SuiteError
        If no detector has that name.
    """
    import blobwatch.detectors  # noqa: F401  (registers the built-in detectors)

    if name not in _REGISTRY:
        raise SuiteError(f"unknown detector {name!r}; choose from {', '.join(detector_names())}")
    return _REGISTRY[name](**options)


def run_detector(detector: Detector, cases: Sequence[Case], *, progress: bool = True) -> list[Candidates]:
    """Candidates of ``detector`` on every case (arrays are released after each case)."""
    from tqdm import tqdm

    out = []
    for case in tqdm(cases, desc=detector.name, unit="case", disable=not progress):
        out.append(detector(case))
        case.release()
    return out


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------


@dataclass
class CaseOutcome:
    """How one detector did on one case at one threshold."""

    detected: bool | None  # None for a quiet image
    false_candidates: int
    localization_px: float | None
    false_positions: list[tuple[float, float]]


def outcome(case: Case, cands: Candidates, threshold: float) -> CaseOutcome:
    """Match a case's candidates at ``threshold`` against its truth."""
    keep = cands.score >= threshold
    x, y = cands.x[keep], cands.y[keep]
    boxes = None if cands.boxes is None else cands.boxes[keep]
    blob = case.blob
    matched = np.zeros(x.size, dtype=bool)
    loc = None
    if blob is not None and x.size:
        if boxes is not None:
            bx0, by0, bs = boxes[:, 0], boxes[:, 1], boxes[:, 2]
            # a box holding any part of the blob's disc finds it (a blob may straddle subframes)
            gap_x = np.maximum(np.maximum(bx0 - blob["x"], blob["x"] - (bx0 + bs - 1)), 0.0)
            gap_y = np.maximum(np.maximum(by0 - blob["y"], blob["y"] - (by0 + bs - 1)), 0.0)
            matched = np.hypot(gap_x, gap_y) < float(blob["radius"])
        else:
            dist = np.hypot(x - blob["x"], y - blob["y"])
            matched = dist <= max(MATCH_MIN_PX, float(blob["radius"]))
            if matched.any():
                loc = float(dist[matched].min())
    false = ~matched
    return CaseOutcome(
        detected=None if blob is None else bool(matched.any()),
        false_candidates=int(false.sum()),
        localization_px=loc,
        false_positions=list(zip(x[false].tolist(), y[false].tolist(), strict=True)),
    )


def _bootstrap_rate(
    hits: np.ndarray, totals: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``sum(hits) / sum(totals)`` resampling sequences (rows)."""
    keep = totals > 0
    hits, totals = hits[keep], totals[keep]
    if totals.sum() == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(totals), (n_boot, len(totals)))
    rates = hits[idx].sum(axis=1) / np.maximum(totals[idx].sum(axis=1), 1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _per_sequence(seqs: np.ndarray, flags: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hits and totals of ``flags`` within ``mask``, per sequence (rows ordered by sequence)."""
    uniq, inv = np.unique(seqs, return_inverse=True)
    hits = np.bincount(inv, weights=(flags & mask).astype(float), minlength=uniq.size)
    totals = np.bincount(inv, weights=mask.astype(float), minlength=uniq.size)
    return hits, totals


def rate_with_ci(seqs: np.ndarray, flags: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """``n``, ``rate`` and a 95 % bootstrap interval (resampled by sequence) of ``flags[mask]``;
    the exact (Clopper-Pearson) interval where every resample gives the same rate."""
    hits, totals = _per_sequence(seqs, flags, mask)
    n = int(totals.sum())
    rate = float(hits.sum() / n) if n else None
    lo, hi = _bootstrap_rate(hits, totals) if n else (None, None)
    if n and hits.sum() in (0, n):  # all or none: every resample agrees, so use the exact binomial interval
        from scipy.stats import binomtest

        ci = binomtest(int(hits.sum()), n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = float(ci.low), float(ci.high)
    return {"n": n, "rate": rate, "ci_low": lo, "ci_high": hi}


@dataclass
class DetectorScores:
    """Scores of one detector on a suite at one threshold, and the per-case outcomes."""

    detector: str
    threshold: float
    operating_point: str
    cases: list[Case]
    outcomes: list[CaseOutcome]
    localizes: bool = True
    registered: bool = True

    @property
    def seqs(self) -> np.ndarray:
        return np.array([c.seed for c in self.cases])

    @property
    def is_blob(self) -> np.ndarray:
        return np.array([c.blob is not None for c in self.cases])

    @property
    def detected(self) -> np.ndarray:
        return np.array([bool(o.detected) for o in self.outcomes])

    @property
    def false_alarm(self) -> np.ndarray:
        """Quiet images with at least one candidate."""
        return np.array([o.false_candidates > 0 for o in self.outcomes]) & ~self.is_blob

    def snr(self) -> np.ndarray:
        return np.array([c.blob["snr"] if c.blob else np.nan for c in self.cases])

    def subset_rate(self, mask: np.ndarray) -> dict[str, Any]:
        """Detection rate with its interval among blob cases in ``mask``."""
        return rate_with_ci(self.seqs, self.detected, self.is_blob & mask)

    def summary(self) -> dict[str, Any]:
        """The JSON object of `blobwatch regress --json`."""
        snr, blob = self.snr(), self.is_blob
        detection = []
        for lo, hi in SNR_BINS:
            in_bin = blob & (snr >= lo) & (snr < hi)
            detection.append(
                {"snr_min": lo, "snr_max": None if math.isinf(hi) else hi, **self.subset_rate(in_bin)}
            )
        quiet = rate_with_ci(self.seqs, self.false_alarm, ~blob)
        loc = np.array(
            [o.localization_px for o in self.outcomes if o.localization_px is not None], dtype=float
        )
        return {
            "detector": self.detector,
            "operating_point": self.operating_point,
            "threshold": self.threshold,
            "cases": len(self.cases),
            "sequences": int(np.unique(self.seqs).size),
            "detection": detection,
            "detection_overall": self.subset_rate(np.ones_like(blob)),
            "false_alarm_rate": quiet["rate"],
            "false_alarm_ci": [quiet["ci_low"], quiet["ci_high"]],
            "quiet_images": quiet["n"],
            "false_candidates_per_image": float(np.mean([o.false_candidates for o in self.outcomes])),
            "localization_median_px": float(np.median(loc)) if loc.size else None,
            "localization_p90_px": float(np.percentile(loc, 90)) if loc.size else None,
        }


def score(
    detector: str,
    cases: Sequence[Case],
    candidates: Sequence[Candidates],
    threshold: float,
    operating_point: str,
    *,
    localizes: bool = True,
    registered: bool = True,
) -> DetectorScores:
    """Outcomes of every case at ``threshold`` (``registered``: the detector reads the registered
    difference; it only changes how causes are named)."""
    outcomes = [outcome(c, k, threshold) for c, k in zip(cases, candidates, strict=True)]
    return DetectorScores(
        detector, float(threshold), operating_point, list(cases), outcomes, localizes, registered
    )


def calibrate(cases: Sequence[Case], candidates: Sequence[Candidates], target: float) -> float:
    """Lowest threshold whose false-alarm rate per quiet image of ``cases`` is at most ``target``.

    Uses the largest candidate score of each quiet image (`blobwatch.baseline.threshold_at_fpr`).
    """
    from blobwatch.baseline import threshold_at_fpr

    worst = [
        float(k.score.max()) if k.score.size else -1e30
        for c, k in zip(cases, candidates, strict=True)
        if c.blob is None
    ]
    if not worst:
        raise SuiteError("the calibration split has no quiet image")
    return threshold_at_fpr(np.asarray(worst), target)


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of paired booleans: ``a_only``, ``b_only`` and the two-sided p-value."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


# --------------------------------------------------------------------------------------------
# causes
# --------------------------------------------------------------------------------------------


def _misregistration(case: Case, registered: bool = True) -> float:
    """How far (px) the references' blob pattern is left from the current one: the part no
    translation removes (rotation and scale at the image corner, blur), plus the translation
    left over: the registration's median error for a registered difference, the whole offset
    for a plain one."""
    t = case.truth["transform"]
    corner = case.size / math.sqrt(2.0)
    left = case.truth.get("registration_error_px", t["offset"]) if registered else t["offset"]
    return abs(math.radians(t["rotation_deg"])) * corner + abs(t["scale"] - 1.0) * corner + t["blur"] + left


def miss_causes(case: Case, registered: bool = True) -> list[str]:
    """Why a new blob may be hard: faint, edge, overlap, artifact, offset (misregistration)."""
    blob = case.blob or {}
    causes = []
    if blob.get("snr", math.inf) < 5:
        causes.append("faint")
    if blob.get("edge_distance", math.inf) < EDGE_PX:
        causes.append("edge")
    if blob.get("neighbour", math.inf) <= 1.1 or blob.get("placement") in ("overlap", "touching"):
        causes.append("overlap")
    if blob.get("placement") == "artifact":
        causes.append("artifact")
    if _misregistration(case, registered) > OFFSET_CAUSE_PX:
        causes.append("offset")
    return causes


def false_alarm_cause(case: Case, x: float, y: float, registered: bool = True) -> str:
    """The nearest explanation of a false candidate at (x, y)."""
    ey, ex, er = case.existing_in_image()
    if ey.size and np.any(np.hypot(ey - y, ex - x) <= er + 4.0):
        return "offset" if _misregistration(case, registered) > 0.25 else "existing"
    for a in case.truth["artifacts"]:
        if math.hypot(a["x"] - x, a["y"] - y) <= a["size"] + ARTIFACT_PX:
            return "artifact"
    if min(x, y, case.size - 1 - x, case.size - 1 - y) - case.border < EDGE_PX:
        return "edge"
    blob = case.blob
    if blob is not None and math.hypot(blob["x"] - x, blob["y"] - y) <= 3 * blob["radius"]:
        return "overlap"
    return "noise"


def case_rows(scores: DetectorScores) -> list[dict[str, Any]]:
    """One row per case for the per-case CSV (misses and false alarms carry causes)."""
    rows = []
    for case, o in zip(scores.cases, scores.outcomes, strict=True):
        blob = case.blob or {}
        t = case.truth["transform"]
        if scores.localizes:
            fa_causes = sorted(
                {false_alarm_cause(case, x, y, scores.registered) for x, y in o.false_positions}
            )
        else:  # a flagged subframe has no position to name a cause by
            fa_causes = ["subframe"] if o.false_positions else []
        rows.append(
            {
                "detector": scores.detector,
                "operating_point": scores.operating_point,
                "case": case.name,
                "kind": "blob" if case.blob else "quiet",
                "snr": round(blob["snr"], 3) if blob else "",
                "placement": blob.get("placement", ""),
                "profile": blob.get("profile", ""),
                "radius": round(blob["radius"], 2) if blob else "",
                "x": round(blob["x"], 2) if blob else "",
                "y": round(blob["y"], 2) if blob else "",
                "offset_px": round(t["offset"], 3),
                "rotation_deg": round(t["rotation_deg"], 4),
                "scale": round(t["scale"], 5),
                "blur_px": round(t["blur"], 3),
                "detected": "" if o.detected is None else int(o.detected),
                "false_candidates": o.false_candidates,
                "localization_px": "" if o.localization_px is None else round(o.localization_px, 3),
                "miss_causes": ";".join(miss_causes(case, scores.registered)) if o.detected is False else "",
                "false_alarm_causes": ";".join(fa_causes),
            }
        )
    return rows


def iter_breakdowns(scores: DetectorScores) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """Detection rates by placement and profile, and false-alarm rates by offset band."""
    blob = scores.is_blob
    placement = np.array([(c.blob or {}).get("placement", "") for c in scores.cases])
    profile = np.array([(c.blob or {}).get("profile", "") for c in scores.cases])
    snr = scores.snr()
    strong = blob & (snr >= 8)
    for name in sorted(set(placement[blob])):
        yield "placement (S/N >= 8)", name, scores.subset_rate(strong & (placement == name))
    for name in sorted(set(profile[blob])):
        yield "profile (S/N >= 8)", name, scores.subset_rate(strong & (profile == name))
    offset = np.array([c.truth["transform"]["offset"] for c in scores.cases])
    nontrans = np.array([_misregistration(c, scores.registered) for c in scores.cases])
    for lo, hi in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.01)):
        band = ~blob & (offset >= lo) & (offset < hi)
        yield (
            "false alarms by offset (px)",
            f"{lo:g}-{min(hi, 3):g}",
            rate_with_ci(scores.seqs, scores.false_alarm, band),
        )
    for lo, hi in ((0.0, 0.5), (0.5, 2.0), (2.0, math.inf)):
        band = ~blob & (nontrans >= lo) & (nontrans < hi)
        label = f">= {lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"
        yield (
            "false alarms by misregistration left (px at the corner)",
            label,
            rate_with_ci(scores.seqs, scores.false_alarm, band),
        )
