#!/usr/bin/env bash
# Issue 2 acceptance: classical pipelines on RoadScene test (50 pairs) under umf, shift:5 and large.
# Usage: bash benchmarks/eval_baselines.sh [DATA_ROOT] [OUT_DIR]
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-outputs/eval_baselines}
mkdir -p "$OUT"
for preset in umf shift:5 large; do
  tag=${preset/:/}
  alignfuse evaluate --data "$DATA/roadscene" --split "$DATA/roadscene/test.txt" --preset "$preset" --seed 0 \
    --model identity+average --model ecc+gff --model eccgrad+gff --model phase+gff -q \
    --json "$OUT/roadscene_$tag.json" | tee "$OUT/roadscene_$tag.md"
done
