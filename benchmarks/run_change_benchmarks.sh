#!/usr/bin/env bash
# The change-detection tables of docs/benchmarks.md, on a clean checkout:
#
#   bash benchmarks/run_change_benchmarks.sh [OUTDIR]          (default: bench_out/change, git-ignored)
#
# Makes the ctx-impacts, lroc, small-craters and real-nuisance sets from the test images only (CTX tiles
# MC11E-H, MC11E-I and the HRSC holdout tile; MC11E-A..G train the crater UNet and are never used here), then
# runs `planetcd evaluate` on each set at its default options: every method's τ without labels, and the
# pseudo pairs' largest shift found from the pairs themselves (--max-shift auto, the default). Writes
# OUTDIR/<preset>/ (the sets), OUTDIR/*.json, OUTDIR/*.md and OUTDIR/tables.md (pasted into docs/benchmarks.md).
# Environment: SEED (default 20261214: the seed of the latest tables in docs/benchmarks.md, never used while
# developing; earlier seeds are listed there), N (pairs per set, default 200), PRESETS, METHODS
# (default paper,nn,nn-unlit,nn-basic,paper-oracle,nn-oracle), PLANETCD_SHARED (default ../shared),
# PLANETCD_VGG16_WEIGHTS (default: the shared copy).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_out/change}
SEED=${SEED:-20261214}
N=${N:-200}
PRESETS=${PRESETS:-ctx-impacts lroc small-craters real-nuisance}
METHODS=${METHODS:-paper,nn,nn-unlit,nn-basic,paper-oracle,nn-oracle}
export PLANETCD_SHARED=${PLANETCD_SHARED:-$(cd .. && pwd)/shared}
export PLANETCD_VGG16_WEIGHTS=${PLANETCD_VGG16_WEIGHTS:-$PLANETCD_SHARED/weights/vgg16_imagenet_features.pth}
IMAGES=MC11E-H,MC11E-I,hrsc-holdout
mkdir -p "$OUT"
for preset in $PRESETS; do
  start=$(date +%s)
  planetcd benchmark make "$OUT/$preset" --preset "$preset" --n-pairs "$N" --seed "$SEED" --images "$IMAGES" --overwrite -q
  planetcd evaluate "$OUT/$preset" --methods "$METHODS" --seed 0 --json "$OUT/$preset.json" --markdown "$OUT/$preset.md" \
    --scores "$OUT/$preset-scores.csv" --title "$preset: $N pairs, seed $SEED, images $IMAGES, --max-shift auto" --overwrite -q
  echo "$preset: $(( $(date +%s) - start )) s" >&2
done
{
  for preset in $PRESETS; do
    cat "$OUT/$preset.md"; echo
    echo "Breakdown ($preset):"; echo
    python benchmarks/change_breakdown.py "$OUT/$preset" "$OUT/$preset-scores.csv" --methods "${BREAKDOWN:-paper,nn,nn-unlit,nn-basic}"; echo
  done
} > "$OUT/tables.md"
cat "$OUT/tables.md"
