"""Natural-prevalence grids for scoring the models of notebook 03, with confounder codes.

* :func:`grid_set` -- ``patches.grid_pool`` of records, plain background subsampled with
  inverse-probability weights (:class:`GridSet`).
* :func:`grid_kinds` -- the confounder code of every pool position.
* :func:`standardized_confounder_map` -- a synthetic record's confounder map in the geometry of its
  standardized record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import preprocess
from ..patches import PatchPool, grid_pool

__all__ = ["GridSet", "grid_set", "grid_kinds", "standardized_confounder_map"]


def standardized_confounder_map(raw, std) -> np.ndarray | None:
    """The synthetic ``confounder_map`` of ``raw`` mapped into the geometry of its standardized
    record ``std`` (nearest pixel, through the same FOV crop box), or None without a map.

    ``preprocess.standardize_record`` maps it too (record version 3); this function returns that
    map, and maps the raw one itself for records standardized otherwise.
    """
    km = getattr(raw, "confounder_map", None)
    if km is None:
        return None
    done = getattr(std, "confounder_map", None)
    if done is not None and done is not km and done.shape == std.image.shape[:2]:
        return done  # preprocess.standardize_record (version >= 3) maps it already
    top, left, side = preprocess.crop_box(raw.fov)
    size = std.image.shape[0]
    src = np.floor(top + (np.arange(size) + 0.5) * side / size).astype(int)
    srcc = np.floor(left + (np.arange(size) + 0.5) * side / size).astype(int)
    h, w = km.shape
    ok_r, ok_c = (src >= 0) & (src < h), (srcc >= 0) & (srcc < w)
    out = np.zeros((size, size), np.uint8)
    out[np.ix_(ok_r, ok_c)] = km[np.ix_(src[ok_r], srcc[ok_c])]
    out[~std.fov] = 0
    return out


def grid_kinds(pool: PatchPool, kind_maps: Sequence[np.ndarray | None], window: int) -> np.ndarray:
    """Confounder code of every pool position: the highest code of ``kind_maps[image]`` within the
    square window of half-width ``window`` px around the centre (the grid label rule's window), 0
    where none (or no map). For analysis only (false positives per kind, what a strategy picked).
    """
    out = np.zeros(len(pool), np.uint8)
    img = pool.positions["image"]
    for i, km in enumerate(kind_maps):
        sel = np.flatnonzero(img == i)
        if km is None or not len(sel):
            continue
        near = ndimage.maximum_filter(np.asarray(km, np.uint8), size=2 * int(window) + 1, mode="constant")
        out[sel] = near[pool.positions["row"][sel], pool.positions["col"][sel]]
    return out


@dataclass
class GridSet:
    """A (subsampled) natural-prevalence grid ready to score: uint8 patches, labels, confounder
    codes, inverse-probability weights, the full grid's size and exact prevalence.
    """

    x: np.ndarray
    y: np.ndarray
    kinds: np.ndarray
    weights: np.ndarray
    n_grid: int
    prevalence: float


def grid_set(
    records,
    kind_maps,
    *,
    stride: float = 16,
    window: float = 8,
    plain_cap: int | None = None,
    seed: int = 0,
    size: int = 48,
) -> GridSet:
    """``patches.grid_pool`` of ``records`` with every positive and every confounder negative kept and
    the plain background subsampled uniformly to ``plain_cap`` (None: all), each kept plain patch
    weighted ``n_plain / plain_cap`` (inverse inclusion probability), so weighted AP and
    false-positive rates estimate the full grid's.
    """
    pool = grid_pool(records, size=size, stride=stride, window=window)
    side = max(records[0].image.shape[:2])
    kinds = grid_kinds(pool, kind_maps, int(round(preprocess.scale_length(window, side, "window"))))
    strata = np.where(pool.labels == 1, -1, kinds.astype(int))
    rng = np.random.default_rng(seed)
    plain = np.flatnonzero(strata == 0)
    keep, w = np.ones(len(pool), bool), np.ones(len(pool))
    if plain_cap is not None and plain_cap < len(plain):
        drop = np.setdiff1d(plain, rng.choice(plain, size=int(plain_cap), replace=False))
        keep[drop] = False
        w[plain] = len(plain) / int(plain_cap)
    idx = np.flatnonzero(keep)
    return GridSet(
        pool.extract(idx), pool.labels[idx].astype(int), kinds[idx], w[idx], len(pool), float(pool.labels.mean())
    )
