"""Fundus preprocessing: field of view (FOV), square crop, resize, contrast enhancement.

The pipeline every later notebook relies on::

    fov = fov_mask(image)                       # bool HxW: the circular FOV clipped by the frame
    crop = crop_to_fov(image, fov)              # square box of the FOV circle, circle centred
    image512, fov512 = standardize(image, 512)  # both steps + an anti-aliased resize
    enhanced = contrast_enhance(image512, fov=fov512)   # Graham: 4*I - 4*G(sigma)*I + 128

Geometry conventions
--------------------
Coordinates are (row, col) of pixel centres. A crop box is ``(top, left, side)`` in input pixels;
resizing it to ``size`` maps a point ``p`` of the input to
``(p - corner + 0.5) * size / side - 0.5``
(pixel *areas* are aligned, as in :func:`skimage.transform.resize`). Down-scaling uses exact area
averaging (each output pixel is the mean of the input area it covers), up-scaling bilinear
interpolation. Masks are resized with the same resampler and kept where the lesion covers at least
half of an output pixel (``area >= 0.5``); point annotations are mapped exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from skimage.filters import threshold_otsu
from skimage.measure import CircleModel, block_reduce
from skimage.transform import resize

from . import _io

__all__ = [
    "fov_mask",
    "fov_circle",
    "crop_box",
    "crop_to_fov",
    "resize_area",
    "standardize",
    "standardize_record",
    "contrast_enhance",
    "PAPER_SIZE",
    "scale_table",
    "scale_length",
    "rim_profile",
    "fov_halo",
]

#: The image side (px) at which both papers state every length (tolerances, sigmas, distances).
PAPER_SIZE = 512

#: Longest side of the working copy on which the FOV is searched.
_WORK_SIDE = 600
#: Fraction of the way from background to fundus level used to threshold the FOV.
_LEVEL_FRACTION = 0.2


# --------------------------------------------------------------------------- input checks
def _as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Return ``image`` as an HxWx3 uint8 array, or raise saying what is wrong and how to fix it.

    TypeError for a dtype other than uint8 or float, ValueError for a wrong shape or value range.

    uint8 passes unchanged; float images with values in [0, 1] are scaled by 255 and rounded.
    """
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.ndim == 2:
        raise ValueError(
            f"{name} is grayscale (shape {image.shape}) but a colour fundus photograph (HxWx3 RGB) is "
            "needed; load it in colour or stack the grey channel three times"
        )
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"{name} has shape {image.shape}; pass an HxWx3 RGB array"
        )
    if image.shape[2] == 4:
        raise ValueError(
            f"{name} is RGBA (shape {image.shape}); drop the alpha channel first, "
            "e.g. image[..., :3]"
        )
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise ValueError(
            f"{name} is only {image.shape[0]}x{image.shape[1]} pixels; pass an image of at least 16x16"
        )
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        if np.isnan(image).any() or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} is {image.dtype} with values outside [0, 1] (or NaN); "
                "pass uint8 0..255 or float in [0, 1]"
            )
        return np.round(image * 255.0).astype(np.uint8)
    raise TypeError(
        f"{name} has dtype {image.dtype}; pass uint8 (0..255) or float in [0, 1] "
        "(e.g. skimage.util.img_as_ubyte(image))"
    )


def _check_mask(mask, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW array, got shape {mask.shape}; pass one boolean mask")
    if mask.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {mask.shape} but the image is {tuple(shape)}; pass a mask of the "
            "image's height and width"
        )
    return mask.astype(bool, copy=False)


