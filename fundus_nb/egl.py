"""Expected gradient length (EGL) active learning for exudate patches (Otálora et al., 2017).

The EGL score of a sample ``x`` is the expected length of the gradient the model would receive if
``x`` were labelled, taken over the model's own belief about the label:

.. math:: \\Phi(x) = \\sum_j p(j \\mid x)\\, \\lVert \\nabla_\\theta J(x, y=j) \\rVert_2

with ``J`` the cross-entropy and ``theta`` the fully connected layers' parameters (the paper's
"backward down to the first fully connected layer", ``params="fc"``) or all parameters
(``params="all"``).

How it is computed (exact, one batched forward and one batched backward per class, never a
per-sample backward loop): for a linear layer ``z = W a + b`` the gradient of one sample is the
outer product ``g ⊗ a`` with ``g = dJ/dz``, so ``||grad W||_F^2 = ||g||^2 ||a||^2`` and
``||grad b||^2 = ||g||^2``. Because samples do not interact in evaluation mode, the gradient of the
*summed* loss with respect to each layer's output ``z`` holds every sample's own ``g`` row by row.
Convolutions use the same idea with ``unfold`` (the per-sample weight gradient is
``G_i U_i^T`` with ``U_i`` the unfolded input). Models with other parametrised layers fall back to
``torch.func`` (``vmap`` of ``grad``), which is exact too.

The algorithms choose samples only; they never import :mod:`fundus_nb.train`. They take a ``fit``
callable with the ``train.fit`` contract (``fit(model, batches, epochs=...)`` with
``batches(epoch, rng)`` yielding ``(x, y)`` tensors), usually built with ``functools.partial``.

* :func:`select_patches` -- Algorithm 1: score the unlabelled pool, add the top ``k``, update.
* :func:`select_images` -- Algorithm 2: add the most "interesting" image (largest sum of EGL over
  its grid of patches), then pick patches from it with Algorithm 1.
* Strategies: ``"egl"`` (the paper), ``"random"`` (the paper's baseline) and ``"entropy"``
  (predictive-entropy uncertainty sampling: a common alternative the paper does **not** show).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .patches import PatchPool, patchify, to_tensor

__all__ = [
    "STRATEGIES",
    "expected_gradient_length",
    "predictive_entropy",
    "score",
    "egl_map",
    "select_patches",
    "select_images",
    "SelectionResult",
    "labels_to_reach",
    "curves_on_grid",
    "mean_band",
]

STRATEGIES = ("egl", "random", "entropy")
_PARAMS = ("fc", "all")
_METHODS = ("auto", "hooks", "func")


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _as_input(patches: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Model input (N, 3, h, w) float32 from uint8 (N, h, w, 3) patches or a float NCHW tensor."""
    if isinstance(patches, np.ndarray) and patches.dtype == np.uint8:
        return to_tensor(patches)
    if isinstance(patches, torch.Tensor) and patches.is_floating_point() and patches.ndim == 4:
        return patches.detach()
    if isinstance(patches, np.ndarray) and np.issubdtype(patches.dtype, np.floating) and patches.ndim == 4:
        return torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    shape = tuple(patches.shape) if hasattr(patches, "shape") else type(patches).__name__
    dtype = getattr(patches, "dtype", None)
    raise ValueError(
        f"patches must be uint8 (N, h, w, 3) or float model input (N, 3, h, w), got {dtype} {shape}; "
        "cut them with patches.extract or convert with patches.to_tensor"
    )


def _check_fits(model: nn.Module, x: torch.Tensor) -> None:
    """Raise a clear ValueError when ``x``'s patch size does not fit ``model``."""
    want = getattr(model, "patch_size", None) or getattr(model, "input_size", None)
    if want is not None:
        want = int(want if np.ndim(want) == 0 else want[-1])
        if x.shape[-1] != want or x.shape[-2] != want:
            raise ValueError(
                f"{type(model).__name__} takes {want}x{want} patches, got {x.shape[-2]}x{x.shape[-1]}; "
                f"cut patches of size {want}"
            )
    if x.shape[1] != 3:
        raise ValueError(f"patches must have 3 colour channels (N, 3, h, w), got shape {tuple(x.shape)}")


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        out = model(x)
    except RuntimeError as err:
        raise ValueError(
            f"{type(model).__name__} cannot take patches of shape {tuple(x.shape[1:])}: {err}. "
            "Cut patches of the size the model was built for"
        ) from err
    if out.ndim != 2:
        raise ValueError(f"the model must return (N, n_classes) logits, got shape {tuple(out.shape)}")
    return out


