"""The two CNNs of the series and exact whole-image probability maps.

- :class:`LeNet` — the exudate patch classifier of the EGL paper (48x48x3 input).
- :class:`SeSNet` — the hemorrhage patch classifier of the SeS paper (41x41x3 input).
- :func:`predict_proba` — p(positive) for a batch of patches.
- :func:`dense_probability_map` — p(positive) for the patch centred on *every* pixel of an image,
  computed on the whole image at once (max-pooling of stride k turned into stride 1 with the
  following layers dilated by k, the first fully connected layer turned into a dilated
  convolution), exactly equal to classifying each patch on its own.
- :func:`dense_probability_maps` / :func:`iter_dense_probability_maps` — the maps of many images,
  in a plain loop here or spread over a Dask distributed client (weights sent once per call).

Both models share one layout that the dense map relies on: ``model.features`` (an
``nn.Sequential`` of ``Conv2d`` with stride 1 and no padding, ``ReLU`` and ``MaxPool2d`` with
stride == kernel) followed by ``model.classifier`` (``Flatten``, ``Linear``, ``ReLU``,
``Linear`` -> 2 logits; the softmax lives in the loss), and ``model.patch_size``.

Model input scale (docs/CONTRACTS.md): ``float32 (N, 3, s, s) = uint8 / 255``.

Border rule (docs/CONTRACTS.md): the image is zero-padded (black, 0.0 in model scale); the patch of
size ``s`` centred at ``(r, c)`` covers rows ``r - s//2 .. r - s//2 + s - 1`` and the same columns.
For odd ``s`` this is symmetric; for even ``s`` (LeNet's 48) the centre pixel is the lower-right of
the middle four.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._io import default_device
from .patches import record_fov, to_tensor

__all__ = [
    "LeNet",
    "SeSNet",
    "fully_connected_layers",
    "fully_connected_parameters",
    "predict_proba",
    "dense_probability_map",
    "dense_probability_maps",
    "iter_dense_probability_maps",
    "receptive_extent",
    "output_stride",
    "image_to_tensor",
    "eval_mode",
    "device_of",
    "layer_table",
]


class _PatchCNN(nn.Module):
    """Common checks of the patch classifiers: input must be (N, 3, s, s) or (3, s, s)."""

    patch_size: int = 0

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.patch_size
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a torch.Tensor of shape (N, 3, {s}, {s}); got "
                f"{type(x).__name__} (use patches.to_tensor or predict_proba for numpy input)"
            )
        if x.ndim < 3 or tuple(x.shape[-3:]) != (3, s, s):
            raise ValueError(
                f"{type(self).__name__} expects patches of shape (N, 3, {s}, {s}) in model scale "
                f"(x/255); got shape {tuple(x.shape)}; extract {s}x{s} RGB patches, channels first"
            )
        if not torch.is_floating_point(x):
            raise ValueError(
                f"{type(self).__name__} expects float patches (uint8/255); got dtype {x.dtype}; "
                "convert with patches.to_tensor"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        """Logits (N, 2) for patches (N, 3, s, s) in model scale."""
        self._check_input(x)
        return self.classifier(self.features(x))

    def fc_layers(self) -> list[nn.Linear]:
        """The fully connected layers (input side first) — EGL's default gradient parameters."""
        return fully_connected_layers(self)


class LeNet(_PatchCNN):
    """Classic LeNet for 48x48x3 exudate patches (EGL paper; layer sizes are our choice).

    ``48x48x3 -> conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> FC 500 + ReLU -> FC 2``.
    Feature sizes: 48 -> 44 -> 22 -> 18 -> 9, so the first FC sees 50*9*9 = 4050 values.
    The paper's LeNet has no ReLU after the convolutions (Caffe's LeNet); we follow that. Outputs
    are logits; the softmax lives in the cross-entropy loss. PyTorch's default initialisation.

    Attributes
    ----------
    patch_size : int
        48.
    fc1, fc2 : nn.Linear
        The fully connected layers (also in ``classifier``), found by EGL.
    """

    patch_size = 48

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(50 * 9 * 9, 500)
        self.fc2 = nn.Linear(500, 2)
        self.classifier = nn.Sequential(nn.Flatten(), self.fc1, nn.ReLU(), self.fc2)