# --------------------------------------------------------------------------- FOV detection
def _block_mean(channel: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (the trailing partial rows/columns are dropped).

    ``block_reduce`` would pad a partial block with zeros, so the array is first cut to whole blocks.
    """
    if factor == 1:
        return channel.astype(np.float32)
    h, w = (channel.shape[0] // factor) * factor, (channel.shape[1] // factor) * factor
    return block_reduce(channel[:h, :w], (factor, factor), np.mean, func_kwargs={"dtype": np.float32})


def _fit_circle(rows: np.ndarray, cols: np.ndarray, n_iter: int = 6) -> tuple[float, float, float]:
    """Robust algebraic (Kasa) circle fit: refit after dropping points far from the circle.

    Each fit is ``skimage.measure.CircleModel`` (the Kasa least-squares fit on normalised
    coordinates). Points whose radial residual exceeds 3 robust standard deviations (at least 1
    pixel) are dropped at each iteration, so notches and local dark rims do not pull the circle.
    This trimming is kept instead of ``skimage.measure.ransac``: it needs neither a residual
    threshold nor a random generator (the FOV must not depend on a seed), finds the same circle as
    a seeded RANSAC on a notched, clipped FOV (tests/test_preprocess.py) and takes 2-12 ms there
    against 35 ms for RANSAC's 200 trials.
    """
    keep = np.ones(rows.shape, dtype=bool)
    cy = cx = r = float("nan")
    for _ in range(n_iter):
        model = CircleModel.from_estimate(np.column_stack([rows[keep], cols[keep]]).astype(float))
        if not model:  # degenerate (collinear) points: keep the last circle
            break
        (cy, cx), r = model.center, float(model.radius)
        resid = np.hypot(rows - cy, cols - cx) - r
        mad = 1.4826 * np.median(np.abs(resid[keep]))
        new_keep = np.abs(resid) <= max(3.0 * mad, 1.0)
        if new_keep.sum() < 8 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return float(cy), float(cx), float(r)


def _boundary_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row/column extremes of ``mask`` away from the frame and from straight clipping chords."""
    h, w = mask.shape
    rows_any = mask.any(axis=1)
    r_idx = np.flatnonzero(rows_any)
    first_c = mask[r_idx].argmax(axis=1)
    last_c = w - 1 - mask[r_idx, ::-1].argmax(axis=1)
    cols_any = mask.any(axis=0)
    c_idx = np.flatnonzero(cols_any)
    first_r = mask[:, c_idx].argmax(axis=0)
    last_r = h - 1 - mask[::-1, c_idx].argmax(axis=0)
    pr = np.concatenate([r_idx, r_idx, first_r, last_r]).astype(float)
    pc = np.concatenate([first_c, last_c, c_idx, c_idx]).astype(float)
    # drop points on the frame and on the extreme rows/columns of the mask: where the circle is
    # clipped (by the frame, or by black padding after a crop) those are straight chords
    inner = (pr > 0) & (pr < h - 1) & (pc > 0) & (pc < w - 1)
    inner &= (pr > r_idx[0]) & (pr < r_idx[-1]) & (pc > c_idx[0]) & (pc < c_idx[-1])
    return pr[inner], pc[inner]


def _refine_circle(image: np.ndarray, circle: tuple[float, float, float], half_width: float,
                   min_step: float, n_angles: int = 720) -> tuple[float, float, float]:
    """Sub-pixel FOV edge: the half-way point of the local step along radial profiles.

    For each of ``n_angles`` rays the max-channel intensity is sampled (bilinear, full resolution,
    half-pixel steps) from ``r - half_width`` to ``r + half_width``. With ``inner`` and ``outer``
    the medians of the profile's inner and outer quarters, the edge lies where the profile, going
    outward, first drops below half-way between them (linear interpolation: sub-pixel). Rays that
    leave the frame or whose step is below ``min_step`` (notches, clipped parts) are skipped; the
    circle is refitted robustly to the edge points. The local levels make dark rims harmless: the
    edge is where the rim meets the background, whatever the rim's level.
    """
    cy, cx, r = circle
    h, w = image.shape[:2]
    theta = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    t = np.arange(-half_width, half_width + 0.25, 0.5)
    rad = r + t[None, :]
    rows = cy + rad * np.sin(theta)[:, None]
    cols = cx + rad * np.cos(theta)[:, None]
    inside = ((rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)).all(axis=1)
    if inside.sum() < 16:
        return circle
    rows, cols = rows[inside], cols[inside]
    coords = np.stack([rows.ravel(), cols.ravel()])
    prof = np.max([ndi.map_coordinates(image[..., ch], coords, order=1, output=np.float32)
                   for ch in range(image.shape[2])], axis=0).reshape(rows.shape)
    q = max(2, t.size // 4)
    inner, outer = np.median(prof[:, :q], axis=1), np.median(prof[:, -q:], axis=1)
    step = inner - outer
    good = step > max(min_step, 1e-6)
    if good.sum() < 16:
        return circle
    prof, level = prof[good], ((inner + outer) / 2.0)[good]
    below = prof < level[:, None]
    k = below.argmax(axis=1)  # first sample below the half-way level, going outward
    ok = below.any(axis=1) & (k > 0)
    if ok.sum() < 16:
        return circle
    n = np.flatnonzero(ok)
    k = k[ok]
    p0, p1, lv = prof[n, k - 1], prof[n, k], level[ok]
    edge = t[k - 1] + 0.5 * (p0 - lv) / np.maximum(p0 - p1, 1e-6)  # linear interpolation
    ang = theta[inside][good][ok]
    er = cy + (r + edge) * np.sin(ang)
    ec = cx + (r + edge) * np.cos(ang)
    return _fit_circle(er, ec)


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    """Pixels whose centre lies within the circle, boundary included (vectorised by broadcasting).

    Kept instead of ``skimage.draw.disk``: that one leaves out the pixels exactly on the circle
    (``<`` rather than ``<=``) and, as coordinates scattered into a mask, takes 0.84 s against 0.25 s
    here for a 4288x2848 frame (measured with OMP_NUM_THREADS=1).
    """
    dy2 = (np.arange(shape[0], dtype=np.float64) - cy) ** 2
    dx2 = (np.arange(shape[1], dtype=np.float64) - cx) ** 2
    return dy2[:, None] + dx2[None, :] <= r * r


def fov_mask(image, threshold: float | None = None, return_circle: bool = False):
    """Field of view (FOV) of a colour fundus photograph.

    Method: on a block-averaged copy (longest side about 600 px) of the per-pixel maximum over the
    colour channels, threshold at ``background + 0.2 * (fundus - background)`` (levels are the
    medians of the two Otsu classes), keep the largest connected component and fill its holes.
    A circle is fitted robustly to the component's boundary points that do not lie on the frame
    edge or on straight clipping chords, so the frame clipping (top/bottom in IDRiD), notches and
    dark rims do not bias it; the circle's radius is then refined to the sub-pixel half-way point
    of the local dark-to-bright step along 720 radial profiles at full resolution. The result is
    the circle intersected with the frame and with the bright region (lenient by one block of the
    reduced copy), so a FOV cut flat inside the frame is cut there too. When the component is not
    close to a circle (intersection over union < 0.8, e.g. a rectangle) or has too few usable
    boundary points, the bright region itself is returned.

    Parameters
    ----------
    image : ndarray
        HxWx3 RGB, uint8 (or float in [0, 1]).
    threshold : float, optional
        Fixed intensity threshold (0..255, on the max channel) instead of the automatic one.
    return_circle : bool
        Also return the fitted circle ``(cy, cx, radius)`` in full-resolution pixels (None when the
        component fallback was used).

    Returns
    -------
    mask : ndarray of bool, HxW
        (and ``circle`` when ``return_circle``).

    Raises
    ------
    ValueError
        Bad image (see the message), or no field of view in it (blank, uniform or too small).
    """
    image = _as_rgb_uint8(image)
    h, w = image.shape[:2]
    factor = max(1, math.ceil(max(h, w) / _WORK_SIDE))
    brightest = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])  # fast max
    small = _block_mean(brightest, factor)
    if factor == 1:  # no block averaging: a 3x3 median removes noise and keeps straight edges
        small = ndi.median_filter(small, 3, mode="nearest")
    lo, hi = float(small.min()), float(small.max())
    if hi - lo < 10.0:
        raise ValueError(
            "No field of view found because the image is (nearly) uniform "
            f"(intensities {lo:.0f}..{hi:.0f}); pass a colour fundus photograph with a bright FOV "
            "on a dark background"
        )
    if threshold is None:
        otsu = threshold_otsu(small)
        background = float(np.median(small[small <= otsu]))
        fundus = float(np.median(small[small > otsu]))
        level = background + _LEVEL_FRACTION * (fundus - background)
    else:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
            raise TypeError(f"threshold must be a number, got {type(threshold).__name__}; pass a grey level")
        if not np.isfinite(threshold) or not 0 <= threshold < 255:
            raise ValueError(f"threshold must be a grey level in [0, 255), got {threshold!r}; pass one in that range")
        level = float(threshold)
        background = float(np.percentile(small, 1))
    bright = small > level
    labels, n = ndi.label(bright)
    if n == 0:
        raise ValueError(
            f"No field of view found because no pixel is brighter than the threshold {level:.1f}; "
            "check the image or pass a lower `threshold`"
        )
    sizes = np.bincount(labels.ravel())[1:]
    comp = ndi.binary_fill_holes(labels == (1 + int(sizes.argmax())))
    if comp.mean() < 0.05:
        raise ValueError(
            "No field of view found because the largest bright region covers only "
            f"{100 * comp.mean():.1f}% of the image; pass a fundus photograph (or a lower `threshold`)"
        )
    pr, pc = _boundary_points(comp)
    circle = None
    if pr.size >= 16:
        cy, cx, r = _fit_circle(pr, pc)
        disc = _disc(comp.shape, cy, cx, r + 0.5)
        iou = (disc & comp).sum() / max((disc | comp).sum(), 1)
        if iou >= 0.8:
            # small-image pixel centre k sits at full-resolution k * factor + (factor - 1) / 2
            off = (factor - 1) / 2.0
            circle = (cy * factor + off, cx * factor + off, (r + 0.5) * factor)
            step = (fundus - background) if threshold is None else level - background
            circle = _refine_circle(image, circle, half_width=max(6.0, 3.0 * factor),
                                    min_step=0.3 * step)
    # the bright region, lenient: half the threshold above background (dark rims stay in), grown
    # by one block when the copy was reduced; the circle then trims it
    loose, _ = ndi.label(small > (background + level) / 2.0)
    keep = np.unique(loose[comp])
    region = ndi.binary_fill_holes(np.isin(loose, keep[keep > 0]) | comp)
    region = ndi.binary_dilation(region) if factor > 1 else region
    mask = np.zeros((h, w), dtype=bool)
    up = np.repeat(np.repeat(region, factor, axis=0), factor, axis=1)
    mask[: up.shape[0], : up.shape[1]] = up
    if up.shape[0] < h:
        mask[up.shape[0]:, : up.shape[1]] = up[-1:]
    if up.shape[1] < w:
        mask[:, up.shape[1]:] = mask[:, up.shape[1] - 1: up.shape[1]]
    if circle is not None:
        mask &= _disc((h, w), *circle)
    if not mask.any():
        raise ValueError("No field of view found in the image; pass a fundus photograph")
    return (mask, circle) if return_circle else mask


