"""Tests of fundus_nb.plots."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from skimage.color import label2rgb

from fundus_nb import plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)


def test_plots_helpers():
    img = np.zeros((10, 12, 3), np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[2:4, 3:5] = True
    ov = plots.overlay_mask(img, mask, color=(1.0, 0.0, 0.0), alpha=0.5)
    np.testing.assert_allclose(ov[mask], [[0.5, 0.0, 0.0]] * 4)
    assert not ov[~mask].any()
    fig = plots.show_images([img, mask, ov], ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a"
    ax = plots.show_overlay(img, {"m": mask}, points=np.array([[3.0, 4.0]]), title="t")
    plots.draw_circle(ax, (5, 6, 4))
    assert len(ax.patches) == 1 and len(ax.collections) == 1
    with pytest.raises(ValueError, match="titles"):
        plots.show_images([img], ["a", "b"])
    with pytest.raises(ValueError, match="differs"):
        plots.overlay_mask(img, mask[:-1])
    plt.close("all")


def test_a_subsampled_image_keeps_its_pixel_coordinates():
    # a 2100 x 3000 image is shown every 3rd pixel; a circle drawn in the image's own pixels must sit
    # over the same image content as on a small image shown whole
    big = np.zeros((2100, 3000), np.uint8)
    fig = plots.show_images([big, big[:100, :100]], max_side=1024)
    ax_big, ax_small = fig.axes
    assert ax_big.images[0].get_array().shape == (700, 1000)  # drawn subsampled
    assert ax_big.get_xlim() == (-0.5, 2999.5) and ax_big.get_ylim() == (2099.5, -0.5)
    assert ax_small.get_xlim() == (-0.5, 99.5) and ax_small.get_ylim() == (99.5, -0.5)
    plots.draw_circle(ax_big, (1050, 1500, 900))
    circle = ax_big.patches[0]
    assert circle.center == (1500, 1050) and circle.radius == 900
    plt.close(fig)


@pytest.mark.parametrize("grey", [False, True])
def test_overlay_mask_equals_skimage_label2rgb(grey):
    """overlay_mask is label2rgb's overlay (image kept in colour, background untouched), written out for speed."""
    rng = np.random.default_rng(1)
    img = rng.random((20, 30)) if grey else rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.random((20, 30)) < 0.3
    got = plots.overlay_mask(img, mask, color=(0.2, 0.6, 1.0), alpha=0.45)
    want = label2rgb(mask.astype(np.uint8), img, colors=[(0.2, 0.6, 1.0)], alpha=0.45, bg_label=0, bg_color=None,
                     image_alpha=1, saturation=1, kind="overlay")
    np.testing.assert_allclose(got, np.clip(want, 0, 1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="differs from the image's") as info:
        plots.overlay_mask(img, mask[:, :-1])
    assert "; pass a mask" in str(info.value)