class SeSNet(_PatchCNN):
    """The hemorrhage patch CNN of van Grinsven et al. (2016), 41x41x3 input.

    Five 3x3 convolutions of 32 filters, each followed by ReLU; 2x2 max-pooling with stride 2
    after the first two; FC 1024 + ReLU; FC 2 (logits). For 41x41 input:
    41 -> 39 -> 19 -> 17 -> 8 -> 6 -> 4 -> 2, so the first FC sees 2*2*32 = 128 values.
    (Flooring in the two poolings means the last 3 rows/columns of a 41x41 patch never reach the
    output; that is a property of the paper's architecture and the dense map reproduces it.)

    Choices the paper leaves open (documented): no dropout; ReLU after FC 1024; zero biases with
    ``init="paper"``; the weight decay value is a parameter of :func:`fundus_nb.train.fit`.

    Parameters
    ----------
    init : {"default", "paper"}
        ``"paper"``: every weight drawn from a normal with variance 0.05 (std sqrt(0.05)), biases 0,
        as the paper states. ``"default"``: PyTorch's default (Kaiming-uniform) initialisation,
        which trains more reliably from scratch at our learning rates.
    """

    patch_size = 41

    def __init__(self, init: str = "default") -> None:
        super().__init__()
        if init not in ("default", "paper"):
            raise ValueError(f"init must be 'default' or 'paper'; got {init!r}")
        self.init = init
        c = 32
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3), nn.ReLU(),
            nn.Conv2d(c, c, 3), nn.ReLU(),
            nn.Conv2d(c, c, 3), nn.ReLU(),
        )  # fmt: skip
        self.fc1 = nn.Linear(c * 2 * 2, 1024)
        self.fc2 = nn.Linear(1024, 2)
        self.classifier = nn.Sequential(nn.Flatten(), self.fc1, nn.ReLU(), self.fc2)
        if init == "paper":
            std = math.sqrt(0.05)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.normal_(m.weight, mean=0.0, std=std)
                    nn.init.zeros_(m.bias)


def layer_table(model: nn.Module) -> list[dict]:
    """The layers of ``model.features`` then ``model.classifier`` as rows for a table.

    Each row: ``layer`` (its repr, e.g. ``Conv2d(3, 20, kernel_size=(5, 5), stride=(1, 1))``),
    ``output`` (the output shape for one ``patch_size`` patch, batch dimension left out) and
    ``parameters`` (learned numbers in that layer). ``pandas.DataFrame(layer_table(m))`` shows it.
    """
    x = torch.zeros(1, 3, model.patch_size, model.patch_size, device=device_of(model))
    rows = []
    with eval_mode(model), torch.no_grad():
        for layer in itertools.chain(model.features, model.classifier):
            x = layer(x)
            rows.append({"layer": repr(layer), "output": tuple(x.shape[1:]),
                         "parameters": sum(p.numel() for p in layer.parameters())})
    return rows


def fully_connected_layers(model: nn.Module) -> list[nn.Linear]:
    """All ``nn.Linear`` modules of ``model`` in registration order (input side first).

    Raises
    ------
    ValueError
        If the model has no ``nn.Linear`` layer.
    """
    seen: set[int] = set()
    layers = []
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m) not in seen:
            seen.add(id(m))
            layers.append(m)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no fully connected (nn.Linear) layers; use params='all' "
            "or a model with an FC head such as LeNet or SeSNet"
        )
    return layers


