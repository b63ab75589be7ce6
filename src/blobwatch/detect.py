"""Find new blobs in a blob difference image: the CNN and a matched filter must both agree.

`detect` runs the seed's protocol (prepare the difference, cut 16 subframes of 256x256, classify
each) and, to stay quiet when nothing happened and to localize what did, adds:

1. a multi-scale matched filter on the prepared image (blobs positive): the image is high-passed
   (a wide Gaussian is subtracted), smoothed with Gaussians of several widths, and each scale is
   divided by its robust (MAD) noise, giving a signal-to-noise ("significance") map per scale;
2. seeds: local maxima of the best-scale significance above ``min_significance``, plus the
   saliency peak of each flagged subframe when a local maximum of at least
   ``saliency_significance`` lies next to it;
3. dip suppression: a seed with a negative lobe of comparable amplitude within a few blob radii
   (the positive/negative pair that a mis-registered existing blob leaves) is rejected, and so is
   the positive rim around a bright (negative after preparation) feature;
4. sub-pixel position (quadratic fit of the significance peak), radius from the best scale;
5. a 256x256 window centred on each surviving seed is classified, so blobs that straddle the
   seed's subframe boundaries are judged whole; a seed becomes a `Candidate` only when that
   window's probability is at least the threshold.

See ``docs/detect.md`` for the algorithm, its parameters and measured speed.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from blobwatch.preprocess import prepare, tile
from blobwatch.saliency import saliency_peak
from blobwatch.stats import jsonable, robust_sigma

if TYPE_CHECKING:  # pragma: no cover
    from blobwatch.classifier import BlobClassifier
    from blobwatch.difference import DifferenceResult

__all__ = [
    "Candidate",
    "Detection",
    "DetectionParameters",
    "Rejection",
    "SubframeResult",
    "checked_input",
    "detect",
    "matched_filter",
    "matched_filter_peak",
    "reference_stack",
    "seed_subframes",
    "subframe_index",
]

#: Blob radius per unit of best-matching Gaussian sigma.  An ideal uniform disc of radius R is
#: best matched by sigma = R / 1.585; the simulator's soft-edged disc and ring blobs after the
#: seed's clipping peak at larger scales, and 1.25 fits them (radius 5-10 px, see docs/detect.md).
DISC_RADIUS_PER_SIGMA = 1.25


@dataclass(frozen=True)
class DetectionParameters:
    """Tunable settings of `detect` (defaults are the ones measured in docs/detect.md).

    Attributes
    ----------
    sigmas : tuple of float
        Gaussian widths (px) of the matched filter; blobs are 10-20 px across.
    background_sigma : float
        Width (px) of the Gaussian subtracted first (removes airglow/earthlight gradients).
    min_significance : float
        Matched-filter S/N a seed needs on its own.
    saliency_significance : float
        Lower S/N accepted for a seed that a flagged subframe's saliency peak points to.
    saliency_radius : float
        Largest distance (px) between a saliency peak and the local maximum it selects.
    dip_ratio : float
        A negative lobe deeper than ``dip_ratio`` times the seed's S/N marks a dip ...
    dip_floor : float
        ... provided the lobe is itself at least this significant (keeps faint blobs from being
        rejected by noise).
    dip_radius : float
        Search radius for the negative lobe, in blob radii (plus 3 px).
    min_radius : float
        Seeds whose radius estimate is smaller are point-like (cosmic-ray residuals, bad or
        unstable pixels, registration crescents), not blobs (10-20 px across).
    max_elongation : float
        Largest ratio of the principal curvatures of the significance peak (Hessian test as in
        SIFT): ridges and arcs (earthlight edges, residual rims) exceed it, round blobs do not.
    existing_ratio : float
        When the reference stack is known: a seed where the stack already holds a blob at least
        ``existing_ratio`` times deeper than the difference feature is a residual of that
        existing blob.
    separation : float
        Smallest distance (px) between two seeds (non-maximum suppression).
    border : int
        Seeds closer than this to the image edge are ignored (the 5-pixel reference border).
    max_seeds : int
        At most this many seeds (most significant first) are classified.
    binnings : tuple of int
        The window centred on a seed is classified at each of these binnings (1: the native
        256x256 window; 2: a 512x512 window binned 2x2 and renormalized to unit noise, where a
        faint blob has twice the per-pixel signal-to-noise); the seed's probability is the
        largest.
    dihedral : bool
        Average each window's probability over its 8 rotations and flips (the seed trained with
        exactly these augmentations, so the average removes the network's orientation noise).
    """

    sigmas: tuple[float, ...] = (1.5, 2.0, 2.75, 3.75, 5.0, 6.5, 8.5, 11.0)
    background_sigma: float = 16.0
    min_significance: float = 5.0
    saliency_significance: float = 4.0
    saliency_radius: float = 6.0
    dip_ratio: float = 0.5
    dip_floor: float = 4.0
    dip_radius: float = 2.5
    min_radius: float = 3.0
    max_elongation: float = 6.0
    existing_ratio: float = 2.0
    separation: float = 6.0
    border: int = 5
    max_seeds: int = 64
    binnings: tuple[int, ...] = (1, 2)
    dihedral: bool = True


@dataclass(frozen=True)
class SubframeResult:
    """One of the seed's fixed subframes and its classification.

    ``x0``, ``y0`` are the 0-based column and row of the subframe's first pixel in the image.
    """

    index: int
    x0: int
    y0: int
    size: int
    probability: float
    blob: bool


@dataclass(frozen=True)
class Candidate:
    """A new-blob candidate supported by both the CNN and the matched filter.

    Attributes
    ----------
    x, y : float
        0-based sub-pixel column and row in the input image (DS9: ``x + 1, y + 1``).
    probability : float
        CNN blob probability of the 256x256 window centred on the candidate.
    significance : float
        Matched-filter signal-to-noise at the best scale.
    radius : float
        Radius estimate (px) from the best matched-filter scale (``DISC_RADIUS_PER_SIGMA``).
    subframe : int
        Index of the seed subframe that contains (x, y).
    source : str
        ``"matched-filter"`` or ``"saliency"`` (which seed list produced it).
    """

    x: float
    y: float
    probability: float
    significance: float
    radius: float
    subframe: int
    source: str = "matched-filter"


@dataclass(frozen=True)
class Rejection:
    """A seed that did not become a candidate, and why.

    ``reason`` is ``"small"`` (point-like), ``"elongated"`` (ridge or arc), ``"dip"`` (negative lobe
    beside it), ``"existing"`` (residual of a blob already in the reference stack) or ``"cnn"``
    (the window centred on it is below the threshold).
    """

    x: float
    y: float
    significance: float
    reason: str
    probability: float | None = None
    dip_significance: float | None = None


@dataclass
class Detection:
    """The result of `detect` for one difference image.

    Attributes
    ----------
    threshold : float
        Probability threshold used.
    subframes : list of SubframeResult
        The seed's 16 subframes with their probabilities.
    candidates : list of Candidate
        New-blob candidates, most significant first.
    prepared : numpy.ndarray
        The prepared image (float32, blobs positive, z-scored).
    name : str or None
        Name of the input (a file name), for reports.
    rejected : list of Rejection
        Seeds rejected as dips or by the CNN (most significant first, at most 20).
    preparation : dict
        Statistics from `blobwatch.preprocess.prepare`.
    model : str or None
        The model file used (the localizing network's for ``detector='fcn'``).
    parameters : DetectionParameters
        Settings used (for ``detector='fcn'``: only the matched filter's, which gives the
        candidates' significance).
    detector : str
        ``'paper'`` (this module's chain: matched-filter seeds, dip tests, CNN window veto) or
        ``'fcn'`` (the localizing network, `blobwatch.fcn.detect_fcn`).
    subframe_threshold : float or None
        Threshold of the seed's subframe protocol when it differs from ``threshold`` (``'fcn'``:
        the subframes keep the classifier's own threshold).
    """

    threshold: float
    subframes: list[SubframeResult]
    candidates: list[Candidate]
    prepared: np.ndarray
    name: str | None = None
    rejected: list[Rejection] = field(default_factory=list)
    preparation: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    parameters: DetectionParameters = field(default_factory=DetectionParameters)
    detector: str = "paper"
    subframe_threshold: float | None = None
    _classifier: BlobClassifier | None = field(default=None, repr=False, compare=False)
    _saliency: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _localizer_saliency: Callable[[list[SubframeResult]], dict[int, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def flagged(self) -> list[SubframeResult]:
        """Subframes whose probability reached the threshold (the seed's alarm)."""
        return [s for s in self.subframes if s.blob]

    @property
    def alert(self) -> bool:
        """True when there is at least one candidate (what the monitor notifies about)."""
        return bool(self.candidates)

    def subframe_array(self, index: int) -> np.ndarray:
        """The prepared pixels of subframe ``index`` (a view into `prepared`)."""
        s = self._subframe(index)
        return self.prepared[s.y0 : s.y0 + s.size, s.x0 : s.x0 + s.size]

    def saliency_maps(self, indices: list[int] | None = None) -> dict[int, np.ndarray]:
        """Gradient saliency maps ``{index: (size, size) float32}``.

        Parameters
        ----------
        indices : list of int, optional
            Subframes to map; the flagged subframes by default.
        """
        wanted = (
            [s.index for s in self.flagged] if indices is None else [self._subframe(i).index for i in indices]
        )
        missing = [i for i in wanted if i not in self._saliency]
        if missing:
            if self._classifier is None:
                raise RuntimeError("this Detection has no classifier attached to compute saliency with")
            maps = self._classifier.saliency(np.stack([self.subframe_array(i) for i in missing]))
            self._saliency.update(zip(missing, maps, strict=True))
        return {i: self._saliency[i] for i in wanted}

    def candidate_subframes(self) -> list[SubframeResult]:
        """Subframes holding at least one candidate."""
        held = {c.subframe for c in self.candidates}
        return [s for s in self.subframes if s.index in held]

    def localizer_saliency(self) -> dict[int, np.ndarray]:
        """The localizing network's gradient saliency ``{index: (size, size) float32}`` of each
        subframe holding a candidate (empty for ``detector='paper'``)."""
        if self._localizer_saliency is None:
            return {}
        return self._localizer_saliency(self.candidate_subframes())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (0-based x = column, y = row in the input image)."""
        return {
            "image": self.name,
            "detector": self.detector,
            "threshold": float(self.threshold),
            "subframe_threshold": float(
                self.threshold if self.subframe_threshold is None else self.subframe_threshold
            ),
            "model": self.model,
            "subframes": [
                {
                    "index": s.index,
                    "x0": s.x0,
                    "y0": s.y0,
                    "size": s.size,
                    "probability": round(float(s.probability), 6),
                    "blob": bool(s.blob),
                }
                for s in self.subframes
            ],
            "candidates": [
                {
                    "x": round(c.x, 3),
                    "y": round(c.y, 3),
                    "probability": round(c.probability, 6),
                    "significance": round(c.significance, 3),
                    "radius": round(c.radius, 2),
                    "subframe": c.subframe,
                    "source": c.source,
                }
                for c in self.candidates
            ],
            "rejected": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items()}
                for r in self.rejected
            ],
            "parameters": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.parameters).items()
            },
            "preparation": jsonable(self.preparation),
        }

    def _subframe(self, index: int) -> SubframeResult:
        for s in self.subframes:
            if s.index == index:
                return s
        raise IndexError(f"no subframe with index {index} (0..{len(self.subframes) - 1})")


def matched_filter(image: np.ndarray, sigmas: tuple[float, ...], background_sigma: float) -> np.ndarray:
    """Significance maps of a multi-scale Gaussian matched filter.

    The image is high-passed (minus its ``background_sigma`` Gaussian smoothing) and smoothed
    with a Gaussian of each width in ``sigmas`` (both in one product of transfer functions, by
    FFT on a reflect-padded copy); each map is divided by its robust standard deviation, so its
    values are signal-to-noise ratios whatever the noise correlation.  A Gaussian blob of width
    s peaks at scale s; an ideal uniform disc of radius R at about R / 1.585.

    Parameters
    ----------
    image : numpy.ndarray
        2-D prepared image (blobs positive), finite.
    sigmas : tuple of float
        Matched-filter widths in pixels.
    background_sigma : float
        Width of the background Gaussian.

    Returns
    -------
    numpy.ndarray
        ``(len(sigmas), H, W)`` float32.
    """
    img = np.asarray(image, dtype=np.float32)
    out = np.empty((len(sigmas), *img.shape), dtype=np.float32)

    def keep(k: int, significance: np.ndarray) -> None:
        out[k] = significance

    _matched_filter_scales(img, sigmas, background_sigma, keep)
    return out


def matched_filter_peak(image: np.ndarray, sigmas: tuple[float, ...], background_sigma: float) -> np.ndarray:
    """``matched_filter(...).max(axis=0)`` without holding every scale's map: ``(H, W)`` float32."""
    img = np.asarray(image, dtype=np.float32)
    out = np.full(img.shape, -np.inf, dtype=np.float32)
    lock = threading.Lock()

    def fold(k: int, significance: np.ndarray) -> None:
        with lock:  # the maximum does not depend on the order the scales arrive in
            np.maximum(out, significance, out=out)

    _matched_filter_scales(img, sigmas, background_sigma, fold)
    return out


def _matched_filter_scales(
    img: np.ndarray,
    sigmas: tuple[float, ...],
    background_sigma: float,
    sink: Callable[[int, np.ndarray], None],
) -> None:
    """Compute each scale's significance map of `matched_filter` (in threads) and pass it to ``sink``."""
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    pad = int(min(math.ceil(3.0 * background_sigma), min(img.shape) - 1))
    padded = np.pad(img, pad, mode="reflect")
    rows, cols = (sp_fft.next_fast_len(n, real=True) for n in padded.shape)
    spectrum = sp_fft.rfft2(padded, s=(rows, cols), workers=1)
    fy = sp_fft.fftfreq(rows).astype(np.float32)[:, None]
    fx = sp_fft.rfftfreq(cols).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    two_pi2 = np.float32(2.0 * math.pi**2)
    highpass = 1.0 - np.exp(-two_pi2 * np.float32(background_sigma**2) * f2)

    def one(k: int) -> None:
        transfer = np.exp(-two_pi2 * np.float32(sigmas[k] ** 2) * f2) * highpass
        smooth = sp_fft.irfft2(spectrum * transfer, s=(rows, cols), workers=1)
        smooth = smooth[pad : pad + img.shape[0], pad : pad + img.shape[1]]
        noise = robust_sigma(smooth[::3, ::3])
        sink(k, (smooth / noise).astype(np.float32, copy=False) if noise > 0 else np.zeros_like(img))

    # the scales are independent; FFTs and medians release the GIL
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 8, len(sigmas)) or 1) as pool:
        list(pool.map(one, range(len(sigmas))))


def _quadratic_offset(minus: float, centre: float, plus: float) -> float:
    """Vertex offset (in [-0.5, 0.5]) of the parabola through three equally spaced samples."""
    denom = minus - 2.0 * centre + plus
    if denom >= 0:  # not a maximum
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / denom, -0.5, 0.5))


