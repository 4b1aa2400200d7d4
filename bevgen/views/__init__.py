"""BEV layout -> six surrounding camera views (BEVGen-style VQ tokenizer + masked-token transformer).

Modules: ``config`` (ViewsConfig), ``tokenizer`` (VQ autoencoder), ``attention`` (camera geometry and
biased attention), ``generator`` (masked-token transformer), ``sample`` (``load_views`` ->
``ViewsPipeline``), ``train`` (``train_views``; ``python -m bevgen.views.train``), ``metrics``, ``bevseg``, ``figures``
(batches from frames, BEV + six-view figures), ``drive`` (generated views of a simulated drive), ``cli``.
Importing this package imports no torch; the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ViewsConfig", "ViewsPipeline", "load_views", "train_views"]

_LAZY = {"ViewsConfig": "bevgen.views.config", "ViewsPipeline": "bevgen.views.sample",
         "load_views": "bevgen.views.sample", "train_views": "bevgen.views.train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bevgen.views' has no attribute {name!r}")
