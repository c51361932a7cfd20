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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
