"""Tests of fundus_nb.egl_report (notebook 03's bookkeeping).

``evaluate`` and ``discussion`` are tested in ``tests/test_egl.py`` next to the selection runs they
summarise; this file holds the checks of the notebook settings.
"""

import pytest

from fundus_nb import egl_report

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
    text = str(info.value)
    assert "; " in text and not text.endswith(".") and "\n" not in text, text
