"""The border rule in one place: padding, window views, patch extraction and the model-scale conversion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------
def _as_image_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = [images]
        elif images.ndim == 4:
            images = list(images)
        else:
            raise ValueError(
                f"images must be an HxWx3 array, an (K,H,W,3) stack or a list of HxWx3 arrays, "
                f"got an array of shape {images.shape}"
            )
    out = []
    for k, im in enumerate(images):
        im = np.asarray(im)
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(
                f"image {k} must be HxWx3 uint8 (a standardized fundus image), got shape {im.shape} "
                f"dtype {im.dtype}"
            )
        out.append(im)
    if not out:
        raise ValueError("no images given: pass at least one HxWx3 uint8 image")
    return out


def pad_images(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Zero-pad every image once for patches of ``size`` and stack them into one uint8 array.

    The result has shape ``(K, Hmax + size - 1, Wmax + size - 1, 3)``; image ``k``'s pixel
    ``(r, c)`` sits at ``(r + size // 2, c + size // 2)``, so the patch centred at ``(r, c)`` is
    ``padded[k, r:r + size, c:c + size]``. Images of different sizes are padded to the largest
    (the extra pixels are zeros, exactly what the border rule gives).
    """
    ims = _as_image_list(images)
    size = int(size)
    if size < 1:
        raise ValueError(f"patch size must be >= 1, got {size}")
    for k, im in enumerate(ims):
        if size > im.shape[0] or size > im.shape[1]:
            raise ValueError(
                f"patch size {size} is larger than image {k} ({im.shape[0]}x{im.shape[1]}); "
                "use a smaller patch or standardize the image to a larger size"
            )
    hmax = max(im.shape[0] for im in ims)
    wmax = max(im.shape[1] for im in ims)
    lo = size // 2
    out = np.zeros((len(ims), hmax + size - 1, wmax + size - 1, 3), dtype=np.uint8)
    for k, im in enumerate(ims):  # one copy per image, not per patch
        out[k, lo : lo + im.shape[0], lo : lo + im.shape[1]] = im
    return out


def window_view(stack: np.ndarray, size: int, *, channels_first: bool = False) -> np.ndarray:
    """Read-only view of every ``size`` x ``size`` window of a zero-padded image stack.

    The one place patch windows are cut (:func:`numpy.lib.stride_tricks.sliding_window_view`).
    ``stack`` is ``(K, Hp, Wp, 3)`` (as :func:`pad_images` returns it) or, with
    ``channels_first=True``, ``(K, 3, Hp, Wp)``; negative-stride views (flipped stacks) work too.
    Window ``[k, r, c]`` is the patch whose top-left corner is ``(r, c)``: in a stack padded by
    :func:`pad_images`, the patch centred at pixel ``(r, c)`` of image ``k``.

    Returns
    -------
    np.ndarray
        ``(K, Hp - size + 1, Wp - size + 1, size, size, 3)`` for an HWC stack, or
        ``(K, Hp - size + 1, Wp - size + 1, 3, size, size)`` (channel-first patches) for a CHW stack.
    """
    if channels_first:
        view = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(2, 3))
        return np.moveaxis(view, 1, 3)
    view = np.lib.stride_tricks.sliding_window_view(stack, (size, size), axis=(1, 2))
    return np.moveaxis(view, 3, 5)


