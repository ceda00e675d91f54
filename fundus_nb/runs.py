"""Run folders, figures and metrics for the notebook series (papermill orchestration lives here too).

Notebooks call :func:`prepare_run_dir`, :func:`save_figure` and :func:`record_metrics`; the main
job (``python -m fundus_nb run``) executes the notebooks into ``runs/<run-id>/``.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import (
    PACKAGE_DIR,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    project_root,
    runs_dir,
)


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


# ---------------------------------------------------------------------------------------------
# Notebook parameters and presets
# ---------------------------------------------------------------------------------------------

PRESETS = ("quick", "default", "paper")
RUN_RECORD = "run.json"
_CHOICES = re.compile(r"#.*?\bone of:\s*(?P<choices>[^#]+)")


class RunError(RuntimeError):
    """A problem the user can fix (bad parameter, unknown preset, failed notebook)."""


@dataclass(frozen=True)
class Parameter:
    """One name of a notebook's ``parameters`` cell: its default, type and allowed values."""

    name: str
    default: Any
    choices: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        d = self.default
        if isinstance(d, bool):
            return "bool"
        if isinstance(d, int):
            return "int"
        if isinstance(d, float):
            return "float"
        if isinstance(d, str):
            return "str"
        if isinstance(d, (list, tuple)):
            return "list"
        return "any"

    def coerce(self, value: Any, where: str = "") -> Any:
        """Return ``value`` converted to this parameter's type, or raise :class:`RunError`."""
        kind = self.kind
        text = value if isinstance(value, str) else None
        try:
            if kind == "bool":
                if isinstance(value, bool):
                    out = value
                elif text is not None and text.strip().lower() in {"true", "1", "yes", "on"}:
                    out = True
                elif text is not None and text.strip().lower() in {"false", "0", "no", "off"}:
                    out = False
                else:
                    raise ValueError
            elif kind == "int":
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                out = int(value)
            elif kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if out != out:  # NaN
                    raise ValueError
            elif kind == "str":
                out = value if isinstance(value, str) else str(value)
            elif kind == "list":
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                out = list(value)
            else:
                out = value
        except (TypeError, ValueError):
            raise RunError(
                f"parameter {self.name!r}{where} expects a {kind} value (default {self.default!r}), "
                f"got {value!r}; pass e.g. -p {self.name} {self.default!r}"
            ) from None
        if self.choices and out not in self.choices:
            raise RunError(
                f"parameter {self.name!r}{where} must be one of {', '.join(self.choices)}; got {out!r}"
            )
        return out


def notebook_parameters(path: str | os.PathLike) -> dict[str, Parameter]:
    """The names, defaults and choices declared in a notebook's ``parameters``-tagged cell.

    A trailing comment ``# one of: a, b, c`` on an assignment line restricts its values.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    source = cells[0].source
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name) or node.value is None:
                continue
            try:
                default = ast.literal_eval(node.value)
            except ValueError:
                continue
            match = _CHOICES.search(lines[node.lineno - 1])
            choices = None
            if match:
                choices = tuple(c.strip() for c in re.split(r"[,|]", match["choices"]) if c.strip())
            params[targets[0].id] = Parameter(targets[0].id, default, choices)
    return params


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(directory: str | os.PathLike | None = None) -> list[Path]:
    """The series' notebooks ``NN_topic.ipynb`` in number order."""
    directory = Path(directory) if directory else notebooks_dir()
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise RunError(f"no notebooks NN_topic.ipynb found in {directory}")
    return found


