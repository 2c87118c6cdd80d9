"""schnetpack models in qmlx: `qmlx.nn.schnetpack` and ``qmlx model import schnetpack``.

The fixtures in ``tests/fixtures/schnetpack`` were made with schnetpack 2.1.1 by
``make_fixtures.py`` there (a SchNet trained by ``spktrain`` for a few epochs on 40 small molecules,
and the energies schnetpack itself gave, in float64). schnetpack is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase
import numpy as np
import pytest
import torch

from qmlx.cli import main
from qmlx.errors import DataFormatError
from qmlx.models import load_model
from qmlx.nn.schnetpack import _resolve, convert_schnetpack, import_schnetpack, read_schnetpack
from qmlx.units import EV_TO_KCAL_MOL, HARTREE_TO_KCAL_MOL

FIXTURES = Path(__file__).parent / "fixtures" / "schnetpack"
STATE_DICT = FIXTURES / "schnet_state_dict.pt"
RUN = FIXTURES / "run"


@pytest.fixture(scope="module")
def reference():
    """schnetpack's own energies (eV) of 43 molecules, and the molecules."""
    ref = json.loads((FIXTURES / "reference.json").read_text())
    atoms = [ase.Atoms(m["numbers"], m["positions"]) for m in ref["molecules"]]
    return atoms, np.array([m["energy"] for m in ref["molecules"]])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("spk") / "model.pt"
    import_schnetpack(STATE_DICT, out)
    return out


def test_fixtures_are_small():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 1_000_000


def test_state_dict_gives_schnetpacks_energies(converted, reference):
    atoms, energy_ev = reference
    pred = load_model(converted).predict(atoms)
    assert pred.in_domain.all() and all(e is None for e in pred.errors)
    # schnetpack's energies are totals of -1,000 to -9,000 eV; float32 networks agree to 1e-5 eV
    np.testing.assert_allclose(pred.energy / EV_TO_KCAL_MOL, energy_ev, rtol=0, atol=1e-5)
    assert np.abs(energy_ev).min() > 1000  # the offsets (mean and atom references) are in


def test_every_way_of_reading_gives_the_same_weights():
    sd = read_schnetpack(STATE_DICT)
    folder = read_schnetpack(RUN, trust_pickle=True)
    pickled = read_schnetpack(RUN / "best_model", trust_pickle=True)
    for other in (folder, pickled):
        assert set(other.state_dict) == set(sd.state_dict)
        for key, value in sd.state_dict.items():
            assert torch.equal(other.state_dict[key], value), key
    # the pickle says what a state dict cannot: the head's activation, how atoms are summed, offsets
    s = pickled.settings
    assert s["head_activation"] == "silu" and s["interaction_activation"] == "ssp"
    assert s["representation"] == "SchNet" and s["aggregation"] == "sum" and s["property"] == "energy"
    assert s["add_mean"] is True and s["add_atomrefs"] is True
    assert sd.settings == {}


def test_pickle_is_read_only_when_trusted(tmp_path, capsys):
    out = tmp_path / "m.pt"
    with pytest.raises(DataFormatError, match="--trust-pickle"):
        read_schnetpack(RUN)
    assert main(["model", "import", "schnetpack", str(RUN), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs code" in err and "--trust-pickle" in err
    assert not out.exists()
    assert main(["model", "import", "schnetpack", str(RUN), "--out", str(out), "--trust-pickle"]) == 0
    assert out.exists()


def test_pickled_objects_outside_torch_are_inert_records():
    """Unpickling builds records of schnetpack's classes instead of importing them."""
    from qmlx.nn.schnetpack import _load_pickled, _Record

    model = _load_pickled(RUN / "best_model")
    assert (
        isinstance(model, _Record) and type(model)._qualname == "schnetpack.model.base.NeuralNetworkPotential"
    )
    assert not hasattr(model, "forward")


def test_other_architectures_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert (
        main(["model", "import", "schnetpack", str(FIXTURES / "painn_state_dict.pt"), "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a PaiNN model" in err and "SchNet potentials" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda sd: sd.__setitem__(
                "representation.radial_basis.widths",
                sd["representation.radial_basis.widths"] * torch.linspace(1, 2, 12),
            ),
            "one common Gaussian width",
        ),
        (
            lambda sd: sd.__setitem__(
                "representation.electronic_embeddings.0.linear_q.weight", torch.zeros(2, 2)
            ),
            "charge or spin",
        ),
        (
            lambda sd: sd.__setitem__("output_modules.0.outnet.2.weight", torch.zeros(1, 1)),
            "head of 3 layers",
        ),
        (
            lambda sd: sd.__setitem__("output_modules.1.outnet.0.weight", torch.zeros(1, 1)),
            "2 Atomwise output heads",
        ),
        (lambda sd: sd.pop("representation.embedding.weight"), "nuclear embedding"),
    ],
)
def test_unsupported_state_dicts_are_refused(tmp_path, edit, message):
    sd = torch.load(STATE_DICT, weights_only=True)
    edit(sd)
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    with pytest.raises(DataFormatError, match=message):
        convert_schnetpack(read_schnetpack(path))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"aggregation": "avg"}, "aggregated by 'avg'"),
        ({"distance_unit": "Bohr"}, "positions in Bohr"),
        ({"interaction_activation": "silu"}, "interactions with activation silu"),
        ({"is_extensive": False}, "intensive"),
    ],
)
def test_unsupported_settings_are_refused(settings, message):
    source = read_schnetpack(STATE_DICT)
    source.settings.update(settings)
    with pytest.raises(DataFormatError, match=message):
        convert_schnetpack(source)


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(DataFormatError, match=r"notes.pt: not a torch file"):
        read_schnetpack(bad)
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(DataFormatError, match="not a state dict"):
        read_schnetpack(tmp_path / "dict.pt")
    with pytest.raises(DataFormatError, match="no best_model"):
        read_schnetpack(tmp_path)


