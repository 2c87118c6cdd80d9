"""Shipping a finished run: its best weights and metadata as ``qmlx/pretrained/NAME.{pt,json}``."""

from __future__ import annotations

import os
from pathlib import Path

from qmlx.data.domain import Domain
from qmlx.data.io import load_dataset
from qmlx.train.config import recorded_split
from qmlx.train.engine import BEST_NAME
from qmlx.train.run import ENERGY_UNIT, describe_target, summary_metrics, write_result


def model_file(run_dir: str | os.PathLike) -> Path:
    """The best-weights network file of a run directory."""
    return Path(run_dir) / BEST_NAME


def export_shipped(
    run_dir: str | os.PathLike, name: str, models_dir: str | os.PathLike | None = None
) -> dict:
    """Copy a run's best weights into ``qmlx/pretrained/NAME.pt`` with ``NAME.json`` metadata.

    The test MAE and RMSE (kcal/mol) are measured again on the run's test set (QM7: the fold's
    official test part) from the exported file itself, so the metadata always matches the shipped
    weights. Returns the metadata, with ``file_bytes`` the size of ``NAME.pt``.
    """
    from qmlx.nn.io import load_network, predict_network, save_network
    from qmlx.pretrained import MODELS_DIR

    run_dir = Path(run_dir)
    models_dir = Path(models_dir or MODELS_DIR)
    model = load_network(model_file(run_dir))
    meta = dict(model.metadata)
    dest = models_dir / f"{name}.pt"
    save_network(model, dest, metadata=meta)
    shipped = load_network(dest)
    mols = load_dataset(meta.get("data") or meta["dataset"])
    target = meta.get("target", "atomization_energy")
    sp = recorded_split(mols, meta)
    test = mols.subset(sp.test)
    pred, _ = predict_network(shipped, test)
    meta.setdefault("target_description", describe_target(mols, target))
    meta.setdefault("domain", Domain.from_molecules(mols.subset(sp.train)).to_dict())
    meta.update(
        cli_command=str(meta.get("command", "")).replace("python -m qmlx.train.cli", "qmlx train"),
        name=name,
        model=type(shipped).__name__,
        model_config=dict(shipped.config),
        **summary_metrics(pred, test.target(target, ENERGY_UNIT)),
        n_parameters=int(sum(p.numel() for p in shipped.parameters())),
    )
    save_network(shipped, dest, metadata=meta)
    meta["file_bytes"] = dest.stat().st_size
    write_result(models_dir / f"{name}.json", meta)
    return meta
