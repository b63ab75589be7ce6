"""The localizing detector: BlobUNet on the whole prepared difference and reference median.

`fcn_inputs` turns a difference image and its reference median into the network's two planes;
`FCNDetector` runs the network over the whole image (no subframe seams) and turns the
probability map into candidates: its peaks, with a sub-pixel position, a radius and a
probability.  The model file (``blobwatch/data/blob_unet.pt``) is read with
``torch.load(weights_only=True)`` (`blobwatch.modelfile`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

__all__ = [
    "FCN_MODEL",
    "FCNCandidate",
    "FCNDetector",
    "detect_fcn",
    "fcn_inputs",
    "peaks",
    "refine",
    "shipped_fcn_path",
]

if TYPE_CHECKING:  # pragma: no cover
    from blobwatch.classifier import BlobClassifier
    from blobwatch.detect import Detection, SubframeResult

#: File name of the shipped localizing model (``blobwatch/data``).
FCN_MODEL = "blob_unet.pt"
#: Robust-sigma clipping of the difference plane (the seed's 0.5 x zscale would cut strong blobs).
DIFFERENCE_CLIP_SIGMA = 5.0
#: Width (px) of the Gaussian background removed from the reference median.
REFERENCE_BACKGROUND_SIGMA = 16.0
#: Smoothing (px) of the probability map before its peaks are found and scored: chosen on the
#: calibration split (`scripts/fcn_peak_study.py`, docs/detect.md): 0.5 px found the most blobs
#: at 2 % false alarms per quiet image, 1 px loses small blobs' peaks.
PEAK_SMOOTH_SIGMA = 0.5


def shipped_fcn_path() -> Path:
    """Path of the localizing model shipped with the package."""
    return Path(str(resources.files("blobwatch") / "data" / FCN_MODEL))


def fcn_inputs(difference: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """The network's input planes, ``(2, H, W)`` float32.

    Plane 0: the difference clipped at +/-5 robust sigma and z-scored, sign-flipped so blobs are
    positive (`blobwatch.preprocess.prepare` with ``clip_sigma``).  Plane 1: the reference median,
    high-passed (minus its 16-px Gaussian smoothing), divided by its robust noise and by 10,
    sign-flipped so existing blobs are positive, clipped to [-1, 3]; zeros without a reference.
    """
    from blobwatch.preprocess import prepare
    from blobwatch.stats import robust_sigma

    def reference_plane() -> np.ndarray | None:
        if reference is None:
            return None
        ref = np.asarray(reference, dtype=np.float32)
        finite = np.isfinite(ref)
        if not finite.any():
            return None
        filled = np.where(finite, ref, np.float32(np.median(ref[finite])))
        high = filled - ndimage.gaussian_filter(filled, REFERENCE_BACKGROUND_SIGMA, mode="nearest")
        noise = robust_sigma(high[finite]) or 1.0
        plane = np.clip(-high / (10.0 * noise), -1.0, 3.0).astype(np.float32)
        plane[~finite] = 0.0
        return plane

    with ThreadPoolExecutor(max_workers=1) as pool:  # the two planes side by side (GIL released)
        ref_job = pool.submit(reference_plane)
        diff = prepare(difference, clip_sigma=DIFFERENCE_CLIP_SIGMA).data
        ref_plane = ref_job.result()
    return np.stack([diff, np.zeros_like(diff) if ref_plane is None else ref_plane]).astype(np.float32)


@dataclass(frozen=True)
class FCNCandidate:
    """A peak of the probability map (0-based x = column, y = row)."""

    x: float
    y: float
    probability: float
    radius: float


def peaks(
    prob: np.ndarray,
    *,
    floor: float = 0.05,
    separation: int = 6,
    border: int = 5,
    smooth_sigma: float = PEAK_SMOOTH_SIGMA,
) -> list[FCNCandidate]:
    """Candidates from a probability map: local maxima of its Gaussian smoothing (``smooth_sigma``
    px) above ``floor``, each scored by that smoothed peak, placed at the probability-weighted
    centroid of its 9x9 neighbourhood, with the radius of the disc holding its pixels above half
    the peak."""
    smooth = ndimage.gaussian_filter(prob.astype(np.float32), smooth_sigma)
    local = smooth == ndimage.maximum_filter(smooth, size=2 * separation + 1, mode="nearest")
    local &= smooth >= floor
    local[:border, :] = local[-border:, :] = False
    local[:, :border] = local[:, -border:] = False
    rows, cols = np.nonzero(local)
    order = np.argsort(-smooth[rows, cols])
    out = []
    h, w = prob.shape
    for r, c in zip(rows[order], cols[order], strict=True):
        r0, r1, c0, c1 = max(r - 4, 0), min(r + 5, h), max(c - 4, 0), min(c + 5, w)
        win = prob[r0:r1, c0:c1].astype(np.float64)
        peak = float(smooth[r, c])
        weight = np.where(win >= 0.5 * win.max(), win, 0.0)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        total = weight.sum()
        y = float((weight * yy).sum() / total) if total > 0 else float(r)
        x = float((weight * xx).sum() / total) if total > 0 else float(c)
        big = prob[max(r - 15, 0) : r + 16, max(c - 15, 0) : c + 16]
        radius = float(np.sqrt(np.count_nonzero(big >= 0.5 * peak) / np.pi))
        out.append(FCNCandidate(x=x, y=y, probability=peak, radius=radius))
    return out


def refine(image: np.ndarray, cand: FCNCandidate, *, reach: float = 3.0) -> FCNCandidate:
    """Move a candidate to the sub-pixel peak of ``image`` (the prepared difference, blobs
    positive) smoothed by a Gaussian matched to its radius, searched within ``reach`` px.

    The network says where a new blob is; the matched filter of the blob's own size places it
    (a quadratic fit through the peak and its neighbours).  A candidate with no such peak in
    reach keeps its place.
    """
    sigma = max(1.0, cand.radius / 1.6)
    half = int(np.ceil(reach + 4 * sigma)) + 1
    r, c = int(round(cand.y)), int(round(cand.x))
    h, w = image.shape
    r0, r1, c0, c1 = max(r - half, 0), min(r + half + 1, h), max(c - half, 0), min(c + half + 1, w)
    smooth = ndimage.gaussian_filter(image[r0:r1, c0:c1].astype(np.float32), sigma, mode="nearest")
    yy, xx = np.mgrid[r0:r1, c0:c1]
    near = np.hypot(yy - cand.y, xx - cand.x) <= reach
    masked = np.where(near, smooth, -np.inf)
    pr, pc = np.unravel_index(int(np.argmax(masked)), masked.shape)
    if not (0 < pr < smooth.shape[0] - 1 and 0 < pc < smooth.shape[1] - 1):
        return cand

    def vertex(m: float, z: float, p: float) -> float:
        denom = m - 2.0 * z + p
        return float(np.clip(0.5 * (m - p) / denom, -0.5, 0.5)) if denom < 0 else 0.0

    dy = vertex(smooth[pr - 1, pc], smooth[pr, pc], smooth[pr + 1, pc])
    dx = vertex(smooth[pr, pc - 1], smooth[pr, pc], smooth[pr, pc + 1])
    return FCNCandidate(
        x=float(c0 + pc + dx), y=float(r0 + pr + dy), probability=cand.probability, radius=cand.radius
    )


class FCNDetector:
    """The localizing network ready to run on whole images.

    Parameters
    ----------
    model : path-like, optional
        A BlobUNet model file; the shipped one by default.
    device : str
        'cpu', 'cuda' or 'auto'.
    """

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "cpu") -> None:
        import torch

        from blobwatch.classifier import resolve_device
        from blobwatch.errors import InputError
        from blobwatch.modelfile import load_model

        path = Path(model) if model is not None else shipped_fcn_path()
        self.device = resolve_device(device)
        loaded = load_model(path, device=self.device)
        if loaded.architecture != "BlobUNet":
            raise InputError(path, f"is a {loaded.architecture} model, not a BlobUNet (localizing) model")
        # channels-last: oneDNN's convolutions are about 1.5x faster on this layout (2 CPU cores)
        self.model = loaded.model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits memory_format
        self.metadata: dict[str, Any] = loaded.metadata
        self.path = str(path)
        self.threshold = float(self.metadata.get("threshold", 0.5))
        #: Peak smoothing (px) of this model: its metadata's ``peak_smooth_sigma`` (a tuned model
        #: records the value it was calibrated with), else `PEAK_SMOOTH_SIGMA`.
        self.smooth_sigma = float(self.metadata.get("peak_smooth_sigma", PEAK_SMOOTH_SIGMA))
        self._torch = torch

    def probability(self, difference: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """Per-pixel new-blob probability, ``(H, W)`` float32."""
        return self._probability(fcn_inputs(difference, reference))

    def _probability(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        m = self.model.multiple
        h, w = x.shape[1:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        with torch.inference_mode():
            inp = torch.from_numpy(x[None]).to(self.device).contiguous(memory_format=torch.channels_last)
            logits = self.model(inp)
        return torch.sigmoid(logits)[0, 0, :h, :w].cpu().numpy().astype(np.float32)

    def candidates(
        self, difference: np.ndarray, reference: np.ndarray | None, *, floor: float = 0.05
    ) -> list[FCNCandidate]:
        """Peaks of the probability map (every peak above ``floor``; compare with `threshold`),
        each placed at the matched-filter peak of the difference next to it (`refine`)."""
        x = fcn_inputs(difference, reference)
        return self._candidates(x, floor)

    def _candidates(self, x: np.ndarray, floor: float) -> list[FCNCandidate]:
        return [
            refine(x[0], c) for c in peaks(self._probability(x), floor=floor, smooth_sigma=self.smooth_sigma)
        ]

    def saliency(
        self, planes: np.ndarray, box: tuple[int, int, int], targets: list[FCNCandidate], *, context: int = 32
    ) -> np.ndarray:
        """Gradient saliency of the network's output at ``targets`` over one square ``box``.

        The map is ``|d S / d difference pixel|`` over the box ``(y0, x0, size)``, where ``S`` is
        the sum of the output logits within each target's radius (at least 3 px): which pixels of
        the difference made the network call these places blobs.  The network sees the box with
        ``context`` px of the image around it (its receptive field), as it does on the whole image.

        Returns
        -------
        numpy.ndarray
            ``(size, size)`` float32.
        """
        torch = self._torch
        y0, x0, size = box
        h, w = planes.shape[1:]
        r0, c0 = max(y0 - context, 0), max(x0 - context, 0)
        r1, c1 = min(y0 + size + context, h), min(x0 + size + context, w)
        crop = planes[:, r0:r1, c0:c1]
        m = self.model.multiple
        ph, pw = (-crop.shape[1]) % m, (-crop.shape[2]) % m
        if ph or pw:
            crop = np.pad(crop, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        yy, xx = np.mgrid[: crop.shape[1], : crop.shape[2]]
        weight = np.zeros(crop.shape[1:], dtype=np.float32)
        for t in targets:
            weight[np.hypot(yy - (t.y - r0), xx - (t.x - c0)) <= max(t.radius, 3.0)] = 1.0
        inp = torch.from_numpy(np.ascontiguousarray(crop[None])).to(self.device).requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(inp)[0, 0]
            (logits * torch.from_numpy(weight).to(self.device)).sum().backward()
        grad = inp.grad[0, 0].abs().cpu().numpy()
        return grad[y0 - r0 : y0 - r0 + size, x0 - c0 : x0 - c0 + size].astype(np.float32)


def detect_fcn(
    difference: Any,
    fcn: FCNDetector,
    classifier: BlobClassifier,
    *,
    threshold: float | None = None,
    name: str | None = None,
    reference: np.ndarray | None = None,
) -> Detection:
    """Find new blobs with the localizing network; the seed's subframe protocol runs beside it.

    The candidates are the peaks of the network's probability map at or above ``threshold``
    (the model's calibrated threshold by default), each with the matched-filter significance of
    the prepared difference at its place (`blobwatch.detect.matched_filter`).  The 16 subframes
    keep the seed's PaperCNN probabilities and its own threshold, so reports show both.

    Parameters
    ----------
    difference : numpy.ndarray or DifferenceResult
        The blob difference (new blobs negative); a `DifferenceResult` brings its reference
        median (``stack``) with it.
    fcn : FCNDetector
    classifier : BlobClassifier
        The seed's classifier (subframe probabilities and their saliency).
    threshold : float, optional
        Candidate probability threshold; ``fcn.threshold`` by default.
    name : str, optional
        Name of the input, carried into the result.
    reference : numpy.ndarray, optional
        The reference median, when ``difference`` is a plain array.

    Returns
    -------
    blobwatch.detect.Detection
        With ``detector='fcn'``; `Detection.localizer_saliency` gives the network's saliency.
    """
    from blobwatch.detect import (
        Candidate,
        Detection,
        DetectionParameters,
        checked_input,
        matched_filter_peak,
        reference_stack,
        seed_subframes,
        subframe_index,
    )

    t = fcn.threshold if threshold is None else float(threshold)
    data = checked_input(difference, t, classifier.size)
    # the seed's subframes and the network are independent: run them side by side (numpy, scipy
    # and torch release the GIL), as two threads on a 2-core machine
    with ThreadPoolExecutor(max_workers=1) as pool:
        seed = pool.submit(seed_subframes, data, classifier, classifier.threshold)
        planes = fcn_inputs(data, reference_stack(difference, reference, data.shape))
        found = [c for c in fcn._candidates(planes, floor=min(t, 0.05)) if c.probability >= t]
        image, preparation, subframes = seed.result()
    params = DetectionParameters()
    candidates = []
    if found:
        snr = matched_filter_peak(image, params.sigmas, params.background_sigma)
        for c in found:
            r = int(np.clip(round(c.y), 0, data.shape[0] - 1))
            col = int(np.clip(round(c.x), 0, data.shape[1] - 1))
            candidates.append(
                Candidate(
                    x=c.x,
                    y=c.y,
                    probability=c.probability,
                    significance=float(snr[r, col]),
                    radius=c.radius,
                    subframe=subframe_index(c.x, c.y, subframes),
                    source="fcn",
                )
            )
    candidates.sort(key=lambda c: -c.probability)

    def localizer_saliency(boxes: list[SubframeResult]) -> dict[int, np.ndarray]:
        by_box = {
            s.index: [c for c in found if subframe_index(c.x, c.y, subframes) == s.index] for s in boxes
        }
        return {s.index: fcn.saliency(planes, (s.y0, s.x0, s.size), by_box[s.index]) for s in boxes}

    return Detection(
        threshold=t,
        subframes=subframes,
        candidates=candidates,
        prepared=image,
        name=name,
        preparation=preparation,
        model=fcn.path,
        parameters=params,
        detector="fcn",
        subframe_threshold=float(classifier.threshold),
        _classifier=classifier,
        _localizer_saliency=localizer_saliency,
    )
