"""Novelty: a one-class model of a trained model's domain, atom by atom.

Every atom is described by its environment (`qmlx.represent.environments`: Gaussian-smeared
distances to its neighbours per element, within 3.5 Å, width 0.05 Å). For each element the model keeps up to
``max_centres`` environments of training atoms (the centres ``u_j``) and scores a new atom by a
soft minimum of its squared distances to them (Kauffmann, Müller and Montavon, Pattern Recognit.
101, 107198, 2020, the neuralized form of a kernel density):

    o(x) = -(1/gamma) log( (1/M) sum_j exp(-gamma ||x - u_j||^2) ),

with ``1/gamma`` the median squared distance of held-back training atoms to their nearest centre.
Large ``o`` means unfamiliar; as ``gamma`` grows, ``o`` tends to the squared distance to the
nearest centre.

Calibration, on molecules the model never trained on (its validation molecules):

- **atom novelty** = ``o(x) / q_e``, with ``q_e`` the 99th percentile of ``o`` over the
  calibration atoms of the same element (over the training atoms left out of the centres, for an
  element no calibration molecule has): 1 is as unusual as the 1 % most unusual calibration
  atoms of that element; an atom in a familiar environment is near 0.1 to 0.3;
- **molecule novelty** = the largest atom novelty of the molecule, and its **p-value** =
  the fraction of calibration molecules whose molecule novelty is at least as large (with
  ``(1 + count) / (1 + n)``, so never 0). A molecule is outside the domain when its p-value is at
  most ``level`` (default 0.01: about 1 % of molecules like the training data are flagged); with
  fewer than 99 calibration molecules, when it is more novel than all of them.

The model is stored in every model file as plain arrays (`to_state` / `from_state`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from qmlx.data.molecules import Molecules
from qmlx.represent.environments import EnvironmentDescriptor

#: most centres kept per element (1,000: AUROC 0.967 in the measurement of the descriptor's width)
MAX_CENTRES = 2000
#: atom novelty is the score over this quantile of the calibration atoms' scores
ATOM_QUANTILE = 0.99
#: molecules whose novelty p-value is below this are outside the domain
DEFAULT_LEVEL = 0.01
#: most training molecules whose atoms the centres are drawn from (enough for 2,000 per element)
MAX_TRAIN_MOLECULES = 5000
#: share of the training molecules held back for calibration when a model has no validation set
CALIBRATION_SHARE = 0.1


@dataclass
class NoveltyResult:
    """Novelty of a set of molecules.

    atom_score : (n_atoms,) the one-class score ``o(x)`` (squared descriptor distance, unitless).
    atom_novelty : (n_atoms,) ``o(x) / q_e`` (see the module docstring); inf for an element the
        model never saw.
    novelty : (n_mol,) the largest atom novelty of each molecule.
    p_value : (n_mol,) the fraction of calibration molecules at least as novel.
    """

    atom_score: np.ndarray
    atom_novelty: np.ndarray
    novelty: np.ndarray
    p_value: np.ndarray


@dataclass
class NoveltyModel:
    """The one-class model of a training domain (see the module docstring).

    descriptor : the atom-environment settings.
    centres : per central element, (M_e, n_features) float32 training environments.
    gamma : per central element, the inverse soft-min temperature, 1 / (descriptor units)^2.
    scale : per central element, ``q_e``, the 99th percentile of the calibration atoms' scores.
    calibration : sorted (n_cal,) molecule novelties of the calibration molecules.
    level : the p-value below which a molecule is outside the domain.
    """

    descriptor: EnvironmentDescriptor
    centres: dict[int, np.ndarray]
    gamma: dict[int, float]
    scale: dict[int, float]
    calibration: np.ndarray
    level: float = DEFAULT_LEVEL

    # -- scoring -------------------------------------------------------------------------------
    def atom_scores(self, mols: Molecules, X: np.ndarray | None = None) -> np.ndarray:
        """(n_atoms,) one-class scores ``o(x)``; inf for an element the model never saw. ``X``:
        the descriptors, if already computed."""
        X = self.descriptor.transform(mols) if X is None else X
        out = np.full(len(mols.Z), np.inf)
        for z, U in self.centres.items():
            rows = np.flatnonzero(mols.Z == z)
            if len(rows):
                out[rows] = soft_min(X[rows], U, self.gamma[z])[0]
        return out

    def evaluate(self, mols: Molecules) -> NoveltyResult:
        """Atom and molecule novelty of ``mols`` (positions in Å) with p-values."""
        score = self.atom_scores(mols)
        scale = np.full(len(mols.Z), np.inf)
        for z, q in self.scale.items():
            scale[mols.Z == z] = q
        atom = np.where(np.isfinite(scale), score / scale, np.inf)
        novelty = np.full(len(mols), -np.inf)
        np.maximum.at(novelty, mols.mol_index, atom)
        return NoveltyResult(score, atom, novelty, self.p_values(novelty))

    def p_values(self, novelty: np.ndarray) -> np.ndarray:
        """(n,) ``(1 + #{calibration novelty >= novelty}) / (1 + n_cal)``."""
        cal = self.calibration
        above = len(cal) - np.searchsorted(cal, novelty, side="left")
        return (1.0 + above) / (1.0 + len(cal))

    def outside(self, p_value: np.ndarray) -> np.ndarray:
        """(n,) True where a p-value puts a molecule outside the domain: at most `level`, or, for a
        calibration set too small to reach it (fewer than ``1 / level - 1`` molecules), more novel
        than every calibration molecule."""
        return p_value <= max(self.level, 1.0 / (1.0 + len(self.calibration)))

    def notes(self, mols: Molecules, result: NoveltyResult, top: int = 3) -> list[list[str]]:
        """Per molecule: a note naming its most unfamiliar atoms when it lies outside the domain
        (`outside`), else nothing. Atoms are named element + index in the molecule (``C3``)."""
        out: list[list[str]] = [[] for _ in range(len(mols))]
        for m in np.flatnonzero(self.outside(result.p_value)):
            lo, hi = mols.offsets[m], mols.offsets[m + 1]
            atom = result.atom_novelty[lo:hi]
            worst = [int(i) for i in np.argsort(-atom, kind="stable")[:top] if atom[i] > 1.0] or [
                int(np.argmax(atom))
            ]
            names = ", ".join(f"{chemical_symbols[int(mols.Z[lo + i])]}{i}" for i in worst)
            out[m].append(
                f"novelty {result.novelty[m]:.2f} (p = {result.p_value[m]:.3g}): {names} unlike the training "
                "environments"
            )
        return out

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        train: Molecules,
        calibration: Molecules,
        max_centres: int = MAX_CENTRES,
        seed: int = 0,
        level: float = DEFAULT_LEVEL,
        descriptor: EnvironmentDescriptor | None = None,
    ) -> NoveltyModel:
        """Centres from the atoms of ``train`` (the model's training molecules; at most
        `MAX_TRAIN_MOLECULES` of them, drawn with ``seed``), calibration on ``calibration``
        (molecules the one-class model never saw)."""
        rng = np.random.default_rng(seed)
        descriptor = descriptor or EnvironmentDescriptor(tuple(int(z) for z in np.unique(train.Z)))
        if len(train) > MAX_TRAIN_MOLECULES:
            train = train.subset(np.sort(rng.choice(len(train), MAX_TRAIN_MOLECULES, replace=False)))
        X = descriptor.transform(train)
        centres, gamma, held_atoms = {}, {}, {}
        for z in np.unique(train.Z):
            rows = np.flatnonzero(train.Z == z)
            rng.shuffle(rows)
            U = X[rows[:max_centres]]
            held = rows[max_centres : max_centres + 2000]
            if len(held) < 20:  # few atoms: hold back half of the centres instead
                half = max(1, len(U) // 2)
                U, held = X[rows[:half]], rows[half:]
            d2 = sq_distances(X[held], U).min(1) if len(held) else np.ones(1)
            centres[int(z)] = U
            gamma[int(z)] = 1.0 / max(float(np.median(d2)), 1e-6)
            held_atoms[int(z)] = X[held]
        model = cls(descriptor, centres, gamma, {}, np.zeros(0), level)
        score = model.atom_scores(calibration)
        for z in centres:
            s = score[calibration.Z == z]
            if not len(s) and len(held_atoms[z]):  # no calibration atom of this element: the training
                s = soft_min(held_atoms[z], centres[z], gamma[z])[0]  # atoms left out of the centres
            model.scale[z] = float(np.quantile(s, ATOM_QUANTILE)) if len(s) else float(np.inf)
            model.scale[z] = max(model.scale[z], 1e-9)
        model.calibration = np.sort(model.evaluate(calibration).novelty)
        return model

    # -- storage -------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain data: ``settings`` (JSON types) and ``arrays`` (numpy), for a model file."""
        elements = sorted(self.centres)
        return {
            "settings": {
                "descriptor": self.descriptor.to_dict(),
                "elements": elements,
                "gamma": [self.gamma[z] for z in elements],
                "scale": [self.scale[z] for z in elements],
                "level": self.level,
                "version": 1,
            },
            "arrays": {
                # float16 halves the file; its rounding (3e-4 relative) is far below the distances
                "centres": np.concatenate([self.centres[z] for z in elements]).astype(np.float16),
                "centre_element": np.concatenate(
                    [np.full(len(self.centres[z]), z, dtype=np.int64) for z in elements]
                ),
                "calibration": self.calibration.astype(np.float64),
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> NoveltyModel:
        """The model `to_state` wrote."""
        s, a = state["settings"], {k: np.asarray(v) for k, v in state["arrays"].items()}
        elements = [int(z) for z in s["elements"]]
        centres = {z: a["centres"][a["centre_element"] == z].astype(np.float32) for z in elements}
        return cls(
            EnvironmentDescriptor.from_dict(s["descriptor"]),
            centres,
            dict(zip(elements, map(float, s["gamma"]))),
            dict(zip(elements, map(float, s["scale"]))),
            np.sort(a["calibration"].astype(np.float64)),
            float(s["level"]),
        )


def fit_domain_model(
    mols: Molecules, train: np.ndarray, calibration: np.ndarray | None = None, seed: int = 0
) -> NoveltyModel:
    """The novelty model of a model trained on ``mols[train]``, calibrated on ``mols[calibration]``
    (its validation molecules). Without them (kernel models, the Coulomb-matrix network),
    `CALIBRATION_SHARE` of the training molecules, drawn with ``seed``, are kept out of the centres
    and calibrate instead: the one-class model never saw them, though the energy model did."""
    train = np.asarray(train)
    if calibration is None or len(calibration) == 0:
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(train)
        n_cal = max(1, int(round(CALIBRATION_SHARE * len(train))))
        calibration, train = np.sort(shuffled[:n_cal]), np.sort(shuffled[n_cal:])
    return NoveltyModel.fit(mols.subset(train), mols.subset(np.asarray(calibration)), seed=seed)


def sq_distances(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    """(n, M) float32 squared Euclidean distances between the rows of ``X (n, d)`` and ``U (M, d)``."""
    X, U = np.asarray(X, dtype=np.float32), np.asarray(U, dtype=np.float32)
    d2 = X @ U.T
    d2 *= -2.0
    d2 += (X * X).sum(1)[:, None]
    d2 += (U * U).sum(1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def soft_min(X: np.ndarray, U: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(o (n,), p (n, M))``: the soft minimum ``-(1/gamma) log mean_j exp(-gamma d2_j)`` of the
    squared distances of each row of ``X`` to the centres ``U``, and the soft-min weights ``p``
    (each row sums to 1). Computed in float32, shifted by each row's nearest centre."""
    a = sq_distances(X, U)
    a *= -np.float32(gamma)
    top = a.max(1, keepdims=True)
    a -= top
    np.exp(a, out=a)
    total = a.sum(1, keepdims=True, dtype=np.float64)
    o = -(top[:, 0] + np.log(total[:, 0]) - np.log(U.shape[0])) / gamma
    return o.astype(np.float64), a / total.astype(np.float32)


def explain_novelty(model: NoveltyModel, mols: Molecules) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each atom's share of its molecule's novelty, conserved.

    The molecule novelty is its most novel atom's ``o(x) / q`` (see the module docstring). Its
    one-class score splits exactly as

        o(x) = sum_k R_k + remainder,   R_k = sum_j p_j (x_k - u_jk)^2,
        remainder = (1/gamma) sum_j p_j log(M p_j) >= 0,

    with ``p_j`` the soft-min weights (Kauffmann et al. 2020: the squared distances pooled by the
    soft minimum, the remainder vanishing as the soft minimum sharpens). The descriptor entries
    then go to atoms: where the atom has more neighbour density than the centre (``x_k > u_jk``)
    the term goes to the neighbours that make it, in proportion to their share of ``x_k``; where
    it has less (a neighbour missing from where training atoms had one), to the atom itself. A
    stretched bond therefore points at both of its atoms: the missing neighbour at the old
    distance blames the central atom, the neighbour at the new distance takes the rest.

    Returns ``(relevance (n_atoms,), novelty (n_mol,), remainder (n_mol,))`` in novelty units,
    with ``relevance`` summed per molecule plus ``remainder`` equal to ``novelty`` (computed here in
    float64; it agrees with `NoveltyModel.evaluate`, which scores in float32, to about 1e-7). A molecule with
    an element the model never saw has infinite novelty and NaN relevances.
    """
    result = model.evaluate(mols)
    relevance = np.zeros(len(mols.Z))
    remainder = np.zeros(len(mols))
    novelty = result.novelty.copy()  # recomputed in float64 below, where the relevances are
    for m in range(len(mols)):
        lo, hi = mols.offsets[m], mols.offsets[m + 1]
        a = int(np.argmax(result.atom_novelty[lo:hi]))
        z = int(mols.Z[lo + a])
        if z not in model.centres or not np.isfinite(result.novelty[m]):
            relevance[lo:hi], remainder[m] = np.nan, np.nan
            continue
        phi, x = model.descriptor.contributions(mols, m)
        U, gamma, q = model.centres[z].astype(np.float64), model.gamma[z], model.scale[z]
        diff = x[a] - U  # (M, n_features), float64 throughout
        d2 = (diff**2).sum(1)
        w = np.exp(-gamma * (d2 - d2.min()))
        p = w / w.sum()
        o = d2.min() - np.log(w.sum() / len(U)) / gamma
        terms = p[:, None] * diff**2
        extra = np.where(diff > 0, terms, 0.0).sum(0)  # more density than the centre: the neighbours
        missing = terms.sum(0) - extra  # less: the atom itself
        share = np.divide(phi[a], x[a], out=np.zeros_like(phi[a]), where=x[a] > 0)  # (n, n_features)
        atoms = share @ extra
        atoms[a] += missing.sum()
        relevance[lo:hi] = atoms / q
        remainder[m] = (o - terms.sum()) / q
        novelty[m] = o / q
    return relevance, novelty, remainder
