"""Sweeps: a grid of parameter values, each point an independent run in its own folder."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._io import runs_dir
from .artifacts import read_record
from .execute import new_run_id
from .params import RunError, list_notebooks, resolve_parameters


def sweep_grid(spec: dict[str, str]) -> list[dict[str, str]]:
    """Expand ``{"seed": "0,1,2", "strategy": "egl,random"}`` into the list of grid points."""
    axes = []
    for name, text in spec.items():
        values = [v.strip() for v in str(text).split(",")]
        if not values or any(v == "" for v in values):
            raise RunError(
                f"-p {name} {text!r}: a sweep value is a comma-separated list without empty items, "
                f"e.g. -p {name} 0,1,2"
            )
        axes.append([(name, v) for v in values])
    return [dict(point) for point in itertools.product(*axes)]


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "base"


def run_sweep(
    spec: dict[str, str],
    preset: str = "default",
    *,
    sweep_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    only: list[str] | None = None,
    notebooks: str | os.PathLike | None = None,
) -> list[tuple[dict[str, str], Path, int]]:
    """Run every grid point as an independent ``python -m fundus_nb run`` in its own folder.

    Points whose folder already holds a successful run are skipped. Returns
    ``(point, run_dir, exit_code)`` per point (exit code 0 for skipped points).
    """
    points = sweep_grid(spec)
    notebook_dir = notebooks
    notebooks = list_notebooks(notebook_dir)
    for point in points:  # validate everything before starting anything
        resolve_parameters(notebooks, preset, point)
    sweep_dir = Path(sweep_dir) if sweep_dir else runs_dir() / f"sweep-{new_run_id(preset)}"
    sweep_dir = sweep_dir.expanduser().resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    wanted = {o.zfill(2) for o in only or []}
    selected = [nb.stem for nb in notebooks if not only or nb.name[:2] in wanted]

    def one(point: dict[str, str]) -> tuple[dict[str, str], Path, int]:
        target = sweep_dir / point_name(point)
        record = read_record(target)
        if record and all(record["notebooks"].get(n, {}).get("status") == "ok" for n in selected):
            return point, target, 0
        cmd = [sys.executable, "-m", "fundus_nb", "run", "--preset", preset, "--run-dir", str(target), "--quiet"]
        if notebook_dir:
            cmd += ["--notebooks", str(notebook_dir)]
        if record:
            cmd.append("--resume")
        if only:
            cmd += ["--only", ",".join(only)]
        for k, v in point.items():
            cmd += ["-p", k, v]
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "sweep.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        return point, target, code

    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        return list(pool.map(one, points))
