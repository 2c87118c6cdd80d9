"""An ASE calculator for trained qmlx networks (eV and Å at its boundary, as ASE expects).

from qmlx.calculator import QmlxCalculator
atoms.calc = QmlxCalculator("qm7-schnet")
atoms.get_potential_energy()   # eV; the network's atomization energy converted from kcal/mol
atoms.get_forces()             # eV/Å, -dE/dR by autograd
"""

from __future__ import annotations

import warnings

from ase.calculators.calculator import Calculator, all_changes

from qmlx.data.molecules import Molecules
from qmlx.errors import DomainError, DomainWarning, QmlxError
from qmlx.units import KCAL_MOL_TO_EV


class QmlxCalculator(Calculator):
    """ASE calculator around a trained qmlx network or ensemble (a shipped name, a file, or a model
    from `qmlx.load_model`).

    ``results``: ``energy`` (eV), ``energies`` (per-atom, eV), ``forces`` (eV/Å), filled together
    from one forward and backward pass (an ensemble: the members' means), for an ensemble
    ``uncertainty`` (eV), and ``novelty`` for a model with a novelty model (`qmlx.novelty`),
    evaluated at every step. The energy is what the network was trained on (its metadata's
    ``target_description``; the shipped QM7 models: PBE0 atomization energies of equilibrium
    geometries, so geometries far from equilibrium lie outside what they learned).

    Atoms the model cannot answer raise `qmlx.errors.DomainError` (unknown elements, atoms closer
    than 0.5 Å, periodic cells, another charge or spin). Leaving the training domain (a novelty
    p-value below the model's level, a stretched bond, more atoms than any training molecule, ...)
    raises `DomainError` too with ``on_novel="raise"`` (the default), naming the step's notes; with
    ``on_novel="warn"`` it warns once per calculator (`DomainWarning`), however many steps an
    optimisation or MD takes, and keeps the notes of the last flagged step in ``domain_notes``.
    """

    implemented_properties = ["energy", "energies", "forces"]

    def __init__(self, model="qm7-schnet", on_novel: str = "raise", **kwargs) -> None:
        super().__init__(**kwargs)
        if on_novel not in ("raise", "warn"):
            raise QmlxError(f"on_novel must be 'raise' or 'warn', not {on_novel!r}")
        self.on_novel = on_novel
        from qmlx.models import as_trained_model, load_model

        self.model = load_model(model) if isinstance(model, str) else as_trained_model(model)
        if "forces" not in self.model.properties:
            raise QmlxError(f"{self.model.name}: a {self.model.kind} model gives no forces; use a network")
        self.domain_notes: list[str] = []
        self._warned = False

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        mols = Molecules.from_atoms([self.atoms], targets={}, name=self.atoms.get_chemical_formula())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DomainWarning)  # warned once below
            pred = self.model.predict(mols, forces=True)  # one pass for all three
        if pred.errors[0] is not None:
            raise DomainError(pred.errors[0])
        if pred.notes[0]:
            self.domain_notes = list(pred.notes[0])
            if self.on_novel == "raise":
                raise DomainError(
                    f"{mols.name}: left the model's training domain ({'; '.join(pred.notes[0])}); "
                    "QmlxCalculator(..., on_novel='warn') goes on with a warning"
                )
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{mols.name}: outside the training domain ({'; '.join(pred.notes[0])}); energies "
                    "and forces are less reliable (warned once per calculator)",
                    DomainWarning,
                    stacklevel=2,
                )
        self.results["forces"] = pred.forces * KCAL_MOL_TO_EV
        self.results["energies"] = pred.atom_energies * KCAL_MOL_TO_EV
        self.results["energy"] = float(pred.atom_energies.sum()) * KCAL_MOL_TO_EV
        if pred.uncertainty is not None:
            self.results["uncertainty"] = float(pred.uncertainty[0]) * KCAL_MOL_TO_EV
        if pred.novelty is not None:
            self.results["novelty"] = float(pred.novelty[0])
