"""The detectors the regression suite compares, registered by name.

``mf``        the matched filter alone: peaks of the multi-scale matched-filter S/N map of the
              prepared registered difference (`blobwatch.detect.matched_filter`); score = S/N.
``mf-clip3``  the same on a difference clipped at +/-3 robust sigma instead of the seed's
              0.5 x zscale (the clipping comparison of docs/regression.md).
``paper``     the seed's protocol: PaperCNN on the 16 fixed subframes of the plain (unregistered)
              median difference; score = subframe probability; a flagged subframe is a box.
``detect``    today's `blobwatch.detect.detect` on the registered difference with the reference
              stack (matched-filter seeds, dip and existing-blob tests, CNN on a centred window);
              score = window probability.
``autoencoder`` local maxima of the autoencoder's smoothed reconstruction error
              (`blobwatch.anomaly`); score = error in robust sigmas.
``embed``     the stored embedding classifier (`blobwatch.embed`) on the seed's 16 subframes;
              score = blob probability.

Each has a native threshold (what the daily job uses today); `blobwatch.regression.calibrate`
chooses another on the calibration split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from blobwatch.regression import Candidates, Case, register_detector

__all__ = [
    "DetectDetector",
    "LocalizingDetector",
    "MatchedFilterDetector",
    "PaperDetector",
    "local_peaks",
    "matched_filter_peaks",
]


def matched_filter_peaks(
    prepared: np.ndarray, *, floor: float = 3.0, border: int = 5, separation: int = 6, max_peaks: int = 200
) -> Candidates:
    """Local maxima of the best-scale matched-filter S/N of a prepared image (blobs positive).

    Uses the sigmas and background of `blobwatch.detect.DetectionParameters`.
    """
    from blobwatch.detect import DetectionParameters, matched_filter_peak

    p = DetectionParameters()
    best = matched_filter_peak(prepared, p.sigmas, p.background_sigma)
    return local_peaks(best, floor=floor, border=border, separation=separation, max_peaks=max_peaks)


def local_peaks(
    best: np.ndarray, *, floor: float, border: int = 5, separation: int = 6, max_peaks: int = 200
) -> Candidates:
    """Local maxima (within ``separation`` px) of a score map that reach ``floor``, outside a
    ``border``, strongest first."""
    peaks = best == ndimage.maximum_filter(best, size=2 * separation + 1, mode="nearest")
    peaks[:border, :] = peaks[-border:, :] = False
    peaks[:, :border] = peaks[:, -border:] = False
    peaks &= best >= floor
    rows, cols = np.nonzero(peaks)
    values = best[rows, cols]
    order = np.argsort(-values)[:max_peaks]
    return Candidates(cols[order].astype(float), rows[order].astype(float), values[order].astype(float))


@dataclass
class MatchedFilterDetector:
    """The matched filter alone on the prepared registered difference."""

    clip_sigma: float | None = None
    floor: float = 3.0
    name: str = "mf"
    native_threshold: float = 5.0  # detect's min_significance
    localizes: bool = True
    description: str = "matched filter alone (registered difference, seed clipping)"

    def __call__(self, case: Case) -> Candidates:
        from blobwatch.preprocess import prepare

        prepared = prepare(case.difference, clip_sigma=self.clip_sigma).data
        return matched_filter_peaks(prepared, floor=self.floor, border=case.border)


@dataclass
class _ModelDetector:
    """A detector built on a `BlobClassifier`; its native threshold is the model's."""

    model: str | None = None
    device: str = "auto"
    _classifier: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from blobwatch.classifier import BlobClassifier

        self._classifier = BlobClassifier(self.model, device=self.device)
        self.native_threshold = float(self._classifier.threshold)


