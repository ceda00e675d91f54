"""Solutions to the exercises of notebook 01 (preprocessing fundus photographs).

Each ``exercise_N()`` restates its question, answers it in words in its docstring, computes the
answer with the package on scikit-image's retina photograph (standardized as in the notebook) and
asserts what the answer claims. Run all: ``python notebooks/solutions/01_preprocessing.py``.
"""

from functools import cache

import numpy as np
from scipy import ndimage
from skimage import data as skdata

from fundus_nb import preprocess

SIZE = 512  # the notebook's default `size` (the papers' 512 px)


@cache
def standardized(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's photograph, FOV-cropped and resized to ``size`` px, and its FOV."""
    return preprocess.standardize(skdata.retina(), size=size)


def exercise_1():
    """Set alpha = 0 (beta = -4, gamma = 128): which term is left, and what does the FOV look like?

    Answer: only ``beta*G(sigma)*I + gamma = 128 - 4 * local background`` is left: an inverted, blurred
    copy of the background with no detail at all. Wherever the background is brighter than 32 grey
    levels, 128 - 4 * background is negative and clips to 0, and this photograph's red and green
    backgrounds are brighter than that everywhere, its blue one almost everywhere: the FOV turns black.
    """
    image, fov = standardized()
    sigma = preprocess.scale_length(preprocess.PAPER_SIZE / 30, SIZE)
    zero = preprocess.contrast_enhance(image, alpha=0.0, beta=-4.0, sigma=sigma, gamma=128.0, fov=fov)
    background = ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0))
    expected = np.clip(np.round(128 - 4 * background), 0, 255)
    expected[~fov] = 128
    np.testing.assert_allclose(zero, expected, atol=1)  # the formula with its first term gone
    black = [float((zero[..., c][fov] == 0).mean()) for c in range(3)]
    print(f"alpha=0: share of FOV pixels clipped to 0 in R, G, B: {np.round(black, 3).tolist()}")
    assert min(black) > 0.9, black
    inner = ndimage.distance_transform_edt(fov) > 3 * sigma  # away from the rim
    detail = {a: float(np.abs(ndimage.laplace(
        preprocess.contrast_enhance(image, alpha=a, fov=fov).astype(float).mean(axis=2)))[inner].mean())
        for a in (0.0, 4.0)}
    print(f"fine detail (mean |Laplacian|, grey levels): alpha=0 {detail[0.0]:.3f}, alpha=4 {detail[4.0]:.2f}")
    assert detail[0.0] < 0.01 * detail[4.0]


def exercise_2():
    """Halve and double sigma (size/60, size/15): how far does the bright rim (FOV halo) reach inward?

    Answer: the halo is the blur of the black surround, so its width follows sigma: about 1 sigma
    here (10, 18 and 36 px at sigma 8.5, 17.1 and 34.1 on the 512-px photograph), growing with
    sigma, while its excess over the interior stays large (tens of grey levels) at every sigma.
    """
    image, fov = standardized()
    widths = {}
    for divisor in (60, 30, 15):
        sigma = SIZE / divisor
        halo = preprocess.fov_halo(preprocess.contrast_enhance(image, sigma=sigma, fov=fov), fov, sigma)
        widths[sigma] = halo["width"]
        print(f"sigma {sigma:5.1f} px: halo {halo['excess']:.0f} grey levels brighter, {halo['width']:.0f} px wide "
              f"({halo['width'] / sigma:.2f} sigma)")
        assert halo["excess"] > 30
        assert 0.5 * sigma <= halo["width"] <= 2.0 * sigma
    values = list(widths.values())
    assert values == sorted(values) and values[-1] > 2 * values[0]


def exercise_3():
    """At size = 256: which sigma, and does enhancing at 256 match enhancing at 512 then resizing?

    Answer: ``scale_length(512/30, 256) = 256/30 = 8.53`` px, which is also ``contrast_enhance``'s
    default at 256. With it the 256-px enhancement matches the 512-px one resized to 256 within about
    a grey level on average (the blur scales with the image); keeping 17.07 px at 256 blurs twice as
    much retina, so larger structures count as contrast and the two differ by over ten grey levels.
    """
    sigma_256 = preprocess.scale_length(preprocess.PAPER_SIZE / 30, 256)
    assert sigma_256 == 256 / 30
    big, big_fov = standardized(512)
    small, small_fov = standardized(256)
    reference = np.round(preprocess.resize_area(preprocess.contrast_enhance(big, fov=big_fov), 256))
    inner = ndimage.distance_transform_edt(small_fov) > 3  # the FOV, less its last pixels
    gaps = {}
    for name, sigma in (("scaled", sigma_256), ("unscaled", preprocess.PAPER_SIZE / 30)):
        out = preprocess.contrast_enhance(small, sigma=sigma, fov=small_fov).astype(float)
        gaps[name] = float(np.abs(out - reference)[inner].mean())
    print(f"sigma at 256: {sigma_256:.2f} px; mean gap to the 512-px enhancement: scaled {gaps['scaled']:.2f}, "
          f"unscaled {gaps['unscaled']:.2f} grey levels")
    assert np.array_equal(preprocess.contrast_enhance(small), preprocess.contrast_enhance(small, sigma=sigma_256))
    assert gaps["scaled"] < 2.0 and gaps["unscaled"] > 5 * gaps["scaled"]


def fov_aware_enhance(image, fov, alpha=4.0, beta=-4.0, sigma=None, gamma=128.0) -> np.ndarray:
    """Graham's enhancement with the background estimated from the FOV only (normalized convolution)."""
    sigma = image.shape[1] / 30 if sigma is None else sigma
    img = image.astype(np.float64)
    weight = fov.astype(np.float64)[..., None]
    blur = ndimage.gaussian_filter(img * weight, (sigma, sigma, 0))
    background = blur / np.maximum(ndimage.gaussian_filter(weight, (sigma, sigma, 0)), 1e-9)
    out = np.clip(np.round(alpha * img + beta * background + gamma), 0, 255).astype(np.uint8)
    out[~fov] = np.uint8(round(gamma))
    return out


def exercise_4():
    """Remove the halo with a FOV-only background G(sigma)*(I*FOV) / G(sigma)*FOV; is the inside unchanged?

    Answer: dividing the blur of the masked image by the blur of the mask averages FOV pixels only,
    so the black surround no longer darkens the background near the rim: the halo's excess drops from
    about 70 grey levels to a few (here slightly negative), while 3 sigma and more from the edge,
    where the blur never reaches the surround, the image matches the package's (mean gap well under
    a grey level).
    """
    image, fov = standardized()
    sigma = SIZE / 30
    plain = preprocess.contrast_enhance(image, sigma=sigma, fov=fov)
    aware = fov_aware_enhance(image, fov, sigma=sigma)
    before, after = preprocess.fov_halo(plain, fov, sigma), preprocess.fov_halo(aware, fov, sigma)
    print(f"halo excess: package {before['excess']:.1f}, FOV-aware {after['excess']:.1f} grey levels")
    assert before["excess"] > 40 and abs(after["excess"]) < 15
    deep = ndimage.distance_transform_edt(fov) > 3 * sigma
    gap = np.abs(aware.astype(int) - plain)[deep]
    print(f"3 sigma and deeper: mean gap {gap.mean():.3f}, max {gap.max()} grey levels")
    assert gap.mean() < 0.5


if __name__ == "__main__":
    for exercise in (exercise_1, exercise_2, exercise_3, exercise_4):
        print(f"--- {exercise.__name__}")
        exercise()
