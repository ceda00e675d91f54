"""Decoding image and mask files: every colour mode, palette and TIFF flavour the datasets use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_TIFF = (".tif", ".tiff")


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(
        f"cannot read image file {str(path)!r}: it is unreadable or truncated ({err}); "
        f"replace it with an intact copy from the dataset's publisher"
    )


def _grey_error(path: Path) -> ValueError:
    return ValueError(
        f"image {str(path)!r} is grayscale (one channel); a colour fundus photograph (RGB) is "
        f"required: use the original colour image, not a green-channel or converted copy"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header only; grayscale images are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist; check the path")
    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as err:  # PIL cannot parse every TIFF flavour: ask tifffile
        if path.suffix.lower() not in _TIFF:
            raise _unreadable(path, err) from err
        try:
            with tifffile.TiffFile(path) as tf:
                shape = tf.pages[0].shape
        except Exception as err2:
            raise _unreadable(path, err2) from err2
        if len(shape) == 2:
            raise _grey_error(path) from None
        return int(shape[0]), int(shape[1])
    if mode in _GREY_MODES:
        raise _grey_error(path)
    return int(h), int(w)


def _to_rgb_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2)):
        raise _grey_error(path)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"image {str(path)!r} has shape {arr.shape}; save it as a height x width x 3 (RGB) colour image"
        )
    if arr.dtype == np.uint16:  # 16-bit colour: scale to 8 bits
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(
            f"image {str(path)!r} has {arr.dtype} pixels; save it as an 8-bit RGB image"
        )
    if arr.shape[2] == 4:
        if not (arr[..., 3] == 255).all():
            raise ValueError(
                f"image {str(path)!r} is RGBA with transparent pixels; save it as an RGB image "
                f"(an all-opaque alpha channel is dropped automatically)"
            )
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour fundus photograph as HxWx3 uint8.

    Palette, CMYK and YCbCr images are converted to RGB; an RGBA image whose alpha is fully opaque
    loses its alpha channel; 16-bit colour is scaled to 8 bits (``round(v / 257)``).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unreadable or truncated file, grayscale image, RGBA with transparent pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist; check the path")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            if im.mode in _GREY_MODES:
                raise _grey_error(path)
            arr = np.asarray(im)
    except ValueError:
        raise
    except Exception as err:
        if path.suffix.lower() not in _TIFF:
            raise _unreadable(path, err) from err
        try:
            arr = tifffile.imread(path)
        except Exception as err2:
            raise _unreadable(path, err2) from err2
    return _to_rgb_uint8(arr, path)


def read_mask(path: str | os.PathLike, threshold: float | None = None) -> np.ndarray:
    """Read a lesion mask as HxW bool, whatever its encoding.

    Palette images (1-bit palette TIFF: index 1 = lesion) are read as their palette *index*;
    grey, RGB and RGBA masks as their colour values (the alpha channel only counts when every
    colour channel is 0 everywhere). A pixel is lesion when the largest value is > 0, or, for
    grey-level agreement maps (``threshold`` given, a fraction of full scale), when it is
    ``>= threshold * 255 - 0.5`` (``* 65535`` for 16-bit maps), so 191 counts as 0.75.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist; check the path")
    arr = None
    if path.suffix.lower() in _TIFF:
        try:
            arr = tifffile.imread(path)
        except Exception:
            arr = None
    if arr is None:
        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
        except Exception as err:
            raise ValueError(
                f"cannot read mask file {str(path)!r}: it is unreadable or truncated ({err}); "
                f"replace it with an intact copy from the dataset's publisher"
            ) from err
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF
    if arr.ndim == 3:
        c = arr.shape[2]
        colour = arr[..., : c - 1] if c in (2, 4) else arr
        values = colour.max(-1) if colour.any() or c not in (2, 4) else arr[..., -1]
    elif arr.ndim == 2:
        values = arr
    else:
        raise ValueError(
            f"mask file {str(path)!r} has shape {arr.shape}; save the mask as a 2-D (grey or palette) or "
            "RGB(A) image"
        )
    if threshold is None or values.dtype == bool:
        return values > 0
    full = 65535.0 if values.dtype == np.uint16 else 1.0 if values.dtype.kind == "f" else 255.0
    return values >= threshold * full - 0.5  # within half a grey level: 191 counts as 0.75 of 255


def _checked_mask(path: Path, image_path: Path, shape: tuple[int, int] | None, threshold: float | None) -> np.ndarray:
    mask = read_mask(path, threshold)
    shape = shape or image_size(image_path)
    if mask.shape != tuple(shape):
        raise _size_error(path, mask.shape, image_path, shape)
    return mask


def _size_error(mask_path: Path, mshape, image_path: Path, ishape) -> ValueError:
    return ValueError(
        f"mask {str(mask_path)!r} is {mshape[1]}x{mshape[0]} pixels but its image {str(image_path)!r} is "
        f"{ishape[1]}x{ishape[0]}; a mask must have its image's size: check that it belongs to that image"
    )


def _mask_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:
        return read_mask(path).shape


