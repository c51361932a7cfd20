"""Shared fixtures: the one place that locates ../shared, and small georeferenced rasters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("PLANETCD_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data and weights folder (``$PLANETCD_SHARED`` or ``../shared``).

    Skips when it is missing on a developer machine; fails under CI, where it must exist.
    """
    path = _shared_dir()
    if not (path / "data").is_dir():
        message = f"shared data folder not found at {path} (set PLANETCD_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def vgg_weights(shared_dir) -> Path:
    """The ImageNet VGG-16 features file from ../shared/weights."""
    path = shared_dir / "weights" / "vgg16_imagenet_features.pth"
    if not path.exists():
        pytest.fail(f"{path} missing from the shared folder")
    return path


@pytest.fixture(scope="session")
def trunk(vgg_weights):
    """The ImageNet VGG-16 trunk to conv3_2 (``VGGFeatures(layer=6)``), built once per test session."""
    from planetcd.features import VGGFeatures

    return VGGFeatures(layer=6, weights=vgg_weights)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)



@pytest.fixture(scope="session")
def untrained_unet(tmp_path_factory):
    """``untrained_unet(seed)``: an untrained half-width SymmetricUNet saved as a ``planetcd train``
    checkpoint, for tests of the plumbing (CLI, Dask) that must not depend on the shipped weights."""
    import torch

    from planetcd.craters.unet import save_checkpoint
    from planetcd.craters.unet import SymmetricUNet

    def make(seed: int) -> Path:
        torch.manual_seed(seed)
        path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
        save_checkpoint(path, SymmetricUNet(filter_multiple=0.5), "symmetric", {"target": "filled", "threshold": 0.5})
        return path

    return make
