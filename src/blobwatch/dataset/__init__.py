"""Training and validation datasets of 256x256 subframes, written to disk and streamed back.

The recipe follows the seed (WFC3 ISR 2021-08, sections 3.3 and 3.4):

* Backgrounds are *prepared* non-blob difference images (`blobwatch.preprocess.prepare`: clipped,
  z-scored, finite, sign-flipped so blobs are positive).  Subframes are cut at random positions from
  the left 75% of each image for training and from the right 25% for validation, so the two never
  share a pixel.
* Positives get 1-5 blobs superimposed additively (the difference image is linear in throughput):
  real stamps scaled by U(0.5, 1.5), randomly rotated and flipped, or simulated blob profiles with a
  peak of 1-6 noise sigma; centres anywhere in the subframe, so a blob can be up to half off it.
* Training subframes of both classes alike get nuisance features (`DistractorConfig`): a random
  pedestal and gradient (large-scale residuals of the difference), and on half of them dark Gaussian
  patches of the opposite polarity to a blob, round or elongated, 2-60 px, like the persistence,
  snowballs and trails of a new image after the sign flip.  They teach the network that a blob is
  local, positive contrast, not a raised level or any compact feature.
* Both classes are then augmented identically: N(0, 0.75) noise, a random rot90 and random flips.
* Half of the windows are centred on a known hard case (dip, cosmic-ray residual, snowball or
  persistence, bad pixel, image edge) for both classes, so the network cannot use their presence as
  a cue and evaluation can break false positives down by cause.

On disk a dataset is a directory::

    x.npy            (N, size, size) float16, read with ``mmap_mode="r"``
    meta.npz         per-sample arrays: label, source, x0, y0, rot, flip_x, flip_y, n_blobs,
                     causes (bit flags), peak (strongest blob, sigma), radius and edge distance of
                     the strongest blob, stamp_only
    samples.jsonl    per-sample provenance, one JSON object a line (every blob's position,
                     strength, radius, stamp id or profile)
    manifest.json    generator version, seeds, sources (with sha256), parameters, file hashes
"""

from __future__ import annotations

# Every public name of the four modules, so that ``from blobwatch import dataset as D`` serves
# ``D.make_dataset``, ``D.SourceImage``, ...: each module's ``__all__`` is the one list of them.
from blobwatch.dataset import augment, io, plan, sources
from blobwatch.dataset.augment import *  # noqa: F403
from blobwatch.dataset.io import *  # noqa: F403
from blobwatch.dataset.plan import *  # noqa: F403
from blobwatch.dataset.sources import *  # noqa: F403

__all__ = [*augment.__all__, *io.__all__, *plan.__all__, *sources.__all__]
