"""ImageNet VGG-16 convolutional trunk in plain ``torch.nn``: layers, weights resolution, the per-process trunk cache.

The module keeps torchvision's state-dict key names (``features.0.weight`` ...),
so the official ``vgg16-397923af.pth`` (or a features-only copy of it) loads
unchanged. Conv layers are numbered 1..13 as in the papers:

====== ========= ============== ======
layer  name      torchvision    stride
====== ========= ============== ======
1, 2   conv1_x   features.0, 2  1
3, 4   conv2_x   features.5, 7  2
5-7    conv3_x   features.10-14 4
8-10   conv4_x   features.17-21 8
11-13  conv5_x   features.24-28 16
====== ========= ============== ======

Saha & Zhu take the sixth conv layer (conv3_2, ``features.12``). No torchvision is needed.
Callers that are not handed a trunk take it from :func:`cached_trunk`, so each
process loads a configuration once.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import WeightsError, WeightsNotFoundError
from .layers import MaxPool2x2, conv_relu_stack
from .precision import autocast

log = logging.getLogger(__name__)

#: VGG-16 configuration: output channels per conv, "M" for max pooling.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

#: torchvision ``features`` index of conv layer 1..13.
CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

#: ImageNet normalisation used by the pretrained weights (RGB, for inputs in 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHTS_ENV = "PLANETCD_VGG16_WEIGHTS"


@dataclass(frozen=True)
class WeightsMeta:
    """Where a weights file comes from and what it is."""

    filename: str
    url: str
    sha256_prefix: str
    source: str
    license: str
    training_data: str


class VGG16Weights(Enum):
    """Pretrained VGG-16 weights known to planetcd (torchgeo-style enum with metadata)."""

    IMAGENET1K_V1 = WeightsMeta(
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        # torchvision names files by the first hex digits of their sha256.
        sha256_prefix="397923af",
        source="torchvision (Simonyan & Zisserman 2015, trained by PyTorch)",
        license="BSD-3-Clause (torchvision); ImageNet terms apply to the training data",
        training_data="ImageNet-1k",
    )


def stride_of(layer: int) -> int:
    """Total stride (pixels per feature cell) of conv ``layer`` (1..13)."""
    _check_layer(layer)
    return (1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16)[layer - 1]


def channels_of(layer: int) -> int:
    """Number of channels of conv ``layer`` (1..13)."""
    _check_layer(layer)
    return [c for c in _CFG if c != "M"][layer - 1]


def receptive_radius(layer: int) -> int:
    """Half the receptive field of conv ``layer``, in input pixels (the halo tiles need)."""
    _check_layer(layer)
    size, jump = 1, 1
    conv = 0
    for item in _CFG:
        if item == "M":
            size += jump
            jump *= 2
        else:
            size += 2 * jump
            conv += 1
            if conv == layer:
                break
    return size // 2 + 1


def _check_layer(layer: int) -> None:
    if not 1 <= int(layer) <= 13:
        raise ValueError(f"layer must be 1..13 (VGG-16 has 13 conv layers), got {layer}")


def build_features(layer: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    in_ch, conv = 3, 0
    for item in _CFG:
        if item == "M":
            modules.append(MaxPool2x2())
            continue
        modules += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=True)]
        in_ch, conv = item, conv + 1
        if conv == layer:
            break
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------- weights


def _hub_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16Weights.IMAGENET1K_V1.value.filename


def _offline_message() -> str:
    meta = VGG16Weights.IMAGENET1K_V1.value
    return (
        "VGG-16 ImageNet weights not found and could not be downloaded. On a machine with internet, "
        f"download {meta.url} , then pass weights=PATH (on the command line: --weights PATH) or set {WEIGHTS_ENV}=PATH "
        f"(or copy it to {_hub_cache_file()})"
    )


def _download(url: str, dst: Path, sha256_prefix: str) -> None:
    """Download ``url`` to ``dst``, checking the sha256 prefix (torch.hub does the check)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=sha256_prefix, progress=True)


