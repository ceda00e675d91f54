"""Label-efficiency summaries of active-learning runs and the reference training rule.

* :func:`labels_to_reach` -- labels a run needed to first reach a target.
* :func:`curves_on_grid`, :func:`mean_band` -- learning curves on a common axis, mean and
  Student-t band over seeds.
* :func:`area_under_curve` -- normalised area under a learning curve.
* :func:`fit_until_plateau` -- train epoch by epoch until the validation loss stops improving.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from torch import nn

from .selection import SelectionResult

__all__ = ["labels_to_reach", "curves_on_grid", "mean_band", "area_under_curve", "fit_until_plateau"]


def labels_to_reach(result: SelectionResult, target: float, metric: str = "f1") -> dict[str, float]:
    """Labels a run needed to first reach ``metric >= target``.

    Returns ``{"round", "iterations", "n_patches", "n_images"}`` of the first record that reached
    the target, NaN everywhere when no record did (the run never got there).
    """
    if not result.records or metric not in result.records[0]:
        have = sorted(result.records[0]) if result.records else []
        raise ValueError(f"the records have no {metric!r} column (have {have}); pass eval_fn returning it")
    for rec in result.records:
        if rec[metric] >= target:
            return {key: float(rec.get(key, np.nan)) for key in ("round", "iterations", "n_patches", "n_images")}
    return {key: float("nan") for key in ("round", "iterations", "n_patches", "n_images")}


def curves_on_grid(results: Sequence[SelectionResult], metric: str, grid: np.ndarray) -> np.ndarray:
    """Each run's ``metric`` against SGD iterations, linearly interpolated onto ``grid``.

    Returns a ``(len(results), len(grid))`` array, NaN outside a run's range of iterations (runs
    of one setting can differ by a few iterations, so they are compared on a common axis).
    """
    grid = np.asarray(grid, float)
    out = np.full((len(results), len(grid)), np.nan)
    for i, res in enumerate(results):
        if not res.records or metric not in res.records[0]:
            raise ValueError(f"run {i} has no {metric!r} in its records; pass eval_fn returning it")
        it = np.array([r["iterations"] for r in res.records], float)
        v = np.array([r[metric] for r in res.records], float)
        inside = (grid >= it[0]) & (grid <= it[-1])
        out[i, inside] = np.interp(grid[inside], it, v)
    return out


def mean_band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its Student-t confidence band at ``level`` (NaNs ignored per column).

    The band is ``scipy.stats.t.interval(level, n - 1, loc=mean, scale=sd / sqrt(n))`` per column
    (``n`` finite values, ``sd`` with ``ddof=1``). Where it cannot be estimated (a single run) or
    has no width (every run equal), the band collapses onto the mean.

    Returns
    -------
    tuple of np.ndarray
        ``(mean, low, high)``, each of length ``values.shape[1]``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}; pass e.g. 0.95")
    v = np.atleast_2d(np.asarray(values, float))
    n = np.sum(np.isfinite(v), axis=0)
    with warnings.catch_warnings():  # all-NaN and single-value columns: NaN mean / sd, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=0)
        sd = np.nanstd(v, axis=0, ddof=1) if v.shape[0] > 1 else np.zeros(v.shape[1])
    sem = sd / np.sqrt(np.maximum(n, 1))
    ok = (n > 1) & (sem > 0)  # t.interval needs df >= 1 and a positive scale
    low, high = stats.t.interval(level, np.maximum(n - 1, 1), loc=np.where(ok, mean, 0.0), scale=np.where(ok, sem, 1.0))
    return mean, np.where(ok, low, mean), np.where(ok, high, mean)


def fit_until_plateau(
    model: nn.Module,
    fit: Callable[..., Any],
    batches: Callable[[int, np.random.Generator], Any],
    val_loss: Callable[[nn.Module], float],
    *,
    max_epochs: int = 30,
    patience: int = 2,
    seed: int = 0,
    min_epochs: int = 1,
) -> dict[str, Any]:
    """Train epoch by epoch until the validation loss stops improving; keep the best epoch.

    **Rule**: after each epoch ``val_loss(model)`` is measured; training stops when it has not
    fallen below its best value for ``patience`` epochs in a row, or after ``max_epochs`` (the
    paper's 30), and the weights of the best epoch are restored. No stop happens before
    ``min_epochs`` epochs: a LeNet from PyTorch's default initialisation sits at one class for its
    first tens of SGD steps, and on a small training set an epoch is a handful of steps, so the
    loss of the first epochs can rise while the model is still at chance (notebook 03 derives
    ``min_epochs`` from a minimum number of SGD steps). ``batches(epoch, rng)`` gets
    ``rng = default_rng([seed, epoch])`` as in the ``train.fit`` contract.

    Returns ``{"epochs", "best_epoch", "val_loss"}`` (the list of losses per epoch).
    """
    if int(max_epochs) < 1 or int(patience) < 1 or int(min_epochs) < 1:
        raise ValueError(
            f"max_epochs, patience and min_epochs must be >= 1, got {max_epochs}, {patience} and {min_epochs}; "
            "pass positive numbers of epochs"
        )
    losses, best, best_state, since = [], np.inf, None, 0
    for epoch in range(int(max_epochs)):
        fit(model, lambda _e, _r, ep=epoch: batches(ep, np.random.default_rng([seed, ep])), epochs=1)
        loss = float(val_loss(model))
        losses.append(loss)
        if loss < best:
            best, best_state, since = loss, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= int(patience) and epoch + 1 >= int(min_epochs):
                break
    model.load_state_dict(best_state)
    return {"epochs": len(losses), "best_epoch": int(np.argmin(losses)) + 1, "val_loss": losses}


def area_under_curve(x, y) -> float:
    """Normalised area under ``y`` against ``x`` (trapezoids / x range): the mean height of a
    learning curve over its span of labelled patches, so curves over the same span compare.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x[-1] <= x[0]:
        return float(y[-1]) if len(y) else float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))
