"""Patch datasets: candidate positions, batched extraction, augmentation, patient splits.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .data import FundusImage

__all__ = [
    "POSITION_DTYPE",
    "EXUDATE_PATCH",
    "HEMORRHAGE_PATCH",
    "EGL_PAPER_COUNTS",
    "exudate_positives",
    "exudate_negatives",
    "hemorrhage_positives",
    "hemorrhage_negatives",
    "patchify",
    "pad_images",
    "extract",
    "windows",
    "window_view",
    "to_tensor",
    "d4_transform",
    "d4_all",
    "augment_d4",
    "augment_flips",
    "random_shifts",
    "PatchPool",
    "PatchDataset",
    "exudate_pool",
    "grid_pool",
    "GRID_WINDOW",
    "hemorrhage_pool",
    "balanced_sample",
    "split_by_patient",
    "split_counts",
]

#: dtype of one pooled position: index of the image in the pool, row and column of the centre.
POSITION_DTYPE = np.dtype([("image", np.int32), ("row", np.int32), ("col", np.int32)])

#: Patch sizes of the two papers.
EXUDATE_PATCH = 48
HEMORRHAGE_PATCH = 41

#: Patch counts of the EGL paper (per class for train and validation; test is the total).
EGL_PAPER_COUNTS = {"train": 8760, "validation": 328, "test": 986}

#: Augmentation schemes understood by :meth:`PatchPool.get_batch`.
SCHEMES = ("none", "d4", "ses", "flips")


# ----------------------------------------------------------------------------------------------
# positions from one record
# ----------------------------------------------------------------------------------------------
def _fov_of(rec: FundusImage, fov: np.ndarray | None) -> np.ndarray:
    mask = fov if fov is not None else rec.fov
    if mask is None:
        raise ValueError(
            f"record {rec.id!r} has no field-of-view mask: standardize it first with "
            "preprocess.standardize_record(rec) or pass fov=<HxW bool array>"
        )
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rec.image.shape[:2]:
        raise ValueError(
            f"record {rec.id!r}: fov has shape {mask.shape} but the image is {rec.image.shape[:2]}; "
            "pass the mask of this image"
        )
    return mask


def _nonzero(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(mask)
    return rows.astype(np.int32), cols.astype(np.int32)


def _centre_pixels(centers: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rounded (row, col) of float centres, clipped into the image."""
    if centers is None or len(centers) == 0:
        empty = np.zeros(0, np.int32)
        return empty, empty.copy()
    c = np.rint(np.asarray(centers, dtype=float).reshape(-1, 2)).astype(np.int64)
    rows = np.clip(c[:, 0], 0, shape[0] - 1).astype(np.int32)
    cols = np.clip(c[:, 1], 0, shape[1] - 1).astype(np.int32)
    return rows, cols


def _hemorrhage_lesion_mask(rec: FundusImage, shape: tuple[int, int]) -> np.ndarray:
    """Hemorrhage pixels (mask) or centre pixels (centres only); all False when neither is known."""
    mask = np.zeros(shape, dtype=bool)
    if rec.hemorrhage_mask is not None:
        mask |= np.asarray(rec.hemorrhage_mask, dtype=bool)
    if rec.hemorrhage_centers is not None:
        r, c = _centre_pixels(rec.hemorrhage_centers, shape)
        mask[r, c] = True
    return mask


def _away_from(lesions: np.ndarray, margin: float) -> np.ndarray:
    """Pixels that are not lesion pixels and lie at least ``margin`` px (Euclidean) from every one."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    if not lesions.any():
        return np.ones(lesions.shape, dtype=bool)
    dist = ndimage.distance_transform_edt(~lesions)
    return (dist >= margin) & ~lesions


def exudate_positives(rec: FundusImage) -> tuple[np.ndarray, np.ndarray]:
    """Positions of exudate pixels of a standardized record.

    Parameters
    ----------
    rec : FundusImage
        A record with an ``exudate_mask`` (after ``preprocess.standardize_record``).

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays, one entry per exudate pixel (empty for an image without exudates).
    """
    if rec.exudate_mask is None:
        raise ValueError(
            f"record {rec.id!r} has no exudate mask: exudate positives need a dataset with exudate "
            "segmentations (synthetic, e-ophtha, IDRiD, DIARETDB1)"
        )
    return _nonzero(np.asarray(rec.exudate_mask, dtype=bool))


def exudate_negatives(
    rec: FundusImage, margin: float = 24, fov: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Healthy positions: inside the FOV and at least ``margin`` px from any lesion of any kind.

    Lesions are the exudate mask, plus the hemorrhage mask and hemorrhage centres when the record
    has them.

    Parameters
    ----------
    rec : FundusImage
        Standardized record with ``exudate_mask`` and ``fov``.
    margin : float
        Minimum Euclidean distance in pixels from a lesion pixel (default 24 = half a 48 px patch,
        our choice: the lesion cannot sit at the centre of a healthy patch).
    fov : np.ndarray, optional
        Overrides ``rec.fov``.

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays.
    """
    shape = rec.image.shape[:2]
    inside = _fov_of(rec, fov)
    if rec.exudate_mask is None:
        raise ValueError(
            f"record {rec.id!r} has no exudate mask, so healthy positions cannot be told from "
            "exudates; use a dataset with exudate segmentations"
        )
    lesions = np.asarray(rec.exudate_mask, dtype=bool) | _hemorrhage_lesion_mask(rec, shape)
    return _nonzero(inside & _away_from(lesions, margin))


