"""The widget driver: a cell appended to a notebook that moves every control of every widget it built.

Used by ``tests/test_notebooks.py``, which has nbval re-execute the quick run's notebooks with
``interactive=True`` and this cell appended (one execution checks both that the marked outputs
reproduce and that every widget responds). Driving happens kernel-side through the widgets' traits,
as a browser's messages would; ``tests/test_browser.py`` clicks for real.
"""

from __future__ import annotations

import re

import nbformat

#: Appended to each notebook of ``EXPECTED``: drive every ``interact`` widget (the kernel's display publisher and
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


def make_interactive(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """``nb`` (a copy papermill executed) with ``interactive = True`` and the driver cell appended.

    The driver cell ends by asserting that it drove every kind of widget ``EXPECTED[name]`` lists.
    """
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1, f"{name}: no papermill-injected parameters cell"
    source, n = re.subn(r"^interactive = False$", "interactive = True", injected[0].source, flags=re.M)
    assert n == 1, f"{name}: the injected parameters set no 'interactive = False'"
    injected[0].source = source
    check = f"\n_kinds = {{d[0] for d in _driven}}\nassert {EXPECTED[name]!r} <= _kinds, f'drove {{_kinds}}'\n"
    nb.cells.append(nbformat.v4.new_code_cell(DRIVER + check))
    return nb
