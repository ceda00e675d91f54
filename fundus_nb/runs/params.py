"""Notebook parameters, presets and ``-p`` overrides: what a run may set, checked before it starts."""

from __future__ import annotations

import ast
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._io import PACKAGE_DIR, project_root

PRESETS = ("quick", "default", "paper")
_CHOICES = re.compile(r"\bone of:\s*(?P<choices>[^#]+)")


class RunError(ValueError):
    """A problem the user can fix (bad parameter, unknown preset, unreadable run record)."""


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
        try:
            out = _CONVERTERS.get(self.kind, lambda v: v)(value)
        except (TypeError, ValueError):
            raise RunError(
                f"parameter {self.name!r}{where} expects a {self.kind} value (default {self.default!r}), "
                f"got {value!r}; pass e.g. -p {self.name} {self.default!r}"
            ) from None
        if self.choices and out not in self.choices:
            raise RunError(
                f"parameter {self.name!r}{where} must be one of {', '.join(self.choices)}, got {out!r}; "
                "pass one of those values"
            )
        return out


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    out = float(value)
    if out != out:  # NaN
        raise ValueError(value)
    return out


def _to_list(value: Any) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


_CONVERTERS = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "str": lambda v: v if isinstance(v, str) else str(v),
    "list": _to_list,
}


def notebook_parameters(path: str | os.PathLike) -> dict[str, Parameter]:
    """The names, defaults and choices declared in a notebook's ``parameters``-tagged cell.

    Names, default values and help comments come from :func:`papermill.inspect_notebook`; the
    defaults are then read as Python literals (a non-literal default, e.g. a function call, is not a
    settable parameter) and a help comment ``# one of: a, b, c`` restricts the values.

    Where papermill's inference differs from Python's reading of the cell: papermill skips a line
    holding more than one ``=`` (for example ``x = 1  # ("" = off)``) with only a log warning. Such
    a name would then be unknown to the runner, so this function raises :class:`RunError` instead.
    """
    # Imported here: papermill and nbformat take seconds to import on a loaded machine, and every
    # notebook kernel imports ``runs`` (for figures and metrics) without reading notebook parameters.
    import nbformat
    import papermill

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunError(
            f"{path} has {len(cells)} cells tagged 'parameters'; tag exactly one cell 'parameters'"
        )
    assigned = {
        t.id: node.lineno
        for node in ast.parse(cells[0].source).body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    if nb.metadata.get("kernelspec", {}).get("name"):
        inferred = papermill.inspect_notebook(str(path))
    else:
        # A notebook written by a script often has no kernelspec; papermill's inference then stops with
        # "No kernel name found". The runner executes every notebook with the python3 kernel: read the
        # parameters of a copy that names it (the user's file is never written).
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
        with tempfile.TemporaryDirectory(prefix="fundus_nb-params-") as tmp:
            copy = Path(tmp) / path.name
            nbformat.write(nb, str(copy))
            inferred = papermill.inspect_notebook(str(copy))
    unread = sorted(set(assigned) - set(inferred))
    if unread:
        name = unread[0]
        raise RunError(
            f"{path.name}: papermill cannot read parameter {name!r} (line {assigned[name]} of the "
            "parameters cell holds more than one '='); remove the '=' from that line's comment"
        )
    params: dict[str, Parameter] = {}
    for name, info in inferred.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            continue
        match = _CHOICES.search(info.get("help") or "")
        choices = None
        if match:
            choices = tuple(c.strip() for c in re.split(r"[,|]", match["choices"]) if c.strip())
        params[name] = Parameter(name, default, choices)
    return params


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(directory: str | os.PathLike | None = None) -> list[Path]:
    """The series' notebooks ``NN_topic.ipynb`` in number order."""
    directory = Path(directory) if directory else notebooks_dir()
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise RunError(f"no notebooks NN_topic.ipynb found in {directory}; pass the folder that holds them")
    return found


def _read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise RunError(f"{what} {path} does not hold a mapping; write one 'name: value' line per parameter")
    return values


def load_preset(name: str) -> dict[str, Any]:
    """The parameter values of a preset: a name shipped with the package, or a path to a YAML file."""
    path = PACKAGE_DIR / "presets" / f"{name}.yaml"
    if str(name).endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise RunError(f"preset file {path} does not exist; pass a preset name or an existing YAML file")
    if not path.is_file():
        known = sorted(p.stem for p in (PACKAGE_DIR / "presets").glob("*.yaml"))
        raise RunError(f"unknown preset {name!r}; choose one of: {', '.join(known)}")
    return _read_yaml_mapping(path, "preset file")


def load_dataset_overlay(dataset: str) -> dict[str, Any]:
    """Values a dataset needs whatever the preset (``presets/datasets/<dataset>.yaml``; {} if none).

    For example IDRiD has no lesion-free image, so its overlay turns on the documented option to
    draw negatives from lesion images. ``-p`` overrides still win.
    """
    path = PACKAGE_DIR / "presets" / "datasets" / f"{dataset}.yaml"
    if not path.is_file():
        return {}
    return _read_yaml_mapping(path, "dataset overlay")


def resolve_parameters(
    notebooks: list[Path],
    preset: str | dict[str, Any] = "default",
    overrides: dict[str, Any] | None = None,
) -> dict[Path, dict[str, Any]]:
    """Parameters for each notebook: the preset, the dataset's overlay, then ``overrides``.

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
            raise RunError(f"-p takes a NAME and a VALUE, got {' '.join(pair)!r}; write -p NAME VALUE")
        out[pair[0]] = pair[1]
    return out