class _eval_mode:
    """Context: model in eval mode (samples independent), previous mode restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


# ----------------------------------------------------------------------------------------------
# expected gradient length
# ----------------------------------------------------------------------------------------------
def _selected_modules(model: nn.Module, params: str) -> list[nn.Module]:
    if params not in _PARAMS:
        raise ValueError(f"params must be one of {_PARAMS}, got {params!r}")
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if params == "fc":
        if not linear:
            raise ValueError(
                f"{type(model).__name__} has no fully connected (nn.Linear) layer, so params='fc' "
                "has nothing to differentiate; use params='all'"
            )
        return linear
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def _hooks_supported(mods: list[nn.Module]) -> bool:
    for m in mods:
        if isinstance(m, nn.Linear):
            continue
        if (
            isinstance(m, nn.Conv2d)
            and m.groups == 1
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
            and set(n for n, _ in m.named_parameters(recurse=False)) <= {"weight", "bias"}
        ):
            continue
        return False
    return True


def _sq_norms_hooks(model, x, mods) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, C), squared gradient norms (N, C)) by layer-output gradients."""
    chosen = set(id(m) for m in mods)
    record: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(mod, inp, out):
        record.append((mod, inp[0].detach(), out))
        return out.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the recorded z

    handles = [m.register_forward_hook(hook) for m in mods]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        # only the chosen layers' outputs need a graph: freeze the rest so the backward stops there
        for m in model.modules():
            for p in m.parameters(recurse=False):
                p.requires_grad_(id(m) in chosen)
        with torch.enable_grad():
            logits = _forward(model, x)
    finally:
        for h in handles:
            h.remove()
        for p, f in flags:
            p.requires_grad_(f)
    seen = [id(m) for m, _, _ in record]
    if len(seen) != len(set(seen)) or any(isinstance(m, nn.Linear) and a.ndim != 2 for m, a, _ in record):
        return None  # a layer used twice or a Linear on non-flat input: per-sample factorisation fails
    prob = torch.softmax(logits.detach(), dim=1)
    n, c = prob.shape
    outs = [z for _, _, z in record]
    sq = torch.zeros(n, c, dtype=torch.float64, device=x.device)
    unfolded = {}
    for j in range(c):
        # dJ/dlogits = p - e_j for every sample at once
        g_logits = prob.clone()
        g_logits[:, j] -= 1.0
        grads = torch.autograd.grad(
            logits, outs, grad_outputs=g_logits, retain_graph=j < c - 1, allow_unused=True
        )
        for (m, a, _), g in zip(record, grads):
            if g is None:  # a layer that does not reach the logits has zero gradient
                continue
            if isinstance(m, nn.Linear):
                g2 = g.pow(2).sum(1)
                sq[:, j] += (g2 * a.pow(2).sum(1)).double()
                if m.bias is not None:
                    sq[:, j] += g2.double()
            else:  # Conv2d: per-sample weight gradient G_i U_i^T
                if id(m) not in unfolded:
                    unfolded[id(m)] = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)
                u = unfolded[id(m)]
                gf = g.flatten(2)
                gw = torch.bmm(gf, u.transpose(1, 2))
                sq[:, j] += gw.pow(2).sum((1, 2)).double()
                if m.bias is not None:
                    sq[:, j] += gf.sum(2).pow(2).sum(1).double()
    return prob, sq


