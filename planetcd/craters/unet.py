"""Crater segmentation networks: DeLatte et al.'s symmetric U-Net and a small U-Net for chips.

``SymmetricUNet`` follows the default "Crater U-Net" of DeLatte et al. (2019,
IEEE JSTARS 12(7), doi:10.1109/JSTARS.2019.2918302, and their CraterSegCNN
repository): seven down rounds of one same-padded convolution with ReLU
(16, 24, 32, 48, 64, 96, 128 filters), dropout, 2×2 average pooling; a
128-filter bottom convolution with dropout; seven up rounds of 2× nearest
upsampling, convolution, dropout and an *addition* (not a concatenation) with
the down convolution of the same size; a final 1×1 convolution with a sigmoid.
Dropout is 0 in the first two rounds, then 0.2, 0.2, 0.3, 0.4, 0.5 toward the
bottom (0.5 at the bottom), mirrored on the way up, as in the authors' code.

The network has a total stride of 128: inputs whose sides are not multiples of
128 are padded (reflect) to the next multiple and the output is cropped back,
with :func:`pad_to_multiple` / :func:`crop_to` (function and module share one
implementation, as in kornia).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from ..features import CONV_INDEX, IMAGENET_MEAN, IMAGENET_STD, build_features, load_vgg16_state, resolve_vgg16_weights
from ..layers import conv2d_relu, conv_relu_stack, max_pool2x2, upsample_conv2d_relu_add

__all__ = [
    "DELATTE_FILTERS",
    "DELATTE_DROPOUT",
    "pad_to_multiple",
    "crop_to",
    "PadToMultiple",
    "SymmetricUNet",
    "SmallUNet",
    "VGG16UNet",
    "count_parameters",
    "frozen_state",
    "state_digest",
    "init_weights",
    "flip_average",
    "FlipAverage",
    "TTA_FLIPS",
    "tta_flips_for",
]

#: Filters of the seven down rounds of the default model (filter multiple 1).
DELATTE_FILTERS = (16, 24, 32, 48, 64, 96, 128)
#: Dropout after each down round's convolution (the up rounds mirror it).
DELATTE_DROPOUT = (0.0, 0.0, 0.2, 0.2, 0.3, 0.4, 0.5)
#: Filters and dropout of the bottom convolution.
DELATTE_BOTTOM = (128, 0.5)


def pad_to_multiple(image: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dimensions of ``image`` at the bottom/right up to multiples of ``multiple``.

    Parameters
    ----------
    image : Tensor, shape (B, C, H, W)
    multiple : int
    mode : str
        ``torch.nn.functional.pad`` mode; ``reflect`` falls back to
        ``replicate`` when the image is too small to reflect.

    Returns
    -------
    padded : Tensor, shape (B, C, H', W')
    size : (H, W)
        The original size, for :func:`crop_to`.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(image, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dimensions back to ``size`` (the top-left part), undoing :func:`pad_to_multiple`."""
    return image[..., : size[0], : size[1]]


class PadToMultiple(nn.Module):
    """Module form of :func:`pad_to_multiple`; returns the padded tensor and the original size."""

    def __init__(self, multiple: int, mode: str = "reflect") -> None:
        super().__init__()
        self.multiple = int(multiple)
        self.mode = mode

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return pad_to_multiple(image, self.multiple, self.mode)

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}, mode={self.mode!r}"


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming normal, ReLU) weights and zero biases for every convolution.

    PyTorch's default convolution initialisation shrinks activations at every
    ReLU layer, and through the 15 stacked convolutions of the symmetric U-Net
    the deep path starts out nearly silent; He initialisation keeps the
    activation scale, and on CTX crops it lowers the loss several times faster.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _filters(multiple: float, base=DELATTE_FILTERS) -> list[int]:
    return [max(1, int(round(f * multiple))) for f in base]


