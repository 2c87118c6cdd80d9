"""Statistics for comparisons between groups of rings (or any labelled items of molecules).

- `pair_fraction`: the fraction of (aromatic, non-aromatic) pairs, optionally only within
  groups such as same-composition rings, in which the aromatic ring has the lower energy. Over one
  group it is the ROC AUC of ``-energy``. It accepts per-item weights so that a bootstrap can
  reuse it.
- `bootstrap` (and `bootstrap_draws`, `percentile_intervals`): a seeded percentile interval of
  any such statistic, resampling molecules (all rings of a molecule travel together).
- `matched_difference`: the difference between two groups compared only within matching strata
  (for rings: equal composition per ring atom, `qmlx.chem.rings.per_atom_composition`, where the
  element references cancel).
- `composition_scores`, `composition_residual`: what composition features alone
  (`qmlx.chem.rings.composition_features`) predict, the baselines an energy ranking has to beat.

Everything here takes plain arrays (energies in kcal/mol, flags, labels, weights), one entry per
ring, and is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def _wins(e_pos: np.ndarray, w_pos: np.ndarray, e_neg: np.ndarray, w_neg: np.ndarray) -> float:
    """Weighted count of (pos, neg) pairs with e_pos < e_neg, ties counting one half."""
    order = np.argsort(e_neg, kind="stable")
    e_sorted = e_neg[order]
    cum = np.concatenate([[0.0], np.cumsum(w_neg[order])])
    left = np.searchsorted(e_sorted, e_pos, side="left")
    right = np.searchsorted(e_sorted, e_pos, side="right")
    above = cum[-1] - cum[right]
    tied = cum[right] - cum[left]
    return float(np.sum(w_pos * (above + 0.5 * tied)))


def group_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """(n,) integer codes of hashable ``labels`` (n,), numbered in order of first appearance.

    An integer array is returned unchanged.
    """
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return labels.astype(np.int64, copy=False)
    lookup: dict = {}
    return np.array([lookup.setdefault(g, len(lookup)) for g in labels], dtype=np.int64)


@dataclass
class PairStatistic:
    """Result of `pair_fraction`.

    fraction : weighted fraction of (aromatic, non-aromatic) pairs in which the aromatic ring has
        the lower energy (ties count one half); ``nan`` without pairs.
    n_pairs : number of pairs (weighted).
    n_groups : groups that hold at least one pair.
    """

    fraction: float
    n_pairs: float
    n_groups: int


def pair_fraction(
    energy: np.ndarray,
    aromatic: np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> PairStatistic:
    """How often an aromatic ring is more stable (lower energy) than a non-aromatic one.

    Parameters
    ----------
    energy : (n_rings,) ring energies, or any score where lower means "predicted aromatic".
    aromatic : (n_rings,) bool.
    groups : (n_rings,) hashable labels, or integer codes from `group_codes` (faster when called
        many times); only pairs within a group count (e.g. ring composition,
        `qmlx.chem.rings.Ring.composition`). ``None``: all pairs, which makes the fraction the
        ROC AUC of ``-energy``.
    weights : (n_rings,) non-negative multiplicities (a bootstrap resample); default 1.

    Every (aromatic, non-aromatic) pair in a group counts with weight ``w_a * w_n``.
    """
    energy = np.asarray(energy, dtype=np.float64)
    aromatic = np.asarray(aromatic, dtype=bool)
    weights = np.ones(len(energy)) if weights is None else np.asarray(weights, dtype=np.float64)
    codes = np.zeros(len(energy), dtype=np.int64) if groups is None else group_codes(groups)
    used = weights > 0
    both = np.intersect1d(codes[used & aromatic], codes[used & ~aromatic])
    order = np.argsort(codes, kind="stable")
    bounds = (
        np.searchsorted(codes[order], both, side="left"),
        np.searchsorted(codes[order], both, side="right"),
    )
    wins = total = 0.0
    for lo, hi in zip(*bounds):
        idx = order[lo:hi]
        idx = idx[used[idx]]
        pos, neg = idx[aromatic[idx]], idx[~aromatic[idx]]
        wins += _wins(energy[pos], weights[pos], energy[neg], weights[neg])
        total += weights[pos].sum() * weights[neg].sum()
    return PairStatistic(float(wins / total) if total else float("nan"), float(total), len(both))


@dataclass
class Interval:
    """A point estimate with a bootstrap percentile interval.

    value : the statistic on the data as measured.
    low, high : percentile interval bounds (``level``, e.g. 2.5th and 97.5th percentiles).
    level : the interval's coverage, e.g. 0.95.
    n_resamples : resamples drawn; n_undefined : resamples where the statistic was ``nan`` (for
        example no aromatic ring drawn), left out of the percentiles.
    """

    value: float
    low: float
    high: float
    level: float = 0.95
    n_resamples: int = 0
    n_undefined: int = 0

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("value", "low", "high", "level", "n_resamples", "n_undefined")}


def resample_weights(n_molecules: int, n_resamples: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield ``n_resamples`` arrays (n_molecules,): multiplicities of molecules drawn with replacement.

    Seeded: the same ``seed`` yields the same resamples, one at a time (no (n_resamples,
    n_molecules) matrix is held in memory).
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        draw = rng.integers(0, n_molecules, size=n_molecules)
        yield np.bincount(draw, minlength=n_molecules).astype(np.float64)


def bootstrap_draws(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    molecule: np.ndarray,
    n_molecules: int,
    n_resamples: int = 1000,
    seed: int = 0,
    point: float | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The statistic measured, (k,), and on each resample of molecules, (n_resamples, k).

    ``statistic`` maps per-ring weights (n_rings,) to a number or to k numbers; ``molecule``
    (n_rings,) is each ring's molecule in ``range(n_molecules)``; ``point`` the statistic at
    weights 1 if already computed. See `bootstrap`.
    """
    molecule = np.asarray(molecule, dtype=np.int64)
    if point is None:
        point = statistic(np.ones(len(molecule)))
    point = np.atleast_1d(np.asarray(point, dtype=np.float64))
    draws = np.array(
        [np.atleast_1d(statistic(w[molecule])) for w in resample_weights(n_molecules, n_resamples, seed)],
        dtype=np.float64,
    ).reshape(n_resamples, len(point))
    return point, draws


