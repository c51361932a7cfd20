"""What reading the sun back from the craters found does to the crater F1: ``planetcd.segment`` with and without
``sun_refine``, on labelled tiles, each also turned by quarter turns.

    python benchmarks/sun_refine.py --model runs/folds-sun2/fold-ADG/best.pt --threshold 0.4 --tiles A,D,G,H,I
    python benchmarks/sun_refine.py --model ctx-craters --tiles H,I,HRSC --turns 0     # the shipped pipeline

For each tile and turn it prints the sun ``segment`` used (estimated, or the fallback), the read-back
(``params["sun"]["readback"]``: azimuth, craters, turn from the estimate, bootstrap support, whether the
craters show the sun elsewhere), the labels' azimuth (``sun.azimuth_from_craters`` on the clustered labels: a
reference, not available on a new image) and the crater F1 (DeepMoon rule, >= 8 px, clustered labels, as
``crater_folds.py``) without and with ``sun_refine``. Where the read-back does not ask for a second pass
both runs are the same and only one is made. ``--fast``: one scale and no verifier (the fold models have
none). Quarter turns are exact (``np.rot90``), so they check that the read-back turns with the image.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import crater_folds as cf


def turned_craters(craters: np.ndarray, shape: tuple[int, int], quarter_turns: int) -> np.ndarray:
    """``(n, >=2)`` x, y of an image's craters on ``np.rot90(image, quarter_turns)`` (counter-clockwise)."""
    out = np.array(craters, np.float64)
    rows, cols = shape
    for _ in range(quarter_turns % 4):
        out[:, 0], out[:, 1] = out[:, 1].copy(), (cols - 1) - out[:, 0]
        rows, cols = cols, rows
    return out


def main(argv=None) -> int:
    from planetcd import models
    from planetcd.craters import sun
    from planetcd.craters.segment import segment

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ctx-craters", help="registry name or checkpoint (a fold's best.pt)")
    ap.add_argument("--threshold", type=float, default=None, help="crater probability threshold [model's]")
    ap.add_argument("--tiles", default="A,D,G,H,I")
    ap.add_argument("--turns", default="0,1,2,3", help="quarter turns (counter-clockwise) of each tile")
    ap.add_argument("--fast", action="store_true", help="one scale, no verifier (a fold checkpoint has none)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = models.load(args.model, device="cpu")
    options = {"prob_threshold": args.threshold}
    if args.fast:
        options.update(scales=[1.0], verify=False)
    print("tile turn  sun used (source)  readback: deg craters turn support elsewhere  labels deg  F1 off  F1 on")
    for tile in [t.strip().upper() for t in args.tiles.split(",")]:
        image0, truth0 = cf.raw_tile(tile)
        for k in [int(v) for v in args.turns.split(",")]:
            t0 = time.monotonic()
            image = np.ascontiguousarray(np.rot90(image0, k))
            truth = turned_craters(truth0, image0.shape, k)
            reference, _ = sun.azimuth_from_craters(image, truth)
            off = segment(image, model, **options)
            record = off.params["sun"]
            back = record.get("readback") or {}
            f1 = {}
            runs = {"off": off}
            if back.get("elsewhere"):
                runs["on"] = segment(image, model, sun_refine=True, **options)
            for name in ("off", "on"):
                catalog = runs.get(name, off).catalog
                found = np.c_[catalog.x_px, catalog.y_px, catalog.radius_px]
                f1[name] = cf.prf(cf.score(found, truth, tile))["f1"]
            readback = (f"{back['readback_deg']:.1f} {back['n_craters']} {back['turn_deg']:+.1f} {back['support']:.2f} "
                        f"{'yes' if back['elsewhere'] else 'no'}") if back.get("readback_deg") is not None else "-"
            print(f"{tile} {k}  {record['sun_azimuth_deg']:.1f} ({record['source']})  {readback}  {reference:.1f}  "
                  f"{f1['off']:.3f}  {f1['on']:.3f}", flush=True)
            print(f"# {tile} turn {k}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
