"""Speed of change detection: the VGG-16 trunk on the two images' pixels, and `detect` end to end.

On a pair (``--pair FOLDER`` with ``pre.tif`` and ``post.tif``, e.g. written by
``bench_memory.py make``; or a synthetic ``--size`` pair made here, a real
GeoTIFF round trip) reports, on this machine:

- the floor: the conv3_2 trunk alone over the two images' pixels, each pixel
  once (non-overlapping ``--floor-tile`` tiles of random data, no halo);
- ``planetcd.detect`` end to end for each ``--methods`` entry (reading,
  registration, features in halo tiles, pooling, pseudo-pair calibration of τ),
  with its own timings and the ratio detect / floor;
- the load average before and after (the machine may be shared) and the peak RSS;
- with ``--breakdown``: where one feature tile's time goes (reading pre, reading post
  with the sub-pixel registration resample, preparing, the trunk, the nn map, pooling),
  on a central tile of detect's size, each step timed ``--repeats`` times (best).

Usage::

    python benchmarks/bench_detect.py --pair /tmp/pair4096 --methods paper,nn [--tile 1024] [--threads 2] [--json out.json]
    python benchmarks/bench_detect.py --pair /tmp/pair4096 --breakdown
    python benchmarks/bench_detect.py --pair /tmp/pair2048 --methods nn --configs 512:off,1024:on,1024:off --rounds 2

``--floors`` (the issue-16 acceptance run) prints, per ``--sizes`` synthetic pair (default 2048,4096),
``--rounds`` interleaved rounds of: the fp32 trunk floor, the bf16 trunk floor (the trunk alone on the
same pixels, each once, under bfloat16 autocast) and the default ``detect`` (``precision="auto"``), with
the ratios of detect to both floors (median over rounds of the per-round ratios). ``--segment`` adds the
same for ``segment`` on the 2000² CTX tile MC11E-I (synthetic without ``$PLANETCD_SHARED``) against the
UNet's own fp32 and bf16 floors (the network alone over the tile's pixels, each once, with the model's
flip averaging), and against its **work floor**: the fp32 time of the network passes the default
``segment`` makes on that tile (every catalogue scale, the flips, the decoy pass; timed by hooks on the
network during an fp32 ``segment`` in the same round); ``--monitor`` adds the default ``monitor`` on the first size's pair against the sum of
detect's fp32 floor and the UNet's fp32 floor over both images (``--sun-azimuth DEG`` gives monitor both dates'
sun instead of estimating it; a quarter turn segments on the input's own grid; ``--catalogues all`` has it
segment both whole images instead of the changed neighbourhoods). Each fp32 floor is measured twice: with
planetcd's own layers (fused convolution + ReLU, the sub-pixel decoder: ``fp32 floor``) and with the plain
PyTorch ops they stand for (:func:`planetcd.layers.plain_ops`: ``reference floor``, what the hardware gives
the standard ops, as when issue 16 was filed; a floor that planetcd's own fast paths do not move)::

    python benchmarks/bench_detect.py --floors --sizes 2048,4096 --rounds 3 --segment --monitor [--json out.json]
    python benchmarks/bench_detect.py --floors --sizes 256 --rounds 1 --segment --monitor --segment-size 256  # smoke test

``--configs TILE:REUSE,...`` times ``detect`` once per configuration and round, interleaved (so a
change of the machine's load hits every configuration alike): the tile side, and whether the
``nn`` calibration reuses pre's feature maps from the main pass (``on``) or recomputes its pre crops
(``off``, as before that existed). τ is printed for each run: it must not depend on either. Each run
also records the process's system CPU time and minor page faults over the run (``getrusage``): the
kernel's work handing out fresh pages for large temporaries, which grows with the tile side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from planetcd.change.detect import detect
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.features import VGGFeatures, pick_device, run_trunk
from planetcd.layers import plain_ops
from planetcd.raster import open_raster
from planetcd.tiling import halo_tiles


def trunk_seconds(trunk: VGGFeatures, height: int, width: int, tile: int, device, repeats: int = 1,
                  halo: bool = True, precision: str | None = "fp32") -> float:
    """Time the trunk alone on both images of ``height x width``: detect's halo tiles, or (``halo=False``)
    non-overlapping tiles, so each pixel goes through the trunk once; at ``precision`` (``"fp32"``, ``"bf16"``)."""
    s = trunk.stride
    tiles = halo_tiles(height, width, tile, -(-trunk.halo // s) * s if halo else 0, align=s)
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tiles:
            batch = rng.random((2, 3, t.read[2], t.read[3]), dtype=np.float32)
            run_trunk(trunk, batch, device, precision)
        best = min(best, time.perf_counter() - start)
    return best


def unet_seconds(net, height: int, width: int, tile: int, device, precision: str, images: int = 1,
                 batch_size: int = 4) -> float:
    """Time the segmenter alone on ``images`` images of ``height x width`` in non-overlapping tiles (edge tiles
    cut to the image), each pixel once, at ``precision``: the UNet's floor (with the model's flip averaging)."""
    from planetcd.craters.segment import predict_tiles

    rng = np.random.default_rng(0)
    shapes: dict[tuple[int, int], int] = {}
    for r in range(0, height, tile):
        for c in range(0, width, tile):
            key = (min(tile, height - r), min(tile, width - c))
            shapes[key] = shapes.get(key, 0) + images
    start = time.perf_counter()
    for (h, w), n in shapes.items():
        for k in range(0, n, batch_size):
            tiles = rng.uniform(-1, 1, (min(batch_size, n - k), h, w)).astype(np.float32)
            predict_tiles(net, tiles, device, batch_size, precision)
    return time.perf_counter() - start


class NetworkClock:
    """Seconds spent inside a module's forward calls (hooks on the module itself), while the context is open.

    ``bench_detect --segment`` wraps the segmenter ``segment`` loads (the same cached module) to time the
    network passes of its default pipeline: every scale, flip, decoy pass, as segment runs them.
    """

    def __init__(self, module: torch.nn.Module):
        self.module, self.seconds, self.calls, self._start = module, 0.0, 0, None

    def __enter__(self):
        def before(*_):
            self._start = time.perf_counter()

        def after(*_):
            self.seconds += time.perf_counter() - self._start
            self.calls += 1

        self._handles = [self.module.register_forward_pre_hook(before), self.module.register_forward_hook(after)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False


def _sun_summary(record: dict) -> dict:
    """What a date's sun cost ``monitor``: the azimuth used, where it came from and the canonical canvas."""
    frame = record.get("frame") or {}
    return {"azimuth_deg": record.get("sun_azimuth_deg"), "source": record.get("source"),
            "input_shape": frame.get("input_shape"), "canonical_shape": frame.get("canonical_shape")}


