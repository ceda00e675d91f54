"""EGL active learning, Algorithms 1 and 2 of Otálora et al. (2017), with baselines and remedies.

The algorithms choose samples only; they never import :mod:`fundus_nb.train`. They take a ``fit``
callable with the ``train.fit`` contract (``fit(model, batches, epochs=...)`` with
``batches(epoch, rng)`` yielding ``(x, y)`` tensors), usually built with ``functools.partial``.

* :func:`select_patches` -- Algorithm 1: score the unlabelled pool, add the top ``k``, update.
* :func:`select_images` -- Algorithm 2: add the most "interesting" image (largest sum of EGL over
  its grid of patches), then pick patches from it with Algorithm 1.
* Strategies: ``"egl"`` (the paper), ``"random"`` (the paper's baseline), ``"entropy"``
  (predictive-entropy uncertainty sampling) and ``"badge"`` (Ash et al., ICLR 2020: k-means++
  seeding on the exact last-layer gradient embeddings, the quantity closed-form EGL computes).
  Entropy and BADGE are baselines the paper does **not** show; random is the paper's own.
* Degenerate models: :func:`fundus_nb.egl.degeneracy` (one-class predictions, dead units) flags a
  collapsed model; the remedies :func:`select_images` offers are ``strategy="badge"`` (diversity),
  ``safeguard=True`` (a class-stratified top-k) and ``steps_per_round`` (a fixed number of SGD
  steps per update instead of epochs over a growing labelled set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..models import predict_proba
from ..patches import PatchPool, patchify, window_view
from .badge import gradient_embedding, kmeans_pp
from .phi import check_params, expected_gradient_length, predictive_entropy, score, selected_modules

__all__ = ["STRATEGIES", "SelectionResult", "pick", "select_patches", "select_images"]

STRATEGIES = ("egl", "random", "entropy", "badge")


@dataclass
class SelectionResult:
    """What an active-learning run chose and how the model did along the way.

    Attributes
    ----------
    strategy : str
    selected : list of np.ndarray
        Pool indices added per round; entry 0 is the initial set ``L0``.
    records : list of dict
        One per round (round 0 = after the initial model): ``round``, ``iterations`` (cumulative
        SGD iterations), ``n_patches`` (labelled patches trained on so far), ``n_images``, plus the
        numbers ``eval_fn(model)`` returned.
    image_order : list of int
        Algorithm 2: pool image indices in the order chosen (the ``mu`` initial ones first).
    interestingness : np.ndarray
        Algorithm 2: ``(rounds, n_images)`` sum of Phi of every candidate image before each round's
        choice (NaN for images already chosen or when not recorded).
    initial_iterations : int
        SGD iterations spent on the initial model (the phase marked in the paper's Fig. 2).
    """

    strategy: str
    selected: list = field(default_factory=list)
    records: list = field(default_factory=list)
    image_order: list = field(default_factory=list)
    interestingness: np.ndarray | None = None
    initial_iterations: int = 0

    @property
    def labelled(self) -> np.ndarray:
        """Every pool index trained on, in the order added."""
        return np.concatenate(self.selected) if self.selected else np.zeros(0, np.int64)

    def frame(self) -> pd.DataFrame:
        """The per-round records as a pandas DataFrame."""
        return pd.DataFrame(self.records)


def _check_common(pool, k: int, strategy: str, params: str) -> None:
    """The checks both algorithms share: a PatchPool, ``k >= 1``, a known strategy and params."""
    if not isinstance(pool, PatchPool):
        raise TypeError(
            f"pool must be a patches.PatchPool (positions over images), got {type(pool).__name__}; "
            "build one with patches.exudate_pool(records)"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}; pick one of those")
    if int(k) <= 0:
        raise ValueError(f"k (patches added per round) must be >= 1, got {k}; pass a positive k")
    check_params(params)


class _Trainer:
    """Runs ``fit`` on a labelled index set and counts the SGD iterations it takes."""

    def __init__(self, model, pool, fit, batch_size, augment, epochs, steps=None):
        self.model, self.pool, self.fit = model, pool, fit
        self.batch_size, self.augment, self.epochs = int(batch_size), augment, int(epochs)
        self.steps = None if steps is None else int(steps)
        self.iterations = 0

    def __call__(self, idx: np.ndarray, epochs: int | None = None, steps: int | None = None) -> None:
        idx = np.asarray(idx, np.int64)
        if steps is None:
            steps = self.steps if epochs is None else None

        def batches(epoch, rng):
            done = 0
            while True:  # epochs over idx; with ``steps``, cycle until that many batches
                for xb, yb in self.pool.iter_batches(idx, self.batch_size, rng, augment=self.augment):
                    self.iterations += 1
                    done += 1
                    yield xb, yb
                    if steps is not None and done >= steps:
                        return
                if steps is None:
                    return

        self.fit(self.model, batches, epochs=1 if steps is not None else self.epochs if epochs is None else int(epochs))


def pick(
    model: nn.Module,
    pool: PatchPool,
    cand: np.ndarray,
    k: int,
    strategy: str,
    params: str,
    rng: np.random.Generator,
    safeguard: bool = False,
) -> np.ndarray:
    """``k`` of the candidate pool indices ``cand`` under ``strategy`` (one selection step).

    Parameters
    ----------
    model : nn.Module
        The current model (scores and predictions; it is not trained here).
    pool : PatchPool
        The pool the indices refer to.
    cand : np.ndarray
        Candidate pool indices; all of them are returned when ``k >= len(cand)``.
    k : int
        Patches to pick.
    strategy : {"egl", "random", "entropy", "badge"}
        random: a uniform draw; egl / entropy: the stable top-k of :func:`fundus_nb.egl.score`
        (ties broken by position in ``cand``); badge: k-means++ on the gradient embeddings.
    params : {"fc", "all"}
        Parameters of the EGL gradient.
    rng : np.random.Generator
        Drives random and BADGE picks.
    safeguard : bool
        Class-stratified top-k: half of the picks are the top-scored candidates the model predicts
        positive and half the top-scored it predicts negative (labels stay hidden; when one
        predicted class has too few candidates, the other fills in).

    Returns
    -------
    np.ndarray
        The picked pool indices.
    """
    if k >= len(cand):
        return cand.copy()
    if strategy == "random":
        return rng.choice(cand, size=k, replace=False)
    x = pool.extract(cand)
    if strategy == "badge":
        return cand[kmeans_pp(gradient_embedding(model, x), k, rng)]
    s = score(model, x, strategy, params).numpy()
    # stable top-k (ties broken by position in cand, so runs are reproducible)
    order = np.argsort(-s, kind="stable")
    if not safeguard:
        return cand[order[:k]]
    pred = predict_proba(model, x) >= 0.5
    pos, neg = order[pred[order]], order[~pred[order]]
    n_pos = min(len(pos), max(k // 2, k - len(neg)))
    return cand[np.concatenate([pos[:n_pos], neg[: k - n_pos]])]


def _record(rec_list, model, eval_fn, **values) -> None:
    row = dict(values)
    if eval_fn is not None:
        row.update({k: float(v) for k, v in dict(eval_fn(model)).items()})
    rec_list.append(row)


def select_patches(
    model: nn.Module,
    pool: PatchPool,
    labelled_idx: np.ndarray | None,
    k: int,
    rounds: int,
    fit: Callable[..., Any],
    *,
    strategy: str = "egl",
    candidates: np.ndarray | None = None,
    batch_size: int = 32,
    initial_batches: int = 5,
    epochs_per_round: int = 1,
    params: str = "fc",
    augment: bool = True,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    seed: int = 0,
) -> SelectionResult:
    """Algorithm 1: EGL active selection of patches.

    Train an initial model on ``L0`` (``initial_batches`` batches of ``batch_size``, the paper's
    5 x 32), then ``rounds`` times: score every unlabelled candidate, add the top ``k`` to the
    labelled set and update the model on ``L0 ∪ L1 ∪ ... ∪ Lr`` (``epochs_per_round`` passes of
    ``fit``; "incrementally adding the k samples to L0", as the paper says).

    Parameters
    ----------
    model : nn.Module
        Updated in place.
    pool : PatchPool
        Labelled patch positions (labels are revealed only when a patch is selected).
    labelled_idx : np.ndarray or None
        ``L0``; None draws ``initial_batches * batch_size`` random candidates.
    k : int
        Patches added per round (>= 1).
    rounds : int
        Selection rounds (>= 0).
    fit : callable
        ``fit(model, batches, epochs=...)`` with the ``train.fit`` contract.
    strategy : {"egl", "random", "entropy"}
        ``"random"`` is the paper's baseline; ``"entropy"`` (predictive-entropy uncertainty
        sampling) is a common alternative that the paper does not show.
    candidates : np.ndarray, optional
        Pool indices that may be selected (default: the whole pool).
    params : {"fc", "all"}
        Parameters of the EGL gradient.
    augment : bool
        Train on the pool's augmentation (D4 for exudate pools).
    eval_fn : callable, optional
        ``eval_fn(model) -> dict`` of numbers recorded after the initial model and every round.
    seed : int
        Drives L0 and random selection.

    Returns
    -------
    SelectionResult
    """
    _check_common(pool, k, strategy, params)
    k, rounds = int(k), int(rounds)
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}; pass 0 for the initial model only")
    if strategy == "egl":
        selected_modules(model, params)
    rng = np.random.default_rng(seed)
    cand = np.arange(len(pool)) if candidates is None else np.unique(np.asarray(candidates, np.int64))
    if cand.size and (cand.min() < 0 or cand.max() >= len(pool)):
        raise ValueError(f"candidates must be pool indices in 0..{len(pool) - 1}; drop the others")
    if labelled_idx is None:
        n0 = int(initial_batches) * int(batch_size)
        if n0 > len(cand):
            raise ValueError(f"the pool has {len(cand)} candidates, fewer than the initial {n0}; lower initial_batches")
        l0 = rng.choice(cand, size=n0, replace=False)
    else:
        l0 = np.asarray(labelled_idx, np.int64).ravel()
        if l0.size and (l0.min() < 0 or l0.max() >= len(pool)):
            raise ValueError(f"labelled_idx must be pool indices in 0..{len(pool) - 1}; drop the others")
    free = np.setdiff1d(cand, l0)
    if len(free) < k:
        raise ValueError(f"the unlabelled pool has {len(free)} patches, fewer than k={k}; lower k or add patches")
    if rounds * k > len(free):
        raise ValueError(
            f"{rounds} rounds of k={k} need {rounds * k} unlabelled patches but the pool has {len(free)}; "
            "lower rounds or k"
        )
    train = _Trainer(model, pool, fit, batch_size, augment, epochs_per_round)
    res = SelectionResult(strategy=strategy, selected=[l0])
    if len(l0):
        train(l0, epochs=1)
    res.initial_iterations = train.iterations
    _record(res.records, model, eval_fn, round=0, iterations=train.iterations, n_patches=len(l0))
    labelled = l0
    for r in range(1, rounds + 1):
        new = pick(model, pool, free, k, strategy, params, rng)
        free = np.setdiff1d(free, new)
        labelled = np.concatenate([labelled, new])
        res.selected.append(new)
        train(labelled)
        _record(res.records, model, eval_fn, round=r, iterations=train.iterations, n_patches=len(labelled))
    return res


def select_images(
    model: nn.Module,
    pool: PatchPool,
    fit: Callable[..., Any],
    *,
    fovs: Sequence[np.ndarray | None] | None = None,
    strategy: str = "egl",
    mu: int = 4,
    rounds: int | None = None,
    k: int = 32,
    inner_rounds: int = 1,
    stride: int = 48,
    batch_size: int = 32,
    initial_batches: int = 5,
    initial_steps: int | None = None,
    epochs_per_round: int = 1,
    steps_per_round: int | None = None,
    params: str = "fc",
    augment: bool = True,
    record_interestingness: bool | None = None,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    seed: int = 0,
    initial: str = "random",
    safeguard: bool = False,
    initial_positive: bool = False,
) -> SelectionResult:
    """Algorithm 2: EGL active selection of images.

    ``mu`` random images start; the initial model trains on ``initial_batches`` batches drawn from
    their ground-truth patches (the pool's positions in those images). Each round every unchosen
    image is patchified on a grid (``stride``, centres inside its FOV) and its interestingness
    ``sigma = sum of Phi`` over those patches is computed; the image with the largest sigma is
    added (an expert would annotate it), its pool patches become candidates and
    ``inner_rounds`` rounds of Algorithm 1 add the top ``k`` candidates and update the model on
    everything labelled so far.

    Parameters
    ----------
    pool : PatchPool
        Ground-truth patches of the training images (``pool.positions["image"]`` says whose).
    fovs : sequence of HxW bool masks, optional
        FOV of each pool image (None: the whole image).
    strategy : {"egl", "random", "entropy", "badge"}
        How the next image and the patches are chosen (entropy: sum of predictive entropy; random:
        a uniform draw; badge: the image by sum of Phi as EGL, its patches by k-means++ on the
        gradient embeddings; the paper compares EGL with random only).
    initial : {"random", "stratified"}
        Cold start ``L0`` from the ``mu`` initial images' pool patches: ``"random"`` (the paper: a
        uniform draw, right for a class-balanced pool) or ``"stratified"`` (half positives, half
        negatives: the cold start for a natural-prevalence grid pool, where a uniform draw of 160
        patches at 1 % prevalence holds one or two positives). ValueError when ``"stratified"`` and
        the initial images have no positive patch.
    safeguard : bool
        Class-stratified top-k (remedy against collapse): half the picks from the candidates the
        model predicts positive, half from those it predicts negative, each by score.
    steps_per_round : int, optional
        Each model update runs this many SGD steps (batches cycled over the labelled set) instead
        of ``epochs_per_round`` passes over a growing set (remedy against collapse).
    initial_steps : int, optional
        SGD steps of the initial model on ``L0`` (batches cycled over ``L0``, with augmentation).
        None: one pass over ``L0`` (the paper's 5 batches = 5 steps). The labelled set is the same
        either way; only the compute differs. A LeNet from PyTorch's default initialisation still
        predicts one class after 5 (and usually after 60) steps, so the first rounds would be
        chosen by a degenerate model (notebook 03 measures this and uses a few hundred steps).
    initial_positive : bool
        Make sure an initial image holds a positive pool patch: when none of the ``mu`` random
        images does, the last one is replaced by a random image that does (the other draws, and
        every seed whose draw already had one, are unchanged). False: the paper's uniform draw, whose
        L0 is one class when the ``mu`` images are lesion-free, so the initial model predicts one
        class and the run collapses. ValueError when no pool image has a positive patch.
    rounds : int, optional
        Images added (default: until every image is chosen).
    record_interestingness : bool, optional
        Compute the EGL interestingness of every candidate every round even when the strategy does
        not need it (default: only for ``"egl"``).
    Other parameters as in :func:`select_patches`.

    Returns
    -------
    SelectionResult
        ``image_order`` and ``interestingness`` filled in; records have ``n_images``.
    """
    _check_common(pool, k, strategy, params)
    n_img = pool.n_images
    mu, k, stride = int(mu), int(k), int(stride)
    if not 1 <= mu <= n_img:
        raise ValueError(f"mu (initial images) must lie in 1..{n_img} (the pool's images), got {mu}; lower mu")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}; pass a positive grid step in pixels")
    rounds = n_img - mu if rounds is None else int(rounds)
    if not 0 <= rounds <= n_img - mu:
        raise ValueError(
            f"rounds must lie in 0..{n_img - mu} ({n_img} images, mu={mu}), got {rounds}; lower rounds or mu"
        )
    if fovs is not None and len(fovs) != n_img:
        raise ValueError(
            f"fovs must give one mask (or None) per pool image ({n_img}), got {len(fovs)}; pass one per image"
        )
    selected_modules(model, params)
    record_int = (strategy in ("egl", "badge")) if record_interestingness is None else bool(record_interestingness)
    rng = np.random.default_rng(seed)
    img_of = pool.positions["image"].astype(np.int64)
    size = pool.size

    def grid(i: int) -> np.ndarray:
        h, w = pool.shapes[i]
        f = None if fovs is None else fovs[i]
        rows, cols = patchify((int(h), int(w)) if f is None else np.asarray(f, bool), size, stride)
        return window_view(pool.images[i : i + 1], size)[0, rows, cols]  # pool.images are padded

    if initial not in ("random", "stratified"):
        raise ValueError(f"initial must be 'random' or 'stratified', got {initial!r}; pick one of those")
    if steps_per_round is not None and (isinstance(steps_per_round, bool) or int(steps_per_round) < 1):
        raise ValueError(
            f"steps_per_round must be a positive number of SGD steps or None, got {steps_per_round!r}; "
            "pass None for epochs_per_round passes"
        )
    if initial_steps is not None and (isinstance(initial_steps, bool) or int(initial_steps) < 1):
        raise ValueError(
            f"initial_steps must be a positive number of SGD steps or None, got {initial_steps!r}; "
            "pass None for one pass over L0"
        )
    chosen = list(rng.choice(n_img, size=mu, replace=False).astype(int))
    if initial_positive:
        with_pos = np.unique(img_of[pool.labels == 1])
        if len(with_pos) == 0:
            raise ValueError(
                "no pool image has a positive patch, so no initial image can hold one; "
                "check the pool's labels or pass initial_positive=False"
            )
        if not np.isin(chosen, with_pos).any():
            chosen[-1] = int(rng.choice(with_pos))
    cand = np.flatnonzero(np.isin(img_of, chosen))
    n0 = min(int(initial_batches) * int(batch_size), len(cand))
    if n0 == 0:
        raise ValueError(f"the {mu} initial images have no pool patches; raise mu or check the pool")
    if initial == "stratified":
        pos, neg = cand[pool.labels[cand] == 1], cand[pool.labels[cand] == 0]
        if len(pos) == 0:
            raise ValueError(
                f"the {mu} initial images (pool images {sorted(chosen)}) have no positive patch, so a "
                "stratified cold start is impossible; raise mu or change seed so an initial image has lesions"
            )
        n_pos = min(len(pos), n0 // 2)
        l0 = np.concatenate(
            [rng.choice(pos, size=n_pos, replace=False), rng.choice(neg, size=min(len(neg), n0 - n_pos), replace=False)]
        )
    else:
        l0 = rng.choice(cand, size=n0, replace=False)
    free = np.setdiff1d(cand, l0)
    train = _Trainer(model, pool, fit, batch_size, augment, epochs_per_round, steps_per_round)
    res = SelectionResult(strategy=strategy, selected=[l0], image_order=list(chosen))
    if initial_steps is None:
        train(l0, epochs=1)
    else:
        train(l0, steps=int(initial_steps))
    res.initial_iterations = train.iterations
    _record(res.records, model, eval_fn, round=0, iterations=train.iterations, n_patches=n0, n_images=mu)
    interest = np.full((rounds, n_img), np.nan)
    labelled = l0
    for r in range(rounds):
        rest = [i for i in range(n_img) if i not in chosen]
        need = strategy != "random" or record_int
        sig = {}
        if need:
            for i in rest:
                s = (
                    predictive_entropy(model, grid(i))
                    if strategy == "entropy"
                    else expected_gradient_length(model, grid(i), params)
                )
                sig[i] = float(s.sum())
                if strategy != "entropy":
                    interest[r, i] = sig[i]
            if strategy == "entropy" and record_int:
                for i in rest:
                    interest[r, i] = float(expected_gradient_length(model, grid(i), params).sum())
        if strategy == "random":
            best = int(rng.choice(rest))
        else:  # max sigma, ties to the lowest index
            best = max(rest, key=lambda i: (sig[i], -i))
        chosen.append(best)
        res.image_order.append(best)
        free = np.union1d(free, np.flatnonzero(img_of == best))
        added = []
        for _ in range(int(inner_rounds)):
            if len(free) == 0:
                break
            new = pick(model, pool, free, k, strategy, params, rng, safeguard)
            free = np.setdiff1d(free, new)
            labelled = np.concatenate([labelled, new])
            added.append(new)
            train(labelled)
        res.selected.append(np.concatenate(added) if added else np.zeros(0, np.int64))
        _record(
            res.records,
            model,
            eval_fn,
            round=r + 1,
            iterations=train.iterations,
            n_patches=len(labelled),
            n_images=len(chosen),
            image=best,
        )
    res.interestingness = interest
    return res
