"""Small building blocks of the interaction networks (torch).

Conventions: distances in Å, energies in kcal/mol, atoms flat with a molecule index. Shapes are
given as ``(n_atoms, F)`` for atom features, ``(n_pairs, ...)`` for pair features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qmlx.nn.ops import symmetric_sum

LOG2 = math.log(2.0)
#: exponent below which `GaussianRBF` returns exactly 0 instead of a subnormal float
UNDERFLOW_ARG = -40.0


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """ssp(x) = softplus(x) - log 2, so that ssp(0) = 0 (Schütt et al. 2018)."""
    return nn.functional.softplus(x) - LOG2


class ShiftedSoftplus(nn.Module):
    """Module wrapper of :func:`shifted_softplus`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_softplus(x)


class Dense(nn.Linear):
    """A linear layer followed by an optional activation; Xavier-uniform weights, zero bias.

    Parameters
    ----------
    n_in, n_out : input and output sizes; maps ``(..., n_in)`` to ``(..., n_out)``.
    activation : callable applied after the affine map, or ``None`` for a linear layer.
    bias : whether to add a bias.
    """

    def __init__(self, n_in: int, n_out: int, activation=None, bias: bool = True) -> None:
        self.activation = activation
        super().__init__(n_in, n_out, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self.activation(y) if self.activation is not None else y


class GaussianRBF(nn.Module):
    """Expand distances in Gaussians ``exp(-(d - mu_k)^2 / (2 width^2))``.

    Parameters
    ----------
    start, stop : first and last centre in Å (inclusive).
    spacing : distance between centres in Å; ``n_rbf = round((stop - start) / spacing) + 1``.
    width : Gaussian width (standard deviation) in Å; defaults to ``spacing``.

    ``forward(d)`` maps distances ``(n_pairs,)`` in Å to ``(n_pairs, n_rbf)``.
    """

    def __init__(
        self, start: float = 0.0, stop: float = 5.0, spacing: float = 0.25, width: float | None = None
    ):
        super().__init__()
        n_rbf = int(round((stop - start) / spacing)) + 1
        self.register_buffer("centers", torch.linspace(start, stop, n_rbf))
        w = spacing if width is None else width
        self.coeff = -0.5 / (w * w)
        self.width = float(w)
        self.n_rbf = n_rbf

    @property
    def zero_beyond(self) -> float:
        """Distance in Å past which every Gaussian is exactly 0 (see `UNDERFLOW_ARG`)."""
        return float(self.centers.max()) + math.sqrt(UNDERFLOW_ARG / self.coeff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        diff = d.unsqueeze(-1) - self.centers
        arg = self.coeff * diff * diff
        # far from their centre the Gaussians would underflow to subnormal floats, which slow every
        # matrix product that reads them down many times on CPUs (a 20x slower weight gradient of
        # the first filter layer in SchNet); below e^-40 = 4e-18, far under float32 resolution
        # relative to the peak value 1, they are set to exactly 0
        return torch.exp(arg).masked_fill(arg < UNDERFLOW_ARG, 0.0)


class CosineCutoff(nn.Module):
    """f(d) = 0.5 (cos(pi d / cutoff) + 1) for d < cutoff, else 0; ``(n_pairs,)`` -> ``(n_pairs,)``."""

    def __init__(self, cutoff: float = 5.0) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        f = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0)
        return f * (d < self.cutoff).to(d.dtype)


class ElementEmbedding(nn.Embedding):
    """Learned feature vector per nuclear charge: ``Z (n_atoms,)`` -> ``(n_atoms, n_features)``."""

    def __init__(self, n_features: int, max_z: int = 100) -> None:
        super().__init__(max_z + 1, n_features, padding_idx=0)


class SchNetInteraction(nn.Module):
    """SchNet interaction block with a continuous-filter convolution (Schütt et al., JCP 2018).

    ``v_i = Dense(ssp(Dense(sum_j in2f(x)_j * W(d_ij))))`` with the filter
    ``W(d) = Dense(ssp(Dense(rbf(d)))) * cutoff(d)``; the block returns the update ``v``
    ``(n_atoms, F)``; the model adds it to ``x`` (residual).

    Parameters
    ----------
    n_features : atom feature size F.
    n_rbf : number of radial basis functions the filter network reads.
    n_filters : filter size (defaults to F).
    """

    def __init__(self, n_features: int, n_rbf: int, n_filters: int | None = None) -> None:
        super().__init__()
        nf = n_filters or n_features
        self.filter1 = Dense(n_rbf, nf, activation=shifted_softplus)
        self.filter2 = Dense(nf, nf)
        self.in2f = Dense(n_features, nf, bias=False)
        self.f2out = Dense(nf, n_features, activation=shifted_softplus)
        self.dense = Dense(n_features, n_features)

    def filter(self, rbf: torch.Tensor, fcut: torch.Tensor) -> torch.Tensor:
        """Filter ``(n_pairs, n_filters)`` from ``rbf (n_pairs, n_rbf)`` and ``fcut (n_pairs,)``.

        Equals ``filter2(filter1(rbf)) * fcut`` (filter1 ends in the shifted softplus), with the
        constant ``-log 2`` of that softplus moved into filter2's bias, which saves a pass over the
        largest tensor of the step.
        """
        hidden = nn.functional.softplus(nn.functional.linear(rbf, self.filter1.weight, self.filter1.bias))
        w2 = self.filter2.weight
        bias = self.filter2.bias - LOG2 * w2.sum(dim=1)
        return nn.functional.linear(hidden, w2, bias) * fcut.unsqueeze(-1)

    def forward(
        self, x: torch.Tensor, rbf: torch.Tensor, fcut: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor
    ) -> torch.Tensor:
        """``x (n_atoms, F)``; pair tensors over the half list ``i < j``; returns ``(n_atoms, F)``."""
        return self.propagate(x, self.filter(rbf, fcut), idx_i, idx_j)

    def propagate(
        self, x: torch.Tensor, w: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor
    ) -> torch.Tensor:
        """The update ``(n_atoms, F)`` from ``x (n_atoms, F)`` and the filter ``w (n_pairs, n_filters)``
        of each half pair ``i < j`` (from `filter`, or read from a `qmlx.nn.tables.RadialTables`)."""
        h = self.in2f(x)
        # index_select rather than h[idx]: its backward is an index_add, not a much slower index_put
        h_i, h_j = h.index_select(0, idx_i), h.index_select(0, idx_j)
        agg = symmetric_sum(h_i * w, h_j * w, idx_i, idx_j, x.shape[0])
        return self.dense(self.f2out(agg))


class DTNNInteraction(nn.Module):
    """DTNN factorized tensor interaction (Schütt et al., Nat. Commun. 2017).

    ``v_ij = tanh(W_fc((W_cf x_j + b1) * (W_df rbf(d_ij) + b2)))`` and the block returns
    ``sum_{j != i} v_ij`` ``(n_atoms, F)``; the model adds it to ``x``.

    Parameters
    ----------
    n_features : atom feature size F (the paper's basis size).
    n_rbf : number of Gaussians in the distance expansion.
    n_factors : size of the factorized hidden space.
    """

    def __init__(self, n_features: int, n_rbf: int, n_factors: int) -> None:
        super().__init__()
        self.cf = Dense(n_features, n_factors)  # W_cf, b1
        self.df = Dense(n_rbf, n_factors)  # W_df, b2
        self.fc = Dense(n_factors, n_features, bias=False)  # W_fc

    def forward(
        self, x: torch.Tensor, rbf: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor
    ) -> torch.Tensor:
        """``x (n_atoms, F)``, ``rbf (n_half_pairs, n_rbf)`` over pairs ``i < j``; returns ``(n_atoms, F)``."""
        return self.propagate(x, self.df(rbf), idx_i, idx_j)

    def propagate(
        self, x: torch.Tensor, d: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor
    ) -> torch.Tensor:
        """The update ``(n_atoms, F)`` from ``x (n_atoms, F)`` and the distance factor
        ``d = df(rbf) (n_half_pairs, n_factors)`` of each pair ``i < j`` (or read from a `qmlx.nn.tables.RadialTables`)."""
        c = self.cf(x)
        v_ji = torch.tanh(self.fc(c.index_select(0, idx_j) * d))  # message from j to i
        v_ij = torch.tanh(self.fc(c.index_select(0, idx_i) * d))  # message from i to j
        return symmetric_sum(v_ij, v_ji, idx_i, idx_j, x.shape[0])


class AtomwiseHead(nn.Module):
    """Atom-wise energy ``E_i = scale[Z_i] * MLP(x_i) + reference[Z_i]`` in kcal/mol.

    ``reference`` and ``scale`` are buffers fitted from training data with
    :meth:`fit_reference` (least squares on element counts), never typed by hand.

    Parameters
    ----------
    n_features : input feature size F.
    n_hidden : hidden layer size (default F // 2).
    activation : hidden activation (shifted softplus by default).
    max_z : largest nuclear charge.
    """

    def __init__(
        self, n_features: int, n_hidden: int | None = None, activation=shifted_softplus, max_z: int = 100
    ):
        super().__init__()
        nh = n_hidden or max(n_features // 2, 1)
        self.mlp = nn.Sequential(Dense(n_features, nh, activation=activation), Dense(nh, 1))
        # float64: with total energies (tens of thousands of kcal/mol per atom) float32 would round
        # each atom energy by up to 1e-3 kcal/mol; the sum of y * scale (float32) and this is float64
        self.register_buffer("reference", torch.zeros(max_z + 1, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(max_z + 1))

    def forward(self, x: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """``x (n_atoms, F)``, ``Z (n_atoms,)`` -> atom energies ``(n_atoms,)`` in kcal/mol."""
        y = self.mlp(x).squeeze(-1)
        return y * self.scale[Z] + self.reference[Z]

    @torch.no_grad()
    def fit_reference(self, Z, n_atoms, energies) -> dict[int, float]:
        """Fit per-element reference energies and a scale from training molecules.

        ``Z`` (n_atoms_total,), ``n_atoms`` (n_mol,), ``energies`` (n_mol,) kcal/mol, numpy arrays.
        Solves ``E_m ~ sum_e count[m, e] * ref[e]`` by least squares; the scale is the standard
        deviation of the residual per atom. Returns the references by element.
        """
        import numpy as np

        from qmlx.chem import element_counts, fit_element_energies

        refs = fit_element_energies(Z, n_atoms, energies)
        elements = np.array(list(refs))
        ref = np.array(list(refs.values()))
        resid = np.asarray(energies, dtype=np.float64) - element_counts(Z, n_atoms, elements) @ ref
        scale = float(np.std(resid / np.asarray(n_atoms))) or 1.0
        self.reference.zero_()
        self.reference[torch.as_tensor(elements)] = torch.as_tensor(ref, dtype=self.reference.dtype)
        self.scale.fill_(scale)
        return refs