def _refine(
    snr: np.ndarray, scale: int, row: int, col: int, sigmas: tuple[float, ...]
) -> tuple[float, float, float]:
    """Sub-pixel (row, col) from the best-scale map and an interpolated scale sigma."""
    plane = snr[scale]
    h, w = plane.shape
    dy = (
        _quadratic_offset(plane[row - 1, col], plane[row, col], plane[row + 1, col])
        if 0 < row < h - 1
        else 0.0
    )
    dx = (
        _quadratic_offset(plane[row, col - 1], plane[row, col], plane[row, col + 1])
        if 0 < col < w - 1
        else 0.0
    )
    sigma = sigmas[scale]
    if 0 < scale < len(sigmas) - 1:
        # parabola in log(sigma) through the neighbouring scales
        logs = np.log(sigmas[scale - 1 : scale + 2])
        vals = snr[scale - 1 : scale + 2, row, col].astype(float)
        t = _quadratic_offset(vals[0], vals[1], vals[2])
        step = (logs[2] - logs[0]) / 2.0
        sigma = float(math.exp(logs[1] + t * step))
    return row + dy, col + dx, sigma


def _disc_min(plane: np.ndarray, row: float, col: float, radius: float) -> float:
    """Minimum of ``plane`` within ``radius`` of (row, col)."""
    h, w = plane.shape
    r0, r1 = max(int(row - radius), 0), min(int(row + radius) + 2, h)
    c0, c1 = max(int(col - radius), 0), min(int(col + radius) + 2, w)
    patch = plane[r0:r1, c0:c1]
    yy, xx = np.mgrid[r0:r1, c0:c1]
    inside = (yy - row) ** 2 + (xx - col) ** 2 <= radius * radius
    return float(patch[inside].min()) if inside.any() else 0.0


