"""Dask: detect, segment and monitor with a DaskRunner on a real LocalCluster of two worker processes equal the
single-process run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from planetcd.change.detect import detect
from planetcd.craters.segment import segment
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.distributed import DaskRunner
from planetcd.monitor import monitor

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The workers run torch on one thread: so does the single-process run here, so both do the same arithmetic
    (convolutions sum in a thread-count-dependent order, and the untrained UNet's probabilities sit near its
    threshold, where a last-bit difference would move a mask pixel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A 256x320 Mars pair (small tiles below make several tasks), post shifted with one new crater."""
    folder = tmp_path_factory.mktemp("dask_pair")
    made = make_change_pair((256, 320), seed=21, displacement=(2.2, -3.1), new_craters=[[130, 170, 16.0]])
    return write_synthetic_geotiff(folder / "pre.tif", made.pre), write_synthetic_geotiff(folder / "post.tif", made.post)


@pytest.fixture(scope="module")
def segmenter(untrained_unet):
    return untrained_unet(seed=3)


def test_detect_on_two_workers_equals_single_process(client, pair, trunk):
    """The paper's pooled features (``monitor`` below covers the ``nn`` method)."""
    pre, post = pair
    options = dict(method="paper", n_pseudo=8, tile_size=128, seed=2, trunk=trunk)
    local = detect(pre, post, **options)
    remote = detect(pre, post, runner=DaskRunner(client), **options)
    assert len(remote.patches) == len(local.patches) > 4
    np.testing.assert_array_equal(remote.patches, local.patches)
    np.testing.assert_allclose(remote.change_score, local.change_score, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(remote.valid_fraction, local.valid_fraction)
    assert remote.tau == pytest.approx(local.tau, rel=1e-6)
    np.testing.assert_array_equal(remote.changed, local.changed)
    assert remote.displacement == local.displacement


def test_monitor_on_two_workers_equals_single_process(client, pair, trunk, segmenter):
    pre, post = pair
    options = dict(model=segmenter, trunk=trunk, n_pseudo=8, block_size=128, block_halo=48, tile_size=96, overlap=16,
                   prob_threshold=0.5, seed=1)
    local = monitor(pre, post, **options)
    remote = monitor(pre, post, runner=DaskRunner(client), **options)
    for name in ("pre_craters", "post_craters", "candidates"):
        a, b = getattr(local, name).pixels, getattr(remote, name).pixels
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=name)
    assert len(local.post_craters) > 0
    for name, values in local.scores.items():
        np.testing.assert_allclose(remote.scores[name], values, rtol=1e-6, atol=1e-6, err_msg=name)
    # the workers did the block work, each loading the segmenter once (planetcd.models.cached)
    loaded = client.run(lambda: sum(1 for k in __import__("planetcd.models").models._CACHE if k[0] == str(segmenter)))
    assert all(n <= 1 for n in loaded.values()) and sum(loaded.values()) >= 1


