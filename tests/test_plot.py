"""Pictures of explanations: pages, colour-bar units, atom labels, names, depictions, reports."""

from __future__ import annotations

import re

import ase
import numpy as np
import pytest
from ase.build import molecule
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from qmlx.data.molecules import as_molecules
from qmlx.errors import QmlxError
from qmlx.explain import Explanation, explain
from qmlx.explain.plot import (
    PER_PAGE,
    colorbar_label,
    depict,
    explanation_figures,
    label_color,
    page_paths,
    plot_explanation,
    project_2d,
    write_html_report,
)

FORMULAS = ["C6H6", "CH4", "H2O", "CH3CH2OH", "C2H6", "CH3COOH", "C2H4", "CH3OH", "C3H8"]
PNG = b"\x89PNG\r\n\x1a\n"


def _explanation(atoms: list[ase.Atoms], method: str = "lrp", seed: int = 0) -> Explanation:
    """An explanation built by hand: relevance k - n/2 for atom k, so atoms are told apart."""
    mols = as_molecules(atoms)
    relevance = np.concatenate([np.arange(len(a)) - len(a) / 2 for a in atoms]).astype(float)
    if method == "gradient":
        relevance = np.abs(relevance)
    prediction = -100.0 * np.arange(1, len(atoms) + 1)
    return Explanation(method, mols, relevance, prediction, np.zeros(len(atoms)))


def _thirteen() -> list[ase.Atoms]:
    return [molecule(FORMULAS[i % len(FORMULAS)]) for i in range(13)]


def _panels(fig) -> list:
    """Axes that hold a molecule (their gid names the depiction used)."""
    return [ax for ax in fig.axes if (ax.get_gid() or "").startswith("depiction-")]


def _atom_labels(ax) -> dict[int, str]:
    return {
        int(t.get_gid().split("-")[1]): t.get_text()
        for t in ax.texts
        if (t.get_gid() or "").startswith("atom-")
    }


def _colorbar_text(fig) -> str:
    return fig.axes[-1].get_xlabel()  # the colour bar, added last, below the panels


def methyl_radical() -> ase.Atoms:
    """CH3 with an odd electron count: RDKit cannot assign bonds to it as a neutral molecule."""
    return molecule("CH3")


@pytest.fixture
def tiny_network():
    import torch

    from qmlx.nn import SchNet

    torch.manual_seed(0)
    model = SchNet(n_features=8, n_interactions=1)
    with torch.no_grad():
        model.head.reference[[1, 6, 8]] = torch.tensor([-10.0, -40.0, -60.0], dtype=torch.float64)
    return model.eval()


def test_thirteen_molecules_give_two_pages_with_all_panels():
    e = _explanation(_thirteen())
    figures = explanation_figures(e, names=[f"mols.xyz #{i}" for i in range(13)])
    assert len(figures) == 2
    assert [len(_panels(f)) for f in figures] == [PER_PAGE, 1]
    titles = [ax.get_title() for f in figures for ax in _panels(f)]
    assert [t.splitlines()[0] for t in titles] == [f"mols.xyz #{i}" for i in range(13)]