def _sq_norms_func(model, x, mods) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as :func:`_sq_norms_hooks` with ``torch.func`` (vmap of grad): any layer type."""
    from torch.func import functional_call, grad, vmap

    chosen = set(id(m) for m in mods)
    names = [
        f"{mn}.{pn}" if mn else pn
        for mn, m in model.named_modules()
        if id(m) in chosen
        for pn, _ in m.named_parameters(recurse=False)
    ]
    all_params = dict(model.named_parameters())
    sel = {n: all_params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in all_params.items() if n not in sel}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        out = functional_call(model, ({**rest, **p}, buffers), (xi[None],))
        return F.cross_entropy(out, yi[None])

    with torch.no_grad():
        logits = _forward(model, x)
    prob = torch.softmax(logits, dim=1)
    n, c = prob.shape
    sq = torch.zeros(n, c, dtype=torch.float64, device=x.device)
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    for j in range(c):
        g = per_sample(sel, x, torch.full((n,), j, dtype=torch.long, device=x.device))
        for v in g.values():
            sq[:, j] += v.flatten(1).pow(2).sum(1).double()
    return prob, sq


def expected_gradient_length(
    model: nn.Module,
    patches: np.ndarray | torch.Tensor,
    params: str = "fc",
    batch_size: int | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """EGL score ``Phi(x) = sum_j p(j|x) * ||grad_theta J(x, y=j)||_2`` of every patch, exactly.

    Parameters
    ----------
    model : nn.Module
        A classifier returning ``(N, n_classes)`` logits (softmax in the loss), e.g. ``LeNet``.
    patches : np.ndarray or torch.Tensor
        uint8 ``(N, h, w, 3)`` patches or float model input ``(N, 3, h, w)`` (= uint8 / 255).
    params : {"fc", "all"}
        ``"fc"``: weights and biases of every ``nn.Linear`` (the paper's choice); ``"all"``: every
        parameter of the model.
    batch_size : int, optional
        Patches per chunk (memory only; the result does not depend on it). Default 512 for
        ``"fc"``, 64 for ``"all"``.
    method : {"auto", "hooks", "func"}
        ``"hooks"``: closed-form per-sample norms from layer-output gradients (Linear and Conv2d
        layers); ``"func"``: ``torch.func`` vmap of grad (any layer type); ``"auto"``: hooks when
        every selected layer is Linear/Conv2d, else func. All are exact.

    Returns
    -------
    torch.Tensor
        float32 ``(N,)`` on the CPU.

    Notes
    -----
    The model is put in ``eval()`` mode while scoring (and restored afterwards) so that samples are
    independent and the score is deterministic. LeNet has no dropout or batch norm, so for it the
    mode makes no difference.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    mods = _selected_modules(model, params)
    x_all = _as_input(patches)
    _check_fits(model, x_all)
    bs = int(batch_size or (512 if params == "fc" else 64))
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    hooks_ok = _hooks_supported(mods)
    if method == "hooks" and not hooks_ok:
        raise ValueError("method='hooks' handles Linear and plain Conv2d layers only; use method='func'")
    use_hooks = method == "hooks" or (method == "auto" and hooks_ok)
    dev = _device_of(model)
    out = []
    with _eval_mode(model):
        for start in range(0, len(x_all), bs):
            x = x_all[start : start + bs].to(dev)
            res = _sq_norms_hooks(model, x, mods) if use_hooks else None
            if res is None:
                if method == "hooks":
                    raise ValueError("this model reuses a layer or feeds a Linear non-flat input; use method='func'")
                res = _sq_norms_func(model, x, mods)
            prob, sq = res
            out.append((prob.double() * sq.clamp_min(0).sqrt()).sum(1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def predictive_entropy(model: nn.Module, patches: np.ndarray | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Entropy ``-sum_j p(j|x) log p(j|x)`` (nats) of the model's prediction for every patch (CPU float32)."""
    x_all = _as_input(patches)
    _check_fits(model, x_all)
    dev = _device_of(model)
    out = []
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(x_all), int(batch_size)):
            logp = torch.log_softmax(_forward(model, x_all[start : start + batch_size].to(dev)), dim=1)
            out.append(-(logp.exp() * logp).sum(1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def score(model: nn.Module, patches, strategy: str = "egl", params: str = "fc") -> torch.Tensor:
    """Informativeness of each patch under ``strategy`` ("egl" or "entropy"; larger = label first)."""
    if strategy == "egl":
        return expected_gradient_length(model, patches, params=params)
    if strategy == "entropy":
        return predictive_entropy(model, patches)
    raise ValueError(f"score needs strategy 'egl' or 'entropy' (random has no score), got {strategy!r}")


def egl_map(
    model: nn.Module,
    image: np.ndarray,
    fov: np.ndarray | None = None,
    stride: int = 16,
    params: str = "fc",
    patch_size: int = 48,
) -> np.ndarray:
    """EGL over a grid of patches of a whole image: where an expert's labels would teach the most.

    Patches of ``patch_size`` are laid on a grid with step ``stride`` (``patches.patchify``: tops
    and lefts ``0, stride, ...`` while the patch fits, centres inside ``fov``). Every pixel of the
    ``stride`` x ``stride`` cell around a grid centre gets that patch's Phi.

    Returns
    -------
    np.ndarray
        float32 HxW map; NaN where no grid patch was scored (outside the FOV and the border).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    if fov is not None and np.shape(fov) != image.shape[:2]:
        raise ValueError(f"fov must be an HxW mask of the image's size {image.shape[:2]}, got {np.shape(fov)}")
    rows, cols = patchify(image.shape[:2] if fov is None else np.asarray(fov, bool), patch_size, stride)
    h, w = image.shape[:2]
    out = np.full((h, w), np.nan, dtype=np.float32)
    if len(rows) == 0:
        return out
    phi = expected_gradient_length(model, _grid_patches(image, rows, cols, patch_size), params=params).numpy()
    lo = stride // 2
    for r, c, v in zip(rows, cols, phi):  # one slice assignment per grid cell (few hundred)
        out[max(r - lo, 0) : r - lo + stride, max(c - lo, 0) : c - lo + stride] = v
    return out


def _grid_patches(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """uint8 patches centred at (rows, cols) under the border rule (zero padding)."""
    lo = size // 2
    h, w = image.shape[:2]
    padded = np.zeros((h + size - 1, w + size - 1, 3), np.uint8)
    padded[lo : lo + h, lo : lo + w] = image
    win = np.lib.stride_tricks.sliding_window_view(padded, (size, size, 3))
    return win[np.asarray(rows), np.asarray(cols), 0]


# ----------------------------------------------------------------------------------------------
# algorithms
# ----------------------------------------------------------------------------------------------
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

    def frame(self):
        """The per-round records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.records)


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def _check_pool(pool) -> PatchPool:
    if not isinstance(pool, PatchPool):
        raise ValueError(
            f"pool must be a patches.PatchPool (positions over images), got {type(pool).__name__}; "
            "build one with patches.exudate_pool(records)"
        )
    return pool


class _Trainer:
    """Runs ``fit`` on a labelled index set and counts the SGD iterations it takes."""

    def __init__(self, model, pool, fit, batch_size, augment, epochs):
        self.model, self.pool, self.fit = model, pool, fit
        self.batch_size, self.augment, self.epochs = int(batch_size), augment, int(epochs)
        self.iterations = 0

    def __call__(self, idx: np.ndarray, epochs: int | None = None) -> None:
        idx = np.asarray(idx, np.int64)

        def batches(epoch, rng):
            for xb, yb in self.pool.iter_batches(idx, self.batch_size, rng, augment=self.augment):
                self.iterations += 1
                yield xb, yb

        self.fit(self.model, batches, epochs=self.epochs if epochs is None else int(epochs))


def _pick(model, pool, cand, k, strategy, params, rng) -> np.ndarray:
    """Top-``k`` of the candidate pool indices under ``strategy`` (random: a uniform draw)."""
    if k >= len(cand):
        return cand.copy()
    if strategy == "random":
        return rng.choice(cand, size=k, replace=False)
    s = score(model, pool.extract(cand), strategy, params).numpy()
    # stable top-k (ties broken by position in cand, so runs are reproducible)
    order = np.argsort(-s, kind="stable")[:k]
    return cand[order]


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
    _check_strategy(strategy)
    _check_pool(pool)
    k, rounds = int(k), int(rounds)
    if k <= 0:
        raise ValueError(f"k (patches added per round) must be >= 1, got {k}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if params not in _PARAMS:
        raise ValueError(f"params must be one of {_PARAMS}, got {params!r}")
    if strategy == "egl":
        _selected_modules(model, params)
    rng = np.random.default_rng(seed)
    cand = np.arange(len(pool)) if candidates is None else np.unique(np.asarray(candidates, np.int64))
    if cand.size and (cand.min() < 0 or cand.max() >= len(pool)):
        raise ValueError(f"candidates must be pool indices in 0..{len(pool) - 1}")
    if labelled_idx is None:
        n0 = int(initial_batches) * int(batch_size)
        if n0 > len(cand):
            raise ValueError(f"the pool has {len(cand)} candidates, fewer than the initial {n0}; lower initial_batches")
        l0 = rng.choice(cand, size=n0, replace=False)
    else:
        l0 = np.asarray(labelled_idx, np.int64).ravel()
        if l0.size and (l0.min() < 0 or l0.max() >= len(pool)):
            raise ValueError(f"labelled_idx must be pool indices in 0..{len(pool) - 1}")
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
        new = _pick(model, pool, free, k, strategy, params, rng)
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
    epochs_per_round: int = 1,
    params: str = "fc",
    augment: bool = True,
    record_interestingness: bool | None = None,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    seed: int = 0,
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
    strategy : {"egl", "random", "entropy"}
        How the next image and the patches are chosen (entropy: sum of predictive entropy; random:
        a uniform draw; the paper compares EGL with random only).
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
    _check_strategy(strategy)
    _check_pool(pool)
    n_img = pool.n_images
    mu, k, stride = int(mu), int(k), int(stride)
    if k <= 0:
        raise ValueError(f"k (patches added per round) must be >= 1, got {k}")
    if not 1 <= mu <= n_img:
        raise ValueError(f"mu (initial images) must lie in 1..{n_img} (the pool's images), got {mu}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rounds = n_img - mu if rounds is None else int(rounds)
    if not 0 <= rounds <= n_img - mu:
        raise ValueError(f"rounds must lie in 0..{n_img - mu} ({n_img} images, mu={mu}), got {rounds}")
    if fovs is not None and len(fovs) != n_img:
        raise ValueError(f"fovs must give one mask (or None) per pool image ({n_img}), got {len(fovs)}")
    if params not in _PARAMS:
        raise ValueError(f"params must be one of {_PARAMS}, got {params!r}")
    _selected_modules(model, params)
    record_int = (strategy == "egl") if record_interestingness is None else bool(record_interestingness)
    rng = np.random.default_rng(seed)
    img_of = pool.positions["image"].astype(np.int64)
    size = pool.size

    def grid(i: int) -> np.ndarray:
        h, w = pool.shapes[i]
        f = None if fovs is None else fovs[i]
        rows, cols = patchify((int(h), int(w)) if f is None else np.asarray(f, bool), size, stride)
        win = np.lib.stride_tricks.sliding_window_view(pool.images[i], (size, size, 3))
        return win[rows, cols, 0]

    chosen = list(rng.choice(n_img, size=mu, replace=False).astype(int))
    cand = np.flatnonzero(np.isin(img_of, chosen))
    n0 = min(int(initial_batches) * int(batch_size), len(cand))
    if n0 == 0:
        raise ValueError(f"the {mu} initial images have no pool patches; raise mu or check the pool")
    l0 = rng.choice(cand, size=n0, replace=False)
    free = np.setdiff1d(cand, l0)
    train = _Trainer(model, pool, fit, batch_size, augment, epochs_per_round)
    res = SelectionResult(strategy=strategy, selected=[l0], image_order=list(chosen))
    train(l0, epochs=1)
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
                    expected_gradient_length(model, grid(i), params)
                    if strategy == "egl" or (strategy == "random" and record_int)
                    else predictive_entropy(model, grid(i))
                )
                sig[i] = float(s.sum())
                if strategy == "egl" or strategy == "random":
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
            new = _pick(model, pool, free, k, strategy, params, rng)
            free = np.setdiff1d(free, new)
            labelled = np.concatenate([labelled, new])
            added.append(new)
            train(labelled)
        res.selected.append(np.concatenate(added) if added else np.zeros(0, np.int64))
        _record(res.records, model, eval_fn, round=r + 1, iterations=train.iterations,
                n_patches=len(labelled), n_images=len(chosen), image=best)
    res.interestingness = interest
    return res


def labels_to_reach(
    result: SelectionResult, target: float, metric: str = "f1"
) -> dict[str, float]:
    """Labels a run needed to first reach ``metric >= target``.

    Returns ``{"round", "iterations", "n_patches", "n_images"}`` of the first record that reached
    the target, NaN everywhere when no record did (the run never got there).
    """
    if not result.records or metric not in result.records[0]:
        have = sorted(result.records[0]) if result.records else []
        raise ValueError(f"the records have no {metric!r} column (have {have}); pass eval_fn returning it")
    for rec in result.records:
        if rec[metric] >= target:
            return {key: float(rec.get(key, np.nan)) for key in ("round", "iterations", "n_patches", "n_images")}
    return {key: float("nan") for key in ("round", "iterations", "n_patches", "n_images")}


def curves_on_grid(results: Sequence[SelectionResult], metric: str, grid: np.ndarray) -> np.ndarray:
    """Each run's ``metric`` against SGD iterations, linearly interpolated onto ``grid``.

    Returns a ``(len(results), len(grid))`` array, NaN outside a run's range of iterations (runs
    of one setting can differ by a few iterations, so they are compared on a common axis).
    """
    grid = np.asarray(grid, float)
    out = np.full((len(results), len(grid)), np.nan)
    for i, res in enumerate(results):
        if not res.records or metric not in res.records[0]:
            raise ValueError(f"run {i} has no {metric!r} in its records; pass eval_fn returning it")
        it = np.array([r["iterations"] for r in res.records], float)
        v = np.array([r[metric] for r in res.records], float)
        inside = (grid >= it[0]) & (grid <= it[-1])
        out[i, inside] = np.interp(grid[inside], it, v)
    return out


def mean_band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its Student-t confidence band at ``level`` (NaNs ignored per column).

    With a single run the band collapses onto the mean (no spread can be estimated).
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    v = np.atleast_2d(np.asarray(values, float))
    n = np.sum(np.isfinite(v), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(v, axis=0)
            sd = np.nanstd(v, axis=0, ddof=1) if v.shape[0] > 1 else np.zeros(v.shape[1])
        half = np.where(n > 1, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n), 0.0)
    return mean, mean - half, mean + half
