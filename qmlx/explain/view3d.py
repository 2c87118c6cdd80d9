"""A 3-D view of molecules coloured by relevance, as self-contained HTML: a ``<canvas>`` and a small
inline script, no network access when the page is viewed.

Atoms are discs (radius 0.3 of the covalent radius plus 0.2 Å, with a highlight at the upper left)
filled with the relevance colour of the explanation's picture (`qmlx.explain.plot`: red raises the energy,
blue lowers it, through the same colour scale), bonds (`qmlx.chem.bonds`) grey sticks. Drag to
rotate, scroll to zoom, double-click to reset; each atom is labelled with its element and 0-based
index, and hovering shows its relevance. The positions are in Å; what the page draws is an
orthographic projection, back to front.

`view3d_html` returns one molecule's snippet (what ``qmlx explain --html`` embeds beside each
picture); `write_view3d` writes a page with every molecule of an explanation.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import ase
import matplotlib
import numpy as np
from ase.data import chemical_symbols, covalent_radii
from matplotlib.colors import Normalize, to_hex

from qmlx._io import write_text_atomic
from qmlx.chem import bonds

# the viewer, in one function; DATA is {"id", "atoms": [[x, y, z, r, colour, label, tip], ...],
# "bonds": [[i, j], ...]}; it draws on the canvas whose id is DATA.id
_SCRIPT = """(function(D){
const c=document.getElementById(D.id),g=c.getContext('2d'),A=D.atoms,B=D.bonds;
let R=[[1,0,0],[0,1,0],[0,0,1]],zoom=1,drag=null;
const cx=A.reduce((s,a)=>s+a[0],0)/A.length,cy=A.reduce((s,a)=>s+a[1],0)/A.length,cz=A.reduce((s,a)=>s+a[2],0)/A.length;
const P=A.map(a=>[a[0]-cx,a[1]-cy,a[2]-cz]);
const span=Math.max(1.5,...P.map((p,i)=>Math.hypot(p[0],p[1],p[2])+A[i][3]));
function mul(M,N){return M.map(r=>[0,1,2].map(j=>r[0]*N[0][j]+r[1]*N[1][j]+r[2]*N[2][j]));}
function rx(t){const s=Math.sin(t),k=Math.cos(t);return [[1,0,0],[0,k,-s],[0,s,k]];}
function ry(t){const s=Math.sin(t),k=Math.cos(t);return [[k,0,s],[0,1,0],[-s,0,k]];}
function proj(){const f=zoom*Math.min(c.width,c.height)/(2.2*span);
 return P.map(p=>{const q=[0,1,2].map(i=>R[i][0]*p[0]+R[i][1]*p[1]+R[i][2]*p[2]);
  return [c.width/2+f*q[0],c.height/2-f*q[1],q[2],f];});}
function draw(){const Q=proj(),items=[];
 B.forEach(b=>items.push([(Q[b[0]][2]+Q[b[1]][2])/2-0.01,'b',b]));
 A.forEach((a,i)=>items.push([Q[i][2],'a',i]));
 items.sort((u,v)=>u[0]-v[0]);g.clearRect(0,0,c.width,c.height);
 for(const it of items){
  if(it[1]==='b'){const p=Q[it[2][0]],q=Q[it[2][1]];g.strokeStyle='#888';g.lineWidth=Math.max(2,0.12*p[3]);
   g.beginPath();g.moveTo(p[0],p[1]);g.lineTo(q[0],q[1]);g.stroke();continue;}
  const i=it[2],q=Q[i],r=A[i][3]*q[3],grad=g.createRadialGradient(q[0]-r/2,q[1]-r/2,0,q[0]-r/2,q[1]-r/2,r/2);
  grad.addColorStop(0,'rgba(255,255,255,0.8)');grad.addColorStop(1,'rgba(255,255,255,0)');
  g.fillStyle=A[i][4];g.beginPath();g.arc(q[0],q[1],r,0,2*Math.PI);g.fill();
  g.strokeStyle='#333';g.lineWidth=1;g.stroke();g.fillStyle=grad;g.fill();
  g.fillStyle=A[i][7];g.font=Math.max(9,Math.round(0.55*r))+'px sans-serif';g.textAlign='center';
  g.textBaseline='middle';g.fillText(A[i][5],q[0],q[1]);}}
c.addEventListener('mousedown',e=>{drag=[e.clientX,e.clientY];});
window.addEventListener('mouseup',()=>{drag=null;});
c.addEventListener('mousemove',e=>{
 if(drag){R=mul(mul(ry((e.clientX-drag[0])*0.01),rx((e.clientY-drag[1])*0.01)),R);drag=[e.clientX,e.clientY];draw();return;}
 const b=c.getBoundingClientRect(),x=(e.clientX-b.left)*c.width/b.width,y=(e.clientY-b.top)*c.height/b.height,Q=proj();
 let best=-1,bz=-1e9;Q.forEach((q,i)=>{if(Math.hypot(q[0]-x,q[1]-y)<A[i][3]*q[3]&&q[2]>bz){best=i;bz=q[2];}});
 c.title=best<0?'':A[best][6];});
c.addEventListener('wheel',e=>{e.preventDefault();zoom*=Math.exp(-e.deltaY*0.001);draw();},{passive:false});
c.addEventListener('dblclick',()=>{R=[[1,0,0],[0,1,0],[0,0,1]];zoom=1;draw();});
draw();})"""


def view3d_html(
    atoms: ase.Atoms,
    values: np.ndarray,
    norm: Normalize,
    cmap: str = "RdBu_r",
    element_id: str = "qmlx-view",
    unit: str = "kcal/mol",
    size: int = 360,
) -> str:
    """One molecule's 3-D view as an HTML snippet (``<canvas>`` and inline ``<script>``).

    atoms : the molecule, positions in Å.
    values : (n_atoms,) relevance per atom, coloured through ``norm`` and ``cmap``; NaN is grey.
    element_id : the canvas's id, unique within the page.
    """
    colormap = matplotlib.colormaps[cmap]
    records = []
    for k, (z, pos, value) in enumerate(zip(atoms.numbers, atoms.positions, values)):
        fill = to_hex(colormap(norm(value))) if np.isfinite(value) else "#bbbbbb"
        rgb = np.array(matplotlib.colors.to_rgb(fill))
        text = "#000000" if 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 0.45 else "#ffffff"
        symbol = chemical_symbols[int(z)]
        tip = f"{symbol}{k}: {value:.4f} {unit}".strip() if np.isfinite(value) else f"{symbol}{k}"
        radius = 0.3 * float(covalent_radii[int(z)]) + 0.2
        records.append([*map(float, np.round(pos, 4)), round(radius, 3), fill, f"{symbol}{k}", tip, text])
    data = {"id": element_id, "atoms": records, "bonds": bonds(atoms).tolist()}
    payload = json.dumps(data).replace("</", "<\\/")  # never closes the script element early
    return (
        f'<canvas id="{html.escape(element_id)}" width="{size}" height="{size}" '
        'style="border:1px solid #ccc;cursor:grab;max-width:100%" '
        'aria-label="3-D view of the molecule coloured by relevance; drag to rotate"></canvas>'
        f"<script>{_SCRIPT}({payload});</script>"
    )


def write_view3d(
    explanation,
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    cmap: str | None = None,
) -> Path:
    """Write a self-contained HTML page with a 3-D view of every molecule of ``explanation``
    (a `qmlx.explain.Explanation`), one colour scale for all (as its pictures), atomically."""
    from qmlx.explain.plot import CMAP, CMAP_UNSIGNED, UNSIGNED_METHODS, _norm, colorbar_label

    mols = explanation.molecules
    signed = explanation.method not in UNSIGNED_METHODS
    cmap = cmap or (CMAP if signed else CMAP_UNSIGNED)
    norm = _norm(explanation, range(len(mols)), signed)
    names = list(names) if names is not None else [f"molecule {i}" for i in range(len(mols))]
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>qmlx 3-D view ({esc(explanation.method)})</title>",
        "<style>body{font-family:sans-serif;margin:2em}.mol{display:inline-block;margin:0 1.5em 1.5em 0;"
        "vertical-align:top}</style></head><body>",
        f"<h1>{esc(explanation.method)}: {esc(colorbar_label(explanation, None, None))}</h1>",
        f"<p>Colour scale from {norm.vmin:.3g} (blue) to {norm.vmax:.3g} (red); drag to rotate, scroll to "
        "zoom, double-click to reset, hover over an atom for its relevance.</p>",
    ]
    for i, atoms in enumerate(mols):
        view = view3d_html(
            atoms, explanation.molecule(i), norm, cmap, f"qmlx-view-{i}", explanation.unit or ""
        )
        title = f"{names[i]}: {atoms.get_chemical_formula()}"
        parts.append(f'<div class="mol"><h3>{esc(title)}</h3>{view}</div>')
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts) + "\n")
