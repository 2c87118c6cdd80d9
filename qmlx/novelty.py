"""Novelty: a one-class model of a trained model's domain, atom by atom.

Every atom is described by its environment (`qmlx.represent.environments`: Gaussian-smeared
distances to its neighbours per element, within 3.5 Å, width 0.05 Å, and the angles between its
bonded neighbours). For each element the model keeps ``n_centres`` centres ``u_j`` summarising the
environments of its training atoms, and scores a new atom by a soft minimum of its squared
distances to them (Kauffmann, Müller and Montavon, Pattern Recognit. 101, 107198, 2020, the
neuralized form of a kernel density):

    o(x) = -(1/gamma) log( (1/M) sum_j exp(-gamma ||x - u_j||^2) ),

with ``1/gamma`` the median squared distance of held-back training atoms to their nearest centre.
Large ``o`` means unfamiliar; as ``gamma`` grows, ``o`` tends to the squared distance to the
nearest centre.

The centres of an element lie in the span of the ``n_components`` principal directions of its
training environments (a mean ``mu`` and orthonormal rows ``P``): they are the k-means centroids
of the training environments projected there (scikit-learn's ``PCA`` and ``KMeans``). A centroid
stands for many training atoms, so it lies closer to a typical new one than any single training
atom would, and the distances of familiar atoms spread less. Because the centres lie in that
subspace, every distance splits exactly as

    ||x - u_j||^2 = ||x - mu||^2 - ||y||^2 + ||y - c_j||^2,   y = P (x - mu),  u_j = mu + P^T c_j,

the part of ``x`` outside the span of the training environments plus the distance within it, so
scoring needs the projection of ``x`` and distances in ``n_components`` dimensions only.

Calibration, on molecules the model never trained on (its validation molecules):

- **atom novelty** = ``o(x) / q_e``, with ``q_e`` the 99th percentile of ``o`` over the
  calibration atoms of the same element (over the held-back training atoms, for an element no
  calibration molecule has): 1 is as unusual as the 1 % most unusual calibration atoms of that
  element; an atom in a familiar environment is near 0.1 to 0.3;
- **molecule novelty** = the largest atom novelty of the molecule, and its **p-value** =
  the fraction of calibration molecules whose molecule novelty is at least as large (with
  ``(1 + count) / (1 + n)``, so never 0). A molecule is outside the domain when its p-value is at
  most ``level`` (default 0.01: about 1 % of molecules like the training data are flagged); with
  fewer than 99 calibration molecules, when it is more novel than all of them.

The model is stored in every model file as plain arrays (`to_state` / `from_state`). Files written
before the centres were summarised this way (state version 1) hold up to 2,000 training
environments per element as the centres; they load and score as they were fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from qmlx.data.molecules import Molecules
from qmlx.represent.environments import EnvironmentDescriptor, environment_blocks

#: centres per element, k-means centroids of the training environments. Measured on the
#: protocols of experiments/domain.py and domain_holdout.py: with 128 or 192, QM9 nitriles held
#: out of training still rank as novel (AUROC 0.99) but are no longer flagged (0.9 % and 0.3 %
#: against 100 %); 512 separates displaced QM7 atoms a little better (AUROC 0.986 against 0.981,
#: centres in all descriptor dimensions) at twice the cost of the scores
N_CENTRES = 256
#: principal directions per element that the centres span
N_COMPONENTS = 32
#: atom novelty is the score over this quantile of the calibration atoms' scores
ATOM_QUANTILE = 0.99
#: molecules whose novelty p-value is below this are outside the domain
DEFAULT_LEVEL = 0.01
#: most training molecules whose atoms the centres are drawn from
MAX_TRAIN_MOLECULES = 5000
#: most training atoms per element that the principal directions and centroids are fitted on
MAX_POOL = 10_000
#: most training atoms per element held back to set ``gamma``
MAX_HELD = 2000
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
class ElementDomain:
    """The one-class model of one central element's environments (see the module docstring).

    mean : (n_features,) ``mu``, float32.
    basis : (k, n_features) ``P``, orthonormal rows, float32.
    coordinates : (M, k) the centres ``c_j`` in the basis, float32.
    gamma : the inverse soft-min temperature, 1 / (descriptor units)^2.
    scale : ``q_e``, the 99th percentile of the calibration atoms' scores (set by calibration).
    """

    mean: np.ndarray
    basis: np.ndarray
    coordinates: np.ndarray
    gamma: float
    scale: float = float("nan")
    _operands: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.basis = np.asarray(self.basis, dtype=np.float32)  # (k, n_features)
        self.coordinates = np.asarray(self.coordinates, dtype=np.float32)  # (M, k)
        c = self.coordinates.astype(np.float64)
        # X @ project gives X P^T and X . mu; [y, 1, -gamma |y|^2] @ exponents gives -gamma |y - c_j|^2
        exponents = np.vstack([2.0 * self.gamma * c.T, -self.gamma * (c * c).sum(1), np.ones(len(c))])
        self._operands = (
            np.hstack([self.basis.T, self.mean[:, None]]),
            (self.basis.astype(np.float64) @ self.mean).astype(np.float32),
            float(self.mean.astype(np.float64) @ self.mean),
            exponents.astype(np.float32),
        )

    @property
    def centres(self) -> np.ndarray:
        """(M, n_features) float64 centres ``u_j = mu + P^T c_j``."""
        return self.mean.astype(np.float64) + self.coordinates.astype(np.float64) @ self.basis.astype(
            np.float64
        )

    def scores(self, X: np.ndarray) -> np.ndarray:
        """(n,) float64 one-class scores ``o(x)`` of the rows of ``X (n, n_features)``: the part of
        ``x`` outside the span plus the soft minimum of the distances within it (the split of the
        module docstring), in float32 (about 1e-5 absolute rounding)."""
        project, mean_y, mean_sq, exponents = self._operands
        X = np.asarray(X, dtype=np.float32)
        k = len(self.basis)
        G = X @ project
        rows = np.empty((len(X), k + 2), dtype=np.float32)
        y = np.subtract(G[:, :k], mean_y, out=rows[:, :k])
        y_sq = np.einsum("ij,ij->i", y, y)
        rows[:, k], rows[:, k + 1] = 1.0, -self.gamma * y_sq
        outside = np.einsum("ij,ij->i", X, X).astype(np.float64) - 2.0 * G[:, k] + mean_sq - y_sq
        A = rows @ exponents  # -gamma |y - c_j|^2
        np.exp(A, out=A)
        total = (A @ np.ones(A.shape[1], dtype=np.float32)).astype(np.float64)
        inside = np.empty(len(X))
        ok = total > 1e-20  # else every centre is far: exactly, shifted by the nearest, in float64
        inside[ok] = -np.log(total[ok] / len(self.coordinates)) / self.gamma
        if not ok.all():
            inside[~ok] = soft_min(y[~ok], self.coordinates, self.gamma)
        return np.maximum(outside, 0.0) + inside

    @classmethod
    def fit(cls, X: np.ndarray, n_centres: int, n_components: int, seed: int) -> ElementDomain:
        """Principal directions of the environments ``X (n, n_features)`` and the k-means centroids
        of their projections (all of them when there are at most ``n_centres``); ``gamma`` is set
        by the caller."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        X = np.asarray(X, dtype=np.float64)
        k = min(n_components, len(X) - 1, X.shape[1])
        if k < 1:  # one environment: it is the centre
            return cls(X.mean(0), np.zeros((0, X.shape[1])), np.zeros((1, 0)), 1.0)
        pca = PCA(n_components=k, random_state=seed).fit(X)
        coordinates = pca.transform(X)
        if len(X) > n_centres:
            coordinates = KMeans(n_centres, n_init=1, random_state=seed).fit(coordinates).cluster_centers_
        return cls(pca.mean_, pca.components_, coordinates, 1.0)


