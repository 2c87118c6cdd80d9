"""Explanations of energy predictions: which atoms (and atom pairs) carry them, with sign.

One entry point, `explain(model, molecules, method=...)`, returns an `Explanation` with per-atom
relevances in kcal/mol and the reference value each molecule is explained against (Letzgus et
al., IEEE Signal Process. Mag. 2022: explain ``f(x) - f(x~)`` for a stated ``x~``).

| method | what it is | reference | conserves |
|---|---|---|---|
| ``decomposition`` | the network's own atom energies E_i | 0 | E = sum E_i |
| ``lrp`` | LRP (epsilon / gamma rules), see `qmlx.explain.lrp` | sum of element references | with bias relevance |
| ``lrp-pairs`` | second-order LRP: relevance of (source, sink) atom pairs | as ``lrp`` | sums to ``lrp`` |
| ``lrp-walks`` | relevant walks (GNN-LRP), see `qmlx.explain.walks`; atoms as ``lrp`` | as ``lrp`` | walks sum to ``lrp`` |
| ``gradient`` | sensitivity: ``||dE/dx_i^0||_2`` w.r.t. atom i's embedding (unsigned) | none | no |
| ``gradient-x-input`` | ``x_i^0 . dE/dx_i^0`` w.r.t. the embedding | none | no |
| ``integrated-gradients`` | Sundararajan et al. 2017, embeddings scaled from 0 to x^0 | E with all embeddings 0 | yes (path integral) |
| ``neuralized`` (KRR) | Kauffmann et al. 2020 neuralization against the empty molecule, features mapped onto atoms, symmetry-averaged | f(0), the prediction for all-zero features | exact (no remainder) |
| ``novelty`` (every model with a novelty model) | the molecule's novelty (`qmlx.novelty`) split over its atoms: the one-class model neuralized, descriptor entries mapped onto the atoms that make them | 0 | with the soft-min remainder |

Explanations run on a float64 copy of the model; the model passed in is left unchanged.

The methods are a registry, `METHODS`, from name to a `Method` that says which kinds of model it
explains (`qmlx.models.TrainedModel.kind`) and how; `register_method` adds one. An ensemble is
explained by the mean of its members' explanations, for every method that explains its members.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ase
import numpy as np
import torch

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import QmlxError
from qmlx.explain.lrp import Epsilon, Gamma, lrp_atoms, lrp_pairs
from qmlx.nn.batch import Batch, PairCache
from qmlx.nn.ops import segment_sum

__all__ = ["METHODS", "Epsilon", "Explanation", "Gamma", "Method", "explain", "register_method"]


@dataclass
class Explanation:
    """Per-atom relevances of a set of molecules.

    method : the method's name.
    molecules : the explained molecules (positions in Å).
    relevance : (n_atoms_total,) relevance of each atom in kcal/mol (``gradient``: kcal/mol per
        unit of embedding, unsigned).
    prediction : (n_mol,) predicted energies in kcal/mol.
    reference : (n_mol,) the value each prediction is explained against, kcal/mol.
    bias : (n_atoms_total,) relevance absorbed by biases (LRP), or ``None``.
    pairs : per molecule an (n_i, n_i) array ``P[a, b]`` (``lrp-pairs``), or ``None``.
    padding : (n_mol,) relevance of zero-padded features (kernel models), or ``None``.
    walks : per molecule a `qmlx.explain.walks.WalkResult` (``lrp-walks``), or ``None``.
    spread : for an ensemble, (n_atoms_total,) standard deviation of the members' atom relevances
        (the explanation itself is the members' mean, so conservation still holds), else ``None``.
    """

    method: str
    molecules: Molecules
    relevance: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray
    bias: np.ndarray | None = None
    pairs: list[np.ndarray] | None = None
    padding: np.ndarray | None = None
    unit: str = "kcal/mol"
    walks: list | None = None  # lrp-walks: one `qmlx.explain.walks.WalkResult` per molecule
    spread: np.ndarray | None = None  # ensembles: (n_atoms_total,) std of the members' relevances

    def molecule(self, i: int) -> np.ndarray:
        """(n_atoms_i,) relevances of molecule ``i``."""
        o = self.molecules.offsets
        return self.relevance[o[i] : o[i + 1]]

    def totals(self) -> np.ndarray:
        """(n_mol,) sum of relevance (plus bias relevance, if any) per molecule."""
        total = self.relevance if self.bias is None else self.relevance + self.bias
        sums = np.bincount(self.molecules.mol_index, weights=total, minlength=len(self.molecules))
        return sums if self.padding is None else sums + self.padding

    def conservation_error(self) -> np.ndarray:
        """(n_mol,) ``totals() - (prediction - reference)`` in kcal/mol."""
        return self.totals() - (self.prediction - self.reference)

    def to_rdkit(self) -> list:
        """One RDKit molecule per explained molecule, in the atom order of ``molecules``, with a 3-D
        conformer (Å) and bonds perceived from the geometry (`qmlx.chem.rdkit.rdkit_molecule`;
        where RDKit cannot assign bond orders, single bonds and the molecule property
        ``qmlx_bond_orders`` = ``"not assigned"``).

        Each atom carries its ``relevance`` (and ``bias_relevance``, ``relevance_spread`` where
        the method gives them) as double properties (``atom.GetDoubleProp("relevance")``, in
        ``unit``); each molecule ``prediction`` and ``reference`` (doubles), ``method`` and
        ``unit`` (strings). Needs RDKit (``pip install qmlx[chem]``). `qmlx.explain.plot.
        similarity_map` draws one in the style of RDKit's similarity maps.
        """
        try:
            from qmlx.chem.rdkit import rdkit_connectivity, rdkit_molecule
        except ImportError:  # pragma: no cover - the chem extra
            raise QmlxError("Explanation.to_rdkit needs RDKit: pip install qmlx[chem]") from None
        out = []
        for i, atoms in enumerate(self.molecules):
            try:
                mol, orders = rdkit_molecule(atoms), "assigned"
            except ValueError:
                mol, orders = rdkit_connectivity(atoms), "not assigned"
            lo, hi = self.molecules.offsets[i], self.molecules.offsets[i + 1]
            per_atom = {
                "relevance": self.relevance,
                "bias_relevance": self.bias,
                "relevance_spread": self.spread,
            }
            for name, values in per_atom.items():
                if values is not None:
                    for atom, value in zip(mol.GetAtoms(), values[lo:hi]):
                        atom.SetDoubleProp(name, float(value))
            mol.SetDoubleProp("prediction", float(self.prediction[i]))
            mol.SetDoubleProp("reference", float(self.reference[i]))
            mol.SetProp("method", self.method)
            mol.SetProp("unit", self.unit or "")
            mol.SetProp("qmlx_bond_orders", orders)
            out.append(mol)
        return out


@dataclass(frozen=True)
class Options:
    """The settings a method may read: the LRP ``rule``, ``steps`` of integrated gradients,
    ``batch_size`` (molecules per batch) and ``top`` (walks kept per molecule)."""

    rule: Epsilon | Gamma
    steps: int = 50
    batch_size: int = 64
    top: int | None = None


@dataclass(frozen=True)
class Method:
    """An explanation method.

    name : what ``explain(..., method=name)`` and ``qmlx explain --method`` call it.
    kinds : the model kinds it explains (`qmlx.models.TrainedModel.kind`: ``network``, ``krr``,
        ...); a method for ``network`` explains an ``ensemble`` member by member, averaged, unless
        ``members`` is False.
    run : ``(estimator, molecules, options) -> Explanation`` for one model of those kinds (the
        domain was checked before).
    members : whether an ensemble may be explained by averaging its members' explanations.
    """

    name: str
    kinds: tuple[str, ...]
    run: Callable[[object, Molecules, Options], Explanation]
    members: bool = True


#: name -> `Method`, in the order the command line lists them
METHODS: dict[str, Method] = {}
#: the method each model kind is explained with when none is named
DEFAULT_METHOD = {"network": "lrp", "ensemble": "lrp", "krr": "neuralized"}
_KIND_NAMES = {
    "network": "network",
    "ensemble": "ensemble",
    "krr": "kernel",
    "cm-network": "Coulomb-matrix network",
}


def register_method(name: str, kinds: Sequence[str], run: Callable, members: bool = True) -> Method:
    """Add (or replace) the explanation method ``name``; returns it."""
    METHODS[name] = Method(name, tuple(kinds), run, members)
    return METHODS[name]


# -- network methods, batch by batch ---------------------------------------------------------------

#: one batch -> (relevance, prediction, reference, bias or None, pair matrix or None), as tensors
BatchRun = Callable[[torch.nn.Module, Batch, Options], tuple]


def _per_mol(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    return segment_sum(values, batch.mol_index, batch.n_mol)


def _batched(name: str, run_batch: BatchRun, one_at_a_time: bool = False) -> Callable:
    """A network method from its batch function: a float64 copy of the network, batches of
    ``options.batch_size`` molecules (of one with ``one_at_a_time``), results concatenated."""

    def run(model, molecules: Molecules, options: Options) -> Explanation:
        net = copy.deepcopy(model).double().eval()  # on the model's device
        for p in net.parameters():
            p.requires_grad_(False)
        device = next(net.parameters()).device
        cache = PairCache(molecules, net.cutoff, target=None, dtype=torch.float64).to(device)
        size = 1 if one_at_a_time else options.batch_size
        parts = [
            run_batch(net, cache.batch(np.arange(start, min(start + size, len(molecules)))), options)
            for start in range(0, len(molecules), size)
        ]
        cat = lambda k: np.concatenate([p[k].detach().cpu().numpy() for p in parts])  # noqa: E731
        return Explanation(
            method=name,
            molecules=molecules,
            relevance=cat(0),
            prediction=cat(1),
            reference=cat(2),
            bias=cat(3) if parts[0][3] is not None else None,
            pairs=[p[4].cpu().numpy() for p in parts] if parts[0][4] is not None else None,
        )

    return run


def _lrp(net, batch: Batch, options: Options, pairs: bool = False) -> tuple:
    relevance, bias, ref, atom_energies = lrp_atoms(net, batch, options.rule)  # energies come too
    P = lrp_pairs(net, batch, options.rule) if pairs else None
    return relevance, _per_mol(atom_energies, batch), _per_mol(ref, batch), bias, P


def _decomposition(net, batch: Batch, options: Options) -> tuple:
    with torch.no_grad():
        out = net(batch)
    return out.atom_energies, out.energy, torch.zeros_like(out.energy), None, None


def _gradient(net, batch: Batch, times_input: bool) -> tuple:
    with torch.no_grad():
        energy = net(batch).energy
    x0 = net.embed(batch.Z).detach()
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net.forward_from(x, batch).energy.sum(), x)
    rel = (x0 * g).sum(-1) if times_input else g.norm(dim=-1)
    return rel, energy, torch.full_like(energy, float("nan")), None, None


def _integrated_gradients(net, batch: Batch, options: Options) -> tuple:
    with torch.no_grad():
        energy = net(batch).energy
    x0 = net.embed(batch.Z).detach()
    total = torch.zeros_like(x0)
    steps = options.steps
    for alpha in (torch.arange(steps, dtype=x0.dtype, device=x0.device) + 0.5) / steps:  # midpoint rule
        x = (alpha * x0).requires_grad_(True)
        (g,) = torch.autograd.grad(net.forward_from(x, batch).energy.sum(), x)
        total += g
    with torch.no_grad():
        baseline = net.forward_from(torch.zeros_like(x0), batch).energy
    return (x0 * total / steps).sum(-1), energy, baseline, None, None


def _walks(net, molecules: Molecules, options: Options) -> Explanation:
    from qmlx.explain.walks import lrp_walks

    walks = lrp_walks(net, molecules, rule=options.rule, top=options.top)
    atoms = METHODS["lrp"].run(net, molecules, options)
    atoms.method, atoms.walks = "lrp-walks", walks
    return atoms


def _neuralized(krr, molecules: Molecules, options: Options) -> Explanation:
    from qmlx.explain.kernel import explain_krr

    relevance, padding, prediction, reference = explain_krr(krr, molecules)
    return Explanation("neuralized", molecules, relevance, prediction, reference, padding=padding)


register_method("decomposition", ["network"], _batched("decomposition", _decomposition))
register_method("lrp", ["network"], _batched("lrp", _lrp))
register_method(
    "lrp-pairs",
    ["network"],
    _batched("lrp-pairs", lambda n, b, o: _lrp(n, b, o, pairs=True), one_at_a_time=True),
)
register_method("lrp-walks", ["network"], _walks, members=False)
register_method("gradient", ["network"], _batched("gradient", lambda n, b, o: _gradient(n, b, False)))
register_method(
    "gradient-x-input", ["network"], _batched("gradient-x-input", lambda n, b, o: _gradient(n, b, True))
)
register_method("integrated-gradients", ["network"], _batched("integrated-gradients", _integrated_gradients))
register_method("neuralized", ["krr"], _neuralized)


def _novelty(estimator, molecules: Molecules, options: Options) -> Explanation:
    from qmlx.novelty import NoveltyModel, explain_novelty

    state = getattr(estimator, "novelty_state", None)
    if state is None:
        raise QmlxError(
            "this model file holds no novelty model; retrain it, or add one (experiments/domain.py)"
        )
    relevance, novelty, remainder = explain_novelty(NoveltyModel.from_state(state), molecules)
    return Explanation(
        "novelty", molecules, relevance, novelty, np.zeros(len(molecules)), padding=remainder, unit=""
    )


register_method("novelty", ["network", "ensemble", "krr", "cm-network"], _novelty, members=False)


def _explain_members(method: Method, members, molecules: Molecules, options: Options) -> Explanation:
    """The mean of the members' explanations (conserving, since every member's does and the sum
    is linear), with the members' standard deviation per atom as ``spread``."""
    parts = [method.run(m, molecules, options) for m in members]

    def mean(key: str) -> np.ndarray | None:
        return None if getattr(parts[0], key) is None else np.mean([getattr(p, key) for p in parts], 0)

    pairs = None
    if parts[0].pairs is not None:
        pairs = [np.mean([p.pairs[i] for p in parts], 0) for i in range(len(molecules))]
    return Explanation(
        method=method.name, molecules=molecules, relevance=mean("relevance"), prediction=mean("prediction"),
        reference=mean("reference"), bias=mean("bias"), pairs=pairs,
        spread=np.std([p.relevance for p in parts], 0),
    )  # fmt: skip


