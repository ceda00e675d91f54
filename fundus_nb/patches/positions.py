"""Patch centres from one record: lesion and healthy positions, grids of patches."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data import FundusImage
from ..preprocess import fov_mask

#: dtype of one pooled position: index of the image in the pool, row and column of the centre.
POSITION_DTYPE = np.dtype([("image", np.int32), ("row", np.int32), ("col", np.int32)])

#: Patch sizes of the two papers.
EXUDATE_PATCH = 48
HEMORRHAGE_PATCH = 41

#: Patch counts of the EGL paper (per class for train and validation; test is the total).
EGL_PAPER_COUNTS = {"train": 8760, "validation": 328, "test": 986}

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


def record_fov(rec: FundusImage) -> np.ndarray:
    """The field of view of a record: ``rec.fov``, else :func:`fundus_nb.preprocess.fov_mask` of its image.

    Raises ValueError when a stored mask does not have the image's shape.
    """
    if rec.fov is None:
        return fov_mask(rec.image)
    return _fov_of(rec, None)


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
        Field of view used instead of ``rec.fov``.

    Returns
    -------
    rows, cols : np.ndarray
        int32 arrays, empty for an image with hemorrhages unless ``allow_lesion_images``.
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


