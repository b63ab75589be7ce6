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

from blobwatch.dataset.augment import (
    DEFAULT_STAMPS,
    BlobConfig,
    DistractorConfig,
    add_patch,
    augment_array,
    augment_coords,
    default_stamps_path,
    load_stamps,
    simulated_blob,
    taper_stamp,
)
from blobwatch.dataset.io import (
    GENERATOR_VERSION,
    TRAIN_FRACTION,
    SampleRecipe,
    SubframeDataset,
    make_dataset,
    manifest_sha256,
    read_manifest,
    read_meta,
    region_bounds,
)
from blobwatch.dataset.plan import (
    HELDOUT_STAMPS,
    SOURCES_VERSION,
    TEST_SEEDS,
    TRAIN_SEEDS,
    DatasetPlan,
    build_datasets,
    cached_simulated_sources,
    load_source,
    save_source,
    source_code_sha256,
)
from blobwatch.dataset.sources import (
    CAUSE_BAD_PIXEL,
    CAUSE_COSMIC_RAY,
    CAUSE_DIP,
    CAUSE_EDGE,
    CAUSE_NAMES,
    CAUSE_SNOWBALL,
    SourceImage,
    cause_map,
    file_source,
    simulated_sources,
    source_from_difference,
)

__all__ = [
    "BlobConfig",
    "CAUSE_BAD_PIXEL",
    "CAUSE_COSMIC_RAY",
    "CAUSE_DIP",
    "CAUSE_EDGE",
    "CAUSE_NAMES",
    "CAUSE_SNOWBALL",
    "DEFAULT_STAMPS",
    "DatasetPlan",
    "DistractorConfig",
    "GENERATOR_VERSION",
    "HELDOUT_STAMPS",
    "SOURCES_VERSION",
    "SampleRecipe",
    "SourceImage",
    "SubframeDataset",
    "TEST_SEEDS",
    "TRAIN_FRACTION",
    "TRAIN_SEEDS",
    "add_patch",
    "augment_array",
    "augment_coords",
    "build_datasets",
    "cached_simulated_sources",
    "cause_map",
    "default_stamps_path",
    "file_source",
    "load_source",
    "load_stamps",
    "make_dataset",
    "manifest_sha256",
    "read_manifest",
    "read_meta",
    "region_bounds",
    "save_source",
    "simulated_blob",
    "simulated_sources",
    "source_code_sha256",
    "source_from_difference",
    "taper_stamp",
]