def methods_for(kind: str) -> list[str]:
    """The names of the methods that explain models of ``kind``."""
    inner = "network" if kind == "ensemble" else kind
    return [
        name
        for name, m in METHODS.items()
        if kind in m.kinds or (inner in m.kinds and kind == "ensemble" and m.members)
    ]


def explain(
    model,
    molecules: Molecules | Sequence[ase.Atoms],
    method: str | None = None,
    rule: Epsilon | Gamma | None = None,
    steps: int = 50,
    batch_size: int = 64,
    top: int | None = None,
) -> Explanation:
    """Explain the energies that ``model`` predicts for ``molecules``.

    Parameters
    ----------
    model : a trained model (`qmlx.load_model`), or the estimator itself: an interaction network
        (SchNet, DTNN), an `Ensemble` of them, or a `KRRModel` on cm, sorted-cm or bob features.
        Left unchanged.
    molecules : `Molecules` or a list of ``ase.Atoms``, positions in Å. Molecules outside the
        model's domain raise `qmlx.errors.DomainError` as in prediction (unknown elements,
        atoms closer than 0.5 Å, periodic cells, another charge or spin).
    method : a name in `METHODS` (see the module docstring); ``None``: ``lrp`` for networks,
        ``neuralized`` for kernel models.
    rule : LRP rule for the linear layers: `Epsilon` (default, eps = 1e-9) or `Gamma`.
    steps : integration steps of ``integrated-gradients``.
    batch_size : molecules per batch (``lrp-pairs`` runs one molecule at a time).
    top : ``lrp-walks``: keep the ``top`` strongest walks per molecule (``None``: all); the atom
        relevances and ``walks_total`` are over all walks either way.
    """
    from qmlx.models import as_trained_model

    trained = as_trained_model(model)
    kind = trained.kind
    what = _KIND_NAMES.get(kind, kind)
    usable = methods_for(kind)
    if not usable:
        raise QmlxError(f"no explanation method explains {what} models")
    method = method or DEFAULT_METHOD.get(kind, usable[0])
    if method not in METHODS:
        raise QmlxError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")
    if method not in usable:
        raise QmlxError(
            f"method {method!r} does not explain {what} models; {what} models are explained with: "
            + ", ".join(usable)
        )
    molecules = as_molecules(molecules)
    trained.check_domain(molecules)
    options = Options(rule or Epsilon(), steps, batch_size, top)
    entry = METHODS[method]
    if kind == "ensemble" and kind not in entry.kinds:
        return _explain_members(entry, trained.estimator.members, molecules, options)
    return entry.run(trained.estimator, molecules, options)