def fully_connected_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights and biases of every ``nn.Linear`` layer of ``model`` (clear error if none)."""
    params: list[nn.Parameter] = []
    for layer in fully_connected_layers(model):
        params.extend(p for p in layer.parameters(recurse=False))
    return params


def device_of(model: nn.Module) -> torch.device:
    """The device of a model: that of its first parameter (else first buffer), CPU when it has neither."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass the network itself")
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: ``model`` in eval mode inside the block, every submodule's mode restored after.

    Each submodule gets back its own ``training`` flag (a model whose parts were in different
    modes is left exactly as it was), also when the block raises.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass the network itself")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def predict_proba(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """p(positive class) for a batch of patches, in eval mode and without gradients.

    Parameters
    ----------
    model : nn.Module
        A patch classifier returning 2 logits (LeNet, SeSNet).
    x : Tensor or ndarray
        Float patches (N, 3, s, s) in model scale, or uint8 patches (N, s, s, 3), which are
        converted as ``patches.to_tensor`` does (x / 255).
    batch_size : int
        Patches per forward pass.
    device : torch.device or str, optional
        Where to compute; default the model's own device (the model is not moved).

    Returns
    -------
    ndarray
        float32 (N,) probabilities of the positive class (softmax of the logits, index 1).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(
                    f"uint8 patches must have shape (N, s, s, 3); got {x.shape}"
                )
            x = to_tensor(x)
        else:
            x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"patches must be a batch of shape (N, 3, s, s); got shape {tuple(x.shape)}")
    dev = torch.device(device) if device is not None else device_of(model)
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(dev, dtype=torch.float32)
            out.append(torch.softmax(model(xb), dim=1)[:, 1].cpu())
    if not out:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# Dense probability maps
# ----------------------------------------------------------------------------------------------


def _dense_plan(model: nn.Module) -> _DensePlan:
    """Translate ``model.features`` + ``model.classifier`` into whole-image operations.

    The features become ``("conv", weight, bias, dilation)``, ``("relu",)`` and
    ``("pool", k, dilation)`` operations on the whole (padded) image: every max-pooling of
    stride ``k`` is applied with stride 1 and multiplies the dilation of everything after it by
    ``k``. The first fully connected layer becomes a ``h x h`` convolution with the accumulated
    dilation, evaluated as one matrix product over gathered, shifted feature slices; later fully
    connected layers are per-pixel matrix products; the last (2 logits) is reduced to the logit
    difference, since ``softmax(z)[1] == sigmoid(z1 - z0)``.
    """
    for name in ("features", "classifier", "patch_size"):
        if not hasattr(model, name):
            raise TypeError(
                f"dense_probability_map needs a model with `features`, `classifier` and "
                f"`patch_size` (like LeNet, SeSNet); {type(model).__name__} lacks `{name}`"
            )
    s = int(model.patch_size)
    with torch.no_grad():
        dev = device_of(model)
        feat_shape = tuple(model.features(torch.zeros(1, 3, s, s, device=dev)).shape[1:])
    plan = _DensePlan()
    d = 1
    extent = 1
    flattened = False
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            if m.stride != (1, 1) or m.padding not in ((0, 0), "valid") or m.dilation != (1, 1) \
                    or m.groups != 1 or m.kernel_size[0] != m.kernel_size[1]:
                raise NotImplementedError(
                    "dense_probability_map supports Conv2d with stride 1, no padding, no dilation, "
                    f"square kernels and groups=1; got {m}"
                )
            k = m.kernel_size[0]
            plan.features.append(("conv", m.weight.detach(), _bias(m), d))
            extent += (k - 1) * d
            plan.feature_channels = max(plan.feature_channels, m.out_channels)
        elif isinstance(m, nn.MaxPool2d):
            k = _pair1(m.kernel_size)
            st = _pair1(m.stride if m.stride is not None else m.kernel_size)
            if st != k or _pair1(m.padding) != 0 or _pair1(m.dilation) != 1 or m.ceil_mode:
                raise NotImplementedError(
                    f"dense_probability_map supports MaxPool2d with stride == kernel; got {m}"
                )
            plan.features.append(("pool", k, d))
            extent += (k - 1) * d
            d *= k
        elif isinstance(m, nn.ReLU):
            plan.features.append(("relu",))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue  # identity in eval mode
        else:
            raise NotImplementedError(
                f"dense_probability_map does not know how to make {type(m).__name__} dense"
            )
    linears: list[nn.Linear] = []
    relu_after: list[bool] = []
    for m in model.classifier:
        if isinstance(m, nn.Flatten):
            if linears:
                raise NotImplementedError("nn.Flatten must come before the Linear layers")
            flattened = True
        elif isinstance(m, nn.Linear):
            if not flattened:
                raise NotImplementedError("the first Linear layer must follow an nn.Flatten")
            linears.append(m)
            relu_after.append(False)
        elif isinstance(m, nn.ReLU) and linears:
            relu_after[-1] = True
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise NotImplementedError(
                f"dense_probability_map does not know how to make {type(m).__name__} dense "
                "in the classifier"
            )
    if not linears or linears[-1].out_features != 2 or relu_after[-1]:
        raise NotImplementedError("the model must end in a Linear layer with 2 outputs (logits)")
    c, h, w = feat_shape
    if h != w:
        raise NotImplementedError("dense_probability_map needs square feature maps")
    plan.fc_kernel, plan.fc_in_channels, plan.fc_dilation = h, c, d
    extent += (h - 1) * d
    for i, m in enumerate(linears):
        weight = m.weight.detach()
        bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_features)
        if i == len(linears) - 1:
            weight = (weight[1] - weight[0])[None, :]
            bias = (bias[1] - bias[0])[None]
        plan.head.append((weight.t().contiguous(), bias, relu_after[i]))
    plan.extent = extent
    plan.stride = d
    return plan


