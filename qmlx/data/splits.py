"""Train / validation / test splits of a `Molecules` set: one function for every command.

Three methods:

- ``"official"``: the data set's own cross-validation folds (QM7's five). Fold ``fold`` gives the
  test set; the rest is the training part.
- ``"random"``: no official folds. With ``n_test`` given, a seeded permutation holds out that many
  molecules (QM9's usual 10,000); otherwise seeded K-fold (``n_folds``, scikit-learn's ``KFold``
  with shuffling) and fold ``fold`` is the test set.
- ``"none"``: no test set; everything is the training part.

``"auto"`` means ``"official"`` where the data set has folds, else ``"random"``.

In every case the validation set is carved from the training part with the same seed (networks
use it for early stopping; kernel models choose hyperparameters by inner CV and use
``fit = train + val``). A `Split` records how it was made (`Split.record`), which every saved
model and run stores, so that it can be recreated and checked on resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from qmlx.data.molecules import Molecules
from qmlx.errors import ConfigError

METHODS = ("auto", "official", "random", "none")


@dataclass(frozen=True)
class Split:
    """Index arrays into one `Molecules` set, and how they were drawn.

    train, val, test : sorted int64 index arrays, disjoint.
    method : ``"official"``, ``"random"`` or ``"none"``.
    fold, n_folds : the test fold and the number of folds (``None`` for hold-out or ``"none"``).
    seed : seed of the permutations.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    method: str
    fold: int | None
    n_folds: int | None
    seed: int

    @property
    def fit(self) -> np.ndarray:
        """Training and validation molecules together (sorted): what a kernel model is fitted on."""
        return np.sort(np.concatenate([self.train, self.val]))

    def describe(self) -> str:
        """A short phrase for messages, e.g. ``official fold 0 of 5`` or ``random 5-fold, fold 2 (seed 0)``."""
        if self.method == "official":
            return f"official fold {self.fold} of {self.n_folds}"
        if self.method == "none":
            return "no test set (all molecules train)"
        if self.fold is None:
            return f"random hold-out of {len(self.test)} (seed {self.seed})"
        return f"random {self.n_folds}-fold, fold {self.fold} (seed {self.seed})"

    @property
    def record(self) -> dict:
        """JSON-ready facts that identify the split: method, fold, seed, sizes and a test-set hash."""
        digest = hashlib.sha1(np.ascontiguousarray(self.test, dtype=np.int64).tobytes()).hexdigest()[:12]
        return {
            "method": self.method,
            "fold": self.fold,
            "n_folds": self.n_folds,
            "seed": self.seed,
            "n_train": int(len(self.train)),
            "n_val": int(len(self.val)),
            "n_test": int(len(self.test)),
            "test_sha1": digest,
        }


def split(
    mols: Molecules,
    method: str = "auto",
    fold: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> Split:
    """Split ``mols`` into training, validation and test indices (see the module docstring).

    ``fold`` defaults to 0. ``n_val`` defaults to 10% of the training part, at most 1,000 (0 is
    allowed). ``n_train`` keeps only that many of the remaining training molecules. Every
    impossible request (a fold out of range, official folds on a set without them, more molecules
    than there are) raises `ConfigError` naming the data set.
    """
    name, n = mols.name, len(mols)
    if method not in METHODS:
        raise ConfigError(f"--split must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        method = "official" if mols.folds else "random"
    for label, value in (("--n-train", n_train), ("--n-val", n_val), ("--n-test", n_test)):
        if value is not None and value < 0:
            raise ConfigError(f"{label} must be non-negative, got {value}")
    rng = np.random.default_rng(seed)
    k_folds: int | None = None
    if method == "official":
        if not mols.folds:
            raise ConfigError(f"{name} has no official folds; use --split random or --split none")
        fold = 0 if fold is None else fold
        k_folds = len(mols.folds)
        if not 0 <= fold < k_folds:
            raise ConfigError(f"{name} has official folds 0..{k_folds - 1}, not {fold}")
        if n_test is not None:
            raise ConfigError(f"--n-test does not apply to {name}'s official folds")
        pool, test = (np.asarray(a, dtype=np.int64) for a in mols.folds[fold])
    elif method == "random" and n_test is not None:
        if fold not in (None, 0):
            raise ConfigError("--fold does not apply to a hold-out split (--n-test); leave it out")
        if n_test >= n:
            raise ConfigError(f"--n-test {n_test} leaves no training molecules in {name} ({n} molecules)")
        fold = None
        perm = rng.permutation(n)
        test, pool = np.sort(perm[:n_test]), perm[n_test:]
    elif method == "random":
        k_folds = n_folds
        if k_folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {k_folds}")
        if n < k_folds:
            raise ConfigError(f"{name} has {n} molecules, too few for {k_folds} folds")
        fold = 0 if fold is None else fold
        if not 0 <= fold < k_folds:
            raise ConfigError(f"--fold must be in 0..{k_folds - 1} for {k_folds} folds, got {fold}")
        from sklearn.model_selection import KFold

        folds = list(KFold(k_folds, shuffle=True, random_state=seed).split(np.arange(n)))
        pool, test = folds[fold]
    else:  # none
        if fold not in (None, 0) or n_test:
            raise ConfigError("--split none trains on every molecule; leave out --fold and --n-test")
        fold = None
        pool, test = np.arange(n), np.zeros(0, dtype=np.int64)
    pool = rng.permutation(pool)
    n_val = min(int(round(0.1 * len(pool))), 1000) if n_val is None else n_val
    if n_val >= len(pool):
        raise ConfigError(f"--n-val {n_val} leaves no training molecules ({len(pool)} in the training part)")
    val, rest = pool[:n_val], pool[n_val:]
    if n_train is not None:
        if n_train > len(rest):
            raise ConfigError(
                f"--n-train {n_train} is more than the {len(rest)} training molecules available"
            )
        rest = rest[:n_train]
    return Split(
        train=np.sort(rest).astype(np.int64),
        val=np.sort(val).astype(np.int64),
        test=np.sort(np.asarray(test)).astype(np.int64),
        method=method,
        fold=fold,
        n_folds=k_folds,
        seed=seed,
    )


def split_from_record(mols: Molecules, record: dict, n_train: int | None = None) -> Split:
    """Recreate the split a model was trained with from its `Split.record`.

    The recreated test set must hash to the recorded one; otherwise the data set differs from
    the one the model was trained on and `ConfigError` says so.
    """
    method = record["method"]
    hold_out = method == "random" and record.get("fold") is None
    sp = split(
        mols,
        method,
        fold=record.get("fold"),
        n_folds=record.get("n_folds") or 5,
        seed=int(record["seed"]),
        n_train=record.get("n_train") if n_train is None else n_train,
        n_val=record.get("n_val"),
        n_test=record.get("n_test") if hold_out else None,
    )
    if record.get("test_sha1") and sp.record["test_sha1"] != record["test_sha1"]:
        raise ConfigError(
            f"{mols.name}: the recorded split does not match this data set (test indices differ)"
        )
    return sp
