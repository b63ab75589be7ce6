"""Labelled 256x256 subframes of whole-image cases: what subframe methods train and score on.

A case (`blobwatch.regression.Case`) is prepared the way the seed prepared its data
(`blobwatch.preprocess.prepare`: negated, clipped, z-scored; blobs positive) and cut into its 16
subframes (`blobwatch.preprocess.tile`).  Each subframe gets

- a label: 1 when any new blob's disc reaches into it (the rule `blobwatch.regression.outcome`
  uses for a flagged box), else 0;
- a cause: ``blob`` for a labelled subframe, else the first hard case found in it by
  `blobwatch.dataset.cause_map` (dip = misregistration residual of an existing blob, cosmic ray,
  snowball (snowballs and persistence), edge), else ``none``.

Cases of the 'training' seed split serve training, those of the calibration split thresholds,
those of the suite scores (`blobwatch.variation.SPLIT_SEEDS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blobwatch.regression import Case

__all__ = ["CAUSES", "SubframeSet", "blob_in_boxes", "case_subframes", "subframe_set"]

#: Cause names of a subframe, in the order they are looked for (a subframe gets the first).
CAUSES = ("blob", "dip", "cosmic_ray", "snowball", "edge", "none")


def blob_in_boxes(boxes: np.ndarray, blobs: Sequence[dict]) -> np.ndarray:
    """Which ``(x0, y0, size)`` boxes any blob disc (``x``, ``y``, ``radius``) reaches into."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    hit = np.zeros(len(boxes), dtype=bool)
    for b in blobs:
        x0, y0, s = boxes[:, 0], boxes[:, 1], boxes[:, 2]
        gap_x = np.maximum(np.maximum(x0 - b["x"], b["x"] - (x0 + s - 1)), 0.0)
        gap_y = np.maximum(np.maximum(y0 - b["y"], b["y"] - (y0 + s - 1)), 0.0)
        hit |= np.hypot(gap_x, gap_y) < float(b["radius"])
    return hit


def _subframe_causes(
    case: Case, difference: np.ndarray, offsets: np.ndarray, size: int, labels: np.ndarray
) -> np.ndarray:
    """Cause name of each subframe (see module docstring)."""
    from blobwatch.dataset import (
        CAUSE_COSMIC_RAY,
        CAUSE_DIP,
        CAUSE_EDGE,
        CAUSE_SNOWBALL,
        cause_map,
    )

    ey, ex, er = case.existing_in_image()
    flags = cause_map(difference, blobs=np.column_stack([ey, ex, er]) if ey.size else None)
    order = (
        (CAUSE_DIP, "dip"),
        (CAUSE_COSMIC_RAY, "cosmic_ray"),
        (CAUSE_SNOWBALL, "snowball"),
        (CAUSE_EDGE, "edge"),
    )
    out = np.full(len(offsets), "none", dtype=object)
    for i, (x0, y0) in enumerate(offsets):
        if labels[i]:
            out[i] = "blob"
            continue
        present = np.bitwise_or.reduce(flags[y0 : y0 + size, x0 : x0 + size], axis=None)
        out[i] = next((name for bit, name in order if present & bit), "none")
    return out.astype(str)


def case_subframes(
    case: Case, *, registered: bool = False, clip_factor: float = 0.5, size: int = 256, causes: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prepared subframes of one case with offsets, labels and causes.

    Parameters
    ----------
    case : Case
        A whole-image case.
    registered : bool
        Use the registered difference (the daily job's input) instead of the seed's plain median
        difference.
    clip_factor : float
        Preparation clipping (`blobwatch.preprocess.prepare`).
    size : int
        Subframe side.
    causes : bool
        Name the causes (costs a `cause_map` of the whole image); all ``none``/``blob`` otherwise.

    Returns
    -------
    tiles : ndarray, float32, (n, size, size)
    offsets : ndarray, int, (n, 2)
        ``(x0, y0)`` of each subframe.
    labels : ndarray, int8, (n,)
    names : ndarray of str, (n,)
    """
    from blobwatch.preprocess import prepare, tile

    difference = case.difference if registered else case.plain_difference
    tiles, offsets = tile(prepare(difference, clip_factor=clip_factor).data, size=size)
    boxes = np.column_stack([offsets, np.full(len(offsets), size)])
    blobs = case.truth.get("blobs") or ([case.blob] if case.blob else [])
    labels = blob_in_boxes(boxes, blobs).astype(np.int8)
    if causes:
        names = _subframe_causes(case, difference, offsets, size, labels)
    else:
        names = np.where(labels == 1, "blob", "none").astype(str)
    return np.ascontiguousarray(tiles, dtype=np.float32), offsets, labels, names


@dataclass
class SubframeSet:
    """Subframes of several cases.

    Attributes
    ----------
    x : ndarray, float32, (n, size, size)
        Prepared subframes (blobs positive).
    label : ndarray, int8, (n,)
        1 when a new blob reaches into the subframe.
    cause : ndarray of str, (n,)
        One of `CAUSES`.
    case : ndarray of int, (n,)
        Index of the case (in the list given) each subframe comes from.
    offsets : ndarray, int, (n, 2)
        ``(x0, y0)`` in its image.
    """

    x: np.ndarray
    label: np.ndarray
    cause: np.ndarray
    case: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, keep: np.ndarray) -> SubframeSet:
        """The subframes where ``keep`` is true (or at those indices)."""
        return SubframeSet(
            self.x[keep], self.label[keep], self.cause[keep], self.case[keep], self.offsets[keep]
        )


def subframe_set(
    cases: Sequence[Case],
    *,
    registered: bool = False,
    clip_factor: float = 0.5,
    size: int = 256,
    causes: bool = True,
    progress: bool = False,
) -> SubframeSet:
    """`case_subframes` of every case, stacked (each case's arrays are released after use)."""
    from tqdm import tqdm

    parts = []
    for k, case in enumerate(tqdm(cases, desc="subframes", unit="case", disable=not progress)):
        tiles, offsets, labels, names = case_subframes(
            case, registered=registered, clip_factor=clip_factor, size=size, causes=causes
        )
        parts.append((tiles, labels, names, np.full(len(labels), k), offsets))
        case.release()
    if not parts:
        z = np.zeros(0)
        return SubframeSet(
            np.zeros((0, size, size), np.float32),
            z.astype(np.int8),
            z.astype(str),
            z.astype(int),
            np.zeros((0, 2), int),
        )
    return SubframeSet(*(np.concatenate(p) for p in zip(*parts, strict=True)))
