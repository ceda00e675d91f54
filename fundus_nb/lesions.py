"""Lesion candidates from a pixel probability map (van Grinsven et al. 2016, Sec. II-E).

The paper smooths the CNN's probability map with a Gaussian, takes its local maxima as seeds,
segments one candidate region around each seed (dynamic programming on the gradient magnitude of
the smoothed map) and gives each candidate the mean probability inside its region.

Our choice for the segmentation step (documented, as the paper's exact procedure is not given):
a marker-controlled **watershed** (:func:`skimage.segmentation.watershed`) on the gradient
magnitude of the smoothed map, seeded with the local maxima, so that every pixel joins the seed it
reaches without crossing a ridge of steep change -- the same cost the paper's dynamic programming
minimises along rays. Each region is then limited to the pixels whose smoothed value is at least
``region_fraction`` times its seed's value and stays 8-connected to the seed (a relative
"half-maximum" contour), which keeps flat background out of the candidate.

Public API
----------
``candidates(prob_map, sigma=2.0, min_distance=8, threshold=0.1, fov=None, return_masks=False,
region_fraction=0.5) -> Candidates``
``image_score(prob_map, sigma=2.0, fov=None) -> float``  (maximum of the smoothed map)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.segmentation import watershed

__all__ = ["Candidates", "candidates", "image_score", "smooth"]


@dataclass
class Candidates:
    """Lesion candidates of one probability map, one entry per candidate (sorted by seed value).

    Attributes
    ----------
    row, col : (K,) int arrays
        Seed position (local maximum of the smoothed map).
    probability : (K,) float array
        Mean of the *unsmoothed* probability map over the candidate's region.
    area : (K,) int array
        Number of pixels in the region.
    seed_value : (K,) float array
        The smoothed map's value at the seed.
    labels : (H, W) int32 array or None
        Only with ``return_masks=True``: 0 outside every candidate, ``k + 1`` inside candidate k.
    """

    row: np.ndarray
    col: np.ndarray
    probability: np.ndarray
    area: np.ndarray
    seed_value: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def mask(self, k: int) -> np.ndarray:
        """Boolean (H, W) mask of candidate ``k`` (needs ``return_masks=True``)."""
        if self.labels is None:
            raise ValueError("masks were not kept: call candidates(..., return_masks=True)")
        if not 0 <= k < len(self):
            raise IndexError(f"candidate {k} does not exist: there are {len(self)} candidates")
        return self.labels == k + 1

    def as_detections(self) -> np.ndarray:
        """(K, 3) float array of (row, col, probability): the input format of ``metrics.froc``."""
        return np.column_stack([self.row, self.col, self.probability]).astype(float).reshape(-1, 3)

    def to_frame(self):
        """A pandas DataFrame with columns row, col, probability, area, seed_value."""
        import pandas as pd  # lazy: pandas is heavy and only this display helper needs it

        return pd.DataFrame(
            {
                "row": self.row,
                "col": self.col,
                "probability": self.probability,
                "area": self.area,
                "seed_value": self.seed_value,
            }
        )


def _check_map(prob_map, fov):
    prob_map = np.asarray(prob_map, dtype=float)
    if prob_map.ndim != 2 or min(prob_map.shape) == 0:
        raise ValueError(
            f"prob_map must be a non-empty 2-D (H, W) array, got shape {prob_map.shape}; "
            "pass one probability map at a time"
        )
    if not np.all(np.isfinite(prob_map)):
        raise ValueError("prob_map contains NaN or infinite values; fix the map before detection")
    if prob_map.min() < 0.0 or prob_map.max() > 1.0:
        raise ValueError(
            f"prob_map values must lie in [0, 1] (got {prob_map.min():.3g}..{prob_map.max():.3g}); "
            "pass probabilities, not logits"
        )
    if fov is not None:
        fov = np.asarray(fov)
        if fov.shape != prob_map.shape:
            raise ValueError(
                f"fov has shape {fov.shape} but prob_map has {prob_map.shape}; they must match"
            )
        fov = fov.astype(bool)
    return prob_map, fov


def smooth(prob_map: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Gaussian-smoothed copy of ``prob_map`` (``sigma`` in pixels; 0 returns a float copy).

    Borders are handled by reflection (:func:`scipy.ndimage.gaussian_filter`, mode ``"reflect"``).
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0 pixels, got {sigma}")
    prob_map = np.asarray(prob_map, dtype=float)
    return ndimage.gaussian_filter(prob_map, sigma) if sigma > 0 else prob_map.copy()


def image_score(prob_map: np.ndarray, sigma: float = 2.0, fov: np.ndarray | None = None) -> float:
    """Image-level lesion score: the maximum of the smoothed probability map (inside ``fov``).

    This is the paper's image score for the monitoring Az and the image-level ROC.
    """
    prob_map, fov = _check_map(prob_map, fov)
    s = smooth(prob_map, sigma)
    if fov is not None:
        if not fov.any():
            raise ValueError("fov is empty: no pixel to score")
        return float(s[fov].max())
    return float(s.max())


def candidates(
    prob_map: np.ndarray,
    sigma: float = 2.0,
    min_distance: int = 8,
    threshold: float = 0.1,
    fov: np.ndarray | None = None,
    return_masks: bool = False,
    region_fraction: float = 0.5,
) -> Candidates:
    """Detect lesion candidates in a pixel probability map.

    Parameters
    ----------
    prob_map : (H, W) array of floats in [0, 1]
        Per-pixel lesion probability (e.g. ``models.dense_probability_map``).
    sigma : float
        Standard deviation (pixels) of the Gaussian smoothing before seed detection.
    min_distance : int
        Minimum distance (pixels, Chebyshev) between two seeds
        (:func:`skimage.feature.peak_local_max`).
    threshold : float
        Seeds need a smoothed value ``>= threshold``.
    fov : (H, W) bool array, optional
        Field of view; seeds and regions are restricted to it.
    return_masks : bool
        Keep the (H, W) label image in ``Candidates.labels``; ``Candidates.mask(k)`` gives one mask.
    region_fraction : float in (0, 1]
        A region keeps the pixels whose smoothed value is ``>= region_fraction * seed value``
        (and that stay connected to the seed inside its watershed basin).

    Returns
    -------
    Candidates
        One entry per seed, sorted by decreasing smoothed seed value (ties by row, then column).
    """
    prob_map, fov = _check_map(prob_map, fov)
    if int(min_distance) != min_distance or min_distance < 1:
        raise ValueError(f"min_distance must be a whole number of pixels >= 1, got {min_distance}")
    if not 0.0 < region_fraction <= 1.0:
        raise ValueError(f"region_fraction must lie in (0, 1], got {region_fraction}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    smoothed = smooth(prob_map, sigma)
    h, w = smoothed.shape
    empty = Candidates(
        row=np.zeros(0, int),
        col=np.zeros(0, int),
        probability=np.zeros(0),
        area=np.zeros(0, int),
        seed_value=np.zeros(0),
        labels=np.zeros((h, w), np.int32) if return_masks else None,
    )
    if fov is not None and not fov.any():
        return empty
    peaks = peak_local_max(
        smoothed,
        min_distance=int(min_distance),
        threshold_abs=float(threshold),
        threshold_rel=None,
        exclude_border=False,
        labels=None if fov is None else fov.astype(np.int32),
    )
    if len(peaks) == 0:
        return empty
    values = smoothed[peaks[:, 0], peaks[:, 1]]
    order = np.lexsort((peaks[:, 1], peaks[:, 0], -values))
    peaks, values = peaks[order], values[order]
    k = len(peaks)

    markers = np.zeros((h, w), np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, k + 1)
    allowed = smoothed >= region_fraction * values.min()
    if fov is not None:
        allowed &= fov
    grad = np.hypot(*np.gradient(smoothed))
    basins = watershed(grad, markers, mask=allowed)
    # Per-seed relative contour: drop pixels below region_fraction * own seed value ...
    seed_of_pixel = np.concatenate([[np.inf], values])[basins]
    basins[smoothed < region_fraction * seed_of_pixel] = 0
    # ... and keep only the 8-connected piece of each basin that holds its seed.
    pieces = cc_label(basins, background=0, connectivity=2)
    seed_piece = pieces[peaks[:, 0], peaks[:, 1]]
    keep = np.zeros(pieces.max() + 1, bool)
    keep[seed_piece] = True
    keep[0] = False
    labels = np.where(keep[pieces], basins, 0).astype(np.int32)

    index = np.arange(1, k + 1)
    area = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    probability = np.asarray(ndimage.mean(prob_map, labels=labels, index=index), dtype=float)
    return Candidates(
        row=peaks[:, 0].astype(int),
        col=peaks[:, 1].astype(int),
        probability=probability,
        area=area.astype(int),
        seed_value=values.astype(float),
        labels=labels if return_masks else None,
    )
