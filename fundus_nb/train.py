"""One fit loop shared by both papers: SGD + cross-entropy, history, checkpoints, exact resume.

``fit(model, batches, epochs=...)`` where ``batches(epoch, rng)`` returns an iterable of ``(x, y)``
tensors for that epoch and ``rng = numpy.random.default_rng([seed, epoch])``: an epoch's data
depends only on ``(seed, epoch)``, so a run resumed from a checkpoint sees exactly the batches the
uninterrupted run saw and ends with the same weights and history.

Epochs are numbered from 0 (the ``epoch`` passed to ``batches``, recorded in the history);
iterations (SGD steps) are counted from 1 over the whole run. A checkpoint
``checkpoint_dir/epoch_NNNN.pt`` is written after ``NNNN`` epochs are complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._io import atomic_torch_save, default_device
from .models import eval_mode

__all__ = ["History", "fit", "checkpoint_path", "latest_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "fundus_nb.train/1"
_CKPT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")

Batches = Callable[[int, np.random.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class History:
    """What happened during :func:`fit`, as plain lists of numbers (checkpoint-safe).

    Attributes
    ----------
    steps : list of dict
        One entry per SGD iteration: ``{"iteration", "epoch", "loss"}``.
    evals : list of dict
        One entry per evaluation: ``{"iteration", "epoch", "epoch_end"}`` plus the numbers
        returned by ``eval_fn`` (every ``eval_every`` iterations and at each epoch end) and, at
        epoch ends, by ``on_epoch_end``. ``epoch_end`` is 1.0 for end-of-epoch records, else 0.0;
        end-of-epoch records also hold ``train_seconds`` (the epoch's batches and SGD steps,
        in-epoch evaluations included).
    """

    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    @property
    def losses(self) -> np.ndarray:
        """Loss of every SGD iteration, in order."""
        return np.array([s["loss"] for s in self.steps], dtype=float)

    @property
    def iterations(self) -> int:
        """Number of SGD iterations done so far."""
        return int(self.steps[-1]["iteration"]) if self.steps else 0

    def to_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"steps": [dict(s) for s in self.steps], "evals": [dict(e) for e in self.evals]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(steps=[dict(s) for s in d.get("steps", [])], evals=[dict(e) for e in d.get("evals", [])])

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame with one row per iteration (``iteration``, ``epoch``, ``loss``).

        The evaluation columns are filled in on the iterations where they were measured (NaN
        elsewhere).
        """
        steps = pd.DataFrame(self.steps, columns=["iteration", "epoch", "loss"])
        if not self.evals:
            return steps
        evals = pd.DataFrame(self.evals)
        # an iteration may have an in-epoch eval and an epoch-end record: keep the last one
        evals = evals.drop_duplicates(subset=["iteration"], keep="last")
        frame = steps.merge(evals, on=["iteration", "epoch"], how="outer").sort_values("iteration")
        frame["iteration"] = frame["iteration"].astype(int)
        frame["epoch"] = frame["epoch"].astype(int)
        return frame.reset_index(drop=True)

    def evals_frame(self) -> pd.DataFrame:
        """A pandas DataFrame of the evaluation records only."""
        return pd.DataFrame(self.evals)


def checkpoint_path(checkpoint_dir: str | os.PathLike, epochs_done: int) -> Path:
    """``checkpoint_dir/epoch_NNNN.pt`` written after ``epochs_done`` complete epochs."""
    return Path(checkpoint_dir) / f"epoch_{int(epochs_done):04d}.pt"


def _list_checkpoints(checkpoint_dir: Path) -> dict[int, Path]:
    if not checkpoint_dir.is_dir():
        return {}
    found = {}
    for p in checkpoint_dir.iterdir():
        m = _CKPT_RE.match(p.name)  # leftovers of interrupted atomic writes (*.tmp) never match
        if m and p.is_file():
            found[int(m.group(1))] = p
    return found


def latest_checkpoint(checkpoint_dir: str | os.PathLike, max_epoch: int | None = None) -> Path | None:
    """The checkpoint with the most completed epochs (at most ``max_epoch``), or None."""
    found = _list_checkpoints(Path(checkpoint_dir))
    keys = [k for k in found if max_epoch is None or k <= max_epoch]
    return found[max(keys)] if keys else None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass an existing epoch_NNNN.pt (train.latest_checkpoint finds the newest)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"checkpoint {path} could not be read ({exc}); delete it or pass resume=False") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fundus_nb.train checkpoint; use another checkpoint_dir or resume=False")
    return ckpt


def _settings(model: nn.Module, lr: float, momentum: float, weight_decay: float, seed: int) -> dict:
    return {
        "model_class": type(model).__name__,
        "param_shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "seed": int(seed),
    }


def _numbers(d: Any, what: str) -> dict[str, float]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise TypeError(f"{what} must return a dict of numbers (or None), got {type(d).__name__}; return a dict")
    out = {}
    for k, v in d.items():
        if k in ("iteration", "epoch", "epoch_end", "loss"):
            raise ValueError(f"{what} returned the reserved key {k!r}; rename it")
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise TypeError(
                f"{what} must return a dict of numbers, but {k!r} is {type(v).__name__}; convert it with float()"
            ) from None
    return out


