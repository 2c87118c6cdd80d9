"""Chemical groups as SMARTS patterns: a library of functional groups and ring types, users' own
groups from a small text file, and their matches in molecules.

A group is a SMARTS pattern (Daylight SMARTS as RDKit reads it). Where the pattern numbers some of
its atoms (``[C:1](=[O:2])``), those atoms are the group and the others are context (the carbon
neighbours that make a carbonyl a ketone); otherwise every matched atom is the group. A group's
occurrence in a molecule holds those atoms and the hydrogens bonded to them, the way the DTNN
paper's ring energies count a ring's hydrogens (Schütt et al., Nat. Commun. 8, 13890, 2017).

Bonds and bond orders come from the geometry (`qmlx.chem.rdkit.rdkit_molecule`); a molecule whose
bond orders RDKit cannot assign matches nothing and is counted as a perception failure by
`match_groups`.

A groups file holds one group per line: a name (no spaces), the SMARTS, and optionally a
description; a line that starts with ``#`` is a comment (SMARTS use ``#`` themselves, so there are
no comments at the end of a line)::

    # name            SMARTS                       description
    carbonyl          [CX3:1]=[OX1:2]              any C=O
    nitrile           [CX2:1]#[NX1:2]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ase
import numpy as np

from qmlx.errors import DataFormatError


@dataclass(frozen=True)
class Group:
    """A named SMARTS pattern. ``description`` says what it is in words."""

    name: str
    smarts: str
    description: str = ""


def _g(name: str, smarts: str, description: str) -> Group:
    return Group(name, smarts, description)


#: functional groups (mapped atoms are the group; the rest of each pattern is its context)
FUNCTIONAL_GROUPS: tuple[Group, ...] = (
    _g("methyl", "[CX4H3:1]", "CH3"),
    _g("methylene", "[CX4H2:1]", "sp3 CH2"),
    _g("methine", "[CX4H1:1]", "sp3 CH"),
    _g("quaternary_carbon", "[CX4H0:1]", "sp3 C without H"),
    _g("alkene", "[CX3:1]=[CX3:2]", "non-aromatic C=C"),
    _g("alkyne", "[CX2:1]#[CX2:2]", "C#C"),
    _g("aromatic_CH", "[cH1:1]", "aromatic CH"),
    _g("aromatic_C", "[cH0:1]", "substituted aromatic C"),
    _g("primary_alcohol", "[CX4H2:1][OX2H1:2]", "CH2-OH"),
    _g("secondary_alcohol", "[CX4H1:1][OX2H1:2]", "CH-OH"),
    _g("tertiary_alcohol", "[CX4H0:1][OX2H1:2]", "C-OH without H on C"),
    _g("phenol", "c[OX2H1:1]", "OH on an aromatic ring"),
    _g("enol", "[CX3]=[CX3][OX2H1:1]", "OH on a C=C carbon"),
    _g("ether", "[CX4][OX2H0:1][CX4]", "O between two sp3 carbons"),
    _g(
        "aryl_or_vinyl_ether", "[#6;!$([CX4]);!$(C=O)][OX2H0:1][#6;!$(C=O)]", "O on an aromatic or C=C carbon"
    ),
    _g("aldehyde", "[#6][CX3H1:1]=[OX1:2]", "CH=O on carbon"),
    _g("formyl", "[!#6][CX3H1:1]=[OX1:2]", "CH=O on N or O (formamide, formate)"),
    _g("ketone", "[#6][CX3:1](=[OX1:2])[#6]", "C=O between two carbons"),
    _g("carboxylic_acid", "[CX3:1](=[OX1:2])[OX2H1:3]", "COOH"),
    _g("ester", "[#6][CX3:1](=[OX1:2])[OX2H0:3][#6]", "C(=O)O-C"),
    _g("primary_amide", "[CX3:1](=[OX1:2])[NX3H2:3]", "C(=O)NH2"),
    _g("secondary_amide", "[CX3:1](=[OX1:2])[NX3H1:3][#6]", "C(=O)NH-C"),
    _g("tertiary_amide", "[CX3:1](=[OX1:2])[NX3H0:3]([#6])[#6]", "C(=O)N(C)C"),
    _g("urea", "[NX3][CX3:1](=[OX1:2])[NX3]", "N-C(=O)-N"),
    _g("carbamate", "[NX3][CX3:1](=[OX1:2])[OX2]", "N-C(=O)-O"),
    _g("primary_amine", "[CX4][NX3H2:1]", "NH2 on sp3 carbon"),
    _g("secondary_amine", "[CX4][NX3H1:1][CX4]", "NH between sp3 carbons"),
    _g("tertiary_amine", "[CX4][NX3H0:1]([CX4])[CX4]", "N with three sp3 carbons"),
    _g(
        "aniline_like_N",
        "[c,$([CX3]=[CX3])][NX3;!$(N[CX3]=[O,S,N]):1]",
        "amine N on an aromatic or C=C carbon",
    ),
    _g("imine", "[CX3:1]=[NX2:2]", "non-aromatic C=N"),
    _g("nitrile", "[CX2:1]#[NX1:2]", "C#N"),
    _g("pyridine_N", "[nX2:1]", "aromatic N without H (pyridine-type)"),
    _g("pyrrole_N", "[nX3:1]", "aromatic N with three connections (pyrrole-type)"),
    _g("furan_O", "[o:1]", "aromatic O"),
    _g("hydrazine", "[NX3:1]-[NX3:2]", "N-N single bond"),
    _g("oxime_like", "[CX3]=[NX2:1][OX2:2]", "C=N-O"),
    _g("fluoride", "[#6][F:1]", "C-F"),
    _g("epoxide", "[C:1]1[O:2][C:3]1", "three-membered ring C-O-C"),
    _g("aziridine", "[C:1]1[N:2][C:3]1", "three-membered ring C-N-C"),
    _g("cyclopropane", "[C:1]1[C:2][C:3]1", "three-membered carbon ring"),
    _g("cyclobutane", "[C:1]1[C:2][C:3][C:4]1", "four-membered carbon ring (non-aromatic)"),
    _g("lactone_or_lactam", "[#6;R][CX3;R:1](=[OX1:2])[O,N;R:3]", "cyclic ester or amide"),
)

#: ring types (every ring atom is the group)
RING_GROUPS: tuple[Group, ...] = (
    _g("benzene", "c1ccccc1", "aromatic six-ring of carbon"),
    _g("pyridine", "n1ccccc1", "six-ring, one aromatic N"),
    _g("diazine", "[n;r6]1[c,n][c,n][c,n][c,n][c,n]1", "aromatic six-ring with N (any count)"),
    _g("pyrrole", "[nH1]1cccc1", "aromatic five-ring with NH"),
    _g("furan", "o1cccc1", "aromatic five-ring with O"),
    _g("imidazole_like", "[n;r5]1[c,n][c,n][c,n][c,n]1", "aromatic five-ring with N"),
    _g("oxazole_like", "o1[c,n][c,n][c,n][c,n]1", "aromatic five-ring with O and N"),
    _g("cyclohexane", "[C;R]1[C;R][C;R][C;R][C;R][C;R]1", "saturated-atom six-ring of carbon (sp3 or sp2)"),
    _g("cyclopentane", "[C;R]1[C;R][C;R][C;R][C;R]1", "non-aromatic five-ring of carbon"),
    _g("cyclobutane_ring", "[C;R]1[C;R][C;R][C;R]1", "non-aromatic four-ring of carbon"),
    _g("cyclopropane_ring", "[C;R]1[C;R][C;R]1", "three-ring of carbon"),
    _g("oxirane", "[C;R]1[O;R][C;R]1", "three-ring C-C-O"),
    _g("aziridine_ring", "[C;R]1[N;R][C;R]1", "three-ring C-C-N"),
    _g("oxetane", "[C;R]1[O;R][C;R][C;R]1", "four-ring with O"),
    _g("tetrahydrofuran", "[C;R]1[O;R][C;R][C;R][C;R]1", "non-aromatic five-ring with O"),
    _g("pyrrolidine", "[C;R]1[N;R][C;R][C;R][C;R]1", "non-aromatic five-ring with N"),
)

LIBRARIES = {"functional": FUNCTIONAL_GROUPS, "rings": RING_GROUPS}


def read_groups(path: str | os.PathLike) -> tuple[Group, ...]:
    """Groups from a text file (see the module docstring); every SMARTS is checked with RDKit and a
    bad line is a `DataFormatError` naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read the groups file ({err.strerror or err})") from None
    groups, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.strip()
        if not body or body.startswith("#"):  # SMARTS use "#" too: only whole lines are comments
            continue
        fields = body.split(None, 2)
        if len(fields) < 2:
            raise DataFormatError(
                f"{path}, line {lineno}: expected a name and a SMARTS pattern, got {body!r}"
            )
        name, smarts = fields[0], fields[1]
        if name in seen:
            raise DataFormatError(
                f"{path}, line {lineno}: group {name!r} is defined again (first on line {seen[name]})"
            )
        seen[name] = lineno
        group = Group(name, smarts, fields[2] if len(fields) > 2 else "")
        try:
            _pattern(group)
        except ValueError as err:
            raise DataFormatError(f"{path}, line {lineno}: {err}") from None
        groups.append(group)
    if not groups:
        raise DataFormatError(f"{path}: no groups in the file")
    return tuple(groups)


