"""Tests of fundus_nb.ses_report (notebook 04's bookkeeping) against plain references."""

import json

import numpy as np
import pytest
from _reference import assert_one_sentence
from sklearn.metrics import roc_auc_score

from fundus_nb import data, models, monitor, ses, ses_report, train


@pytest.fixture(scope="module")
def recs():
    """Four standardized synthetic images at 96 px (the quick preset's size), two with hemorrhages."""
    raw = data.load("synthetic", n_patients=2)
    return ses_report.prepare_records(raw, range(len(raw)), 4, size=96, enhance=True)


def test_prepare_records_balances_standardizes_and_enhances(recs):
    assert [r.image.shape for r in recs] == [(96, 96, 3)] * 4
    assert monitor.image_labels(recs).sum() == 2
    raw = data.load("synthetic", n_patients=2)
    plain = ses_report.prepare_records(raw, range(len(raw)), 4, size=96, enhance=False)
    assert [r.id for r in plain] == [r.id for r in recs]
    assert not np.array_equal(plain[0].image, recs[0].image)  # the enhancement changed the pixels


@pytest.mark.parametrize("counts, error, match", [
    ({"ses_epochs": 0}, ValueError, "ses_epochs must be >= 1, got 0"),
    ({"ses_epochs": 2, "ses_n_seeds": -1}, ValueError, "ses_n_seeds must be >= 1"),
    ({"ses_epochs": 2.0}, TypeError, "ses_epochs must be an integer, got float"),
    ({"ses_epochs": True}, TypeError, "ses_epochs must be an integer, got bool"),
])
def test_bad_counts_give_one_sentence_with_the_fix(counts, error, match):
    with pytest.raises(error, match=match) as info:
        ses_report.check_settings(counts)
    assert_one_sentence(info.value)


def test_good_counts_pass():
    assert ses_report.check_settings({"ses_epochs": 3, "ses_n_seeds": np.int64(1)}) is None


def test_monitoring_level(recs):
    assert ses_report.monitoring_level(recs, False) == "image"
    lesions = [r for r in recs if r.has_hemorrhages]
    with pytest.raises(ValueError, match="only images with hemorrhages, so Az is undefined"):
        ses_report.monitoring_level(lesions, False)
    assert ses_report.monitoring_level(lesions, True) == "pixel"


def test_evaluator_gives_sklearn_az_inside_its_ci(recs):
    model = models.SeSNet()
    evaluate = ses_report.make_evaluator(recs, sigma=0.375, stride=4, level="image", n_bootstrap=50, seed=0)
    out = evaluate(model)
    y = monitor.image_labels(recs)
    s = monitor.image_scores(model, recs, 0.375, stride=4)
    assert out["az"] == pytest.approx(roc_auc_score(y, s))
    assert out["az_lo"] <= out["az"] + 1e-12 and out["az"] <= out["az_hi"] + 1e-12


def test_run_fingerprint_keeps_parameters_only(recs):
    params = {"ses_lr": 0.03, "ses_resume": True, "ses_report": ses_report, "seed": 0, "ses_init": "default"}
    fp = ses_report.run_fingerprint(params, dataset="synthetic", data_root="", train_recs=recs)
    assert fp == {"ses_lr": 0.03, "ses_init": "default", "dataset": "synthetic", "data_root": "",
                  "train_ids": [r.id for r in recs]}
    json.dumps(fp)  # stored with the checkpoints


