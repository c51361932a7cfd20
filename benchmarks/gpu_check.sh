#!/usr/bin/env bash
# One-shot GPU check of planetcd (issue 16): Mpx/s of `detect` and `segment` on a large synthetic pair and the
# fraction of the GPU's bf16 peak they reach. For a machine with one CUDA GPU; prints one table, a row as each
# step ends (so a run stopped by a time limit still tells where its time went).
# On an H200 (2026-12-04) the 8192² pair did not finish in 330 s (warm-up done, no step ended): give the check
# a limit you can afford, and start at the default 4096².
#
#   bash benchmarks/gpu_check.sh                     # 4096² pair on cuda
#   SIZE=8192 bash benchmarks/gpu_check.sh           # a larger pair
#   DEVICE=cpu SIZE=256 bash benchmarks/gpu_check.sh # smoke test of the script itself on a CPU
#
# Method: the pair is a 2048² synthetic pair (planetcd.datasets.synthetic.make_change_pair) tiled to SIZE² and
# written as float32 GeoTIFFs. After a warm-up run on a small pair (CUDA context, cuDNN autotuning, weights),
# each of these is timed once, wall clock, with torch.cuda.synchronize():
#   trunk floor   the VGG-16 trunk to conv3_2 alone on both images' pixels (non-overlapping 1024² tiles, bf16);
#   detect        planetcd detect defaults (method nn, precision auto = bf16 on a GPU with bf16);
#   unet floor    the crater UNet alone on pre's pixels (non-overlapping 512² tiles, the model's flip averaging, bf16);
#   segment       planetcd segment defaults on pre (precision auto; the model's extraction scales).
# Mpx/s counts input pixels (detect: both images; segment: one). The fraction of peak is the trunk's (UNet's)
# FLOPs on those pixels divided by the wall time and by the GPU's dense bf16 peak. The VGG FLOPs per pixel are
# computed from the layer shapes (2·9·Cin·Cout per conv per output cell, divided by the cell's area in input
# pixels); the UNet's are counted by torch.utils.flop_counter on one 512² tile (every flip pass included).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
SIZE="${SIZE:-4096}"
if [ "$DEVICE" = "cuda" ]; then
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "gpu_check: no nvidia-smi on this machine (DEVICE=cpu runs the script on the CPU)" >&2
        exit 1
    fi
    GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
else
    GPU_NAME="cpu"
fi
export GPU_NAME DEVICE SIZE
SCRIPT="$(mktemp /tmp/gpu_check_XXXX.py)"
trap 'rm -f "$SCRIPT"' EXIT
cat > "$SCRIPT" <<'EOF'
import os, tempfile, time
from pathlib import Path

import numpy as np
import torch

from planetcd import models
from planetcd.change.detect import detect
from planetcd.craters.segment import predict_tiles, segment
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.features import VGGFeatures, channels_of, run_trunk, stride_of
from planetcd.precision import resolve_precision

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets; the first name found in
# nvidia-smi's GPU name wins (so "H100 PCIe" before "H100").
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]


def vgg_flops_per_pixel(layer: int = 6) -> float:
    """FLOPs per input pixel of the VGG-16 trunk to conv ``layer`` (2 per multiply-add), from the layer shapes."""
    total, in_ch = 0.0, 3
    for k in range(1, layer + 1):
        out_ch = channels_of(k)
        total += 2 * 9 * in_ch * out_ch / stride_of(k) ** 2
        in_ch = out_ch
    return total


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(step):
    sync()
    start = time.perf_counter()
    value = step()
    sync()
    return time.perf_counter() - start, value


def trunk_floor(trunk, images, side, tile=1024):
    for r in range(0, side, tile):
        for c in range(0, side, tile):
            batch = np.random.default_rng(0).random((images, 3, min(tile, side - r), min(tile, side - c)),
                                                    dtype=np.float32)
            run_trunk(trunk, batch, DEVICE, PRECISION)