class _DensePlan:
    """Whole-image form of a patch CNN (see :func:`_dense_plan`)."""

    def __init__(self) -> None:
        self.features: list[tuple] = []
        self.head: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
        self.fc_kernel = self.fc_in_channels = self.fc_dilation = 0
        self.feature_channels = 3
        self.stride = 1
        self.extent = 1

    def to(self, device: torch.device) -> _DensePlan:
        """A copy with every tensor on ``device``."""
        out = _DensePlan()
        out.__dict__.update(self.__dict__)
        out.features = [
            tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in op)
            for op in self.features
        ]
        out.head = [(w.to(device), b.to(device), r) for w, b, r in self.head]
        return out

    def run_features(self, x: torch.Tensor, natural: bool = False) -> torch.Tensor:
        """Feature maps (N, C, h, w) of padded tiles (N, 3, h + extent_f - 1, ...).

        ``natural=False`` (exact dense map): poolings of stride 1 with the layers after them
        dilated. A 2-D max-pool of stride 1 is computed as shifted element-wise maxima (rows, then
        columns), several times faster on CPU than ``F.max_pool2d`` with a dilation.
        ``natural=True``: the network as trained (real strides), i.e. the map at its natural
        output stride (every ``stride``-th pixel).
        """
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
        for op in self.features:
            kind = op[0]
            if kind == "conv":
                _, w, b, d = op
                w = w.contiguous(memory_format=torch.channels_last)
                x = F.conv2d(x, w, b, dilation=1 if natural else d)
            elif kind == "relu":
                x = x.relu_()
            elif natural:
                x = F.max_pool2d(x, kernel_size=op[1])
            else:
                _, k, d = op
                n_r = x.shape[-2] - (k - 1) * d
                y = x[..., :n_r, :]
                for t in range(1, k):
                    y = torch.maximum(y, x[..., t * d : t * d + n_r, :])
                n_c = y.shape[-1] - (k - 1) * d
                x = y[..., :n_c]
                for t in range(1, k):
                    x = torch.maximum(x, y[..., t * d : t * d + n_c])
        return x

    def gather(self, feat: torch.Tensor, rows: int, cols: int, d: int) -> torch.Tensor:
        """(rows * cols, C * h * h) contiguous inputs of the first FC layer, in its flattened
        (c, i, j) order, one row per pixel.
        """
        h = self.fc_kernel
        c = feat.shape[0]
        hwc = feat.permute(1, 2, 0)  # (rows', cols', C) view
        g = torch.stack(
            [hwc[i * d : i * d + rows, j * d : j * d + cols] for i in range(h) for j in range(h)],
            dim=-1,
        )  # (rows, cols, C, h*h), contiguous
        return g.reshape(rows * cols, c * h * h)

    def run_head(self, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """p(positive) (N,) from FC inputs (N, C * h * h), in cache-sized chunks of pixels.

        Chunks of a few hundred pixels keep the wide hidden layer (1024 for SeSNet) in cache, so
        its ReLU and the last layer cost almost nothing next to the first FC product.
        """
        n = x.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=x.device)
        for a in range(0, n, chunk):
            z = x[a : a + chunk]
            for w_t, b, relu in self.head:
                z = torch.addmm(b, z, w_t)
                if relu:
                    z.relu_()
            out[a : a + chunk] = z[:, 0]
        return torch.sigmoid_(out)


