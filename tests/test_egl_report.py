"""Tests of fundus_nb.egl_report (notebook 03's bookkeeping).

``evaluate`` against separate passes and ``discussion`` are also tested in ``tests/test_egl.py``
next to the selection runs they summarise.
"""

import numpy as np
import pytest
import torch
from _reference import assert_one_sentence
from sklearn.metrics import average_precision_score, f1_score

from fundus_nb import egl, egl_report, models, patches

GOOD = dict(strategies=["egl", "random"], remedies=["safeguard"], pool="grid", counts={"egl_rounds": 3})


def test_good_settings_pass():
    assert egl_report.check_settings(**GOOD) is None


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(strategies=["egl"]), ValueError, "egl_strategies must list egl and random"),
        (dict(strategies=["egl", "random", "magic"]), ValueError, "egl_strategies"),
        (dict(remedies=["nap"]), ValueError, r"egl_remedies has unknown entries \['nap'\]"),
        (dict(pool="all"), ValueError, "egl_pool must be 'balanced' or 'grid'"),
        (dict(counts={"egl_rounds": 0}), ValueError, "egl_rounds must be >= 1"),
        (dict(counts={"egl_rounds": 2.0}), TypeError, "egl_rounds must be an integer, got float"),
        (dict(counts={"egl_rounds": True}), TypeError, "egl_rounds must be an integer, got bool"),
    ],
)
def test_bad_settings_give_one_sentence_with_the_fix(change, error, match):
    with pytest.raises(error, match=match) as info:
        egl_report.check_settings(**{**GOOD, **change})
    assert_one_sentence(info.value)


def test_evaluate_takes_uint8_patches_or_model_input_alike():
    torch.manual_seed(0)
    model = models.LeNet()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 48, 48, 3), dtype=np.uint8)
    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    grid = egl.GridSet(x, y, np.zeros(30, np.uint8), np.ones(30), 30, 0.5)
    model.train()
    a = egl_report.evaluate(model, x, y, grid)
    b = egl_report.evaluate(model, patches.to_tensor(x), y, grid)
    assert model.training  # evaluate ran in eval mode and gave the mode back
    assert a == pytest.approx(b)
    p = models.predict_proba(model, x)
    assert a["f_measure"] == pytest.approx(f1_score(y, p >= 0.5, zero_division=0))
    assert a["ap"] == pytest.approx(average_precision_score(y, p), rel=1e-5)
