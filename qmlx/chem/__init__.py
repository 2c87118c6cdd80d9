"""Chemistry that models and explanations share: bonds from geometry, composition and per-element
reference energies."""

from qmlx.chem.bonds import bonds
from qmlx.chem.composition import element_counts, fit_element_energies

__all__ = ["bonds", "element_counts", "fit_element_energies"]
