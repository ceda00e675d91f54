"""Patch datasets: candidate positions, batched extraction, augmentation, patient splits.

A subpackage split by concern; every name is re-exported here, so ``patches.X`` works for all of
them: ``positions`` (patch centres), ``windows`` (the border rule: padding, window views,
extraction, ``to_tensor``), ``augment`` (D4, shifts, flips: the hemorrhage sampler's draws),
``pool`` (:class:`PatchPool`, exudate/hemorrhage pools), ``grid`` (the natural-prevalence grid
pool and its label rule), ``splits`` (class-balanced samples, patient splits).

Both papers train on small square patches cut around a pixel of interest: the EGL paper on 48x48
exudate/healthy patches, the SeS paper on 41x41 hemorrhage/normal patches. This module turns
standardized :class:`~fundus_nb.data.FundusImage` records into such patches without ever storing
a copy of each patch:

* **Positions** -- ``exudate_positives``, ``exudate_negatives``, ``hemorrhage_positives``,
  ``hemorrhage_negatives`` return ``(rows, cols)`` int32 arrays for one record; ``patchify`` lays
  a grid over an image or its field of view (FOV).
* **Extraction** -- ``extract`` pads each image once and gathers every patch with one fancy-index
  into a strided window view (no Python loop per patch). Border rule (``docs/CONTRACTS.md``): the
  image is zero-padded and the patch of size ``s`` centred at ``(r, c)`` covers rows
  ``r - s//2 .. r - s//2 + s - 1`` (same for columns).
* **Model input** -- ``to_tensor`` maps uint8 ``(N, s, s, 3)`` to float32 ``(N, 3, s, s)`` = x/255.
* **Augmentation** -- vectorised per batch: the 8 symmetries of the square (D4) for exudate
  patches; one-pixel translations plus horizontal/vertical flips for hemorrhage positives; random
  flips for negatives.
* **Pools** -- :class:`PatchPool` (a torch ``Dataset``) holds the padded uint8 images (plus the
  flipped/transposed copies its augmentation needs) and a structured ``(image, row, col)`` int32
  array with an int8 label per position: 13 bytes per position, whatever the patch size.
  ``get_batch`` is the fast path used by training: one gather and one cast per batch.
* **Splits** -- ``split_by_patient`` (no patient in two splits) and ``balanced_sample``
  (class-balanced index sets with configurable counts).
"""

from __future__ import annotations

from .augment import (
    FLIP_HORIZONTAL,
    FLIP_VERTICAL,
    augment_d4,
    augment_flips,
    d4_all,
    d4_transform,
    flip_patches,
    hemorrhage_augmentation,
    random_flips,
    random_shifts,
)
from .grid import GRID_WINDOW, grid_pool, lesion_near
from .pool import SCHEMES, PatchDataset, PatchPool, exudate_pool, hemorrhage_pool
from .positions import (
    EGL_PAPER_COUNTS,
    EXUDATE_PATCH,
    HEMORRHAGE_PATCH,
    POSITION_DTYPE,
    exudate_negatives,
    exudate_positives,
    hemorrhage_negatives,
    hemorrhage_positives,
    patchify,
    record_fov,
)
from .splits import balanced_sample, split_by_patient, split_counts
from .windows import extract, pad_images, to_tensor, window_view, windows

__all__ = [
    "POSITION_DTYPE",
    "EXUDATE_PATCH",
    "HEMORRHAGE_PATCH",
    "EGL_PAPER_COUNTS",
    "SCHEMES",
    "exudate_positives",
    "exudate_negatives",
    "hemorrhage_positives",
    "hemorrhage_negatives",
    "patchify",
    "record_fov",
    "pad_images",
    "extract",
    "windows",
    "window_view",
    "to_tensor",
    "d4_transform",
    "d4_all",
    "augment_d4",
    "augment_flips",
    "FLIP_HORIZONTAL",
    "FLIP_VERTICAL",
    "flip_patches",
    "random_flips",
    "random_shifts",
    "hemorrhage_augmentation",
    "PatchPool",
    "PatchDataset",
    "exudate_pool",
    "grid_pool",
    "lesion_near",
    "GRID_WINDOW",
    "hemorrhage_pool",
    "balanced_sample",
    "split_by_patient",
    "split_counts",
]