def test_units_scale_energies_and_contradictions_are_refused(reference):
    atoms, energy_ev = reference
    source = read_schnetpack(STATE_DICT)
    model, info = convert_schnetpack(source, unit="Hartree")
    assert info["unit"] == "Hartree" and info["unit_from"] == "option"
    from qmlx.models import as_trained_model

    pred = as_trained_model(model).predict(atoms[:3])
    # read as Hartree, the same outputs are 27.2 times larger in kcal/mol than read as eV
    np.testing.assert_allclose(pred.energy / HARTREE_TO_KCAL_MOL, energy_ev[:3], rtol=1e-7)
    assert convert_schnetpack(source)[1]["unit"] == "eV"  # schnetpack's default
    with pytest.raises(DataFormatError, match="'kcal/mole'.*did you mean 'kcal/mol'"):
        convert_schnetpack(source, unit="kcal/mole")
    folder = read_schnetpack(RUN, trust_pickle=True)
    folder.settings.update(unit="eV", unit_from="config.yaml")
    with pytest.raises(DataFormatError, match="in eV, not Hartree"):
        convert_schnetpack(folder, unit="Hartree")


def test_head_activation_matters_and_a_file_that_states_it_wins(reference):
    atoms, energy_ev = reference
    source = read_schnetpack(STATE_DICT)
    from qmlx.models import as_trained_model

    wrong, info = convert_schnetpack(source, head_activation="ssp")
    assert info["head_activation"] == "ssp" and info["head_activation_from"] == "option"
    off = np.abs(as_trained_model(wrong).predict(atoms).energy / EV_TO_KCAL_MOL - energy_ev)
    assert off.max() > 0.01  # a silently wrong activation would be visible in the energies
    pickled = read_schnetpack(RUN, trust_pickle=True)
    with pytest.raises(DataFormatError, match="head activation is silu, not ssp"):
        convert_schnetpack(pickled, head_activation="ssp")


def test_config_interpolations_resolve():
    config = {"globals": {"cutoff": 4.0, "p": "energy"}, "a": "${globals.cutoff}", "b": "x_${globals.p}",
              "c": "${hydra:runtime.cwd}", "d": ["${globals.p}"]}  # fmt: skip
    out = _resolve(config, config)
    assert (
        out["a"] == 4.0
        and out["b"] == "x_energy"
        and out["c"] == "${hydra:runtime.cwd}"
        and out["d"] == ["energy"]
    )


def test_converted_model_explains_and_conserves(converted, reference):
    from qmlx.explain import explain

    atoms, _ = reference
    model = load_model(converted)
    lrp = explain(model, atoms[:4], method="lrp")
    np.testing.assert_allclose(lrp.conservation_error(), 0.0, atol=1e-6)
    pairs = explain(model, atoms[:2], method="lrp-pairs")
    np.testing.assert_allclose(pairs.conservation_error(), 0.0, atol=1e-6)
    walks = explain(model, atoms[:1], method="lrp-walks")
    assert walks.conservation_error() == pytest.approx(0.0, abs=1e-6)
    from qmlx.explain.potential import chemical_potential

    grid = np.array([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])  # Å, near the molecule
    omega = chemical_potential(model.estimator, atoms[0], grid)
    assert np.isfinite(omega).all()


def test_converted_model_runs_in_the_calculator(converted, reference):
    from qmlx.calculator import QmlxCalculator

    atoms, energy_ev = reference
    mol = atoms[5].copy()
    mol.calc = QmlxCalculator(str(converted))
    assert mol.get_potential_energy() == pytest.approx(energy_ev[5], abs=1e-5)  # ASE's unit: eV
    forces = mol.get_forces()
    step = 1e-3
    shifted = mol.copy()
    shifted.positions[0, 0] += step
    shifted.calc = QmlxCalculator(str(converted))
    # float32 energies of -1,000 eV resolve 1e-4 eV: a loose finite difference, but a real one
    assert -(shifted.get_potential_energy() - mol.get_potential_energy()) / step == pytest.approx(
        forces[0, 0], abs=0.2
    )


def test_training_data_gives_a_domain_and_novelty(tmp_path, capsys, reference):
    out = tmp_path / "m.pt"
    argv = ["model", "import", "schnetpack", str(RUN), "--out", str(out), "--trust-pickle",
            "--data", str(FIXTURES / "molecules.db"), "--describe", "toy EMT energy"]  # fmt: skip
    assert main(argv) == 0
    assert "domain and novelty from 30 molecules" in capsys.readouterr().err
    model = load_model(out)
    meta = model.metadata
    assert meta["n_train"] == 30 and meta["target_description"] == "toy EMT energy"
    assert sorted(meta["domain"]["elements"]) == [1, 6, 7, 8]
    assert model.novelty is not None
    atoms, _ = reference
    pred = model.predict(atoms)
    assert np.isfinite(pred.novelty).all()
    from qmlx.explain import explain

    nov = explain(model, atoms[:3], method="novelty")
    assert np.allclose(nov.conservation_error(), 0.0, atol=1e-6)
    fluorine = ase.Atoms("HF", positions=[[0, 0, 0], [0, 0, 0.92]])
    pred = model.predict([fluorine, atoms[0]])
    assert pred.errors[0] is not None and "F" in pred.errors[0] and np.isnan(pred.energy[0])
    assert pred.errors[1] is None and np.isfinite(pred.energy[1])
