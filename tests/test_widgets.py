"""Every widget of the series, exercised headless in a real kernel.

The notebooks run in the quick preset with ``interactive=True``; a driver cell appended to each
moves every control of every widget it built (sliders, dropdowns, toggles, buttons) and checks
that what the widget shows changed, with no exception. Driving happens kernel-side through the
widgets' traits, as a browser's messages would; ``tests/test_browser.py`` clicks for real.
The drawing functions under the widgets are tested at the end of this file on their own (fast).
"""

import json
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from _reference import assert_one_sentence  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from fundus_nb import data, models, preprocess, runs, widgets  # noqa: E402
from fundus_nb.labelling import LabellingLoop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: Appended to every notebook: drive every ``interact`` widget (the kernel's display publisher and
#: stdout are wrapped to see what the callback shows, and ``showtraceback`` to see it raise) and every
#: package widget (they draw into an ``Output`` whose ``outputs`` the
#: kernel holds); the notebook fails when a control changes nothing or raises.
DRIVER = r'''
import json as _json
import sys as _sys
from ipywidgets import interactive as _Interactive
from ipywidgets.widgets.widget import _instances as _live

_ip, _seen = get_ipython(), []
_publish, _write, _showtb = _ip.display_pub.publish, _sys.stdout.write, _ip.showtraceback
_ip.display_pub.publish = lambda data, *a, **k: (_seen.append(dict(data)), _publish(data, *a, **k))[1]
_sys.stdout.write = lambda text: (_seen.append({"stdout": text}), _write(text))[1]
_ip.showtraceback = lambda *a, **k: (_seen.append({"traceback": True}), _showtb(*a, **k))[1]

def _other(control):
    opts = getattr(control, "options", None)
    if opts:
        values = [o[1] if isinstance(o, tuple) else o for o in opts]
        return next(v for v in values if v != control.value)
    return control.min if control.value != control.min else control.max

_driven = []
for _w in list(_live.values()):
    if isinstance(_w, _Interactive):
        for _c in _w.kwargs_widgets:
            _seen.clear()
            _c.value = _other(_c)
            assert _seen, f"moving {_c.description!r} showed nothing"
            assert not any("traceback" in d for d in _seen), f"moving {_c.description!r} raised"
            _axes = [d for d in _seen if str(d.get("text/plain", "")).startswith("<Axes")]
            assert not _axes, "a callback returned an Axes"
            _driven.append(["interact", _c.description])
    if hasattr(_w, "page_slider"):
        _before = _json.dumps(_w.out.outputs, default=str)
        _w.page_slider.value = _other(_w.page_slider)
        assert _json.dumps(_w.out.outputs, default=str) != _before, "the patch browser did not change page"
        _w.class_filter.value = "negative"
        _driven.append(["patch_browser", "page", "class"])
    if hasattr(_w, "update_button"):
        _curve = _json.dumps(_w.curve.outputs, default=str)
        _w.toggles[0].value = "exudate"
        _w.key_box.value = "eh"
        assert [t.value for t in _w.toggles[:2]] == ["exudate", "healthy"]
        _w.undo_button.click()
        _w.toggles[1].value = "skip"
        _w.update_button.click()
        assert _json.dumps(_w.curve.outputs, default=str) != _curve, "the F-measure plot did not change"
        _w.next_button.click()
        _driven.append(["labelling_widget", "toggles", "keys", "undo", "update", "next"])
_ip.display_pub.publish, _sys.stdout.write, _ip.showtraceback = _publish, _write, _showtb
print("DRIVEN " + _json.dumps(_driven))
'''

#: What each notebook's widgets must have been driven through (notebook stem -> kinds).
EXPECTED = {
    "01_preprocessing": {"interact"},
    "02_patch_datasets": {"patch_browser"},
    "03_lenet_egl": {"interact"},
    "04_ses_hemorrhage": {"interact"},
    "05_evaluation": {"interact"},
    "07_label_with_egl": {"labelling_widget"},
}


@pytest.fixture(scope="module")
def interactive_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interactive_notebooks")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if path.stem not in EXPECTED:
            continue
        nb = nbformat.read(str(path), as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(DRIVER))
        nbformat.write(nb, str(folder / path.name))
    run_dir = tmp_path_factory.mktemp("interactive_run")
    # nbclient sometimes never sees a widget cell finish (jupyter/nbclient#312): a short cell timeout
    # turns that into a failure, and a notebook that failed that way is run once more.
    mp = pytest.MonkeyPatch()
    mp.setenv("FUNDUS_NB_CELL_TIMEOUT", "240")
    try:
        kw = dict(run_dir=run_dir, notebooks=folder, progress=False, stop_on_error=False)
        result = runs.run_series(_quick_for(folder), {"interactive": True}, **kw)
        if any(r.status == "failed" and "timed out" in (r.error or "").lower() for r in result.results):
            result = runs.run_series(_quick_for(folder), {"interactive": True}, resume=True, **kw)
    finally:
        mp.undo()
    return result


def _quick_for(folder: Path) -> dict:
    """The quick preset's values for the names the notebooks in ``folder`` declare."""
    declared = set().union(*(runs.notebook_parameters(p) for p in runs.list_notebooks(folder)))
    return {k: v for k, v in runs.load_preset("quick").items() if k in declared}


def _driven(result) -> list:
    nb = nbformat.read(str(result.output), as_version=4)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next(x for x in text.splitlines() if x.startswith("DRIVEN "))
    return json.loads(line[len("DRIVEN "):])


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_widget_responds_to_its_controls(interactive_run, name):
    by_name = {r.name: r for r in interactive_run.results}
    r = by_name[name]
    assert r.status == "ok", f"{name} failed with interactive=True: {r.error} (executed copy: {r.output})"
    kinds = {d[0] for d in _driven(r)}
    assert EXPECTED[name] <= kinds, f"{name}: drove {kinds}, expected {EXPECTED[name]}"


@pytest.mark.notebooks
def test_labelling_widget_answers_reach_the_labels_file(interactive_run):
    lines = (interactive_run.run_dir / "labelling" / "labels.jsonl").read_text().splitlines()
    events = [json.loads(x) for x in lines]
    # the driver answered patch 1 "exudate" (toggle), then "e", "h" by keys, undid "h", answered "skip"
    tail = [(e["event"], e.get("label")) for e in events[-7:]]
    assert ("undo", None) in tail and ("label", "skip") in tail and ("label", "exudate") in tail
    assert events[-1]["event"] == "image"  # "next image" chose another image


# ----------------------------------------------------------------------------------------------
# the drawing functions under the widgets, headless and fast (no notebook run)
# ----------------------------------------------------------------------------------------------
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
