"""Training: preprocessing, augmentation, metrics, the loop on the synthetic dots set."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from planetcd.craters.targets import synthetic_dots
from planetcd.craters.train import (
    LabelledImage,
    PixelCounts,
    TrainConfig,
    augment_batch,
    fill_missing,
    load_checkpoint,
    loss_fn,
    prepare_image,
    tile_array,
    train,
)
from planetcd.craters.unet import SymmetricUNet


def test_missing_pixels_become_the_image_mean():
    img = np.array([[0, 10, 20], [30, -9, 40]], np.float32)
    filled, ok = fill_missing(img, nodata=-9)
    assert not ok[0, 0] and not ok[1, 1]
    assert filled[0, 0] == pytest.approx(25.0) and filled[1, 1] == pytest.approx(25.0)
    prepared = prepare_image(img, nodata=-9)
    assert prepared.min() >= -1 and prepared.max() <= 1 and prepared.dtype == np.float32


def test_tiling_covers_the_image():
    a = np.arange(1000 * 700, dtype=np.float32).reshape(1000, 700)
    tiles, windows = tile_array(a, 512)
    assert tiles.shape == (4, 512, 512)
    covered = np.zeros(a.shape, bool)
    for t, (r, c, h, w) in zip(tiles, windows):
        np.testing.assert_array_equal(t, a[r : r + h, c : c + w])
        covered[r : r + h, c : c + w] = True
    assert covered.all()
    small, _ = tile_array(np.ones((100, 80), np.float32), 128)
    assert small.shape == (1, 128, 128)


def test_augmentation_moves_image_and_target_together():
    gen = torch.Generator().manual_seed(0)
    imgs, tgts, _ = synthetic_dots(6, 96, radius=(6, 10), noise=0.0, seed=1)
    x = torch.from_numpy(imgs[:, None] * 2 - 1)
    y = torch.from_numpy(tgts[:, None].astype(np.float32))
    xa, ya = augment_batch(x, y, 48, gen, brightness=0.0, contrast=0.0)
    assert xa.shape == ya.shape == (6, 1, 48, 48)
    assert set(torch.unique(ya).tolist()) <= {0.0, 1.0}
    # dots stay where their targets are: bright pixels inside, dark outside
    inside, outside = xa[ya > 0.5], xa[ya < 0.5]
    assert inside.numel() > 0
    assert float(inside.mean()) > float(outside.mean()) + 0.5
    xb, _ = augment_batch(x, y, 48, torch.Generator().manual_seed(0), brightness=0.0, contrast=0.0)
    assert torch.equal(xa, xb)  # seeded


def test_zoom_range_magnifies_image_and_target_by_the_drawn_factor():
    yy, xx = np.mgrid[:160, :160]
    disc = torch.from_numpy(((yy - 80) ** 2 + (xx - 80) ** 2 < 10**2).astype(np.float32))[None, None]
    kw = dict(rotation=0.0, brightness=0.0, contrast=0.0, flips=False)
    areas = {}
    for factor in (0.5, 1.0, 2.0):
        xa, ya = augment_batch(disc * 2 - 1, disc.clone(), 64, torch.Generator().manual_seed(0), zoom_range=(factor, factor), **kw)
        areas[factor] = float(ya.sum())
        # image and target move together (pixels exactly on the rim may round either way)
        assert float(((xa > 0).float() - ya).abs().sum()) <= 0.15 * float(ya.sum())
    assert areas[2.0] / areas[1.0] == pytest.approx(4.0, rel=0.05)
    assert areas[0.5] / areas[1.0] == pytest.approx(0.25, rel=0.1)
    # drawn log-uniformly within the range: magnifications of a wide range spread the disc areas
    many = disc.expand(32, 1, 160, 160).contiguous()
    _, ya = augment_batch(many * 2 - 1, many, 64, torch.Generator().manual_seed(1), zoom_range=(0.7, 2.5), **kw)
    per_image = ya.sum(dim=(1, 2, 3)) / areas[1.0]
    assert float(per_image.min()) >= 0.7**2 * 0.9 and float(per_image.max()) <= 2.5**2 * 1.1
    assert float(per_image.max()) > 3.0 and float(per_image.min()) < 1.0
    with pytest.raises(ValueError, match="zoom_range"):
        augment_batch(disc, disc, 64, torch.Generator(), zoom_range=(2.0, 1.0))


def test_noise_and_blur_augmentation_touch_the_image_only():
    imgs, tgts, _ = synthetic_dots(4, 96, radius=(6, 10), noise=0.0, seed=2)
    x = torch.from_numpy(imgs[:, None] * 2 - 1)
    y = torch.from_numpy(tgts[:, None].astype(np.float32))
    kw = dict(brightness=0.0, contrast=0.0)
    x0, y0 = augment_batch(x, y, 48, torch.Generator().manual_seed(3), **kw)
    xn, yn = augment_batch(x, y, 48, torch.Generator().manual_seed(3), noise=0.2, **kw)
    xb, yb = augment_batch(x, y, 48, torch.Generator().manual_seed(3), blur=2.0, **kw)
    assert torch.equal(y0, yn) and torch.equal(y0, yb)  # the geometry draws come first, targets untouched
    residual = (xn - x0).flatten(1).std(dim=1)
    assert float(residual.max()) > 0.02 and float(residual.max()) < 0.2 * 1.2
    # blur lowers the pixel-to-pixel differences, keeps the mean
    assert float((xb[..., 1:] - xb[..., :-1]).abs().mean()) < float((x0[..., 1:] - x0[..., :-1]).abs().mean())
    assert float(xb.mean()) == pytest.approx(float(x0.mean()), abs=0.02)


def test_gaussian_blur_has_unit_gain_and_tiny_sigma_is_identity():
    from planetcd.craters.train import _gaussian_blur

    x = torch.rand(3, 1, 20, 24)
    out = _gaussian_blur(x, torch.tensor([1e-6, 1.0, 3.0]))
    assert out.shape == x.shape
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(_gaussian_blur(torch.ones(3, 1, 20, 24), torch.tensor([0.5, 1.0, 3.0])), torch.ones(3, 1, 20, 24))
    assert float(out[2].std()) < float(out[1].std()) < float(x[1].std())


def test_pixel_metrics_on_a_known_confusion():
    prob = torch.tensor([0.9, 0.8, 0.2, 0.1, 0.6, 0.3])
    truth = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    c = PixelCounts()
    c.add(prob, truth, loss=2.0)
    m = c.metrics()
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["dice"] == pytest.approx(4 / 6)
    assert m["loss"] == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["bce", "dice", "focal"])
def test_losses_prefer_the_right_answer(name):
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    good, bad = target * 8 - 4, 4 - target * 8
    f = loss_fn(name)
    assert float(f(good, target)) < float(f(bad, target))


def _dots_set(n, seed):
    imgs, _, craters = synthetic_dots(n, 128, seed=seed)
    return [LabelledImage.from_arrays(f"dots{seed}-{i}", im, cr) for i, (im, cr) in enumerate(zip(imgs, craters))]


def test_a_few_steps_lower_the_loss_on_the_dots_set():
    torch.manual_seed(0)
    imgs, tgts, _ = synthetic_dots(4, 128, seed=5)
    x = torch.from_numpy(imgs[:, None] * 2 - 1)
    y = torch.from_numpy(tgts[:, None].astype(np.float32))
    model = SymmetricUNet()  # the default model, dropout and all
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    crit = loss_fn("bce")
    model.eval()
    with torch.no_grad():
        before = float(crit(model.forward_logits(x), y))
    model.train()
    for _ in range(15):
        loss = crit(model.forward_logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(crit(model.forward_logits(x), y))
    assert after < 0.7 * before


def test_loop_writes_log_curves_and_best_checkpoint(tmp_path):
    cfg = TrainConfig(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=3, patience=5,
                      val_tile=128, seed=1, threads=None)
    result = train(_dots_set(3, 1), _dots_set(1, 2), cfg, tmp_path)
    assert result["epochs_run"] == 3
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 3
    for key in ("train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_iou", "val_dice",
                "val_precision", "val_recall", "val_f1"):
        assert key in rows[0]
    assert 0.0 <= float(rows[-1]["val_f1"]) <= 1.0
    assert (tmp_path / "last.pt").exists()
    val_losses = [float(r["val_loss"]) for r in rows]
    assert result["best_epoch"] == int(np.argmin(val_losses)) + 1
    assert (tmp_path / "curves.png").stat().st_size > 1000
    model, payload = load_checkpoint(tmp_path / "best.pt")
    assert payload["epoch"] == result["best_epoch"]
    assert payload["train_images"] == ["dots1-0", "dots1-1", "dots1-2"]
    assert model.config["filter_multiple"] == 0.5


def test_split_is_by_image(tmp_path):
    a = _dots_set(2, 1)
    with pytest.raises(ValueError, match="split by image"):
        train(a, a[:1], TrainConfig(epochs=1), tmp_path)


@pytest.mark.parametrize("monitor", ["val_f1", "val_balanced_accuracy"])
def test_best_checkpoint_follows_the_monitored_metric(tmp_path, monitor):
    cfg = TrainConfig(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=3, patience=5,
                      val_tile=128, seed=2, monitor=monitor)
    result = train(_dots_set(2, 7), _dots_set(1, 8), cfg, tmp_path)
    values = [np.nan_to_num(row[monitor]) for row in result["history"]]
    assert result["best_epoch"] == int(np.argmax(values)) + 1


def test_early_stopping(tmp_path):
    cfg = TrainConfig(filter_multiple=0.5, crop=64, crops_per_epoch=4, batch_size=4, epochs=50, patience=1,
                      val_tile=128, seed=0, lr=0.5)  # a huge learning rate: validation loss stops improving
    result = train(_dots_set(2, 3), _dots_set(1, 4), cfg, tmp_path)
    assert result["epochs_run"] < 50
    assert result["epochs_run"] - result["best_epoch"] == 1


def test_crater_scores_of_a_perfect_map_and_an_empty_map():
    from planetcd.craters.train import crater_scores

    craters = np.array([[30, 30, 6], [80, 40, 9], [50, 90, 5], [100, 100, 12]], float)
    im = LabelledImage.from_arrays("x", np.random.default_rng(0).normal(size=(128, 128)), craters)
    perfect = crater_scores([im.target.astype(np.float32)], [im])
    assert perfect["val_f1"] == pytest.approx(1.0)
    empty = crater_scores([np.zeros((128, 128), np.float32)], [im])
    assert empty["val_f1"] == 0.0


def test_score_segmenter_stitches_the_whole_probability_map():
    from planetcd.craters.train import score_segmenter

    class Pointwise(torch.nn.Module):
        def forward_logits(self, x):
            return 3 * x

    rng = np.random.default_rng(2)
    images = [LabelledImage.from_arrays(f"im{i}", rng.normal(size=shape), [[20, 20, 5]])
              for i, shape in enumerate([(300, 200), (90, 140)])]
    metrics, probs = score_segmenter(Pointwise(), images, 128, 4, loss_fn("bce"), return_prob=True)
    for im, prob in zip(images, probs):
        assert prob.shape == im.image.shape
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-3 * im.image)), rtol=1e-5, atol=1e-6)
    assert 0 <= metrics["balanced_accuracy"] <= 1


def test_init_starts_from_a_checkpoint(tmp_path):
    from planetcd.craters.unet import save_checkpoint

    start = SymmetricUNet(filter_multiple=0.5)
    save_checkpoint(tmp_path / "start.pt", start, "symmetric")
    cfg = TrainConfig(filter_multiple=0.5, crop=64, crops_per_epoch=4, batch_size=4, epochs=1, val_tile=128,
                      lr=0.0, init=str(tmp_path / "start.pt"), crater_f1=False)
    train(_dots_set(1, 5), _dots_set(1, 6), cfg, tmp_path / "run")
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    for key, value in start.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    with pytest.raises(ValueError, match="model"):
        train(_dots_set(1, 5), [], TrainConfig(filter_multiple=1.0, epochs=1, init=str(tmp_path / "start.pt")), tmp_path / "r2")


def test_cosine_schedule_decays_the_learning_rate(tmp_path):
    from planetcd.craters.train import lr_at

    assert lr_at(0.0, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert lr_at(0.5, 1e-3, 0.0) == pytest.approx(5e-4)
    assert lr_at(1.0, 1e-3, 1e-5) == pytest.approx(1e-5)
    common = dict(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=3, val_tile=128, lr=1e-3,
                  crater_f1=False, seed=0)
    cosine = train(_dots_set(1, 5), _dots_set(1, 6), TrainConfig(lr_schedule="cosine", lr_min=1e-5, **common), tmp_path / "c")
    lrs = [row["lr"] for row in cosine["history"]]
    assert lrs[0] < 1e-3 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(1e-5)  # the last step runs at lr_min
    constant = train(_dots_set(1, 5), _dots_set(1, 6), TrainConfig(**common), tmp_path / "k")
    assert [row["lr"] for row in constant["history"]] == [1e-3] * 3
    with pytest.raises(ValueError, match="schedule"):
        train(_dots_set(1, 5), [], TrainConfig(lr_schedule="step", **common), tmp_path / "x")


# --------------------------------------------------------------------------- batches made ahead (the GPU path)


def test_prefetched_gives_the_same_items_in_order_at_any_depth():
    from planetcd.craters.train import prefetched

    for depth in (0, 1, 3):
        assert list(prefetched(iter(range(25)), depth)) == list(range(25))


def test_prefetched_raises_the_producers_error_where_its_item_would_be():
    from planetcd.craters.train import prefetched

    def items():
        yield from range(3)
        raise RuntimeError("crop sampling failed")

    got = []
    with pytest.raises(RuntimeError, match="crop sampling failed"):
        for item in prefetched(items(), 2):
            got.append(item)
    assert got == [0, 1, 2]


def test_closing_a_prefetched_run_early_stops_its_thread():
    import threading

    from planetcd.craters.train import prefetched

    def endless():
        k = 0
        while True:
            yield k
            k += 1

    run = prefetched(endless(), 2)
    assert [next(run) for _ in range(5)] == [0, 1, 2, 3, 4]
    run.close()
    assert not any(t.name == "planetcd-batches" and t.is_alive() for t in threading.enumerate())


def test_training_with_batches_made_ahead_is_the_same_run(tmp_path):
    # the batches' only randomness is the run's two generators, used by the one producer in order: a run whose
    # batches a background thread makes ahead (the GPU default) ends with the same weights as the inline run
    cfg = dict(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=2, val_tile=128, seed=5,
               hard_negative_rate=0.0, noise=0.02, blur=0.5, threads=1)
    inline = train(_dots_set(2, 11), _dots_set(1, 12), TrainConfig(prefetch=0, **cfg), tmp_path / "inline")
    ahead = train(_dots_set(2, 11), _dots_set(1, 12), TrainConfig(prefetch=3, **cfg), tmp_path / "ahead")
    assert [r["train_loss"] for r in inline["history"]] == [r["train_loss"] for r in ahead["history"]]
    a, _ = load_checkpoint(tmp_path / "inline" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "ahead" / "last.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_moving_average_of_the_weights_leaves_training_alone_and_keeps_both_bests(tmp_path):
    cfg = dict(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=3, val_tile=128, seed=3,
               hard_negative_rate=0.0, threads=1, patience=5)
    plain = train(_dots_set(2, 21), _dots_set(1, 22), TrainConfig(**cfg), tmp_path / "plain")
    averaged = train(_dots_set(2, 21), _dots_set(1, 22), TrainConfig(ema_decay=0.9, **cfg), tmp_path / "ema")
    # the trained weights follow the same path: same losses, and their validation is the plain run's
    assert [r["train_loss"] for r in plain["history"]] == [r["train_loss"] for r in averaged["history"]]
    assert [r["val_loss"] for r in plain["history"]] == [r["raw_val_loss"] for r in averaged["history"]]
    assert averaged["best_raw_epoch"] == plain["best_epoch"]
    raw, payload = load_checkpoint(tmp_path / "ema" / "best-raw.pt")
    same, _ = load_checkpoint(tmp_path / "plain" / "best.pt")
    for (name, x), (_, y) in zip(raw.state_dict().items(), same.state_dict().items()):
        assert torch.equal(x, y), name
    assert payload["weights"] == "trained"
    # the run's own weights are the average: not the trained ones, and selected by their own validation
    mean, meta = load_checkpoint(tmp_path / "ema" / "last.pt")
    last, _ = load_checkpoint(tmp_path / "plain" / "last.pt")
    assert not all(torch.equal(x, y) for x, y in zip(mean.state_dict().values(), last.state_dict().values()))
    assert meta["weights"].startswith("exponential moving average")
    losses = [r["val_loss"] for r in averaged["history"]]
    assert averaged["best_epoch"] == int(np.argmin(losses)) + 1


def test_a_moving_average_with_almost_no_memory_is_the_trained_weights(tmp_path):
    cfg = dict(filter_multiple=0.5, crop=64, crops_per_epoch=8, batch_size=4, epochs=2, val_tile=128, seed=4,
               hard_negative_rate=0.0, threads=1, crater_f1=False)
    train(_dots_set(1, 23), _dots_set(1, 24), TrainConfig(**cfg), tmp_path / "plain")
    train(_dots_set(1, 23), _dots_set(1, 24), TrainConfig(ema_decay=1e-9, **cfg), tmp_path / "ema")
    a, _ = load_checkpoint(tmp_path / "plain" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "ema" / "last.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="ema_decay"):
        train(_dots_set(1, 23), [], TrainConfig(ema_decay=1.5, **cfg), tmp_path / "bad")
