"""Domain of applicability: what a model was trained on, and whether new molecules fall inside it.

A `Domain` is measured on the training molecules and stored in every saved model's metadata
(``metadata["domain"]``). `check_domain` compares new molecules against it:

- **hard errors** (`DomainError`, nothing is predicted): an element the model never saw; two atoms
  closer than `MIN_DISTANCE` (0.5 Å); a periodic cell (qmlx models are molecular); a stated
  charge or spin multiplicity that differs from the training data's.
- **soft flags** (the prediction is made, and marked): more atoms than any training molecule, or
  fewer; a shortest interatomic distance more than `DISTANCE_MARGIN` (0.01 Å) below the training
  minimum; a single atom; more bonded fragments than the training molecules have (isolated atoms
  included; the largest count held by at least 0.1 % of them); an atom whose nearest neighbour lies farther than in any training molecule (by more
  than `NEIGHBOUR_MARGIN`, 0.1 Å: a stretched or broken bond); every distance 1.6 to 2.3 times
  the training minimum (positions in Bohr read as Å?); an odd electron count with no stated spin
  multiplicity when every training molecule was closed-shell (a radical?). Predicting from
  Python warns once per call with `qmlx.errors.DomainWarning`. The learned check, novelty, is
  `qmlx.novelty`.

`DomainReport` carries, per molecule, ``in_domain`` (bool) and ``notes`` (list of strings), which
every output format of ``qmlx predict`` and ``qmlx explain`` prints. `screen` applies a model's
check molecule by molecule when the batch as a whole is refused, so that a refused molecule is
refused alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from qmlx.data.molecules import Molecules
from qmlx.errors import DomainError, DomainWarning

#: two atoms closer than this (Å) are an error: no molecule has them, and no model can answer
MIN_DISTANCE = 0.5
#: a shortest distance is flagged when it lies this far (Å) below the training minimum
DISTANCE_MARGIN = 0.01
#: atoms closer than this times the sum of their covalent radii are bonded (as `qmlx.chem.bonds`)
BOND_FACTOR = 1.2
#: an atom's nearest neighbour is flagged when it lies this far (Å) beyond the training maximum
NEIGHBOUR_MARGIN = 0.1
#: a shortest distance this many times the training minimum suggests positions in Bohr (1 Å = 1.89 Bohr)
BOHR_HINT = (1.6, 2.3)


def structure(mols: Molecules, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per molecule, from one pass over its distances: ``(shortest (n_mol,), farthest (n_mol,),
    fragments (n_mol,))``: the shortest interatomic distance in Å (``inf`` for one atom), the
    largest distance from an atom to its nearest neighbour (0 for one atom), and the number of
    bonded fragments (atoms closer than `BOND_FACTOR` times the sum of their covalent radii are
    bonded)."""
    from ase.data import covalent_radii
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    shortest, farthest = np.full(len(mols), np.inf), np.zeros(len(mols))
    rows, cols = [], []
    order = np.argsort(mols.n_atoms, kind="stable")  # similar sizes together: little padding
    for lo in range(0, len(mols), chunk):
        idx = order[lo : lo + chunk]
        sub = mols.subset(idx)
        Z, R, mask = sub.padded()
        d = np.linalg.norm(R[:, :, None, :] - R[:, None, :, :], axis=-1)
        pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(R.shape[1], dtype=bool)[None]
        nearest = np.where(pair, d, np.inf).min(2)
        shortest[idx] = nearest.min(1)
        farthest[idx] = np.where(mask & np.isfinite(nearest), nearest, 0.0).max(1)
        radius = covalent_radii[Z]
        b, i, j = np.nonzero(pair & (d < BOND_FACTOR * (radius[:, :, None] + radius[:, None, :])))
        start = mols.offsets[idx[b]]
        rows.append(start + i)
        cols.append(start + j)
    n = len(mols.Z)
    r, c = (np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in (rows, cols))
    _, label = connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)
    # distinct component labels per molecule (components never span two molecules)
    pairs = np.unique(np.stack([mols.mol_index, label], axis=1), axis=0)
    fragments = np.bincount(pairs[:, 0], minlength=len(mols))
    return shortest, farthest, fragments


def _common_max(values: np.ndarray, share: float = 0.001) -> int:
    """The largest value that at least ``share`` of the molecules (and at least one) have: a lone
    outlier (QM7 holds one molecule in four fragments among 7,165) does not set the limit."""
    counts = np.bincount(values)
    enough = np.flatnonzero(counts >= max(1.0, share * len(values)))
    return int(enough.max()) if len(enough) else int(values.max())


def electrons(mols: Molecules) -> np.ndarray:
    """(n_mol,) electron count of each molecule: the sum of nuclear charges minus its stated charge
    (0 where none is stated)."""
    total = np.bincount(mols.mol_index, weights=mols.Z, minlength=len(mols))
    charge = getattr(mols, "charge", None)
    if charge is not None:
        total = total - np.nan_to_num(np.asarray(charge, dtype=np.float64))
    return np.rint(total).astype(np.int64)