def test_smooth_is_the_centred_moving_average():
    a = np.random.default_rng(0).random(11)
    for w in (1, 2, 3, 4, 5):
        ref = [a[max(0, i - (w - 1) // 2): i + w // 2 + 1].mean() for i in range(a.size)]
        np.testing.assert_allclose(ses_report.smooth(a, w), ref)


def _history(az, seconds=1.0):
    return train.History(evals=[{"iteration": 10 * (e + 1), "epoch": e, "epoch_end": 1.0, "az": v,
                                 "train_seconds": seconds, "weight_seconds": 0.0, "monitor_seconds": 0.5}
                                for e, v in enumerate(az)])


def test_curves_plateaus_and_diagnostics_match_plain_loops():
    rng = np.random.default_rng(3)
    curves_in = {(m, k): np.clip(0.9 - 0.4 * np.exp(-np.arange(12) / (2 + k)) + rng.normal(0, 0.02, 12), 0, 1)
                 for m in ("SeS", "NSeS") for k in range(2)}
    results = {key: (None, None, _history(a)) for key, a in curves_in.items()}
    curves, az = ses_report.az_curves(results, 2)
    np.testing.assert_allclose(az["NSeS"][1], curves_in["NSeS", 1])
    plateau, ratios, final = ses_report.plateaus(az, 3, 0.02)
    ref = {m: [monitor.plateau_epoch(curves_in[m, k], 3, 0.02) for k in range(2)] for m in ("SeS", "NSeS")}
    assert plateau == ref
    both = [s / n for s, n in zip(ref["SeS"], ref["NSeS"], strict=True) if s and n]
    np.testing.assert_allclose(ratios, both)
    assert final["SeS"][0] == curves_in["SeS", 0][-1]
    labels = np.array([1, 1, 0, 0, 0])
    diag = ses_report.diagnostics(az, curves, labels, window=3, patches_run=1024 * 100)
    assert diag["az_step"] == pytest.approx(1 / 6) and diag["n_pairs"] == 6
    assert diag["run_patches_over_one_paper_epoch"] == pytest.approx(0.1)
    for k in range(2):
        sm = ses_report.smooth(curves_in["SeS", k], 3)
        hit = next((i + 1 for i, v in enumerate(sm) if v >= 0.9), None)
        assert diag["SeS"]["epoch_to_0p9"][k] == hit
    assert diag["NSeS"]["late_mean_az"] == pytest.approx(np.mean([curves_in["NSeS", k][-4:] for k in range(2)]))


def test_plateau_reading_follows_the_numbers():
    az = {m: np.tile(np.linspace(0.5, 0.95, 9), (2, 1)) for m in ("SeS", "NSeS")}
    results = {(m, k): (None, None, _history(az[m][k])) for m in az for k in range(2)}
    curves, az = ses_report.az_curves(results, 2)
    diag = ses_report.diagnostics(az, curves, np.array([1, 0, 0]), window=1, patches_run=960)
    plateau = {"SeS": [3, 4], "NSeS": [9, 8]}
    fast = ses_report.plateau_reading(diag, np.array([3 / 9, 4 / 8]), plateau, n_monitor=3, tol=0.02, patches_run=960)
    slow = ses_report.plateau_reading(diag, np.array([1.2]), plateau, n_monitor=3, tol=0.02, patches_run=960)
    none = ses_report.plateau_reading(diag, np.array([]), plateau, n_monitor=3, tol=0.02, patches_run=960)
    assert "speed-up is reproduced" in fast[0] and "NOT reproduced" in slow[0]
    assert none[0].startswith("No seed reached a plateau")


def test_top_share_and_effective_sample_size():
    p = np.random.default_rng(0).random(1000) ** 4
    top = np.sort(p)[::-1][:10].sum() / p.sum()
    assert ses_report.top_share(p, 0.01) == pytest.approx(top)
    assert ses_report.effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert ses_report.effective_sample_size(np.r_[1.0, np.zeros(49)]) == pytest.approx(1)
    assert ses_report.effective_sample_size(p) == pytest.approx(p.sum() ** 2 / (p**2).sum())


def test_figures_draw_with_colour_bars(recs):
    sampler = ses.SelectiveSampler(recs, batch_size=8, batches_per_epoch=1, lesion_margin=3.75)
    sampler.update_weights(models.SeSNet())
    fig = ses_report.plot_weight_map(sampler, sampler.negative_images[0])
    assert len(fig.axes) == 3  # image, map, colour bar
    rec = next(r for r in recs if r.has_hemorrhages)
    maps = {(m, e): np.full((96, 96), 0.1 * e) for m in ("SeS", "NSeS") for e in (1, 2)}
    fig = ses_report.plot_maps(rec, maps, [1, 2])
    assert len(fig.axes) == 7 and fig.axes[-1].get_ylabel().startswith("p(hemorrhage)")


def _record(recs, ratio_seeds, final, level="image"):
    sampler = ses.SelectiveSampler(recs, batch_size=8, batches_per_epoch=1, lesion_margin=3.75)
    results = {("SeS", 0): (None, sampler, _history([0.5, 0.8])), ("NSeS", 0): (None, sampler, _history([0.5, 0.7]))}
    params = {"ses_image_size": 96, "ses_epochs": 2, "ses_batches_per_epoch": 3, "ses_batch_size": 16,
              "ses_n_seeds": 1, "ses_refresh_every": 2, "ses_init": "default", "ses_positives": "lesion",
              "ses_monitor_stride": 4}
    diag = {"az_step": 0.25, "SeS": {"ci_width_mean": float("nan")}}
    return ses_report.notebook_metrics(
        plateau={"SeS": [1], "NSeS": [2]}, ratios=np.array(ratio_seeds, float), final_az=final, level=level,
        diag=diag, results=results, params=params, n_train=4, n_monitor=4, scale={}, top1_share=0.2, ess=100.0,
        seconds=3.0)


def test_notebook_metrics_keeps_the_keys_others_read(recs):
    final = {"SeS": np.array([0.9]), "NSeS": np.array([0.8])}
    r = _record(recs, [0.5], final)
    text = json.dumps(r, allow_nan=False)  # NaN became null
    assert json.loads(text)["plateau_diagnostics"]["SeS"]["ci_width_mean"] is None
    for key in ("plateau_epochs", "plateau_ratio_ses_over_nses", "final_monitor_az", "monitor_level",
                "ses_top1pct_candidates_share", "seconds_per_epoch", "weight_pass_seconds", "scale"):
        assert key in r
    assert r["plateau_ratio_ses_over_nses"]["text"] == "0.50 [0.50, 0.50] (1 seeds)"
    assert r["final_monitor_az"]["SeS"] == {"mean": 0.9, "per_seed": [0.9]}
    assert r["seconds_per_epoch"] == {"training": 1.0, "weight_pass": 0.0, "monitoring": 0.5}
    pixel = _record(recs, [], final, level="pixel")
    assert pixel["final_monitor_az"]["SeS"]["mean"] is None and pixel["final_monitor_pixel_az"]["SeS"]["mean"] == 0.9
    assert pixel["plateau_ratio_ses_over_nses"]["mean"] is None


def test_paper_table_and_discussion_follow_the_record(recs):
    fast = _record(recs, [0.3], {"SeS": np.array([0.95]), "NSeS": np.array([0.80])})
    rows = {r["quantity"]: r for r in ses_report.paper_table(fast, dataset="synthetic", refresh_every=2)}
    assert rows["image side (px)"]["this run"] == 96 and rows["image side (px)"]["paper"] == 512
    assert rows["epochs to plateau, SeS"]["paper"] == 60 and rows["Az, SeS"]["this run"].startswith("0.950")
    text = ses_report.discussion(fast, n_candidates=1000)
    assert "fewer epochs than NSeS, as in the paper" in text and "SeS is higher by 0.150" in text
    slow = ses_report.discussion(_record(recs, [1.5], {"SeS": np.array([0.8]), "NSeS": np.array([0.8])}),
                                 n_candidates=1000)
    assert "MORE epochs than NSeS" in slow and "level with NSeS" in slow
    none = ses_report.discussion(_record(recs, [], {"SeS": np.array([0.8]), "NSeS": np.array([0.9])}),
                                 n_candidates=1000)
    assert "cannot say" in none and "SeS is lower" in none