def fov_circle(mask) -> tuple[float, float, float]:
    """Circle ``(cy, cx, radius)`` of a FOV mask (robust fit to its boundary away from the frame).

    The mask may be clipped by the frame on any side. When fewer than 16 boundary points lie away
    from the frame (the FOV fills the frame), the circle enclosing the mask's bounding box is used.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D HxW array, got shape {mask.shape}; pass one boolean mask")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise ValueError("The FOV mask is empty; compute it with fov_mask(image) first")
    pr, pc = _boundary_points(mask)
    if pr.size >= 16:
        cy, cx, r = _fit_circle(pr, pc)
        return cy, cx, r + 0.5  # boundary pixel centres lie about half a pixel inside the edge
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    cy, cx = (rows[0] + rows[-1]) / 2.0, (cols[0] + cols[-1]) / 2.0
    return float(cy), float(cx), float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / 2.0)


def crop_box(mask) -> tuple[int, int, int]:
    """Square box ``(top, left, side)`` around the FOV circle, circle centred.

    The box may extend beyond the frame (where the circle is clipped).

    ``side`` is ``round(2 * radius)``, enlarged where needed so that every mask pixel is inside.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    cy, cx, r = fov_circle(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # wide enough for the circle and for every mask pixel (pixels exactly on the circle included)
    half = max(cy - rows[0], rows[-1] - cy, cx - cols[0], cols[-1] - cx) + 0.5
    side = max(1, int(round(2 * r)), int(math.ceil(2 * half - 1e-6)))
    top = int(round(cy + 0.5 - side / 2.0))
    left = int(round(cx + 0.5 - side / 2.0))
    return top, left, side


def _crop(array: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """Cut ``box`` out of ``array`` (HxW or HxWxC), padding with zeros outside the frame."""
    top, left, side = box
    h, w = array.shape[:2]
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    r0, r1 = max(top, 0), min(top + side, h)
    c0, c1 = max(left, 0), min(left + side, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top: r1 - top, c0 - left: c1 - left] = array[r0:r1, c0:c1]
    return out


def crop_to_fov(image, mask) -> np.ndarray:
    """Crop ``image`` to the square bounding box of the FOV circle of ``mask``.

    Where the circle is clipped by the frame the result is padded with black (zeros), so it is
    square with the circle centred. ``image`` is HxW or HxWxC of any dtype (masks crop the
    same way).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}; pass a 2-D or 3-D array")
    mask = _check_mask(mask, image.shape[:2])
    return _crop(image, crop_box(mask))


# --------------------------------------------------------------------------- resizing
def _area_matrix(n_in: int, n_out: int) -> sparse.csr_matrix:
    """(n_out, n_in) matrix averaging input pixels over each output pixel's span (exact areas)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    start, stop = edges[:-1], edges[1:]
    first = np.floor(start).astype(int)
    span = int(np.ceil(scale)) + 1
    idx = first[:, None] + np.arange(span)[None, :]
    overlap = np.minimum(idx + 1, stop[:, None]) - np.maximum(idx, start[:, None])
    overlap = np.clip(overlap, 0.0, None) / scale
    valid = (idx < n_in) & (overlap > 0)
    rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)
    return sparse.csr_matrix((overlap[valid], (rows[valid], idx[valid])), shape=(n_out, n_in))


def resize_area(array, size: int) -> np.ndarray:
    """Resize an HxW or HxWxC array to ``size`` x ``size`` (float32 result).

    Down-scaling averages exact pixel areas (anti-aliased); up-scaling is bilinear. Pixel areas are
    aligned: input coordinate ``p`` maps to ``(p + 0.5) * size / n - 0.5``.
    """
    array = np.asarray(array)
    h, w = array.shape[:2]
    rest = array.shape[2:]
    data = array.reshape(h, w, -1).astype(np.float32)
    if h >= size and w >= size:
        ar = _area_matrix(h, size).astype(np.float32)
        ac = _area_matrix(w, size).astype(np.float32)
        tmp = ar @ data.reshape(h, -1)  # (size, w*C)
        tmp = tmp.reshape(size, w, -1).transpose(1, 0, 2).reshape(w, -1)
        out = (ac @ tmp).reshape(size, size, -1).transpose(1, 0, 2)
    else:
        out = resize(data, (size, size), order=1, mode="edge", anti_aliasing=h > size or w > size,
                     preserve_range=True)
    return out.astype(np.float32, copy=False).reshape((size, size) + rest)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an integer, got {type(size).__name__} {size!r}; pass a whole number of pixels")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size!r}; pass a larger size")
    return int(size)