def resolve_vgg16_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find the VGG-16 weights file.

    Order: the explicit ``path``; ``$PLANETCD_VGG16_WEIGHTS``; the torch hub
    cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``); a download of
    the official file into that cache, its sha256 checked.

    Raises
    ------
    WeightsNotFoundError
        With a message saying what to do offline (exit code 2 on the CLI).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: weights file not found")
        return path
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        env_path = Path(env)
        if not env_path.is_file():
            raise WeightsNotFoundError(f"{WEIGHTS_ENV}={env}: no such file")
        return env_path
    cached = _hub_cache_file()
    if cached.is_file():
        return cached
    if download:
        meta = VGG16Weights.IMAGENET1K_V1.value
        log.info("downloading VGG-16 weights (528 MB) from %s to %s", meta.url, cached)
        try:
            _download(meta.url, cached, meta.sha256_prefix)
        except Exception as exc:  # network errors have many types; all mean "offline"
            log.debug("download failed: %s", exc)
            raise WeightsNotFoundError(_offline_message()) from None
        return cached
    raise WeightsNotFoundError(_offline_message())


def _vgg16_shapes() -> dict[str, tuple[int, ...]]:
    """``{"features.<i>.weight": (out, in, 3, 3), "features.<i>.bias": (out,)}`` of VGG-16's 13 convs."""
    shapes, in_ch = {}, 3
    for index, out_ch in zip(CONV_INDEX, [c for c in _CFG if c != "M"]):
        shapes[f"features.{index}.weight"] = (out_ch, in_ch, 3, 3)
        shapes[f"features.{index}.bias"] = (out_ch,)
        in_ch = out_ch
    return shapes


