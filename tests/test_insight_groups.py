"""Group energies (`qmlx.chem.groups`, `qmlx.insight.groups`), the additivity check, model
comparison (`qmlx.insight.compare`) and the ``qmlx insight`` commands."""

from __future__ import annotations

import json

import ase
import ase.build
import ase.io
import numpy as np
import pytest

from qmlx.chem.groups import FUNCTIONAL_GROUPS, RING_GROUPS, Group, load_groups, match_groups, read_groups
from qmlx.cli import main
from qmlx.data import Molecules
from qmlx.errors import DataFormatError
from qmlx.explain.contributions import element_references
from qmlx.insight.groups import group_additivity, group_energies
from qmlx.models import load_model

G2 = ("CH3COCH3", "CH3CH2OH", "CH3CONH2", "C6H6", "CH3CN", "CH3COOH", "HCOOCH3", "CH3OCH3")


@pytest.fixture(scope="module")
def g2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("g2") / "g2.extxyz"
    ase.io.write(path, [ase.build.molecule(n) for n in G2])
    return path


def test_library_holds_at_least_30_functional_groups_that_rdkit_reads():
    assert len(FUNCTIONAL_GROUPS) >= 30 and len(RING_GROUPS) >= 10
    names = [g.name for g in FUNCTIONAL_GROUPS + RING_GROUPS]
    assert len(set(names)) == len(names)
    assert load_groups("functional,rings") == FUNCTIONAL_GROUPS + RING_GROUPS


def test_matches_take_the_mapped_atoms_and_their_hydrogens():
    acetone, acetamide = ase.build.molecule("CH3COCH3"), ase.build.molecule("CH3CONH2")
    groups = load_groups("functional")
    found = match_groups([acetone, acetamide], groups)
    by = {(o.group, o.molecule): o for o in found.occurrences}
    ketone = by[("ketone", 0)]
    assert sorted(acetone.numbers[list(ketone.atoms)]) == [6, 8] and ketone.hydrogens == ()
    amide = by[("primary_amide", 1)]
    assert sorted(acetamide.numbers[list(amide.atoms)]) == [6, 7, 8] and len(amide.hydrogens) == 2
    assert sum(o.group == "methyl" for o in found.occurrences if o.molecule == 0) == 2
    assert not found.failures