def _check_batch(x: Any, y: Any, n_classes_hint: int | None) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"batches must yield (x, y) torch tensors, got ({type(x).__name__}, {type(y).__name__}); "
            "convert them with patches.to_tensor and torch.as_tensor"
        )
    if not torch.is_floating_point(x):
        raise ValueError(
            f"x must be float (model scale, uint8/255), got dtype {x.dtype}; convert with patches.to_tensor"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.bool):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}; convert with y.long()")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must be a 1-D label vector with one label per sample, got x {tuple(x.shape)} and "
            f"y {tuple(y.shape)}; yield as many labels as samples"
        )
    if x.shape[0] == 0:
        raise ValueError("batches yielded an empty batch; every batch needs at least one sample")


def fit(
    model: nn.Module,
    batches: Batches,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, float] | None] | None = None,
    extra_state: Any = None,
    fingerprint: dict | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` with SGD on cross-entropy for ``epochs`` epochs.

    Parameters
    ----------
    model : nn.Module
        Returns logits (N, C). It is moved to ``device`` and left there, in train mode.
    batches : callable
        ``batches(epoch, rng)`` -> iterable of ``(x, y)``: float inputs and integer labels.
        ``rng = numpy.random.default_rng([seed, epoch])``; draw all randomness from it.
    epochs : int
        Total number of epochs (a resumed run counts the epochs already done).
    lr, momentum, weight_decay : float
        ``torch.optim.SGD`` settings; weight decay applies to every layer (SeS paper).
    seed : int
        Seeds torch (``torch.manual_seed(seed)`` at the start of a fresh run) and the epochs' rngs.
        The model's initial weights are NOT reseeded: create the model after ``seed_everything``.
    checkpoint_dir : path, optional
        Where ``epoch_NNNN.pt`` checkpoints go (model, optimizer, history, epoch, torch RNG state,
        ``extra_state``), written atomically after every epoch.
    resume : bool
        Continue from the latest checkpoint in ``checkpoint_dir`` with at most ``epochs`` epochs
        (a checkpoint made with another model or other settings raises ``ValueError``). With
        ``False`` the old ``epoch_*.pt`` files of that folder are deleted and training starts anew.
    eval_fn : callable, optional
        ``eval_fn(model) -> dict of numbers``, called in eval mode without gradients every
        ``eval_every`` iterations and at each epoch end; recorded in ``History.evals``.
    eval_every : int, optional
        Iterations between in-epoch evaluations (None: epoch ends only).
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, model) -> dict or None``, after each epoch (before its checkpoint);
        the returned numbers are recorded with that epoch's end record. SeS refreshes its sampling
        weights here.
    extra_state : object, optional
        Anything with ``state_dict()`` / ``load_state_dict(d)`` (tensors, numbers, lists, dicts)
        whose state must survive a resume, e.g. the SeS sampler's weights.
    fingerprint : dict, optional
        Everything else that determines the batches and the model (data ids, image size,
        enhancement, sampler and epoch settings, batch size, augmentation, architecture, ...),
        JSON-serialisable; notebooks pass their parameters. It is stored in every checkpoint, and
        resuming from a checkpoint whose fingerprint differs raises ``ValueError`` naming the
        differing keys, so a changed setting never silently continues an old run.
    device : optional
        Default CUDA when available, else CPU.
    progress : bool
        ``tqdm.auto`` bar over epochs; also silenced by the environment variable ``TQDM_DISABLE=1``.

    Returns
    -------
    History
        Per-iteration losses and evaluation records (the resumed part included).
    """
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool):
        raise TypeError(f"epochs must be an integer, got {type(epochs).__name__}; pass e.g. epochs=10")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}; pass the total number of epochs to reach")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}; pass e.g. {name}=0.01")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}; pass e.g. lr=0.01")
    if momentum < 0 or weight_decay < 0:
        raise ValueError(
            f"momentum and weight_decay must be >= 0, got momentum={momentum} and weight_decay={weight_decay}; "
            "pass 0 to switch one off"
        )
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer))):
        raise TypeError(f"eval_every must be an integer or None, got {type(eval_every).__name__}; pass e.g. 50")
    if eval_every is not None and eval_every <= 0:
        raise ValueError(f"eval_every must be positive, got {eval_every}; pass None to evaluate at epoch ends only")
    if eval_every is not None and eval_fn is None:
        raise ValueError("eval_every is set but eval_fn is None; pass eval_fn or drop eval_every")
    if not callable(batches):
        raise TypeError(
            f"batches must be a callable, got {type(batches).__name__}; pass a function batches(epoch, rng) "
            "returning (x, y) pairs"
        )
    if extra_state is not None and not (hasattr(extra_state, "state_dict") and hasattr(extra_state, "load_state_dict")):
        raise TypeError(
            f"extra_state must have state_dict() and load_state_dict(d) methods, {type(extra_state).__name__} "
            "lacks one; pass such an object (e.g. the SeS sampler) or None"
        )
    fingerprint = _canonical_fingerprint(fingerprint)
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    settings = _settings(model, lr, momentum, weight_decay, seed)
    settings["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    history = History()
    start_epoch = 0
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    if ckdir is not None and resume:
        path = latest_checkpoint(ckdir, max_epoch=int(epochs))
        if path is not None:
            ckpt = load_checkpoint(path, map_location=dev)
            _check_settings(ckpt.get("settings", {}), settings, path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history = History.from_dict(ckpt["history"])
            start_epoch = int(ckpt["epoch"])
            torch.set_rng_state(ckpt["torch_rng"].cpu())
            if torch.cuda.is_available() and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["cuda_rng"]])
            if extra_state is not None:
                if "extra_state" not in ckpt:
                    raise ValueError(f"checkpoint {path} holds no extra_state; pass resume=False to restart")
                extra_state.load_state_dict(ckpt["extra_state"])
    else:
        if ckdir is not None:
            for p in _list_checkpoints(ckdir).values():
                p.unlink()
        torch.manual_seed(int(seed))

    iteration = history.iterations
    bar = None
    disable = (not progress) or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    if not disable and epochs > start_epoch:
        bar = tqdm(total=int(epochs), initial=start_epoch, desc="fit", unit="epoch", leave=False, disable=False)

    def evaluate(epoch: int, end: bool, extra: dict[str, float]) -> None:
        rec = {"iteration": iteration, "epoch": epoch, "epoch_end": 1.0 if end else 0.0}
        if eval_fn is not None:
            with eval_mode(model), torch.no_grad():
                rec.update(_numbers(eval_fn(model), "eval_fn"))
        rec.update(extra)
        history.evals.append(rec)

    try:
        for epoch in range(start_epoch, int(epochs)):
            model.train()
            rng = np.random.default_rng([int(seed), epoch])
            t_epoch = time.perf_counter()
            n_batches = 0
            for x, y in batches(epoch, rng):
                if n_batches == 0:
                    _check_batch(x, y, None)
                x = x.to(dev, non_blocking=True)
                y = y.to(dev, non_blocking=True).long()
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                iteration += 1
                n_batches += 1
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the loss became {value} at iteration {iteration} (epoch {epoch}); lower "
                        "the learning rate or check the inputs are in model scale (x/255)"
                    )
                history.steps.append({"iteration": iteration, "epoch": epoch, "loss": value})
                if eval_every is not None and iteration % int(eval_every) == 0:
                    evaluate(epoch, False, {})
            if n_batches == 0:
                raise ValueError(f"batches({epoch}, rng) yielded no batches; every epoch needs at least one")
            extra = {"train_seconds": time.perf_counter() - t_epoch}
            if on_epoch_end is not None:
                extra.update(_numbers(on_epoch_end(epoch, model), "on_epoch_end"))
                model.train()
            last = history.evals[-1] if history.evals else None
            if last is not None and last["iteration"] == iteration and not last["epoch_end"]:
                # evaluated at this very iteration already: mark it as the epoch-end record
                last["epoch_end"] = 1.0
                last.update(extra)
            else:
                evaluate(epoch, True, extra)
            if ckdir is not None:
                ckpt = {
                    "format": CHECKPOINT_FORMAT,
                    "settings": settings,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history.to_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                }
                if extra_state is not None:
                    ckpt["extra_state"] = extra_state.state_dict()
                atomic_torch_save(ckpt, checkpoint_path(ckdir, epoch + 1))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history.steps[-1]['loss']:.4f}")
    finally:
        if bar is not None:
            bar.close()
    return history


def _canonical_fingerprint(fingerprint: Any) -> dict:
    """The fingerprint as plain JSON values (clear TypeError when it is not a JSON-able dict)."""
    if fingerprint is None:
        return {}
    if not isinstance(fingerprint, dict):
        raise TypeError(f"fingerprint must be a dict of settings, got {type(fingerprint).__name__}; pass a dict")
    try:
        return json.loads(json.dumps(fingerprint, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"fingerprint must be JSON-serialisable (str, numbers, bools, None, lists, dicts) so that "
            f"it can be stored with the checkpoints ({exc}); convert the offending value, e.g. with "
            "str() or .tolist()"
        ) from None


def _check_settings(saved: dict, current: dict, path: Path) -> None:
    diffs = []
    for key in ("model_class", "lr", "momentum", "weight_decay", "seed"):
        if saved.get(key) != current[key]:
            diffs.append(f"{key}: checkpoint {saved.get(key)!r} vs now {current[key]!r}")
    if saved.get("param_shapes") != current["param_shapes"]:
        diffs.append("parameter names/shapes differ")
    old = json.loads(saved.get("fingerprint", "{}"))
    new = json.loads(current["fingerprint"])
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            diffs.append(f"{key}: checkpoint {old.get(key, '<absent>')!r} vs now {new.get(key, '<absent>')!r}")
    if diffs:
        raise ValueError(
            f"checkpoint {path} belongs to a run with different settings ({'; '.join(diffs)}); to start "
            f"over delete {path.parent} or pass resume=False (notebooks: resume=False), or use another "
            "checkpoint_dir"
        )
