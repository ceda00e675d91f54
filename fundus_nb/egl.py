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
* Strategies: ``"egl"`` (the paper), ``"random"`` (the paper's baseline), ``"entropy"``
  (predictive-entropy uncertainty sampling) and ``"badge"`` (Ash et al., ICLR 2020: k-means++
  seeding on the exact last-layer gradient embeddings, the quantity closed-form EGL computes).
  Entropy and BADGE are baselines the paper does **not** show; random is the paper's own.
* Degenerate models: :func:`degeneracy` (one-class predictions, dead units) flags a collapsed model;
  the remedies :func:`select_images` offers are ``strategy="badge"`` (diversity),
  ``safeguard=True`` (a class-stratified top-k) and ``steps_per_round`` (a fixed number of SGD
  steps per update instead of epochs over a growing labelled set).
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
    "gradient_embedding",
    "kmeans_pp",
    "degeneracy",
    "degeneracy_from",
    "fit_until_plateau",
    "area_under_curve",
    "standardized_confounder_map",
]

STRATEGIES = ("egl", "random", "entropy", "badge")
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


def _pick(model, pool, cand, k, strategy, params, rng, safeguard=False) -> np.ndarray:
    """``k`` of the candidate pool indices under ``strategy`` (random: a uniform draw).

    ``safeguard``: class-stratified top-k: half of the picks are the top-scored candidates the
    model predicts positive and half the top-scored it predicts negative (labels stay hidden; when
    one predicted class has too few candidates, the other fills in).
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
    pred = _predict(model, x) >= 0.5
    pos, neg = order[pred[order]], order[~pred[order]]
    n_pos = min(len(pos), max(k // 2, k - len(neg)))
    return cand[np.concatenate([pos[:n_pos], neg[: k - n_pos]])]


def _predict(model: nn.Module, x) -> np.ndarray:
    xt = _as_input(x)
    dev = _device_of(model)
    out = []
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(xt), 512):
            out.append(torch.softmax(_forward(model, xt[start:start + 512].to(dev)), 1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _last_linear(model: nn.Module) -> nn.Module:
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer, so it has no last-layer gradient embedding")
    return linear[-1]


def _penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of the last nn.Linear (N, d), logits (N, C)) in eval mode, without gradients."""
    last, seen = _last_linear(model), []
    h = last.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with _eval_mode(model), torch.no_grad():
            logits = _forward(model, x)
    finally:
        h.remove()
    return seen[-1].flatten(1), logits


