"""Run folders, figures and metrics for the notebook series (papermill orchestration lives here too).

Notebooks call :func:`prepare_run_dir`, :func:`save_figure` and :func:`record_metrics`; the main
job (``python -m fundus_nb run``) executes the notebooks into ``runs/<run-id>/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_json, runs_dir


def prepare_run_dir(run_dir: str | os.PathLike | None) -> Path:
    """The folder a notebook writes to: ``run_dir`` when given, else ``runs/interactive``.

    Creates it and its ``figures/`` and ``models/`` sub-folders.
    """
    path = Path(run_dir).expanduser() if run_dir else runs_dir() / "interactive"
    path = path.resolve()
    for sub in ("", "figures", "models"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, run_dir: str | os.PathLike | None, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``<run_dir>/figures/<name>.png`` (atomically); returns the path."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(prepare_run_dir(run_dir) / "figures" / f"{name}.png", buf.getvalue())


def record_metrics(run_dir: str | os.PathLike | None, section: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` into ``<run_dir>/metrics.json`` under ``section`` (atomic rewrite).

    Sections are notebook names such as ``"03_lenet_egl"``; a later call for the same section
    replaces that section only.
    """
    path = prepare_run_dir(run_dir) / "metrics.json"
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
    data[section] = values
    atomic_write_json(path, data)
    return path


def load_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