class SymmetricUNet(nn.Module):
    """DeLatte et al.'s symmetric "Crater U-Net" (additive skips, average pooling).

    Parameters
    ----------
    in_channels : int
        Bands of the input image (1 for the gray CTX/THEMIS/HRSC images).
    kernel_size : int
        Side of every convolution kernel except the final 1×1 (the paper tries 3, 7 and 11).
    filter_multiple : float
        Scales every filter count (the paper tries 0.5, 1 and 2).
    dropout : bool
        Whether to use the paper's dropout (set False for deterministic tests).

    Notes
    -----
    ``forward`` takes ``(B, C, H, W)`` float images (any H, W; scaled to about
    [-1, 1]) and returns per-pixel crater probabilities ``(B, 1, H, W)``;
    :meth:`forward_logits` returns the logits (for a numerically stable loss).
    """

    depth = len(DELATTE_FILTERS)
    stride = 2 ** len(DELATTE_FILTERS)

    def __init__(
        self,
        in_channels: int = 1,
        kernel_size: int = 3,
        filter_multiple: float = 1.0,
        dropout: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError("kernel_size must be odd")
        if filter_multiple <= 0:
            raise ValueError("filter_multiple must be positive")
        self.config = {
            "in_channels": int(in_channels),
            "kernel_size": int(kernel_size),
            "filter_multiple": float(filter_multiple),
            "dropout": bool(dropout),
        }
        filters = _filters(filter_multiple)
        bottom = _filters(filter_multiple, (DELATTE_BOTTOM[0],))[0]
        rates = DELATTE_DROPOUT if dropout else (0.0,) * self.depth
        pad = kernel_size // 2
        self.pad = PadToMultiple(self.stride)

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size, padding=pad)

        self.down = nn.ModuleList()
        self.down_drop = nn.ModuleList()
        cin = in_channels
        for f, p in zip(filters, rates):
            self.down.append(conv(cin, f))
            self.down_drop.append(nn.Dropout(p) if p > 0 else nn.Identity())
            cin = f
        self.bottom = conv(cin, bottom)
        self.bottom_drop = nn.Dropout(DELATTE_BOTTOM[1]) if dropout else nn.Identity()
        self.up = nn.ModuleList()
        self.up_drop = nn.ModuleList()
        cin = bottom
        for f, p in zip(reversed(filters), reversed(rates)):
            self.up.append(conv(cin, f))
            self.up_drop.append(nn.Dropout(p) if p > 0 else nn.Identity())
            cin = f
        self.head = nn.Conv2d(cin, 1, 1)
        init_weights(self)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self.pad(x)
        skips = []
        # conv2d_relu: the ReLU in place, or fused into the convolution on CPU inference (no second pass
        # over every layer's map, which on CPU costs as much as the ReLU itself)
        for conv, drop in zip(self.down, self.down_drop):
            z = conv2d_relu(x, conv)
            skips.append(z)
            x = F.avg_pool2d(drop(z), 2)
        x = self.bottom_drop(conv2d_relu(x, self.bottom))
        # inference: the sum goes into the skip's memory, and on CPU the upsampled map is never made
        # (upsample_conv2d_relu_add: the sub-pixel form of the convolution; equal up to rounding)
        inference = not torch.is_grad_enabled() and not self.training
        for conv, drop, skip in zip(self.up, self.up_drop, reversed(skips)):
            if inference:
                x = upsample_conv2d_relu_add(x, conv, skip, inplace=True)
            else:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = drop(conv2d_relu(x, conv)) + skip
        return crop_to(self.head(x), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


class SmallUNet(nn.Module):
    """A small U-Net for 48×48 chips: three conv+pool encoder blocks, a 128-filter
    bottleneck, three upsample+concatenate decoder blocks and a sigmoid output.

    Each block is two 3×3 convolutions with ReLU; encoder filters are
    ``base``, ``2 base``, ``4 base`` (16, 32, 64 by default).  Sides must be
    multiples of 8 (48 is); other sizes are padded and cropped back.
    """

    stride = 8

    def __init__(self, in_channels: int = 1, base: int = 16, bottleneck: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.config = {"in_channels": int(in_channels), "base": int(base), "bottleneck": int(bottleneck), "dropout": float(dropout)}
        widths = [base, 2 * base, 4 * base]
        self.pad = PadToMultiple(self.stride)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
            )

        self.enc = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.enc.append(block(cin, w))
            cin = w
        self.mid = nn.Sequential(block(cin, bottleneck), nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        self.dec = nn.ModuleList()
        cin = bottleneck
        for w in reversed(widths):
            self.dec.append(block(cin + w, w))
            cin = w
        self.head = nn.Conv2d(cin, 1, 1)
        init_weights(self)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self.pad(x)
        skips = []
        for blk in self.enc:
            x = conv_relu_stack(blk, x)
            skips.append(x)
            x = max_pool2x2(x)
        x = self.mid(x)
        for blk, skip in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv_relu_stack(blk, torch.cat([x, skip], dim=1))
        return crop_to(self.head(x), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


#: Layers (torchvision ``features`` indices, end exclusive) of the five VGG-16 blocks before their max-pools.
VGG16_BLOCKS = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))
VGG16_WIDTHS = (64, 128, 256, 512, 512)


class VGG16UNet(nn.Module):
    """A TernausNet-style U-Net whose encoder is the ImageNet VGG-16 (``arch="vgg16-unet"``).

    Encoder: the 13 convolutions of VGG-16 in five blocks (64, 128, 256, 512,
    512 filters; ``planetcd.features`` builds the trunk with torchvision's
    key names), or its first ``depth`` blocks, the first ``frozen_blocks`` blocks kept at their ImageNet
    weights. Centre: max-pool, a 3×3 convolution and a 2× transposed
    convolution. Decoder (Iglovikov & Shvets 2018, TernausNet): per block,
    concatenate the encoder block's output, a 3×3 convolution with ReLU and a
    2× transposed convolution, down to a 1×1 head. The gray input (about
    -1..1) is mapped to 0..1, repeated to three bands and standardised with
    the ImageNet statistics. Total stride ``2 ** depth`` (inputs padded and cropped back).

    Parameters
    ----------
    in_channels : int
        Must be 1 (gray images).
    frozen_blocks : int
        Encoder blocks (0..depth) whose weights are not trained.
    decoder : int
        Base width of the decoder (TernausNet: 32).
    depth : int
        VGG-16 blocks in the encoder, 3..5 (5: TernausNet; 3: to conv3_3, 1.7 M of the encoder's 14.7 M
        parameters and about 60 % of its work per pixel). The decoder has one block per encoder block.
    pretrained : bool or path
        Load the ImageNet weights (True: :func:`planetcd.features.resolve_vgg16_weights`;
        a path: that file). A checkpoint of :func:`save_checkpoint` holds the trained weights only; its frozen
        blocks come from the ImageNet file again when it is loaded (:func:`load_checkpoint`).
    """

    def __init__(self, in_channels: int = 1, frozen_blocks: int = 2, decoder: int = 32, pretrained: bool | str | os.PathLike = False,
                 depth: int = 5) -> None:
        super().__init__()
        if in_channels != 1:
            raise ValueError("VGG16UNet takes gray (1-band) images")
        if not 3 <= depth <= 5:
            raise ValueError("depth must be 3..5")
        if not 0 <= frozen_blocks <= depth:
            raise ValueError("frozen_blocks must be 0..depth")
        self.config = {"in_channels": 1, "frozen_blocks": int(frozen_blocks), "decoder": int(decoder)}
        if depth != 5:  # the configs (and checkpoints) of the full encoder stay as they were
            self.config["depth"] = int(depth)
        self.depth = int(depth)
        self.stride = 2 ** self.depth
        self.pad = PadToMultiple(self.stride)
        n_convs = sum(i < VGG16_BLOCKS[self.depth - 1][1] for i in CONV_INDEX)  # convolutions in the blocks kept
        self.features = build_features(n_convs)  # torchvision indices (conv/relu, pools at 4, 9, 16, 23)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        d = int(decoder)

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))

        def up(cin: int, mid: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv(cin, mid), nn.ConvTranspose2d(mid, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True))

        # per decoder level k (fed by the skip of encoder block k, VGG16_WIDTHS[k - 1] channels): (mid, out) widths
        widths = {5: (16 * d, 8 * d), 4: (16 * d, 4 * d), 3: (8 * d, 2 * d), 2: (4 * d, d)}
        centre_out = {5: 8 * d, 4: 8 * d, 3: 4 * d}[self.depth]
        self.center = up(VGG16_WIDTHS[self.depth - 1], 2 * centre_out, centre_out)
        cin = centre_out
        for k in range(self.depth, 1, -1):  # decoder blocks from the deepest: in = previous up + skip
            mid, out = widths[k]
            setattr(self, f"dec{k}", up(cin + VGG16_WIDTHS[k - 1], mid, out))
            cin = out
        self.dec1 = conv(d + VGG16_WIDTHS[0], d)
        self.head = nn.Conv2d(d, 1, 1)
        init_weights(self)
        #: Whether the frozen blocks hold the ImageNet weights (then :func:`save_checkpoint` leaves them out).
        self.imagenet_frozen = bool(pretrained) and self.config["frozen_blocks"] > 0
        if pretrained:
            path = resolve_vgg16_weights(None if pretrained is True else pretrained)
            self.features.load_state_dict({k.removeprefix("features."): v
                                           for k, v in load_vgg16_state(path, n_convs).items()})
        for start, stop in VGG16_BLOCKS[: self.config["frozen_blocks"]]:
            for p in self.features[start:stop].parameters():
                p.requires_grad_(False)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self.pad(x)
        x = ((x + 1.0) * 0.5).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        skips = []
        for k, (start, stop) in enumerate(VGG16_BLOCKS[: self.depth]):
            if k:
                x = max_pool2x2(x)
            x = conv_relu_stack(self.features[start:stop], x)
            skips.append(x)
        x = self.center(max_pool2x2(x))
        for k in range(self.depth, 1, -1):
            x = getattr(self, f"dec{k}")(torch.cat([x, skips[k - 1]], 1))
        x = self.dec1(torch.cat([x, skips[0]], 1))
        return crop_to(self.head(x), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


#: Test-time mirror sets of :func:`flip_average`: the dims each extra view flips (the identity is always in).
#: ``"all"``: left-right, up-down and both (models trained with all flips); ``"light-axis"``: only the
#: up-down mirror, the mirror along the light axis of the canonical frame (light from the left), for
#: sun-aware models -- the left-right mirror would put the light on the right and turn craters into mounds.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {"all": ((3,), (2,), (2, 3)), "light-axis": ((2,),)}


def tta_flips_for(metadata: dict | None) -> str:
    """The :data:`TTA_FLIPS` set a model may be averaged over: ``"light-axis"`` when its metadata says
    ``sun_aware: true``, else ``"all"``."""
    return "light-axis" if (metadata or {}).get("sun_aware", False) else "all"


def flip_average(model: nn.Module, x: torch.Tensor, flips: str = "all") -> torch.Tensor:
    """Test-time augmentation: the mean of ``model`` over mirror images of ``x``.

    ``x`` (B, C, H, W) is passed as is and mirrored by ``flips`` (:data:`TTA_FLIPS`):
    ``"all"`` left-right, up-down and both (four forward passes; the network
    was trained with flips, so the four views are equally valid), or
    ``"light-axis"`` up-down only (two passes; for sun-aware models, which see
    the image with the light from the left). Each output is mirrored back and
    the views are averaged; their mean damps responses that depend on the
    orientation of texture and noise.
    """
    if flips not in TTA_FLIPS:
        raise ValueError(f"flips must be one of {sorted(TTA_FLIPS)}, got {flips!r}")
    views = TTA_FLIPS[flips]
    total = model(x)
    for dims in views:
        total = total + torch.flip(model(torch.flip(x, dims)), dims)
    return total / float(len(views) + 1)


class FlipAverage(nn.Module):
    """:func:`flip_average` as a module wrapping a segmenter (its ``metadata`` is carried over).

    ``flips``: the mirror set (:data:`TTA_FLIPS`); default :func:`tta_flips_for` the model's
    metadata (``"light-axis"`` for a sun-aware model, else ``"all"``).
    """

    def __init__(self, model: nn.Module, flips: str | None = None):
        super().__init__()
        self.model = model
        self.flips = tta_flips_for(getattr(model, "metadata", None)) if flips is None else flips
        if self.flips not in TTA_FLIPS:
            raise ValueError(f"flips must be one of {sorted(TTA_FLIPS)}, got {flips!r}")
        if hasattr(model, "metadata"):
            self.metadata = model.metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, x, self.flips)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(arch: str, **config) -> nn.Module:
    """Build ``"symmetric"`` (:class:`SymmetricUNet`), ``"small"`` (:class:`SmallUNet`) or ``"vgg16-unet"``
    (:class:`VGG16UNet`) from its config."""
    if arch in ("symmetric", "SymmetricUNet"):
        return SymmetricUNet(**config)
    if arch in ("small", "SmallUNet"):
        return SmallUNet(**config)
    if arch in ("vgg16-unet", "VGG16UNet"):
        return VGG16UNet(**config)
    raise ValueError(f"unknown architecture {arch!r} (expected 'symmetric', 'small' or 'vgg16-unet')")


