"""Trained networks shipped with qmlx, loadable by name.

Each model ``NAME`` is a network file ``NAME.pt`` (weights < 10 MB) with ``NAME.json`` beside it
(dataset, fold, test MAE, units, training command, qmlx version). ``qm7-schnet-ensemble`` holds
five SchNets (one of them ``qm7-schnet``) and predicts with an uncertainty. ``qm9-schnet`` saw
110,000 QM9 molecules; ``qm9-schnet-50k`` saw 50,000 and leaves 78,831 molecules it never saw,
the held-out set of the ring analyses (`experiments/ring_stability.py`, `ring_types.py`). Load one with
``qmlx.nn.load_network("qm7-schnet")``.
"""

from __future__ import annotations

import json
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
SHIPPED = ("qm7-schnet", "qm7-dtnn", "qm9-schnet", "qm9-schnet-50k", "qm7-schnet-ensemble")


def shipped_model_path(name: str) -> Path | None:
    """The weights file of shipped model ``name``, or ``None`` if there is no such model."""
    if name not in SHIPPED:
        return None
    path = MODELS_DIR / f"{name}.pt"
    return path if path.exists() else None


def available_models() -> dict[str, dict]:
    """Name -> metadata of every shipped model whose weights are present."""
    out = {}
    for name in SHIPPED:
        if shipped_model_path(name) is not None:
            meta = MODELS_DIR / f"{name}.json"
            out[name] = json.loads(meta.read_text()) if meta.exists() else {}
    return out
