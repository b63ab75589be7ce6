#!/usr/bin/env bash
# Regenerate the datasets, retrain the shipped model and evaluate it (CNN and matched-filter
# baseline on validation and both test sets), then install the model into the package as
# src/blobwatch/data/papercnn.pt (+ papercnn.json, a readable copy of its metadata).
#
#   scripts/reproduce_model.sh [DATASETS_DIR] [RUN_DIR]
#
# Defaults: datasets/v3 and runs/v3 (both git-ignored), the folders the shipped model was made
# in, so its recorded paths match.  On 2 idle CPU cores: about 5 min for the datasets, 10 min of
# training, 8 min of evaluation (docs/training.md).  BLOBWATCH_DEVICE=cuda trains on a GPU.
# Everything is seeded: the same code and library versions give the same dataset bytes (manifest
# hashes) and, on the same hardware and thread count, the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-datasets/v3}"
RUN="${2:-runs/v3}"
BW=".venv/bin/blobwatch"
DEVICE="${BLOBWATCH_DEVICE:-auto}"

step() { echo "$(date -u +%H:%M:%S) UTC: $*"; }

if [ ! -f "$DATA/test_stamps/manifest.json" ]; then
    step "make-dataset $DATA"
    "$BW" make-dataset "$DATA" --no-progress
fi
step "train -> $RUN/papercnn.pt"
"$BW" train "$DATA/train" --val "$DATA/val" --out "$RUN" --model "$RUN/papercnn.pt" \
    --device "$DEVICE" --no-progress
step "evaluate -> $RUN/evaluation"
"$BW" evaluate "$DATA/val" "$DATA/test_images" "$DATA/test_stamps" \
    --model "$RUN/papercnn.pt" --out "$RUN/evaluation" --device "$DEVICE"
cp "$RUN/papercnn.pt" "$RUN/papercnn.json" src/blobwatch/data/
step "installed $RUN/papercnn.pt as src/blobwatch/data/papercnn.pt"
