"""PatchPool: labelled positions over padded images, cutting (augmented) patches on the fly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data import FundusImage
from . import positions
from .augment import _D4_PARTS_ARRAY, _FLIP_TO_D4, d4_transform, hemorrhage_augmentation, random_flips
from .positions import EXUDATE_PATCH, HEMORRHAGE_PATCH, POSITION_DTYPE
from .windows import _as_image_list, _check_positions, pad_images, to_tensor, window_view

#: Augmentation schemes understood by :meth:`PatchPool.get_batch`.
SCHEMES = ("none", "d4", "ses", "flips")

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
        at ``[k, r + size // 2, c + size // 2]``).
        """
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
        if scheme == "none":
            k = None
        elif scheme == "d4":
            k = rng.integers(0, 8, size=len(indices))
        elif scheme == "flips":
            k = _FLIP_TO_D4[random_flips(len(indices), rng)]
        else:  # "ses": the hemorrhage engine; its flip codes expressed as the equal D4 elements
            pos = self.labels[indices] == 1
            code = np.empty(len(indices), np.int64)
            rows[pos], cols[pos], code[pos], code[~pos] = hemorrhage_augmentation(
                rows[pos], cols[pos], self.shapes[img[pos]], int((~pos).sum()), rng
            )
            k = _FLIP_TO_D4[code]
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


def _build_pool(records, pos_fn, neg_fn, size, scheme, max_pos, max_neg, seed, what, no_negatives) -> PatchPool:
    """A pool of every position ``pos_fn`` / ``neg_fn`` give (subsampled per image); fails when a class is empty."""
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
    pool = PatchPool([r.image for r in records], pos, labels, size, scheme, [r.id for r in records])
    counts = pool.class_counts()
    if counts[1] == 0:
        raise ValueError(
            f"none of the {pool.n_images} images has {what} pixels, so there are no positive patches; "
            f"add images with {what}s"
        )
    if counts[0] == 0:
        raise ValueError(no_negatives)
    return pool


def exudate_pool(
    records: Sequence[FundusImage],
    size: int = EXUDATE_PATCH,
    margin: float = 24,
    max_positives_per_image: int | None = None,
    max_negatives_per_image: int | None = 5000,
    seed: int = 0,
) -> PatchPool:
    """Exudate (1) / healthy (0) pool over standardized records, augmented with D4 by default.

    Every exudate pixel is a positive; healthy positions come from :func:`.exudate_negatives`.
    ``max_*_per_image`` subsample uniformly (seeded) so a pool stays small; None keeps all.
    Raises ValueError when no image has exudates.
    """
    return _build_pool(
        records, positions.exudate_positives, lambda r: positions.exudate_negatives(r, margin=margin), size, "d4",
        max_positives_per_image, max_negatives_per_image, seed, "exudate",
        f"no healthy positions at least {margin} px from lesions; lower margin",
    )


def hemorrhage_pool(
    records: Sequence[FundusImage],
    size: int = HEMORRHAGE_PATCH,
    *,
    allow_lesion_images: bool = False,
    margin: float = 20,
    max_positives_per_image: int | None = None,
    max_negatives_per_image: int | None = 5000,
    seed: int = 0,
) -> PatchPool:
    """Hemorrhage (1) / normal (0) pool following the SeS rules (scheme ``"ses"``).

    Negatives come only from images without hemorrhages unless ``allow_lesion_images`` (see
    :func:`.hemorrhage_negatives`). Raises ValueError when no image has hemorrhages, or when no image
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
    return _build_pool(
        records, positions.hemorrhage_positives,
        lambda r: positions.hemorrhage_negatives(r, allow_lesion_images=allow_lesion_images, margin=margin),
        size, "ses", max_positives_per_image, max_negatives_per_image, seed, "hemorrhage",
        "no negative positions were found; check the FOV masks or lower margin",
    )


