#!/usr/bin/env bash
# Regenerate the datasets and retrain the shipped model src/blobwatch/data/papercnn.pt
# (+ papercnn.json, a readable copy of its metadata),
# then evaluate it (CNN and matched-filter baseline) on validation and both test sets.
#
#   scripts/reproduce_model.sh [DATASETS_DIR] [RUN_DIR]
#
# Defaults: datasets/v1 and runs/papercnn (both git-ignored).  Takes about 10 min for the
# datasets and 25-35 min of training on 2 CPU cores (see docs/training.md); pass --device cuda
# through BLOBWATCH_DEVICE=cuda to train on a GPU.  Everything is seeded: the same library
# versions give the same dataset bytes (manifest hashes) and, on the same hardware, the same model.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-datasets/v1}"
RUN="${2:-runs/papercnn}"
BW=".venv/bin/blobwatch"
DEVICE="${BLOBWATCH_DEVICE:-auto}"

if [ ! -f "$DATA/test_stamps/manifest.json" ]; then
    "$BW" make-dataset "$DATA"
fi
"$BW" train "$DATA/train" --val "$DATA/val" --out "$RUN" --device "$DEVICE" \
    --model src/blobwatch/data/papercnn.pt
"$BW" evaluate "$DATA/val" "$DATA/test_images" "$DATA/test_stamps" \
    --model src/blobwatch/data/papercnn.pt --out "$RUN/evaluation" --device "$DEVICE"
