"""BADGE (Ash et al., ICLR 2020) and collapse detection: the last layer's gradient embedding.

* :func:`gradient_embedding` -- per patch, the exact gradient of the loss w.r.t. the last layer's
  weights at the model's own predicted label (the per-sample outer product closed-form EGL uses).
* :func:`kmeans_pp` -- k-means++ seeding (D^2 sampling) on those embeddings, BADGE's selection.
* :func:`degeneracy` -- is a model collapsed (one-class predictions, dead units)?
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import device_of, eval_mode
from .phi import as_input, check_fits, forward_logits

__all__ = ["penultimate", "gradient_embedding", "kmeans_pp", "degeneracy", "degeneracy_from"]


def _last_linear(model: nn.Module) -> nn.Module:
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer, so it has no last-layer gradient embedding; "
            "end the model with a Linear layer"
        )
    return linear[-1]


def penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``nn.Linear``'s input ``(N, d)`` and the logits ``(N, C)``, in eval mode without gradients.

    One forward pass serves both :func:`gradient_embedding` and :func:`degeneracy_from`; the model's
    train/eval mode is restored afterwards.
    """
    last, seen = _last_linear(model), []
    h = last.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with eval_mode(model), torch.no_grad():
            logits = forward_logits(model, x)
    finally:
        h.remove()
    return seen[-1].flatten(1), logits


def gradient_embedding(model: nn.Module, patches, batch_size: int = 512) -> np.ndarray:
    """BADGE embeddings: the exact gradient of the loss w.r.t. the last layer's weights, per patch,
    at the model's own predicted label ``yhat``: ``(p - e_yhat) ⊗ a`` flattened (N, C*d), with ``a``
    the last layer's input. This is the per-sample outer product closed-form EGL uses.
    """
    x_all = as_input(patches)
    check_fits(model, x_all)
    dev = device_of(model)
    out = []
    for start in range(0, len(x_all), int(batch_size)):
        a, logits = penultimate(model, x_all[start : start + batch_size].to(dev))
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
        raise TypeError(f"k must be an integer number of patches, got {type(k).__name__}; pass e.g. k=32")
    if not 1 <= k <= len(emb):
        raise ValueError(
            f"BADGE was asked for {k} patches but only {len(emb)} remain unlabelled; ask for at most "
            f"{len(emb)} (lower k) or add images to the pool"
        )
    chosen = [int(np.argmax((emb**2).sum(1)))]
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
    """Whether the model is degenerate on the probe patches ``x`` (e.g. the balanced validation patches).

    Returns ``{"positive_rate", "one_class", "dead_units", "collapsed"}``: the share predicted
    positive (threshold 0.5), whether every probe gets the same class (1.0/0.0), the share of the
    last layer's input units that are 0 on every probe (dead ReLUs), and ``collapsed`` = 1.0 when
    the predictions are one-class or at least ``dead_threshold`` of the units are dead.
    """
    xt = as_input(x)
    a, logits = penultimate(model, xt.to(device_of(model)))
    return degeneracy_from(a, logits, dead_threshold)


def degeneracy_from(a: torch.Tensor, logits: torch.Tensor, dead_threshold: float = 0.95) -> dict[str, float]:
    """:func:`degeneracy` from one forward pass already made: the last layer's input ``a`` (N, d)
    and the logits (N, C) (:func:`penultimate`), so an evaluation can reuse the pass.
    """
    pred = logits.argmax(1)
    rate = float((pred == 1).float().mean())
    one = float(rate in (0.0, 1.0))
    dead = float((a.abs().amax(0) == 0).float().mean())
    return {
        "positive_rate": rate,
        "one_class": one,
        "dead_units": dead,
        "collapsed": float(one == 1.0 or dead >= dead_threshold),
    }
