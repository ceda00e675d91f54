"""Class-balanced samples and patient splits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._io import largest_remainder
from ..data import FundusImage
from .pool import PatchPool


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
    """Patients per split: largest-remainder rounding of ``n * fractions`` (:func:`fundus_nb._io.largest_remainder`),
    then every empty split takes one patient from the largest.
    """
    counts = largest_remainder(int(n), fractions)
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

