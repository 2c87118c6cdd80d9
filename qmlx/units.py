"""Physical constants and unit conversions used at every boundary of qmlx.

Values are CODATA 2018 (NIST), as quoted in the project guide:

- 1 Bohr = 0.529177210903 Å
- 1 Hartree = 627.509474 kcal/mol = 27.211386 eV
- 1 eV = 23.0605 kcal/mol (derived here from the Hartree values for consistency)
"""

from __future__ import annotations

BOHR_TO_ANGSTROM: float = 0.529177210903
ANGSTROM_TO_BOHR: float = 1.0 / BOHR_TO_ANGSTROM

HARTREE_TO_KCAL_MOL: float = 627.509474
HARTREE_TO_EV: float = 27.211386
EV_TO_KCAL_MOL: float = HARTREE_TO_KCAL_MOL / HARTREE_TO_EV
KCAL_MOL_TO_EV: float = 1.0 / EV_TO_KCAL_MOL

_ENERGY_IN_KCAL_MOL = {
    "kcal/mol": 1.0,
    "Hartree": HARTREE_TO_KCAL_MOL,
    "eV": EV_TO_KCAL_MOL,
}
#: the energy units qmlx converts between
ENERGY_UNITS: tuple[str, ...] = tuple(_ENERGY_IN_KCAL_MOL)


def convert_energy(value, from_unit: str, to_unit: str):
    """Convert an energy (scalar or array) between ``kcal/mol``, ``Hartree`` and ``eV``."""
    try:
        factor = _ENERGY_IN_KCAL_MOL[from_unit] / _ENERGY_IN_KCAL_MOL[to_unit]
    except KeyError as err:
        raise ValueError(
            f"unknown energy unit {err.args[0]!r}; expected one of {sorted(_ENERGY_IN_KCAL_MOL)}"
        ) from None
    return value * factor
