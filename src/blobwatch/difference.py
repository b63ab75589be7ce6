"""Blob difference images: the newest blob image minus the median of the preceding ones.

The seed (WFC3 ISR 2021-08, section 2) subtracts the median stack of the preceding 30 blob
images.  The CSM does not return to exactly the same angle every day, so the blob pattern moves
by a fraction of a pixel between images and every strong existing blob leaves a positive/negative
residual pair ("dip") in the difference; the seed names dips as its main source of false positives.

With ``register=True`` each reference's sub-pixel offset of the blob pattern relative to the
current image is estimated (`estimate_offset`) and only the blob-scale structure of the reference
is moved before the median (`align_blob_pattern`): detector features (bad pixels, the non-finite
border, the smooth background) stay where they are, as they do on the detector.

Offsets convention: ``(dy, dx)`` is the displacement that maps the reference onto the current
image, ``current(y, x) ~ reference(y - dy, x - dx)``, the same sign as `scipy.ndimage.shift`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import mmap
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from blobwatch.errors import InputError
from blobwatch.fits_io import BlobImage, format_shape
from blobwatch.lru import LRUCache
from blobwatch.names import header_name
from blobwatch.stats import robust_sigma

if TYPE_CHECKING:
    from blobwatch.refstore import ReferenceStore

__all__ = [
    "DifferenceResult",
    "FewReferencesWarning",
    "OffsetFrame",
    "PreparedCache",
    "RegistrationParams",
    "RegistrationWarning",
    "align_blob_pattern",
    "blob_difference",
    "estimate_offset",
    "nan_median_stack",
    "registration_key",
    "shift_image",
    "write_difference",
]

log = logging.getLogger(__name__)

#: The seed's number of references.
SEED_REFERENCES = 30


class FewReferencesWarning(UserWarning):
    """Fewer references than the seed's 30 were given."""


class RegistrationWarning(UserWarning):
    """A reference could not be registered; it was used without alignment."""


class _RegistrationFailed(Exception):
    """The offset estimate did not converge to a plausible value."""


@dataclass(frozen=True)
class RegistrationParams:
    """Tuning of the blob-pattern registration.

    Attributes
    ----------
    background_sigma : float
        Sigma (px) of the Gaussian low-pass removed as the smooth background; larger than a
        blob (10-20 px across) so that blobs survive the high-pass.
    smooth_sigma : float
        Gaussian sigma (px) applied to both images while estimating the offset (noise suppression).
    outlier_sigma : float
        Isolated pixels deviating more than this many robust sigmas from their 8 neighbours are
        treated as detector defects: they do not move and do not steer the estimate.
    max_iterations : int
        Most Gauss-Newton iterations; no convergence means the reference is not registered.
    max_step : float
        Largest change of the offset in one iteration (px), a trust region.
    max_offset : float
        Largest plausible offset (px); beyond it the reference is used without alignment.
    tolerance : float
        Stop when the update is smaller than this (px).
    robust_sigma : float
        Once the steps are below 0.1 px, pixels whose residual exceeds this many sigmas (e.g. a
        new blob) get zero weight, re-evaluated every iteration.
    support_sigma : float
        Only pixels where the smoothed high-passed current image or its gradient exceeds this
        many robust sigmas (grown by ``support_grow`` px) enter the estimate.
    support_grow : int
        Growth of the support (px).
    """

    background_sigma: float = 10.0
    smooth_sigma: float = 1.5
    outlier_sigma: float = 8.0
    max_iterations: int = 15
    tolerance: float = 2e-3
    robust_sigma: float = 4.0
    max_step: float = 1.0
    max_offset: float = 3.0
    support_sigma: float = 4.0
    support_grow: int = 3


@dataclass(frozen=True)
class DifferenceResult:
    """A blob difference image and how it was made.

    Attributes
    ----------
    data : numpy.ndarray
        float32 difference ``current - median(aligned references)``; NaN where unusable.
    stack : numpy.ndarray
        float32 median of the (aligned) references.
    offsets : numpy.ndarray
        (n, 2) float (dy, dx) of each reference's blob pattern relative to the current image
        (zeros when not registered), in the order of ``reference_paths``.
    method : str
        ``"median"`` or ``"registered-median (...)"``.
    reference_paths : list of str or None
        References used, oldest first.
    reference_mjds : numpy.ndarray
        Their observation times.
    current : BlobImage
        The current image.
    """

    data: np.ndarray
    stack: np.ndarray
    offsets: np.ndarray
    method: str
    reference_paths: list[str | None]
    current: BlobImage
    reference_mjds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unregistered: tuple[int, ...] = ()
    """Indices (in ``reference_paths``) of references whose registration failed (used unaligned)."""

    @property
    def n_references(self) -> int:
        """Number of references in the median."""
        return len(self.reference_paths)


# --------------------------------------------------------------------------------------------
# NaN-aware median of a stack
# --------------------------------------------------------------------------------------------


