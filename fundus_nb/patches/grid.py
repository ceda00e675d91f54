"""The grid pool at natural prevalence and its label rule (a lesion near the patch centre)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .. import preprocess
from ..data import FundusImage
from .pool import PatchPool
from .positions import EXUDATE_PATCH, POSITION_DTYPE, _fov_of

#: Half-width (px at 512 scale) of the square window of the grid-pool label rule.
GRID_WINDOW = 8.0


def lesion_near(mask: np.ndarray, window: float = GRID_WINDOW) -> np.ndarray:
    """The series' grid label rule as a map: True where a lesion pixel of ``mask`` lies within
    ``window`` pixels (Chebyshev distance, given at 512-px scale and converted to the mask's size)
    of the pixel. :func:`grid_pool` labels its patches with it, the labelling loop's simulated
    expert answers with it.
    """
    mask = np.asarray(mask, bool)
    half = max(0, int(round(preprocess.scale_length(window, max(mask.shape), "window"))))
    return ndimage.maximum_filter(mask, size=2 * half + 1, mode="constant")


def _length_at_512(value, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of pixels at 512-px scale, got {type(value).__name__}; {hint}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of pixels at 512-px scale, got {value!r}; {hint}")
    return float(value)


def grid_pool(
    records: Sequence[FundusImage],
    size: int = EXUDATE_PATCH,
    stride: float = 16,
    window: float = GRID_WINDOW,
    lesion: str = "exudate",
) -> PatchPool:
    """Every patch of a regular grid inside the field of view, labelled at natural prevalence.

    This is the pool a deployed patch detector scans: the grid of centres ``(stride//2 + i*stride,
    stride//2 + j*stride)`` of every image, kept where the centre lies in the record's FOV. **Label
    rule** (the one rule of the series): a grid patch is positive (1) when a lesion pixel lies in the
    square window of half-width ``window`` around its centre (Chebyshev distance <= ``window``),
    else negative (0). With the defaults (stride 16, window 8 at 512 px) about 1 % of the
    synthetic grid is exudate, the natural prevalence a detector meets.

    Parameters
    ----------
    records : sequence of FundusImage
        Standardized records with an exudate (or hemorrhage) mask and a FOV.
    size : int
        Patch side in pixels (fixed at any image size: the network's input).
    stride, window : float
        Grid step and label window in pixels at 512-px scale, converted with
        :func:`fundus_nb.preprocess.scale_length` to the records' size (rounded, at least 1 px).
    lesion : {"exudate", "hemorrhage"}
        Which mask labels the grid.

    Raises
    ------
    TypeError
        When ``stride`` or ``window`` is not a number.
    ValueError
        When ``stride`` is 0, negative or larger than the image, when a record lacks the mask or
        when no grid centre falls in any FOV.
    """
    records = list(records)
    if not records:
        raise ValueError("no records given: a grid pool needs at least one standardized image")
    if lesion not in ("exudate", "hemorrhage"):
        raise ValueError(f"lesion must be 'exudate' or 'hemorrhage', got {lesion!r}")
    hint = "give the grid step in pixels at 512 px, e.g. stride=16"
    stride = _length_at_512(stride, "stride", hint)
    window = _length_at_512(window, "window", "give the label window's half-width at 512 px, e.g. window=8")
    parts_img, parts_r, parts_c, parts_y = [], [], [], []
    for k, rec in enumerate(records):
        h, w = rec.image.shape[:2]
        step = max(1, int(round(preprocess.scale_length(stride, max(h, w), "stride"))))
        if step > min(h, w):
            raise ValueError(
                f"stride {stride:g} px at 512 scale is {step} px on the {h}x{w} image {rec.id!r}, larger "
                "than the image, so the grid would have at most one patch; use a stride below the image side"
            )
        mask = getattr(rec, f"{lesion}_mask")
        if mask is None:
            raise ValueError(f"record {rec.id!r} has no {lesion} mask, so its grid cannot be labelled; "
                             f"use images with {lesion} annotations")
        fov = _fov_of(rec, None)
        rr, cc = np.meshgrid(np.arange(step // 2, h, step), np.arange(step // 2, w, step), indexing="ij")
        keep = fov[rr, cc]
        r, c = rr[keep].astype(np.int32), cc[keep].astype(np.int32)
        near = lesion_near(mask, window)
        parts_img.append(np.full(len(r), k, np.int32))
        parts_r.append(r)
        parts_c.append(c)
        parts_y.append(near[r, c].astype(np.int8))
    pos = np.empty(sum(len(a) for a in parts_r), POSITION_DTYPE)
    if len(pos) == 0:
        raise ValueError("no grid centre falls inside any field of view; check the records' fov masks")
    pos["image"] = np.concatenate(parts_img)
    pos["row"] = np.concatenate(parts_r)
    pos["col"] = np.concatenate(parts_c)
    return PatchPool([r.image for r in records], pos, np.concatenate(parts_y), size, "none",
                     [r.id for r in records])