@dataclass
class NoveltyModel:
    """The one-class model of a training domain (see the module docstring).

    descriptor : the atom-environment settings.
    elements : per central element, its `ElementDomain`.
    calibration : sorted (n_cal,) molecule novelties of the calibration molecules.
    level : the p-value below which a molecule is outside the domain.
    """

    descriptor: EnvironmentDescriptor
    elements: dict[int, ElementDomain]
    calibration: np.ndarray
    level: float = DEFAULT_LEVEL

    # -- scoring -------------------------------------------------------------------------------
    def atom_scores(self, mols: Molecules) -> np.ndarray:
        """(n_atoms,) one-class scores ``o(x)`` (positions in Å); inf for an element the model
        never saw. Computed block by block (`environment_blocks`)."""
        out = np.full(len(mols.Z), np.inf)
        for atoms, X in environment_blocks(mols, self.descriptor):
            Z = mols.Z[atoms]  # ordered by element
            for z, domain in self.elements.items():
                lo, hi = np.searchsorted(Z, [z, z + 1])
                if hi > lo:
                    out[atoms[lo:hi]] = domain.scores(X[lo:hi])
        return out

    def evaluate(self, mols: Molecules) -> NoveltyResult:
        """Atom and molecule novelty of ``mols`` (positions in Å) with p-values."""
        score = self.atom_scores(mols)
        scale = np.full(int(max(mols.Z.max(initial=0), max(self.elements, default=0))) + 1, np.inf)
        for z, domain in self.elements.items():
            scale[z] = domain.scale
        scale = scale[mols.Z]
        atom = np.full(len(score), np.inf)
        np.divide(score, scale, out=atom, where=np.isfinite(scale))
        novelty = np.full(len(mols), -np.inf)
        has_atoms = mols.n_atoms > 0
        if len(atom):
            novelty[has_atoms] = np.maximum.reduceat(atom, mols.offsets[:-1][has_atoms])
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
        n_centres: int = N_CENTRES,
        n_components: int = N_COMPONENTS,
        seed: int = 0,
        level: float = DEFAULT_LEVEL,
        descriptor: EnvironmentDescriptor | None = None,
    ) -> NoveltyModel:
        """Centres from the atoms of ``train`` (the model's training molecules; at most
        `MAX_TRAIN_MOLECULES` of them, drawn with ``seed``), calibration on ``calibration``
        (molecules the one-class model never saw). Per element, up to `MAX_HELD` training atoms
        (a quarter, or half of an element with fewer than 80) are held back to set ``gamma``;
        the centres come from up to `MAX_POOL` others."""
        rng = np.random.default_rng(seed)
        descriptor = descriptor or EnvironmentDescriptor(tuple(int(z) for z in np.unique(train.Z)))
        if len(train) > MAX_TRAIN_MOLECULES:
            train = train.subset(np.sort(rng.choice(len(train), MAX_TRAIN_MOLECULES, replace=False)))
        X = descriptor.transform(train)
        elements, held_atoms = {}, {}
        for z in np.unique(train.Z):
            rows = np.flatnonzero(train.Z == z)
            rng.shuffle(rows)
            n_held = min(MAX_HELD, len(rows) // 4 if len(rows) >= 80 else len(rows) // 2)
            held = X[rows[:n_held]]
            domain = ElementDomain.fit(X[rows[n_held:][:MAX_POOL]], n_centres, n_components, seed)
            nearest = np.min(sq_distances(held, domain.centres), axis=1) if n_held else np.ones(1)
            domain = ElementDomain(
                domain.mean, domain.basis, domain.coordinates, 1.0 / max(float(np.median(nearest)), 1e-6)
            )
            elements[int(z)], held_atoms[int(z)] = domain, held
        model = cls(descriptor, elements, np.zeros(0), level)
        score = model.atom_scores(calibration)
        for z, domain in elements.items():
            s = score[calibration.Z == z]
            if not len(s) and len(held_atoms[z]):  # no calibration atom of this element: the training
                s = domain.scores(held_atoms[z])  # atoms held back
            domain.scale = max(float(np.quantile(s, ATOM_QUANTILE)) if len(s) else float(np.inf), 1e-9)
        model.calibration = np.sort(model.evaluate(calibration).novelty)
        return model

    # -- storage -------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain data: ``settings`` (JSON types) and ``arrays`` (numpy), for a model file."""
        elements = sorted(self.elements)
        domains = [self.elements[z] for z in elements]
        return {
            "settings": {
                "descriptor": self.descriptor.to_dict(),
                "elements": elements,
                "gamma": [d.gamma for d in domains],
                "scale": [d.scale for d in domains],
                "components": [len(d.basis) for d in domains],
                "centres": [len(d.coordinates) for d in domains],
                "level": self.level,
                "version": 2,
            },
            "arrays": {
                "mean": np.stack([d.mean for d in domains]),
                "basis": np.concatenate([d.basis for d in domains]),
                "coordinates": np.concatenate([d.coordinates.ravel() for d in domains]),
                "calibration": self.calibration.astype(np.float64),
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> NoveltyModel:
        """The model `to_state` wrote (or a version-1 state, whose centres are stored whole: they
        become the coordinates in the identity basis)."""
        s, a = state["settings"], {k: np.asarray(v) for k, v in state["arrays"].items()}
        elements = [int(z) for z in s["elements"]]
        descriptor = EnvironmentDescriptor.from_dict(s["descriptor"])
        domains = {}
        if s.get("version", 1) == 1:
            n = descriptor.n_features
            for z, gamma, scale in zip(elements, s["gamma"], s["scale"]):
                centres = a["centres"][a["centre_element"] == z].astype(np.float32)
                domains[z] = ElementDomain(np.zeros(n), np.eye(n), centres, float(gamma), float(scale))
        else:
            k_end = np.cumsum(s["components"])
            c_end = np.cumsum(np.asarray(s["components"]) * np.asarray(s["centres"]))
            for e, z in enumerate(elements):
                k, m = s["components"][e], s["centres"][e]
                basis = a["basis"][k_end[e] - k : k_end[e]]
                coordinates = a["coordinates"][c_end[e] - k * m : c_end[e]].reshape(m, k)
                domains[z] = ElementDomain(
                    a["mean"][e], basis, coordinates, float(s["gamma"][e]), float(s["scale"][e])
                )
        return cls(descriptor, domains, np.sort(a["calibration"].astype(np.float64)), float(s["level"]))


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


def sq_distances(X: np.ndarray, U: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(n, M) squared Euclidean distances between the rows of ``X (n, d)`` and ``U (M, d)``,
    computed in ``dtype``."""
    X, U = np.asarray(X, dtype=dtype), np.asarray(U, dtype=dtype)
    d2 = X @ U.T
    d2 *= -2.0
    d2 += (X * X).sum(1)[:, None]
    d2 += (U * U).sum(1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def soft_min(X: np.ndarray, U: np.ndarray, gamma: float) -> np.ndarray:
    """(n,) the soft minimum ``-(1/gamma) log mean_j exp(-gamma d2_j)`` of the squared distances
    of each row of ``X (n, d)`` to the centres ``U (M, d)``, in float64, shifted by each row's
    nearest centre."""
    d2 = sq_distances(X, U, np.float64)
    nearest = d2.min(1, keepdims=True)
    mean = np.exp(-gamma * (d2 - nearest)).mean(1)
    return nearest[:, 0] - np.log(mean) / gamma


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
    it has less (a neighbour missing from where training atoms had one), and where no neighbour
    makes the entry at all (a summarised centre can dip slightly below zero there), to the atom
    itself. A stretched bond therefore points at both of its atoms: the missing neighbour at the
    old distance blames the central atom, the neighbour at the new distance takes the rest.

    Returns ``(relevance (n_atoms,), novelty (n_mol,), remainder (n_mol,))`` in novelty units,
    with ``relevance`` summed per molecule plus ``remainder`` equal to ``novelty`` (computed here in
    float64 from the exact Gaussians; it agrees with `NoveltyModel.evaluate`, which scores in
    float32, to about 1e-5 relative). A molecule with an element the model never saw has infinite
    novelty and NaN relevances.
    """
    result = model.evaluate(mols)
    relevance = np.zeros(len(mols.Z))
    remainder = np.zeros(len(mols))
    novelty = result.novelty.copy()  # recomputed in float64 below, where the relevances are
    for m in range(len(mols)):
        lo, hi = mols.offsets[m], mols.offsets[m + 1]
        a = int(np.argmax(result.atom_novelty[lo:hi]))
        z = int(mols.Z[lo + a])
        if z not in model.elements or not np.isfinite(result.novelty[m]):
            relevance[lo:hi], remainder[m] = np.nan, np.nan
            continue
        phi, x = model.descriptor.contributions(mols, m)
        domain = model.elements[z]
        U, gamma, q = domain.centres, domain.gamma, domain.scale
        diff = x[a] - U  # (M, n_features), float64 throughout
        d2 = (diff**2).sum(1)
        w = np.exp(-gamma * (d2 - d2.min()))
        p = w / w.sum()
        o = d2.min() - np.log(w.sum() / len(U)) / gamma
        terms = p[:, None] * diff**2
        extra = np.where(diff > 0, terms, 0.0).sum(0)  # more density than the centre: the neighbours
        missing = terms.sum(0) - extra  # less: the atom itself
        covered = x[a] > 0  # entries some neighbour makes; a centre may dip below zero where none does
        share = np.divide(phi[a], x[a], out=np.zeros_like(phi[a]), where=covered)  # (n, n_features)
        atoms = share @ extra
        atoms[a] += missing.sum() + extra[~covered].sum()
        relevance[lo:hi] = atoms / q
        remainder[m] = (o - terms.sum()) / q
        novelty[m] = o / q
    return relevance, novelty, remainder
