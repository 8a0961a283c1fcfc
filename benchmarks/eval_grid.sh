#!/usr/bin/env bash
# Evaluate several pipelines under several presets on one dataset; one markdown table + JSON per preset.
# Usage: bash benchmarks/eval_grid.sh DATASET_DIR SPLIT_FILE|- "PRESET ..." "MODEL ..." OUT_DIR [LIMIT]
#   e.g. bash benchmarks/eval_grid.sh ../shared/data/roadscene ../shared/data/roadscene/test.txt \
#          "umf large" "identity+average ecc+gff umf-reg+gff" outputs/eval_reg
set -euo pipefail
DATA=$1; SPLIT=$2; PRESETS=$3; MODELS=$4; OUT=$5; LIMIT=${6:-}
mkdir -p "$OUT"
name=$(basename "$DATA")
split_arg=(); [ "$SPLIT" != "-" ] && split_arg=(--split "$SPLIT")
limit_arg=(); [ -n "$LIMIT" ] && limit_arg=(--limit "$LIMIT")
model_args=(); for m in $MODELS; do model_args+=(--model "$m"); done
for preset in $PRESETS; do
  tag=${preset//:/}
  alignfuse evaluate --data "$DATA" "${split_arg[@]}" "${limit_arg[@]}" --preset "$preset" --seed 0 \
    "${model_args[@]}" -q --json "$OUT/${name}_$tag.json" | tee "$OUT/${name}_$tag.md"
done
