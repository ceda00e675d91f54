"""Augmentation, vectorised per batch: square symmetries (EGL), one-pixel shifts and flips (SeS).

The one hemorrhage sampling engine (:func:`hemorrhage_augmentation`) and the one flip convention
(:data:`FLIP_HORIZONTAL` = bit 0, :data:`FLIP_VERTICAL` = bit 1) live here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


# ----------------------------------------------------------------------------------------------
# augmentation (vectorised: one operation per group of the batch, never one per patch)
# ----------------------------------------------------------------------------------------------
def d4_transform(patches: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7) of the square's symmetry group applied to ``(N, s, s, C)`` patches.

    ``k = 4 * f + q``: an optional left-right flip (``f = 1``) followed by ``q`` counter-clockwise
    quarter turns (``np.rot90``). ``k = 0`` is the identity. Returns a view where possible.
    """
    if not 0 <= int(k) < 8:
        raise ValueError(f"D4 element index must be 0..7, got {k}")
    f, q = divmod(int(k), 4)
    x = patches[:, :, ::-1] if f else patches
    return np.rot90(x, q, axes=(1, 2))


def d4_all(patch: np.ndarray) -> np.ndarray:
    """The 8 symmetric copies of one ``(s, s, C)`` patch (index ``k`` = :func:`d4_transform` ``k``)."""
    return np.stack([d4_transform(patch[None], k)[0] for k in range(8)])


def _apply_grouped(patches: np.ndarray, groups: np.ndarray, n_groups: int, fn: Callable) -> np.ndarray:
    out = np.empty_like(patches)
    for g in range(n_groups):
        sel = np.flatnonzero(groups == g)
        if sel.size:
            out[sel] = fn(patches[sel], g)
    return out


def augment_d4(patches: np.ndarray, rng: np.random.Generator, k: np.ndarray | None = None) -> np.ndarray:
    """A random (or given, ``k`` in 0..7 per patch) square symmetry applied to each patch."""
    if k is None:
        k = rng.integers(0, 8, size=len(patches))
    return _apply_grouped(patches, np.asarray(k), 8, d4_transform)


#: Flip codes, one convention for the whole package (:func:`augment_flips`, ``PatchPool`` schemes
#: ``"ses"`` and ``"flips"``, ``ses.SelectiveSampler``): bit 0 = horizontal flip (columns
#: reversed, left <-> right), bit 1 = vertical flip (rows reversed, top <-> bottom); 3 = both.
FLIP_HORIZONTAL = 1
FLIP_VERTICAL = 2


def random_flips(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` flip codes drawn uniformly from 0..3: each flip independently with probability 1/2."""
    return rng.integers(0, 4, size=n)


def flip_patches(patches: np.ndarray, code: np.ndarray, *, channels_first: bool = False) -> np.ndarray:
    """Flip each patch **in place** as its code says (:data:`FLIP_HORIZONTAL`, :data:`FLIP_VERTICAL`).

    ``patches`` is ``(N, s, s, C)``, or ``(N, C, s, s)`` with ``channels_first=True``; returns it.
    """
    code = np.asarray(code)
    rows, cols = (2, 3) if channels_first else (1, 2)
    for g in (FLIP_HORIZONTAL, FLIP_VERTICAL, FLIP_HORIZONTAL | FLIP_VERTICAL):  # one pass per group
        sel = np.flatnonzero(code == g)
        if sel.size:
            axes = tuple(ax for bit, ax in ((FLIP_HORIZONTAL, cols), (FLIP_VERTICAL, rows)) if g & bit)
            patches[sel] = np.flip(patches[sel], axis=axes)
    return patches


def augment_flips(patches: np.ndarray, rng: np.random.Generator, code: np.ndarray | None = None) -> np.ndarray:
    """Independent random horizontal and vertical flips (each with probability 1/2) per patch.

    ``code`` (0..3 per patch) fixes them: bit 0 = horizontal flip (columns reversed), bit 1 =
    vertical flip (rows reversed), as everywhere in the package. Returns a new array.
    """
    if code is None:
        code = random_flips(len(patches), rng)
    return flip_patches(np.array(patches, copy=True), code)


#: D4 element (see :func:`d4_transform`) equal to each flip code: none -> identity,
#: horizontal -> left-right flip (4), vertical -> flip + half turn (6), both -> half turn (2).
_FLIP_TO_D4 = np.array([0, 4, 6, 2])


def _d4_parts() -> dict[int, tuple[int, int, int]]:
    """For each D4 element k: (transpose, row flip, column flip) flags such that
    ``d4_transform(x, k) == rowflip^a(colflip^b(transpose^t(x)))`` (found by brute force).
    """
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    parts = {}
    for k in range(8):
        target = d4_transform(x, k)
        for t in (0, 1):
            for a in (0, 1):
                for b in (0, 1):
                    y = x.transpose(0, 2, 1, 3) if t else x
                    y = y[:, :, ::-1] if b else y
                    y = y[:, ::-1] if a else y
                    if np.array_equal(y, target):
                        parts[k] = (t, a, b)
    return parts


_D4_PARTS = _d4_parts()
_D4_PARTS_ARRAY = np.array([_D4_PARTS[k] for k in range(8)], dtype=np.int64)


def random_shifts(
    rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator, shape: tuple[int, int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-pixel translations: each centre moves by -1, 0 or +1 in row and column (uniform).

    One ``(N, 2)`` draw of ``rng.integers(-1, 2)`` (row shift, column shift per centre). With
    ``shape`` (an ``(H, W)`` pair or an ``(N, 2)`` array of per-position shapes) the shifted
    centres are clipped into the image.
    """
    shift = rng.integers(-1, 2, size=(len(rows), 2))
    r = np.asarray(rows, dtype=np.int64) + shift[:, 0]
    c = np.asarray(cols, dtype=np.int64) + shift[:, 1]
    if shape is not None:
        shp = np.asarray(shape).reshape(-1, 2)
        r = np.clip(r, 0, shp[:, 0] - 1)
        c = np.clip(c, 0, shp[:, 1] - 1)
    return r, c


def hemorrhage_augmentation(
    rows: np.ndarray, cols: np.ndarray, shapes: np.ndarray, n_negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The SeS augmentation of one draw: the one hemorrhage sampling engine of the package.

    Positives (centres ``rows``, ``cols`` in images of ``shapes``, an ``(N, 2)`` array) are
    shifted by one pixel (:func:`random_shifts`, clipped into the image) and get a random flip
    code; the ``n_negatives`` negatives get a flip code only. Draw order (fixed, so an epoch
    depends only on ``rng``): shifts, positive flips, negative flips. ``PatchPool(scheme="ses")``
    and ``ses.SelectiveSampler`` both draw through it; flip codes follow :data:`FLIP_HORIZONTAL` /
    :data:`FLIP_VERTICAL`.

    Returns
    -------
    rows, cols : np.ndarray
        int64 shifted positive centres.
    positive_flips, negative_flips : np.ndarray
        Flip codes 0..3.
    """
    r, c = random_shifts(rows, cols, rng, shapes)
    return r, c, random_flips(len(r), rng), random_flips(int(n_negatives), rng)