@pytest.mark.slow
def test_plot_writes_every_page_and_returns_the_paths(tmp_path):
    e = _explanation(_thirteen())
    out = tmp_path / "many.png"
    written = plot_explanation(e, out)
    assert written == [out, tmp_path / "many-2.png"] == page_paths(out, 2)
    assert all(p.read_bytes()[:8] == PNG for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many-2.png", "many.png"]  # no temporary files
    assert plot_explanation(e, tmp_path / "five.png", per_page=5) == page_paths(tmp_path / "five.png", 3)
    assert plot_explanation(e, tmp_path / "first.png", max_molecules=4) == [tmp_path / "first.png"]


def test_pdf_gets_one_page_per_figure(tmp_path):
    e = _explanation(_thirteen())
    out = tmp_path / "many.pdf"
    assert plot_explanation(e, out) == [out]
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", out.read_bytes())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["many.pdf"]


def test_gradient_colorbar_has_no_energy_unit_and_lrp_has_kcal_per_mol():
    atoms = [molecule("H2O"), molecule("CH4")]
    (grad,) = explanation_figures(_explanation(atoms, "gradient"))
    assert "kcal/mol" not in _colorbar_text(grad) and "sensitivity" in _colorbar_text(grad)
    (lrp,) = explanation_figures(_explanation(atoms, "lrp"))
    assert "kcal/mol" in _colorbar_text(lrp) and "LRP" in _colorbar_text(lrp)
    grad_e = _explanation(atoms, "gradient")
    for method in ("decomposition", "integrated-gradients", "gradient-x-input", "neuralized", "lrp-pairs"):
        assert colorbar_label(_explanation(atoms, method)).endswith("[kcal/mol]"), method
    assert colorbar_label(grad_e, unit="kcal/mol per unit of embedding").endswith(
        "[kcal/mol per unit of embedding]"
    )
    assert colorbar_label(_explanation(atoms), unit="") == "LRP relevance"
    (custom,) = explanation_figures(grad_e, label="my own label")
    assert _colorbar_text(custom) == "my own label"


def test_gradient_colour_scale_starts_at_zero():
    (fig,) = explanation_figures(_explanation([molecule("CH4")], "gradient"))
    assert fig.axes[-1].get_xlim()[0] == 0.0
    (fig,) = explanation_figures(_explanation([molecule("CH4")], "lrp"))
    lo, hi = fig.axes[-1].get_xlim()
    assert lo == pytest.approx(-hi)


@pytest.mark.parametrize("depiction", ["auto", "3d"])
def test_atom_labels_are_element_and_index_in_file_order(depiction):
    # hydrogens before the oxygen, so that file order differs from any element order
    water = ase.Atoms("HOH", positions=[[0.757, 0.586, 0], [0, 0, 0], [-0.757, 0.586, 0]])
    mols = [water, molecule("CH3CH2OH")]
    (fig,) = explanation_figures(_explanation(mols), depiction=depiction)
    for ax, atoms in zip(_panels(fig), mols):
        symbols = atoms.get_chemical_symbols()
        assert _atom_labels(ax) == {k: f"{s}{k}" for k, s in enumerate(symbols)}
    if depiction == "3d":  # each label sits on its own atom
        ax = _panels(fig)[1]
        xy = project_2d(mols[1].positions)
        for t in ax.texts:
            k = int(t.get_gid().split("-")[1])
            assert np.allclose(t.get_position(), xy[k])


def test_names_formula_and_energy_in_titles_and_checked():
    mols = [molecule("C6H6"), molecule("H2O")]
    e = _explanation(mols)
    (fig,) = explanation_figures(e, names=["benzene.xyz", "water.xyz"])
    titles = [ax.get_title() for ax in _panels(fig)]
    assert "benzene.xyz" in titles[0] and "C6H6" in titles[0] and "-100.0 kcal/mol" in titles[0]
    assert "water.xyz" in titles[1] and "H2O" in titles[1] and "-200.0 kcal/mol" in titles[1]
    (fig,) = explanation_figures(e)
    assert [ax.get_title().splitlines()[0] for ax in _panels(fig)] == ["molecule 0", "molecule 1"]
    with pytest.raises(QmlxError, match="one name per molecule"):
        explanation_figures(e, names=["only one"])
    with pytest.raises(QmlxError, match="depiction"):
        explanation_figures(e, depiction="4d")


def test_label_colour_follows_fill_luminance():
    assert label_color("navy") == "white" and label_color((0.4, 0.0, 0.12)) == "white"
    assert label_color("white") == "black" and label_color((0.97, 0.85, 0.8)) == "black"
    # drawn: the most relevant atom (dark fill) gets white text, one near zero (light fill) black
    atoms = molecule("CH4")
    mols = as_molecules([atoms])
    e = Explanation("lrp", mols, np.array([-10.0, 0.1, 0.0, 0.0, 0.0]), np.array([-400.0]), np.zeros(1))
    (fig,) = explanation_figures(e)
    texts = {int(t.get_gid().split("-")[1]): t for t in _panels(fig)[0].texts}
    assert texts[0].get_color() == "white" and texts[1].get_color() == "black"
    discs = {tuple(np.round(p.center, 6)): p for p in _panels(fig)[0].patches}
    fill = discs[tuple(np.round(texts[0].get_position(), 6))].get_facecolor()
    assert fill == pytest.approx(to_rgba(fill)) and label_color(fill) == "white"


@pytest.mark.slow
def test_nothing_is_cut_off():
    """Every title, atom label and colour-bar label lies inside the figure."""
    names = ["a/long/folder/name/with/many/parts/benzene_from_the_database.xyz"] + [
        f"mols.xyz #{i}" for i in range(1, 13)
    ]
    three = [molecule("C6H6"), molecule("CH4"), molecule("H2O")]  # one row, a tall middle panel
    cases = [(_explanation(_thirteen(), "lrp"), names), (_explanation(_thirteen(), "gradient"), names)]
    cases += [(_explanation(three, "gradient"), None), (_explanation(three[1:2], "lrp-pairs"), None)]
    for e, panel_names in cases:
        for fig in explanation_figures(e, names=panel_names):
            renderer = FigureCanvasAgg(fig).get_renderer()
            fig.draw(renderer)
            box = fig.bbox
            texts = [t for ax in fig.axes for t in [ax.title, ax.xaxis.label, *ax.texts] if t.get_text()]
            assert texts
            for t in texts:
                ext = t.get_window_extent(renderer)
                assert box.x0 - 0.5 <= ext.x0 and ext.x1 <= box.x1 + 0.5, t.get_text()
                assert box.y0 - 0.5 <= ext.y0 and ext.y1 <= box.y1 + 0.5, t.get_text()


def test_rdkit_2d_depiction_for_benzene_and_fallback_when_bonds_cannot_be_assigned():
    pytest.importorskip("rdkit.Chem.rdDetermineBonds")
    benzene = molecule("C6H6")
    layout = depict(benzene)
    assert layout.kind == "2d" and len(layout.bonds) == 12
    lengths = np.linalg.norm(layout.xy[layout.bonds[:, 0]] - layout.xy[layout.bonds[:, 1]], axis=1)
    assert np.allclose(lengths, lengths[0], rtol=0.02)  # a regular 2-D drawing, not a projection
    assert sorted(layout.orders[:6].tolist() + layout.orders[6:].tolist()).count(2) == 3  # Kekulé ring
    assert depict(benzene, "3d").kind == "3d"
    assert depict(methyl_radical()).kind == "3d"
    assert depict(methyl_radical(), "2d").kind == "3d"
    (fig,) = explanation_figures(_explanation([benzene, methyl_radical()]))
    assert [ax.get_gid() for ax in _panels(fig)] == ["depiction-2d", "depiction-3d"]
    assert "RDKit" in _panels(fig)[1].get_xlabel() and _panels(fig)[0].get_xlabel() == ""


def test_depiction_without_rdkit_falls_back(monkeypatch):
    import qmlx.explain.plot as plot

    monkeypatch.setattr(plot, "_have_rdkit", lambda: False)
    monkeypatch.setattr(plot, "_rdkit_depiction", lambda atoms: None)
    assert depict(molecule("C6H6")).kind == "3d"
    with pytest.raises(QmlxError, match="RDKit"):
        depict(molecule("C6H6"), "2d")
    (fig,) = explanation_figures(_explanation([molecule("C6H6")]))
    assert _panels(fig)[0].get_xlabel() == ""  # no note on every panel when RDKit is simply absent


def test_network_explanation_with_pairs_to_png(tiny_network, tmp_path):
    mols = [molecule("H2O"), molecule("CH3CH2OH")]
    e = explain(tiny_network, mols, "lrp-pairs")
    out = tmp_path / "pairs.png"
    assert plot_explanation(e, out, ["water.xyz", "ethanol.xyz"], pairs=True) == [out]
    assert out.read_bytes()[:8] == PNG
    (fig,) = explanation_figures(e, pairs=True)
    assert "pair relevance" in _colorbar_text(fig)
    (grad,) = explanation_figures(explain(tiny_network, mols, "gradient"))
    assert "kcal/mol" not in _colorbar_text(grad)


def test_html_report_is_self_contained(tmp_path):
    mols = [molecule("C6H6"), molecule("H2O")]
    e = _explanation(mols)
    e.bias = np.zeros(len(e.relevance))
    out = tmp_path / "report.html"
    meta = {"model": "tiny <SchNet>", "quantity": "atomization energy"}
    assert write_html_report(e, out, ["benzene.xyz", "water.xyz"], meta) == out
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 3  # colour bar + 2 molecules
    assert "benzene.xyz" in text and "water.xyz" in text and "tiny &lt;SchNet&gt;" in text
    assert text.count("<tr><td>") == 12 + 3 and "<th>bias</th>" in text
    # nothing fetched from elsewhere: the 3-D views are inline scripts drawing on canvases
    assert not re.search(r"<script[^>]|<link|<img|src=|href=\"http", text)
    assert text.count("<canvas") == 2 and text.count("<script>") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
