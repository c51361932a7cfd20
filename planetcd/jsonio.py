"""THE form of the JSON files planetcd writes (run.json, monitor.json, evaluate's JSON): standard JSON.

Imports nothing of planetcd, so every writer may use it without an import circle.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["strict_json", "json_text"]


def strict_json(value):
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively, and NumPy scalars and
    arrays made Python values, so that ``json.dumps(..., allow_nan=False)`` writes standard JSON.

    Python's ``json`` writes ``NaN`` by default, which is not JSON: ``jq``, JavaScript's ``JSON.parse`` and
    strict readers reject the whole file.
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def json_text(record: dict) -> str:
    """``record`` as standard JSON text, indented (non-finite numbers as ``null``: :func:`strict_json`; anything
    else unknown as its ``str``), with a final newline: THE form of every JSON file planetcd writes."""
    return json.dumps(strict_json(record), indent=2, default=str, allow_nan=False) + "\n"
