"""The 3-D view of explanations, checked in a real browser: headless Chromium draws each page, and
every atom's colour is read back from the screenshot.

For a few molecules of ASE's G2 collection explained by ``qm7-schnet`` (LRP), the script writes
the 3-D view (`qmlx.explain.view3d.view3d_html`) into a page with nothing else on it, has Chromium
(Debian's package ``chromium``) take a screenshot, and compares, for every atom that nothing is
drawn over, the pixel at a point of its disc away from its label and highlight with the relevance
colour it should have (0-255 per channel). Chromium runs with the network off, and the page is
checked to link nothing outside it. A screenshot of the page with every molecule and an RDKit-style
similarity map go to the docs.

    python experiments/view3d.py              # needs /usr/bin/chromium (apt-get install chromium)

Writes ``view3d.json`` and ``.md`` to ``--out-dir`` (default ``results/``), the screenshot to
``docs/img/view3d.png`` and the similarity map to ``docs/img/similarity_map.png``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

MOLECULES = ("CH3CH2OH", "CH3CONH2", "C6H6", "CH3COOH", "CH3CN")
SIZE = 400  # canvas pixels
SCREENSHOT = report.ROOT / "docs" / "img" / "view3d.png"
SIMILARITY_MAP = report.ROOT / "docs" / "img" / "similarity_map.png"
#: Chromium with the network off: every host name fails to resolve, every connection goes nowhere
NETWORK_OFF = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
)


def expected_pixels(atoms, values, norm, cmap: str) -> list[dict]:
    """Per atom: where the viewer's first frame draws it (identity rotation, as the script in
    `qmlx.explain.view3d` projects), the colour it should have there, and whether anything drawn
    later covers that point."""
    import matplotlib
    from ase.data import covalent_radii
    from matplotlib.colors import to_rgb

    from qmlx.chem import bonds

    P = atoms.positions - atoms.positions.mean(axis=0)
    radius = 0.3 * covalent_radii[atoms.numbers] + 0.2
    span = max(1.5, float(np.max(np.linalg.norm(P, axis=1) + radius)))
    f = SIZE / (2.2 * span)
    xy = np.c_[SIZE / 2 + f * P[:, 0], SIZE / 2 - f * P[:, 1]]
    depth = P[:, 2]
    b = bonds(atoms)
    width = max(2.0, 0.12 * f)
    out = []
    for k in range(len(atoms)):
        r = radius[k] * f
        point = xy[k] + np.array([0.3 * r, 0.6 * r])
        covered = any(
            depth[j] > depth[k] and np.linalg.norm(point - xy[j]) < radius[j] * f + 2
            for j in range(len(atoms))
        )
        for i, j in b:
            if (depth[i] + depth[j]) / 2 - 0.01 > depth[k]:
                a, c = xy[i], xy[j]
                t = np.clip(np.dot(point - a, c - a) / max(np.dot(c - a, c - a), 1e-12), 0, 1)
                covered |= np.linalg.norm(point - (a + t * (c - a))) < width / 2 + 2
        colour = np.array(to_rgb(matplotlib.colors.to_hex(matplotlib.colormaps[cmap](norm(values[k]))))) * 255
        out.append(
            {
                "atom": k,
                "point": point.round().astype(int).tolist(),
                "rgb": colour.tolist(),
                "covered": bool(covered),
            }
        )
    return out


def screenshot(html_file: Path, png: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("view3d: needs Chromium (Debian: apt-get install chromium)")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
         *NETWORK_OFF, f"--window-size={width},{height}", f"--screenshot={png}", html_file.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def compute(args: argparse.Namespace) -> dict:
    import ase.build
    import matplotlib.image

    from qmlx.explain import explain
    from qmlx.explain.plot import CMAP, _norm
    from qmlx.explain.view3d import view3d_html, write_view3d
    from qmlx.models import load_model

    model = load_model("qm7-schnet")
    frames = [ase.build.molecule(name) for name in MOLECULES]
    e = explain(model, frames, method="lrp")
    norm = _norm(e, range(len(frames)), True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, atoms) in enumerate(zip(MOLECULES, e.molecules)):
            snippet = view3d_html(atoms, e.molecule(i), norm, CMAP, "v", "kcal/mol", size=SIZE)
            page = Path(tmp) / f"{i}.html"
            page.write_text(
                '<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:0;background:#fff}'
                f"canvas{{border:none!important}}</style></head><body>{snippet}</body></html>"
            )
            png = Path(tmp) / f"{i}.png"
            screenshot(page, png, SIZE, SIZE)
            image = (matplotlib.image.imread(png)[..., :3] * 255).round()
            checks = [c for c in expected_pixels(atoms, e.molecule(i), norm, CMAP) if not c["covered"]]
            errors = [float(np.abs(image[c["point"][1], c["point"][0]] - c["rgb"]).max()) for c in checks]
            corner = image[:5, :5].reshape(-1, 3)
            rows.append({
                "molecule": name,
                "formula": atoms.get_chemical_formula(),
                "atoms": len(atoms),
                "atoms_checked": len(checks),
                "max_colour_error": max(errors),
                "background_white": bool((corner == 255).all()),
                "external_urls": len(re.findall(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page.read_text())),
            })  # fmt: skip
        full = Path(tmp) / "all.html"
        write_view3d(e, full, list(MOLECULES))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        screenshot(full, Path(tmp) / "all.png", 1300, 560)
        shutil.copyfile(Path(tmp) / "all.png", SCREENSHOT)
    from qmlx.explain.plot import similarity_map

    similarity_map(e, MOLECULES.index("CH3CONH2"), SIMILARITY_MAP, with_hydrogens=False)
    return {"model": "qm7-schnet", "method": "lrp", "browser": version, "browser_flags": list(NETWORK_OFF),
            "canvas_px": SIZE, "molecules": rows}  # fmt: skip


def render(result: dict, out_dir: Path) -> None:
    rows = result["molecules"]
    lines = [
        "# The 3-D view in a browser",
        "",
        f"{result['browser']}, headless and with the network off (`{' '.join(result['browser_flags'])}`), one "
        f"screenshot of each molecule's view ({result['canvas_px']} px canvas); {result['model']}, "
        f"{result['method']} relevances. For every atom that nothing is drawn over, "
        "the pixel at a point of its disc away from its label and highlight is compared with the relevance "
        "colour it should have (largest difference over the three channels, 0-255).",
        "",
        *report.table(
            [
                "molecule",
                "formula",
                "atoms",
                "atoms checked",
                "largest colour difference",
                "background white",
                "links to the network",
            ],
            [
                [
                    r["molecule"],
                    r["formula"],
                    r["atoms"],
                    r["atoms_checked"],
                    f"{r['max_colour_error']:.0f}",
                    "yes" if r["background_white"] else "no",
                    r["external_urls"],
                ]
                for r in rows
            ],
        ),  # fmt: skip
        "",
        "The page with every molecule, as Chromium drew it: [docs/img/view3d.png](../docs/img/view3d.png).",
        "",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "view3d.md", lines)


def build_parser() -> argparse.ArgumentParser:
    return report.make_parser(__doc__)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "view3d", argv)


if __name__ == "__main__":
    main()
