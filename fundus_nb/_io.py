"""Small shared utilities: paths, atomic writes, seeding, device choice.

This module sits below every other module of the package and imports none of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent

_T = TypeVar("_T")


def project_root() -> Path:
    """The checkout's root when the package runs from a source tree, else the working directory.

    ``FUNDUS_NB_HOME`` overrides it (caches then go to ``$FUNDUS_NB_HOME/data/cache`` and runs to
    ``$FUNDUS_NB_HOME/runs``).
    """
    env = os.environ.get("FUNDUS_NB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
        return candidate
    return Path.cwd()


def cache_dir() -> Path:
    """Folder for generated caches (git-ignored); created on demand."""
    path = project_root() / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Folder holding one sub-folder per run (git-ignored)."""
    return project_root() / "runs"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN and infinities become null) atomically."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (also numpy scalars and arrays) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` written atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def hashed_cache_path(stem: str, key: Any, folder: str = "") -> Path:
    """Cache file ``cache_dir()/folder/<stem>-<digest>.npz`` for a computation described by ``key``.

    ``digest`` is the first 16 hex digits of the SHA-256 of ``key`` written as JSON with sorted
    keys, so any change of ``key`` (options, a version number, file sizes and times) names another
    file. ``key`` must be JSON-serialisable.
    """
    text = json.dumps(key, sort_keys=True, default=_json_default)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache_dir() / folder / f"{stem}-{digest}.npz"


def read_npz_cache(path: str | os.PathLike, read: Callable[[Any], _T]) -> _T | None:
    """``read(z)`` on the open npz file at ``path``; None when the file is missing or cannot be read.

    A damaged or foreign cache file (any error while opening or reading it) is never trusted: the
    caller then recomputes the value and writes the cache again.
    """
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return read(z)
    except Exception:  # damaged, truncated or of another layout: recompute
        return None


def write_npz_cache(path: str | os.PathLike, what: str, **arrays: np.ndarray) -> bool:
    """Write ``arrays`` to the cache file ``path`` atomically; False (with a warning) when it cannot.

    A read-only checkout still gets its data, only slower next time. ``what`` names the cache in
    the warning ("synthetic-data cache").
    """
    try:
        atomic_save_npz(path, **arrays)
    except OSError as err:
        warnings.warn(f"could not write the {what} {str(path)!r} ({err}); continuing without it", stacklevel=3)
        return False
    return True


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` written atomically (checkpoints survive an interruption mid-write)."""
    import torch  # on use only: data and preprocess import _io and must not pay for loading torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON; convert it to a number, string, list or dict first")


def largest_remainder(n: int, fractions) -> np.ndarray:
    """Split ``n`` items into integer counts proportional to ``fractions`` (largest-remainder rounding).

    Each count starts as ``floor(n * fraction)``; the items still missing go one each to the
    largest fractional parts, ties to the earlier position. Among all non-negative integer
    vectors summing to ``n`` the result minimises the squared distance to ``n * fractions``.

    Parameters
    ----------
    n : int
        Number of items, >= 0.
    fractions : sequence of float
        Non-negative shares summing to 1 (within ``np.isclose``; they are divided by their sum).

    Returns
    -------
    numpy.ndarray of int64
        One count per fraction, summing to ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {type(n).__name__}; pass a whole number of items")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}; pass a non-negative number of items")
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or len(f) == 0 or not np.isfinite(f).all() or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(
            f"fractions must be a non-empty list of shares >= 0 summing to 1, got {fractions!r}; fix the shares"
        )
    quota = f * int(n) / f.sum()
    counts = np.floor(quota).astype(np.int64)
    counts[np.argsort(-(quota - counts), kind="stable")[: int(n) - int(counts.sum())]] += 1
    return counts


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, numpy's global state and torch; return a fresh numpy Generator."""
    import torch  # on use only: data and preprocess import _io and must not pay for loading torch

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def default_device():
    """CUDA when present, else CPU."""
    import torch  # on use only: data and preprocess import _io and must not pay for loading torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
