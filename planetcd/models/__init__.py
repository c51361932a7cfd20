"""Trained models shipped with planetcd, with their metadata.

Each model is a weights file ``<name>.pt`` beside a ``<name>.json`` that says
what it is: architecture and its configuration, instrument and pixel scale it
was trained for, target type, training and validation data with their
licences, the command that trained it and its validation metrics.

>>> import planetcd.models
>>> planetcd.models.available()
['ctx-craters']
>>> model = planetcd.models.load("ctx-craters")      # or a path to a .pt checkpoint
>>> model.metadata["metrics"]["f1"]                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import WeightsError, WeightsNotFoundError

__all__ = ["MODEL_DIR", "DEFAULT_MODEL", "available", "metadata", "load", "cached", "weights_path", "pixel_scale_advice",
           "load_verifier"]

MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "ctx-craters"


def available() -> list[str]:
    """Names of the shipped models (those with both a ``.json`` and a ``.pt`` file)."""
    return sorted(p.stem for p in MODEL_DIR.glob("*.json") if p.with_suffix(".pt").exists())


def metadata(name: str) -> dict:
    """The metadata of a shipped model."""
    path = MODEL_DIR / f"{name}.json"
    if not path.exists():
        raise WeightsNotFoundError(f"no model named {name!r} (available: {', '.join(available()) or 'none'})")
    return json.loads(path.read_text())


def weights_path(name_or_path: str | os.PathLike) -> Path:
    """The weights file of a shipped model name, or the given path if it is a file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".pt" or os.sep in text or path.exists():
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: no such weights file")
        return path
    metadata(text)  # raises for unknown names
    return MODEL_DIR / f"{text}.pt"


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(name_or_path: str | os.PathLike | torch.nn.Module = DEFAULT_MODEL, device: str | torch.device = "cpu",
         tta: bool | None = None) -> torch.nn.Module:
    """Load a segmenter by registry name (``"ctx-craters"``) or checkpoint path; the one loader of planetcd.

    A loaded ``torch.nn.Module`` is returned as given (in eval mode, moved to
    ``device``), with a default ``metadata`` (threshold 0.5) when it has none.

    Returns the network in eval mode on ``device``, its weights channels-last (the fast layout of
    convolutions; a module given is left as it is), with a ``metadata`` dict
    attribute (the registry JSON for shipped models, the checkpoint's own
    fields for a path), including ``threshold`` for the probability mask.
    ``tta``: average over mirror images of every input
    (:class:`planetcd.craters.unet.FlipAverage`): the four flips (four times
    the network time), or for a model whose metadata says ``sun_aware: true``
    only the identity and the up-down mirror (the mirror along the light axis
    of the canonical frame; twice the network time); default: the model's
    ``tta`` entry (off for checkpoints). ``metadata["tta"]`` says which was
    loaded, ``metadata["tta_flips"]`` the mirror set (``"all"`` or
    ``"light-axis"``; None without tta).
    """
    from ..craters.unet import load_checkpoint

    if isinstance(name_or_path, torch.nn.Module):
        model = name_or_path
        if not hasattr(model, "metadata"):
            model.metadata = {"threshold": 0.5, "name": type(model).__name__, "tta": False}
        return model.eval().to(device)
    path = weights_path(name_or_path)
    try:
        model, payload = load_checkpoint(path, map_location="cpu")
    except Exception as exc:  # torch.load raises many kinds (UnpicklingError, RuntimeError, ...)
        raise WeightsError(f"{path}: not a usable planetcd segmenter checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    if path.parent == MODEL_DIR and (MODEL_DIR / f"{path.stem}.json").exists():
        meta.update(metadata(path.stem))
    meta.setdefault("threshold", 0.5)
    meta.setdefault("name", path.stem)
    meta["tta"] = bool(meta.get("tta", False) if tta is None else tta)
    from ..craters.unet import FlipAverage, tta_flips_for

    meta["tta_flips"] = tta_flips_for(meta) if meta["tta"] else None
    model.metadata = meta
    if meta["tta"]:
        model = FlipAverage(model, meta["tta_flips"]).eval()
    # Channels-last weights: the convolutions then run channels-last whatever the (one-band) input's layout,
    # about twice as fast on a CPU in fp32 and bf16 alike (the same values: fp32 to 1e-6).
    return model.to(device).to(memory_format=torch.channels_last)


#: Per-process cache of :func:`cached` (a Dask worker loads each model once).
_CACHE: dict = {}


def cached(name_or_path: str | os.PathLike | torch.nn.Module = DEFAULT_MODEL, device: str | torch.device = "cpu",
           tta: bool | None = None) -> torch.nn.Module:
    """:func:`load`, once per process for a name or path (a module is returned as given)."""
    if isinstance(name_or_path, torch.nn.Module):
        return load(name_or_path, device, tta)
    key = (str(name_or_path), str(device), tta)
    if key not in _CACHE:
        _CACHE[key] = load(name_or_path, device, tta)
    return _CACHE[key]


def load_verifier(meta_or_path) -> torch.nn.Module | None:
    """The chip verifier of a segmenter (:mod:`planetcd.craters.verify`), once per process.

    ``meta_or_path``: a segmenter's metadata (its ``verifier`` entry names a
    file beside the registry's models, with its sha256 and ``threshold``; None
    when it has none) or a verifier checkpoint path. The returned module has
    ``metadata`` (chip geometry, ``threshold``).
    """
    from ..craters.verify import load_verifier as load_chip_verifier

    if isinstance(meta_or_path, dict):
        entry = meta_or_path.get("verifier")
        if not entry:
            return None
        path = MODEL_DIR / entry["file"]
        expected = entry.get("sha256")
    else:
        path, expected, entry = Path(meta_or_path), None, {}
    key = ("verifier", str(path))
    if key not in _CACHE:
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: no such verifier file")
        if expected and sha256(path) != expected:
            raise WeightsError(f"{path}: sha256 does not match the registry ({expected[:12]}...)")
        verifier = load_chip_verifier(path)
        verifier.metadata = {**verifier.metadata, **{k: v for k, v in entry.items() if k not in ("file", "sha256")}}
        _CACHE[key] = verifier
    return _CACHE[key]


#: Ratio between the image's and the model's pixel size above which :func:`pixel_scale_advice` speaks.
PIXEL_SCALE_TOLERANCE = 1.5


def pixel_scale_advice(meta: dict, pixel_size_m: float | None) -> str | None:
    """One line of advice when an image's pixels differ from the model's by more than :data:`PIXEL_SCALE_TOLERANCE`.

    Parameters
    ----------
    meta : dict
        The model's metadata (``pixel_scale_m``: metres per pixel it was trained at).
    pixel_size_m : float or None
        The image's pixel size in metres (from its transform or ``--pixel-size``); ``None`` when unknown.

    Returns
    -------
    str or None
        ``None`` when the scales agree or either is unknown.
    """
    model_scale = meta.get("pixel_scale_m")
    if not model_scale or not pixel_size_m or pixel_size_m <= 0:
        return None
    ratio = float(pixel_size_m) / float(model_scale)
    if 1.0 / PIXEL_SCALE_TOLERANCE <= ratio <= PIXEL_SCALE_TOLERANCE:
        return None
    factor = ratio  # resampling by this factor brings the image to the model's pixel size
    return (f"the image has {pixel_size_m:g} m pixels, the model {meta.get('name', 'segmenter')} was trained at "
            f"{float(model_scale):g} m: craters will look {1 / ratio:.2g}x their trained size; resample the image by "
            f"{factor:.3g} (e.g. gdalwarp -tr {float(model_scale):g} {float(model_scale):g}) or segment at scales around "
            f"{factor:.3g}")