def load_preset(name: str) -> dict[str, Any]:
    """The parameter values of a preset: a name shipped with the package, or a path to a YAML file."""
    import yaml

    path = PACKAGE_DIR / "presets" / f"{name}.yaml"
    if str(name).endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise RunError(f"preset file {path} does not exist; pass a preset name or an existing YAML file")
    if not path.is_file():
        known = sorted(p.stem for p in (PACKAGE_DIR / "presets").glob("*.yaml"))
        raise RunError(f"unknown preset {name!r}; choose one of: {', '.join(known)}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise RunError(f"preset file {path} must hold a mapping of parameter names to values")
    return values


def load_dataset_overlay(dataset: str) -> dict[str, Any]:
    """Values a dataset needs whatever the preset (``presets/datasets/<dataset>.yaml``; {} if none).

    For example IDRiD has no lesion-free image, so its overlay turns on the documented option to
    draw negatives from lesion images. ``-p`` overrides still win.
    """
    import yaml

    path = PACKAGE_DIR / "presets" / "datasets" / f"{dataset}.yaml"
    if not path.is_file():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise RunError(f"dataset overlay {path} must hold a mapping of parameter names to values")
    return values


def resolve_parameters(
    notebooks: list[Path],
    preset: str | dict[str, Any] = "default",
    overrides: dict[str, Any] | None = None,
) -> dict[Path, dict[str, Any]]:
    """Parameters for each notebook: the preset, the dataset's overlay, then ``overrides``.

    Values are checked against the notebooks' declarations.

    Every name must be declared by at least one notebook of the series and every value must fit
    the declared type and choices; otherwise :class:`RunError` says which and how to fix it.
    """
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    merged: dict[str, Parameter] = {}
    for params in declared.values():
        merged.update(params)
    values = dict(load_preset(preset) if isinstance(preset, str) else preset)
    dataset = (overrides or {}).get("dataset", values.get("dataset"))
    if dataset:
        values.update(load_dataset_overlay(str(dataset)))
    for name, value in (overrides or {}).items():
        values[name] = value
    unknown = sorted(set(values) - set(merged))
    if unknown:
        raise RunError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))}; the notebooks declare: "
            f"{', '.join(sorted(merged))}"
        )
    per_notebook: dict[Path, dict[str, Any]] = {}
    for nb, params in declared.items():
        chosen = {}
        for name, value in values.items():
            if name in params:
                where = "" if name not in (overrides or {}) else " (from -p)"
                chosen[name] = params[name].coerce(value, where)
        per_notebook[nb] = chosen
    return per_notebook


def parse_overrides(pairs: list[list[str]] | None) -> dict[str, str]:
    """``[["seed", "1"], ...]`` from repeated ``-p NAME VALUE`` into a dict (later wins)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if len(pair) != 2:
            raise RunError(f"-p takes a NAME and a VALUE, got {' '.join(pair)!r}")
        out[pair[0]] = pair[1]
    return out


# ---------------------------------------------------------------------------------------------
# Executing the series
# ---------------------------------------------------------------------------------------------


def new_run_id(preset: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{preset}"


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); delete it to start this run afresh") from None


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(run_dir / RUN_RECORD, record)


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok", "failed", "skipped"
    wall_s: float = 0.0
    output: Path | None = None
    error: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped") for r in self.results)


def _cell_timeout() -> float | None:
    """Seconds one notebook cell may run (environment variable ``FUNDUS_NB_CELL_TIMEOUT``; unset: no
    limit, as a paper-preset training cell runs for hours). ``make test`` sets it so that a kernel
    that stops answering fails the test instead of hanging it."""
    value = os.environ.get("FUNDUS_NB_CELL_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise RunError(f"FUNDUS_NB_CELL_TIMEOUT must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise RunError(f"FUNDUS_NB_CELL_TIMEOUT must be positive, got {value!r}; unset it for no limit")
    return seconds


def _local_kernel_manager():
    """The kernel manager papermill uses: the kernel talks over local IPC sockets in a private
    temporary folder instead of TCP ports, so ipykernel does not warn about unencrypted TCP traffic
    (which a local run never sends) and parallel sweeps cannot collide on ports."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class LocalIPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(tempfile.mkdtemp(prefix="fundus_nb-kernel-"), "ipc")

        def cleanup_ipc_files(self) -> None:
            super().cleanup_ipc_files()
            if self.transport == "ipc":
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    return LocalIPCKernelManager


