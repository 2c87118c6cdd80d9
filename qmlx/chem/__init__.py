"""Chemistry that models and explanations share: composition and per-element reference energies."""

from qmlx.chem.composition import element_counts, fit_element_energies

__all__ = ["element_counts", "fit_element_energies"]