def load_groups(spec: str | os.PathLike | Sequence[Group]) -> tuple[Group, ...]:
    """``"functional"``, ``"rings"``, ``"functional,rings"``, a groups file, or groups as given."""
    if not isinstance(spec, (str, os.PathLike)):
        return tuple(spec)
    text = str(spec)
    if all(part in LIBRARIES for part in text.split(",")):
        return tuple(g for part in text.split(",") for g in LIBRARIES[part])
    if not Path(text).exists():
        raise DataFormatError(f"{text}: neither a group library ({', '.join(LIBRARIES)}) nor a groups file")
    return read_groups(text)


def _pattern(group: Group):
    """The RDKit query molecule of ``group``; ValueError for a SMARTS RDKit cannot read."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        pattern = Chem.MolFromSmarts(group.smarts)
    if pattern is None:
        raise ValueError(f"group {group.name!r}: RDKit cannot read the SMARTS {group.smarts!r}")
    return pattern


@dataclass
class Occurrence:
    """One match of a group in a molecule.

    group : the group's name.
    molecule : index of the molecule in its set.
    atoms : indices (within the molecule) of the group's heavy atoms.
    hydrogens : indices of the hydrogens bonded to them.
    """

    group: str
    molecule: int
    atoms: tuple[int, ...]
    hydrogens: tuple[int, ...]

    @property
    def members(self) -> tuple[int, ...]:
        """Every atom the group's energy sums over: its atoms and their hydrogens."""
        return self.atoms + self.hydrogens


