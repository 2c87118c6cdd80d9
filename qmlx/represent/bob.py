"""Bag of Bonds (Hansen et al., J. Phys. Chem. Lett. 6, 2326, 2015) as a scikit-learn transformer.

Bags, from the Coulomb matrix in atomic units (distances in Bohr):

- one bag per element ``Z``, holding ``0.5 Z^2.4`` for each atom of that element;
- one bag per element pair ``(Z_a <= Z_b)``, holding ``Z_a Z_b / r_ij`` for each such atom pair.

Each bag is sorted in descending order and zero-padded to the largest count seen in the
training set; the bags are concatenated in a fixed order (element bags by Z, then pair bags by
``(Z_a, Z_b)``). The layout (``bags_``) is learned by `fit`.

Policy for new molecules: an element never seen in training, or more atoms/pairs of a kind than
the bag holds, raises `RepresentationError` by default (``on_overflow="error"``). With
``on_overflow="truncate"`` the largest values that fit are kept and the smallest (the most
distant pairs) are dropped, and unseen elements are ignored; this is lossy and meant only for
exploratory predictions.
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols
from sklearn.base import BaseEstimator, TransformerMixin

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.represent._base import BLOCK_MOLECULES, FittedState, RepresentationError, coulomb_matrices, where


def _bag_name(key: tuple[int, ...]) -> str:
    return "-".join(chemical_symbols[z] for z in key)


def _bag_counts(mols: Molecules, keys: list[tuple[int, ...]]) -> np.ndarray:
    """(n_mol, n_bags) entries of each molecule in each bag: atoms of element ``Z`` for ``(Z,)``,
    atom pairs of elements ``(Z_a, Z_b)`` for a pair key."""
    elements = np.unique(mols.Z)
    per = np.zeros((len(mols), len(elements)), dtype=np.int64)
    np.add.at(per, (mols.mol_index, np.searchsorted(elements, mols.Z)), 1)

    def count(z: int) -> np.ndarray:
        k = np.searchsorted(elements, z)
        return per[:, k] if k < len(elements) and elements[k] == z else np.zeros(len(mols), dtype=np.int64)

    out = np.zeros((len(mols), len(keys)), dtype=np.int64)
    for b, key in enumerate(keys):
        if len(key) == 1:
            out[:, b] = count(key[0])
        elif key[0] == key[1]:
            c = count(key[0])
            out[:, b] = c * (c - 1) // 2
        else:
            out[:, b] = count(key[0]) * count(key[1])
    return out


class BagOfBonds(FittedState, TransformerMixin, BaseEstimator):
    """Bag of Bonds vectors; X is a `Molecules` object (or a sequence of ``ase.Atoms``).

    Parameters
    ----------
    on_overflow : ``"error"`` (default) or ``"truncate"``; see the module docstring.

    Fitted attributes
    -----------------
    bags_ : list of ``(key, size)``, with ``key = (Z,)`` for element bags and ``(Z_a, Z_b)`` for
        pair bags, in output order.
    n_features_out_ : total length, the sum of the bag sizes.

    ``transform`` returns an (n_molecules, n_features_out_) float64 array in atomic units.
    """

    def __init__(self, on_overflow: str = "error"):
        self.on_overflow = on_overflow

    def fit(self, X, y=None):
        """Learn the bag layout (elements, element pairs and their largest counts) from ``X``."""
        mols = as_molecules(X)
        elements = np.unique(mols.Z)
        counts = np.zeros((len(mols), len(elements)), dtype=np.int64)
        col = np.searchsorted(elements, mols.Z)
        np.add.at(counts, (mols.mol_index, col), 1)
        bags: list[tuple[tuple[int, ...], int]] = []
        for a, za in enumerate(elements):
            bags.append(((int(za),), int(counts[:, a].max())))
        for a, za in enumerate(elements):
            for b in range(a, len(elements)):
                if a == b:
                    size = (counts[:, a] * (counts[:, a] - 1) // 2).max()
                else:
                    size = (counts[:, a] * counts[:, b]).max()
                if size > 0:
                    bags.append(((int(za), int(elements[b])), int(size)))
        self.bags_ = bags
        self.n_features_out_ = int(sum(size for _, size in bags))
        return self

    def fitted_state(self) -> dict[str, np.ndarray]:
        """``{"bags": (n_bags, 3)}``: rows ``(Z_a, Z_b, size)`` in output order, ``Z_b = 0`` for element bags."""
        rows = [(k[0], k[1] if len(k) == 2 else 0, size) for k, size in self.bags_]
        return {"bags": np.array(rows, dtype=np.int64).reshape(-1, 3)}

    def set_fitted_state(self, state: dict[str, np.ndarray]):
        rows = np.asarray(state["bags"])
        self.bags_ = [((int(a),) if b == 0 else (int(a), int(b)), int(s)) for a, b, s in rows]
        self.n_features_out_ = int(rows[:, 2].sum()) if len(rows) else 0
        return self

    def known_elements(self) -> list[int]:
        return sorted(k[0] for k, _ in self.bags_ if len(k) == 1)

    def check_fits(self, mols: Molecules) -> None:
        """Unseen elements and overfull bags raise `RepresentationError` (with ``on_overflow="error"``;
        ``"truncate"`` accepts any molecule)."""
        if self.on_overflow != "error":
            return
        unseen = np.setdiff1d(np.unique(mols.Z), self.known_elements())
        if len(unseen):
            i = int(mols.mol_index[np.isin(mols.Z, unseen)][0])
            raise RepresentationError(
                f"{where(mols, i)}: contains {', '.join(chemical_symbols[z] for z in unseen)}, which the "
                "Bag of Bonds layout was not fitted on"
            )
        counts = _bag_counts(mols, [k for k, _ in self.bags_])
        sizes = np.array([size for _, size in self.bags_])
        over = counts > sizes
        if over.any():
            i, b = (int(v[0]) for v in np.nonzero(over))
            raise RepresentationError(
                f"{where(mols, i)}: {int(counts[i, b])} entries in bag {_bag_name(self.bags_[b][0])}, but "
                f"this model's Bag of Bonds holds at most {int(sizes[b])}"
            )

    def feature_atoms(self, mols: Molecules) -> np.ndarray:
        """(n_mol, n_features, 2): the atom (``[a, a]``) or atom pair (``[a, b]``) behind each bag
        entry, in the order `transform` sorts them; ``[-1, -1]`` for padding."""
        M = coulomb_matrices(mols)
        Z = mols.padded()[0]
        n_max = M.shape[-1]
        idx = np.arange(n_max)
        iu, ju = np.triu_indices(n_max, 1)
        z_lo, z_hi = np.minimum(Z[:, iu], Z[:, ju]), np.maximum(Z[:, iu], Z[:, ju])
        out = np.full((len(mols), self.n_features_out_, 2), -1, dtype=np.int64)
        start = 0
        rows = np.arange(len(mols))[:, None]
        for key, size in self.bags_:
            if len(key) == 1:
                member, values, first, second = Z == key[0], M[:, idx, idx], idx, idx
            else:
                member = (z_lo == key[0]) & (z_hi == key[1])
                values, first, second = M[:, iu, ju], iu, ju
            order = np.argsort(-np.where(member, values, 0.0), axis=1, kind="stable")
            width = min(size, order.shape[1])
            order = order[:, :width]
            ok = member[rows, order]
            out[:, start : start + width, 0] = np.where(ok, first[order], -1)
            out[:, start : start + width, 1] = np.where(ok, second[order], -1)
            start += size
        return out

    def feature_groups(self) -> np.ndarray:
        """(n_features,) the bag of each feature."""
        return np.repeat(np.arange(len(self.bags_)), [size for _, size in self.bags_])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names like ``C-H[3]``: bag and rank within the bag."""
        return np.array([f"{_bag_name(k)}[{i}]" for k, size in self.bags_ for i in range(size)], dtype=object)

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "bags_"):
            raise RepresentationError("BagOfBonds is not fitted yet; call fit first")
        if self.on_overflow not in ("error", "truncate"):
            raise ValueError(f"on_overflow must be 'error' or 'truncate', got {self.on_overflow!r}")
        mols = as_molecules(X)
        if self.on_overflow == "error":
            known = {k[0] for k, _ in self.bags_ if len(k) == 1}
            unseen = sorted(set(np.unique(mols.Z).tolist()) - known)
            if unseen:
                mol = int(mols.mol_index[np.isin(mols.Z, unseen)][0])
                raise RepresentationError(
                    f"{mols.name}: molecule {mol} contains {', '.join(chemical_symbols[z] for z in unseen)}, "
                    f"which the Bag of Bonds layout was not fitted on"
                )
        out = np.zeros((len(mols), self.n_features_out_))
        for lo in range(0, len(mols), BLOCK_MOLECULES):
            part = mols.subset(np.arange(lo, min(lo + BLOCK_MOLECULES, len(mols))))
            out[lo : lo + len(part)] = self._transform_block(part, lo)
        return out

    def _transform_block(self, mols, offset: int) -> np.ndarray:
        M = coulomb_matrices(mols)
        Z = mols.padded()[0]
        n_max = M.shape[-1]
        idx = np.arange(n_max)
        diag = M[:, idx, idx]
        iu, ju = np.triu_indices(n_max, 1)
        pair_val = M[:, iu, ju]
        z_lo = np.minimum(Z[:, iu], Z[:, ju])
        z_hi = np.maximum(Z[:, iu], Z[:, ju])
        out = np.zeros((len(mols), self.n_features_out_))
        start = 0
        for key, size in self.bags_:
            if len(key) == 1:
                member = Z == key[0]
                values = diag
            else:
                member = (z_lo == key[0]) & (z_hi == key[1])
                values = pair_val
            count = member.sum(axis=1)
            if self.on_overflow == "error" and (count > size).any():
                mol = offset + int(np.argmax(count > size))
                raise RepresentationError(
                    f"{mols.name}: molecule {mol} has {int(count.max())} entries in bag {_bag_name(key)}, "
                    f"but the Bag of Bonds layout holds at most {size} (fitted on smaller molecules)"
                )
            # all values are positive; non-members become 0 and sort behind the members
            bag = -np.sort(-np.where(member, values, 0.0), axis=1)
            width = min(size, bag.shape[1])
            out[:, start : start + width] = bag[:, :width]
            start += size
        return out
