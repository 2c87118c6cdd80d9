"""An ASE calculator for trained qmlx networks (eV and Å at its boundary, as ASE expects).

from qmlx.calculator import QmlxCalculator
atoms.calc = QmlxCalculator("qm7-schnet")
atoms.get_potential_energy()   # eV; the network's atomization energy converted from kcal/mol
atoms.get_forces()             # eV/Å, -dE/dR by autograd
"""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from qmlx.data.molecules import Molecules
from qmlx.units import KCAL_MOL_TO_EV


class QmlxCalculator(Calculator):
    """ASE calculator around a qmlx network (a shipped name, a network file or a model object).

    ``results``: ``energy`` (eV), ``energies`` (per-atom, eV), ``forces`` (eV/Å), filled together
    from one forward and backward pass. The energy is what the network was trained on (its
    metadata's ``target_description``; QM7 models: PBE0 atomization energy). Atoms outside the
    model's domain raise `qmlx.errors.DomainError` (unknown elements, atoms closer than 0.5 Å,
    periodic cells, another charge or spin) or warn (see `qmlx.data.domain`).
    """

    implemented_properties = ["energy", "energies", "forces"]

    def __init__(self, model="qm7-schnet", **kwargs) -> None:
        super().__init__(**kwargs)
        from qmlx.nn.io import load_network

        self.model = load_network(model) if isinstance(model, str) else model.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from qmlx.nn.io import predict_forces

        mols = Molecules.from_atoms([self.atoms], targets={}, name=self.atoms.get_chemical_formula())
        _, forces, atom_energies = predict_forces(self.model, mols)  # one pass for all three
        self.results["forces"] = forces * KCAL_MOL_TO_EV
        self.results["energies"] = atom_energies * KCAL_MOL_TO_EV
        self.results["energy"] = float(atom_energies.sum()) * KCAL_MOL_TO_EV
