#!/usr/bin/env bash
# The change-detection table of docs/benchmarks.md, on a clean checkout:
#
#   bash benchmarks/run_change_benchmarks.sh [OUTDIR]          (default: bench_out/change, git-ignored)
#
# Makes the ctx-impacts and lroc sets from the test images only (CTX tiles MC11E-H, MC11E-I and the HRSC
# holdout tile; MC11E-A..G train the crater UNet and are never used here), then runs `planetcd evaluate`
# with every method on each set. Writes OUTDIR/{ctx-impacts,lroc}/ (the sets), OUTDIR/*.json, OUTDIR/*.md
# and OUTDIR/tables.md (the tables pasted into docs/benchmarks.md).
# Environment: SEED (default 20261123: the seed of the tables in docs/benchmarks.md, never used while
# developing; earlier seeds are listed there), N (pairs per
# set, default 200), PLANETCD_SHARED (default ../shared), PLANETCD_VGG16_WEIGHTS (default: the shared copy).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_out/change}
SEED=${SEED:-20261123}
N=${N:-200}
export PLANETCD_SHARED=${PLANETCD_SHARED:-$(cd .. && pwd)/shared}
export PLANETCD_VGG16_WEIGHTS=${PLANETCD_VGG16_WEIGHTS:-$PLANETCD_SHARED/weights/vgg16_imagenet_features.pth}
IMAGES=MC11E-H,MC11E-I,hrsc-holdout
mkdir -p "$OUT"
for preset in ctx-impacts lroc; do
  start=$(date +%s)
  # Pseudo-unchanged pairs are shifted up to the misregistration the sensor set is known for (10 px for CTX,
  # 40 px for LROC): the same prior for every method, not taken from the labels.
  shift=$([ "$preset" = lroc ] && echo 40 || echo 10)
  planetcd benchmark make "$OUT/$preset" --preset "$preset" --n-pairs "$N" --seed "$SEED" --images "$IMAGES" --overwrite -q
  planetcd evaluate "$OUT/$preset" --seed 0 --max-shift "$shift" --json "$OUT/$preset.json" --markdown "$OUT/$preset.md" --scores "$OUT/$preset-scores.csv" \
    --title "$preset: $N pairs, seed $SEED, images $IMAGES, --max-shift $shift" --overwrite -q
  echo "$preset: $(( $(date +%s) - start )) s" >&2
done
{
  for preset in ctx-impacts lroc; do
    cat "$OUT/$preset.md"; echo
    echo "Breakdown ($preset):"; echo
    python benchmarks/change_breakdown.py "$OUT/$preset" "$OUT/$preset-scores.csv"; echo
  done
} > "$OUT/tables.md"
cat "$OUT/tables.md"
