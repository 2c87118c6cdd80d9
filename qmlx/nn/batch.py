"""Flat-atom batches with pair lists for the interaction networks.

A `Batch` holds the atoms of several molecules one after another, the molecule index of each
atom, and a *half* pair list (``i < j``, both atoms in the same molecule, ``d_ij < cutoff``).
Models use each half pair twice (messages j -> i and i -> j), so symmetric pair quantities such
as filters are computed once. `PairCache` builds the pair lists of a whole data set once,
vectorized with numpy, and slices batches out of it without any Python loop over molecules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qmlx.data.molecules import Molecules


@dataclass
class Batch:
    """Flat atoms of ``n_mol`` molecules.

    Attributes
    ----------
    Z : (n_atoms,) int64 nuclear charges.
    R : (n_atoms, 3) float32 positions in Å.
    mol_index : (n_atoms,) int64 molecule of each atom, 0..n_mol-1.
    idx_i, idx_j : (n_pairs,) int64 half pair list, ``idx_i < idx_j``.
    n_mol : number of molecules.
    energy : (n_mol,) float32 target in kcal/mol, or ``None``.
    """

    Z: torch.Tensor
    R: torch.Tensor
    mol_index: torch.Tensor
    idx_i: torch.Tensor
    idx_j: torch.Tensor
    n_mol: int
    energy: torch.Tensor | None = None

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_mol,) atom count of each molecule."""
        return torch.bincount(self.mol_index, minlength=self.n_mol)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device`` (no copy where it is there already)."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.Z), move(self.R), move(self.mol_index), move(self.idx_i), move(self.idx_j), self.n_mol,
            move(self.energy),
        )  # fmt: skip


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device.

    Asking for CUDA where there is none (a CPU build of PyTorch, no GPU, or no device N) raises
    `qmlx.errors.ConfigError` with one line that says so.
    """
    from qmlx.errors import ConfigError

    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"--device {spec}: qmlx runs on cpu or cuda devices")
    if not torch.cuda.is_available():
        build = "a CPU build of PyTorch" if torch.version.cuda is None else "no CUDA device is visible"
        raise ConfigError(f"--device {spec}: CUDA is not available here ({build}, torch {torch.__version__})")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def half_pairs(n_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` within each molecule, in flat atom indices, without Python loops.

    Returns ``(idx_i, idx_j, pair_counts)`` with ``pair_counts[m] = n_m (n_m - 1) / 2``.
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    sq = n_atoms * n_atoms
    total = int(sq.sum())
    mol = np.repeat(np.arange(len(n_atoms)), sq)
    k = np.arange(total) - np.repeat(np.cumsum(sq) - sq, sq)
    n = n_atoms[mol]
    i, j = k // n, k % n
    keep = i < j
    mol, i, j = mol[keep], i[keep], j[keep]
    counts = np.bincount(mol, minlength=len(n_atoms))
    return i + offsets[mol], j + offsets[mol], counts


class PairCache:
    """A data set's atoms and cutoff pair lists, built once; `batch()` slices molecules out.

    Parameters
    ----------
    mols : the molecules (positions in Å).
    cutoff : pairs with ``d_ij >= cutoff`` (Å) are dropped.
    target : target name to carry as ``Batch.energy`` (kcal/mol), or ``None``.
    dtype : floating type of the positions (float32 for training, float64 for checks).
    """

    def __init__(
        self,
        mols: Molecules,
        cutoff: float,
        target: str | None = "atomization_energy",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.n_atoms = mols.n_atoms.astype(np.int64)
        self.atom_offsets = np.concatenate([[0], np.cumsum(self.n_atoms)])
        self.Z = torch.as_tensor(mols.Z, dtype=torch.long)
        self.R = torch.as_tensor(mols.R, dtype=dtype)
        parts_i, parts_j = [], []
        chunk = 8192  # bounds the temporary memory of the all-pairs expansion on large sets
        for start in range(0, len(self.n_atoms), chunk):
            stop = min(start + chunk, len(self.n_atoms))
            i, j, _ = half_pairs(self.n_atoms[start:stop])
            i += self.atom_offsets[start]
            j += self.atom_offsets[start]
            keep = np.linalg.norm(mols.R[i] - mols.R[j], axis=1) < cutoff
            parts_i.append(i[keep])
            parts_j.append(j[keep])
        i, j = np.concatenate(parts_i), np.concatenate(parts_j)
        mol = np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)[i]
        self.pair_counts = np.bincount(mol, minlength=len(self.n_atoms)).astype(np.int64)
        self.pair_offsets = np.concatenate([[0], np.cumsum(self.pair_counts)])
        # pair atoms relative to their molecule's first atom
        self.local_i = torch.as_tensor(i - self.atom_offsets[mol])
        self.local_j = torch.as_tensor(j - self.atom_offsets[mol])
        self.energy = None
        if target is not None and target in mols.targets:
            self.energy = torch.as_tensor(mols.target(target, "kcal/mol"), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def device(self) -> torch.device:
        return self.R.device

    def to(self, device: torch.device | str) -> PairCache:
        """Move the cached atoms, pair lists and targets to ``device`` once; batches are then sliced
        there (only the small index arrays of each batch travel)."""
        self.Z, self.R = self.Z.to(device), self.R.to(device)
        self.local_i, self.local_j = self.local_i.to(device), self.local_j.to(device)
        if self.energy is not None:
            self.energy = self.energy.to(device)
        return self

    @staticmethod
    def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Concatenation of ``arange(s, s + c)`` for each start/count, vectorized."""
        total = int(counts.sum())
        new_starts = np.cumsum(counts) - counts
        return np.arange(total) + np.repeat(starts - new_starts, counts)

    def batch(self, idx: np.ndarray) -> Batch:
        """The molecules ``idx`` (in that order) as one `Batch`."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.n_atoms[idx]
        dev = self.device
        on = lambda a: torch.as_tensor(a).to(dev, non_blocking=True)  # noqa: E731
        atom_idx = on(self._ranges(self.atom_offsets[idx], counts))
        pcounts = self.pair_counts[idx]
        pair_idx = on(self._ranges(self.pair_offsets[idx], pcounts))
        new_off = on(np.repeat(np.cumsum(counts) - counts, pcounts))
        return Batch(
            Z=self.Z[atom_idx],
            R=self.R[atom_idx],
            mol_index=on(np.repeat(np.arange(len(idx)), counts)),
            idx_i=self.local_i[pair_idx] + new_off,
            idx_j=self.local_j[pair_idx] + new_off,
            n_mol=len(idx),
            energy=None if self.energy is None else self.energy[on(idx)],
        )


def make_batch(mols: Molecules, cutoff: float) -> Batch:
    """All of ``mols`` as one `Batch` (no target)."""
    return PairCache(mols, cutoff, target=None).batch(np.arange(len(mols)))