def _stated(values: np.ndarray | None) -> np.ndarray | None:
    """The distinct stated (non-NaN) values of a per-molecule array, or ``None``."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return np.unique(values) if len(values) else None


@dataclass
class Domain:
    """What a model saw in training.

    elements : sorted nuclear charges present in the training molecules.
    max_atoms : the largest training molecule's atom count.
    min_distance : the shortest interatomic distance in any training molecule, in Å.
    charge, multiplicity : the net charge and spin multiplicity of the training molecules when
        all of them share one stated value (QM7 and QM9: 0 and 1), else ``None`` (not checked).
    n_molecules : how many training molecules this was measured on.
    """

    elements: list[int]
    max_atoms: int
    min_distance: float
    charge: float | None = None
    multiplicity: float | None = None
    n_molecules: int = 0
    min_atoms: int | None = None
    max_neighbour_distance: float | None = None
    max_fragments: int | None = None
    even_electrons: bool | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_molecules(cls, mols: Molecules) -> Domain:
        """Measure the domain of a training set."""
        charges = _stated(getattr(mols, "charge", None))
        spins = _stated(getattr(mols, "multiplicity", None))
        shortest, farthest, fragments = structure(mols)
        return cls(
            elements=sorted(int(z) for z in np.unique(mols.Z)),
            max_atoms=int(mols.n_atoms.max()),
            min_distance=float(shortest.min()),
            charge=float(charges[0]) if charges is not None and len(charges) == 1 else None,
            multiplicity=float(spins[0]) if spins is not None and len(spins) == 1 else None,
            n_molecules=len(mols),
            min_atoms=int(mols.n_atoms.min()),
            max_neighbour_distance=float(farthest.max()),
            max_fragments=_common_max(fragments),
            even_electrons=bool((electrons(mols) % 2 == 0).all()),
        )

    def to_dict(self) -> dict:
        """JSON-ready form, stored as ``metadata["domain"]``."""
        d = {
            "elements": list(self.elements),
            "max_atoms": self.max_atoms,
            "min_distance_angstrom": round(self.min_distance, 6),
            "charge": self.charge,
            "multiplicity": self.multiplicity,
            "n_molecules": self.n_molecules,
            "min_atoms": self.min_atoms,
            "max_neighbour_distance_angstrom": self.max_neighbour_distance,
            "max_fragments": self.max_fragments,
            "even_electrons": self.even_electrons,
        }
        return d | self.extra

    @classmethod
    def from_dict(cls, d: dict) -> Domain:
        return cls(
            elements=[int(z) for z in d["elements"]],
            max_atoms=int(d["max_atoms"]),
            min_distance=float(d["min_distance_angstrom"]),
            charge=d.get("charge"),
            multiplicity=d.get("multiplicity"),
            n_molecules=int(d.get("n_molecules", 0)),
            min_atoms=d.get("min_atoms"),
            max_neighbour_distance=d.get("max_neighbour_distance_angstrom"),
            max_fragments=d.get("max_fragments"),
            even_electrons=d.get("even_electrons"),
        )


@dataclass
class DomainReport:
    """Per molecule: ``in_domain`` (n_molecules,) bool and ``notes`` (one list of strings each)."""

    in_domain: np.ndarray
    notes: list[list[str]]

    @property
    def n_flagged(self) -> int:
        return int((~self.in_domain).sum())


def warn_if_flagged(report: DomainReport, mols: Molecules, stacklevel: int = 3) -> None:
    """One `DomainWarning` when any molecule of ``mols`` carries a soft domain flag."""
    if report.n_flagged:
        import warnings

        first = next(n for n in report.notes if n)
        warnings.warn(
            f"{mols.name}: {report.n_flagged} of {len(mols)} molecules lie outside the training domain "
            f"(e.g. {first[0]}); their predictions are less reliable",
            DomainWarning,
            stacklevel=stacklevel,
        )


def _symbols(zs) -> str:
    return ", ".join(chemical_symbols[int(z)] for z in zs)


def _label(mols: Molecules, i: int) -> str:
    return f"{mols.name}: molecule {i}" if len(mols) > 1 else mols.name


def check_domain(domain: Domain | None, mols: Molecules, elements: list[int] | None = None) -> DomainReport:
    """Check ``mols`` against ``domain``; raise `DomainError` for a hard violation (see the module
    docstring), else return the soft flags per molecule.

    ``domain`` may be ``None`` for a model saved without one; then only ``elements`` (the nuclear
    charges the model knows, if given) and the checks that need no training data (close atoms,
    periodic cells, single atoms) apply.
    """
    known = domain.elements if domain is not None else elements
    if known:
        unknown = np.setdiff1d(np.unique(mols.Z), known)
        if len(unknown):
            i = int(mols.mol_index[np.isin(mols.Z, unknown)][0])
            raise DomainError(
                f"{_label(mols, i)}: element {_symbols(unknown)} was not in the model's training data "
                f"(it knows {_symbols(known)})"
            )
    periodic = getattr(mols, "periodic", None)
    if periodic is not None and np.any(periodic):
        i = int(np.argmax(periodic))
        raise DomainError(f"{_label(mols, i)}: has a periodic cell; qmlx models are for isolated molecules")
    for attr, what in (("charge", "net charge"), ("multiplicity", "spin multiplicity")):
        trained = getattr(domain, attr, None) if domain is not None else None
        given = getattr(mols, attr, None)
        if trained is None or given is None:
            continue
        given = np.asarray(given, dtype=np.float64)
        bad = np.isfinite(given) & (given != trained)
        if bad.any():
            i = int(np.argmax(bad))
            raise DomainError(
                f"{_label(mols, i)}: {what} {given[i]:g} differs from the training data's {trained:g}"
            )
    dmin, farthest, fragments = structure(mols)
    close = dmin < MIN_DISTANCE
    if close.any():
        i = int(np.argmax(close))
        raise DomainError(
            f"{_label(mols, i)}: two atoms are {dmin[i]:.3f} Å apart (less than {MIN_DISTANCE} Å); "
            "are the positions in Å?"
        )
    notes: list[list[str]] = [[] for _ in range(len(mols))]
    odd = electrons(mols) % 2 == 1
    spin = getattr(mols, "multiplicity", None)
    spin = np.full(len(mols), np.nan) if spin is None else np.asarray(spin, dtype=np.float64)
    for i in range(len(mols)):
        n = int(mols.n_atoms[i])
        if n == 1:
            notes[i].append("a single atom: no interactions, the model was trained on molecules")
        if domain is None:
            continue
        if n > domain.max_atoms:
            notes[i].append(f"{n} atoms, more than any training molecule ({domain.max_atoms})")
        if domain.min_atoms is not None and n < domain.min_atoms:
            notes[i].append(f"{n} atoms, fewer than any training molecule ({domain.min_atoms})")
        if np.isfinite(dmin[i]) and dmin[i] < domain.min_distance - DISTANCE_MARGIN:
            notes[i].append(
                f"shortest distance {dmin[i]:.3f} Å, below the training minimum {domain.min_distance:.3f} Å"
            )
        low, high = BOHR_HINT
        if np.isfinite(dmin[i]) and low * domain.min_distance <= dmin[i] <= high * domain.min_distance:
            notes[i].append(
                f"every interatomic distance is at least {dmin[i]:.3f} Å, {dmin[i] / domain.min_distance:.2f} "
                "times the training minimum: are the positions in Bohr (1 Å = 1.89 Bohr)?"
            )
        if domain.max_fragments is not None and fragments[i] > domain.max_fragments:
            notes[i].append(
                f"{fragments[i]} disconnected fragments (training molecules have at most {domain.max_fragments})"
            )
        if (
            domain.max_neighbour_distance is not None
            and farthest[i] > domain.max_neighbour_distance + NEIGHBOUR_MARGIN
        ):
            notes[i].append(
                f"an atom's nearest neighbour is {farthest[i]:.2f} Å away, farther than in any training "
                f"molecule ({domain.max_neighbour_distance:.2f} Å): a stretched or broken bond?"
            )
        if domain.even_electrons and odd[i] and not np.isfinite(spin[i]):
            notes[i].append(
                "an odd number of electrons and no spin multiplicity stated: a radical? The training "
                "molecules are all closed-shell"
            )
    return DomainReport(in_domain=np.array([not n for n in notes], dtype=bool), notes=notes)


def screen(
    check: Callable[[Molecules], DomainReport], mols: Molecules
) -> tuple[DomainReport, list[str | None]]:
    """``check`` (a model's domain check) applied to every molecule of ``mols``: the soft flags,
    and per molecule the reason it is refused (the `DomainError` text) or ``None``.

    The whole set is checked at once; only when that raises is each molecule checked alone, so
    one refused molecule never stops the others. A refused molecule has ``in_domain`` False and its
    reason as its one note.
    """
    try:
        return check(mols), [None] * len(mols)
    except DomainError:
        pass
    in_domain = np.ones(len(mols), dtype=bool)
    notes: list[list[str]] = [[] for _ in range(len(mols))]
    errors: list[str | None] = [None] * len(mols)
    for i in range(len(mols)):
        one = mols.subset([i])
        if len(mols) > 1:
            one.name = _label(mols, i)
        try:
            r = check(one)
            in_domain[i], notes[i] = bool(r.in_domain[0]), r.notes[0]
        except DomainError as err:
            in_domain[i], notes[i], errors[i] = False, [str(err)], str(err)
    return DomainReport(in_domain, notes), errors
