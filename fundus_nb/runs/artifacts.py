"""Run folders and what notebooks leave in them: figures, metrics, the run record, models, splits.

Layout of a run folder (see ``docs/CONTRACTS.md``)::

    run_dir/figures/<name>.png      save_figure
    run_dir/metrics.json            record_metrics / load_metrics (one section per notebook)
    run_dir/models/<name>.pt        save_model / load_model: {"state_dict", "config", ...extra}
    run_dir/<name>_split.json       save_split / load_split (image ids per part, how they were made)
    run_dir/run.json                the main job's record of which notebooks ran with what

Every file is written atomically (:mod:`fundus_nb._io`): a reader never sees half a file and an
interrupted write leaves the previous file intact.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, atomic_write_json, default_device, runs_dir
from .params import RunError

RUN_RECORD = "run.json"

#: Which notebook writes which model or split, for the "run notebook NN first" message.
MADE_BY = {
    "model:lenet_egl": "03_lenet_egl",
    "split:egl": "03_lenet_egl",
    "model:sesnet_ses": "04_ses_hemorrhage",
    "model:sesnet_nses": "04_ses_hemorrhage",
    "split:ses": "04_ses_hemorrhage",
}


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
    """The run's ``metrics.json`` as a dict ({} when the run recorded none yet)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The main job's ``run.json`` of ``run_dir`` ({} when there is none)."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); delete it to start this run afresh") from None


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / RUN_RECORD, record)


# ---------------------------------------------------------------------------------------------
# Models and splits handed from one notebook to the next
# ---------------------------------------------------------------------------------------------


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a {what} name must be a str, got {type(name).__name__}; pass e.g. 'lenet_egl'")
    if not name or name != Path(name).name or name.startswith(".") or name.endswith((".pt", ".json")):
        raise ValueError(f"{what} name {name!r} must be a plain file stem; pass e.g. 'lenet_egl', not a path")
    return name


def model_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``run_dir/models/<name>.pt``."""
    return Path(run_dir).expanduser().resolve() / "models" / f"{_check_name(name, 'model')}.pt"


def split_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``run_dir/<name>_split.json``."""
    return Path(run_dir).expanduser().resolve() / f"{_check_name(name, 'split')}_split.json"


def require(run_dir: str | os.PathLike, *, models: Iterable[str] = (), splits: Iterable[str] = ()) -> None:
    """Raise :class:`FileNotFoundError` naming every missing model and split and the notebook that makes it."""
    wanted = [("model", n, model_path(run_dir, n)) for n in models]
    wanted += [("split", n, split_path(run_dir, n)) for n in splits]
    missing = [(kind, name, path) for kind, name, path in wanted if not path.is_file()]
    if not missing:
        return
    makers = sorted({MADE_BY.get(f"{kind}:{name}", "the notebook that saves it") for kind, name, _ in missing})
    files = ", ".join(str(path.relative_to(Path(run_dir).expanduser().resolve())) for _, _, path in missing)
    raise FileNotFoundError(
        f"run_dir {Path(run_dir).expanduser().resolve()} lacks {files}; "
        f"run notebook {' and '.join(makers)} first with the same run_dir"
    )


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain Python (numpy scalars and tuples converted), so ``weights_only`` loads it."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(
        f"{where} holds a {type(value).__name__}; a checkpoint stores only str, int, float, bool, None, "
        "lists and dicts of them"
    )


def save_model(run_dir: str | os.PathLike, name: str, model: torch.nn.Module, config: dict[str, Any],
               **extra: Any) -> Path:
    """Write ``run_dir/models/<name>.pt`` = ``{"state_dict", "config", **extra}`` atomically.

    Parameters
    ----------
    run_dir : path-like
        The run folder (created if missing).
    name : str
        File stem, e.g. ``"lenet_egl"``.
    model : torch.nn.Module
        Its ``state_dict`` is stored on the CPU.
    config : dict
        How the model was made (plain values only). ``config["arch"]`` is set to the model's class
        name, which :func:`load_model` checks.
    **extra
        More plain values stored beside ``config`` (e.g. ``epoch=30``).

    Returns
    -------
    pathlib.Path
        The checkpoint's path.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass the trained network")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}; pass e.g. {{'seed': 0}}")
    arch = type(model).__name__
    if config.get("arch", arch) != arch:
        raise ValueError(f"config['arch'] is {config['arch']!r} but the model is a {arch}; drop 'arch' from config")
    if {"state_dict", "config"} & set(extra):
        raise ValueError("extra values may not be named 'state_dict' or 'config'; choose other names")
    path = model_path(prepare_run_dir(run_dir), name)
    checkpoint = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": _plain({**config, "arch": arch}, "config"),
        **_plain(extra, "extra"),
    }
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """The dict :func:`save_model` wrote (tensors on the CPU), read with ``weights_only=True``."""
    require(run_dir, models=[name])
    return torch.load(model_path(run_dir, name), map_location="cpu", weights_only=True)


def load_model(run_dir: str | os.PathLike, name: str, cls_or_factory: type | Callable[[dict], torch.nn.Module],
               device: str | torch.device | None = None) -> torch.nn.Module:
    """The model saved as ``run_dir/models/<name>.pt``, in eval mode on ``device``.

    Parameters
    ----------
    run_dir, name
        As for :func:`save_model`.
    cls_or_factory : class or callable
        A model class (called without arguments), or a function that takes the checkpoint's
        config dict and returns the untrained model.
    device : str or torch.device, optional
        Default :func:`fundus_nb.default_device` (CUDA when present, else CPU).

    Raises
    ------
    FileNotFoundError
        When the checkpoint is missing (the message names the notebook that writes it).
    ValueError
        When the checkpoint holds another architecture or its weights do not fit the model.
    """
    if not callable(cls_or_factory):
        raise TypeError(f"cls_or_factory must be a model class or a function, got {type(cls_or_factory).__name__}")
    ckpt = load_checkpoint(run_dir, name)
    config = ckpt.get("config", {})
    model = cls_or_factory() if isinstance(cls_or_factory, type) else cls_or_factory(config)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"cls_or_factory returned a {type(model).__name__}; it must return a torch.nn.Module")
    path = model_path(run_dir, name)
    arch = config.get("arch")
    if arch is not None and arch != type(model).__name__:
        raise ValueError(
            f"{path} holds a {arch}, not a {type(model).__name__}; load it with models.{arch} or load another name"
        )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ValueError(
            f"the weights in {path} do not fit this {type(model).__name__} ({first}); build the model with "
            "the checkpoint's config"
        ) from None
    return model.to(device if device is not None else default_device()).eval()


def save_split(run_dir: str | os.PathLike, name: str, split: dict[str, Any]) -> Path:
    """Write ``run_dir/<name>_split.json`` atomically (image ids per part, plus how they were made).

    :func:`split_records` needs the keys ``dataset_params`` (``data.load``'s name, root and
    options), ``image_size`` and ``contrast_enhance`` beside the lists of ids.
    """
    if not isinstance(split, dict):
        raise TypeError(f"split must be a dict of part name -> image ids, got {type(split).__name__}")
    path = split_path(prepare_run_dir(run_dir), name)
    return atomic_write_json(path, _plain(split, "split"))


def load_split(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """The dict :func:`save_split` wrote as ``run_dir/<name>_split.json``."""
    require(run_dir, splits=[name])
    path = split_path(run_dir, name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun the notebook that wrote it") from None