def _elongation(plane: np.ndarray, row: int, col: int, sigma: float) -> float:
    """Ratio of the principal curvatures of ``plane`` at an integer peak (1 = round).

    Finite differences with a step of about half the filter width; a saddle or a flat point
    gives infinity.
    """
    h = max(int(round(sigma / 2.0)), 1)
    rows, cols = plane.shape
    if not (h <= row < rows - h and h <= col < cols - h):
        return 1.0
    f = plane.astype(np.float64)
    c0 = f[row, col]
    dxx = f[row, col + h] - 2 * c0 + f[row, col - h]
    dyy = f[row + h, col] - 2 * c0 + f[row - h, col]
    dxy = (f[row + h, col + h] - f[row + h, col - h] - f[row - h, col + h] + f[row - h, col - h]) / 4.0
    half_trace = 0.5 * (dxx + dyy)
    root = math.sqrt(max(half_trace**2 - (dxx * dyy - dxy * dxy), 0.0))
    l1, l2 = half_trace - root, half_trace + root  # l1 <= l2; a maximum has both negative
    if l2 >= 0:
        return math.inf
    return l1 / l2


def reference_stack(
    difference: Any, reference: np.ndarray | None, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The reference median stack, if given or carried by a DifferenceResult."""
    stack = reference if reference is not None else getattr(difference, "stack", None)
    if stack is None:
        return None
    stack = np.asarray(stack)
    if stack.shape != shape:
        raise ValueError(f"reference stack shape {stack.shape} does not match the difference {shape}")
    return stack


def _local_amplitude(image: np.ndarray, row: int, col: int, sigma: float, background_sigma: float) -> float:
    """High-passed, Gaussian-smoothed value of ``-image`` at (row, col), on a local patch."""
    half = int(math.ceil(3.0 * background_sigma + 3.0 * sigma))
    rows, cols = image.shape
    r0, r1 = max(row - half, 0), min(row + half + 1, rows)
    c0, c1 = max(col - half, 0), min(col + half + 1, cols)
    patch = -np.asarray(image[r0:r1, c0:c1], dtype=np.float32)
    finite = np.isfinite(patch)
    if not finite.any():
        return 0.0
    patch = np.where(finite, patch, np.median(patch[finite])).astype(np.float32)
    highpass = patch - ndimage.gaussian_filter(patch, background_sigma, mode="reflect")
    smooth = ndimage.gaussian_filter(highpass, sigma, mode="reflect")
    return float(smooth[row - r0, col - c0])


def _is_existing(
    difference: np.ndarray,
    stack: np.ndarray,
    row: int,
    col: int,
    sigma: float,
    background_sigma: float,
    ratio: float,
) -> bool:
    """True when the stack holds a blob at (row, col) ``ratio`` times deeper than the difference feature."""
    feature = _local_amplitude(difference, row, col, sigma, background_sigma)
    existing = _local_amplitude(stack, row, col, sigma, background_sigma)
    return feature > 0 and existing >= ratio * feature


def _masked_window(
    image: np.ndarray,
    y0: int,
    x0: int,
    size: int,
    centre: tuple[float, float],
    features: list[tuple[float, float, float]],
    separation: float,
    *,
    seed: int,
) -> np.ndarray:
    """A ``size`` x ``size`` window with every feature other than ``centre`` replaced by noise.

    Each feature (row, col, radius) farther than ``separation`` from ``centre`` is replaced, within
    ``2 * radius + 3`` px, by unit Gaussian noise (the prepared image's noise level), drawn from a
    generator seeded with ``seed`` so results are reproducible.
    """
    window = np.array(image[y0 : y0 + size, x0 : x0 + size], dtype=np.float32)
    rng = np.random.default_rng(seed)
    for row, col, radius in features:
        if (row - centre[0]) ** 2 + (col - centre[1]) ** 2 < separation**2:
            continue
        reach = 2.0 * radius + 3.0
        r0, r1 = max(int(row - reach) - y0, 0), min(int(row + reach) + 2 - y0, size)
        c0, c1 = max(int(col - reach) - x0, 0), min(int(col + reach) + 2 - x0, size)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.ogrid[r0:r1, c0:c1]
        inside = (yy + y0 - row) ** 2 + (xx + x0 - col) ** 2 <= reach * reach
        patch = window[r0:r1, c0:c1]
        patch[inside] = rng.standard_normal(int(inside.sum())).astype(np.float32)
    return window


def _binned(window: np.ndarray, factor: int, lo: float, hi: float) -> np.ndarray:
    """Bin a window ``factor`` x ``factor`` and bring it back to the prepared image's units.

    The binned window is divided by its robust noise (so the noise is unit again, as the CNN was
    trained on) and clipped to ``[lo, hi]``.
    """
    if factor == 1:
        return window
    n = window.shape[0] // factor
    binned = window[: n * factor, : n * factor].reshape(n, factor, n, factor).mean(axis=(1, 3))
    med = float(np.median(binned))
    noise = robust_sigma(binned)
    scaled = (binned - med) / noise if noise > 0 else binned - med
    return np.clip(scaled, lo, hi).astype(np.float32)


def _dihedral_proba(classifier: BlobClassifier, windows: np.ndarray) -> np.ndarray:
    """Mean blob probability of each window over its 8 rotations and flips."""
    views = [np.rot90(windows, k, axes=(1, 2)) for k in range(4)]
    views += [np.rot90(np.swapaxes(windows, 1, 2), k, axes=(1, 2)) for k in range(4)]
    stacked = np.ascontiguousarray(np.concatenate(views, axis=0))
    return classifier.predict_proba(stacked).reshape(8, len(windows)).mean(axis=0).astype(np.float32)


def _window_origins(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Origins (y0, x0) of size x size windows centred on the points, kept inside the image."""
    y0 = np.clip(np.rint(rows).astype(int) - size // 2, 0, shape[0] - size)
    x0 = np.clip(np.rint(cols).astype(int) - size // 2, 0, shape[1] - size)
    return y0, x0


def subframe_index(x: float, y: float, subframes: list[SubframeResult]) -> int:
    """Index of the seed subframe containing the 0-based (x, y); the nearest one if none contains it."""
    best, best_d = -1, math.inf
    for s in subframes:
        cx = min(max(x, s.x0), s.x0 + s.size - 1)
        cy = min(max(y, s.y0), s.y0 + s.size - 1)
        d = (cx - x) ** 2 + (cy - y) ** 2
        if d < best_d:
            best, best_d = s.index, d
    return best


def checked_input(difference: Any, threshold: float, size: int) -> np.ndarray:
    """The 2-D difference array of ``difference`` (an array or a `DifferenceResult`).

    Raises
    ------
    ValueError
        If ``threshold`` is not in [0, 1], or the image is not 2-D or smaller than one ``size``
        x ``size`` subframe.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1]")
    data = np.asarray(
        difference if isinstance(difference, np.ndarray) else getattr(difference, "data", difference)
    )
    if data.ndim != 2:
        raise ValueError(f"difference must be a 2-D image, got shape {data.shape}")
    if data.shape[0] < size or data.shape[1] < size:
        raise ValueError(f"difference {data.shape} is smaller than one {size}x{size} subframe")
    return data


def seed_subframes(
    data: np.ndarray, classifier: BlobClassifier, threshold: float
) -> tuple[np.ndarray, dict[str, Any], list[SubframeResult]]:
    """The seed's protocol on a 2-D difference: prepare it, cut the fixed subframes, classify each.

    Returns the prepared image (float32, blobs positive), the preparation statistics and the
    subframes (``blob`` where the probability reaches ``threshold``).
    """
    size = classifier.size
    prepared_image = prepare(data, clip_factor=classifier.clip_factor)
    image = np.asarray(prepared_image.data, dtype=np.float32)
    tiles, offsets = tile(image, size=size)
    probabilities = classifier.predict_proba(tiles)
    subframes = [
        SubframeResult(
            index=i, x0=int(x0), y0=int(y0), size=size, probability=float(prob), blob=bool(prob >= threshold)
        )
        for i, ((x0, y0), prob) in enumerate(zip(np.asarray(offsets), probabilities, strict=True))
    ]
    return image, dict(getattr(prepared_image, "stats", {}) or {}), subframes


def detect(
    difference: np.ndarray | DifferenceResult,
    classifier: BlobClassifier,
    *,
    threshold: float | None = None,
    name: str | None = None,
    parameters: DetectionParameters | None = None,
    reference: np.ndarray | None = None,
) -> Detection:
    """Find new blobs in a blob difference image.

    Parameters
    ----------
    difference : numpy.ndarray
        2-D difference image (newest blob image minus the reference median; new blobs are
        NEGATIVE), at least one subframe on each side.  NaNs are allowed.  An object with a
        ``data`` attribute (a `blobwatch.difference.DifferenceResult`) is accepted too.
    classifier : BlobClassifier
        The trained classifier; its ``clip_factor`` and ``size`` drive the preparation.
    threshold : float, optional
        Probability threshold; the classifier's own threshold by default.
    name : str, optional
        Name of the input, carried into the result.
    parameters : DetectionParameters, optional
        Matched-filter and suppression settings.
    reference : numpy.ndarray, optional
        The reference median stack the difference was made from (taken from ``difference.stack``
        when a `DifferenceResult` is given).  Enables the existing-blob test.

    Returns
    -------
    Detection
        Subframe probabilities (seed protocol) and candidates supported by both the CNN and the
        matched filter.

    Raises
    ------
    ValueError
        If the image is not 2-D, is smaller than a subframe, or the threshold is not in [0, 1].
    """
    p = parameters or DetectionParameters()
    t = classifier.threshold if threshold is None else float(threshold)
    data = checked_input(difference, t, classifier.size)
    size = classifier.size

    # 1. the seed's protocol: fixed subframes
    image, preparation, subframes = seed_subframes(data, classifier, t)
    detection = Detection(
        threshold=t,
        subframes=subframes,
        candidates=[],
        prepared=image,
        name=name,
        preparation=preparation,
        model=str(classifier.model_path) if classifier.model_path is not None else None,
        parameters=p,
        _classifier=classifier,
    )

    # 2. matched filter and seeds
    snr = matched_filter(image, p.sigmas, p.background_sigma)
    best_scale = np.argmax(snr, axis=0)
    best = np.take_along_axis(snr, best_scale[None], axis=0)[0]
    footprint = max(int(round(p.separation)), 1)
    local_max = best == ndimage.maximum_filter(best, size=2 * footprint + 1, mode="nearest")
    inner = np.zeros_like(local_max)
    b = max(p.border, 1)
    inner[b:-b, b:-b] = True
    floor = min(p.min_significance, p.saliency_significance)
    peaks = local_max & inner & (best >= floor)
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-best[rows, cols])
    rows, cols = rows[order], cols[order]
    strong = best[rows, cols] >= p.min_significance

    seeds: list[tuple[int, int, str]] = [
        (int(r), int(c), "matched-filter") for r, c in zip(rows[strong], cols[strong], strict=True)
    ]
    # saliency peaks of flagged subframes select weaker local maxima
    weak_rows, weak_cols = rows[~strong], cols[~strong]
    if detection.flagged and weak_rows.size:
        maps = detection.saliency_maps()
        for s in detection.flagged:
            sr, sc = saliency_peak(maps[s.index], sigma=3.0)
            sr, sc = sr + s.y0, sc + s.x0
            d2 = (weak_rows - sr) ** 2 + (weak_cols - sc) ** 2
            k = int(np.argmin(d2))
            if d2[k] <= p.saliency_radius**2:
                seeds.append((int(weak_rows[k]), int(weak_cols[k]), "saliency"))

    # 3. refine, then reject point-like, elongated, dip and existing-blob seeds
    stack = reference_stack(difference, reference, data.shape)
    kept: list[tuple[float, float, float, float, str]] = []  # row, col, sigma, significance, source
    rejected: list[Rejection] = []
    for r, c, source in seeds:
        scale = int(best_scale[r, c])
        significance = float(best[r, c])
        row, col, sigma = _refine(snr, scale, r, c, p.sigmas)
        if any((row - kr) ** 2 + (col - kc) ** 2 < p.separation**2 for kr, kc, *_ in kept):
            continue
        radius = DISC_RADIUS_PER_SIGMA * sigma
        reason, lobe = None, None
        if radius < p.min_radius:
            reason = "small"
        elif _elongation(snr[scale], r, c, p.sigmas[scale]) > p.max_elongation:
            reason = "elongated"
        else:
            lobe = _disc_min(snr[scale], row, col, p.dip_radius * radius + 3.0)
            if lobe <= -max(p.dip_ratio * significance, p.dip_floor):
                reason = "dip"
            elif stack is not None and _is_existing(
                data, stack, r, c, p.sigmas[scale], p.background_sigma, p.existing_ratio
            ):
                reason = "existing"
        if reason is not None:
            rejected.append(
                Rejection(
                    x=col,
                    y=row,
                    significance=significance,
                    reason=reason,
                    dip_significance=None if lobe is None else -lobe,
                )
            )
            continue
        kept.append((row, col, sigma, significance, source))
        if len(kept) >= p.max_seeds:
            break

    # 4. classify a window centred on each seed (at each binning in p.binnings)
    if kept:
        # every other significant feature is masked in a seed's window, so that the CNN judges
        # the seed and not a blob or dip elsewhere in the same window
        features = [(k[0], k[1], DISC_RADIUS_PER_SIGMA * k[2]) for k in kept]
        features += [
            (r.y, r.x, DISC_RADIUS_PER_SIGMA * p.sigmas[int(best_scale[int(round(r.y)), int(round(r.x))])])
            for r in rejected
        ]
        lo, hi = -5.0, 5.0  # guard against extreme values in binned windows
        window_prob = np.zeros(len(kept), dtype=np.float32)
        for factor in p.binnings:
            span = size * factor
            if span > min(image.shape):
                continue
            arr = np.array([k[:2] for k in kept], dtype=float)
            y0, x0 = _window_origins(arr[:, 0], arr[:, 1], image.shape, span)
            windows = np.stack(
                [
                    _binned(
                        _masked_window(
                            image, int(a), int(b_), span, (row, col), features, p.separation, seed=i
                        ),
                        factor,
                        lo,
                        hi,
                    )
                    for i, (a, b_, (row, col, *_)) in enumerate(zip(y0, x0, kept, strict=True))
                ]
            )
            window_prob = np.maximum(
                window_prob,
                _dihedral_proba(classifier, windows) if p.dihedral else classifier.predict_proba(windows),
            )
        for (row, col, sigma, significance, source), prob in zip(kept, window_prob, strict=True):
            if prob >= t:
                detection.candidates.append(
                    Candidate(
                        x=float(col),
                        y=float(row),
                        probability=float(prob),
                        significance=significance,
                        radius=float(DISC_RADIUS_PER_SIGMA * sigma),
                        subframe=subframe_index(col, row, subframes),
                        source=source,
                    )
                )
            else:
                rejected.append(
                    Rejection(x=col, y=row, significance=significance, reason="cnn", probability=float(prob))
                )
    rejected.sort(key=lambda r: -r.significance)
    detection.rejected = rejected[:20]
    detection.candidates.sort(key=lambda c: -c.significance)
    return detection
