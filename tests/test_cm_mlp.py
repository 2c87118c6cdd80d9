"""The Montavon-2012 network on random Coulomb matrices: sampler, model shapes, a tiny training run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qmlx.data import Molecules
from qmlx.nn.cm_mlp import CMMLPConfig, InputEncoder, RandomCoulombSampler, train_cm_mlp
from qmlx.represent import SortedCoulombMatrix, coulomb_matrices


def toy_set(n: int = 60, seed: int = 0) -> Molecules:
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(3, 7, n)
    Z = rng.choice([1, 6, 8], size=n_atoms.sum())
    R = rng.normal(scale=1.3, size=(n_atoms.sum(), 3))
    energy = np.bincount(np.repeat(np.arange(n), n_atoms), weights=-np.where(Z == 1, 50.0, 120.0))
    return Molecules(Z=Z, R=R, n_atoms=n_atoms, targets={"e": energy}, units={"e": "kcal/mol"})


def test_sampler_without_noise_gives_the_sorted_matrix():
    mols = toy_set(10)
    sampler = RandomCoulombSampler(coulomb_matrices(mols), noise=0.0)
    x = sampler.sample(torch.arange(10)).double().numpy()
    ref = SortedCoulombMatrix().fit(mols).transform(mols)
    np.testing.assert_allclose(x, ref, rtol=1e-6)


def test_random_samples_permute_atoms_and_keep_padding_last():
    mols = toy_set(10)
    M = coulomb_matrices(mols)
    sampler = RandomCoulombSampler(M, noise=5.0)
    gen = torch.Generator().manual_seed(0)
    a, b = sampler.sample(torch.arange(10), gen), sampler.sample(torch.arange(10), gen)
    assert not torch.equal(a, b)
    # same multiset of entries as the molecule's own matrix, and zeros only after the molecule
    i, j = np.tril_indices(M.shape[1])
    np.testing.assert_allclose(np.sort(a.numpy(), 1), np.sort(M[:, i, j], 1).astype(np.float32), rtol=1e-6)
    for row, n in zip(a.numpy(), mols.n_atoms):
        assert (row[n * (n + 1) // 2 :] == 0).all()


def test_encoder_expands_each_entry_into_tanh_thresholds():
    samples = torch.tensor([[0.0, 2.5, 7.0], [1.0, 0.5, 3.0]])
    enc = InputEncoder(samples, step=2.0)
    # thresholds 0, 2, ... up to each column's largest value: 1, 2 and 4 of them
    assert enc.feature.tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert enc.thresholds.tolist() == [0.0, 0.0, 2.0, 0.0, 2.0, 4.0, 6.0]
    x = torch.tensor([[0.3, 1.0, 5.0]])
    raw = torch.tanh((x[0, enc.feature] - enc.thresholds) / 2.0)
    torch.testing.assert_close(enc(x)[0], (raw - enc.mean) / enc.std)
    # the normalization centres the training inputs
    torch.testing.assert_close(enc(samples).mean(0), torch.zeros(enc.n_out), atol=1e-6, rtol=0)
    plain = InputEncoder(samples, step=0.0)
    assert plain.n_out == 3
    torch.testing.assert_close(plain(samples).mean(0), torch.zeros(3), atol=1e-6, rtol=0)


def test_training_reduces_error_and_predicts_kcal_per_mol():
    mols = toy_set()
    y = mols.target("e")
    config = CMMLPConfig(hidden=(32,), epochs=30, batch_size=16, lr=3e-3, test_samples=3, history_every=10)
    reg, history = train_cm_mlp(mols, np.arange(60), y, config, monitor=lambda r: {"n": 1})
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [h["epoch"] for h in history if "n" in h] == [10, 20, 30]
    pred = reg.energies(mols)  # the synthetic set has atoms closer than 0.5 Å: no domain check
    assert pred.shape == (60,) and np.abs(pred - y).mean() < np.abs(y - y.mean()).mean()


@pytest.mark.slow
def test_quick_experiment_runs_on_qm7(qm7, tmp_path):
    from experiments.qm7_cm_mlp import build_parser, compute

    result = compute(build_parser().parse_args(["--quick"]))
    assert 0 < result["mae_mean"] < 100 and result["folds_done"] == "1 of 1" and result["jobs"] == 1

    # folds in spawned worker processes (--jobs) train exactly as in this process; the script
    # writes the JSON with its run record, the Markdown and the training curve
    script = Path(__file__).resolve().parents[1] / "experiments" / "qm7_cm_mlp.py"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--jobs", "2", "--out-dir", str(tmp_path)], check=True
    )
    parallel = json.loads((tmp_path / "qm7_cm_mlp_quick.json").read_text())
    assert parallel["mae_mean"] == result["mae_mean"] and parallel["jobs"] == 2
    assert parallel["run"]["command"].endswith(f"--quick --jobs 2 --out-dir {tmp_path}")
    assert f"{result['mae_mean']:.2f}" in (tmp_path / "qm7_cm_mlp_quick.md").read_text()
    assert (tmp_path / "qm7_cm_mlp_quick_training_curve.png").stat().st_size > 0
