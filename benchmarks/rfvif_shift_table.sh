#!/usr/bin/env bash
# RFVIF paper Table 1/2 layout: every row at shifts 0/3/5/8 and the 9/11/13 px stress test, RoadScene test
# (50) and TNO (25), then one merged table per shift with RFVIF's 8-metric wins against the no-alignment rows,
# and the Qabf/SSIM-vs-shift plots (docs/rfvif_shift_{roadscene,tno}.png, ceiling = GFF on aligned input).
#
# Usage: bash benchmarks/rfvif_shift_table.sh DATA_ROOT OUT STEP [WEIGHTS_DIR]
#   STEP = base  (classical and DIFN rows; slow, independent of RFVIF)
#        | rfvif (the RFVIF row; WEIGHTS_DIR = folder with rfvif_cpu.*, default the shipped weights)
#        | merge (tables, wins, plots)
#   e.g. bash benchmarks/rfvif_shift_table.sh ../shared/data outputs/rfvif_table base
# Environment: SHIFTS (default "0 3 5 8 9 11 13"), BASE (the rows of the base step, default below), e.g.
#   SHIFTS="0 3 5 8" BASE="identity+gff identity+average identity+difn" bash benchmarks/rfvif_shift_table.sh ... base
set -euo pipefail
ROOT=$1; OUT=$2; STEP=$3; WEIGHTS=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SHIFTS=${SHIFTS:-"0 3 5 8 9 11 13"}
BASE=${BASE:-"phase+gff ecc+gff identity+gff identity+average identity+difn"}
NOALIGN="identity+gff,identity+average,identity+difn"
for ds in roadscene tno; do
  split=-; [ "$ds" = roadscene ] && split="$ROOT/roadscene/test.txt"
  presets=""; for s in $SHIFTS; do presets="$presets shift:$s"; done
  case $STEP in
    base) bash "$HERE/eval_grid.sh" "$ROOT/$ds" "$split" "$presets" "$BASE" "$OUT/base" ;;
    rfvif)
      wargs=(); [ -n "$WEIGHTS" ] && wargs=(--weights-dir "$WEIGHTS")
      mkdir -p "$OUT/rfvif"
      for s in $SHIFTS; do
        alignfuse evaluate --data "$ROOT/$ds" $([ "$split" != - ] && echo --split "$split") --preset "shift:$s" \
          --seed 0 --model rfvif "${wargs[@]}" -q --json "$OUT/rfvif/${ds}_shift$s.json" > "$OUT/rfvif/${ds}_shift$s.md"
      done ;;
    merge)
      mkdir -p "$OUT/merged"
      for s in $SHIFTS; do
        python "$HERE/merge_eval.py" --wins rfvif --against "$NOALIGN" --json "$OUT/merged/${ds}_shift$s.json" \
          "$OUT/rfvif/${ds}_shift$s.json" "$OUT/base/${ds}_shift$s.json" | tee "$OUT/merged/${ds}_shift$s.md"
      done
      python "$HERE/plot_shift.py" --ceiling identity+gff "$HERE/../docs/rfvif_shift_$ds.png" "$OUT"/merged/${ds}_shift*.json ;;
    *) echo "STEP must be base, rfvif or merge" >&2; exit 2 ;;
  esac
done
