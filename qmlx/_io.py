"""Writing and reading files safely: atomic writes (a temporary file beside the destination, then
``os.replace``), JSON without NaN, matplotlib figures, and ``torch.save``/``torch.load`` of plain
data only (``weights_only=True``).

Every file qmlx writes goes through `atomic_path`, so a reader never sees a half-written file and
an interrupted run leaves the previous file in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qmlx.errors import DataFormatError


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


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def safe_torch_load(path: str | os.PathLike, kind: str = "file") -> dict:
    """``torch.load(path, weights_only=True)``; any failure raises `DataFormatError` naming the file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such {kind}")
    try:
        # TorchVersion is a str subclass that older qmlx runs stored in their metadata
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "Weights only load failed" in text:
            reason = "it holds objects other than plain weights and metadata, which are not loaded for safety"
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise DataFormatError(
            f"{path}: not a readable qmlx {kind} (corrupt or truncated?): {reason}"
        ) from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: not a qmlx {kind} (expected a dictionary, got {type(obj).__name__})")
    return obj