def _median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def floors(args, device) -> dict:
    """The ``--floors`` run: interleaved floors (fp32, bf16) and default detect / segment / monitor runs."""
    from planetcd import models
    from planetcd.craters.segment import segment
    from planetcd.monitor import monitor
    from planetcd.precision import resolve_precision

    trunk = VGGFeatures(layer=6, weights=args.weights).to(device)
    run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device, "bf16")  # warm-up of both kernels
    run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device, "fp32")
    report = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "threads": args.threads,
              "device": str(device), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "auto_precision": resolve_precision("auto", device), "rounds": args.rounds, "detect": [], "segment": None,
              "monitor": None}
    net = models.cached(args.model, str(device), None) if (args.segment or args.monitor) else None
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        pairs = {}
        for size in [int(s) for s in args.sizes.split(",")]:
            pair = make_change_pair((size, size), seed=1, displacement=(4.2, -6.1),
                                    new_craters=[[size * 0.4, size * 0.6, 20.0]])
            pre = write_synthetic_geotiff(Path(folder) / f"pre{size}.tif", pair.pre)
            post = write_synthetic_geotiff(Path(folder) / f"post{size}.tif", pair.post)
            pairs[size] = (pre, post)
            del pair
            runs = []
            for round_ in range(args.rounds):
                f32 = trunk_seconds(trunk, size, size, args.floor_tile, device, halo=False, precision="fp32")
                with plain_ops():
                    ref = trunk_seconds(trunk, size, size, args.floor_tile, device, halo=False, precision="fp32")
                b16 = trunk_seconds(trunk, size, size, args.floor_tile, device, halo=False, precision="bf16")
                start = time.perf_counter()
                result = detect(pre, post, trunk=trunk, n_pseudo=args.n_pseudo, device=args.device)
                seconds = time.perf_counter() - start
                runs.append({"round": round_, "fp32_floor_s": f32, "fp32_reference_floor_s": ref, "bf16_floor_s": b16,
                             "detect_s": seconds,
                             "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
                             "pseudo_pairs": (result.thresholds.get("pseudo_sample") or {}).get("n"),
                             "precision": result.params["precision"]["used"], "method": result.params["method"],
                             "load_average": round(os.getloadavg()[0], 2)})
                print(json.dumps({"size": size, **runs[-1]}), flush=True)
            entry = {"size": size, "runs": runs,
                     "fp32_floor_s": _median([r["fp32_floor_s"] for r in runs]),
                     "bf16_floor_s": _median([r["bf16_floor_s"] for r in runs]),
                     "detect_s": _median([r["detect_s"] for r in runs]),
                     "fp32_reference_floor_s": _median([r["fp32_reference_floor_s"] for r in runs]),
                     "detect_over_fp32_floor": _median([r["detect_s"] / r["fp32_floor_s"] for r in runs]),
                     "detect_over_fp32_reference_floor": _median([r["detect_s"] / r["fp32_reference_floor_s"] for r in runs]),
                     "detect_over_bf16_floor": _median([r["detect_s"] / r["bf16_floor_s"] for r in runs]),
                     "bf16_floor_over_fp32_floor": _median([r["bf16_floor_s"] / r["fp32_floor_s"] for r in runs])}
            report["detect"].append(entry)
            lines.append(f"detect {size}x{size}: fp32 floor {entry['fp32_floor_s']:.2f} s (reference "
                         f"{entry['fp32_reference_floor_s']:.2f} s), bf16 floor "
                         f"{entry['bf16_floor_s']:.2f} s, detect ({runs[-1]['method']}, {runs[-1]['precision']}) "
                         f"{entry['detect_s']:.2f} s = {entry['detect_over_fp32_floor']:.2f} x fp32 floor, "
                         f"{entry['detect_over_fp32_reference_floor']:.2f} x reference, "
                         f"{entry['detect_over_bf16_floor']:.2f} x bf16 floor")

        if args.segment:
            src = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / \
                "ctx-mc11e" / "images" / "MC11E-I.png"
            if args.segment_size is not None or not src.exists():
                side = args.segment_size or 2000
                data = np.random.default_rng(0).integers(1, 255, (side, side)).astype(np.float32)
                src = write_synthetic_geotiff(Path(folder) / "segment.tif", data)
            with open_raster(src) as ds:
                h, w = ds.height, ds.width
            runs = []
            for round_ in range(args.rounds):
                f32 = unet_seconds(net, h, w, args.unet_tile, device, "fp32")
                with plain_ops():
                    ref = unet_seconds(net, h, w, args.unet_tile, device, "fp32")
                b16 = unet_seconds(net, h, w, args.unet_tile, device, "bf16")
                # the default pipeline's own network passes (scales, flips, decoys) in fp32: its work floor
                with NetworkClock(net) as work_fp32:
                    segment(src, args.model, device=args.device, precision="fp32")
                start = time.perf_counter()
                with NetworkClock(net) as work:
                    result = segment(src, args.model, device=args.device)
                seconds = time.perf_counter() - start
                runs.append({"round": round_, "fp32_floor_s": f32, "fp32_reference_floor_s": ref, "bf16_floor_s": b16,
                             "segment_s": seconds, "work_fp32_floor_s": work_fp32.seconds,
                             "network_s": work.seconds, "network_calls": work.calls,
                             "precision": result.params["precision"]["used"], "scales": result.params["scales"],
                             "load_average": round(os.getloadavg()[0], 2)})
                print(json.dumps({"segment": f"{h}x{w}", **runs[-1]}), flush=True)
            entry = {"image": str(src), "shape": [h, w], "tta": bool(net.metadata.get("tta")), "runs": runs,
                     "fp32_floor_s": _median([r["fp32_floor_s"] for r in runs]),
                     "bf16_floor_s": _median([r["bf16_floor_s"] for r in runs]),
                     "segment_s": _median([r["segment_s"] for r in runs]),
                     "fp32_reference_floor_s": _median([r["fp32_reference_floor_s"] for r in runs]),
                     "segment_over_fp32_floor": _median([r["segment_s"] / r["fp32_floor_s"] for r in runs]),
                     "segment_over_fp32_reference_floor": _median([r["segment_s"] / r["fp32_reference_floor_s"]
                                                                   for r in runs]),
                     "segment_over_bf16_floor": _median([r["segment_s"] / r["bf16_floor_s"] for r in runs]),
                     "work_fp32_floor_s": _median([r["work_fp32_floor_s"] for r in runs]),
                     "network_s": _median([r["network_s"] for r in runs]),
                     "segment_over_work_fp32_floor": _median([r["segment_s"] / r["work_fp32_floor_s"] for r in runs])}
            report["segment"] = entry
            lines.append(f"segment {h}x{w} ({runs[-1]['precision']}, scales {runs[-1]['scales']}): UNet fp32 floor "
                         f"{entry['fp32_floor_s']:.2f} s (reference {entry['fp32_reference_floor_s']:.2f} s), bf16 floor "
                         f"{entry['bf16_floor_s']:.2f} s, segment "
                         f"{entry['segment_s']:.2f} s = {entry['segment_over_fp32_floor']:.2f} x fp32 floor, "
                         f"{entry['segment_over_fp32_reference_floor']:.2f} x reference, "
                         f"{entry['segment_over_bf16_floor']:.2f} x bf16 floor; its own network passes "
                         f"(scales, flips, decoys) take {entry['work_fp32_floor_s']:.2f} s in fp32 and "
                         f"{entry['network_s']:.2f} s as run: segment = {entry['segment_over_work_fp32_floor']:.2f} x "
                         f"that fp32 work floor")

        if args.monitor:
            size = min(pairs)
            pre, post = pairs[size]
            runs = []
            for round_ in range(args.rounds):
                trunk_floor = trunk_seconds(trunk, size, size, args.floor_tile, device, halo=False, precision="fp32")
                unet_floor = unet_seconds(net, size, size, args.unet_tile, device, "fp32", images=2)
                with plain_ops():
                    reference = (trunk_seconds(trunk, size, size, args.floor_tile, device, halo=False, precision="fp32")
                                 + unet_seconds(net, size, size, args.unet_tile, device, "fp32", images=2))
                start = time.perf_counter()
                result = monitor(pre, post, trunk=trunk, device=args.device, n_pseudo=args.n_pseudo,
                                 sun_azimuth=args.sun_azimuth, catalogues=args.catalogues)
                seconds = time.perf_counter() - start
                runs.append({"round": round_, "detect_fp32_floor_s": trunk_floor, "unet_fp32_floor_s": unet_floor,
                             "reference_floor_sum_s": reference,
                             "monitor_s": seconds, "precision": result.params["precision"]["used"],
                             "catalogues": args.catalogues, "segmented_fraction": result.params["segmented_fraction"],
                             "changed_patches": int(result.change.changed.sum()),
                             "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
                             "sun": {date: _sun_summary(record) for date, record in result.params["sun"].items()},
                             "load_average": round(os.getloadavg()[0], 2)})
                print(json.dumps({"monitor": f"{size}x{size}", **runs[-1]}), flush=True)
            entry = {"size": size, "runs": runs,
                     "monitor_s": _median([r["monitor_s"] for r in runs]),
                     "floor_sum_s": _median([r["detect_fp32_floor_s"] + r["unet_fp32_floor_s"] for r in runs]),
                     "monitor_over_floor_sum": _median([r["monitor_s"] / (r["detect_fp32_floor_s"] + r["unet_fp32_floor_s"])
                                                        for r in runs]),
                     "reference_floor_sum_s": _median([r["reference_floor_sum_s"] for r in runs]),
                     "monitor_over_reference_floor_sum": _median([r["monitor_s"] / r["reference_floor_sum_s"] for r in runs])}
            report["monitor"] = entry
            lines.append(f"monitor {size}x{size} ({runs[-1]['precision']}, --catalogues {args.catalogues}, "
                         f"{100 * runs[-1]['segmented_fraction']:.0f} % segmented): {entry['monitor_s']:.2f} s = "
                         f"{entry['monitor_over_floor_sum']:.2f} x (detect fp32 floor + UNet fp32 floor on both "
                         f"images = {entry['floor_sum_s']:.2f} s), {entry['monitor_over_reference_floor_sum']:.2f} x "
                         f"the reference floors' sum ({entry['reference_floor_sum_s']:.2f} s)")
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = lines
    print("\n".join(lines))
    return report


