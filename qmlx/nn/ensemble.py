"""Ensembles of interaction networks: several trained networks whose energies are averaged."""

from __future__ import annotations

import torch
from torch import nn

from qmlx.nn.batch import Batch
from qmlx.nn.models import InteractionNetwork, NetworkOutput


class Ensemble(nn.Module):
    """Several trained networks of one architecture whose energies are averaged (a deep ensemble,
    Lakshminarayanan et al., NeurIPS 2017); the members' spread is the uncertainty.

    ``forward`` returns the members' mean energy ``(n_mol,)`` and mean atom energies
    ``(n_atoms,)`` in kcal/mol (the mean of atom-wise decompositions is again one, so
    ``E = sum_i E_i`` holds); `member_energies` gives every member's energies for the spread.
    All members share the cutoff, so one pair list serves them all.
    """

    def __init__(self, members) -> None:
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, InteractionNetwork) for m in members):
            raise ValueError("an ensemble needs one or more SchNet or DTNN members")
        if len({(type(m), m.cutoff) for m in members}) != 1:
            raise ValueError("ensemble members must share their class and cutoff")
        self.members = nn.ModuleList(members)
        self.cutoff = members[0].cutoff
        self.metadata: dict = {}

    @property
    def uncertainty_scale(self) -> float:
        """Factor from the members' standard deviation to the reported uncertainty: fitted on the
        validation set when the ensemble was assembled (``metadata["uncertainty_scale"]``), else 1."""
        return float(self.metadata.get("uncertainty_scale", 1.0))

    @property
    def head(self) -> nn.Module:
        """The first member's output head (its element references say which elements it knows)."""
        return self.members[0].head

    def member_energies(self, batch: Batch, tabulated: bool = False) -> torch.Tensor:
        """(n_members, n_mol) energies of every member in kcal/mol (``tabulated``: see
        `InteractionNetwork.forward_from`)."""
        return torch.stack([m(batch, tabulated=tabulated).energy for m in self.members])

    def forward(self, batch: Batch, tabulated: bool = False) -> NetworkOutput:
        """The members' mean energies; ``tabulated=True`` runs each member's table path of
        inference (under ``torch.no_grad()`` only)."""
        outs = [m(batch, tabulated=tabulated) for m in self.members]
        return NetworkOutput(
            energy=torch.stack([o.energy for o in outs]).mean(0),
            atom_energies=torch.stack([o.atom_energies for o in outs]).mean(0),
        )