def run_series(
    preset: str | dict[str, Any] = "default",
    overrides: dict[str, Any] | None = None,
    *,
    only: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    notebooks: str | os.PathLike | None = None,
    progress: bool = True,
    stop_on_error: bool = True,
) -> RunResult:
    """Execute the notebooks in number order with papermill into ``run_dir``.

    ``preset`` is a preset name or a mapping of parameter values.
    Each notebook gets the preset's values (then ``overrides``) for the names its ``parameters``
    cell declares, plus ``run_dir``. ``only`` selects notebooks by number prefix ("03").
    With ``resume`` a notebook whose executed copy in ``run_dir`` succeeded with the same
    parameters is skipped. A failed notebook stops the run (``stop_on_error``) and its partly
    executed copy stays in ``run_dir``.
    """
    import papermill as pm
    from tqdm.auto import tqdm

    from . import __version__

    all_notebooks = list_notebooks(notebooks)
    params = resolve_parameters(all_notebooks, preset, overrides)
    selected = all_notebooks
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        known = {nb.name[:2] for nb in all_notebooks}
        missing = sorted(wanted - known)
        if missing:
            raise RunError(f"--only names unknown notebook number(s) {', '.join(missing)}; known: {', '.join(sorted(known))}")
        selected = [nb for nb in all_notebooks if nb.name[:2] in wanted]

    if run_dir is None:
        run_dir = runs_dir() / new_run_id(preset if isinstance(preset, str) else "custom")
    run_dir = Path(run_dir).expanduser().resolve()
    record = _read_record(run_dir)
    if record and not resume:
        raise RunError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-id"
        )
    if record and record.get("version") != __version__:
        raise RunError(
            f"{run_dir} was made by fundus_nb {record.get('version')!r}, this is {__version__}; "
            "start a new run (another --run-id) instead of resuming it"
        )
    prepare_run_dir(run_dir)
    preset_name = preset if isinstance(preset, str) else "custom"
    record = record or {"version": __version__, "preset": preset_name, "notebooks": {}}
    record["preset"] = preset_name
    _write_record(run_dir, record)

    result = RunResult(run_dir)
    bar = tqdm(selected, desc="notebooks", unit="nb", disable=not progress)
    for nb in bar:
        name = nb.stem
        bar.set_postfix_str(name)
        nb_params = dict(params[nb])
        if "run_dir" in notebook_parameters(nb):
            nb_params["run_dir"] = str(run_dir)
        output = run_dir / nb.name
        previous = record["notebooks"].get(name, {})
        if resume and previous.get("status") == "ok" and previous.get("parameters") == _jsonable(nb_params) and output.is_file():
            result.results.append(NotebookResult(name, "skipped", previous.get("wall_s", 0.0), output))
            continue
        record["notebooks"][name] = {"status": "running", "parameters": _jsonable(nb_params)}
        _write_record(run_dir, record)
        start = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(nb),
                str(output),
                parameters=nb_params,
                cwd=str(run_dir),
                kernel_name="python3",
                kernel_manager_class=_local_kernel_manager(),
                execution_timeout=_cell_timeout(),
                progress_bar=False,
                log_output=False,
            )
            status = "ok"
        except pm.PapermillExecutionError as exc:
            status = "failed"
            error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        except Exception as exc:  # kernel died, notebook unreadable, ...
            status = "failed"
            error = f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - start
        record["notebooks"][name] = {
            "status": status,
            "parameters": _jsonable(nb_params),
            "wall_s": round(wall, 2),
            **({"error": error} if error else {}),
        }
        _write_record(run_dir, record)
        result.results.append(NotebookResult(name, status, wall, output, error))
        if status == "failed" and stop_on_error:
            break
    bar.close()
    write_summary(run_dir)
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


# ---------------------------------------------------------------------------------------------
# Results summary
# ---------------------------------------------------------------------------------------------

# (label, section of metrics.json, dotted key). Keys that a run lacks show as "n/a".
HEADLINES: list[tuple[str, str, str]] = [
    ("EGL/random labelled patches to reach the reference grid AP [95% CI]", "03_lenet_egl", "summary.n_patches"),
    ("EGL/random area under the AP-vs-patches curve [95% CI] (>1: EGL better)", "03_lenet_egl", "summary.aulc"),
    ("Natural-prevalence test grid: exudate share", "03_lenet_egl", "pool.prevalence"),
    ("Converged reference: test grid AP", "03_lenet_egl", "reference.test.ap"),
    ("SeS/NSeS epochs to plateau, mean [min, max] over seeds (paper 0.35)", "04_ses_hemorrhage",
     "plateau_ratio_ses_over_nses.text"),
    ("Final monitoring Az SeS (mean)", "04_ses_hemorrhage", "final_monitor_az.SeS.mean"),
    ("Final monitoring Az NSeS (mean)", "04_ses_hemorrhage", "final_monitor_az.NSeS.mean"),
    ("Hemorrhage test set: images / with hemorrhages / lesions", "05_evaluation", "test.size_text"),
    ("Test Az SeS [95% CI] (CI width)", "05_evaluation", "test.ses.text"),
    ("Test Az NSeS [95% CI] (CI width)", "05_evaluation", "test.nses.text"),
    ("Test Az SeS - NSeS, paired bootstrap p", "05_evaluation", "test.paired_text"),
    ("FROC sensitivity SeS @0.1 / @1 FP/image [95% CI]", "05_evaluation", "test.ses.froc_text"),
    ("FROC sensitivity NSeS @0.1 / @1 FP/image [95% CI]", "05_evaluation", "test.nses.froc_text"),
]


