"""Training engine: reproducibility, resuming, checkpoints, logs, splits and the CLI parser."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch

from qmlx.cli import build_parser
from qmlx.data import Molecules
from qmlx.data.splits import split
from qmlx.errors import ConfigError, DataFormatError
from qmlx.nn import PairCache, SchNet, load_network
from qmlx.nn import tables as nn_tables
from qmlx.nn.models import InteractionNetwork
from qmlx.train import SplitSpec, TrainConfig, Trainer


def _synthetic(n_mol: int = 48, seed: int = 0) -> Molecules:
    """Random small molecules whose energy is a smooth function of the geometry (kcal/mol)."""
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(3, 7, n_mol)
    Z = rng.choice([1, 6, 8], n_atoms.sum())
    R = rng.normal(scale=1.2, size=(n_atoms.sum(), 3))
    mols = Molecules(Z=Z, R=R, n_atoms=n_atoms)
    e = np.zeros(n_mol)
    for m in range(n_mol):  # test fixture only: a loop is fine here
        lo, hi = mols.offsets[m], mols.offsets[m + 1]
        d = np.linalg.norm(R[lo:hi, None] - R[None, lo:hi], axis=-1)
        e[m] = -10.0 * (hi - lo) - np.exp(-d[np.triu_indices(hi - lo, 1)]).sum() * 5.0
    return Molecules(Z=Z, R=R, n_atoms=n_atoms, targets={"atomization_energy": e},
                     units={"atomization_energy": "kcal/mol"})  # fmt: skip


def _trainer(out_dir, epochs: int = 4, ema: float | None = 0.9, batch_size: int = 8, **kw) -> Trainer:
    mols = _synthetic()
    torch.manual_seed(0)
    model = SchNet(n_features=8, n_interactions=1, cutoff=4.0, rbf_spacing=0.5)
    train, val = mols.subset(np.arange(36)), mols.subset(np.arange(36, 48))
    model.fit_reference(train.Z, train.n_atoms, train.target("atomization_energy"))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=3e-3, lr_patience=1, lr_factor=0.5, ema_decay=ema,
                         seed=0, **kw)  # fmt: skip
    return Trainer(model, PairCache(train, 4.0), PairCache(val, 4.0), config, out_dir, progress=False)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_lowers_the_validation_error(tmp_path):
    t = _trainer(tmp_path, epochs=6, ema=None)
    initial = t.validate()
    t.fit()
    assert t.best_val < initial


def test_runs_with_the_same_seed_end_with_identical_weights(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    a.fit()
    b.fit()
    assert _same_weights(a.model, b.model)


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    full = _trainer(tmp_path / "full", epochs=5)
    full.fit()
    first = _trainer(tmp_path / "resumed", epochs=5)
    first.fit(stop_after=2)  # as if killed after the checkpoint of epoch 2
    assert first.epoch == 2
    second = _trainer(tmp_path / "resumed", epochs=5)  # a fresh process: new model, new optimizer
    second.fit(resume=True)
    assert second.epoch == 5
    assert _same_weights(second.model, full.model)
    assert second.ema is not None and all(torch.equal(second.ema[k], full.ema[k]) for k in full.ema)
    assert [h["val_mae"] for h in second.history] == [h["val_mae"] for h in full.history]
    assert second.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_cosine_schedule_follows_the_closed_form_and_survives_a_resume(tmp_path):
    epochs, lr0, lr_min = 6, 3e-3, 1e-5
    full = _trainer(tmp_path / "full", epochs=epochs, schedule="cosine", min_lr=lr_min)
    full.fit()
    expected = [
        lr_min + 0.5 * (lr0 - lr_min) * (1 + np.cos(np.pi * e / epochs)) for e in range(1, epochs + 1)
    ]
    np.testing.assert_allclose([h["lr"] for h in full.history], expected, rtol=1e-9)
    assert full.stop_reason == "epochs"  # no plateau stop: the budget is the schedule
    _trainer(tmp_path / "resumed", epochs=epochs, schedule="cosine", min_lr=lr_min).fit(stop_after=3)
    second = _trainer(tmp_path / "resumed", epochs=epochs, schedule="cosine", min_lr=lr_min)
    second.fit(resume=True)
    assert [h["lr"] for h in second.history] == [h["lr"] for h in full.history]
    assert _same_weights(second.model, full.model)


def test_cosine_schedule_refuses_a_learning_rate_reset(tmp_path):
    _trainer(tmp_path, epochs=4, schedule="cosine").fit(stop_after=1)
    with pytest.raises(ConfigError, match="plateau"):
        _trainer(tmp_path, epochs=4, schedule="cosine").fit(resume=True, reset_lr=1e-4)


def test_weight_decay_alone_shrinks_the_weights_by_the_closed_form_factor(tmp_path):
    """With zero gradients the Adam part of AdamW is zero: each step multiplies by 1 - lr * wd."""
    t = _trainer(tmp_path, epochs=1, weight_decay=0.5)
    before = {k: v.clone() for k, v in t.model.named_parameters()}
    for p in t.model.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(3):
        t.optimizer.step()
    for name, p in t.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] * (1 - 3e-3 * 0.5) ** 3, msg=name)
    assert type(_trainer(tmp_path / "plain", epochs=1).optimizer) is torch.optim.Adam


@pytest.mark.parametrize("tables", [False, True], ids=["per-pair", "tables"])
@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_training_step_follows_the_gradient_of_the_chosen_loss(tmp_path, loss, tables, monkeypatch):
    """One batch over the whole training set: the step's gradient is that of the mean loss of the
    exact model, also when the step reads its filters from training tables (here forced on for
    this small batch; within their interpolation error, see tests/test_inference.py)."""
    built = []
    if tables:
        monkeypatch.setattr(nn_tables, "TRAIN_TABLE_MIN_PAIRS_PER_POINT", 0)
    monkeypatch.setattr(
        SchNet, "training_tables", lambda m, n: built.append(n) or InteractionNetwork.training_tables(m, n)
    )
    t = _trainer(tmp_path, epochs=1, ema=None, batch_size=64, loss=loss)
    model = SchNet(**t.model.config)
    model.load_state_dict(t.model.state_dict())
    batch = t.train_cache.batch(np.arange(len(t.train_cache)))
    diff = model(batch).energy - batch.energy
    expected = torch.autograd.grad(
        (diff.abs() if loss == "mae" else diff**2).mean(), list(model.parameters())
    )
    built.clear()
    t.train_epoch()  # one step; the gradients stay in .grad until the next step
    assert built == [len(batch.idx_i)]  # the step asked for tables (None when not forced on)
    for (name, p), g in zip(t.model.named_parameters(), expected):
        torch.testing.assert_close(
            p.grad, g, rtol=1e-4, atol=1e-4 * float(g.abs().max()) if tables else 1e-6, msg=name
        )


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule='linear'"):
        TrainConfig(schedule="linear")
    with pytest.raises(ConfigError, match="loss='huber'"):
        TrainConfig(loss="huber")
    with pytest.raises(ConfigError, match="weight_decay=-0.1"):
        TrainConfig(weight_decay=-0.1)


@pytest.mark.slow
@pytest.mark.parametrize("tables", [False, True], ids=["per-pair", "tables"])
def test_compiled_training_matches_eager_training(tmp_path, tables, monkeypatch):
    """torch.compile fuses the step; the numbers stay those of the eager model to float32 rounding,
    also when the steps read training tables (forced on here for these small batches)."""
    if tables:
        monkeypatch.setattr(nn_tables, "TRAIN_TABLE_MIN_PAIRS_PER_POINT", 0)
    eager, compiled = (
        _trainer(tmp_path / "eager", epochs=2),
        _trainer(tmp_path / "compiled", epochs=2, compile=True),
    )
    eager.fit()
    compiled.fit()
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose([h["val_mae"] for h in compiled.history], [h["val_mae"] for h in eager.history],
                               rtol=1e-4)  # fmt: skip
    assert not any(
        k.startswith("_orig_mod") for k in load_network(tmp_path / "compiled" / "model.pt").state_dict()
    )


def test_log_has_one_row_per_epoch_and_best_model_is_loadable(tmp_path):
    t = _trainer(tmp_path, epochs=3)
    t.fit()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_mae", "val_mae", "lr"} <= set(rows[0])
    best = load_network(tmp_path / "model.pt")
    assert best.metadata["best_epoch"] == t.best_epoch
    assert not list(tmp_path.glob("*.part"))  # no temporary files left behind


def test_checkpoint_is_loadable_as_a_network(tmp_path):
    t = _trainer(tmp_path, epochs=2)
    t.fit()
    model = load_network(tmp_path / "checkpoint.pt")
    t.load_best()
    assert _same_weights(model, t.model)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_checkpoint_gives_a_clear_error(tmp_path, damage):
    t = _trainer(tmp_path, epochs=1)
    t.fit()
    ck = tmp_path / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(DataFormatError, match="checkpoint.pt"):
        _trainer(tmp_path, epochs=2).fit(resume=True)


def test_time_budget_stops_gracefully_after_one_epoch(tmp_path):
    t = _trainer(tmp_path, epochs=50, max_minutes=0.0)
    t.fit()
    assert t.epoch == 1 and t.stop_reason == "time budget"
    assert (tmp_path / "model.pt").exists()


def test_early_stopping_ends_a_run_without_progress(tmp_path):
    t = _trainer(tmp_path, epochs=50, ema=None, early_stop_patience=2)
    t.optimizer.param_groups[0]["lr"] = 0.0  # nothing can improve
    t.fit()
    assert t.stop_reason in {"early stopping", "learning rate at its minimum"}
    assert t.epoch < 50


def test_validation_split_is_carved_from_the_training_part():
    mols = _synthetic(60)
    mols.folds = [(np.arange(0, 45), np.arange(45, 60))]
    sp = split(mols, fold=0, n_train=20, seed=1)
    train, val, test = sp.train, sp.val, sp.test
    assert sp.method == "official" and len(train) == 20 and len(val) == 4
    assert set(train) | set(val) <= set(range(45))
    assert not set(train) & set(val)
    assert list(test) == list(range(45, 60))


def test_split_without_folds_holds_out_a_seeded_test_set():
    mols = _synthetic(60)
    a = split(mols, n_test=10, seed=3)
    b = split(mols, n_test=10, seed=3)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert len(a.test) == 10 and not set(a.test) & (set(a.train) | set(a.val))
    assert a.record == b.record and a.record["method"] == "random" and a.record["fold"] is None


def test_split_spec_gives_the_split_of_its_options():
    mols = _synthetic(60)
    spec = SplitSpec("random", fold=2, n_folds=4, n_val=5)
    expected = split(mols, "random", 2, 4, seed=7, n_val=5)
    assert spec.split(mols, default_seed=7).record == expected.record
    assert SplitSpec("random", fold=2, n_folds=4, n_val=5, seed=7).split(mols, default_seed=0).record == (
        expected.record
    )


def test_train_network_splits_with_the_training_seed_unless_the_split_has_one(tmp_path):
    from qmlx.train import train_network

    mols = _synthetic(40)
    config = TrainConfig(epochs=1, batch_size=16, seed=3)
    small = {"n_features": 8, "n_interactions": 1, "cutoff": 4.0}
    spec = SplitSpec("random", n_val=8, n_test=8)
    a = train_network("schnet", mols, spec, config, model_config=small, out=tmp_path / "a", progress=False)
    assert a["split"] == spec.split(mols, default_seed=3).record and a["seed"] == 3
    assert (a["n_train"], a["n_val"], a["n_test"]) == (24, 8, 8) and np.isfinite(a["test_mae_kcal_mol"])
    b = train_network(
        "schnet", mols, SplitSpec("random", n_val=8, n_test=8, seed=0), config, model_config=small,
        out=tmp_path / "b", progress=False,
    )  # fmt: skip
    assert b["split"]["seed"] == 0 and b["seed"] == 3
    saved = np.load(tmp_path / "a" / "test_predictions.npz")
    assert a["test_mae_kcal_mol"] == pytest.approx(np.mean(np.abs(saved["pred"] - saved["ref"])))


def test_cli_registers_schnet_and_dtnn():
    parser = build_parser()
    args = parser.parse_args(["train", "dtnn", "--dataset", "qm9", "--n-train", "1000", "--epochs", "5"])
    assert args.network == "dtnn" and args.data == "qm9" and args.n_train == 1000 and args.epochs == 5
    assert callable(args.func)
    args = parser.parse_args(["train", "schnet", "--fold", "2", "--resume", "--out", "runs/x"])
    assert args.network == "schnet" and args.fold == 2 and args.resume and args.out == "runs/x"


def test_train_command_runs_end_to_end_on_qm7(qm7, tmp_path, capsys):
    import json

    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(
        ["train", "schnet", "--dataset", "qm7", "--n-train", "64", "--n-val", "32", "--epochs", "2", "--features", "8",
         "--interactions", "1", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    args.func(args)
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_train"] == 64 and summary["n_test"] == len(qm7.folds[0][1])
    assert summary["epochs_run"] == 2 and np.isfinite(summary["test_mae_kcal_mol"])
    model = load_network(out / "model.pt")
    assert model.metadata["test_mae_kcal_mol"] == summary["test_mae_kcal_mol"]
    assert model.metadata["energy_unit"] == "kcal/mol"
    saved = json.loads((out / "result.json").read_text())
    assert saved["model"] == "SchNet" and saved["test_mae_kcal_mol"] == summary["test_mae_kcal_mol"]


def test_train_command_passes_the_cutoff_to_the_model(qm7, tmp_path):
    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(
        ["train", "dtnn", "--dataset", "qm7", "--n-train", "32", "--n-val", "16", "--epochs", "1", "--features", "8",
         "--factors", "8", "--interactions", "1", "--cutoff", "3", "--rbf-stop", "3", "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    args.func(args)
    model = load_network(out / "model.pt")
    assert model.cutoff == 3.0 and model.config["rbf_stop"] == 3.0
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "dtnn", "--cutoff", "0", "--out", str(tmp_path / "bad")])


def test_resume_with_reset_lr_starts_a_recorded_second_phase(tmp_path):
    first = _trainer(tmp_path, epochs=4)
    first.metadata["command"] = "train"
    first.fit(stop_after=2)
    second = _trainer(tmp_path, epochs=4)
    second.metadata["command"] = "train --resume --reset-lr 1e-4"
    second.fit(resume=True, reset_lr=1e-4)
    assert second.epoch == 4
    assert second.metadata["lr_resets"] == [{"epoch": 2, "lr": 1e-4}]
    assert second.metadata["command"] == "train"
    assert second.metadata["resume_commands"] == ["train --resume --reset-lr 1e-4"]
    assert second.history[2]["lr"] <= 1e-4


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, capsys):
    from qmlx.cli import main
    from qmlx.errors import ConfigError
    from qmlx.train.run import check_new_run, train_network

    run = tmp_path / "run"
    run.mkdir()
    check_new_run(run, resume=False)  # an empty folder is fine
    (run / "model.pt").write_bytes(b"weights")
    (run / "checkpoint.pt").write_bytes(b"state")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # the command refuses before reading any data: the data set named here does not even exist
    argv = ["train", "schnet", "--data", str(tmp_path / "missing.h5"), "--out", str(run), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "already holds a run (checkpoint.pt, model.pt)" in err and "--resume" in err
    )
    with pytest.raises(ConfigError, match="already holds a run"):
        train_network("schnet", _synthetic(), config=TrainConfig(epochs=1), out=run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    check_new_run(run, resume=True)  # resuming is what the folder is for
    (run / "notes.txt").write_text("mine")
    small = {"n_features": 8, "n_interactions": 1, "cutoff": 4.0, "rbf_spacing": 0.5}
    train_network("schnet", _synthetic(), config=TrainConfig(epochs=1), model_config=small, out=run,
                  progress=False, overwrite=True)  # fmt: skip
    assert (run / "model.pt").read_bytes() != before["model.pt"] and (run / "notes.txt").read_text() == "mine"
    assert main(argv[:-1] + ["--resume", "--overwrite", "--no-progress"]) == 1
    assert "give one" in capsys.readouterr().err
    ensemble = tmp_path / "ens"
    (ensemble / "member-0").mkdir(parents=True)
    (ensemble / "member-0" / "checkpoint.pt").write_bytes(b"state")
    with pytest.raises(ConfigError, match=r"member-0/checkpoint\.pt"):
        check_new_run(ensemble, resume=False)


def test_tensorboard_events_hold_the_logged_curves_and_a_resume_continues_them(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = _trainer(tmp_path, epochs=4)
    first.fit(stop_after=2)
    second = _trainer(tmp_path, epochs=4)
    second.fit(resume=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for key in ("val_mae", "train_mae", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2, 3, 4]
        np.testing.assert_allclose([s.value for s in scalars], [h[key] for h in second.history], rtol=1e-6)


def test_config_file_sets_options_the_command_line_overrides_and_the_run_records_it(tmp_path, capsys):
    import json

    from qmlx.cli import main
    from qmlx.data import save_molecules

    data = tmp_path / "syn.h5"
    save_molecules(data, _synthetic())
    (tmp_path / "run.toml").write_text(
        f'network = "schnet"\ndata = "{data}"\n'
        '[split]\nmethod = "random"\nn_val = 6\n'
        "[train]\nepochs = 3\nbatch_size = 8\nlr = 0.003\nseed = 1\n"
        "[model]\nn_features = 8\nn_interactions = 1\ncutoff = 4.0\nrbf_spacing = 0.5\n"
    )
    out = tmp_path / "run"
    argv = [
        "train",
        "schnet",
        "--config",
        str(tmp_path / "run.toml"),
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["train"]["epochs"] == 2  # the command line wins
    assert (
        resolved["train"]["batch_size"] == 8
        and resolved["train"]["lr"] == 0.003
        and resolved["train"]["seed"] == 1
    )
    assert resolved["model"]["n_features"] == 8 and resolved["model"]["rbf_spacing"] == 0.5
    assert resolved["split"]["method"] == "random" and resolved["split"]["n_val"] == 6
    assert resolved["data"] == str(data)
    meta = torch.load(out / "model.pt", weights_only=True)["metadata"]
    assert meta["n_val"] == 6 and meta["epochs_run"] == 2
    # the saved config runs the same settings again
    again = tmp_path / "again"
    assert (
        main(["train", "schnet", "--config", str(out / "config.json"), "--out", str(again), "--no-progress"])
        == 0
    )
    capsys.readouterr()
    assert json.loads((again / "config.json").read_text()) == resolved


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nepochz = 3\n", r"unknown key 'train.epochz'; did you mean 'train.epochs'\?"),
        ("[train]\nepochs = -3\n", r"train.epochs must be a positive integer"),
        ('[train]\nschedule = "step"\n', r"train.schedule = 'step'; expected one of plateau, cosine"),
        ('[train]\ncompile = "yes"\n', r"train.compile must be true or false"),
        ("[model]\nn_featurs = 8\n", r"unknown key 'model.n_featurs'; did you mean 'model.n_features'\?"),
        ('network = "dtnn"\n', r"network = 'dtnn', but the command trains schnet"),
        ("[train\n", r"not valid TOML"),
        ("[split]\nseed = 1\n[train]\nseed = 2\n", r"train.seed = 2 contradicts 1"),
    ],
)
def test_bad_config_files_fail_in_one_line_before_any_work(tmp_path, capsys, text, message):
    from qmlx.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(text)
    argv = ["train", "schnet", "--config", str(path), "--data", str(tmp_path / "missing.h5"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml" in err
    assert re.search(message, err), err


def test_a_toml_config_reproduces_a_run_given_by_options(tmp_path, capsys):
    from qmlx.cli import main
    from qmlx.data import save_molecules

    data = tmp_path / "syn.h5"
    save_molecules(data, _synthetic())
    flags = ["--data", str(data), "--split", "random", "--fold", "1", "--n-val", "6", "--epochs", "2",
             "--batch-size", "8", "--lr", "0.003", "--seed", "3", "--features", "8", "--interactions", "1",
             "--cutoff", "4.0", "--no-progress"]  # fmt: skip
    assert main(["train", "schnet", *flags, "--out", str(tmp_path / "flags")]) == 0
    (tmp_path / "run.toml").write_text(
        f'data = "{data}"\n[split]\nmethod = "random"\nfold = 1\nn_val = 6\n'
        "[train]\nepochs = 2\nbatch_size = 8\nlr = 0.003\nseed = 3\n"
        "[model]\nn_features = 8\nn_interactions = 1\ncutoff = 4.0\n"
    )
    argv = [
        "train",
        "schnet",
        "--config",
        str(tmp_path / "run.toml"),
        "--out",
        str(tmp_path / "toml"),
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    a, b = (torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("flags", "toml"))
    assert a["metadata"]["split"] == b["metadata"]["split"]  # the same test-set hash, sizes and seed
    assert a["metadata"]["split"]["test_sha1"] and a["metadata"]["epochs_run"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
