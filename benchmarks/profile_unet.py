"""Where the crater U-Net's inference time goes: ``torch.profiler`` on the shipped network, by operator.

    python benchmarks/profile_unet.py [--model ctx-craters] [--batch 4] [--tile 512] [--rounds 3] [--threads 2]
        [--precision bf16|fp32]
    PYTHONPATH=/path/to/other/checkout python benchmarks/profile_unet.py    # another commit's code, same script

Loads the model as ``planetcd segment`` does (channels-last, its flip averaging), runs it on ``--batch``
random tiles of ``--tile``² under ``torch.inference_mode`` (bf16 autocast with ``--precision bf16``) once to
warm up, then ``--rounds`` times under the profiler, and prints each operator's share of the CPU time.
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> int:
    from torch.profiler import profile

    from planetcd import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ctx-craters")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rows", type=int, default=8, help="operators printed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = models.load(args.model)
    x = torch.rand(args.batch, 1, args.tile, args.tile, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        net(x)
        with profile() as prof:
            for _ in range(args.rounds):
                net(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model}, {args.rounds} x {args.batch} tiles of {args.tile}², {args.precision}, "
          f"{args.threads} threads: {total / 1e3 / args.rounds:.1f} ms of CPU time per pass")
    for e in events[: args.rows]:
        print(f"{e.key:40s} {100 * e.self_cpu_time_total / total:5.1f} %  {e.count:5d} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