def test_segment_on_two_workers_equals_single_process(client, pair, segmenter):
    """Several blocks (128 px cores, 48 px halo) as tasks: the same probability, mask and catalogue."""
    pre, _ = pair
    options = dict(block_size=128, block_halo=48, tile_size=96, overlap=16, prob_threshold=0.5, scales=[1.0],
                   device="cpu")
    local = segment(pre, segmenter, **options)
    remote = segment(pre, segmenter, runner=DaskRunner(client), **options)
    np.testing.assert_allclose(remote.probability, local.probability, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(remote.mask, local.mask)
    assert len(local.catalog) > 0 and remote.catalog.pixels.shape == local.catalog.pixels.shape
    np.testing.assert_allclose(remote.catalog.pixels, local.catalog.pixels, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(remote.catalog.diameter_km, local.catalog.diameter_km, rtol=1e-9)


# ----------------------------------------------------------------------------- the command line


def _cli(*args):
    from click.testing import CliRunner

    from planetcd.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _raster(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(), ds.profile


def _assert_same_rasters(local_dir, remote_dir, names):
    for name in names:
        (a, pa), (b, pb) = _raster(local_dir / name), _raster(remote_dir / name)
        assert str(pa) == str(pb), name  # str: a NaN nodata equals itself
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_tables(a_rows, b_rows):
    assert len(a_rows) == len(b_rows) and a_rows[0].keys() == b_rows[0].keys()
    for a, b in zip(a_rows, b_rows):
        for key in a:
            try:
                x, y = float(a[key]), float(b[key])
            except ValueError:
                assert a[key] == b[key], key
            else:
                assert y == pytest.approx(x, rel=1e-6, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("method", ["nn", "nn-unlit"])
def test_detect_cli_with_workers_equals_single_process(pair, vgg_weights, tmp_path, method):
    """``planetcd detect --workers 2`` (its own local cluster, closed after) writes what a plain run writes."""
    import json

    pre, post = pair
    args = [pre, post, "--weights", vgg_weights, "--method", method, "--n-pseudo", "6", "--tile-size", "128", "-q"]
    local = _cli("detect", *args, "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = _cli("detect", *args, "-o", tmp_path / "remote", "--workers", "2")
    assert remote.exit_code == 0, remote.output
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "remote").iterdir())
    _assert_same_rasters(tmp_path / "local", tmp_path / "remote", ["change_score.tif", "change_mask.tif"])
    _assert_same_tables(_csv(tmp_path / "local" / "candidates.csv"), _csv(tmp_path / "remote" / "candidates.csv"))
    runs = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("local", "remote")]
    assert [run["parameters"].pop("runner") for run in runs] == ["LocalRunner", "DaskRunner"]
    for key in ("parameters", "displacement_px", "image_shape", "n_patches", "n_scored", "n_changed", "outputs"):
        assert runs[1][key] == runs[0][key], key
    assert runs[1]["tau"] == pytest.approx(runs[0]["tau"], rel=1e-6)
    if method == "nn-unlit":
        assert runs[1]["parameters"]["n_pseudo_pre_reused"] == 6  # the workers sent back pre maps for the pseudo pairs
    else:  # one sun or two, decided on the registration window; relit: the workers sent back their transfers
        assert runs[1]["relight"] == runs[0]["relight"]
        assert not runs[0]["relight"]["relit"] or runs[0]["relight"]["tiles"]["n"] > 1


def test_segment_cli_on_a_scheduler_equals_single_process(client, pair, segmenter, tmp_path):
    """``planetcd segment --scheduler ADDRESS``: the same probability and mask rasters and crater catalogue."""
    import shutil

    pre, _ = pair
    model = shutil.copy(segmenter, tmp_path / "cli_model.pt")  # a path no other test's workers loaded
    args = [pre, "--model", model, "--tile", "96", "--overlap", "16", "--threshold", "0.5", "-q"]
    local = _cli("segment", *args, "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote = _cli("segment", *args, "-o", tmp_path / "remote", "--scheduler", client.scheduler.address)
    assert remote.exit_code == 0, remote.output
    _assert_same_rasters(tmp_path / "local", tmp_path / "remote", ["crater_prob.tif", "crater_mask.tif"])
    local_rows = _csv(tmp_path / "local" / "craters.csv")
    assert len(local_rows) > 0
    _assert_same_tables(local_rows, _csv(tmp_path / "remote" / "craters.csv"))
    assert (tmp_path / "remote" / "craters.gpkg").stat().st_size > 0
    # the cluster did the network work: workers loaded this model
    loaded = client.run(lambda: [k[0] for k in __import__("planetcd.models").models._CACHE])
    assert any(str(model) in keys for keys in loaded.values())


def test_cli_refuses_workers_and_scheduler_together(pair, tmp_path):
    pre, post = pair
    result = _cli("detect", pre, post, "-o", tmp_path / "out", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code != 0
    assert result.stderr.strip().startswith("planetcd: error:") and "not both" in result.stderr
    assert not (tmp_path / "out").exists()
