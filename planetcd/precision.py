"""Numeric precision of the networks (VGG trunk, crater UNet): the ``precision`` option, its resolution, autocast.

THE place where ``precision="auto" | "fp32" | "bf16"`` is turned into what a run
uses (:func:`resolve_precision`, once per run) and into a torch context
(:func:`autocast`). ``auto`` is bfloat16 autocast where the hardware runs it
natively — a CPU with AVX512-BF16 or AMX (asked of torch at run time,
:func:`cpu_bf16_native`), a CUDA GPU with bf16 — and float32 elsewhere (on a
CPU without native bf16, autocast emulates it and is slower than fp32).
Only the networks run under autocast; what they return is cast to float32 at
once, so scores, probabilities and thresholds are float32 (or float64) arrays.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .errors import InputError

class PrecisionError(InputError, ValueError):
    """A ``precision`` value that is not one of :data:`PRECISIONS` (an :class:`~planetcd.errors.InputError`,
    and a ``ValueError`` as ``TrainConfig`` checks have always raised)."""


#: Values of the ``precision`` option.
PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles) and oneDNN can use it.

    Asked of torch at run time (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``);
    False when torch cannot tell.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except (RuntimeError, AttributeError):
        return False


def cuda_bf16_native() -> bool:
    """Whether torch sees a CUDA device that supports bfloat16."""
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def device_kind(device: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"``, ...: the type of ``device`` (``"auto"``: CUDA when available, else the CPU)."""
    if isinstance(device, torch.device):
        return device.type
    if str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(str(device)).type


def check_precision(precision: str, what: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`PrecisionError`."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"{what} must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """The precision a run uses: ``"fp32"`` or ``"bf16"``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16"}
        ``auto``: ``bf16`` where ``device`` runs it natively (:func:`cpu_bf16_native`,
        :func:`cuda_bf16_native`), else ``fp32``. ``fp32`` and ``bf16`` are kept as asked.
    device : str or torch.device
        Where the networks run (``"auto"``: CUDA when available, else the CPU).

    Raises
    ------
    PrecisionError
        An :class:`~planetcd.errors.InputError`: ``precision`` is not one of :data:`PRECISIONS` (one line).
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    kind = device_kind(device)
    if kind == "cuda":
        return "bf16" if cuda_bf16_native() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_bf16_native() else "fp32"
    return "fp32"


def precision_record(asked: str, used: str) -> dict:
    """What run.json / monitor.json / evaluate's json say of the precision: ``{"asked", "used"}``
    (plus whether the CPU has native bf16, which decides ``auto``)."""
    return {"asked": asked, "used": used, "cpu_bf16_native": cpu_bf16_native()}


def autocast(precision: str | None, device: str | torch.device = "cpu"):
    """The torch context a network runs in for a resolved ``precision``.

    ``"bf16"``: ``torch.autocast`` to bfloat16 on the device's type; ``"fp32"``: autocast
    switched off (float32 even inside an outer bf16 context); ``None``: no change (the caller's
    context holds). ``"auto"`` is resolved first (:func:`resolve_precision`).
    """
    if precision is None:
        return contextlib.nullcontext()
    kind = device_kind(device)
    if precision == "auto":
        precision = resolve_precision(precision, kind)
    check_precision(precision)
    if precision == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    return torch.autocast(kind, enabled=False)