def test_a_group_energy_is_the_sum_of_predicted_atom_energies_minus_references(g2_file, capsys):
    """The same number by hand, from ``qmlx predict --atoms`` and the model's element references."""
    assert main(["predict", "qm7-schnet", str(g2_file), "--atoms", "--format", "json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)["molecules"]
    ref = element_references(load_model("qm7-schnet"))
    acetone = ase.build.molecule("CH3COCH3")
    carbonyl = [i for i, z in enumerate(acetone.numbers) if z == 8]
    carbon = [
        i
        for i, a in enumerate(acetone)
        if a.symbol == "C" and np.min(np.linalg.norm(acetone.positions[carbonyl] - a.position, axis=1)) < 1.4
    ]
    by_hand = sum(rows[0]["atoms"][i]["energy"] - ref[acetone.numbers[i]] for i in carbonyl + carbon)
    assert main(["insight", "groups", "qm7-schnet", "--data", str(g2_file), "--all", "--format", "json",
                 "--resamples", "50"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    ketone = next(r for r in report["groups"] if r["group"] == "ketone")
    assert ketone["occurrences"] == 1 and ketone["molecules"] == 1
    assert ketone["decomposition"] == pytest.approx(by_hand, abs=1e-4)
    assert ketone["decomposition_low"] == pytest.approx(by_hand, abs=1e-4)  # one molecule: no spread
    assert report["molecules"] == "all molecules" and report["perception_failures"] == 0


def test_intervals_baselines_and_failures(g2_file):
    from qmlx.data import load_dataset

    mols = load_dataset(g2_file)
    radical = Molecules.from_atoms(
        [ase.Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.94, 0], [-0.54, -0.94, 0]])],
        targets={},
    )
    both = Molecules.concatenate([mols, radical])
    result = group_energies(load_model("qm7-schnet"), both, "functional", n_resamples=200)
    assert list(result.failures) == [len(mols)]  # the methyl radical: no bond orders
    methyl = result.row("methyl")
    assert (
        methyl["occurrences"] == 9
        and methyl["decomposition_low"] <= methyl["decomposition"] <= methyl["decomposition_high"]
    )
    assert methyl["baseline"] + methyl["residual"] == pytest.approx(methyl["decomposition"])
    assert methyl["count_residual_low"] <= methyl["count_residual"] <= methyl["count_residual_high"]
    for row in result.summary:  # a flagged group: what is left beyond a baseline holds 0 or flips sign
        if row["confound"] == "composition":
            assert (
                row["residual_low"] <= 0 <= row["residual_high"] or row["residual"] * row["decomposition"] < 0
            )
    assert result.row("urea")["occurrences"] == 0 and result.row("urea")["decomposition"] is None


def test_group_additivity_is_element_references_then_increments_by_least_squares(g2_file):
    from qmlx.chem import element_counts, fit_element_energies
    from qmlx.chem.groups import group_counts
    from qmlx.data import load_dataset

    mols = load_dataset(g2_file)
    groups = [
        g for g in FUNCTIONAL_GROUPS if g.name in ("ketone", "methyl", "aromatic_CH", "nitrile", "formyl")
    ]
    counts = group_counts(match_groups(mols, groups), groups, len(mols))
    refs = {1: -60.0, 6: -150.0, 7: -110.0, 8: -95.0}
    composition = element_counts(mols.Z, mols.n_atoms, sorted(refs))
    energy = composition @ np.array([refs[z] for z in sorted(refs)]) + counts @ np.array(
        [-12.0, -1.5, -4.0, -9.0, -20.0]
    )
    fit = group_additivity(mols, energy, mols, energy, groups, ridge=0.0)
    # by hand: element references by least squares, then the increments on what they leave
    fitted = fit_element_energies(mols.Z, mols.n_atoms, energy)
    residual = energy - composition @ np.array([fitted[z] for z in sorted(refs)])
    by_hand, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    np.testing.assert_allclose([fit.increments[g.name] for g in groups], by_hand, atol=1e-6)
    assert fit.element_references == pytest.approx(fitted)
    assert fit.test_mae == pytest.approx(np.mean(np.abs(residual - counts @ by_hand)), abs=1e-9)
    assert fit.test_mae < fit.element_only_test_mae


def test_groups_file_errors_name_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "mine.txt"
    path.write_text("# my groups\nketone  [#6][CX3:1](=[OX1:2])[#6]  a ketone\nbroken  C(((\n")
    with pytest.raises(
        DataFormatError, match=r"mine\.txt, line 3: group 'broken': RDKit cannot read the SMARTS"
    ):
        read_groups(path)
    path.write_text("ketone [CX3]=O\nketone [CX3]=O\n")
    with pytest.raises(DataFormatError, match=r"mine\.txt, line 2: group 'ketone' is defined again"):
        read_groups(path)
    path.write_text("lonely\n")
    with pytest.raises(DataFormatError, match=r"mine\.txt, line 1: expected a name and a SMARTS"):
        read_groups(path)
    assert main(["insight", "groups", "qm7-schnet", "--data", "qm7", "--groups", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.txt, line 1" in err
    path.write_text("carbonyl [CX3:1]=[OX1:2] any C=O\n")
    assert read_groups(path) == (Group("carbonyl", "[CX3:1]=[OX1:2]", "any C=O"),)


def test_compare_two_networks_and_a_model_with_itself(g2_file, capsys):
    argv = ["insight", "compare", "qm7-schnet", "qm7-dtnn", "qm7-schnet", "--data", str(g2_file), "--all",
            "--format", "json", "--resamples", "20", "--top", "3"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["models"] == ["qm7-schnet", "qm7-dtnn", "qm7-schnet"] and len(result["pairs"]) == 3
    same = next(p for p in result["pairs"] if p["a"] == p["b"])
    assert same["atom_pearson"] == pytest.approx(1.0) and same["mean_disagreement"] == pytest.approx(0.0)
    differ = result["pairs"][0]
    assert 0 < differ["mean_disagreement"] and -1 <= differ["atom_pearson"] < 1
    assert len(result["most_disagreeing"]) == 3
    methyl = next(r for r in result["groups"] if r["group"] == "methyl")
    assert methyl["energies"][0] == pytest.approx(methyl["energies"][2])


def test_groups_command_writes_a_figure_and_a_self_contained_html_report(g2_file, tmp_path, capsys):
    import re

    png, page = tmp_path / "groups.png", tmp_path / "groups.html"
    argv = ["insight", "groups", "qm7-schnet", "--data", str(g2_file), "--all", "--resamples", "20",
            "--png", str(png), "--html", str(page)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ketone" in out and "kcal/mol" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    found = match_groups([ase.build.molecule(n) for n in G2], FUNCTIONAL_GROUPS)
    occurring = {o.group for o in found.occurrences}
    assert text.count("<tr>") == len(occurring) + 1 and text.count("<svg") == 1
    assert not re.search(r"<script|<link|<img|src=|href=\"http", text)


def test_ring_report_on_qm7_molecules(qm7):
    from qmlx.chem.rings import perceive_rings
    from qmlx.explain.contributions import atom_contributions
    from qmlx.insight.rings import ring_report
    from qmlx.insight.statistics import pair_fraction

    mols = qm7.subset(np.arange(6765, 7165))  # QM7's largest molecules: aromatic and other rings
    model = load_model("qm7-schnet")
    report = ring_report(model, mols, n_resamples=50)
    rings = [r for i, a in enumerate(mols) for r in perceive_rings(a, i, sizes=(5, 6), fallback=False).rings]
    assert report["perception"]["n_rings"] == len(rings) > 0
    contributions = atom_contributions(model, mols, ["decomposition"])["decomposition"]
    energy = np.array(
        [r.energy(contributions[mols.offsets[r.molecule] : mols.offsets[r.molecule + 1]]) for r in rings]
    )
    aromatic = np.array([r.aromatic for r in rings])
    assert aromatic.any() and not aromatic.all()
    by_hand = pair_fraction(energy, aromatic, [r.composition for r in rings])  # the pairs, counted here
    both = report["ring_sets"]["5- and 6-rings"]
    assert both["n_pairs"] == by_hand.n_pairs > 0
    assert both["pairs_decomposition"]["value"] == pytest.approx(by_hand.fraction)
    assert (
        both["pairs_decomposition"]["low"]
        <= both["pairs_decomposition"]["value"]
        <= both["pairs_decomposition"]["high"]
    )
    assert sum(t["rings"] for t in report["types"]) == len(rings)


def test_ranked_ring_types_follow_their_means_and_find_parents(qm7):
    from qmlx.insight.rings import ranked_ring_types

    mols = qm7.subset(np.arange(6765, 7165))
    table = ranked_ring_types(load_model("qm7-schnet"), qm7, mols, min_count=5, n_resamples=50)
    rows = sorted(table["types"].values(), key=lambda t: t["rank"])
    assert len(rows) >= 3 and [t["rank"] for t in rows] == list(range(1, len(rows) + 1))
    means = [t["mean_per_atom"]["value"] for t in rows]
    assert means == sorted(means)  # rank 1 is the lowest energy per ring atom
    assert all(t["rank_low"] <= t["rank"] <= t["rank_high"] for t in rows)
    parents = [t["parent"] for t in rows if t["parent"]]
    assert parents and all(p["formula"] and np.isfinite(p["dft_per_atom"]) for p in parents)


def test_matched_contrasts_compare_groups_within_equal_composition_per_heavy_atom(g2_file):
    from qmlx.data import Molecules, load_dataset
    from qmlx.insight.groups import matched_contrasts
    from qmlx.insight.statistics import group_codes, matched_difference

    extra = Molecules.from_atoms(
        [ase.build.molecule("C4H4O")], targets={}
    )  # furan: an O without H, like ethers
    mols = Molecules.concatenate([load_dataset(g2_file), extra])
    result = group_energies(load_model("qm7-schnet"), mols, "functional", n_resamples=20)
    contrasts = matched_contrasts(result, min_occurrences=1, n_resamples=20)
    assert {"ether", "furan_O"} <= {n for c in contrasts for n in (c["a"], c["b"])}
    first = contrasts[0]
    per_heavy = result.occurrence_composition / result.occurrence_heavy[:, None]
    strata = group_codes([tuple(np.round(r, 6)) for r in per_heavy])
    names = [g.name for g in result.groups]
    in_a = result.occurrence_group == names.index(first["a"])
    in_b = result.occurrence_group == names.index(first["b"])
    values = result.occurrence_energy["decomposition"] / result.occurrence_heavy
    assert first["difference_per_heavy_atom"]["value"] == pytest.approx(
        matched_difference(values, in_a, in_b, strata)
    )
    shared = set(strata[in_a]) & set(strata[in_b])
    assert first["strata"] == len(shared) >= 1