@dataclass
class PaperDetector(_ModelDetector):
    """The seed's protocol: PaperCNN flags on the 16 subframes of the plain median difference."""

    name: str = "paper"
    localizes: bool = False
    registered: bool = False
    description: str = "PaperCNN, seed protocol (16 subframes of the plain median difference)"

    def __call__(self, case: Case) -> Candidates:
        from blobwatch.preprocess import prepare, tile

        clf = self._classifier
        prepared = prepare(case.plain_difference, clip_factor=clf.clip_factor).data
        tiles, offsets = tile(prepared, size=clf.size)
        prob = clf.predict_proba(tiles).astype(float)
        boxes = np.column_stack([offsets[:, 0], offsets[:, 1], np.full(len(offsets), clf.size)]).astype(float)
        half = clf.size / 2.0
        return Candidates(boxes[:, 0] + half, boxes[:, 1] + half, prob, boxes)


@dataclass
class DetectDetector(_ModelDetector):
    """Today's `detect` (matched-filter seeds, dip/existing tests, CNN window probability).

    `detect` is run once at ``floor`` (below any threshold worth calibrating); a candidate then
    counts at threshold t when its window probability is >= t and, for a seed that came from a
    flagged subframe's saliency peak, when that subframe's probability is >= t too, which is what
    `detect` at threshold t would have kept.
    """

    floor: float = 0.05
    name: str = "detect"
    localizes: bool = True
    description: str = "detect: matched-filter seeds + dip/existing tests + PaperCNN window veto"

    def __call__(self, case: Case) -> Candidates:
        from blobwatch.detect import detect

        det = detect(case.difference, self._classifier, threshold=self.floor, reference=case.reference)
        if not det.candidates:
            return Candidates.empty()
        sub = {s.index: s.probability for s in det.subframes}
        score = [
            min(c.probability, sub[c.subframe]) if c.source == "saliency" else c.probability
            for c in det.candidates
        ]
        return Candidates(
            np.array([c.x for c in det.candidates]),
            np.array([c.y for c in det.candidates]),
            np.asarray(score, dtype=float),
        )


# the matched filters use no model: model and device options are ignored
@dataclass
class LocalizingDetector:
    """The localizing network (BlobUNet) on the registered difference and reference median;
    score = peak probability."""

    model: str | None = None
    device: str = "cpu"
    floor: float = 0.05
    name: str = "fcn"
    localizes: bool = True
    description: str = "BlobUNet localizing network (registered difference + reference median)"
    _fcn: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from blobwatch.fcn import FCNDetector

        self._fcn = FCNDetector(self.model, device=self.device)
        self.native_threshold = self._fcn.threshold

    def __call__(self, case: Case) -> Candidates:
        found = self._fcn.candidates(case.difference, case.reference, floor=self.floor)
        return Candidates(
            np.array([c.x for c in found]),
            np.array([c.y for c in found]),
            np.array([c.probability for c in found]),
        )


register_detector("mf", lambda **_: MatchedFilterDetector())
register_detector(
    "mf-clip3",
    lambda **_: MatchedFilterDetector(
        clip_sigma=3.0, name="mf-clip3", description="matched filter alone, +/-3 sigma clipping"
    ),
)
register_detector("paper", lambda model=None, device="auto", **_: PaperDetector(model=model, device=device))
register_detector("detect", lambda model=None, device="auto", **_: DetectDetector(model=model, device=device))
register_detector(
    "fcn", lambda fcn_model=None, device="cpu", **_: LocalizingDetector(model=fcn_model, device=device)
)
register_detector("autoencoder", lambda ae_model=None, device="cpu", **_: _autoencoder(ae_model, device))
register_detector("embed", lambda embed_model=None, device="cpu", **_: _embedding(embed_model, None, device))


def _autoencoder(model: str | None, device: str) -> Any:
    from blobwatch.anomaly import AutoencoderDetector

    return AutoencoderDetector(model=model, device=device)


def _embedding(model: str | None, cnn_model: str | None, device: str) -> Any:
    from blobwatch.embed import EmbeddingDetector

    return EmbeddingDetector(model=model, cnn_model=cnn_model, device=device)