def _nan_median_rows(block: np.ndarray) -> np.ndarray:
    """NaN-aware median along axis 0 of a (n, rows, cols) block, by sorting (NaN sorts last).

    The block is transposed to (rows, cols, n) first: numpy sorts along a contiguous last axis
    with SIMD kernels, about 3x faster than along the strided first axis (the copy included).
    """
    ordered = np.moveaxis(block, 0, -1).copy()
    ordered.sort(axis=-1)
    count = np.isfinite(ordered).sum(axis=-1)
    lo = np.maximum((count - 1) // 2, 0)[..., None]
    hi = np.maximum(count // 2, 0)[..., None]
    med = 0.5 * (
        np.take_along_axis(ordered, lo, axis=-1)[..., 0] + np.take_along_axis(ordered, hi, axis=-1)[..., 0]
    )
    med[count == 0] = np.nan
    return med.astype(np.float32, copy=False)


def nan_median_stack(stack: np.ndarray, *, workers: int | None = None) -> np.ndarray:
    """Median along axis 0 ignoring NaN (as `numpy.nanmedian`), several times faster.

    Parameters
    ----------
    stack : numpy.ndarray
        (n, rows, cols) array.
    workers : int, optional
        Threads over row blocks (default: number of CPUs, at most 8).

    Returns
    -------
    numpy.ndarray
        (rows, cols) float32; NaN where every value is NaN.
    """
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"stack must be 3-D (n, rows, cols), got shape {stack.shape}")
    workers = workers or min(os.cpu_count() or 1, 8)
    rows = stack.shape[1]
    # blocks of at most 32 rows (about 4 MB of a 30 x 1024-column stack): as fast as larger ones,
    # and each thread's sorted copy stays small (128-row blocks cost 80 MB more peak memory)
    step = max(8, min(32, -(-rows // (4 * workers))))
    bounds = [(r, min(r + step, rows)) for r in range(0, rows, step)]
    out = np.empty(stack.shape[1:], dtype=np.float32)

    def work(bound: tuple[int, int]) -> None:
        out[bound[0] : bound[1]] = _nan_median_rows(stack[:, bound[0] : bound[1]])

    if workers == 1 or len(bounds) == 1:
        for bound in bounds:
            work(bound)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, bounds))
    return out


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def shift_image(image: np.ndarray, dy: float, dx: float, *, order: int = 3) -> np.ndarray:
    """Shift a whole image by (dy, dx) pixels with a spline, NaN-aware.

    ``out(y, x) = image(y - dy, x - dx)`` (the `scipy.ndimage.shift` convention).  Non-finite
    pixels are filled with the finite median before interpolation and every output pixel whose
    interpolation touched one is set back to NaN.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    dy, dx : float
        Shift in rows and columns.
    order : int
        Spline order (1-5).

    Returns
    -------
    numpy.ndarray
        float32 shifted image.
    """
    image = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(image)
    if not valid.any():
        return np.full_like(image, np.nan)
    fill = np.float32(np.median(image[valid]))
    filled = np.where(valid, image, fill)
    out = ndimage.shift(filled, (dy, dx), order=order, mode="nearest", output=np.float32)
    if not valid.all():
        moved = ndimage.shift(valid.astype(np.float32), (dy, dx), order=1, mode="nearest")
        out[moved < 0.999] = np.nan
    return out


@dataclass
class _Prepared:
    """An image split into smooth background, blob-scale structure and static defects."""

    valid: np.ndarray  # finite and not an isolated defect
    finite: np.ndarray  # finite pixels
    spectrum: np.ndarray  # rfft2 of the high-passed, defect-free, gap-filled image (complex64)


def _mad_sigma(values: np.ndarray) -> float:
    """`blobwatch.stats.robust_sigma` of a subsample of at most ~200k values (0.0 for none)."""
    return robust_sigma(values[:: max(1, values.size // 200_000)])


def _sum8(values: np.ndarray) -> np.ndarray:
    """Sum of the 8 neighbours of every pixel (zero outside the image), by slicing."""
    column = values.copy()
    column[1:] += values[:-1]
    column[:-1] += values[1:]
    box = column.copy()
    box[:, 1:] += column[:, :-1]
    box[:, :-1] += column[:, 1:]
    box -= values
    return box


def _max8(values: np.ndarray) -> np.ndarray:
    """Maximum over the 8 neighbours of every pixel (-inf outside the image), by slicing."""
    padded = np.pad(values, 1, constant_values=-np.inf)
    rows, cols = values.shape
    out = np.full(values.shape, -np.inf, dtype=values.dtype)
    for dr in range(3):
        for dc in range(3):
            if dr != 1 or dc != 1:
                np.maximum(out, padded[dr : dr + rows, dc : dc + cols], out=out)
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a (2r+1)^2 square, by shifted ORs (fast for small r)."""
    if radius <= 0:
        return mask.copy()
    out = mask.copy()
    for k in range(1, radius + 1):
        out[k:] |= mask[:-k]
        out[:-k] |= mask[k:]
    grown = out.copy()
    for k in range(1, radius + 1):
        grown[:, k:] |= out[:, :-k]
        grown[:, :-k] |= out[:, k:]
    return grown


def _coarse_background(filled: np.ndarray, valid: np.ndarray, block: int = 32) -> np.ndarray:
    """Blockwise mean of the valid pixels, expanded back to full size (a gap filler)."""
    rows, cols = filled.shape
    pr, pc = -rows % block, -cols % block
    values = np.pad(np.where(valid, filled, 0), ((0, pr), (0, pc)))
    weights = np.pad(valid.astype(np.float32), ((0, pr), (0, pc)))
    shape = (values.shape[0] // block, block, values.shape[1] // block, block)
    total = values.reshape(shape).sum(axis=(1, 3))
    count = weights.reshape(shape).sum(axis=(1, 3))
    overall = total.sum() / max(count.sum(), 1.0)
    means = np.where(count > 0, total / np.maximum(count, 1.0), overall).astype(np.float32)
    return np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:rows, :cols]


def _prepare(image: np.ndarray, frame: _Frame) -> _Prepared:
    """Neutralize isolated defects, fill gaps, and return the high-passed spectrum.

    Isolated defects (hot/cold pixels, cosmic-ray residuals) deviate from the mean of their
    8 neighbours by more than ``outlier_sigma`` robust sigmas, also when the neighbours are
    computed without the first-pass outliers.  They are replaced by that neighbour mean, so
    they neither steer the offset estimate nor move when the blob pattern is shifted.  A blob
    core flagged this way costs nothing: it is an extremum, where the gradient vanishes.
    """
    params = frame.params
    finite = np.isfinite(image)
    filled = np.where(finite, image, _coarse_background(np.nan_to_num(image), finite))
    filled = filled.astype(np.float32, copy=False)
    validf = finite.astype(np.float32)
    defect = np.zeros_like(finite)
    sigma = 0.0
    step = np.array([-1, -1, -1, 0, 0, 1, 1, 1]), np.array([-1, 0, 1, -1, 1, -1, 0, 1])
    # Two rounds: a weaker defect next to a strong one shows only after the strong one is gone.
    for _ in range(2):
        # Gaps hold the coarse background, so the plain 8-neighbour mean is good enough here.
        deviation = filled - _sum8(filled) * np.float32(0.125)
        if sigma == 0.0:
            sigma = _mad_sigma(deviation[finite]) or 1.0
        strength = np.abs(deviation) * validf
        # First pass: strong pixels not dominated by a neighbour (a defect's neighbours
        # deviate too, by 1/8 of the defect; two adjacent defects are both kept).
        suspect = finite & ~defect & (strength > params.outlier_sigma * sigma)
        suspect &= strength >= 0.5 * _max8(strength)
        rows, cols = np.nonzero(suspect)
        if not rows.size:
            break
        # Second pass, at the suspects only: compare with the mean of their clean neighbours.
        clean = finite & ~suspect & ~defect
        nr = np.clip(rows[:, None] + step[0], 0, finite.shape[0] - 1)
        nc = np.clip(cols[:, None] + step[1], 0, finite.shape[1] - 1)
        weight = clean[nr, nc]
        count = weight.sum(axis=1)
        mean = np.where(weight, filled[nr, nc], 0).sum(axis=1) / np.maximum(count, 1)
        value = filled[rows, cols]
        hit = (count > 0) & (np.abs(value - mean) > params.outlier_sigma * sigma)
        defect[rows[hit], cols[hit]] = True
        filled[rows[hit], cols[hit]] = mean[hit]
    filled[~finite] = 0.0
    # Smooth background by normalized convolution (NaN-aware Gaussian low-pass); the structure
    # is zero where the image is non-finite, which continues a zero-mean field without a step.
    lowpass = frame.lowpass
    numerator = frame.irfft(sp_fft.rfft2(filled, workers=1) * lowpass)
    denominator = frame.lowpassed_weight(finite)
    structure = np.where(finite, filled - numerator / np.maximum(denominator, 1e-6), np.float32(0))
    spectrum = sp_fft.rfft2(structure.astype(np.float32, copy=False), workers=1)
    return _Prepared(valid=finite & ~defect, finite=finite, spectrum=spectrum)


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ky = sp_fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = sp_fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return ky, kx


def _ramp(ky: np.ndarray, kx: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Fourier multiplier of a (dy, dx) translation: exp(-2 pi i (ky dy + kx dx))."""
    phase_y = np.exp(np.complex64(-2j * np.pi * dy) * ky)
    phase_x = np.exp(np.complex64(-2j * np.pi * dx) * kx)
    return phase_y * phase_x


def _gauss_transfer(ky: np.ndarray, kx: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(np.float32(-2.0 * np.pi**2 * sigma**2) * (ky**2 + kx**2)).astype(np.float32)


class _Frame:
    """Fourier-domain filters for one image shape."""

    def __init__(self, shape: tuple[int, int], params: RegistrationParams) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.params = params
        self.ky, self.kx = _frequencies(self.shape)
        self.lowpass = _gauss_transfer(self.ky, self.kx, params.background_sigma)
        self.smooth = _gauss_transfer(self.ky, self.kx, params.smooth_sigma)
        self._weights: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def lowpassed_weight(self, finite: np.ndarray) -> np.ndarray:
        """Low-passed validity mask, cached per mask (references share their NaN pattern)."""
        key = hashlib.sha1(np.packbits(finite).tobytes()).digest()
        with self._lock:
            cached = self._weights.get(key)
        if cached is None:
            cached = self.irfft(sp_fft.rfft2(finite.astype(np.float32), workers=1) * self.lowpass)
            with self._lock:
                if len(self._weights) < 8:
                    self._weights[key] = cached
        return cached

    def prepare(self, image: np.ndarray) -> _Prepared:
        return _prepare(image, self)

    def irfft(self, spectrum: np.ndarray) -> np.ndarray:
        return sp_fft.irfft2(spectrum, s=self.shape, workers=1).astype(np.float32, copy=False)

    def align(self, image: np.ndarray, reference: _Prepared, dy: float, dx: float) -> np.ndarray:
        """Move only the blob-scale structure of ``image`` by (dy, dx); defects and background stay."""
        if abs(dy) < 1e-4 and abs(dx) < 1e-4:
            return np.asarray(image, dtype=np.float32)
        ramp = _ramp(self.ky, self.kx, dy, dx)
        ramp -= 1
        change = self.irfft(reference.spectrum * ramp)  # shifted structure - structure
        aligned = image + change  # NaN stays NaN
        # Gap-filled pixels were interpolated; beyond a one-pixel move their neighbours are
        # unreliable, so grow the non-finite mask by the whole-pixel part of the shift.
        reach = int(max(abs(dy), abs(dx)))
        if reach and not reference.finite.all():
            aligned[_dilate(~reference.finite, reach)] = np.nan
        return aligned


class _Template:
    """The current image prepared once for registering many references against it."""

    def __init__(
        self,
        image: np.ndarray,
        params: RegistrationParams,
        prepare: Callable[[_Frame], _Prepared] | None = None,
    ) -> None:
        self.params = params
        self.frame = frame = _Frame(image.shape, params)
        self.prep = prepare(frame) if prepare is not None else frame.prepare(image)
        # The estimate works on the smoothed images, which are band-limited: evaluate them on a
        # grid decimated by ``factor`` (cropping the spectrum), four times fewer pixels to FFT.
        rows, cols = frame.shape
        self.factor = f = 2 if rows % 4 == 0 and cols % 4 == 0 and min(rows, cols) >= 128 else 1
        self.coarse_shape = (rows // f, cols // f)
        self.ky, self.kx = self.crop(frame.ky), self.crop(frame.kx)
        self.smooth = self.crop(frame.smooth)
        spec = self.crop(self.prep.spectrum) * self.smooth
        two_pi_i = np.complex64(2j * np.pi)
        values = self.irfft(spec)
        grad_y = self.irfft(spec * (two_pi_i * self.ky))
        grad_x = self.irfft(spec * (two_pi_i * self.kx))
        # Support: where the (smoothed) blob pattern or its gradient stands out of the noise,
        # grown by a few pixels.  Pure-noise pixels would only add noise to the gradients,
        # which biases a Lucas-Kanade estimate towards zero, so they are left out.
        self.margin = int(np.ceil(3 * params.smooth_sigma)) + 1
        usable = ~_dilate(~self.prep.valid, self.margin)[::f, ::f]
        level = _mad_sigma(values[usable])
        grad = np.hypot(grad_y, grad_x)
        # |gradient| of Gaussian noise is Rayleigh distributed: sigma = median / sqrt(2 ln 2).
        glevel = float(np.median(grad[usable][:: max(1, int(usable.sum()) // 200_000)])) / 1.1774
        seed = (np.abs(values) > params.support_sigma * level) | (grad > params.support_sigma * glevel)
        support = _dilate(seed & usable, -(-params.support_grow // f)) & usable
        self.index = np.flatnonzero(support)
        self.values = values.ravel()[self.index]
        self.grad_y = grad_y.ravel()[self.index]
        self.grad_x = grad_x.ravel()[self.index]
        self.signal = float(np.sqrt(np.mean(self.values**2))) if self.index.size else 0.0

    def crop(self, spectrum: np.ndarray) -> np.ndarray:
        """Keep the frequencies of the decimated grid (rows: both ends; columns: the start)."""
        if self.factor == 1:
            return spectrum
        half = self.coarse_shape[0] // 2
        cols = self.coarse_shape[1] // 2 + 1
        if spectrum.shape[0] == 1:  # a row vector of frequencies
            return spectrum[:, :cols]
        rows = np.concatenate([spectrum[:half], spectrum[spectrum.shape[0] - half :]], axis=0)
        return rows[:, :cols] if rows.shape[1] > 1 else rows

    def irfft(self, spectrum: np.ndarray) -> np.ndarray:
        return sp_fft.irfft2(spectrum, s=self.coarse_shape, workers=1).astype(np.float32, copy=False)

    def register(self, reference: _Prepared) -> tuple[float, float]:
        """Gauss-Newton estimate of (dy, dx) with shift(reference, dy, dx) ~ template."""
        p = self.params
        f = self.factor
        if reference.valid.all():
            weight = np.ones(self.index.size, dtype=np.float32)
        else:
            usable = ~_dilate(~reference.valid, self.margin)[::f, ::f]
            weight = usable.ravel()[self.index].astype(np.float32)
        spec = self.crop(reference.spectrum) * self.smooth
        gy, gx = self.grad_y, self.grad_x
        base = weight
        kept = base > 0
        dy = dx = 0.0
        robust = False
        for iteration in range(p.max_iterations):
            moved = self.irfft(spec * _ramp(self.ky, self.kx, dy, dx)).ravel()[self.index]
            raw = self.values - moved
            if iteration == 0:
                raw_at_zero = raw
            # Iteratively re-weighted: pixels whose residual is far above the noise (a new
            # blob, a changed defect) cannot steer the estimate.  The floor keeps a noise-free
            # image from rejecting its own blob edges.  Until the steps are small, only residuals
            # that are also comparable to the template itself count as new structure (a shift
            # of existing blobs leaves residuals well below their own amplitude).
            scale = max(_mad_sigma(raw[kept]), 0.05 * self.signal)
            outlier = np.abs(raw) > p.robust_sigma * scale
            if not robust:
                outlier &= np.abs(raw) > 0.5 * np.abs(self.values)
            weight = base * ~outlier
            resid = raw * weight
            wgy, wgx = gy * weight, gx * weight
            a = np.array(
                [[np.dot(wgy, gy), np.dot(wgy, gx)], [np.dot(wgx, gy), np.dot(wgx, gx)]],
                dtype=np.float64,
            )
            if not np.isfinite(a).all() or np.linalg.det(a) <= 1e-12 * max(np.trace(a), 1e-30) ** 2:
                raise _RegistrationFailed("no blob structure to register on")
            b = -np.array([np.dot(wgy, resid), np.dot(wgx, resid)], dtype=np.float64)
            # current ~ S_d R - delta . grad  =>  resid = C - S_d R ~ -delta . grad
            step = np.linalg.solve(a, b)
            small = float(np.max(np.abs(step)))
            if small > p.max_step:  # trust region
                step *= p.max_step / small
            dy, dx = dy + float(step[0]), dx + float(step[1])
            if max(abs(dy), abs(dx)) > p.max_offset:
                raise _RegistrationFailed(f"offset ({dy:.2f}, {dx:.2f}) px exceeds {p.max_offset} px")
            if robust and small < p.tolerance:
                # Accept only an offset that fits better than none, with the same weights.
                final = self.irfft(spec * _ramp(self.ky, self.kx, dy, dx)).ravel()[self.index]
                cost = float(np.dot(weight, (self.values - final) ** 2))
                if cost > float(np.dot(weight, raw_at_zero**2)):
                    raise _RegistrationFailed("the offset fits worse than no offset")
                return dy, dx
            robust = robust or small < 0.1
        raise _RegistrationFailed(f"no convergence in {p.max_iterations} iterations")


def estimate_offset(
    reference: np.ndarray, current: np.ndarray, *, params: RegistrationParams | None = None
) -> tuple[float, float]:
    """Estimate the sub-pixel shift of the blob pattern of ``reference`` relative to ``current``.

    Both images are cleaned of isolated defects, gap-filled, high-passed (Gaussian,
    ``background_sigma``) and lightly smoothed; Gauss-Newton (Lucas-Kanade) steps of
    ``shift(reference, d) ~ current`` with exact Fourier shifts are then iterated over the pixels
    where the current blob pattern stands out of the noise, with a robust re-weighting that
    ignores new structure (a new blob) near convergence.

    Parameters
    ----------
    reference, current : numpy.ndarray
        2-D images of the same shape (NaN allowed).
    params : RegistrationParams, optional

    Returns
    -------
    (float, float)
        ``(dy, dx)`` such that ``shift_image(reference, dy, dx)`` matches ``current``;
        ``(nan, nan)`` when there is no blob structure, no convergence, or the offset exceeds
        ``params.max_offset``.
    """
    params = params or RegistrationParams()
    reference = np.asarray(reference, dtype=np.float32)
    current = np.asarray(current, dtype=np.float32)
    if reference.shape != current.shape or reference.ndim != 2:
        raise ValueError(f"images must be 2-D with equal shapes, got {reference.shape} and {current.shape}")
    template = _Template(current, params)
    try:
        return template.register(template.frame.prepare(reference))
    except _RegistrationFailed:
        return float("nan"), float("nan")


def align_blob_pattern(
    reference: np.ndarray, dy: float, dx: float, *, params: RegistrationParams | None = None
) -> np.ndarray:
    """Move the blob-scale structure of ``reference`` by (dy, dx), keeping detector features in place.

    The reference is split into a smooth background (Gaussian low-pass), isolated defects and
    the blob-scale structure; only the structure is translated (an exact Fourier shift).

    Returns
    -------
    numpy.ndarray
        float32 aligned image; NaN where ``reference`` is NaN (grown by the whole-pixel part
        of the shift).
    """
    params = params or RegistrationParams()
    reference = np.asarray(reference, dtype=np.float32)
    frame = _Frame(reference.shape, params)
    return frame.align(reference, frame.prepare(reference), dy, dx)


class PreparedCache:
    """Registration-ready images kept between `blob_difference` calls (LRU, thread-safe).

    An image's preparation for registration (defect cleaning, gap filling, the high-passed
    spectrum) depends only on its pixels, its shape and the `RegistrationParams`, not on the
    image it is registered against.  A job that differences a sequence day after day can pass one
    cache to every call, so that each image is prepared once instead of once per later image
    (the current image's preparation is kept too: it is tomorrow's reference).  Results are
    identical with and without the cache.  Images are keyed by the SHA-256 of their file
    (``BlobImage.provenance['sha256']``); images without one are not cached.

    With a ``store`` (`blobwatch.refstore.ReferenceStore`), preparations are kept on disk
    between runs instead, and loaded (memory-mapped) each time they are used: a daily job then
    prepares only the new image, and no preparation stays in memory after its use.

    Parameters
    ----------
    capacity : int
        Images kept in memory (about 6 MB each at 1024x1024).
    store : blobwatch.refstore.ReferenceStore, optional
        Disk store consulted on a miss in memory, and written on a computed preparation.
    """

    def __init__(self, capacity: int = SEED_REFERENCES + 1, *, store: ReferenceStore | None = None) -> None:
        self._cache: LRUCache[_Prepared] = LRUCache(capacity)
        self.store = store

    @property
    def hits(self) -> int:
        """Preparations reused."""
        return self._cache.hits

    @property
    def misses(self) -> int:
        """Preparations computed (of images with a SHA-256)."""
        return self._cache.misses

    @staticmethod
    def _key(image: BlobImage, params: RegistrationParams) -> tuple | None:
        sha = (image.provenance or {}).get("sha256")
        return (sha, tuple(image.data.shape), params) if sha else None

    def prepare(self, image: BlobImage, frame: _Frame) -> _Prepared:
        """The cached preparation of ``image`` for ``frame``, computed and kept on a miss."""
        key = self._key(image, frame.params)
        cached = self._cache.get(key) if key is not None else None
        if cached is not None:
            return cached
        stored = None
        if key is not None and self.store is not None:
            name = _store_name(frame)
            stored = self.store.arrays(key[0], name, ("spectrum", "masks"))
        if stored is not None and stored["masks"].shape == frame.shape:
            masks = np.asarray(stored["masks"])
            return _Prepared(valid=(masks & 2) > 0, finite=(masks & 1) > 0, spectrum=stored["spectrum"])
        prepared = frame.prepare(np.asarray(image.data, dtype=np.float32))
        kept = False
        if key is not None and self.store is not None:
            masks = prepared.finite.astype(np.uint8) | (prepared.valid.astype(np.uint8) << 1)
            kept = self.store.put_arrays(
                key[0], _store_name(frame), {"spectrum": prepared.spectrum, "masks": masks}
            )
        if key is not None and not kept:
            self._cache.put(key, prepared)
        return prepared


def _store_name(frame: _Frame) -> str:
    """Name of a preparation in a `ReferenceStore`: the shape and registration parameters' digest."""
    return "prep-" + registration_key(frame.shape, frame.params)


def registration_key(shape: tuple[int, ...], params: RegistrationParams | None = None) -> str:
    """A digest of an image shape and `RegistrationParams`: what stored preparations and offsets
    (`blobwatch.refstore.ReferenceStore`) are valid for."""
    text = repr((tuple(int(n) for n in shape), dataclasses.astuple(params or RegistrationParams())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prepare_with(cache: PreparedCache | None, image: BlobImage, frame: _Frame) -> _Prepared:
    """``image`` prepared for ``frame``, through ``cache`` when there is one."""
    if cache is None:
        return frame.prepare(np.asarray(image.data, dtype=np.float32))
    return cache.prepare(image, frame)


class OffsetFrame:
    """A fixed image against which each image's blob-pattern offset is measured once.

    ``offset(image)`` is ``t`` with ``shift_image(image, *t)`` matching the frame.  The offset of
    a reference relative to a current image (the convention of `blob_difference`) is then
    ``offset(reference) - offset(current)``, so a job that stores every image's offset when it
    first sees it needs no registration at all when it differences later images.

    Parameters
    ----------
    frame : BlobImage
        The fixed image (e.g. the first image of a sequence).
    params : RegistrationParams, optional
    prepared : PreparedCache, optional
        Reuse the images' registration preparations.
    """

    def __init__(
        self,
        frame: BlobImage,
        *,
        params: RegistrationParams | None = None,
        prepared: PreparedCache | None = None,
    ) -> None:
        self._prepared = prepared
        self._template = _Template(
            np.asarray(frame.data, dtype=np.float32),
            params or RegistrationParams(),
            lambda f: _prepare_with(prepared, frame, f),
        )

    def offset(self, image: BlobImage) -> tuple[float, float] | None:
        """``(dy, dx)`` moving ``image``'s blob pattern onto the frame's; None when it cannot be measured."""
        shape = self._template.frame.shape
        if image.data.shape != shape:
            raise InputError(
                image.path or "<image>",
                f"shape {format_shape(image.data.shape)} does not match "
                f"the offset frame ({format_shape(shape)})",
            )
        try:
            return self._template.register(_prepare_with(self._prepared, image, self._template.frame))
        except _RegistrationFailed as exc:
            log.info("%s: no offset to the frame (%s)", image.path or "<image>", exc)
            return None


# --------------------------------------------------------------------------------------------
# The difference image
# --------------------------------------------------------------------------------------------


def _select_references(
    current: BlobImage,
    references: Sequence[BlobImage],
    min_references: int,
    max_references: int,
) -> list[BlobImage]:
    if min_references < 1:
        raise ValueError(f"min_references must be >= 1, got {min_references}")
    if max_references < min_references:
        raise ValueError(f"max_references ({max_references}) < min_references ({min_references})")
    cur_name = current.path or "<current>"
    if current.data.ndim != 2:
        raise InputError(cur_name, f"current image is {current.data.ndim}-D, not 2-D")
    shape = format_shape(current.data.shape)
    shapes = Counter(ref.data.shape for ref in references)
    if shapes and shapes[current.data.shape] < max(shapes.values()):  # the current one is at fault
        common = format_shape(shapes.most_common(1)[0][0])
        raise InputError(cur_name, f"shape {shape} does not match the references ({common})")
    for ref in references:
        if ref.data.shape != current.data.shape:
            raise InputError(
                ref.path or "<reference>",
                f"shape {format_shape(ref.data.shape)} does not match the current image ({shape})",
            )
        if not ref.mjd < current.mjd:
            raise InputError(
                ref.path or "<reference>",
                f"reference (MJD {ref.mjd:.5f}) is not earlier than the current image "
                f"{current.name} (MJD {current.mjd:.5f})",
            )
    if len(references) < min_references:
        raise InputError(
            cur_name, f"{len(references)} references given; at least {min_references} are required"
        )
    ordered = sorted(references, key=lambda ref: ref.mjd)
    if len(ordered) > max_references:
        log.info("using the latest %d of %d references", max_references, len(ordered))
        ordered = ordered[-max_references:]
    if len(ordered) < SEED_REFERENCES:
        warnings.warn(
            f"{cur_name}: only {len(ordered)} references (the seed uses the preceding {SEED_REFERENCES})",
            FewReferencesWarning,
            stacklevel=3,
        )
    return ordered


def blob_difference(
    current: BlobImage,
    references: Sequence[BlobImage],
    *,
    register: bool = True,
    min_references: int = 5,
    max_references: int = SEED_REFERENCES,
    params: RegistrationParams | None = None,
    workers: int | None = None,
    prepared: PreparedCache | None = None,
    offsets: Sequence[tuple[float, float] | None] | None = None,
) -> DifferenceResult:
    """Blob difference image: ``current - median(references)``, optionally registered.

    Parameters
    ----------
    current : BlobImage
        The newest blob image.
    references : sequence of BlobImage
        Earlier blob images (any order; sorted by MJD, the latest ``max_references`` used).
    register : bool
        Estimate each reference's sub-pixel blob-pattern offset and align it before the median.
    min_references : int
        Fewer references raise `InputError`; fewer than 30 warn (`FewReferencesWarning`).
    max_references : int
        Use at most this many (the latest).
    params : RegistrationParams, optional
        Registration tuning.
    workers : int, optional
        Threads for the per-reference work (default: number of CPUs, at most 8).
    prepared : PreparedCache, optional
        Reuse the registration preparation of images seen in earlier calls (same result, less
        work when a sequence is differenced image by image).
    offsets : sequence of (float, float) or None, optional
        Known offsets of the references relative to ``current`` (in the order of ``references``;
        e.g. from `OffsetFrame`): these references are aligned without being registered.  Those
        given as None are registered.

    Returns
    -------
    DifferenceResult
    """
    params = params or RegistrationParams()
    if offsets is not None and len(offsets) != len(references):
        raise ValueError(f"{len(offsets)} offsets given for {len(references)} references")
    refs = _select_references(current, references, min_references, max_references)
    workers = workers or min(os.cpu_count() or 1, 8)
    cur = np.asarray(current.data, dtype=np.float32)
    n = len(refs)
    stack = np.empty((n, *cur.shape), dtype=np.float32)
    shifts = np.zeros((n, 2), dtype=np.float64)
    failures: dict[int, str] = {}

    if register:
        # no offsets given: none known (zip of an empty tuple)
        known = {id(ref): off for ref, off in zip(references, offsets or (), strict=False) if off is not None}
        # the current image is prepared as a template only if some reference must be registered
        template = (
            _Template(cur, params, lambda frame: _prepare_with(prepared, current, frame))
            if any(id(ref) not in known for ref in refs)
            else None
        )
        frame = template.frame if template is not None else _Frame(cur.shape, params)

        def work(index: int) -> None:
            image = np.asarray(refs[index].data, dtype=np.float32)
            prep = _prepare_with(prepared, refs[index], frame)
            if id(refs[index]) in known:
                dy, dx = known[id(refs[index])]
            else:
                assert template is not None
                try:
                    dy, dx = template.register(prep)
                except _RegistrationFailed as exc:
                    failures[index] = str(exc)
                    dy = dx = 0.0
            shifts[index] = (dy, dx)
            stack[index] = frame.align(image, prep, dy, dx)
            _drop_pages(refs[index].data)

        method = (
            "registered-median (Gauss-Newton blob-pattern offsets on the high-passed images; "
            "blob-scale structure Fourier-shifted, detector features fixed; NaN-aware median)"
        )
        stored = sum(id(ref) in known for ref in refs)
        if stored:
            method += f"; {stored} of {n} offsets from the images' stored offsets to a fixed frame"
    else:

        def work(index: int) -> None:
            stack[index] = refs[index].data
            _drop_pages(refs[index].data)

        method = "median"

    if workers > 1 and n > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(n)))
    else:
        for index in range(n):
            work(index)

    for index in sorted(failures):
        warnings.warn(
            f"{refs[index].path or f'reference {index + 1}'}: not registered ({failures[index]}); "
            "used without alignment",
            RegistrationWarning,
            stacklevel=2,
        )
    if failures:
        method += f"; {len(failures)} of {n} references not registered"
    with np.errstate(invalid="ignore"):
        median = nan_median_stack(stack, workers=workers)
        data = (cur - median).astype(np.float32, copy=False)
    return DifferenceResult(
        data=data,
        stack=median,
        offsets=shifts,
        method=method,
        reference_paths=[ref.path for ref in refs],
        current=current,
        reference_mjds=np.array([ref.mjd for ref in refs], dtype=np.float64),
        unregistered=tuple(sorted(failures)),
    )


def _drop_pages(array: np.ndarray) -> None:
    """Let the kernel take a read-only memory map's pages (e.g. a `ReferenceStore` image) out of
    this process once it has been used: they stay in the page cache and come back on the next
    access, but 30 references' 120 MB no longer count in the process's memory meanwhile."""
    mapped = getattr(array, "_mmap", None)  # numpy.memmap's mmap.mmap
    if isinstance(mapped, mmap.mmap) and not array.flags.writeable and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


def write_difference(path: str | os.PathLike, result: DifferenceResult) -> Path:
    """Write a difference image as FITS (atomically) with its provenance in the header.

    Keywords: ``CURFILE``, ``CURMJD``, ``CURSHA``, ``NREF``, ``REFnn``/``REFMJDnn``/``REFDYnn``/
    ``REFDXnn`` for every reference (HIERARCH cards where the keyword passes 8 characters, e.g.
    ``REFMJD100``), ``DIFFMETH`` (full text in ``HISTORY``), ``BWVERS``, ``DATE``.
    File names are stored whole with `blobwatch.names.header_name` (percent-encoded outside
    printable ASCII; read back with ``urllib.parse.unquote``).
    """
    from astropy.io import fits

    from blobwatch import __version__
    from blobwatch.fits_io import write_fits

    header = fits.Header()
    header["BWVERS"] = (__version__, "blobwatch version")
    header["DATE"] = (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC time file written")
    header["CURFILE"] = (_header_name(result.current.path), "current blob image")
    header["CURMJD"] = (float(result.current.mjd), "current observation start (MJD)")
    if result.current.provenance.get("sha256"):
        header["CURSHA"] = result.current.provenance["sha256"][:64]  # SHA-256 of the current file
    header["DIFFMETH"] = (result.method.split(" ")[0], "median or registered-median")
    header["NREF"] = (result.n_references, "number of references in the median")
    for index, (ref_path, mjd, (dy, dx)) in enumerate(
        zip(result.reference_paths, result.reference_mjds, result.offsets, strict=True), start=1
    ):
        key = f"{index:02d}"
        header[_keyword(f"REF{key}")] = (_header_name(ref_path), f"reference {index}")
        header[_keyword(f"REFMJD{key}")] = (float(mjd), f"reference {index} MJD")
        header[_keyword(f"REFDY{key}")] = (round(float(dy), 5), f"ref {index} blob offset dy (px)")
        header[_keyword(f"REFDX{key}")] = (round(float(dx), 5), f"ref {index} blob offset dx (px)")
    header["HISTORY"] = f"blobwatch {__version__}: D = current - median(references)"
    header["HISTORY"] = f"method: {result.method}"
    header["HISTORY"] = "offsets (dy, dx): current(y, x) ~ reference(y - dy, x - dx), pixels"
    return write_fits(path, result.data, header)


def _keyword(name: str) -> str:
    """``name`` as a header keyword: a HIERARCH card beyond 8 characters (e.g. ``REFMJD100``),
    never cut (a cut ``REFMJD10`` would overwrite reference 10)."""
    return name if len(name) <= 8 else f"HIERARCH {name}"


def _header_name(path: str | None) -> str:
    """The file name of ``path`` for a header card (`blobwatch.names.header_name`)."""
    return header_name(os.path.basename(path)) if path else "<memory>"
