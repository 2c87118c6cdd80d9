"""An ASE calculator for trained qmlx networks (eV and Å at its boundary, as ASE expects).

from qmlx.calculator import QmlxCalculator
atoms.calc = QmlxCalculator("qm7-schnet")
atoms.get_potential_energy()   # eV; the network's atomization energy converted from kcal/mol
atoms.get_forces()             # eV/Å, -dE/dR by autograd
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from qmlx.data.molecules import Molecules
from qmlx.units import KCAL_MOL_TO_EV


class QmlxCalculator(Calculator):
    """ASE calculator around a qmlx network (a shipped name, a network file or a model object).

    ``results``: ``energy`` (eV), ``energies`` (per-atom, eV), ``forces`` (eV/Å). The energy is
    what the network was trained on (QM7: PBE0 atomization energy), not a total energy.
    """

    implemented_properties = ["energy", "energies", "forces"]

    def __init__(self, model="qm7-schnet", **kwargs) -> None:
        super().__init__(**kwargs)
        from qmlx.nn.io import load_network

        self.model = load_network(model) if isinstance(model, str) else model.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from qmlx.nn.io import predict_forces, predict_network

        mols = Molecules(
            Z=self.atoms.numbers, R=self.atoms.positions, n_atoms=[len(self.atoms)], name="atoms"
        )
        if "forces" in properties:
            e, f = predict_forces(self.model, mols)
            self.results["forces"] = np.asarray(f) * KCAL_MOL_TO_EV
        _, ae = predict_network(self.model, mols)
        self.results["energies"] = ae * KCAL_MOL_TO_EV
        self.results["energy"] = float(ae.sum()) * KCAL_MOL_TO_EV
