"""Train the shipped ``ctx-craters`` segmenter: the sun-aware recipe on MC11E A-G, validated on H and I.

    python benchmarks/train_ctx_craters.py --out runs/ctx-craters-sun [--init planetcd/models/ctx-craters.pt]
        [--epochs 60] [--crops-per-epoch 512] [--time-limit SECONDS] [--threads 2] [--precision auto] [--device cpu]
        [--lr LR] [--lr-min LR] [--confidence-weights on|off]

The recipe is ``TrainConfig.sun_aware_recipe`` (docs/training.md): every tile
turned to the canonical frame (light from the left; the tile's azimuth read
from its labels), only the light-keeping mirror, 180°-turned labelled craters
pasted as mound negatives, every labelled crater weighing alike, the epoch with
the best crater F1 on H and I kept, bf16 where the CPU runs it natively.

``--init`` starts from the weights of a checkpoint of the same architecture
(the previous shipped model by default, itself trained on A-G with H and I for
validation, so no tile changes role). The tiles of the fold benchmark
(``benchmarks/crater_folds.py``) are trained from scratch instead: a fold
model must never have seen its test tiles.

The probability threshold is chosen afterwards on H and I with the product's
own path (``benchmarks/val_segment.py --model OUT/best.pt``); H and I are then
validation tiles, not an unseen test (say so when reporting them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHARED = Path(os.environ.get("PLANETCD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
CTX = SHARED / "data" / "ctx-mc11e"
DEFAULT_INIT = Path(__file__).resolve().parents[1] / "planetcd" / "models" / "ctx-craters.pt"


def tile(letter: str):
    from planetcd.craters.train import load_labelled

    return load_labelled(CTX / "images" / f"MC11E-{letter}.png", CTX / "annotations" / "clustered" / f"MC11E-{letter}.xml")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ctx-craters-sun")
    ap.add_argument("--init", default=str(DEFAULT_INIT), help="checkpoint to start from ('none': from scratch)")
    ap.add_argument("--train", default="ABCDEFG", help="training tiles")
    ap.add_argument("--val", default="HI", help="validation tiles (epoch selection)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--crops-per-epoch", type=int, default=512)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None,
                    help="first learning rate of the cosine schedule (default: 2e-4 when continuing a checkpoint, "
                         "the recipe's 5e-4 from random weights, as the tile folds train)")
    ap.add_argument("--lr-min", type=float, default=None,
                    help="last learning rate (default: 1e-5 when continuing, the recipe's 5e-5 from random weights)")
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--hard-negative-rate", type=float, default=1.0)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds of training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--confidence-weights", choices=("on", "off"), default="off",
                    help="weigh crater pixels by min(1, annotators / 3) (on: the recipe's before 2026-12-04) or all "
                         "alike (off: the recipe's now)")
    ap.add_argument("--ema-decay", type=float, default=0.0,
                    help="> 0: best.pt is a moving average of the weights (decay per step), best-raw.pt the trained "
                         "weights' best epoch (TrainConfig.ema_decay)")
    args = ap.parse_args(argv)

    from planetcd.craters.train import TrainConfig, train

    init = None if args.init.lower() == "none" else args.init
    recipe = TrainConfig.sun_aware_recipe()
    scratch = {"lr": recipe.lr, "lr_min": recipe.lr_min}  # the recipe's own, as the tile folds train from scratch
    resume = {"lr": 2e-4, "lr_min": 1e-5}  # the shipped model's last stage, continuing its own weights
    rates = scratch if init is None else resume
    args.lr = rates["lr"] if args.lr is None else args.lr
    args.lr_min = rates["lr_min"] if args.lr_min is None else args.lr_min
    config = TrainConfig.sun_aware_recipe(
        epochs=args.epochs, crops_per_epoch=args.crops_per_epoch, crop=args.crop, batch_size=args.batch_size,
        lr=args.lr, lr_min=args.lr_min, patience=args.patience, hard_negative_rate=args.hard_negative_rate,
        time_limit=args.time_limit, threads=args.threads, precision=args.precision, device=args.device,
        seed=args.seed, init=init, val_tile=512, confidence_weights=args.confidence_weights == "on",
        ema_decay=args.ema_decay)
    train_set = [tile(t) for t in args.train.upper()]
    val_set = [tile(t) for t in args.val.upper()]
    t0 = time.monotonic()
    summary = train(train_set, val_set, config, args.out,
                    extra_metadata={"training_tiles": list(args.train.upper()), "validation_tiles": list(args.val.upper())})
    seconds = time.monotonic() - t0
    record = {k: v for k, v in summary.items() if k != "history"} | {"seconds": round(seconds, 1), "init": init}
    (Path(args.out) / "summary.json").write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