def _bias(m: nn.Module) -> torch.Tensor | None:
    return None if m.bias is None else m.bias.detach()


def _pair1(v) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise NotImplementedError(f"non-square pooling {v} is not supported")
        return int(v[0])
    return int(v)


def receptive_extent(model: nn.Module) -> int:
    """Rows (and columns) of a patch, counted from its top-left, that influence the output.

    48 for LeNet (the whole patch), 38 for SeSNet (flooring in its poolings drops 3).
    """
    return _dense_plan(model).extent


def image_to_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """An image in model scale as float32 (3, H, W).

    uint8 HxWx3 is converted by ``patches.to_tensor`` (x / 255, channels first), as patches are;
    a float (3, H, W) tensor or array is taken as already in model scale.
    """
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f"a uint8 image must be HxWx3 RGB; got shape {image.shape}; convert grey "
                    "or RGBA images to RGB first"
                )
            return to_tensor(image[None])[0]
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a numpy array or torch.Tensor; got {type(image).__name__}")
    if image.dtype == torch.uint8:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a uint8 image must be HxWx3 RGB; got shape {tuple(image.shape)}")
        return to_tensor(image[None])[0]
    if not torch.is_floating_point(image):
        raise ValueError(f"image must be uint8 HxWx3 or float (3, H, W); got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"a float image must be (3, H, W) in model scale (x/255, channels first); got shape "
            f"{tuple(image.shape)}; for an HxWx3 uint8 photo pass it as uint8"
        )
    return image.float()


def output_stride(model: nn.Module) -> int:
    """The network's natural output stride: the product of its pooling strides (4 for SeSNet
    and LeNet). ``dense_probability_map(..., stride=output_stride(model))`` is the network run as
    trained over the whole image, 16x cheaper than the exact full-resolution map.
    """
    return _dense_plan(model).stride


