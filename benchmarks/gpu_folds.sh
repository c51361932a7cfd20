#!/usr/bin/env bash
# The tile folds of issue 13 (docs/segment.md, "Unseen terrain") on a lent GPU machine, in calls that fit its
# limits (10 minutes a command, 15 minutes of device time a session, 64 MiB carried). Three stages:
#
#   bash benchmarks/gpu_folds.sh prepare            # HERE: fills the ignored .gpu/ (wheels, the tiles) and prints
#                                                   # the carry list for the device tool
#   bash benchmarks/gpu_folds.sh train ADG [BEH ..]  # ON THE DEVICE: steps 1 and 2 of each fold (70 epochs from
#                                                   # scratch, 5e-4 -> 5e-5; 60 more from its own model, 3e-4)
#   bash benchmarks/gpu_folds.sh pipeline ADG [..]  # ON THE DEVICE: step 5 with row 3's grid (chip verifier,
#                                                   # scales, decoys, per-tile threshold, local decoys), then the table
#
# Models and results go to runs/gpu-folds (ignored, kept between calls while the machine stays warm) and are
# copied to $OUT (the device tool brings $OUT back) after each fold, so a call stopped by its limit keeps what
# finished. STEPS="1" or STEPS="2" runs one training step (default both: about 9 minutes a fold at the H200's
# 4.2 s an epoch, near the 10-minute limit). EXTRA="..." passes more options to the training steps.
# Two seeds averaged (docs/segment.md, "Two seeds"): train again with RUNS=runs/gpu-folds-seed1 EXTRA="--seed 1",
# then `pipeline` with ENSEMBLE=runs/gpu-folds-seed1/step2 (each fold's segmenter is the mean of the two).
# The device's python is /opt/torch/.venv/bin/python3 (torch with CUDA); never symlink it (a symlink leaves the
# venv). rasterio, affine, cligj and click-plugins are not installed there: `prepare` downloads their cp312 wheels
# and `train`/`pipeline` install them into /tmp/site when rasterio does not import.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${1:-}"
shift || true
RUNS="${RUNS:-runs/gpu-folds}"
DEVICE="${DEVICE:-cuda}"
THREADS="${THREADS:-16}"
PY="${PY:-python3}"

setup_device() {
    if ! "$PY" -c "import rasterio" >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
        export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if [ -d .gpu/shared ]; then export PLANETCD_SHARED="$PWD/.gpu/shared"; fi
    mkdir -p "$RUNS"
}

keep() {  # copy a fold's results (and its models) to $OUT
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT/$1"
    cp -r "$RUNS/$1/." "$OUT/$1/" 2>/dev/null || true
}

folds="$*"
[ -n "$folds" ] || folds="ADG BEH CFI"
case "$STAGE" in
prepare)
    mkdir -p .gpu/wheels .gpu/shared/data/ctx-mc11e/images .gpu/shared/data/ctx-mc11e/annotations .gpu/shared/data/hrsc-pycda
    SHARED="${PLANETCD_SHARED:-../shared}"
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 -d .gpu/wheels rasterio==1.4.4 affine cligj click-plugins
    cp "$SHARED"/data/ctx-mc11e/images/MC11E-?.png .gpu/shared/data/ctx-mc11e/images/
    cp -r "$SHARED"/data/ctx-mc11e/annotations/clustered .gpu/shared/data/ctx-mc11e/annotations/
    cp "$SHARED"/data/hrsc-pycda/holdout_tile.pgm "$SHARED"/data/hrsc-pycda/holdout_tile_labels.csv .gpu/shared/data/hrsc-pycda/
    du -sh .gpu
    echo 'carry: [".gpu"]   command: PY=/opt/torch/.venv/bin/python3 bash benchmarks/gpu_folds.sh train ADG'
    ;;
train)
    setup_device
    steps=" ${STEPS:-1 2} "
    for f in $folds; do
        # the options both steps share; EXTRA comes last, so that it can override them
        common=(--only "$f" --recipe sun-aware --crops-per-epoch 512 --patience 25 --threads "$THREADS" --precision auto
                --device "$DEVICE" --hrsc)
        if [[ "$steps" == *" 1 "* ]]; then
            # shellcheck disable=SC2086
            "$PY" benchmarks/crater_folds.py --out "$RUNS/step1" "${common[@]}" --epochs 70 ${EXTRA:-}
            keep step1
        fi
        if [[ "$steps" == *" 2 "* ]]; then
            # shellcheck disable=SC2086
            "$PY" benchmarks/crater_folds.py --out "$RUNS/step2" --init "$RUNS/step1" "${common[@]}" --epochs 60 --lr 3e-4 \
                ${EXTRA:-}
            keep step2
        fi
    done
    ;;
pipeline)
    setup_device
    grid=(--out "$RUNS/step2" --verifier --opposite-negatives --hrsc --threads "$THREADS" --device "$DEVICE"
          --scale-variants "1;1.5,1;1.5,1,0.5" --decoy-fdr 0.1,0.2,0.3,0.5 --verifier-epochs 24)
    if [ -n "${ENSEMBLE:-}" ]; then grid+=(--ensemble-with "$ENSEMBLE"); fi
    for f in $folds; do
        "$PY" benchmarks/crater_folds.py "${grid[@]}" --only "$f"
        "$PY" benchmarks/crater_folds.py "${grid[@]}" --only "$f" --reselect --per-tile-threshold --local-decoys 150,300
        keep step2
    done
    "$PY" benchmarks/crater_folds.py "${grid[@]}" --table --per-tile-threshold --local-decoys 150,300 | tee "${OUT:-$RUNS}/table.txt"
    ;;
*)
    echo "usage: bash benchmarks/gpu_folds.sh prepare | train FOLD... | pipeline FOLD..." >&2
    exit 2
    ;;
esac
