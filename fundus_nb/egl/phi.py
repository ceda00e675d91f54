r"""Expected gradient length and the other per-patch scores: how informative a patch is.

The EGL score of a sample ``x`` is the expected length of the gradient the model would receive if
``x`` were labelled, taken over the model's own belief about the label:

.. math:: \Phi(x) = \sum_j p(j \mid x)\, \lVert \nabla_\theta J(x, y=j) \rVert_2

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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical
from torch.func import functional_call, grad, vmap

from ..models import device_of, eval_mode
from ..patches import patchify, to_tensor, windows

__all__ = [
    "PARAMS",
    "as_input",
    "check_fits",
    "forward_logits",
    "selected_modules",
    "expected_gradient_length",
    "predictive_entropy",
    "score",
    "egl_map",
    "check_params",
]

PARAMS = ("fc", "all")
_METHODS = ("auto", "hooks", "func")


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def as_input(patches: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Model input ``(N, 3, h, w)`` float32 from uint8 ``(N, h, w, 3)`` patches or float NCHW input.

    Parameters
    ----------
    patches : np.ndarray or torch.Tensor
        uint8 patches (converted by :func:`fundus_nb.patches.to_tensor`, x / 255) or float
        ``(N, 3, h, w)`` model input (used as it is, detached).

    Returns
    -------
    torch.Tensor
        float32 ``(N, 3, h, w)``.
    """
    if not isinstance(patches, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"patches must be a numpy array or a torch tensor, got {type(patches).__name__}; "
            "cut them with patches.extract or patches.windows"
        )
    if isinstance(patches, np.ndarray) and patches.dtype == np.uint8:
        return to_tensor(patches)
    if isinstance(patches, torch.Tensor) and patches.is_floating_point() and patches.ndim == 4:
        return patches.detach()
    if isinstance(patches, np.ndarray) and np.issubdtype(patches.dtype, np.floating) and patches.ndim == 4:
        return torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    raise ValueError(
        f"patches must be uint8 (N, h, w, 3) or float model input (N, 3, h, w), got {patches.dtype} "
        f"{tuple(patches.shape)}; cut them with patches.extract or convert them with patches.to_tensor"
    )


def check_fits(model: nn.Module, x: torch.Tensor) -> None:
    """Raise a ValueError when the patches ``x`` (N, 3, h, w) do not fit ``model``'s input size."""
    want = getattr(model, "patch_size", None) or getattr(model, "input_size", None)
    if want is not None:
        want = int(want if np.ndim(want) == 0 else want[-1])
        if x.shape[-1] != want or x.shape[-2] != want:
            raise ValueError(
                f"{type(model).__name__} takes {want}x{want} patches, got {x.shape[-2]}x{x.shape[-1]}; "
                f"cut patches of size {want}"
            )
    if x.shape[1] != 3:
        raise ValueError(
            f"patches must have 3 colour channels (N, 3, h, w), got shape {tuple(x.shape)}; pass RGB patches"
        )


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be ``(N, n_classes)`` logits (ValueError naming the fix otherwise)."""
    try:
        out = model(x)
    except RuntimeError as err:
        raise ValueError(
            f"{type(model).__name__} cannot take patches of shape {tuple(x.shape[1:])} ({err}); "
            "cut patches of the size the model was built for"
        ) from err
    if out.ndim != 2:
        raise ValueError(
            f"the model must return (N, n_classes) logits, got shape {tuple(out.shape)}; "
            "end the model with a Linear layer over the classes"
        )
    return out


# ----------------------------------------------------------------------------------------------
# expected gradient length
# ----------------------------------------------------------------------------------------------
def check_params(params: str) -> None:
    """Raise a ValueError unless ``params`` is one of :data:`PARAMS`."""
    if params not in PARAMS:
        raise ValueError(f"params must be one of {PARAMS}, got {params!r}; pass 'fc' (the paper) or 'all'")


def selected_modules(model: nn.Module, params: str) -> list[nn.Module]:
    """The layers whose parameters the EGL gradient covers: every ``nn.Linear`` ("fc") or every
    module owning parameters ("all"); ValueError when "fc" finds no ``nn.Linear``.
    """
    check_params(params)
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
            logits = forward_logits(model, x)
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
        grads = torch.autograd.grad(logits, outs, grad_outputs=g_logits, retain_graph=j < c - 1, allow_unused=True)
        for (m, a, _), g in zip(record, grads, strict=True):
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
        logits = forward_logits(model, x)
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
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}; 'auto' picks the fastest exact one")
    mods = selected_modules(model, params)
    x_all = as_input(patches)
    check_fits(model, x_all)
    bs = int(batch_size or (512 if params == "fc" else 64))
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}; pass a positive number of patches per chunk")
    hooks_ok = _hooks_supported(mods)
    if method == "hooks" and not hooks_ok:
        raise ValueError("method='hooks' handles Linear and plain Conv2d layers only, so use method='func'")
    use_hooks = method == "hooks" or (method == "auto" and hooks_ok)
    dev = device_of(model)
    out = []
    with eval_mode(model):
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
    """Entropy ``-sum_j p(j|x) log p(j|x)`` (nats) of the model's prediction for every patch.

    Computed by ``torch.distributions.Categorical(logits=...).entropy()``; returns CPU float32 ``(N,)``.
    """
    x_all = as_input(patches)
    check_fits(model, x_all)
    dev = device_of(model)
    out = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x_all), int(batch_size)):
            logits = forward_logits(model, x_all[start : start + batch_size].to(dev))
            out.append(Categorical(logits=logits).entropy().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def score(model: nn.Module, patches, strategy: str = "egl", params: str = "fc") -> torch.Tensor:
    """Informativeness of each patch under ``strategy`` ("egl" or "entropy"; larger = label first)."""
    if strategy == "egl":
        return expected_gradient_length(model, patches, params=params)
    if strategy == "entropy":
        return predictive_entropy(model, patches)
    raise ValueError(f"score needs strategy 'egl' or 'entropy', got {strategy!r}; random and badge have no score")


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
        raise ValueError(
            f"image must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}; pass a record's image"
        )
    if fov is not None and np.shape(fov) != image.shape[:2]:
        raise ValueError(
            f"fov must be an HxW mask of the image's size {image.shape[:2]}, got {np.shape(fov)}; "
            "pass the record's own fov (or None)"
        )
    rows, cols = patchify(image.shape[:2] if fov is None else np.asarray(fov, bool), patch_size, stride)
    h, w = image.shape[:2]
    out = np.full((h, w), np.nan, dtype=np.float32)
    if len(rows) == 0:
        return out
    phi = expected_gradient_length(model, windows(image, rows, cols, patch_size), params=params).numpy()
    lo = stride // 2
    for r, c, v in zip(rows, cols, phi, strict=True):  # one slice assignment per grid cell (few hundred)
        out[max(r - lo, 0) : r - lo + stride, max(c - lo, 0) : c - lo + stride] = v
    return out