def gradient_embedding(model: nn.Module, patches, batch_size: int = 512) -> np.ndarray:
    """BADGE embeddings: the exact gradient of the loss w.r.t. the last layer's weights, per patch,
    at the model's own predicted label ``yhat``: ``(p - e_yhat) ⊗ a`` flattened (N, C*d), with ``a``
    the last layer's input. This is the per-sample outer product closed-form EGL uses."""
    x_all = _as_input(patches)
    _check_fits(model, x_all)
    dev = _device_of(model)
    out = []
    for start in range(0, len(x_all), int(batch_size)):
        a, logits = _penultimate(model, x_all[start:start + batch_size].to(dev))
        p = torch.softmax(logits, 1)
        g = p.clone()
        g[torch.arange(len(g)), p.argmax(1)] -= 1.0
        out.append((g[:, :, None] * a[:, None, :]).flatten(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def kmeans_pp(embeddings: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` rows chosen by k-means++ seeding (D^2 sampling), BADGE's selection step.

    The first row is the one of largest norm (BADGE's choice); each next row is drawn with
    probability proportional to its squared distance to the nearest row chosen so far. When every
    remaining distance is 0 (duplicates), the rest are drawn uniformly among the unchosen.
    """
    emb = np.asarray(embeddings, np.float64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of patches, got {type(k).__name__}")
    if not 1 <= k <= len(emb):
        raise ValueError(
            f"BADGE was asked for {k} patches but only {len(emb)} remain unlabelled; ask for at most "
            f"{len(emb)} (lower k) or add images to the pool"
        )
    chosen = [int(np.argmax((emb ** 2).sum(1)))]
    d2 = ((emb - emb[chosen[0]]) ** 2).sum(1)
    while len(chosen) < k:
        d2[chosen] = 0.0
        tot = d2.sum()
        if tot <= 0:
            rest = np.setdiff1d(np.arange(len(emb)), chosen)
            chosen.extend(rng.choice(rest, size=k - len(chosen), replace=False).tolist())
            break
        j = int(rng.choice(len(emb), p=d2 / tot))
        chosen.append(j)
        d2 = np.minimum(d2, ((emb - emb[j]) ** 2).sum(1))
    return np.asarray(chosen, np.int64)


def degeneracy(model: nn.Module, x, dead_threshold: float = 0.95) -> dict[str, float]:
    """Is the model degenerate on the probe patches ``x`` (e.g. the balanced validation patches)?

    Returns ``{"positive_rate", "one_class", "dead_units", "collapsed"}``: the share predicted
    positive (threshold 0.5), whether every probe gets the same class (1.0/0.0), the share of the
    last layer's input units that are 0 on every probe (dead ReLUs), and ``collapsed`` = 1.0 when
    the predictions are one-class or at least ``dead_threshold`` of the units are dead.
    """
    xt = _as_input(x)
    a, logits = _penultimate(model, xt.to(_device_of(model)))
    return degeneracy_from(a, logits, dead_threshold)


def degeneracy_from(a: torch.Tensor, logits: torch.Tensor, dead_threshold: float = 0.95) -> dict[str, float]:
    """:func:`degeneracy` from one forward pass already made: the last layer's input ``a`` (N, d)
    and the logits (N, C) (``_penultimate``), so an evaluation can reuse the pass."""
    pred = logits.argmax(1)
    rate = float((pred == 1).float().mean())
    one = float(rate in (0.0, 1.0))
    dead = float((a.abs().amax(0) == 0).float().mean())
    return {"positive_rate": rate, "one_class": one, "dead_units": dead,
            "collapsed": float(one == 1.0 or dead >= dead_threshold)}


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
    initial: str = "random",
    safeguard: bool = False,
    steps_per_round: int | None = None,
    initial_steps: int | None = None,
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
    record_int = (strategy in ("egl", "badge")) if record_interestingness is None else bool(record_interestingness)
    rng = np.random.default_rng(seed)
    img_of = pool.positions["image"].astype(np.int64)
    size = pool.size

    def grid(i: int) -> np.ndarray:
        h, w = pool.shapes[i]
        f = None if fovs is None else fovs[i]
        rows, cols = patchify((int(h), int(w)) if f is None else np.asarray(f, bool), size, stride)
        win = np.lib.stride_tricks.sliding_window_view(pool.images[i], (size, size, 3))
        return win[rows, cols, 0]

    if initial not in ("random", "stratified"):
        raise ValueError(f"initial must be 'random' or 'stratified', got {initial!r}")
    if steps_per_round is not None and (isinstance(steps_per_round, bool) or int(steps_per_round) < 1):
        raise ValueError(f"steps_per_round must be a positive number of SGD steps or None, got {steps_per_round!r}")
    if initial_steps is not None and (isinstance(initial_steps, bool) or int(initial_steps) < 1):
        raise ValueError(f"initial_steps must be a positive number of SGD steps or None, got {initial_steps!r}")
    chosen = list(rng.choice(n_img, size=mu, replace=False).astype(int))
    if initial_positive:
        with_pos = np.unique(img_of[pool.labels == 1])
        if len(with_pos) == 0:
            raise ValueError("no pool image has a positive patch, so no initial image can hold one; "
                             "check the pool's labels or pass initial_positive=False")
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
        l0 = np.concatenate([rng.choice(pos, size=n_pos, replace=False),
                             rng.choice(neg, size=min(len(neg), n0 - n_pos), replace=False)])
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
            new = _pick(model, pool, free, k, strategy, params, rng, safeguard)
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


def fit_until_plateau(
    model: nn.Module,
    fit: Callable[..., Any],
    batches: Callable[[int, np.random.Generator], Any],
    val_loss: Callable[[nn.Module], float],
    *,
    max_epochs: int = 30,
    patience: int = 2,
    seed: int = 0,
    min_epochs: int = 1,
) -> dict[str, Any]:
    """Train epoch by epoch until the validation loss stops improving; keep the best epoch.

    **Rule**: after each epoch ``val_loss(model)`` is measured; training stops when it has not
    fallen below its best value for ``patience`` epochs in a row, or after ``max_epochs`` (the
    paper's 30), and the weights of the best epoch are restored. No stop happens before
    ``min_epochs`` epochs: a LeNet from PyTorch's default initialisation sits at one class for its
    first tens of SGD steps, and on a small training set an epoch is a handful of steps, so the
    loss of the first epochs can rise while the model is still at chance (notebook 03 derives
    ``min_epochs`` from a minimum number of SGD steps). ``batches(epoch, rng)`` gets
    ``rng = default_rng([seed, epoch])`` as in the ``train.fit`` contract.

    Returns ``{"epochs", "best_epoch", "val_loss"}`` (the list of losses per epoch).
    """
    import copy

    if int(max_epochs) < 1 or int(patience) < 1 or int(min_epochs) < 1:
        raise ValueError(f"max_epochs, patience and min_epochs must be >= 1, got {max_epochs}, {patience} and {min_epochs}")
    losses, best, best_state, since = [], np.inf, None, 0
    for epoch in range(int(max_epochs)):
        fit(model, lambda _e, _r, ep=epoch: batches(ep, np.random.default_rng([seed, ep])), epochs=1)
        loss = float(val_loss(model))
        losses.append(loss)
        if loss < best:
            best, best_state, since = loss, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= int(patience) and epoch + 1 >= int(min_epochs):
                break
    model.load_state_dict(best_state)
    return {"epochs": len(losses), "best_epoch": int(np.argmin(losses)) + 1, "val_loss": losses}


def area_under_curve(x, y) -> float:
    """Normalised area under ``y`` against ``x`` (trapezoids / x range): the mean height of a
    learning curve over its span of labelled patches, so curves over the same span compare."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x[-1] <= x[0]:
        return float(y[-1]) if len(y) else float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def standardized_confounder_map(raw, std) -> np.ndarray | None:
    """The synthetic ``confounder_map`` of ``raw`` mapped into the geometry of its standardized
    record ``std`` (nearest pixel, through the same FOV crop box), or None without a map.

    ``preprocess.standardize_record`` maps it too (record version 3); this function returns that
    map, and maps the raw one itself for records standardized otherwise.
    """
    from . import preprocess

    km = getattr(raw, "confounder_map", None)
    if km is None:
        return None
    done = getattr(std, "confounder_map", None)
    if done is not None and done is not km and done.shape == std.image.shape[:2]:
        return done  # preprocess.standardize_record (version >= 3) maps it already
    top, left, side = preprocess.crop_box(raw.fov)
    size = std.image.shape[0]
    src = np.floor(top + (np.arange(size) + 0.5) * side / size).astype(int)
    srcc = np.floor(left + (np.arange(size) + 0.5) * side / size).astype(int)
    h, w = km.shape
    ok_r, ok_c = (src >= 0) & (src < h), (srcc >= 0) & (srcc < w)
    out = np.zeros((size, size), np.uint8)
    out[np.ix_(ok_r, ok_c)] = km[np.ix_(src[ok_r], srcc[ok_c])]
    out[~std.fov] = 0
    return out


def grid_kinds(pool: PatchPool, kind_maps: Sequence[np.ndarray | None], window: int) -> np.ndarray:
    """Confounder code of every pool position: the highest code of ``kind_maps[image]`` within the
    square window of half-width ``window`` px around the centre (the grid label rule's window), 0
    where none (or no map). For analysis only (false positives per kind, what a strategy picked)."""
    from scipy import ndimage

    out = np.zeros(len(pool), np.uint8)
    img = pool.positions["image"]
    for i, km in enumerate(kind_maps):
        sel = np.flatnonzero(img == i)
        if km is None or not len(sel):
            continue
        near = ndimage.maximum_filter(np.asarray(km, np.uint8), size=2 * int(window) + 1, mode="constant")
        out[sel] = near[pool.positions["row"][sel], pool.positions["col"][sel]]
    return out


@dataclass
class GridSet:
    """A (subsampled) natural-prevalence grid ready to score: uint8 patches, labels, confounder
    codes, inverse-probability weights, the full grid's size and exact prevalence."""

    x: np.ndarray
    y: np.ndarray
    kinds: np.ndarray
    weights: np.ndarray
    n_grid: int
    prevalence: float


def grid_set(records, kind_maps, *, stride: float = 16, window: float = 8, plain_cap: int | None = None,
             seed: int = 0, size: int = 48) -> GridSet:
    """``patches.grid_pool`` of ``records`` with every positive and every confounder negative kept and
    the plain background subsampled uniformly to ``plain_cap`` (None: all), each kept plain patch
    weighted ``n_plain / plain_cap`` (inverse inclusion probability), so weighted AP and
    false-positive rates estimate the full grid's."""
    from . import patches as _patches
    from . import preprocess

    pool = _patches.grid_pool(records, size=size, stride=stride, window=window)
    side = max(records[0].image.shape[:2])
    kinds = grid_kinds(pool, kind_maps, int(round(preprocess.scale_length(window, side, "window"))))
    strata = np.where(pool.labels == 1, -1, kinds.astype(int))
    rng = np.random.default_rng(seed)
    plain = np.flatnonzero(strata == 0)
    keep, w = np.ones(len(pool), bool), np.ones(len(pool))
    if plain_cap is not None and plain_cap < len(plain):
        drop = np.setdiff1d(plain, rng.choice(plain, size=int(plain_cap), replace=False))
        keep[drop] = False
        w[plain] = len(plain) / int(plain_cap)
    idx = np.flatnonzero(keep)
    return GridSet(pool.extract(idx), pool.labels[idx].astype(int), kinds[idx], w[idx], len(pool),
                   float(pool.labels.mean()))