# --------------------------------------------------------------------------- checkpoints


def frozen_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of ``model``'s parameters that are not trained (``requires_grad`` off)."""
    return {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (names and float32 values, in name order): the identity of a set of weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, arch: str, extra: dict | None = None) -> None:
    """Save weights (float32, CPU) with what is needed to rebuild the model; atomic rename.

    A :class:`VGG16UNet` whose frozen blocks hold the ImageNet weights (``imagenet_frozen``) is saved without
    them: the file records their names and :func:`state_digest`, and :func:`load_checkpoint` takes them from
    the ImageNet VGG-16 file (:func:`planetcd.features.resolve_vgg16_weights`), checked against the digest.
    With all five blocks frozen that leaves only the decoder in the file (2.5 M parameters at ``decoder=8``
    against 17.2 M with the encoder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    payload = {"format": "planetcd-segmenter-1", "arch": arch, "config": dict(model.config)}
    if getattr(model, "imagenet_frozen", False):
        frozen = frozen_state(model)
        payload["imagenet_frozen"] = {"keys": sorted(frozen), "sha256": state_digest(frozen)}
        state = {k: v for k, v in state.items() if k not in frozen}
    payload["state_dict"] = state
    payload.update(extra or {})
    tmp = path.with_name(f".{path.name}.part")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu",
                    vgg_weights: str | os.PathLike | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from :func:`save_checkpoint`'s file; returns ``(model in eval mode, payload)``.

    ``vgg_weights``: the ImageNet VGG-16 file for a checkpoint saved without its frozen ImageNet blocks
    (default: :func:`planetcd.features.resolve_vgg16_weights`'s lookup).

    Raises
    ------
    ValueError
        Not a planetcd segmenter checkpoint.
    planetcd.errors.WeightsError
        The ImageNet weights found are not those the checkpoint's frozen blocks were trained with.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload or "arch" not in payload:
        raise ValueError(f"{path}: not a planetcd segmenter checkpoint")
    imagenet = payload.get("imagenet_frozen")
    if imagenet:
        model = build_model(payload["arch"], **payload["config"], pretrained=vgg_weights or True)
        frozen = frozen_state(model)
        if sorted(frozen) != list(imagenet["keys"]) or state_digest(frozen) != imagenet["sha256"]:
            raise WeightsError(f"{path}: the ImageNet VGG-16 weights found are not the ones its frozen encoder "
                               "was trained with (set PLANETCD_VGG16_WEIGHTS to torchvision's vgg16-397923af.pth)")
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        if sorted(missing) != sorted(imagenet["keys"]) or unexpected:
            raise ValueError(f"{path}: its weights do not fit a {payload['arch']} of this configuration")
        model.imagenet_frozen = True
    else:
        model = build_model(payload["arch"], **payload["config"])
        model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