def tile_breakdown(pre, post, trunk: VGGFeatures, device, tile: int, repeats: int = 3) -> dict:
    """Seconds of each step of :func:`planetcd.change.detect.detect_tile` on one central tile (best of ``repeats``)."""
    from contextlib import ExitStack

    from rasterio.windows import Window

    from planetcd.change.detect import register_pair
    from planetcd.change.preparation import image_overview, prepare_pair, read_present
    from planetcd.change.nn import NN_SMOOTH, nn_change_map
    from planetcd.change.register import AlignedReader, post_on_pre_grid
    from planetcd.change.scores import PatchPooler, patch_cells
    from planetcd.tiling import patch_grid

    def best(step):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            value = step()
            times.append(time.perf_counter() - start)
        return min(times), value

    with ExitStack() as stack:
        pre_ds = stack.enter_context(open_raster(pre))
        grid = stack.enter_context(post_on_pre_grid(pre_ds, stack.enter_context(open_raster(post))))
        pre_stats, post_stats = image_overview(pre_ds, "pre").stats, image_overview(grid, "post").stats
        displacement, _ = register_pair(pre_ds, grid, pre_stats, post_stats)
        s = trunk.stride
        halo = -(-trunk.halo // s) * s + (2 + NN_SMOOTH) * s  # nn's halo (the larger)
        side = min(tile + 2 * halo, pre_ds.height, pre_ds.width)
        window = Window((pre_ds.width - side) // 2 // s * s, (pre_ds.height - side) // 2 // s * s, side, side)
        pre_reader, post_reader = AlignedReader(pre_ds), AlignedReader(grid, displacement)
        t_pre, (pre_data, pre_valid) = best(lambda: read_present(pre_reader, window))
        t_post, (post_data, post_valid) = best(lambda: read_present(post_reader, window))
        t_prep, batch = best(lambda: prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats, post_stats))
        from planetcd.precision import resolve_precision

        used = resolve_precision("auto", device)  # detect's default
        t_trunk, feats = best(lambda: run_trunk(trunk, batch, device, used))
        f_pre, f_post = torch.from_numpy(feats[:1]), torch.from_numpy(feats[1:])
        t_nn, _ = best(lambda: nn_change_map(f_pre, f_post, 2))
        cells = patch_cells(patch_grid(side, side, 100), s, side // s, side // s)
        t_pool, _ = best(lambda: [PatchPooler(cells, feats.shape[1], "max").add(f, 0, 0) for f in feats])
    return {"read_px": side, "displacement": [round(d, 2) for d in displacement], "read_pre_s": round(t_pre, 3),
            "read_post_registered_s": round(t_post, 3), "prepare_s": round(t_prep, 3), "trunk_s": round(t_trunk, 3),
            "nn_change_map_s": round(t_nn, 3), "pool_paper_s": round(t_pool, 3),
            "over_trunk": {k: round(v / t_trunk, 3) for k, v in (("read_pre", t_pre), ("read_post_registered", t_post),
                                                                 ("prepare", t_prep), ("nn_change_map", t_nn),
                                                                 ("pool_paper", t_pool))}}


def main() -> None:
    from planetcd.runtime import tune_allocator_from_env

    tune_allocator_from_env()  # as the planetcd command does: PLANETCD_MALLOC_TUNING=on keeps freed memory
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", type=Path, default=None, help="Folder with pre.tif and post.tif.")
    parser.add_argument("--size", type=int, default=2048, help="Side of the synthetic pair (without --pair).")
    parser.add_argument("--methods", default="paper", help="Comma-separated detect methods to time.")
    parser.add_argument("--tile", type=int, default=None, help="detect's --tile-size [default: detect's].")
    parser.add_argument("--floor-tile", type=int, default=1024, help="Tile side of the floor (no halo).")
    parser.add_argument("--n-pseudo", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--breakdown", action="store_true", help="Time the steps of one feature tile instead.")
    parser.add_argument("--configs", default=None, help="TILE:on|off,... interleaved detect runs (see above).")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--floors", action="store_true",
                        help="Interleaved fp32 and bf16 floors and default runs, with ratios (see above).")
    parser.add_argument("--sizes", default="2048,4096", help="Sides of the synthetic pairs of --floors.")
    parser.add_argument("--segment", action="store_true", help="--floors: also segment against the UNet's floors.")
    parser.add_argument("--monitor", action="store_true", help="--floors: also monitor on the first size's pair.")
    parser.add_argument("--model", default="ctx-craters", help="Segmenter of --segment / --monitor.")
    parser.add_argument("--sun-azimuth", default=None,
                        help="--monitor: both dates' sun (degrees; default: estimated from each date, as monitor does).")
    parser.add_argument("--catalogues", choices=("near-change", "all"), default="near-change",
                        help="--monitor: what monitor segments (its --catalogues; default: monitor's, near-change).")
    parser.add_argument("--segment-size", type=int, default=None,
                        help="--segment on a synthetic image of this side instead of MC11E-I (2000 px).")
    parser.add_argument("--unet-tile", type=int, default=512, help="Tile side of the UNet floor.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.floors:
        report = floors(args, device)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return
    trunk = VGGFeatures(layer=6, weights=args.weights).to(device)
    tile_option = {} if args.tile is None else {"tile_size": args.tile}
    report = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "threads": args.threads,
              "device": str(device), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as folder:
        if args.pair is not None:
            pre, post = args.pair / "pre.tif", args.pair / "post.tif"
        else:
            pair = make_change_pair((args.size, args.size), seed=1, displacement=(4.2, -6.1),
                                    new_craters=[[args.size * 0.4, args.size * 0.6, 20.0]])
            pre = write_synthetic_geotiff(Path(folder) / "pre.tif", pair.pre)
            post = write_synthetic_geotiff(Path(folder) / "post.tif", pair.post)
            del pair
        with open_raster(pre) as ds:
            height, width = ds.height, ds.width
        report["pair"] = str(args.pair) if args.pair is not None else f"synthetic {args.size}"
        report["shape"] = [height, width]
        run_trunk(trunk, np.zeros((1, 3, 64, 64), np.float32), device)  # warm-up
        if args.breakdown:
            report["tile"] = tile_breakdown(pre, post, trunk, device, args.tile or 1024, args.repeats)
            report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(report, indent=2))
            return
        floor = trunk_seconds(trunk, height, width, args.floor_tile, device, halo=False)
        pixels = 2 * height * width
        report["floor_s"] = round(floor, 2)
        report["floor_mpx_per_s"] = round(pixels / floor / 1e6, 3)
        if args.configs:
            import planetcd.change.calibration as calibration

            budget = calibration.PSEUDO_REUSE_BYTES
            runs = []
            for round_ in range(args.rounds):
                for method in args.methods.split(","):
                    for config in args.configs.split(","):
                        tile, reuse = config.split(":")
                        calibration.PSEUDO_REUSE_BYTES = budget if reuse == "on" else 0
                        usage = resource.getrusage(resource.RUSAGE_SELF)
                        start = time.perf_counter()
                        result = detect(pre, post, trunk=trunk, method=method, n_pseudo=args.n_pseudo,
                                        device=args.device, tile_size=int(tile))
                        seconds = time.perf_counter() - start
                        after = resource.getrusage(resource.RUSAGE_SELF)
                        runs.append({"round": round_, "method": method, "tile": int(tile), "reuse": reuse,
                                     "detect_s": round(seconds, 2), "over_floor": round(seconds / floor, 3),
                                     # the kernel's share: fresh pages (each a fault) for big temporaries
                                     "system_s": round(after.ru_stime - usage.ru_stime, 2),
                                     "minor_page_faults": after.ru_minflt - usage.ru_minflt,
                                     "features_s": round(result.timings["features_s"], 2),
                                     "threshold_s": round(result.timings["threshold_s"], 2), "tau": result.tau,
                                     "load_average": [round(x, 2) for x in os.getloadavg()]})
                        print(json.dumps(runs[-1]), flush=True)
            calibration.PSEUDO_REUSE_BYTES = budget
            report["runs"] = runs
            args.methods = ""
        for method in filter(None, args.methods.split(",")):
            start = time.perf_counter()
            result = detect(pre, post, trunk=trunk, method=method, n_pseudo=args.n_pseudo, device=args.device,
                            **tile_option)
            seconds = time.perf_counter() - start
            report[method] = {
                "detect_s": round(seconds, 2),
                "detect_over_floor": round(seconds / floor, 3),
                "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
                "pseudo_pairs": (result.thresholds.get("pseudo_sample") or {}).get("n"),
                "tile_size": result.params["tile_size"],
                "n_patches": int(len(result.patches)),
                "tau": result.tau,
                "n_pseudo_pre_reused": result.params.get("n_pseudo_pre_reused"),
            }
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
