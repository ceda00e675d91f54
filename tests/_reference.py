"""Independent references shared by several test files (brute-force loops, hand-built records).

Each helper is written the plain way (a Python loop, a slice) so that the fast code under test can
be compared against it. Import them with ``from _reference import ...`` (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn


def brute_patch(image: np.ndarray, r: int, c: int, s: int) -> np.ndarray:
    """The ``s`` x ``s`` patch centred at ``(r, c)`` under the border rule, pixel by pixel.

    Rows ``r - s//2 .. r - s//2 + s - 1`` (same for columns); pixels outside the image are 0.
    """
    h, w = image.shape[:2]
    out = np.zeros((s, s) + image.shape[2:], image.dtype)
    for i in range(s):
        for j in range(s):
            rr, cc = r - s // 2 + i, c - s // 2 + j
            if 0 <= rr < h and 0 <= cc < w:
                out[i, j] = image[rr, cc]
    return out


def sliced_patch(image: np.ndarray, r: int, c: int, s: int) -> np.ndarray:
    """Second reference for the border rule: zero-pad by ``s`` on every side, then plain slicing."""
    pad = np.zeros((image.shape[0] + 2 * s, image.shape[1] + 2 * s) + image.shape[2:], image.dtype)
    pad[s : s + image.shape[0], s : s + image.shape[1]] = image
    top, left = r - s // 2 + s, c - s // 2 + s
    return pad[top : top + s, left : left + s]


def naive_egl(model: nn.Module, x: torch.Tensor, params: str) -> np.ndarray:
    """EGL Phi by brute force: one backward per sample and per class, norms summed over parameters.

    ``params="fc"``: the weights and biases of every ``nn.Linear``; ``"all"``: every parameter.
    The model is put in eval mode (samples independent), as ``egl.expected_gradient_length`` does.
    """
    model.eval()
    if params == "fc":
        ps = [p for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False)]
    else:
        ps = list(model.parameters())
    out = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        with torch.no_grad():
            prob = torch.softmax(model(xi), 1)[0]
        phi = 0.0
        for j in range(prob.numel()):
            loss = nn.functional.cross_entropy(model(xi), torch.tensor([j]))
            grads = torch.autograd.grad(loss, ps)
            phi += float(prob[j]) * float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        out.append(phi)
    return np.array(out)


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """HxW bool disc of radius ``r`` centred at ``(cy, cx)``."""
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def hemorrhage_record(i: int, lesion: bool, size: int = 48, seed: int = 0, centres_only: bool = False):
    """A small fundus-like record: noisy orange disc (FOV) with two dark hemorrhage blobs when ``lesion``."""
    from fundus_nb.data import FundusImage

    rng = np.random.default_rng([seed, i])
    fov = disc(size, size, size / 2 - 0.5, size / 2 - 0.5, size / 2 - 1)
    img = np.zeros((size, size, 3), np.uint8)
    img[fov] = (rng.integers(150, 200), 90, 40)
    img = np.clip(img + rng.integers(0, 20, img.shape) * fov[..., None], 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    centres = np.zeros((0, 2))
    if lesion:
        centres = np.array([[size * 0.35, size * 0.4], [size * 0.6, size * 0.62]])
        for cy, cx in centres:
            mask |= disc(size, size, cy, cx, 2.5)
        img[mask] = (60, 20, 10)
    return FundusImage(id=f"im{i}", patient_id=f"p{i}", image_=img, hemorrhage_mask=None if centres_only else mask,
                       hemorrhage_centers=centres, fov=fov, source="test")


@functools.cache
def spread_sesnet(seed: int = 0) -> nn.Module:
    """An untrained SeSNet in eval mode whose probabilities spread over (0, 1) instead of ~0.5 everywhere.

    One shared instance per seed (so brute-force maps are computed once per session); do not train it.
    """
    from fundus_nb.models import SeSNet

    torch.manual_seed(seed)
    m = SeSNet()
    with torch.no_grad():
        m.fc2.bias.copy_(torch.tensor([0.0, -1.0]))
        m.fc2.weight.mul_(20)
    return m.eval()


_MAPS: dict = {}


def brute_probability_map(model: nn.Module, image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """p(positive) of the patch centred on every pixel, one sliced patch each (0 outside ``fov``).

    Patches by :func:`sliced_patch` (border rule), then ``softmax(model(x / 255))[:, 1]`` in eval mode.
    Cached per (model, image, fov) for the session: the model must not change between calls.
    """
    key = (id(model), image.tobytes(), None if fov is None else np.asarray(fov).tobytes())
    if key not in _MAPS:
        _MAPS[key] = _brute_probability_map(model, image, fov)
    return _MAPS[key]


def _brute_probability_map(model: nn.Module, image: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    s = model.patch_size
    h, w = image.shape[:2]
    pats = np.stack([sliced_patch(image, r, c, s) for r in range(h) for c in range(w)])
    x = torch.from_numpy(pats.astype(np.float32) / np.float32(255)).permute(0, 3, 1, 2)
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(model(x[i : i + 1024]), 1)[:, 1] for i in range(0, len(x), 1024)])
    p = p.numpy().reshape(h, w)
    return p if fov is None else np.where(fov, p, 0.0)


def assert_one_sentence(exc: BaseException) -> str:
    """The package's error style: one sentence saying what is wrong, then after '; ' how to fix it (no final period)."""
    text = str(exc)
    assert "; " in text and not text.endswith(".") and "\n" not in text, text
    return text
