"""Where data files live: explicit path, then ``QMLX_DATA_DIR``, then the user cache.

The cache directory is ``$QMLX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qmlx``, else
``~/.cache/qmlx``. Downloads go there, through a temporary file renamed into place, so a broken
connection never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from qmlx.errors import DataNotFoundError


def cache_dir() -> Path:
    """The user cache directory of qmlx (created on demand)."""
    if os.environ.get("QMLX_CACHE_DIR"):
        return Path(os.environ["QMLX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qmlx"


def find_data_file(filename: str, path: str | os.PathLike | None = None) -> Path | None:
    """Return the first existing candidate for ``filename``, or ``None``.

    Order: ``path`` (a file, or a folder holding ``filename``), ``$QMLX_DATA_DIR/filename``,
    ``cache_dir()/filename``. An explicit ``path`` that does not exist is an error.
    """
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / filename
        if not p.exists():
            raise DataNotFoundError(f"{p}: no such file")
        return p
    candidates = []
    if os.environ.get("QMLX_DATA_DIR"):
        candidates.append(Path(os.environ["QMLX_DATA_DIR"]) / filename)
    candidates.append(cache_dir() / filename)
    return next((c for c in candidates if c.exists()), None)


@contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination`` to write; on success it replaces
    ``destination`` (``os.replace``), on any error it is deleted, so no reader ever sees a
    half-written file."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(destination: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text)
    return Path(destination)


def _finite(obj):
    """``obj`` with every non-finite float (NaN, inf) replaced by ``None``, recursively."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):  # numpy scalars and arrays
        return _finite(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_dumps(obj, indent: int | None = 2) -> str:
    """JSON text of ``obj`` in which NaN and infinities are ``null`` (plain JSON has no NaN) and
    numpy values are plain numbers; anything else unknown is written as its string."""
    return json.dumps(_finite(obj), indent=indent, default=str, allow_nan=False)


def savefig_atomic(fig, destination: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically; the format comes from the suffix (``.png``, ``.pdf``)."""
    destination = Path(destination)
    with atomic_path(destination) as tmp:
        fig.savefig(tmp, format=destination.suffix.lstrip(".") or "png", **kwargs)
    return destination


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` with a progress bar, atomically."""
    try:
        with atomic_path(destination) as tmp, open(tmp, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                desc = f"downloading {destination.name}"
                with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
    except Exception as err:
        raise DataNotFoundError(
            f"{destination.name} was not found locally and could not be downloaded from {url} "
            f"({err}). Download it by hand and put it in {destination.parent}, or set "
            f"QMLX_DATA_DIR to the folder that holds it."
        ) from None
    return destination