def hemorrhage_positives(rec: FundusImage) -> tuple[np.ndarray, np.ndarray]:
    """Hemorrhage positions: every pixel of the hemorrhage mask, or the centres when only those are known.

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays (empty for an image without hemorrhages).
    """
    shape = rec.image.shape[:2]
    if rec.hemorrhage_mask is not None:
        return _nonzero(np.asarray(rec.hemorrhage_mask, dtype=bool))
    if rec.hemorrhage_centers is not None:
        return _centre_pixels(rec.hemorrhage_centers, shape)
    raise ValueError(
        f"record {rec.id!r} has neither a hemorrhage mask nor hemorrhage centres: use a dataset with "
        "hemorrhage references (synthetic, IDRiD, DIARETDB1)"
    )


def hemorrhage_negatives(
    rec: FundusImage,
    allow_lesion_images: bool = False,
    margin: float = 20,
    fov: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal (non-hemorrhage) positions following the SeS paper's rule.

    The paper takes negatives only from images without hemorrhages: for such an image every FOV
    pixel is a negative; an image with hemorrhages gives none. Datasets without lesion-free images
    (IDRiD) need ``allow_lesion_images=True``: negatives then also come from images with
    hemorrhages, at least ``margin`` px from every hemorrhage pixel/centre -- a documented change
    of the method, never made silently (:func:`hemorrhage_pool` fails when no lesion-free image
    exists and the option is off).

    Parameters
    ----------
    rec : FundusImage
        Standardized record with a hemorrhage reference and ``fov``.
    allow_lesion_images : bool
        Take negatives from images with hemorrhages too (away from them by ``margin``).
    margin : float
        Distance in pixels from hemorrhages when ``allow_lesion_images`` (default 20 = 41 // 2).
    fov : np.ndarray, optional
        Overrides ``rec.fov``.

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays.
    """
    inside = _fov_of(rec, fov)
    has = rec.has_hemorrhages
    if has is None:
        raise ValueError(
            f"record {rec.id!r} has no hemorrhage reference (mask or centres), so it is unknown "
            "whether it is free of hemorrhages; use a dataset with hemorrhage references"
        )
    if not has:
        return _nonzero(inside)
    if not allow_lesion_images:
        empty = np.zeros(0, np.int32)
        return empty, empty.copy()
    lesions = _hemorrhage_lesion_mask(rec, rec.image.shape[:2])
    return _nonzero(inside & _away_from(lesions, margin))


def patchify(
    image_shape_or_fov: tuple[int, ...] | np.ndarray, size: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a grid of ``size`` x ``size`` patches that lie fully inside the image.

    Patch tops/lefts run ``0, stride, 2*stride, ...`` while the patch fits; the centre follows the
    border rule (top + size // 2). Given a boolean FOV mask, only centres inside the FOV are kept.

    Parameters
    ----------
    image_shape_or_fov : tuple or np.ndarray
        ``(H, W)`` / ``(H, W, 3)`` shape, or an HxW boolean FOV mask.
    size, stride : int
        Patch size and grid step in pixels (both >= 1).

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays of patch centres, row-major order.
    """
    if isinstance(image_shape_or_fov, np.ndarray):
        if image_shape_or_fov.ndim != 2:
            raise ValueError(
                f"patchify takes an (H, W) shape or an HxW FOV mask, got an array of shape "
                f"{image_shape_or_fov.shape}; pass image.shape or the fov mask"
            )
        fov = image_shape_or_fov.astype(bool)
        shape = fov.shape
    else:
        fov = None
        shape = tuple(int(v) for v in image_shape_or_fov)[:2]
    size, stride = int(size), int(stride)
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got size={size}, stride={stride}")
    h, w = shape
    if size > h or size > w:
        raise ValueError(f"patch size {size} is larger than the image ({h}x{w}); use a smaller size")
    tops = np.arange(0, h - size + 1, stride, dtype=np.int32) + size // 2
    lefts = np.arange(0, w - size + 1, stride, dtype=np.int32) + size // 2
    rows, cols = (a.ravel() for a in np.meshgrid(tops, lefts, indexing="ij"))
    if fov is not None:
        keep = fov[rows, cols]
        rows, cols = rows[keep], cols[keep]
    return rows.astype(np.int32), cols.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------
def _as_image_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = [images]
        elif images.ndim == 4:
            images = list(images)
        else:
            raise ValueError(
                f"images must be an HxWx3 array, an (K,H,W,3) stack or a list of HxWx3 arrays, "
                f"got an array of shape {images.shape}"
            )
    out = []
    for k, im in enumerate(images):
        im = np.asarray(im)
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(
                f"image {k} must be HxWx3 uint8 (a standardized fundus image), got shape {im.shape} "
                f"dtype {im.dtype}"
            )
        out.append(im)
    if not out:
        raise ValueError("no images given: pass at least one HxWx3 uint8 image")
    return out


def pad_images(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Zero-pad every image once for patches of ``size`` and stack them into one uint8 array.

    The result has shape ``(K, Hmax + size - 1, Wmax + size - 1, 3)``; image ``k``'s pixel
    ``(r, c)`` sits at ``(r + size // 2, c + size // 2)``, so the patch centred at ``(r, c)`` is
    ``padded[k, r:r + size, c:c + size]``. Images of different sizes are padded to the largest
    (the extra pixels are zeros, exactly what the border rule gives).
    """
    ims = _as_image_list(images)
    size = int(size)
    if size < 1:
        raise ValueError(f"patch size must be >= 1, got {size}")
    for k, im in enumerate(ims):
        if size > im.shape[0] or size > im.shape[1]:
            raise ValueError(
                f"patch size {size} is larger than image {k} ({im.shape[0]}x{im.shape[1]}); "
                "use a smaller patch or standardize the image to a larger size"
            )
    hmax = max(im.shape[0] for im in ims)
    wmax = max(im.shape[1] for im in ims)
    lo = size // 2
    out = np.zeros((len(ims), hmax + size - 1, wmax + size - 1, 3), dtype=np.uint8)
    for k, im in enumerate(ims):  # one copy per image, not per patch
        out[k, lo : lo + im.shape[0], lo : lo + im.shape[1]] = im
    return out


def window_view(stack: np.ndarray, size: int, *, channels_first: bool = False) -> np.ndarray:
    """Read-only view of every ``size`` x ``size`` window of a zero-padded image stack.

    The one place patch windows are cut (:func:`numpy.lib.stride_tricks.sliding_window_view`).
    ``stack`` is ``(K, Hp, Wp, 3)`` (as :func:`pad_images` returns it) or, with
    ``channels_first=True``, ``(K, 3, Hp, Wp)``; negative-stride views (flipped stacks) work too.
    Window ``[k, r, c]`` is the patch whose top-left corner is ``(r, c)``: in a stack padded by
    :func:`pad_images`, the patch centred at pixel ``(r, c)`` of image ``k``.

    Returns
    -------
    np.ndarray
        ``(K, Hp - size + 1, Wp - size + 1, size, size, 3)`` for an HWC stack, or
        ``(K, Hp - size + 1, Wp - size + 1, 3, size, size)`` (channel-first patches) for a CHW stack.
    """
    if channels_first:
        view = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(2, 3))
        return np.moveaxis(view, 1, 3)
    view = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(1, 2))
    return np.moveaxis(view, 3, 5)


def windows(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` patches of one image centred at ``(rows, cols)``, under the border rule.

    The image is zero-padded (``docs/CONTRACTS.md``): the patch centred at ``(r, c)`` covers rows
    ``r - size//2 .. r - size//2 + size - 1`` and the same columns (for even ``size`` the centre
    is the lower-right of the middle four pixels); pixels outside the image are 0.

    Parameters
    ----------
    image : np.ndarray
        One HxWx3 uint8 image.
    rows, cols : np.ndarray
        Centre pixels (inside the image).
    size : int
        Patch side in pixels.

    Returns
    -------
    np.ndarray
        uint8 array ``(N, size, size, 3)``.
    """
    return extract(image, 0, rows, cols, size)


def _check_positions(
    image_idx: np.ndarray, rows: np.ndarray, cols: np.ndarray, shapes: Sequence[tuple[int, int]]
) -> None:
    n_img = len(shapes)
    if image_idx.size and (image_idx.min() < 0 or image_idx.max() >= n_img):
        raise ValueError(f"image indices must lie in 0..{n_img - 1}, got {image_idx.min()}..{image_idx.max()}")
    hs = np.array([s[0] for s in shapes])[image_idx]
    ws = np.array([s[1] for s in shapes])[image_idx]
    bad = (rows < 0) | (cols < 0) | (rows >= hs) | (cols >= ws)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} patch centres lie outside their image, e.g. (row {rows[i]}, col {cols[i]}) "
            f"in image {image_idx[i]} of size {hs[i]}x{ws[i]}; centres must be pixels of the image"
        )


def extract(
    images: np.ndarray | Sequence[np.ndarray],
    image_idx: np.ndarray | int,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
) -> np.ndarray:
    """Cut patches of ``size`` x ``size`` centred at ``(rows, cols)`` of ``images[image_idx]``.

    Each image is zero-padded once; all patches are gathered with one fancy-index into a strided
    window view (no Python loop per patch). Border rule: the patch centred at ``(r, c)`` covers
    rows ``r - size//2 .. r - size//2 + size - 1`` and the same for columns; pixels outside the
    image are 0.

    Parameters
    ----------
    images : np.ndarray or sequence of np.ndarray
        One HxWx3 uint8 image, a (K,H,W,3) stack or a list of HxWx3 uint8 images.
    image_idx : int or np.ndarray
        Index of the source image of each patch (broadcast against ``rows``).
    rows, cols : np.ndarray
        Centre pixels.
    size : int
        Patch side in pixels.

    Returns
    -------
    np.ndarray
        uint8 array ``(N, size, size, 3)``.
    """
    ims = _as_image_list(images)
    rows = np.atleast_1d(np.asarray(rows)).astype(np.int64)
    cols = np.atleast_1d(np.asarray(cols)).astype(np.int64)
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(f"rows and cols must be 1-D arrays of equal length, got {rows.shape} and {cols.shape}")
    image_idx = np.broadcast_to(np.asarray(image_idx, dtype=np.int64), rows.shape)
    _check_positions(image_idx, rows, cols, [im.shape[:2] for im in ims])
    padded = pad_images(ims, size)
    return window_view(padded, int(size))[image_idx, rows, cols]


def to_tensor(patches: np.ndarray | torch.Tensor, *, channels_first: bool = False) -> torch.Tensor:
    """Model input from uint8 patches: ``(N, h, w, 3)`` -> float32 ``(N, 3, h, w)`` = x / 255.

    The one uint8 -> model-scale conversion of the package. ``channels_first=True`` takes uint8
    patches already laid out ``(N, 3, h, w)`` (as pools gather them). The result is contiguous
    NCHW on the CPU (move it with ``.to(device)``); the division is the exact float32 ``x / 255``.
    """
    if isinstance(patches, torch.Tensor):
        patches = patches.detach().cpu().numpy()
    x = np.asarray(patches)
    axis = 1 if channels_first else -1
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[axis] != 3:
        layout = "(N, 3, h, w)" if channels_first else "(N, h, w, 3)"
        raise ValueError(
            f"to_tensor expects uint8 patches of shape {layout}, got dtype {x.dtype} shape "
            f"{x.shape}; use windows(...) or extract(...), or add a batch axis with patches[None]"
        )
    if channels_first:
        # numpy, not torch, allocates the float batch: glibc reuses its freed heap blocks, while
        # torch's fresh buffers page-fault on every batch (5x slower on one core)
        return torch.from_numpy(np.divide(x, np.float32(255.0), dtype=np.float32))
    # one cast-and-transpose pass into the NCHW buffer, then an exact in-place division by 255
    out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), dtype=np.float32)
    out[...] = x.transpose(0, 3, 1, 2)
    np.divide(out, np.float32(255.0), out=out)
    return torch.from_numpy(out)


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