@dataclass
class GroupMatches:
    """`match_groups` output: every occurrence, and the molecules whose bonds could not be perceived
    (``failures``: molecule index -> reason)."""

    occurrences: list[Occurrence]
    failures: dict[int, str]
    n_molecules: int


def match_groups(molecules: Iterable[ase.Atoms], groups: Sequence[Group], start: int = 0) -> GroupMatches:
    """Every occurrence of every group in ``molecules`` (positions in Å; bonds perceived with
    RDKit). Molecule indices count from ``start``. A molecule whose bond orders RDKit cannot assign
    is listed in ``failures`` and matches nothing."""
    from qmlx.chem.rdkit import rdkit_molecule

    patterns = [(g, _pattern(g)) for g in groups]
    cores = {g.name: _core_indices(p) for g, p in patterns}
    occurrences, failures = [], {}
    n_molecules = 0
    for k, atoms in enumerate(molecules, start=start):
        n_molecules += 1
        try:
            mol = rdkit_molecule(atoms)
        except ValueError as err:
            failures[k] = str(err)
            continue
        for group, pattern in patterns:
            core = cores[group.name]
            seen = set()
            for match in mol.GetSubstructMatches(pattern, uniquify=True, maxMatches=10_000):
                heavy = tuple(sorted(match[i] for i in core)) if core else tuple(sorted(match))
                if heavy in seen:
                    continue
                seen.add(heavy)
                hydrogens = tuple(
                    sorted(
                        nb.GetIdx()
                        for i in heavy
                        for nb in mol.GetAtomWithIdx(i).GetNeighbors()
                        if nb.GetAtomicNum() == 1 and nb.GetIdx() not in heavy
                    )
                )
                occurrences.append(Occurrence(group.name, k, heavy, hydrogens))
    return GroupMatches(occurrences, failures, n_molecules)


def _core_indices(pattern) -> list[int]:
    """Indices (in the pattern) of the atoms with a map number: the group itself."""
    return [a.GetIdx() for a in pattern.GetAtoms() if a.GetAtomMapNum() > 0]


def group_counts(
    matches: GroupMatches, groups: Sequence[Group], n_molecules: int, start: int = 0
) -> np.ndarray:
    """(n_molecules, n_groups) occurrences of each group in each molecule."""
    index = {g.name: j for j, g in enumerate(groups)}
    counts = np.zeros((n_molecules, len(groups)))
    for occ in matches.occurrences:
        counts[occ.molecule - start, index[occ.group]] += 1
    return counts
