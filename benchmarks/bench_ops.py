"""Micro-benchmarks of the CPU operations the third speed pass changed (docs/performance.md, "Third pass").

    python benchmarks/bench_ops.py [--threads 2] [--repeats 7]
    PLANETCD_MALLOC_TUNING=on python benchmarks/bench_ops.py     # the same with the opt-in allocator setting

Prints, best of ``--repeats`` after one warm-up, in milliseconds:

- 2 x 2 max pooling of bf16 channels-last maps (64 x 1088², 128 x 544²: the trunk's two pools on a 1024 px
  tile with its halo): ``F.max_pool2d`` against :func:`planetcd.layers.max_pool2x2`, and whether they agree;
- the trunk's output map (256 x 272² bf16 channels-last) to float32: convert then transpose, one copy into a
  contiguous array (``run_trunk``), and convert keeping the strides (``run_trunk(contiguous=False)``);
- the nn disagreement (:func:`planetcd.change.nn.nn_change_window`, radius 2) on contiguous and on
  channels-last maps, and their largest difference;
- a ReLU on a fresh 112 x 512² bf16 map, into a new array and in place (the page-fault cost of new memory);
- VGG-16's conv1_1 (3 → 64) and conv1_2 (64 → 64) on a 1088² tile, bf16 and float32 channels-last: the
  convolution then an in-place ReLU, against :func:`planetcd.layers.conv2d_relu` (the ReLU fused into
  oneDNN's convolution), and whether they agree;
- the symmetric U-Net's two largest decoder steps on a batch of 8 tiles of 512² (24 → 16 channels, 256² →
  512²; 32 → 24, 128² → 256²), bf16 and float32 channels-last: nearest upsampling, then the fused
  convolution + ReLU, then the skip added (the previous inference path), against
  :func:`planetcd.layers.upsample_conv2d_relu_add` (the sub-pixel form), and their largest difference relative
  to the output's largest value.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def best_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(1000 * best, 2)


def main(argv=None) -> int:
    from planetcd.change.nn import nn_change_window
    from planetcd.layers import conv2d_relu, fused_conv_relu_available, max_pool2x2, upsample_conv2d_relu_add
    from planetcd.runtime import tune_allocator_from_env

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    tuned = tune_allocator_from_env()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    print(f"threads {args.threads}, allocator tuning {'on' if tuned else 'off'}, best of {args.repeats}, ms")
    with torch.inference_mode():
        for c, side in ((64, 1088), (128, 544)):
            x = torch.randn(1, c, side, side, generator=gen).to(torch.bfloat16).contiguous(memory_format=cl)
            same = torch.equal(F.max_pool2d(x, 2), max_pool2x2(x))
            print(f"max pool {c} x {side}²: F.max_pool2d {best_ms(lambda: F.max_pool2d(x, 2), args.repeats)}, "
                  f"max_pool2x2 {best_ms(lambda: max_pool2x2(x), args.repeats)} (equal: {same})")
        out = torch.randn(1, 256, 272, 272, generator=gen).to(torch.bfloat16).contiguous(memory_format=cl)

        def one_copy():
            maps = torch.empty(out.shape, dtype=torch.float32)
            maps.copy_(out)
            return maps

        print(f"trunk map 256 x 272² to float32: convert then transpose "
              f"{best_ms(lambda: out.float().contiguous(), args.repeats)}, one copy {best_ms(one_copy, args.repeats)}, "
              f"strides kept {best_ms(lambda: out.float(), args.repeats)}")
        a, b = torch.rand(1, 256, 272, 272, generator=gen), torch.rand(1, 256, 272, 272, generator=gen)
        a_cl, b_cl = a.contiguous(memory_format=cl), b.contiguous(memory_format=cl)
        window = (8, 8, 256, 256)
        diff = float((nn_change_window(a, b, 2, window) - nn_change_window(a_cl, b_cl, 2, window)).abs().max())
        print(f"nn disagreement 256 x 272²: contiguous {best_ms(lambda: nn_change_window(a, b, 2, window), args.repeats)}, "
              f"channels-last {best_ms(lambda: nn_change_window(a_cl, b_cl, 2, window), args.repeats)} "
              f"(largest difference {diff:.1e})")
        y = torch.randn(1, 112, 512, 512, generator=gen).to(torch.bfloat16).contiguous(memory_format=cl)
        print(f"ReLU 112 x 512² bf16: into a new array {best_ms(lambda: F.relu(y), args.repeats)}, "
              f"in place {best_ms(lambda: F.relu(y, inplace=True), args.repeats)}")
        print(f"fused conv + ReLU available: {fused_conv_relu_available()}")
        for name, cin in (("conv1_1", 3), ("conv1_2", 64)):
            conv = torch.nn.Conv2d(cin, 64, 3, padding=1).eval()
            for dtype in (torch.bfloat16, torch.float32):
                conv_d = conv.to(dtype).to(memory_format=cl)
                x = torch.randn(1, cin, 1088, 1088, generator=gen).to(dtype).contiguous(memory_format=cl)
                same = torch.equal(conv2d_relu(x, conv_d), F.relu(conv_d(x)))
                print(f"{name} {cin} -> 64 x 1088² {str(dtype).removeprefix('torch.')}: conv then ReLU "
                      f"{best_ms(lambda: conv2d_relu(x, conv_d, fused=False), args.repeats)}, fused "
                      f"{best_ms(lambda: conv2d_relu(x, conv_d), args.repeats)} (equal: {same})")
        for cin, cout, side in ((24, 16, 256), (32, 24, 128)):
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1).eval().to(memory_format=cl)
            for dtype in (torch.bfloat16, torch.float32):
                x = torch.rand(8, cin, side, side, generator=gen).to(dtype).contiguous(memory_format=cl)
                skip = torch.rand(8, cout, 2 * side, 2 * side, generator=gen).to(dtype).contiguous(memory_format=cl)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    def plain():  # the previous inference path: a new upsampled map, a new output, the skip added
                        return conv2d_relu(F.interpolate(x, scale_factor=2, mode="nearest"), conv).add_(skip)

                    expected = plain().float()
                    got = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True).float()
                    relative = float((got - expected).abs().max() / expected.abs().max())
                    work = skip.clone()  # the sub-pixel step adds into it; repeated calls only grow its values
                    print(f"decoder step {cin} -> {cout}, 8 x {side}² -> {2 * side}² {str(dtype).removeprefix('torch.')}: "
                          f"upsample, conv + ReLU, add {best_ms(plain, args.repeats)}, sub-pixel "
                          f"{best_ms(lambda: upsample_conv2d_relu_add(x, conv, work, inplace=True), args.repeats)} "
                          f"(largest difference {relative:.1e} of the largest value)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
