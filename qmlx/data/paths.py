"""Where data files live: explicit path, then ``QMLX_DATA_DIR``, then the user cache.

The cache directory is ``$QMLX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qmlx``, else
``~/.cache/qmlx``. Downloads go there, through a temporary file renamed into place, so a broken
connection never leaves a half-written file behind.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from qmlx._io import atomic_path
from qmlx.errors import DataNotFoundError

logger = logging.getLogger(__name__)


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
    logger.info("downloaded %s to %s", url, destination)
    return destination
