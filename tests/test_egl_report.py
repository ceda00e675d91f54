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


def test_parse_settings_splits_the_comma_lists_and_checks_them():
    counts = {"egl_rounds": 2}
    assert egl_report.parse_settings(" egl, random ,badge", "", "balanced", counts) == (["egl", "random", "badge"], [])
    assert egl_report.parse_settings("egl,random", "safeguard,steps", "grid", counts)[1] == ["safeguard", "steps"]
    with pytest.raises(TypeError, match="egl_strategies must be a comma-separated string, got list") as info:
        egl_report.parse_settings(["egl", "random"], "", "balanced", counts)
    assert_one_sentence(info.value)
    with pytest.raises(ValueError, match="egl_strategies must list egl and random"):
        egl_report.parse_settings("egl,entropy", "", "balanced", counts)


def _result(interest):
    return egl.SelectionResult(
        strategy="egl",
        records=[{"iterations": 10 * i, "n_patches": 160 + 32 * i} for i in range(len(interest) + 1)],
        interestingness=np.array(interest, float),
    )


def test_interestingness_decay_is_the_ratio_of_nan_medians():
    rows = [[4.0, 2.0, 8.0, np.nan], [np.nan, 1.0, 3.0, 2.0], [np.nan, np.nan, 0.5, 1.5]]
    got = egl_report.interestingness_decay(_result(rows))
    first, last = np.median([4.0, 2.0, 8.0]), np.median([0.5, 1.5])
    assert got == {"rounds": 3, "first_median": first, "last_median": last, "ratio": pytest.approx(last / first)}
    assert egl_report.interestingness_decay(_result(np.zeros((0, 3))))["ratio"] is None


def test_figures_carry_titles_labels_and_colour_bars():
    rng = np.random.default_rng(0)
    phi = rng.random((64, 64)).astype(np.float32)
    phi[:8] = np.nan  # outside the FOV
    fig = egl_report.plot_egl_map(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), phi, phi > 0.5, 16)
    maps, bars = fig.axes[:3], fig.axes[3:]
    assert len(bars) == 2 and all(ax.get_title() and "px" in ax.get_xlabel() for ax in maps)
    assert [ax.images[0].get_cmap().name for ax in maps[1:]] == ["magma", "cividis"]
    assert "Φ" in bars[0].get_ylabel()
    fig = egl_report.plot_interestingness(_result([[4.0, 2.0], [np.nan, 1.0]]))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 2 and ax.get_title()
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0, 10])


def _numbers(ci, collapsed=1, ratio=0.5, rounds=3):
    r = {"mean": sum(ci) / 2, "ci_low": ci[0], "ci_high": ci[1], "per_seed": list(ci)}
    finals = {"egl": [{"f_measure": 0.9, "ap": 0.3}, {"f_measure": 0.8, "ap": 0.5}],
              "random": [{"f_measure": 0.7, "ap": 0.2}]}
    return {
        "settings": {"mu": 4, "n_seeds": 2, "initial_steps": 150},
        "data": {"dataset": "synthetic", "images": {"train": 8}, "image_size": 512, "pool_per_class": 90,
                 "test_per_class": 100, "initial_patches": 160},
        "ratio_egl_random": {"n_patches": r, "aulc": r},
        "final_test": finals,
        "reference": {"test": {"f_measure": 0.95, "ap": 0.4}, "epochs": 7},
        "interestingness": {"rounds": rounds, "first_median": 2.0, "last_median": 2.0 * ratio, "ratio": ratio},
        "collapse_detail": {"egl": {"runs": collapsed, "of": 2}, "random": {"runs": 0, "of": 2}},
        "pool": {"n_grid": 500, "prevalence": 0.012},
        "target_ap": 0.35,
    }


def test_paper_table_puts_this_runs_numbers_beside_the_papers():
    table = egl_report.paper_table(_numbers((0.6, 0.9)))
    assert list(table.index) == list(egl_report.PAPER)
    assert list(table.columns) == ["paper", "this run", "how ours differs"]
    assert "0.75 (95% CI 0.60-0.90)" in table.loc["EGL / random, labels", "this run"]
    assert "test F EGL 0.850 vs random 0.700" in table.loc["final EGL vs random", "this run"]
    assert "egl 1/2, random 0/2" == table.loc["collapsed runs", "this run"]
    assert "x0.50" in table.loc["interestingness", "this run"]
    assert "1.20% exudate" in table.loc["test set", "this run"]
    assert table.loc["data", "this run"] == "synthetic: 8 train images, standardized to 512 px"
    assert table.loc["initial model", "this run"] == "4 random images; 160 patches, 150 SGD steps"
    one = egl_report.paper_table(_numbers((0.6, 0.9), rounds=1))
    assert "no decay measured" in one.loc["interestingness", "this run"]


def _discussion(ci, collapsed=0, ratio=0.5, rounds=3):
    n = _numbers(ci, collapsed, ratio, rounds)
    r = n["ratio_egl_random"]["n_patches"]
    eff = {"target_ap": 0.35, "censored": {"egl": 0, "random": 0}, "ratio": {"n_patches": r, "aulc": r}}
    grid = egl.GridSet(np.zeros((1, 48, 48, 3), np.uint8), np.zeros(1, int), np.zeros(1, np.uint8), np.ones(1), 9, 0.01)
    fp = {"egl": {"plain": 0.01}, "random": {"plain": 0.02}}
    return egl_report.discussion(eff, n["collapse_detail"], {}, n["reference"]["test"], grid, fp,
                                 {"epochs": 7, "best_epoch": 4}, interest=n["interestingness"])


def test_discussion_sentences_follow_the_numbers():
    fewer = _discussion((0.6, 0.9))
    assert "EGL needed fewer labels than random here, and the CI excludes 1" in fewer and "agrees" in fewer
    more = _discussion((1.1, 1.5), collapsed=2)
    assert "EGL needed MORE labels than random here, and the CI excludes 1" in more and "against" in more
    assert "EGL collapsed in 2 of 2 runs" in more and "EGL collapsed in" not in fewer
    assert "- Collapsed runs: egl 0/2" in fewer
    unsure = _discussion((0.8, 1.1))
    assert "EGL needed fewer labels than random here on average, but the CI includes 1" in unsure
    assert "needed more labels than random here on average" in _discussion((0.95, 1.3))
    assert "fell from 2 to 1 over 3 rounds" in fewer
    assert "rose from 2 to 3 over 3 rounds" in _discussion((0.6, 0.9), ratio=1.5)
    assert "one round only" in _discussion((0.6, 0.9), rounds=1)