def scale_length(length: float, size: int, name: str = "length") -> float:
    """A length given in pixels at the papers' 512-px scale, converted to a ``size``-px image.

    The one scale rule of the series: every length a preset or notebook states (FROC tolerance,
    smoothing sigma, candidate minimum distance, negative margins, grid strides) is a length at
    :data:`PAPER_SIZE` and becomes ``length * size / 512`` on the run's standardized images.
    Patch sizes are the exception: a 48x48 or 41x41 patch keeps its size at any image size (the
    networks' input is fixed), so at 256 px a 41-px patch covers twice the retina it covers at 512.

    >>> scale_length(8.0, 256)
    4.0
    """
    if isinstance(length, bool) or not isinstance(length, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of pixels at 512-px scale, got {type(length).__name__}; pass one")
    if not math.isfinite(float(length)) or length <= 0:
        raise ValueError(f"{name} must be a positive number of pixels at 512-px scale, got {length!r}; pass one > 0")
    return float(length) * _check_size(size) / PAPER_SIZE


def scale_table(lengths: dict, size: int) -> dict:
    """Each named length at 512-px scale and converted to ``size`` px by :func:`scale_length`.

    Returns ``{name: {"at_512": value, "at_run": value * size / 512}}`` (a notebook shows it as a
    table and records it in metrics.json).

    >>> scale_table({"froc_tolerance": 8.0}, 256)
    {'froc_tolerance': {'at_512': 8.0, 'at_run': 4.0}}
    """
    if not isinstance(lengths, dict):
        raise TypeError(
            f"lengths must be a dict of name -> pixels at 512-px scale, got {type(lengths).__name__}; pass a dict"
        )
    return {k: {"at_512": float(v), "at_run": scale_length(v, size, name=k)} for k, v in lengths.items()}


def standardize(image, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """FOV -> square crop around the FOV circle -> resize to ``size`` x ``size``.

    Returns
    -------
    image : ndarray, (size, size, 3) uint8
        Anti-aliased (area-averaged) resize of the crop.
    fov : ndarray, (size, size) bool
        The FOV resized the same way (kept where it covers >= half an output pixel).
    """
    size = _check_size(size)
    image = _as_rgb_uint8(image)
    fov = fov_mask(image)
    box = crop_box(fov)
    out = np.clip(np.round(resize_area(_crop(image, box), size)), 0, 255).astype(np.uint8)
    fov_out = resize_area(_crop(fov, box).astype(np.float32), size) >= 0.5
    return out, fov_out


#: Bump whenever :func:`standardize_record`'s output changes: it is part of the cache key.
STANDARDIZE_VERSION = 3
_CACHED_FIELDS = ("exudate_mask", "hemorrhage_mask", "hemorrhage_centers")


def _record_cache_path(rec, size: int):
    """Cache file of a standardized disk record, or None when the record may not be cached.

    Only a *pristine* disk record qualifies: pixels and masks not yet read or replaced in memory
    (``rec.unread()`` names the image and every reference it has), so they are exactly what its
    files hold. The key hashes the image and mask files' paths, sizes and modification times, the
    record's id and source, which references it has, ``size`` and :data:`STANDARDIZE_VERSION`.
    """
    unread = rec.unread()
    if not rec.path or "image" not in unread or rec.fov is not None:
        return None
    present = []
    for name in _CACHED_FIELDS:
        if name not in unread and getattr(rec, name) is not None:
            return None  # given or already read: may differ from the files
        present.append(name in unread)
    try:
        files = [rec.path, *sorted((rec.mask_paths or {}).values())]
        stats = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    except OSError:
        return None
    key = [STANDARDIZE_VERSION, size, rec.id, rec.source, present, stats]
    return _io.hashed_cache_path(f"{rec.source or 'disk'}-{rec.id}-{size}", key, folder="standardized")


def standardize_record(rec, size: int = 512, cache: bool = True):
    """A new :class:`~fundus_nb.data.FundusImage` with image, masks, centres and fov standardized.

    The FOV is the record's own ``fov`` when it has one (exact, synthetic data), else
    :func:`fov_mask` of the image. The same crop box and resize apply to the image, the exudate and
    hemorrhage masks (kept where the lesion covers >= half an output pixel), the fov and the synthetic
    ``confounder_map`` (nearest source pixel, 0 outside the fov); hemorrhage
    centres (row, col) are mapped exactly, ``(p - corner + 0.5) * size / side - 0.5``. The pixel
    under every mapped hemorrhage centre stays marked in the hemorrhage mask, so a hemorrhage smaller
    than half an output pixel does not vanish (IDRiD_29's four small ones at 128 px would, making a
    lesion image look hemorrhage-free).

    With ``cache`` (default), a disk record whose pixels and masks are still unread (as
    :func:`fundus_nb.data.load` returns them) is kept in ``_io.cache_dir()/standardized/``, keyed by
    its files' paths, sizes and modification times and ``size``, and written atomically; decoding
    and standardizing a 4288x2848 photograph and its masks takes about a second, reading the cache
    a few milliseconds. Anything else (synthetic data, edited records) is always computed.

    Raises
    ------
    ValueError
        When a mask's shape differs from the image's, or the image is not a colour photograph.
    TypeError
        When ``size`` is not an integer or ``cache`` not a bool.
    """
    size = _check_size(size)
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}; pass a bool")
    cache_path = _record_cache_path(rec, size) if cache else None
    if cache_path is not None:
        present = [name for name in _CACHED_FIELDS if name in rec.unread()]

        def read(z):
            return dataclasses.replace(rec, image_=z["image"], fov=z["fov"], loader=None,
                                       **{name: z[name] for name in present})

        cached = _io.read_npz_cache(cache_path, read)
        if cached is not None:
            return cached
    out = _standardize_record(rec, size)
    if cache_path is not None:
        arrays = {"image": out.image, "fov": out.fov}
        arrays.update({name: getattr(out, name) for name in _CACHED_FIELDS if getattr(out, name) is not None})
        _io.write_npz_cache(cache_path, "standardized-image cache", **arrays)
    return out


def _standardize_record(rec, size: int):
    """:func:`standardize_record` without the cache."""
    image = _as_rgb_uint8(rec.image, f"image of record {rec.id!r}")
    shape = image.shape[:2]
    masks = {}
    for name in ("exudate_mask", "hemorrhage_mask", "fov"):
        value = getattr(rec, name)
        if value is not None:
            masks[name] = _check_mask(value, shape, f"{name} of record {rec.id!r}")
    fov = masks.get("fov")
    if fov is None or not fov.any():
        fov = fov_mask(image)
    box = crop_box(fov)
    top, left, side = box
    new = {
        "image_": np.clip(np.round(resize_area(_crop(image, box), size)), 0, 255).astype(np.uint8),
        "fov": resize_area(_crop(fov, box).astype(np.float32), size) >= 0.5,
        "loader": None,
    }
    for name in ("exudate_mask", "hemorrhage_mask"):
        if name in masks:
            new[name] = resize_area(_crop(masks[name], box).astype(np.float32), size) >= 0.5
    kinds = getattr(rec, "confounder_map", None)
    if kinds is not None:  # synthetic analysis-only codes: nearest source pixel (codes are not averaged)
        kinds = np.asarray(kinds)
        src = np.floor(np.array([top, left])[:, None] + (np.arange(size) + 0.5) * side / size).astype(int)
        ok_r, ok_c = (src[0] >= 0) & (src[0] < shape[0]), (src[1] >= 0) & (src[1] < shape[1])
        mapped = np.zeros((size, size), kinds.dtype)
        mapped[np.ix_(ok_r, ok_c)] = kinds[np.ix_(src[0][ok_r], src[1][ok_c])]
        mapped[~new["fov"]] = 0
        new["confounder_map"] = mapped
    if rec.hemorrhage_centers is not None:
        pts = np.asarray(rec.hemorrhage_centers, dtype=float).reshape(-1, 2)
        new["hemorrhage_centers"] = (pts - np.array([top, left]) + 0.5) * (size / side) - 0.5
        if "hemorrhage_mask" in new and len(pts):
            # a hemorrhage covering less than half an output pixel would vanish from the mask and
            # turn a lesion image into a "hemorrhage-free" one: the pixel under every centre stays marked
            q = np.round(new["hemorrhage_centers"]).astype(int)
            inside = ((q >= 0) & (q < size)).all(axis=1)
            new["hemorrhage_mask"][q[inside, 0], q[inside, 1]] = True
    return dataclasses.replace(rec, **new)


# --------------------------------------------------------------------------- contrast
def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur (scipy, mode 'reflect'); large sigmas on a reduced copy.

    For ``sigma >= 32`` the image is block-averaged by ``k = sigma // 8``, blurred with the
    equivalent sigma and bilinearly interpolated back: the result differs from the direct filter by
    well under one grey level, at a fraction of the time.
    """
    if sigma < 32:
        return ndi.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")
    k = int(sigma // 8)
    h, w = image.shape[:2]
    # a mirrored margin (scipy's 'reflect' = numpy's 'symmetric') wider than the kernel, so the
    # reduced copy's own border handling never reaches the image
    m = int(math.ceil(4.0 * sigma / k)) * k
    pad = ((m, m + (-h % k)), (m, m + (-w % k)), (0, 0))
    padded = np.pad(image, pad, mode="symmetric")
    small = padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k, -1).mean(axis=(1, 3))
    s_small = math.sqrt(max(sigma**2 - (k * k - 1) / 12.0, 1e-6)) / k
    small = ndi.gaussian_filter(small, sigma=(s_small, s_small, 0), mode="reflect")
    rr = (np.arange(h) + m + 0.5) / k - 0.5
    cc = (np.arange(w) + m + 0.5) / k - 0.5
    out = np.empty_like(image)
    grid = np.meshgrid(rr, cc, indexing="ij")
    for ch in range(image.shape[2]):
        out[..., ch] = ndi.map_coordinates(small[..., ch], grid, order=1, mode="nearest")
    return out


def contrast_enhance(image, alpha: float = 4.0, beta: float = -4.0, sigma: float | None = None,
                     gamma: float = 128.0, fov=None) -> np.ndarray:
    """Graham's contrast enhancement ``I_c = alpha*I + beta*G(sigma)*I + gamma``, clipped to uint8.

    Parameters
    ----------
    image : ndarray
        HxWx3 RGB uint8 (or float in [0, 1]).
    alpha : float
        Weight of the image itself (contrast gain of fine detail).
    beta : float
        Weight of the Gaussian-blurred image; ``beta = -alpha`` removes the local background
        (uneven illumination) and keeps only local contrast.
    sigma : float, optional
        Gaussian standard deviation in pixels (scipy ``gaussian_filter`` per channel, mode
        ``'reflect'``); None means ``width / 30`` (17.1 at 512 px).
    gamma : float
        Offset added after the combination: the grey level of "no local contrast".
    fov : ndarray of bool, optional
        When given (HxW), pixels outside the FOV are set to ``gamma`` (a neutral grey).

    Returns
    -------
    ndarray, HxWx3 uint8
    """
    image = _as_rgb_uint8(image)
    if sigma is None:
        sigma = image.shape[1] / 30.0
    for name, value in (("sigma", sigma), ("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}; pass a float")
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}; pass a finite float")
    if sigma <= 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}; pass one > 0")
    img = image.astype(np.float32)
    blurred = _gaussian_blur(img, float(sigma))
    out = alpha * img + beta * blurred + gamma
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if fov is not None:
        fov = _check_mask(fov, image.shape[:2], "fov")
        out[~fov] = np.uint8(np.clip(round(gamma), 0, 255))
    return out


# --------------------------------------------------------------------------- the FOV halo
def rim_profile(image, fov) -> tuple[np.ndarray, np.ndarray]:
    """Mean grey level of the FOV's pixels against their distance (px) from the FOV edge.

    The distance of a FOV pixel is its Euclidean distance to the nearest pixel outside the FOV
    (``scipy.ndimage.distance_transform_edt``), rounded to whole pixels (1 = touching the outside).
    Returns ``(distance, level)``: the distances present and, for each, the mean over those pixels
    and the colour channels (0..255 for uint8). A FOV reaching the frame is measured from the FOV's
    outline only: the frame is not an edge.
    """
    image = _as_rgb_uint8(image)
    fov = _check_mask(fov, image.shape[:2], "fov")
    if not fov.any() or fov.all():
        raise ValueError("fov must contain both FOV and outside pixels to measure a rim; pass the image's FOV mask")
    dist = np.rint(ndi.distance_transform_edt(np.pad(fov, 1, mode="edge"))[1:-1, 1:-1][fov]).astype(int)
    grey = image[fov].astype(np.float64).mean(axis=1)
    count = np.bincount(dist)
    present = np.flatnonzero(count)
    return present, np.bincount(dist, grey)[present] / count[present]


def fov_halo(image, fov, sigma: float) -> dict:
    """Measure the bright rim ("FOV halo") an enhanced image has just inside its FOV edge.

    :func:`contrast_enhance` blurs the whole frame, so near the FOV edge the blur ``G(sigma)*I``
    mixes in the black surround, ``I - G(sigma)*I`` is large and the rim comes out bright. From
    :func:`rim_profile`:

    - ``rim_level``: mean of the profile over the distances up to ``sigma`` px;
    - ``interior_level``: median of the profile at ``3 * sigma`` px and deeper (the image's own
      level, away from the rim);
    - ``excess``: ``rim_level - interior_level`` (grey levels);
    - ``width``: the distance (px) at which the profile's excess over ``interior_level`` first
      falls below half its largest value within ``3 * sigma`` of the edge (how far the halo
      reaches in; ``3 * sigma`` when it never does).
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"sigma must be a number of pixels, got {type(sigma).__name__}; pass the enhancement's sigma")
    if not math.isfinite(float(sigma)) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}; pass the enhancement's sigma")
    dist, level = rim_profile(image, fov)
    deep = level[dist >= 3 * sigma]
    if deep.size == 0:
        raise ValueError(
            f"the FOV has no pixel {3 * sigma:.1f} px from its edge; pass a smaller sigma or a larger image"
        )
    interior = float(np.median(deep))
    excess = (level - interior)[dist < 3 * sigma]  # the rim zone only: a bright disc deeper in is no halo
    peak = int(np.argmax(excess))
    below = np.flatnonzero(excess[peak:] < excess[peak] / 2.0)
    width = float(dist[peak + below[0]]) if below.size else 3.0 * float(sigma)
    rim = float(level[dist <= sigma].mean()) if (dist <= sigma).any() else float(level[0])
    return {"rim_level": rim, "interior_level": interior, "excess": rim - interior, "width": width}
