"""Image-level monitoring of hemorrhage training: image scores, monitoring Az, the plateau rule.

van Grinsven et al. (IEEE TMI 2016) monitor training by the image-level ROC area (Az) on a
separate split of images: an image's score is the maximum of its Gaussian-smoothed probability
map inside the field of view (:func:`fundus_nb.lesions.image_score`, the paper's image score).

Contents
--------
:func:`image_scores`, :func:`monitoring_az`, :class:`Monitor`
    Scores of a set of images; their Az; ``train.fit``'s ``eval_fn`` that records both per call.
:func:`image_labels`, :func:`check_monitoring_split`, :func:`balanced_subset`
    Labels of a monitoring split, its checks, and a class-balanced cap on its size.
:func:`plateau_epoch`
    The documented rule that decides "epochs to converge" (the paper judged it by eye).
:func:`epoch_seconds`
    Where an epoch's time went (training, SeS weight pass, monitoring).

Module order: after ``lesions`` (whose ``image_score`` it uses), before ``metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from .lesions import image_score
from .models import dense_probability_map
from .patches import record_fov

__all__ = [
    "image_labels",
    "balanced_subset",
    "balanced_indices",
    "check_monitoring_split",
    "image_scores",
    "monitoring_az",
    "Monitor",
    "epoch_seconds",
    "plateau_epoch",
]


def image_labels(records: Sequence) -> np.ndarray:
    """1 for images with hemorrhages, 0 without; clear error when a record has no reference."""
    labels = []
    for rec in records:
        lab = rec.has_hemorrhages
        if lab is None:
            raise ValueError(
                f"image {rec.id!r} has no hemorrhage reference, so it cannot be in the monitoring split; "
                "use images with a hemorrhage mask or centres"
            )
        labels.append(int(lab))
    return np.asarray(labels, dtype=np.int64)


def balanced_subset(records: Sequence, n: int) -> list:
    """At most ``n`` records, half with hemorrhages and half without where there are enough.

    Keeps the records' order inside each class; ``n = 0`` keeps them all. Used to cap the cost of
    dense maps (monitoring and weight passes) on 2 CPU cores.
    """
    records = list(records)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}; pass 0 to keep every record")
    if n == 0 or n >= len(records):
        return records
    return [records[i] for i in balanced_indices(image_labels(records), n)]


def balanced_indices(labels, n: int) -> np.ndarray:
    """Sorted indices of at most ``n`` items, half with label 1 and half with 0 where there are enough
    (the other class fills the rest), the first ones of each class in order: the one capping rule of
    :func:`balanced_subset` and ``runs.balanced``.
    """
    y = np.asarray(labels).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    k_pos = min(len(pos), max(n - len(neg), n // 2))
    return np.sort(np.concatenate([pos[:k_pos], neg[: n - k_pos]]))


def check_monitoring_split(records: Sequence) -> np.ndarray:
    """Labels of a monitoring split, after checking it is non-empty and holds both classes."""
    records = list(records)
    if not records:
        raise ValueError("the monitoring split is empty; give it images with and without hemorrhages")
    y = image_labels(records)
    if y.min() == y.max():
        kind = "with" if y[0] else "without"
        raise ValueError(
            f"the monitoring split holds only images {kind} hemorrhages, so Az is undefined; "
            "put images of both kinds in it (e.g. a stratified patient split)"
        )
    return y


def image_scores(
    model: torch.nn.Module,
    records: Sequence,
    sigma: float = 2.0,
    *,
    stride: int = 1,
    prob_map: Callable | None = None,
    return_maps: bool = False,
):
    """Image scores: :func:`fundus_nb.lesions.image_score` of each image's dense probability map.

    The score is the maximum, inside the FOV, of the map smoothed with a Gaussian over the whole
    image (0 outside the FOV); an image with an empty FOV scores 0.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    records : sequence of FundusImage
        Images to score (non-empty); the FOV is ``rec.fov`` or ``preprocess.fov_mask`` of the image.
    sigma : float
        Gaussian scale in pixels of the run's images (our choice 2.0 at 512-px scale, converted by
        ``preprocess.scale_length``; the paper's value was lost in its text); 0 means no smoothing.
    stride : int
        1 (exact map at every pixel) or the network's natural output stride
        (``models.output_stride``, 4 for SeSNet): the map of every ``stride``-th pixel, 16x
        cheaper, smoothed with ``sigma / stride`` on its own grid. Monitoring uses it: the image
        score needs the map's maximum, not every pixel.
    prob_map : callable, optional
        ``f(model, image, fov) -> HxW`` (default ``models.dense_probability_map``); only with
        ``stride=1``.
    return_maps : bool
        Also return the raw probability maps.

    Returns
    -------
    np.ndarray or tuple
        (n,) float64 scores, and the list of maps when ``return_maps``.
    """
    records = list(records)
    if not records:
        raise ValueError("no images to score; pass a non-empty list of records")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}; pass 0 for no smoothing")
    if stride != 1 and prob_map is not None:
        raise ValueError("a custom prob_map gives full-resolution maps; use stride=1 with it")
    if prob_map is None:

        def prob_map(m, image, fov):
            return dense_probability_map(m, image, fov, stride=stride)

    scores = np.empty(len(records), dtype=np.float64)
    maps = []
    for k, rec in enumerate(records):
        fov = record_fov(rec)
        pmap = prob_map(model, rec.image, fov)
        pmap = pmap.detach().cpu().numpy() if isinstance(pmap, torch.Tensor) else np.asarray(pmap)
        fov_k = fov[::stride, ::stride]
        scores[k] = image_score(pmap, sigma / stride, fov_k) if fov_k.any() else 0.0
        if return_maps:
            maps.append(pmap)
    return (scores, maps) if return_maps else scores


def monitoring_az(
    model: torch.nn.Module, records: Sequence, sigma: float = 2.0, *, stride: int = 1, prob_map: Callable | None = None
):
    """Image-level Az (ROC area, scikit-learn) on a monitoring split.

    Returns
    -------
    tuple
        ``(az, scores, labels)``.
    """
    y = check_monitoring_split(records)
    s = image_scores(model, records, sigma, stride=stride, prob_map=prob_map)
    return float(roc_auc_score(y, s)), s, y


class Monitor:
    """``train.fit``'s ``eval_fn``: image-level Az on a monitoring split after each evaluation.

    Parameters
    ----------
    records : sequence of FundusImage
        Monitoring images (non-empty, both classes; checked at once).
    sigma : float
        Gaussian scale of :func:`image_scores` (pixels of the run's images).
    stride : int
        Map stride of :func:`image_scores` (1, or the natural output stride to save time).

    Attributes
    ----------
    labels : np.ndarray
        (n,) int labels of the split.
    scores : list of np.ndarray
        One (n,) score array per call (for bootstrap CIs afterwards, e.g.
        ``metrics.roc_auc_ci(monitor.labels, monitor.scores[k])``). A resumed run only holds the
        calls made after the resume.
    seconds : list of float
        Duration of each call.
    """

    def __init__(self, records: Sequence, sigma: float = 2.0, stride: int = 1):
        self.records = list(records)
        self.stride = int(stride)
        self.labels = check_monitoring_split(self.records)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0 pixels, got {sigma}; pass 0 for no smoothing")
        self.sigma = float(sigma)
        self.scores: list[np.ndarray] = []
        self.seconds: list[float] = []

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        t0 = time.perf_counter()
        s = image_scores(model, self.records, self.sigma, stride=self.stride)
        self.scores.append(s)
        self.seconds.append(time.perf_counter() - t0)
        return {"az": float(roc_auc_score(self.labels, s)), "monitor_seconds": self.seconds[-1]}


def epoch_seconds(histories: Sequence) -> dict[str, float]:
    """Mean seconds per epoch over the end-of-epoch records of ``train.fit`` histories.

    Split into ``training`` (batches and SGD steps), ``weight_pass`` (SeS weight refreshes, 0 on
    the epochs without one and in NSeS runs) and ``monitoring`` (the monitoring maps).
    """
    rows = [e for h in histories for e in h.evals if e.get("epoch_end")]
    if not rows:
        raise ValueError("no end-of-epoch records; pass the histories train.fit returned after at least one epoch")
    return {
        "training": float(np.mean([e.get("train_seconds", 0.0) for e in rows])),
        "weight_pass": float(np.mean([e.get("weight_seconds", 0.0) for e in rows])),
        "monitoring": float(np.mean([e.get("monitor_seconds", 0.0) for e in rows])),
    }



def plateau_epoch(az_history: Sequence[float], window: int = 5, tol: float = 0.01) -> int | None:
    """Epochs to converge: when the monitoring Az reaches a stable maximum (our documented rule).

    ``az_history[k]`` is the Az after ``k + 1`` epochs. The curve is first smoothed with a centred
    moving average of ``window`` epochs (shrinking at the ends). The plateau epoch is the first
    epoch ``e`` after which the smoothed curve never again rises more than ``tol`` above the best
    smoothed value reached up to ``e``:

        e* = min { e : max(m[e:]) <= max(m[:e]) + tol }   (1-based, m = smoothed Az)

    The plateau must then be observed for at least ``window`` epochs (``e* <= n - window + 1``
    counting epoch ``e*`` itself); otherwise the run ended before converging and the result is None.
    A single noisy spike moves ``e*`` only through the moving average.

    Parameters
    ----------
    az_history : sequence of float
        Monitoring Az after each epoch (finite; fewer than ``window`` values give None).
    window : int
        Moving-average width and minimum plateau length, >= 1.
    tol : float
        Rise below which the curve counts as flat, >= 0.

    Returns
    -------
    int or None
        The 1-based epoch count at which the plateau starts, or None when not reached.
    """
    a = np.asarray(az_history, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("az_history is empty or not 1-D; pass a sequence of Az values, one per epoch")
    if not np.all(np.isfinite(a)):
        raise ValueError("az_history holds NaN or infinite values; pass the finite Az of every epoch")
    if window < 1:
        raise ValueError(f"window must be >= 1 epochs, got {window}; pass a positive width")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}; pass the Az rise that still counts as flat")
    n = a.size
    if n < window:
        return None
    # centred moving average with shrinking ends
    lo = np.maximum(np.arange(n) - (window - 1) // 2, 0)
    hi = np.minimum(np.arange(n) + window // 2 + 1, n)
    c = np.concatenate([[0.0], np.cumsum(a)])
    m = (c[hi] - c[lo]) / (hi - lo)
    best_so_far = np.maximum.accumulate(m)  # best up to and including e (0-based)
    best_after = np.maximum.accumulate(m[::-1])[::-1]  # max of m[e:]
    ok = best_after <= best_so_far + tol  # at index e: m[e:] includes m[e] <= best_so_far[e] trivially
    e0 = int(np.argmax(ok))  # first True (ok[-1] is always True)
    if e0 > n - window:
        return None
    return e0 + 1
