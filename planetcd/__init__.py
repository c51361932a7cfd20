"""planetcd: change detection and crater science for orbital planetary images.

The public API is imported lazily, so ``planetcd --help`` starts without torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "detect": "planetcd.change.detect",
    "ChangeResult": "planetcd.change.detect",
    "VGGFeatures": "planetcd.features",
    "vgg_features": "planetcd.features",
    "resolve_vgg16_weights": "planetcd.features",
    "pseudo_unchanged_pairs": "planetcd.change.threshold",
    "self_calibrated_threshold": "planetcd.change.threshold",
    "kmeans_threshold": "planetcd.change.threshold",
    "change_scores": "planetcd.change.scores",
    "estimate_shift": "planetcd.change.register",
    "score_pairs": "planetcd.change.patch_pairs",
    "segment": "planetcd.craters.segment",
    "SegmentResult": "planetcd.craters.segment",
    "extract_craters": "planetcd.craters.extract",
    "Catalog": "planetcd.craters.catalog",
    "match_craters": "planetcd.craters.match",
    "fit_age": "planetcd.craters.dating",
    "AgeFit": "planetcd.craters.dating",
    # planetcd.monitor is the module, and calling it calls planetcd.monitor.monitor (a callable module), so
    # planetcd.monitor(pre, post) works whichever was imported first
    "monitor": "planetcd.monitor",
    "monitor_batch": "planetcd.monitor",
    "MonitorResult": "planetcd.monitor",
    "load_model": "planetcd.models",
}

# public name -> the attribute it is called in its module, where the two differ
_RENAMED = {"load_model": "load"}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name == "monitor":
        return importlib.import_module("planetcd.monitor")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), _RENAMED.get(name, name))
    raise AttributeError(f"module 'planetcd' has no attribute {name!r}")