def dense_probability_map(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    fov: np.ndarray | torch.Tensor | None = None,
    *,
    stride: int = 1,
    device: torch.device | str | None = None,
    max_tile_mb: float = 128.0,
) -> np.ndarray:
    """p(positive) of the patch centred on every pixel, computed on the whole image at once.

    Exact: ``map[r, c] == softmax(model(patch(r, c)))[1]`` (to float32 rounding, ~1e-6), where
    ``patch(r, c)`` is the ``s x s`` patch of the zero-padded image covering rows
    ``r - s//2 .. r - s//2 + s - 1`` (docs/CONTRACTS.md border rule). Every max-pooling of
    stride ``k`` becomes stride 1 with the layers after it dilated by ``k`` (filter rarefaction),
    and the first fully connected layer becomes a dilated ``h x h`` convolution, evaluated as
    one matrix product over gathered, shifted feature slices in cache-sized chunks of pixels.
    With a ``fov`` the fully connected part (about 80 % of SeSNet's work) runs on the FOV pixels
    only. The work is done in horizontal tiles with their receptive-field halo so that no
    intermediate exceeds about ``max_tile_mb`` MB.

    Parameters
    ----------
    model : LeNet or SeSNet (or a model with the same layout)
    image : ndarray or Tensor
        uint8 HxWx3, converted as ``patches.to_tensor`` converts patches (x / 255; implemented
        here by :func:`image_to_tensor`), or float (3, H, W) already in model scale.
    fov : HxW bool array, optional
        Pixels outside it are 0 in the map and are not computed.
    stride : int
        1 (default): the exact map at every pixel, shape (H, W). ``output_stride(model)`` (4 for
        SeSNet): the network run as trained, every ``stride``-th pixel only: shape
        (ceil(H / stride), ceil(W / stride)), entry ``[i, j]`` is the exact probability of the
        patch centred at pixel ``(stride * i, stride * j)``. Use it where a full-resolution map
        is not needed (image scores for monitoring); any other value is an error.
    device : optional
        Where to compute; default CUDA when available, else CPU. The model itself is not moved.
    max_tile_mb : float
        Memory budget of the largest intermediate of one tile.

    Returns
    -------
    ndarray
        float32 (H, W), or the strided shape above.
    """
    x = image_to_tensor(image)
    s = int(getattr(model, "patch_size", 0) or 0)
    plan = _dense_plan(model)
    _, H, W = x.shape
    if H < s or W < s:
        raise ValueError(
            f"image of {H}x{W} pixels is smaller than the model's {s}x{s} patch; use an image of "
            f"at least {s}x{s} (e.g. preprocess.standardize to 512x512)"
        )
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
        raise TypeError(f"stride must be an int (1 or {plan.stride}); got {type(stride).__name__}")
    if stride not in (1, plan.stride):
        raise ValueError(
            f"stride must be 1 (exact map at every pixel) or the network's natural output stride "
            f"{plan.stride}; got {stride}"
        )
    fov_t = None
    if fov is not None:
        fov_t = torch.as_tensor(np.asarray(fov))
        if tuple(fov_t.shape) != (H, W):
            raise ValueError(
                f"fov must be an HxW mask of the image's size {H}x{W}; got shape {tuple(fov_t.shape)}"
            )
        fov_t = fov_t.bool()
    if max_tile_mb <= 0:
        raise ValueError(f"max_tile_mb must be positive; got {max_tile_mb}")
    dev = torch.device(device) if device is not None else default_device()
    plan = plan.to(dev)
    top = s // 2
    if stride != 1:
        return _strided_map(plan, x.to(dev), fov_t, top)
    extent = plan.extent
    bottom = extent - 1 - top  # >= 0 since extent <= s
    xp = F.pad(x.to(dev), (top, bottom, top, bottom))
    budget = max_tile_mb * 2**20
    # tiles of rows: whole-width features (widest feature layer, a few temporaries)
    tile_rows = max(1, int(budget // (3 * plan.feature_channels * (W + extent) * 4)))
    out = torch.zeros(H * W, dtype=torch.float32, device=dev)
    inside = fov_t.to(dev).reshape(-1) if fov_t is not None else None
    with torch.no_grad():
        for r0 in range(0, H, tile_rows):
            r1 = min(H, r0 + tile_rows)
            if inside is not None and not inside[r0 * W : r1 * W].any():
                continue
            feat = plan.run_features(xp[None, :, r0 : r1 + extent - 1, :])[0]
            g = plan.gather(feat, r1 - r0, W, plan.fc_dilation)
            if inside is None:
                out[r0 * W : r1 * W] = plan.run_head(g)
            else:
                idx = torch.nonzero(inside[r0 * W : r1 * W]).squeeze(1)
                out[r0 * W + idx] = plan.run_head(g[idx])
    return out.reshape(H, W).cpu().numpy()


def _strided_map(plan: _DensePlan, x: torch.Tensor, fov_t: torch.Tensor | None, top: int) -> np.ndarray:
    """The network as trained on the whole padded image: every ``plan.stride``-th pixel."""
    _, H, W = x.shape
    d = plan.stride
    n_r, n_c = -(-H // d), -(-W // d)
    # enough zero padding below/right for the last patch, centred at (d (n_r - 1), d (n_c - 1))
    bottom = d * (n_r - 1) + plan.extent - top - H
    right = d * (n_c - 1) + plan.extent - top - W
    xp = F.pad(x, (top, max(right, 0), top, max(bottom, 0)))
    with torch.no_grad():
        feat = plan.run_features(xp[None], natural=True)[0]
        g = plan.gather(feat, n_r, n_c, 1)
        out = plan.run_head(g).reshape(n_r, n_c)
    if fov_t is not None:
        out[~fov_t[::d, ::d].to(out.device)] = 0.0
    return out.cpu().numpy()


def _map_inputs(records_or_images: Sequence, fovs: Sequence | None) -> list[tuple[Any, Any]]:
    """``(image, fov)`` per input: a record's image and (by default) its FOV, or an image and no FOV."""
    if isinstance(records_or_images, (np.ndarray, torch.Tensor)) or not isinstance(records_or_images, Sequence):
        raise TypeError(
            "records_or_images must be a list of FundusImage records or of images (HxWx3 uint8 / (3, H, W) "
            f"float); got {type(records_or_images).__name__} (wrap a single image in a list)"
        )
    items = list(records_or_images)
    if fovs is not None and len(fovs) != len(items):
        raise ValueError(f"fovs must give one mask (or None) per image: {len(fovs)} masks for {len(items)} images")
    out = []
    for k, item in enumerate(items):
        is_record = hasattr(item, "image")
        image = item.image if is_record else item
        fov = fovs[k] if fovs is not None else (record_fov(item) if is_record else None)
        out.append((image, fov))
    return out


def iter_dense_probability_maps(
    model: nn.Module, records_or_images: Sequence, *, in_flight: int | None = None, **options: Any,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, map)`` for every input as each map is ready (input order without a client).

    The keywords (``fovs``, ``client``, ``stride``, ``device``, ``max_tile_mb``) and the maps are
    those of :func:`dense_probability_maps`; use it to consume the maps one at a time (write them,
    read them at a few pixels) instead of holding them all. ``in_flight``: images sent to the
    workers ahead of the results (default two per worker thread).
    """
    fovs, client = options.pop("fovs", None), options.pop("client", None)
    unknown = sorted(set(options) - {"stride", "device", "max_tile_mb"})
    if unknown:
        raise TypeError(f"unknown keyword(s) {', '.join(unknown)}; use fovs, client, stride, device, max_tile_mb")
    inputs = _map_inputs(records_or_images, fovs)
    if client is None:
        for k, (image, fov) in enumerate(inputs):
            yield k, dense_probability_map(model, image, fov, **options)
        return
    # Imported here: distributed takes seconds to import and only a caller that passes a client needs it.
    from distributed import as_completed

    # the weights travel once per call: a CPU copy, broadcast to every worker, referenced by each task
    weights = client.scatter(copy.deepcopy(model).cpu(), broadcast=True)
    n_threads = sum(client.nthreads().values()) or 1
    limit = int(in_flight) if in_flight else 2 * n_threads  # images sent ahead of the results
    pending = iter(enumerate(inputs))
    index = {}

    def submit_next(stream) -> bool:
        try:
            k, (image, fov) = next(pending)
        except StopIteration:
            return False
        future = client.submit(dense_probability_map, weights, image, fov, pure=False, **options)
        index[future.key] = k
        stream.add(future)
        return True

    stream = as_completed()
    try:
        for _ in range(limit):
            if not submit_next(stream):
                break
        for future in stream:
            k = index.pop(future.key)
            pmap = future.result()
            future.release()
            submit_next(stream)
            yield k, pmap
    finally:
        for future in list(stream.futures):
            future.cancel()
        weights.release()


def dense_probability_maps(
    model: nn.Module,
    records_or_images: Sequence,
    *,
    fovs: Sequence | None = None,
    client: Any = None,
    stride: int = 1,
    device: torch.device | str | None = None,
    max_tile_mb: float = 128.0,
    on_map: Callable[[int, np.ndarray], Any] | None = None,
) -> list[np.ndarray]:
    """:func:`dense_probability_map` of many images, in the order of the inputs.

    Without ``client`` a plain loop in this process (the same maps, bit for bit, as calling
    :func:`dense_probability_map` per image). With a Dask distributed ``client`` the model is copied
    to the CPU and scattered to every worker once per call, the images are streamed to the workers
    as tasks (a few per worker thread in flight) and each map comes back as soon as it is ready.

    Parameters
    ----------
    model : LeNet or SeSNet
    records_or_images : list
        FundusImage records (their ``image``) or images as :func:`dense_probability_map` takes them.
    fovs : list, optional
        One HxW mask (or None) per input. Default: a record's FOV (``rec.fov``, else
        ``preprocess.fov_mask`` of its image, as ``monitor.image_scores`` uses) and no FOV for a
        plain image.
    client : distributed.Client, optional
        Spread the maps over its workers; ``device`` is then where the workers compute (default:
        their CUDA when present, else CPU).
    stride, device, max_tile_mb :
        As :func:`dense_probability_map`.
    on_map : callable, optional
        ``on_map(index, map)``, called as each map arrives (completion order with a client), e.g.
        to write it to disk.

    Returns
    -------
    list of ndarray
        One float32 map per input, in input order.
    """
    maps: dict[int, np.ndarray] = {}
    for k, pmap in iter_dense_probability_maps(
        model, records_or_images, fovs=fovs, client=client, stride=stride, device=device, max_tile_mb=max_tile_mb,
    ):
        if on_map is not None:
            on_map(k, pmap)
        maps[k] = pmap
    return [maps[k] for k in range(len(maps))]