def load_vgg16_state(path: str | os.PathLike, layer: int = 13) -> dict[str, torch.Tensor]:
    """Load and check the ``features.*`` tensors needed up to conv ``layer``.

    Accepts torchvision's full file (classifier keys are ignored) or a
    features-only file. Every ``features.*`` tensor present must have
    VGG-16's shape; every one needed up to ``layer`` must be present.
    """
    path = Path(path)
    try:  # memory-mapped: of torchvision's 528 MB file only the trunk's tensors are read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:  # files in the legacy (non-zip) format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{path}: not a PyTorch weights file ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    expected_shapes = _vgg16_shapes()  # from the configuration: building 13 random conv layers costs ~0.2 s
    for key, shape in expected_shapes.items():
        if key in state and tuple(state[key].shape) != tuple(shape):
            raise WeightsError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, VGG-16 needs {tuple(shape)}"
            )
    needed = [f"features.{CONV_INDEX[i]}.{p}" for i in range(layer) for p in ("weight", "bias")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise WeightsError(f"{path}: not VGG-16 weights (missing {missing[0]}, {len(missing)} tensors in all)")
    return {k: state[k].float().clone() for k in needed}  # clone: owned memory, not the mapped file


# --------------------------------------------------------------------------- model


def vgg_features(x: torch.Tensor, features: nn.Sequential, relu: bool = True) -> torch.Tensor:
    """Run a truncated VGG ``features`` stack on images in ``0..1``.

    Parameters
    ----------
    x : Tensor, float, shape (B, 3, H, W)
        RGB intensities scaled to ``0..1``.
    features : nn.Sequential
        Conv/ReLU/pool stack ending with the chosen conv and its ReLU.
    relu : bool
        Keep the final ReLU (default). ``False`` returns the raw conv output,
        as Saha's public code does.

    Returns
    -------
    Tensor, shape (B, C, H / stride, W / stride)
    """
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    stack = features if relu else features[:-1]
    return conv_relu_stack(stack, x)  # each conv's ReLU fused into it on CPU inference (planetcd.layers)


class VGGFeatures(nn.Module):
    """ImageNet VGG-16 truncated after conv ``layer`` (default 6 = conv3_2).

    Parameters
    ----------
    layer : int
        Last conv layer, 1..13.
    weights : path-like, optional
        Weights file; resolved with :func:`resolve_vgg16_weights` when omitted.
    relu : bool
        Apply the ReLU after the last conv (default) or return raw responses.
    pretrained : bool
        ``False`` leaves random weights (for tests of shapes only).

    Examples
    --------
    >>> trunk = VGGFeatures(layer=6)                       # doctest: +SKIP
    >>> trunk(torch.rand(1, 3, 128, 128)).shape           # doctest: +SKIP
    torch.Size([1, 256, 32, 32])
    """

    def __init__(self, layer: int = 6, weights: str | os.PathLike | None = None, relu: bool = True, pretrained: bool = True):
        super().__init__()
        _check_layer(layer)
        self.layer = int(layer)
        self.relu = relu
        self.features = build_features(self.layer)
        self.weights_path: Path | None = None
        if pretrained:
            self.weights_path = resolve_vgg16_weights(weights)
            self.features.load_state_dict(
                {k.removeprefix("features."): v for k, v in load_vgg16_state(self.weights_path, self.layer).items()}
            )
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def stride(self) -> int:
        return stride_of(self.layer)

    @property
    def channels(self) -> int:
        return channels_of(self.layer)

    @property
    def halo(self) -> int:
        """Context in pixels a tile needs so its core matches a whole-image pass."""
        return receptive_radius(self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vgg_features(x, self.features, self.relu)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import PlanetcdError

        raise PlanetcdError("device='cuda' asked for, but torch sees no CUDA device")
    return torch.device(device)


def run_trunk(trunk: VGGFeatures, images: np.ndarray, device: torch.device, precision: str | None = None,
              contiguous: bool = True) -> np.ndarray:
    """Feature maps of a batch of ``(B, 3, H, W)`` float32 images in ``0..1`` -> ``(B, C, h, w)`` float32.

    Inference mode and channels-last layout (the fast path for convolutions on CPU).
    ``precision``: ``"bf16"`` runs the trunk under bfloat16 autocast, ``"fp32"`` in float32
    (:func:`planetcd.precision.autocast`; ``None``: as the caller's context is); the maps come
    back float32 either way. ``contiguous=False``: on CPU the maps may come back in the trunk's
    channels-last memory order (a strided ``(B, C, h, w)`` array, the same values), which saves the
    transposing copy, for callers that only slice and reduce them (``nn``'s disagreement runs as fast on it).
    """
    with torch.inference_mode(), autocast(precision, device):
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        out = trunk(x)
        if out.device.type != "cpu":
            return out.float().contiguous().cpu().numpy()
        if not contiguous:
            return out.float().numpy()  # float() keeps the channels-last strides: no transpose
        # One pass from the channels-last (bf16) map into a contiguous float32 array, faster on CPU than
        # converting and then transposing (84 against 105 ms for a 256 x 272² map: benchmarks/bench_ops.py).
        maps = torch.empty(out.shape, dtype=torch.float32)
        maps.copy_(out)
        return maps.numpy()


# --------------------------------------------------------------------------- the trunk cache


def cached_trunk(layer: int = 6, relu: bool = True, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> VGGFeatures:
    """The VGG trunk of this process for a configuration, loaded on first use: THE trunk cache of planetcd.

    Every caller that needs a trunk it was not handed (``detect``'s tiles in any
    process, ``evaluate``'s methods) takes it from here, so a process loads each
    configuration once. ``weights`` is resolved first
    (:func:`resolve_vgg16_weights`), so ``None`` and the file it resolves to
    share one entry.

    Parameters
    ----------
    layer : int
        Last conv layer, 1..13.
    relu : bool
        Keep the final ReLU.
    weights : path-like, optional
    device : str or torch.device
        Where the trunk lives (``"auto"`` as :func:`pick_device`).

    Returns
    -------
    VGGFeatures
        Shared: do not modify it.
    """
    _check_layer(layer)
    path = resolve_vgg16_weights(weights)
    return _load_trunk(int(layer), bool(relu), str(Path(path).resolve()), str(pick_device(str(device))))


@functools.lru_cache(maxsize=None)
def _load_trunk(layer: int, relu: bool, weights: str, device: str) -> VGGFeatures:
    log.debug("loading VGG-16 up to conv layer %d on %s", layer, device)
    return VGGFeatures(layer=layer, weights=weights, relu=relu).to(torch.device(device))


def trunk_cache_info():
    """Hits, misses and size of :func:`cached_trunk`'s cache (``functools`` ``CacheInfo``)."""
    return _load_trunk.cache_info()


def clear_trunk_cache() -> None:
    """Drop every trunk :func:`cached_trunk` holds (frees their memory)."""
    _load_trunk.cache_clear()
