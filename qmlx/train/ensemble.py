"""Ensembles of networks trained on one split, and the calibration of their uncertainty.

Members differ only in their initialization and batch-order seeds; the spread of their
predictions, scaled on the validation molecules, is the reported uncertainty per molecule.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from qmlx.data.io import load_dataset
from qmlx.data.molecules import Molecules
from qmlx.errors import ConfigError
from qmlx.train.config import SplitSpec, TrainConfig, recorded_split
from qmlx.train.engine import BEST_NAME, CHECKPOINT_NAME
from qmlx.train.run import (
    ENERGY_UNIT,
    check_new_run,
    data_label,
    summary_metrics,
    train_network,
    write_result,
)

#: metadata of one member that does not describe the ensemble
MEMBER_KEYS = {
    "seed", "test_mae_kcal_mol", "test_rmse_kcal_mol", "val_mae_kcal_mol", "epochs_run", "best_epoch",
    "stop_reason", "train_minutes", "resume_commands", "lr_resets",
}  # fmt: skip


def train_ensemble(
    n_members: int,
    model: str,
    data: str | os.PathLike | Molecules = "qm7",
    split: SplitSpec | None = None,
    config: TrainConfig | None = None,
    *,
    target: str | None = None,
    model_config: dict | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train ``n_members`` networks on one split (seeded by ``split.seed``, default ``config.seed``)
    with initialization and batch-order seeds ``config.seed + k``, each in ``out/member-k/``
    (resumable), and save them as one ensemble file ``out/model.pt`` (`qmlx.nn.ensemble.Ensemble`).

    The reported uncertainty is s·σ, the members' spread σ times one factor s fitted on the
    validation molecules (`uncertainty_calibration`'s ``scale_for_1sigma``; stored as
    ``uncertainty_scale``, 1 without validation molecules). The summary holds the ensemble's test
    MAE/RMSE (mean prediction, kcal/mol), each member's test MAE, and the calibration on the test
    set of s·σ (``uncertainty``) and of the raw σ (``uncertainty_raw``). The other arguments are
    those of `train_network`.
    """
    from qmlx.nn.ensemble import Ensemble
    from qmlx.nn.io import load_network, predict_ensemble, save_network

    if n_members < 2:
        raise ConfigError(f"--ensemble needs at least 2 members, got {n_members}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("ensembles are trained one member at a time; launch them without torchrun")
    config = config or TrainConfig()
    spec = split or SplitSpec()
    if spec.seed is None:  # one split for every member
        spec = replace(spec, seed=config.seed)
    mols = data if isinstance(data, Molecules) else load_dataset(data)
    label = data_label(data)
    out = Path(out or f"runs/{Path(label).stem if label not in ('qm7', 'qm9') else label}-{model}-ensemble")
    check_new_run(out, resume, overwrite)
    summaries = []
    for k in range(n_members):
        member_out = out / f"member-{k}"
        if resume and (member_out / "result.json").exists():  # finished in an earlier call
            summaries.append(json.loads((member_out / "result.json").read_text()))
            continue
        member_resume = resume and (member_out / CHECKPOINT_NAME).exists()
        summaries.append(
            train_network(
                model,
                mols,
                spec,
                replace(config, seed=config.seed + k),
                target=target,
                model_config=model_config,
                out=member_out,
                resume=member_resume,
                progress=progress,
                command=command,
            )  # fmt: skip
        )
    members = [load_network(out / f"member-{k}" / BEST_NAME) for k in range(n_members)]
    ensemble = Ensemble(members)
    meta = {k: v for k, v in members[0].metadata.items() if k not in MEMBER_KEYS}
    meta.update(
        data=label, members=n_members, member_seeds=[config.seed + k for k in range(n_members)],
        member_test_mae_kcal_mol=[s.get("test_mae_kcal_mol") for s in summaries],
    )  # fmt: skip
    ensemble.metadata = meta
    ensemble.novelty_state = members[0].novelty_state  # the members share their split
    target = meta["target"]
    sp = recorded_split(mols, meta)
    if len(sp.val):  # the members' validation molecules (seen only for early stopping)
        val = mols.subset(sp.val)
        mean, std, _ = predict_ensemble(ensemble, val)
        scale = uncertainty_calibration(mean - val.target(target, ENERGY_UNIT), std)["scale_for_1sigma"]
        meta.update(uncertainty_scale=scale, uncertainty_scale_n_val=len(sp.val))
    if len(sp.test):
        test = mols.subset(sp.test)
        mean, std, _ = predict_ensemble(ensemble, test)
        ref = test.target(target, ENERGY_UNIT)
        meta.update(summary_metrics(mean, ref))
        meta["uncertainty"] = uncertainty_calibration(mean - ref, std)
        meta["uncertainty_raw"] = uncertainty_calibration(mean - ref, std / ensemble.uncertainty_scale)
        np.savez(out / "test_predictions.npz", index=sp.test, pred=mean, std=std, ref=ref)
    save_network(ensemble, out / BEST_NAME, metadata=meta)
    summary = {k: v for k, v in meta.items() if k not in ("train_config", "domain")} | {"out": str(out)}
    write_result(out / "result.json", summary)
    return summary


def uncertainty_calibration(err: np.ndarray, std: np.ndarray) -> dict:
    """How well a predicted spread ``std`` (n,) tracks the actual errors ``err`` (n,), kcal/mol.

    ``spearman``: rank correlation of ``|err|`` with ``std``; ``coverage_1sigma`` and
    ``coverage_2sigma``: fractions with ``|err| <= k std`` (0.683 and 0.954 for calibrated
    Gaussian errors); ``scale_for_1sigma``: the factor that would make the ±1σ coverage 0.683.
    """
    from scipy.stats import spearmanr

    err, std = np.abs(np.asarray(err, dtype=np.float64)), np.asarray(std, dtype=np.float64)
    ratio = err / np.maximum(std, 1e-12)
    return {
        "spearman": float(spearmanr(err, std).statistic),
        "coverage_1sigma": float(np.mean(err <= std)),
        "coverage_2sigma": float(np.mean(err <= 2 * std)),
        "scale_for_1sigma": float(np.quantile(ratio, 0.6827)),
        "mean_std_kcal_mol": float(std.mean()),
    }