def percentile_intervals(point: np.ndarray, draws: np.ndarray, level: float = 0.95) -> list[Interval]:
    """Percentile intervals from `bootstrap_draws` output: ``point`` (k,), ``draws`` (n_resamples, k).

    Resamples where a statistic is not finite are left out of its percentiles and counted.
    """
    alpha = (1 - level) / 2
    out = []
    for k, value in enumerate(np.atleast_1d(point)):
        column = draws[:, k]
        ok = column[np.isfinite(column)]
        low, high = np.quantile(ok, [alpha, 1 - alpha]) if len(ok) else (np.nan, np.nan)
        out.append(
            Interval(float(value), float(low), float(high), level, len(column), int(len(column) - len(ok)))
        )
    return out


def bootstrap(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    molecule: np.ndarray,
    n_molecules: int,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval | list[Interval]:
    """Bootstrap over molecules: a seeded percentile interval of ``statistic``.

    Parameters
    ----------
    statistic : maps per-ring weights (n_rings,) to a number, or to an array of numbers (one
        interval each); with all weights 1 it is the point estimate. A molecule drawn k times
        gives each of its rings weight k.
    molecule : (n_rings,) index of each ring's molecule in ``range(n_molecules)``.
    n_molecules : molecules to resample from, including those without rings.
    n_resamples, seed, level : resamples drawn, the generator's seed, and the interval's coverage.

    Returns one `Interval` for a scalar statistic, else a list. The same ``seed`` draws the same
    molecules, so statistics bootstrapped with one seed are resampled jointly.
    """
    measured = statistic(np.ones(len(molecule)))
    point, draws = bootstrap_draws(statistic, molecule, n_molecules, n_resamples, seed, measured)
    intervals = percentile_intervals(point, draws, level)
    return intervals[0] if np.ndim(measured) == 0 else intervals


def matched_difference(
    values: np.ndarray,
    in_a: np.ndarray,
    in_b: np.ndarray,
    strata: Sequence,
    weights: np.ndarray | None = None,
) -> float:
    """Mean of ``values`` over group a minus group b, compared only within matching strata.

    ``values`` (n_rings,), e.g. ring energy per ring atom (kcal/mol); ``in_a``, ``in_b``
    (n_rings,) bool; ``strata`` (n_rings,) labels such as `qmlx.chem.rings.Ring.composition` or
    `qmlx.chem.rings.per_atom_composition`, or their `group_codes`; ``weights`` (n_rings,)
    bootstrap multiplicities. Each stratum that holds both groups contributes ``mean_a - mean_b`` with
    weight ``n_a n_b / (n_a + n_b)``; ``nan`` if no stratum holds both.
    """
    values = np.asarray(values, dtype=np.float64)
    w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
    codes = group_codes(strata)
    k = int(codes.max()) + 1 if len(codes) else 0
    a = np.asarray(in_a, dtype=bool)
    b = np.asarray(in_b, dtype=bool)
    n_a = np.bincount(codes[a], weights=w[a], minlength=k)
    n_b = np.bincount(codes[b], weights=w[b], minlength=k)
    s_a = np.bincount(codes[a], weights=(w * values)[a], minlength=k)
    s_b = np.bincount(codes[b], weights=(w * values)[b], minlength=k)
    both = (n_a > 0) & (n_b > 0)
    if not both.any():
        return float("nan")
    h = n_a[both] * n_b[both] / (n_a[both] + n_b[both])
    diff = s_a[both] / n_a[both] - s_b[both] / n_b[both]
    return float(np.sum(h * diff) / np.sum(h))


def composition_scores(
    features: np.ndarray, aromatic: np.ndarray, molecule: np.ndarray, n_splits: int = 5, seed: int = 0
) -> np.ndarray:
    """(n_rings,) out-of-fold logistic-regression scores of "aromatic" from composition alone.

    ``features`` (n_rings, k) from `qmlx.chem.rings.composition_features`; the folds split
    molecules (all rings of a molecule in one fold), so no ring is scored by a model fitted on its
    own molecule. Higher means more likely aromatic. A fold whose training part holds one class
    scores its rings with that class's training frequency.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    features = np.asarray(features, dtype=np.float64)
    aromatic = np.asarray(aromatic, dtype=bool)
    scores = np.zeros(len(aromatic))
    n_splits = min(n_splits, len(np.unique(molecule)))
    if n_splits < 2:
        return scores
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.unique(molecule))  # GroupKFold is deterministic: shuffle group labels
    relabel = dict(zip(np.unique(molecule), shuffled))
    groups = np.array([relabel[m] for m in molecule])
    for train, test in GroupKFold(n_splits=n_splits).split(features, aromatic, groups):
        y = aromatic[train]
        if y.all() or not y.any():
            scores[test] = float(y.mean())
            continue
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(features[train], y)
        scores[test] = clf.decision_function(features[test])
    return scores


def composition_residual(
    energy: np.ndarray, features: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(n_rings,) ring energy minus its least-squares fit on composition (with an intercept).

    ``energy`` (n_rings,) kcal/mol, ``features`` (n_rings, k) from
    `qmlx.chem.rings.composition_features`, ``weights`` (n_rings,) multiplicities of a weighted
    fit (rings of weight 0 get residuals too).
    The fit does not see which rings are aromatic.
    """
    energy = np.asarray(energy, dtype=np.float64)
    X = np.column_stack([np.asarray(features, dtype=np.float64), np.ones(len(energy))])
    w = np.ones(len(energy)) if weights is None else np.asarray(weights, dtype=np.float64)
    s = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * s[:, None], energy * s, rcond=None)
    return energy - X @ coef