def _flip(x: np.ndarray, g: int) -> np.ndarray:
    # g bit 0: vertical flip (rows), bit 1: horizontal flip (cols)
    if g & 1:
        x = x[:, ::-1]
    if g & 2:
        x = x[:, :, ::-1]
    return x


def augment_flips(patches: np.ndarray, rng: np.random.Generator, code: np.ndarray | None = None) -> np.ndarray:
    """Independent random vertical and horizontal flips (each with probability 1/2) per patch.

    ``code`` (0..3 per patch) fixes them: bit 0 = vertical flip, bit 1 = horizontal flip.
    """
    if code is None:
        code = rng.integers(0, 4, size=len(patches))
    return _apply_grouped(patches, np.asarray(code), 4, _flip)


#: D4 element (see :func:`d4_transform`) equal to each flip code of :func:`augment_flips`:
#: none -> identity, vertical -> flip + half turn, horizontal -> flip, both -> half turn.
_FLIP_TO_D4 = np.array([0, 6, 4, 2])


def _d4_parts() -> dict[int, tuple[int, int, int]]:
    """For each D4 element k: (transpose, row flip, column flip) flags such that
    ``d4_transform(x, k) == rowflip^a(colflip^b(transpose^t(x)))`` (found by brute force)."""
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

    With ``shape`` (an ``(H, W)`` pair or an ``(N, 2)`` array of per-position shapes) the shifted
    centres are clipped into the image.
    """
    dr = rng.integers(-1, 2, size=len(rows))
    dc = rng.integers(-1, 2, size=len(cols))
    r = np.asarray(rows, dtype=np.int64) + dr
    c = np.asarray(cols, dtype=np.int64) + dc
    if shape is not None:
        shp = np.asarray(shape).reshape(-1, 2)
        r = np.clip(r, 0, shp[:, 0] - 1)
        c = np.clip(c, 0, shp[:, 1] - 1)
    return r, c


# ----------------------------------------------------------------------------------------------
# pools
# ----------------------------------------------------------------------------------------------
class PatchPool(torch.utils.data.Dataset):
    """Labelled patch positions over a set of images, cutting patches on the fly.

    The pool keeps the images (zero-padded once, stacked channel-first as uint8), a structured
    ``(image, row, col)`` int32 array of positions (:data:`POSITION_DTYPE`) and an int8 label per
    position: 13 bytes per position, whatever the patch size.

    Speed (``fast_augment=True``): every symmetry of the square is a transpose and/or column flip
    (done once per *image*: the pool keeps those copies) followed by an optional row flip (a
    negative-stride window view, free). Each augmented patch is then a plain contiguous gather,
    and a batch costs one gather plus one cast. The copies cost image memory: 4x for ``"d4"``,
    2x for ``"ses"``/``"flips"``, 1x for ``"none"`` (see :meth:`memory`). With
    ``fast_augment=False`` only one copy is kept and patches are transformed after the gather
    (same results for the same ``rng``, about half the speed).

    Parameters
    ----------
    images : sequence of np.ndarray
        HxWx3 uint8 images (standardized).
    positions : np.ndarray
        Structured array of :data:`POSITION_DTYPE`, or an ``(N, 3)`` int array of
        ``(image, row, col)``.
    labels : np.ndarray
        Class per position (0 = negative, 1 = positive).
    size : int
        Patch side.
    scheme : {"none", "d4", "ses", "flips"}
        Augmentation used by ``get_batch(..., augment=True)``: ``"d4"`` = a random square
        symmetry (EGL exudate patches), ``"ses"`` = one-pixel translation + random flips for
        positives and random flips for negatives (SeS hemorrhage patches), ``"flips"`` = random
        flips for all.
    image_ids : sequence of str, optional
        Record id of each image (for display and splits).
    fast_augment : bool
        Keep transposed/flipped copies of the images so augmentation is a plain gather.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        positions: np.ndarray,
        labels: np.ndarray,
        size: int,
        scheme: str = "none",
        image_ids: Sequence[str] | None = None,
        fast_augment: bool = True,
    ) -> None:
        ims = _as_image_list(images)
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        positions = np.asarray(positions)
        if positions.dtype.names is None:
            if positions.ndim != 2 or positions.shape[1] != 3:
                raise ValueError(
                    f"positions must be a structured POSITION_DTYPE array or an (N, 3) int array of "
                    f"(image, row, col), got shape {positions.shape}"
                )
            pos = np.empty(len(positions), POSITION_DTYPE)
            pos["image"], pos["row"], pos["col"] = positions.T
            positions = pos
        else:
            positions = positions.astype(POSITION_DTYPE, copy=False)
        labels = np.asarray(labels)
        if labels.shape != (len(positions),):
            raise ValueError(f"labels must have one entry per position ({len(positions)}), got shape {labels.shape}")
        self.size = int(size)
        self.scheme = scheme
        self.shapes = np.array([im.shape[:2] for im in ims], dtype=np.int64)
        _check_positions(
            positions["image"].astype(np.int64), positions["row"], positions["col"], [tuple(s) for s in self.shapes]
        )
        self.positions = positions
        self.labels = labels.astype(np.int8)
        self.image_ids = list(image_ids) if image_ids is not None else [str(k) for k in range(len(ims))]
        if len(self.image_ids) != len(ims):
            raise ValueError(f"image_ids must name each of the {len(ims)} images, got {len(self.image_ids)}")
        padded = pad_images(ims, self.size)  # (K, Hp, Wp, 3); kept only channel-first below
        self.fast_augment = bool(fast_augment)
        self._hp, self._wp = padded.shape[1:3]
        # channel-first variants of every image, one array (V*K, 3, Q, Q): variant 0 = image,
        # 1 = column-flipped, 2 = transposed, 3 = transposed then column-flipped
        n_var = 1 if not self.fast_augment or scheme == "none" else (4 if scheme == "d4" else 2)
        q = max(self._hp, self._wp)
        chw = padded.transpose(0, 3, 1, 2)
        k_img = len(ims)
        stack = np.zeros((n_var * k_img, 3, q, q), dtype=np.uint8)
        stack[:k_img, :, : self._hp, : self._wp] = chw
        if n_var > 1:
            stack[k_img : 2 * k_img, :, : self._hp, : self._wp] = chw[..., ::-1]
        if n_var > 2:
            stack[2 * k_img : 3 * k_img, :, : self._wp, : self._hp] = chw.transpose(0, 1, 3, 2)
            stack[3 * k_img :, :, : self._wp, : self._hp] = chw.transpose(0, 1, 3, 2)[..., ::-1]
        self._n_var = n_var
        self._stack = stack
        self._cwin = window_view(stack, self.size, channels_first=True)

    # --- sizes and memory ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.positions)

    @property
    def n_images(self) -> int:
        return len(self.shapes)

    def class_counts(self, indices: np.ndarray | None = None) -> dict[int, int]:
        """Number of positions per class (over ``indices`` when given)."""
        lab = self.labels if indices is None else self.labels[np.asarray(indices)]
        return {0: int((lab == 0).sum()), 1: int((lab == 1).sum())}

    @property
    def bytes_per_position(self) -> int:
        """Bytes each position costs: the (image, row, col) record plus its label."""
        return self.positions.dtype.itemsize + self.labels.dtype.itemsize

    def memory(self, n_positions: int | None = None) -> dict[str, int]:
        """Memory in bytes: padded images, positions+labels, total; for ``n_positions`` if given."""
        n = len(self) if n_positions is None else int(n_positions)
        pos = n * self.bytes_per_position
        images = int(self._stack.nbytes)
        return {"images": images, "positions": pos, "total": images + pos,
                "bytes_per_position": self.bytes_per_position}

    # --- patches ---------------------------------------------------------------------------
    def _gather(self, img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """uint8 NHWC patches (no augmentation)."""
        return np.ascontiguousarray(self._cwin[img, rows, cols].transpose(0, 2, 3, 1))

    @property
    def images(self) -> np.ndarray:
        """The padded images as a read-only ``(K, Hp, Wp, 3)`` uint8 view (pixel (r, c) of image k
        at ``[k, r + size // 2, c + size // 2]``)."""
        v = self._stack[: self.n_images, :, : self._hp, : self._wp].transpose(0, 2, 3, 1)
        v = v.view()
        v.flags.writeable = False
        return v

    def class_indices(self, cls: int) -> np.ndarray:
        """Pool indices of class ``cls`` (computed once, cached)."""
        cache = self.__dict__.setdefault("_class_idx", {})
        if cls not in cache:
            cache[cls] = np.flatnonzero(self.labels == cls)
        return cache[cls]

    def _gather_chw(self, img, rows, cols, k) -> np.ndarray:
        """uint8 ``(N, 3, s, s)`` patches, patch ``i`` under D4 element ``k[i]`` (None = identity).

        Element ``k`` = optional transpose, then optional column flip, then optional row flip
        (:data:`_D4_PARTS`). The first two select an image variant kept by the pool and the
        patch's top-left corner is mapped into that variant, so one gather serves the whole batch;
        the row flips are then one reversed copy over the patches that need them.
        """
        s, hp, wp, n_img = self.size, self._hp, self._wp, self.n_images
        if k is None:
            return self._cwin[img, rows, cols]
        t, a, b = _D4_PARTS_ARRAY[k].T
        r = np.where(t, cols, rows)
        c = np.where(t, rows, cols)
        c = np.where(b, np.where(t, hp, wp) - s - c, c)
        x = self._cwin[(2 * t + b) * n_img + img, r, c]
        flip = np.flatnonzero(a)
        if flip.size:
            x[flip] = x[flip, :, ::-1]
        return x

    def extract(self, indices: np.ndarray) -> np.ndarray:
        """uint8 patches ``(N, s, s, 3)`` of the positions ``indices`` (no augmentation)."""
        p = self.positions[np.asarray(indices)]
        return self._gather(p["image"], p["row"], p["col"])

    def _plan(self, indices, rng, augment):
        """Validated indices, (image, row, col) per patch (shifted for "ses") and D4 element (or None)."""
        indices = np.asarray(indices, dtype=np.int64).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"position indices must lie in 0..{len(self) - 1}, got {indices.min()}..{indices.max()}")
        if augment is True:
            scheme = self.scheme
        elif augment is False or augment is None:
            scheme = "none"
        else:
            scheme = augment
        if scheme not in SCHEMES:
            raise ValueError(f"augment must be True, False or one of {SCHEMES}, got {augment!r}")
        if scheme != "none" and rng is None:
            rng = np.random.default_rng()
        p = self.positions[indices]
        img, rows, cols = p["image"], p["row"].astype(np.int64), p["col"].astype(np.int64)
        if scheme == "ses":
            pos = self.labels[indices] == 1
            rows[pos], cols[pos] = random_shifts(rows[pos], cols[pos], rng, self.shapes[img[pos]])
        if scheme == "none":
            k = None
        elif scheme == "d4":
            k = rng.integers(0, 8, size=len(indices))
        else:  # flip code (bit 0 vertical, bit 1 horizontal) expressed as the equal D4 element
            k = _FLIP_TO_D4[rng.integers(0, 4, size=len(indices))]
        return indices, img, rows, cols, k

    def _transformed(self, img, rows, cols, k, out, channels_first):
        """Write patch ``i`` under D4 element ``k[i]`` into ``out[i]`` (uint8 NHWC or float NCHW).

        Patches are gathered group by group in one contiguous (fast) read; the symmetry, the
        channel transpose and the cast are then one strided pass into ``out``.
        """
        order = np.argsort(k, kind="stable")
        x = self._gather(img[order], rows[order], cols[order])
        bounds = np.searchsorted(k[order], np.arange(9))
        for g in range(8):
            a, b = bounds[g], bounds[g + 1]
            if a == b:
                continue
            src = d4_transform(x[a:b], g)
            out[order[a:b]] = src.transpose(0, 3, 1, 2) if channels_first else src
        return out

    def patches(
        self, indices: np.ndarray, rng: np.random.Generator | None = None, augment: bool | str = False
    ) -> np.ndarray:
        """uint8 patches ``(N, s, s, 3)`` of ``indices``, augmented by ``augment``.

        ``augment`` is False (none), True (the pool's ``scheme``) or a scheme name from
        ``("none", "d4", "ses", "flips")``; ``rng`` draws it (a fresh unseeded one when None).
        """
        _, img, rows, cols, k = self._plan(indices, rng, augment)
        if k is None:
            return self._gather(img, rows, cols)
        if self._fast_for(k):
            return self._gather_chw(img, rows, cols, k).transpose(0, 2, 3, 1).copy()
        out = np.empty((len(img), self.size, self.size, 3), dtype=np.uint8)
        return self._transformed(img, rows, cols, k, out, channels_first=False)

    def _fast_for(self, k: np.ndarray | None) -> bool:
        """Whether the kept stacks cover every element in ``k``."""
        if k is None:
            return True
        return bool((2 * _D4_PARTS_ARRAY[k, 0] + _D4_PARTS_ARRAY[k, 2] < self._n_var).all())

    def get_batch(
        self,
        indices: np.ndarray,
        rng: np.random.Generator | None = None,
        augment: bool | str = False,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training fast path: ``(x float32 (N,3,s,s) = uint8/255, y int64 (N,))`` for ``indices``.

        Equal to ``to_tensor(self.patches(indices, rng, augment))`` for the same ``rng`` state,
        but the augmentation, channel transpose and cast are fused into one pass. ``device``
        moves both tensors.
        """
        indices, img, rows, cols, k = self._plan(indices, rng, augment)
        if self._fast_for(k):
            x = to_tensor(self._gather_chw(img, rows, cols, k), channels_first=True)
        else:
            out = np.empty((len(img), 3, self.size, self.size), dtype=np.uint8)
            x = to_tensor(self._transformed(img, rows, cols, k, out, channels_first=True), channels_first=True)
        y = torch.from_numpy(self.labels[indices].astype(np.int64))
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y

    def iter_batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        augment: bool | str = True,
        shuffle: bool = True,
        device: torch.device | str | None = None,
    ):
        """Yield ``get_batch`` batches over ``indices`` (shuffled with ``rng``); the last may be short.

        Fits the ``train.fit`` contract: ``lambda epoch, rng: pool.iter_batches(idx, 32, rng)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = np.asarray(indices, dtype=np.int64)
        if shuffle:
            idx = rng.permutation(idx)
        for start in range(0, len(idx), batch_size):
            yield self.get_batch(idx[start : start + batch_size], rng, augment, device)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``(x (3,s,s) float32, y int64 scalar)`` pair, not augmented (torch ``Dataset`` API)."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"position index {i} out of range for a pool of {len(self)}")
        x, y = self.get_batch(np.array([i % len(self)]))
        return x[0], y[0]

    def subset_images(self, indices: np.ndarray) -> np.ndarray:
        """Image index (into the pool) of each position in ``indices``."""
        return self.positions["image"][np.asarray(indices)]

    def __repr__(self) -> str:
        c = self.class_counts()
        return (f"PatchPool({len(self)} positions: {c[1]} positive / {c[0]} negative, {self.n_images} images, "
                f"size={self.size}, scheme={self.scheme!r})")


#: Alias: the pool *is* the torch ``Dataset``.
PatchDataset = PatchPool


def _subsample(rows, cols, limit, rng):
    if limit is None or len(rows) <= limit:
        return rows, cols
    keep = np.sort(rng.choice(len(rows), size=int(limit), replace=False))
    return rows[keep], cols[keep]


def _build_pool(records, pos_fn, neg_fn, size, scheme, max_pos, max_neg, seed, what) -> PatchPool:
    records = list(records)
    if not records:
        raise ValueError(f"no records given: a {what} pool needs at least one standardized image")
    rng = np.random.default_rng(seed)
    parts_img, parts_r, parts_c, parts_y = [], [], [], []
    for k, rec in enumerate(records):
        for label, fn, limit in ((1, pos_fn, max_pos), (0, neg_fn, max_neg)):
            r, c = _subsample(*fn(rec), limit, rng)
            parts_img.append(np.full(len(r), k, np.int32))
            parts_r.append(r)
            parts_c.append(c)
            parts_y.append(np.full(len(r), label, np.int8))
    pos = np.empty(sum(len(a) for a in parts_r), POSITION_DTYPE)
    pos["image"] = np.concatenate(parts_img)
    pos["row"] = np.concatenate(parts_r)
    pos["col"] = np.concatenate(parts_c)
    labels = np.concatenate(parts_y)
    return PatchPool([r.image for r in records], pos, labels, size, scheme, [r.id for r in records])


def exudate_pool(
    records: Sequence[FundusImage],
    size: int = EXUDATE_PATCH,
    margin: float = 24,
    max_positives_per_image: int | None = None,
    max_negatives_per_image: int | None = 5000,
    seed: int = 0,
) -> PatchPool:
    """Exudate (1) / healthy (0) pool over standardized records, augmented with D4 by default.

    Every exudate pixel is a positive; healthy positions come from :func:`exudate_negatives`.
    ``max_*_per_image`` subsample uniformly (seeded) so a pool stays small; None keeps all.
    Raises ValueError when no image has exudates.
    """
    pool = _build_pool(
        records, exudate_positives, lambda r: exudate_negatives(r, margin=margin), size, "d4",
        max_positives_per_image, max_negatives_per_image, seed, "exudate",
    )
    counts = pool.class_counts()
    if counts[1] == 0:
        raise ValueError(
            f"none of the {pool.n_images} images has exudate pixels, so there are no positive patches; "
            "add images with exudates"
        )
    if counts[0] == 0:
        raise ValueError(f"no healthy positions at least {margin} px from lesions; lower margin")
    return pool


#: Half-width (px at 512 scale) of the square window of the grid-pool label rule.
GRID_WINDOW = 8.0


def lesion_near(mask: np.ndarray, window: float = GRID_WINDOW) -> np.ndarray:
    """The series' grid label rule as a map: True where a lesion pixel of ``mask`` lies within
    ``window`` pixels (Chebyshev distance, given at 512-px scale and converted to the mask's size)
    of the pixel. :func:`grid_pool` labels its patches with it, the labelling loop's simulated
    expert answers with it."""
    from . import preprocess

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
    from . import preprocess

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


def hemorrhage_pool(
    records: Sequence[FundusImage],
    size: int = HEMORRHAGE_PATCH,
    allow_lesion_images: bool = False,
    margin: float = 20,
    max_positives_per_image: int | None = None,
    max_negatives_per_image: int | None = 5000,
    seed: int = 0,
) -> PatchPool:
    """Hemorrhage (1) / normal (0) pool following the SeS rules (scheme ``"ses"``).

    Negatives come only from images without hemorrhages unless ``allow_lesion_images`` (see
    :func:`hemorrhage_negatives`). Raises ValueError when no image has hemorrhages, or when no image
    is hemorrhage-free and the option is off (e.g. IDRiD: pass ``allow_lesion_images=True``).
    """
    records = list(records)
    known = [r.has_hemorrhages for r in records]
    if records and not allow_lesion_images and all(k is True for k in known):
        raise ValueError(
            f"all {len(records)} images have hemorrhages, and the SeS rule takes negatives only from "
            "hemorrhage-free images; for datasets without such images (IDRiD) pass "
            "allow_lesion_images=True to take negatives away from hemorrhages by `margin` px"
        )
    pool = _build_pool(
        records, hemorrhage_positives,
        lambda r: hemorrhage_negatives(r, allow_lesion_images=allow_lesion_images, margin=margin),
        size, "ses", max_positives_per_image, max_negatives_per_image, seed, "hemorrhage",
    )
    counts = pool.class_counts()
    if counts[1] == 0:
        raise ValueError(
            f"none of the {pool.n_images} images has hemorrhages, so there are no positive patches; "
            "add images with hemorrhages"
        )
    if counts[0] == 0:
        raise ValueError("no negative positions were found; check the FOV masks or lower margin")
    return pool


# ----------------------------------------------------------------------------------------------
# sampling and splits
# ----------------------------------------------------------------------------------------------
def balanced_sample(
    pool: PatchPool,
    n_per_class: int | Mapping[int, int] | Sequence[int],
    rng: np.random.Generator,
    within: np.ndarray | None = None,
    replace: bool = False,
) -> np.ndarray:
    """Indices of a class-balanced set drawn from ``pool``: ``n_per_class`` positions of each class.

    Parameters
    ----------
    pool : PatchPool
        The pool (or anything with an int ``labels`` array).
    n_per_class : int, mapping or sequence
        Same count for both classes, or ``{0: n0, 1: n1}`` / ``(n0, n1)``. The EGL paper used
        8,760 per class for training and 328 for validation (:data:`EGL_PAPER_COUNTS`).
    rng : np.random.Generator
        Draws the sample.
    within : np.ndarray, optional
        Restrict the draw to these pool indices (e.g. the positions of one split's images).
    replace : bool
        Draw with replacement (then any count is possible as long as the class is not empty).

    Returns
    -------
    np.ndarray
        int64 indices into the pool, classes interleaved in random order.
    """
    labels = np.asarray(pool.labels)
    cand = None if within is None else np.asarray(within, dtype=np.int64)
    if isinstance(n_per_class, Mapping):
        want = {int(k): int(v) for k, v in n_per_class.items()}
    elif np.ndim(n_per_class) == 0:
        want = {0: int(n_per_class), 1: int(n_per_class)}
    else:
        want = {k: int(v) for k, v in enumerate(n_per_class)}
    chosen = []
    names = {0: "negative", 1: "positive"}
    for cls, n in sorted(want.items()):
        if n < 0:
            raise ValueError(f"count for class {cls} must be >= 0, got {n}")
        if cand is None:
            have = pool.class_indices(cls) if hasattr(pool, "class_indices") else np.flatnonzero(labels == cls)
        else:
            have = cand[labels[cand] == cls]
        if (not replace and n > len(have)) or (replace and n > 0 and len(have) == 0):
            raise ValueError(
                f"asked for {n} {names.get(cls, cls)} (class {cls}) positions but only {len(have)} exist: "
                f"{n - len(have)} short; lower n_per_class, pass replace=True, or add images"
            )
        chosen.append(rng.choice(have, size=n, replace=replace))
    out = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return rng.permutation(out).astype(np.int64)


def split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Patients per split: largest-remainder rounding of ``n * fractions``, each split >= 1."""
    f = np.asarray(fractions, dtype=float)
    raw = f * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    for k in np.flatnonzero(counts == 0):
        counts[np.argmax(counts)] -= 1
        counts[k] += 1
    return counts


def split_by_patient(
    records: Sequence[FundusImage],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    stratify: str | Callable[[FundusImage], Any] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Split record indices into train / validation (monitoring) / test, keeping each patient in one split.

    Patients (``patient_id``) are shuffled with ``seed`` and divided by ``fractions`` (largest
    remainder, every split gets at least one patient). With ``stratify`` (a record attribute name
    such as ``"has_hemorrhages"`` or a callable), a patient's stratum is the largest value over
    their images (so "has any lesion" for booleans) and every stratum is spread over the splits in
    proportion.

    Parameters
    ----------
    records : sequence of FundusImage
    fractions : sequence of float
        Positive, summing to 1 (the SeS paper: 60/20/20).
    seed : int
    stratify : str or callable, optional
    names : sequence of str, optional
        Split names; default ``("train", "validation", "test")`` for three fractions,
        ``("train", "test")`` for two, ``split0..`` otherwise.

    Returns
    -------
    dict[str, list[int]]
        Sorted record indices per split.
    """
    records = list(records)
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or len(f) < 1 or (f <= 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {tuple(fractions)}")
    if names is None:
        names = {3: ("train", "validation", "test"), 2: ("train", "test")}.get(
            len(f), tuple(f"split{k}" for k in range(len(f)))
        )
    names = list(names)
    if len(names) != len(f):
        raise ValueError(f"need one name per fraction: {len(f)} fractions, {len(names)} names")
    patients = np.array([str(r.patient_id) for r in records])
    uniq = np.unique(patients)
    if len(uniq) < len(f):
        raise ValueError(
            f"cannot split {len(uniq)} patient(s) into {len(f)} splits without putting a patient in two "
            f"splits: {len(f) - len(uniq)} patient(s) short; use fewer splits or more patients"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    strata = np.zeros(len(uniq))
    if stratify is not None:
        get = stratify if callable(stratify) else (lambda r: getattr(r, stratify))
        vals = np.array([np.nan if get(r) is None else float(get(r)) for r in records])
        if np.isnan(vals).any():
            raise ValueError(
                f"stratify={stratify!r} is unknown (None) for {int(np.isnan(vals).sum())} record(s); "
                "stratify by a field every record has, or pass stratify=None"
            )
        inv = np.searchsorted(uniq, patients)
        strata = np.full(len(uniq), -np.inf)
        np.maximum.at(strata, inv, vals)
    # patients grouped by stratum (random inside), then split labels laid out so that each split's
    # share is spread evenly along that order -> every stratum gets its proportion.
    order = order[np.argsort(strata[order], kind="stable")]
    counts = split_counts(len(uniq), f)
    slots = np.concatenate([(np.arange(c) + 0.5) / c for c in counts])
    split_of_slot = np.repeat(np.arange(len(f)), counts)[np.argsort(slots, kind="stable")]
    patient_split = np.empty(len(uniq), dtype=int)
    patient_split[order] = split_of_slot
    rec_split = patient_split[np.searchsorted(uniq, patients)]
    return {name: np.flatnonzero(rec_split == k).tolist() for k, name in enumerate(names)}