def windows(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` patches of one image centred at ``(rows, cols)``, under the border rule.

    The image is zero-padded (``docs/CONTRACTS.md``): the patch centred at ``(r, c)`` covers rows
    ``r - size//2 .. r - size//2 + size - 1`` and the same columns (for even ``size`` the centre
    is the lower-right of the middle four pixels); pixels outside the image are 0.

    Parameters
    ----------
    image : np.ndarray
        One HxWx3 uint8 image.
    rows, cols : np.ndarray
        Centre pixels, inside the image; patch ``i`` is centred at ``(rows[i], cols[i])``.
    size : int
        Patch side in pixels (at most the image's side).

    Returns
    -------
    np.ndarray
        uint8 ``(N, size, size, 3)``: :func:`extract` of this one image.
    """
    return extract(image, 0, rows, cols, size)


def _check_positions(
    image_idx: np.ndarray, rows: np.ndarray, cols: np.ndarray, shapes: Sequence[tuple[int, int]]
) -> None:
    n_img = len(shapes)
    if image_idx.size and (image_idx.min() < 0 or image_idx.max() >= n_img):
        raise ValueError(f"image indices must lie in 0..{n_img - 1}, got {image_idx.min()}..{image_idx.max()}")
    hs = np.array([s[0] for s in shapes])[image_idx]
    ws = np.array([s[1] for s in shapes])[image_idx]
    bad = (rows < 0) | (cols < 0) | (rows >= hs) | (cols >= ws)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} patch centres lie outside their image, e.g. (row {rows[i]}, col {cols[i]}) "
            f"in image {image_idx[i]} of size {hs[i]}x{ws[i]}; centres must be pixels of the image"
        )


def extract(
    images: np.ndarray | Sequence[np.ndarray],
    image_idx: np.ndarray | int,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
) -> np.ndarray:
    """Cut patches of ``size`` x ``size`` centred at ``(rows, cols)`` of ``images[image_idx]``.

    Each image is zero-padded once; all patches are gathered with one fancy-index into a strided
    window view (no Python loop per patch). Border rule: the patch centred at ``(r, c)`` covers
    rows ``r - size//2 .. r - size//2 + size - 1`` and the same for columns; pixels outside the
    image are 0.

    Parameters
    ----------
    images : np.ndarray or sequence of np.ndarray
        One HxWx3 uint8 image, a (K,H,W,3) stack or a list of HxWx3 uint8 images.
    image_idx : int or np.ndarray
        Index of the source image of each patch (broadcast against ``rows``).
    rows, cols : np.ndarray
        Centre pixels.
    size : int
        Patch side in pixels.

    Returns
    -------
    np.ndarray
        uint8 array ``(N, size, size, 3)``.
    """
    ims = _as_image_list(images)
    rows = np.atleast_1d(np.asarray(rows)).astype(np.int64)
    cols = np.atleast_1d(np.asarray(cols)).astype(np.int64)
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(f"rows and cols must be 1-D arrays of equal length, got {rows.shape} and {cols.shape}")
    image_idx = np.broadcast_to(np.asarray(image_idx, dtype=np.int64), rows.shape)
    _check_positions(image_idx, rows, cols, [im.shape[:2] for im in ims])
    padded = pad_images(ims, size)
    return window_view(padded, int(size))[image_idx, rows, cols]


def to_tensor(patches: np.ndarray | torch.Tensor, *, channels_first: bool = False) -> torch.Tensor:
    """Model input from uint8 patches: ``(N, h, w, 3)`` -> float32 ``(N, 3, h, w)`` = x / 255.

    The one uint8 -> model-scale conversion of the package. ``channels_first=True`` takes uint8
    patches already laid out ``(N, 3, h, w)`` (as pools gather them). The result is contiguous
    NCHW on the CPU (move it with ``.to(device)``); the division is the exact float32 ``x / 255``.
    """
    if isinstance(patches, torch.Tensor):
        patches = patches.detach().cpu().numpy()
    x = np.asarray(patches)
    axis = 1 if channels_first else -1
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[axis] != 3:
        layout = "(N, 3, h, w)" if channels_first else "(N, h, w, 3)"
        raise ValueError(
            f"to_tensor expects uint8 patches of shape {layout}, got dtype {x.dtype} shape "
            f"{x.shape}; use windows(...) or extract(...), or add a batch axis with patches[None]"
        )
    # one cast (and transpose) pass into the NCHW buffer, then an exact in-place division by 255;
    # numpy, not torch, allocates the float batch: glibc reuses its freed heap blocks, while
    # torch's fresh buffers page-fault on every batch (5x slower on one core)
    out = np.empty((x.shape[0], 3, x.shape[-2], x.shape[-1]) if channels_first else
                   (x.shape[0], 3, x.shape[1], x.shape[2]), dtype=np.float32)
    out[...] = x if channels_first else x.transpose(0, 3, 1, 2)
    np.divide(out, np.float32(255.0), out=out)
    return torch.from_numpy(out)


