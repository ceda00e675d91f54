"""The drawing functions under the widgets, headless and fast (no notebook run).

Every widget of the series is driven in a real kernel by ``tests/test_notebooks.py`` (nbval
re-executes the quick run with ``interactive=True`` and the cell of ``tests/_widget_driver.py``
appended, which moves every slider, dropdown, toggle and button); ``tests/test_browser.py`` clicks
for real in JupyterLab.
"""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from _reference import assert_one_sentence  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from fundus_nb import data, models, preprocess, widgets  # noqa: E402
from fundus_nb.labelling import LabellingLoop  # noqa: E402


def test_patch_grid_shows_each_patch_as_it_is_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 9, 9, 3), dtype=np.uint8)
    fig = widgets.plot_patch_grid(x, [f"p{i}" for i in range(5)], ncols=3, row_labels=["a", "b"])
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 5
    for ax, patch in zip(shown, x, strict=True):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), patch)
    assert [ax.get_title() for ax in shown] == ["p0", "p1", "p2", "p3", "p4"] and fig.axes[3].get_ylabel() == "b"
    plt.close(fig)
    with pytest.raises(ValueError, match="got 1 titles for 5 patches") as info:
        widgets.plot_patch_grid(x, ["a"])
    assert_one_sentence(info.value)
    with pytest.raises(ValueError, match="non-empty") as info:
        widgets.plot_patch_grid(x[..., 0])
    assert_one_sentence(info.value)


def test_plot_positions_subsamples_each_kind_and_checks_max_points():
    img = np.zeros((30, 30, 3), np.uint8)
    rows, cols = np.arange(20), np.arange(20)[::-1]
    fig = widgets.plot_positions(img, {"exudate": (rows, cols), "healthy": (rows[:3], cols[:3])}, max_points=5)
    ex, he = fig.axes[0].collections
    assert len(ex.get_offsets()) == 5 and len(he.get_offsets()) == 3
    assert {tuple(p) for p in ex.get_offsets()} <= {(c, r) for r, c in zip(rows, cols, strict=True)}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["exudate (20)", "healthy (3)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="max_points must be >= 1") as info:
        widgets.plot_positions(img, {}, max_points=0)
    assert_one_sentence(info.value)
    with pytest.raises(TypeError, match="max_points must be an integer") as info:
        widgets.plot_positions(img, {}, max_points=2.5)
    assert_one_sentence(info.value)


def test_labelling_view_outlines_the_proposals_and_curve_follows_the_history(tmp_path):
    recs = [preprocess.standardize_record(r, 128, cache=False) for r in data.load("synthetic", n_patients=2, seed=1,
                                                                                   size=192)]
    loop = LabellingLoop(models.LeNet(), recs, tmp_path / "run", stride=64, image_stride=128, k=3)
    with pytest.raises(ValueError, match="no image chosen yet") as info:
        widgets.plot_labelling_view(loop)
    assert_one_sentence(info.value)
    props = loop.propose()
    fig = widgets.plot_labelling_view(loop)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    half = loop.patch_size // 2
    assert sorted((b.get_y(), b.get_x()) for b in boxes) == sorted(
        (p.row - half - 0.5, p.col - half - 0.5) for p in props
    )
    assert [t.get_text() for t in fig.axes[0].texts] == [str(p.number) for p in props]
    plt.close(fig)
    history = [{"n_labels": 4, "f_measure": 0.2}, {"n_labels": 9}, {"n_labels": 12, "f_measure": 0.5}]
    fig = widgets.plot_labelling_curve(history)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [4, 12] and list(line.get_ydata()) == [0.2, 0.5]
    plt.close(fig)