def _lookup(metrics: dict[str, Any], section: str, key: str) -> Any:
    node: Any = metrics.get(section, {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def summary_table(run_dir: str | os.PathLike) -> str:
    """The run's headline numbers and wall time per notebook, as a Markdown table."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    record = _read_record(run_dir)
    lines = [f"# Results of run `{run_dir.name}`", ""]
    if record:
        lines.append(f"Preset `{record.get('preset')}`, fundus_nb {record.get('version')}.")
        lines.append("")
    lines += ["| result | value |", "| --- | --- |"]
    for label, section, key in HEADLINES:
        lines.append(f"| {label} | {_fmt(_lookup(metrics, section, key))} |")
    lines += ["", "| notebook | status | wall time (s) |", "| --- | --- | --- |"]
    for name, info in sorted(record.get("notebooks", {}).items()):
        lines.append(f"| {name} | {info.get('status')} | {_fmt(info.get('wall_s'))} |")
    return "\n".join(lines) + "\n"


README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def update_readme(run_dir: str | os.PathLike, readme: str | os.PathLike | None = None) -> Path:
    """Replace the README's results block (between the two markers) with this run's table.

    The table is :func:`summary_table` verbatim, so the README never carries hand-typed numbers.
    """
    readme = Path(readme) if readme else project_root() / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise RunError(f"{readme} has no results block; add the lines {README_START} and {README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    table = summary_table(run_dir).replace("# Results of run", "#### Results of run")
    command = f"python -m fundus_nb summary {Path(run_dir).name} --update-readme"
    block = f"{README_START}\n<!-- generated by `{command}`; do not edit by hand -->\n{table}{README_END}"
    atomic_write_text(readme, head + block + tail)
    return readme


def write_summary(run_dir: str | os.PathLike) -> Path:
    """Write ``summary.md`` next to ``metrics.json`` (atomically) and return its path."""
    return atomic_write_text(Path(run_dir) / "summary.md", summary_table(run_dir))


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


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
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    points = sweep_grid(spec)
    notebook_dir = notebooks
    notebooks = list_notebooks(notebook_dir)
    for point in points:  # validate everything before starting anything
        resolve_parameters(notebooks, preset, point)
    sweep_dir = Path(sweep_dir) if sweep_dir else runs_dir() / f"sweep-{new_run_id(preset)}"
    sweep_dir = sweep_dir.expanduser().resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    def one(point: dict[str, str]) -> tuple[dict[str, str], Path, int]:
        target = sweep_dir / point_name(point)
        record = _read_record(target)
        selected = [nb.stem for nb in notebooks if not only or nb.name[:2] in {o.zfill(2) for o in only}]
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


# ---------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------


def _flatten(node: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out


def collect_metrics(root: str | os.PathLike):
    """Every ``metrics.json`` below ``root`` as one tidy pandas DataFrame.

    Columns: ``run`` (folder relative to ``root``), ``section`` (notebook), ``metric`` (dotted
    key), ``value``, then one column per notebook parameter the run used (``seed``,
    ``strategy``, ...; from ``run.json``) and ``preset``. Only numeric entries are kept.
    """
    import pandas as pd

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: pass the folder that holds your runs (e.g. runs/)")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        run_dir = path.parent
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{path} is not valid JSON ({exc}); rerun that run or remove the file") from None
        record = _read_record(run_dir)
        params: dict[str, Any] = {"preset": record.get("preset")}
        for info in record.get("notebooks", {}).values():
            for k, v in info.get("parameters", {}).items():
                if k != "run_dir":
                    params.setdefault(k, v)
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        for section, values in metrics.items():
            for metric, value in _flatten(values).items():
                rows.append({"run": name, "section": section, "metric": metric, "value": value, **params})
    columns = ["run", "section", "metric", "value"]
    return pd.DataFrame(rows, columns=None if rows else columns)
