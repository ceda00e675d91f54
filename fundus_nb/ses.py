"""Selective sampling (SeS) of negative training pixels for hemorrhage detection.

van Grinsven et al. (IEEE TMI 2016), Section II-D: every negative candidate pixel of the training
pool gets a weight ``w = |y - p| = p`` (its label is 0, ``p`` the current model's probability of the
positive class for the patch centred on it); the next epochs draw their negatives with probability
``w / sum(w)`` and their positives uniformly, half and half per mini-batch. The weights are
recomputed every ``refresh_every`` epochs (paper: 5). NSeS (``selective=False``) is the same thing
with uniform negatives.

Contents
--------
:class:`SelectiveSampler`
    The candidate pools, the weights, and ``batches(epoch, rng)`` for ``train.fit``.
:func:`weighted_indices`
    Vectorised weighted sampling with replacement that works past 2**24 candidates
    (``torch.multinomial`` refuses more): float64 cumulative sums + ``np.searchsorted``.
:func:`lesion_centres`
    One pixel per hemorrhage (the positive candidates of the paper's rule).

Image-level monitoring (image scores, ``Monitor``, the plateau rule) lives in
:mod:`fundus_nb.monitor`. Augmentation (one-pixel shifts of positives, flips of both classes) is
drawn by the package's one hemorrhage engine, :func:`fundus_nb.patches.hemorrhage_augmentation`,
with its one flip convention (bit 0 horizontal, bit 1 vertical).

Border rule and model input scale follow ``docs/CONTRACTS.md``: images are zero-padded, the patch
of size ``s`` centred at ``(r, c)`` covers rows ``r - s//2 .. r - s//2 + s - 1``, and patches enter
the model as ``float32 x / 255`` in (N, 3, s, s) layout.

This module chooses samples only; it never imports ``train`` or ``metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .models import iter_dense_probability_maps
from .patches import (
    flip_patches,
    hemorrhage_augmentation,
    hemorrhage_negatives,
    hemorrhage_positives,
    pad_images,
    record_fov,
    to_tensor,
    window_view,
)

__all__ = [
    "SelectiveSampler",
    "lesion_centres",
    "weighted_indices",
    "refresh_due",
]


# --------------------------------------------------------------------------------------------------
# weighted sampling


def weighted_indices(
    weights: np.ndarray,
    n: int,
    rng: np.random.Generator,
    cumulative: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` indices with replacement, index ``i`` with probability ``weights[i] / sum(weights)``.

    Inverse-CDF sampling: ``n`` uniform draws in ``[0, total)`` are located in the float64
    cumulative sum with ``np.searchsorted`` (``O(N)`` once, then ``O(n log N)``), so there is no
    limit on the number of candidates (``torch.multinomial`` stops at 2**24) and zero-weight
    candidates are never drawn.

    Parameters
    ----------
    weights : (N,) array of non-negative finite floats (float32 is enough; sums are float64).
    n : number of draws.
    rng : numpy Generator.
    cumulative : optional precomputed ``np.cumsum(weights, dtype=np.float64)`` (reuse it when
        drawing many times from the same weights).

    Returns
    -------
    (n,) int64 array of indices.
    """
    weights = np.asarray(weights)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {weights.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if cumulative is None:
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative; check the probability maps")
        cumulative = np.cumsum(weights, dtype=np.float64)
    total = float(cumulative[-1])
    if not total > 0:
        raise ValueError("all weights are zero: there is nothing to draw; use uniform sampling instead")
    u = rng.random(n) * total
    idx = np.searchsorted(cumulative, u, side="right")
    # u < total always, but guard against rounding at the very top end.
    return np.minimum(idx, cumulative.size - 1).astype(np.int64, copy=False)


def refresh_due(epochs_done: int, refresh_every: int) -> bool:
    """True when the weights are recomputed after ``epochs_done`` finished epochs.

    Paper steps 2-3: train one epoch on uniform samples, then classify the pool; afterwards step
    (3)-(4) runs once every ``refresh_every`` epochs. So the refreshes fall after epochs
    1, 1 + k, 1 + 2k, ... (k = ``refresh_every``).
    """
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    return epochs_done >= 1 and (epochs_done - 1) % refresh_every == 0


# --------------------------------------------------------------------------------------------------
# helpers on records


def lesion_centres(rec) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int32 of one pixel per hemorrhage: the rounded reference centres, or, for a
    record with a mask only, the rounded centroid of each connected component (8-connectivity).
    """
    h, w = rec.image.shape[:2]
    centres = getattr(rec, "hemorrhage_centers", None)
    if centres is None or len(centres) == 0:
        mask = getattr(rec, "hemorrhage_mask", None)
        if mask is None or not np.any(mask):
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        lab, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3)))
        centres = np.asarray(ndimage.center_of_mass(np.ones_like(lab), lab, np.arange(1, n + 1)), float)
    rc = np.rint(np.asarray(centres, float).reshape(-1, 2)).astype(np.int64)
    return (np.clip(rc[:, 0], 0, h - 1).astype(np.int32), np.clip(rc[:, 1], 0, w - 1).astype(np.int32))


def _check_image(rec, patch_size: int) -> None:
    img = rec.image
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image {rec.id!r} must be HxWx3 uint8, got shape {img.shape} dtype {img.dtype}")
    if min(img.shape[:2]) < patch_size:
        raise ValueError(
            f"image {rec.id!r} is {img.shape[0]}x{img.shape[1]}, smaller than the {patch_size}x{patch_size} "
            "patch; standardize it to a larger size (preprocess.standardize_record) or use a smaller patch"
        )


# --------------------------------------------------------------------------------------------------
# the sampler


class _EpochBatches:
    """The mini-batches of one epoch: indices drawn up front, patches cut lazily per batch."""

    def __init__(self, sampler: SelectiveSampler, plan: dict[str, np.ndarray]):
        self._sampler = sampler
        self._plan = plan

    def __len__(self) -> int:
        return self._sampler.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s, p = self._sampler, self._plan
        half = s.batch_size // 2
        y = torch.cat([torch.ones(half, dtype=torch.long), torch.zeros(half, dtype=torch.long)])
        for b in range(s.batches_per_epoch):
            sl = slice(b * half, (b + 1) * half)
            x = np.concatenate(
                [
                    s._cut(p["pos_img"][sl], p["pos_r"][sl], p["pos_c"][sl], p["pos_flip"][sl]),
                    s._cut(p["neg_img"][sl], p["neg_r"][sl], p["neg_c"][sl], p["neg_flip"][sl]),
                ]
            )
            yield to_tensor(x, channels_first=True), y


class SelectiveSampler:
    """Candidate pools, SeS weights and mini-batches for hemorrhage patch training.

    Positives (``positives="lesion"``, the default and the paper's rule): a hemorrhage of the
    positive training images is drawn uniformly, then the pixel at its centre (the reference
    centre, else the centroid of its connected component in the mask), augmented by a
    one-pixel translation (each of row and column shifted by -1, 0 or +1) and random horizontal
    and vertical flips; every lesion is equally likely however large it is. With
    ``positives="pixel"`` every hemorrhage pixel of the masks is a candidate instead (large blots
    then dominate). Negatives are every FOV pixel of the hemorrhage-free training images,
    drawn with probability ``w / sum(w)`` (SeS) or uniformly (NSeS, ``selective=False``) and
    randomly flipped. Each mini-batch holds ``batch_size // 2`` of each.

    Parameters
    ----------
    records : training ``FundusImage`` records (standardized, same pixel scale); each needs a
        hemorrhage reference (mask or centres). Images of different sizes are zero-padded to the
        largest, which is the border rule anyway.
    patch_size : side of the square patch (paper: 41).
    batch_size : mini-batch size, even (paper: 256).
    batches_per_epoch : mini-batches per epoch (paper: 4000, ~1M samples). On 2 CPU cores the
        notebook scales both down (see the presets); SeS vs NSeS is compared at equal settings.
    selective : True for SeS, False for NSeS (uniform negatives; ``update_weights`` still works,
        e.g. to draw a heat map, but never changes what is drawn).
    refresh_every : weights are recomputed after epochs 1, 1 + k, 1 + 2k, ... (paper k = 5);
        see :func:`refresh_due` and :meth:`on_epoch_end`.
    allow_lesion_images : the option for datasets without hemorrhage-free images (IDRiD has
        none): negatives are then also taken from the FOV pixels of positive images that lie
        at least ``lesion_margin`` px from every hemorrhage pixel (``patches.hemorrhage_negatives``).
        Off by default (the paper draws negatives from negative images only).
    lesion_margin : exclusion distance in pixels of the run's images for ``allow_lesion_images``
        (default 20 = 41 // 2; notebooks convert their 512-scale value with
        ``preprocess.scale_length``).
    augment : apply the augmentations above (True in training).
    positives : ``"lesion"`` (default) or ``"pixel"``, see above.

    Attributes
    ----------
    weights : (n_negatives,) float32, current SeS weights (all ones until the first update).
    neg_image, neg_flat : image index and flat pixel index (row * W + col) of each negative.
    pos_image, pos_rc : image index and (row, col) of each positive.
    last_draw_seconds, last_update_seconds : timings of the latest epoch draw and weight pass.
    n_updates : how many weight passes ran.
    """

    def __init__(
        self,
        records: Sequence,
        *,
        patch_size: int = 41,
        batch_size: int = 64,
        batches_per_epoch: int = 50,
        selective: bool = True,
        refresh_every: int = 5,
        allow_lesion_images: bool = False,
        lesion_margin: float = 20,
        augment: bool = True,
        positives: str = "lesion",
    ):
        records = list(records)
        if positives not in ("lesion", "pixel"):
            raise ValueError(
                f"positives must be 'lesion' (draw a lesion, then its centre) or 'pixel', got {positives!r}; "
                "pass one of the two"
            )
        self.positives = positives
        if not records:
            raise ValueError("the training pool is empty; pass at least one positive and one negative image")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if batch_size < 2 or batch_size % 2:
            raise ValueError(
                f"batch_size must be an even number >= 2, got {batch_size}; "
                "pass an even size (half positives, half negatives)"
            )
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        if lesion_margin < 0:
            raise ValueError(f"lesion_margin must be >= 0, got {lesion_margin}")
        self.records = records
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.batches_per_epoch = int(batches_per_epoch)
        self.selective = bool(selective)
        self.refresh_every = int(refresh_every)
        self.allow_lesion_images = bool(allow_lesion_images)
        self.lesion_margin = float(lesion_margin)
        self.augment = bool(augment)

        for rec in records:
            _check_image(rec, self.patch_size)
        labels = [rec.has_hemorrhages for rec in records]
        missing = [rec.id for rec, lab in zip(records, labels, strict=True) if lab is None]
        if missing:
            raise ValueError(
                f"images {missing[:5]} have no hemorrhage reference (mask or centres); "
                "SeS needs to know which images are hemorrhage-free"
            )
        positives = [i for i, lab in enumerate(labels) if lab]
        negatives = [i for i, lab in enumerate(labels) if not lab]
        if not positives:
            raise ValueError(
                "the training pool has no image with hemorrhages, so there are no positive pixels to draw; "
                "add images with hemorrhages"
            )
        if not negatives and not self.allow_lesion_images:
            raise ValueError(
                "the training pool has no hemorrhage-free image to draw negatives from; pass "
                "allow_lesion_images=True to take negatives from the FOV pixels of lesion images at least "
                "lesion_margin px from any hemorrhage"
            )

        # positives: one centre per lesion, or every hemorrhage pixel (patches.hemorrhage_positives)
        pos_img, pos_rc = [], []
        for i in positives:
            r, c = lesion_centres(records[i]) if self.positives == "lesion" else hemorrhage_positives(records[i])
            pos_img.append(np.full(r.size, i, dtype=np.int32))
            pos_rc.append(np.stack([r, c], axis=1).astype(np.int32))
        self.pos_image = np.concatenate(pos_img)
        self.pos_rc = np.concatenate(pos_rc)
        if self.pos_image.size == 0:
            raise ValueError(
                "the positive images hold no hemorrhage (no mask pixel, no centre); check their references"
            )

        # negatives (patches.hemorrhage_negatives): per image, the flat indices of its candidates
        neg_img, neg_flat = [], []
        self.negative_images: list[int] = []
        for i, rec in enumerate(records):
            if labels[i] and not self.allow_lesion_images:
                continue
            r, c = hemorrhage_negatives(
                rec, allow_lesion_images=self.allow_lesion_images, margin=self.lesion_margin, fov=record_fov(rec)
            )
            if r.size == 0:
                continue
            flat = np.sort(r.astype(np.int64) * rec.image.shape[1] + c).astype(np.int32)
            self.negative_images.append(i)
            neg_img.append(np.full(flat.size, i, dtype=np.int32))
            neg_flat.append(flat)
        if not neg_flat:
            raise ValueError(
                "no negative candidate pixel remains (empty FOVs or lesions everywhere); check the FOV masks"
            )
        self.neg_image = np.concatenate(neg_img)
        self.neg_flat = np.concatenate(neg_flat)
        self.weights = np.ones(self.neg_flat.size, dtype=np.float32)
        self._cumulative: np.ndarray | None = None
        self.n_updates = 0
        self.last_draw_seconds = 0.0
        self.last_update_seconds = 0.0

        # images, zero-padded once (patches.pad_images) so that every patch is a plain slice
        self._widths = np.array([rec.image.shape[1] for rec in records], dtype=np.int64)
        self._padded = pad_images([rec.image for rec in records], self.patch_size)
        # (n, H, W, 3, s, s) view: [i, r, c] is the patch centred at (r, c) of image i, channels first
        # (gathered straight into the model's layout: one pass fewer than gathering HWC patches)
        self._windows = np.moveaxis(window_view(self._padded, self.patch_size), 5, 3)
        self._shapes = np.array([rec.image.shape[:2] for rec in records], dtype=np.int64)

    # ---------------------------------------------------------------------------------------------
    @property
    def n_positives(self) -> int:
        return int(self.pos_image.size)

    @property
    def n_negatives(self) -> int:
        return int(self.neg_flat.size)

    def neg_rc(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(row, col) of negative candidates ``idx`` (all when None)."""
        flat = self.neg_flat if idx is None else self.neg_flat[idx]
        img = self.neg_image if idx is None else self.neg_image[idx]
        w = self._widths[img]
        return np.stack([flat // w, flat % w], axis=1)

    def probabilities(self) -> np.ndarray:
        """Current sampling probability of each negative candidate (uniform for NSeS)."""
        if not self.selective:
            return np.full(self.n_negatives, 1.0 / self.n_negatives)
        w = self.weights.astype(np.float64)
        return w / w.sum()

    def weight_map(self, image_index: int) -> np.ndarray:
        """HxW float32 map of the current weights of one image's negative candidates (0 elsewhere)."""
        rec = self.records[image_index]
        h, w = rec.image.shape[:2]
        out = np.zeros(h * w, dtype=np.float32)
        sel = self.neg_image == image_index
        out[self.neg_flat[sel]] = self.weights[sel]
        return out.reshape(h, w)

    # ---------------------------------------------------------------------------------------------
    def set_weights(self, weights: np.ndarray) -> None:
        """Replace the weights (one non-negative finite value per negative candidate)."""
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (self.n_negatives,):
            raise ValueError(
                f"expected {self.n_negatives} weights (one per negative candidate), got shape {weights.shape}; "
                "pass one weight per candidate"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
        self.weights = weights
        self._cumulative = None

    #: A Dask distributed client for the weight pass (``models.dense_probability_maps``); None
    #: (default) computes the maps in this process. Set it on the sampler to spread
    #: :meth:`on_epoch_end`'s refreshes over a cluster.
    map_client: Any = None

    def update_weights(
        self, model: torch.nn.Module, prob_map: Callable | None = None, *, client: Any = None,
    ) -> np.ndarray:
        """Recompute ``w = |0 - p| = p`` for every negative candidate from dense probability maps.

        One whole-image map per negative image (``models.dense_probability_maps``, exact per-patch
        probabilities, inside the FOV), read at that image's candidate pixels as each map arrives.

        Parameters
        ----------
        model : the current network (its device is used; left in the mode it was in).
        prob_map : optional ``f(model, image, fov) -> HxW`` replacing ``models.dense_probability_map``.
        client : optional Dask distributed client spreading the maps over its workers (default
            :attr:`map_client`; None: a loop in this process, the maps of ``dense_probability_map``).

        Returns
        -------
        The new weights (also stored in :attr:`weights`).
        """
        t0 = time.perf_counter()
        new = np.empty(self.n_negatives, dtype=np.float32)
        starts = np.searchsorted(self.neg_image, self.negative_images, side="left")
        ends = np.searchsorted(self.neg_image, self.negative_images, side="right")
        recs = [self.records[i] for i in self.negative_images]
        fovs = [record_fov(rec) for rec in recs]
        client = client if client is not None else self.map_client
        if prob_map is None:
            maps = iter_dense_probability_maps(model, recs, fovs=fovs, client=client)
        else:
            maps = ((k, prob_map(model, rec.image, fov)) for k, (rec, fov) in enumerate(zip(recs, fovs, strict=True)))
        for k, pmap in maps:
            a, b = starts[k], ends[k]
            pmap = pmap.detach().cpu().numpy() if isinstance(pmap, torch.Tensor) else np.asarray(pmap)
            new[a:b] = np.abs(0.0 - pmap.ravel()[self.neg_flat[a:b]])
        self.set_weights(new)
        self.n_updates += 1
        self.last_update_seconds = time.perf_counter() - t0
        return self.weights

    def on_epoch_end(self, epoch: int, model: torch.nn.Module) -> dict[str, float]:
        """``train.fit``'s hook: refresh the weights when :func:`refresh_due` says so (SeS only).

        ``epoch`` is fit's 0-based number of the epoch just finished (``epoch + 1`` epochs done).
        Returns numbers for the history: ``weights_refreshed`` (1.0 or 0.0) and
        ``weight_seconds`` (duration of the weight pass, 0 when none ran).
        """
        if self.selective and refresh_due(int(epoch) + 1, self.refresh_every):
            self.update_weights(model)
            return {"weights_refreshed": 1.0, "weight_seconds": self.last_update_seconds}
        return {"weights_refreshed": 0.0, "weight_seconds": 0.0}

    def state_dict(self) -> dict:
        """What a resumed run needs (``train.fit(extra_state=sampler)``): the weights and the update count."""
        return {"weights": torch.from_numpy(self.weights.copy()), "n_updates": int(self.n_updates)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the candidate pools must be the same)."""
        self.set_weights(np.asarray(state["weights"], dtype=np.float32))
        self.n_updates = int(state["n_updates"])

    # ---------------------------------------------------------------------------------------------
    def draw_negatives(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of ``n`` negative candidates: weighted (SeS) or uniform (NSeS)."""
        if not self.selective:
            return rng.integers(0, self.n_negatives, size=n)
        if self._cumulative is None:
            self._cumulative = np.cumsum(self.weights, dtype=np.float64)
        if not self._cumulative[-1] > 0:
            raise ValueError(
                "every SeS weight is zero (the model gives p = 0 on all negatives): nothing is misclassified; "
                "use selective=False or stop training"
            )
        return weighted_indices(self.weights, n, rng, cumulative=self._cumulative)

    def plan_epoch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw every index, shift and flip of one epoch (vectorised), in a fixed order."""
        t0 = time.perf_counter()
        n = self.batches_per_epoch * (self.batch_size // 2)
        pos = rng.integers(0, self.n_positives, size=n)
        neg = self.draw_negatives(n, rng)
        pos_img = self.pos_image[pos]
        pos_r, pos_c = self.pos_rc[pos, 0].astype(np.int64), self.pos_rc[pos, 1].astype(np.int64)
        if self.augment:  # the package's hemorrhage engine: shifts, positive flips, negative flips
            pos_r, pos_c, pos_flip, neg_flip = hemorrhage_augmentation(pos_r, pos_c, self._shapes[pos_img], n, rng)
        else:
            pos_flip = np.zeros(n, dtype=np.int64)
            neg_flip = np.zeros(n, dtype=np.int64)
        neg_rc = self.neg_rc(neg)
        plan = {
            "pos_img": pos_img, "pos_r": pos_r, "pos_c": pos_c, "pos_flip": pos_flip,
            "neg_idx": neg, "neg_img": self.neg_image[neg], "neg_r": neg_rc[:, 0], "neg_c": neg_rc[:, 1],
            "neg_flip": neg_flip,
        }  # fmt: skip
        self.last_draw_seconds = time.perf_counter() - t0
        return plan

    def _cut(self, img: np.ndarray, r: np.ndarray, c: np.ndarray, flip: np.ndarray) -> np.ndarray:
        """uint8 (n, 3, s, s) patches centred at (r, c) of images ``img``, flipped as the codes
        ``flip`` say (``patches.flip_patches``: bit 0 horizontal, bit 1 vertical).
        """
        return flip_patches(self._windows[img, r, c], flip, channels_first=True)  # fancy indexing copies

    def patches(self, image_index: np.ndarray, rc: np.ndarray) -> torch.Tensor:
        """Model-scale float32 (n, 3, s, s) patches centred at ``rc`` of images ``image_index`` (no augmentation)."""
        image_index = np.asarray(image_index, dtype=np.int64)
        rc = np.asarray(rc, dtype=np.int64).reshape(-1, 2)
        return to_tensor(self._windows[image_index, rc[:, 0], rc[:, 1]], channels_first=True)

    def batches(self, epoch: int, rng: np.random.Generator) -> _EpochBatches:
        """The ``train.fit`` contract: the mini-batches ``(x, y)`` of one epoch.

        ``x`` is float32 (batch_size, 3, s, s) in model scale (x / 255), ``y`` int64 with the first
        half 1 (positives) and the second half 0 (negatives). All draws are made from ``rng`` at
        call time, so an epoch depends only on ``rng`` and on the weights current at that moment
        (after a resume, call :meth:`update_weights` with the resumed model before going on).
        ``epoch`` is accepted for the contract; the randomness comes from ``rng``.
        """
        return _EpochBatches(self, self.plan_epoch(rng))

    __call__ = batches