def unet_floor(net, side, tile=512, batch=8):
    tiles = np.random.default_rng(0).uniform(-1, 1, (batch, min(tile, side), min(tile, side))).astype(np.float32)
    n = (-(-side // tile)) ** 2
    for k in range(0, n, batch):
        predict_tiles(net, tiles[: min(batch, n - k)], DEVICE, batch, PRECISION)


def unet_flops_per_pixel(net, tile=512):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, tile, tile, device=DEVICE)
    # oneDNN off: on a CPU the fused conv + ReLU (planetcd.layers.conv2d_relu) is an op the counter does not know
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / tile**2


DEVICE = torch.device(os.environ["DEVICE"])
SIZE = int(os.environ["SIZE"])
GPU = os.environ["GPU_NAME"]
PRECISION = resolve_precision("auto", DEVICE)
peak = next((p for name, p in PEAK_BF16_TFLOPS if name in GPU), None)
t_all = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    base = min(SIZE, 2048)
    pair = make_change_pair((base, base), seed=1, displacement=(2.4, -3.1), new_craters=[[base * 0.4, base * 0.6, 20.0]])
    reps = -(-SIZE // base)
    pre_arr = np.tile(pair.pre, (reps, reps))[:SIZE, :SIZE]
    post_arr = np.tile(pair.post, (reps, reps))[:SIZE, :SIZE]
    pre = write_synthetic_geotiff(Path(folder) / "pre.tif", pre_arr)
    post = write_synthetic_geotiff(Path(folder) / "post.tif", post_arr)
    small = min(SIZE, 512)
    pre_s = write_synthetic_geotiff(Path(folder) / "pre_s.tif", pair.pre[:small, :small])
    post_s = write_synthetic_geotiff(Path(folder) / "post_s.tif", pair.post[:small, :small])
    del pair, pre_arr, post_arr
    trunk = VGGFeatures(layer=6).to(DEVICE)
    net = models.cached("ctx-craters", str(DEVICE), None)
    detect(pre_s, post_s, trunk=trunk, device=str(DEVICE), n_pseudo=10)  # warm-up
    segment(pre_s, net, device=str(DEVICE), scales=[1.0])
    unet_flops = unet_flops_per_pixel(net)
    print(f"GPU: {GPU}; device {DEVICE}; precision {PRECISION}; pair {SIZE}x{SIZE}; torch {torch.__version__}; "
          f"bf16 peak {peak if peak else 'unknown'} TFLOP/s; VGG to conv3_2 {vgg_flops_per_pixel() / 1e3:.1f} kFLOP/px, "
          f"UNet {unet_flops / 1e3:.1f} kFLOP/px (with flip averaging: {bool(net.metadata.get('tta'))}); "
          f"warm-up done after {time.perf_counter() - t_all:.0f} s", flush=True)
    print(f"{'step':<28} {'seconds':>8} {'Mpx/s':>9} {'TFLOP/s':>8} {'of peak':>8}", flush=True)

    def row(name, seconds, pixels, flops):
        tflops = pixels * flops / seconds / 1e12
        share = f"{100 * tflops / peak:7.2f}%" if peak else "      —"
        print(f"{name:<28} {seconds:8.2f} {pixels / seconds / 1e6:9.1f} {tflops:8.2f} {share:>8}", flush=True)

    t, _ = timed(lambda: trunk_floor(trunk, 2, SIZE))
    row("trunk floor (2 images)", t, 2 * SIZE**2, vgg_flops_per_pixel())
    t, result = timed(lambda: detect(pre, post, trunk=trunk, device=str(DEVICE)))
    row(f"detect ({result.params['method']})", t, 2 * SIZE**2, vgg_flops_per_pixel())
    t, _ = timed(lambda: unet_floor(net, SIZE))
    row("unet floor (1 image)", t, SIZE**2, unet_flops)
    t, seg = timed(lambda: segment(pre, net, device=str(DEVICE)))
    row(f"segment (scales {','.join(f'{s:g}' for s in seg.params['scales'])})", t, SIZE**2, unet_flops)

print(f"(whole check {time.perf_counter() - t_all:.0f} s)")
EOF
python "$SCRIPT"
