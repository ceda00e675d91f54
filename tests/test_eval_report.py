"""Tests of fundus_nb.eval_report (notebook 05's bookkeeping), against brute-force counts and the
metrics functions called one by one."""

import dataclasses

import numpy as np
import pytest
import torch
from _reference import assert_one_sentence, hemorrhage_record, sliced_patch
from sklearn.metrics import roc_auc_score

from fundus_nb import eval_report, lesions, metrics, models, patches, train


def _bumps(shape, points, amps, width=1.5):
    """A probability map: Gaussian bumps of the given amplitudes at (row, col) points."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape)
    for (r, c), a in zip(points, amps, strict=True):
        out = np.maximum(out, a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * width**2)))
    return out


@pytest.fixture(scope="module")
def toy():
    """Four lesion images and three lesion-free ones, maps with bumps on lesions and false alarms."""
    recs = [hemorrhage_record(i, lesion=i < 4, size=48) for i in range(7)]
    rng = np.random.default_rng(3)
    maps = []
    for r in recs:
        pts = [tuple(c) for c in r.hemorrhage_centers] + [tuple(rng.integers(14, 34, 2))]
        maps.append(_bumps((48, 48), pts, rng.uniform(0.3, 0.95, len(pts))))
    cands = [lesions.candidates(m, 1.0, 3, 0.05, fov=r.fov) for m, r in zip(maps, recs, strict=True)]
    test = eval_report.hemorrhage_test_set(recs, "toy")
    scores = {"SeS": np.array([m.max() for m in maps]), "NSeS": rng.uniform(0, 1, 7)}
    return test, {"SeS": cands, "NSeS": cands[::-1]}, scores


def test_independent_source_covers_the_three_cases():
    assert eval_report.independent_source("", "synthetic", 10, 2) == (
        True, "synthetic, 10 new patients (seed 2)", "synthetic", {"n_patients": 10, "seed": 2})
    assert eval_report.independent_source("messidor", "kaggle", 10, 2) == (True, "messidor", "messidor", {})
    assert eval_report.independent_source("", "synthetic", 0, 2)[:2] == (False, "notebook 04 test split")
    assert eval_report.independent_source("", "idrid", 10, 2)[0] is False


def test_test_set_counts_labels_and_lesions(toy):
    test = toy[0]
    np.testing.assert_array_equal(test.y, [1, 1, 1, 1, 0, 0, 0])
    assert test.n_lesions == 8 and test.two_classes and test.na_reason is None
    assert test.size_text == "7 / 4 / 8 (toy)" and str(test).startswith("hemorrhage test images (toy): 7 (4 with")
    one = eval_report.hemorrhage_test_set([hemorrhage_record(i, True) for i in range(3)], "all lesions")
    assert not one.two_classes and one.na_reason == "n/a: all 3 test images have hemorrhages (one class)"
    assert "n/a" in str(one)


def test_test_set_without_hemorrhages_is_a_clear_error():
    with pytest.raises(ValueError, match="holds no image with hemorrhages") as info:
        eval_report.hemorrhage_test_set([hemorrhage_record(i, False) for i in range(3)], "healthy")
    assert_one_sentence(info.value)


def test_report_table_is_image_level_report_per_model_and_subset(toy):
    test, _, scores = toy
    keep = np.array([1, 1, 1, 0, 1, 1, 0], bool)
    rows, table = eval_report.report_table(test.y, scores, 50, seed=1, keep=keep)
    for k, s in scores.items():
        want = metrics.image_level_report(test.y[keep], s[keep], 50, seed=1)
        assert rows[k] == want
        assert table.loc[k, "az"] == f"{want['az']:.3f} [{want['az_lo']:.3f}, {want['az_hi']:.3f}]"
        assert want["az"] == pytest.approx(roc_auc_score(test.y[keep], s[keep]))
        assert sum(table.loc[k, c] for c in ("tp", "fn", "fp", "tn")) == keep.sum()


def test_quality_tables_drop_poor_images_or_say_why_not(toy):
    test, _, scores = toy
    assert eval_report.quality_tables(test, scores, 20, 0) == (0, None, None)  # no grades
    graded = [dataclasses.replace(r, quality="poor" if i in (0, 5) else "good") for i, r in enumerate(test.records)]
    n, rows, table = eval_report.quality_tables(eval_report.hemorrhage_test_set(graded, "q"), scores, 20, 0)
    keep = np.array([0, 1, 1, 1, 1, 0, 1], bool)
    assert n == 2 and rows["SeS"] == metrics.image_level_report(test.y[keep], scores["SeS"][keep], 20, seed=0)
    assert list(table.index) == ["SeS", "NSeS"]
    one_left = [dataclasses.replace(r, quality="poor" if i >= 4 else "good") for i, r in enumerate(test.records)]
    assert eval_report.quality_tables(eval_report.hemorrhage_test_set(one_left, "q"), scores, 20, 0) == (3, None, None)


def _brute_froc_point(test, cands, t, tol):
    """Sensitivity and FP per lesion-free image at threshold t, counted one lesion and detection at a time."""
    found = fp = 0
    for r, y, c in zip(test.records, test.y, cands, strict=True):
        det = [(row, col) for row, col, p in c.as_detections() if p >= t]
        if y == 0:
            fp += len(det)
        for centre in r.hemorrhage_centers:
            found += any(np.hypot(centre[0] - a, centre[1] - b) <= tol for a, b in det)
    return found / test.n_lesions, fp / int((test.y == 0).sum())


def test_froc_curves_match_a_brute_force_count(toy):
    test, cands, _ = toy
    res = eval_report.froc_curves(test, cands, 2.0, 30, seed=0)
    assert res.paper_rule and res.fp_rule.startswith("paper") and res.title == "FROC"
    assert res.negative_ids == ["im4", "im5", "im6"]
    for label, curve in res.curves.items():
        assert len(curve) > 3
        for t, fp, sens in zip(curve.thresholds, curve.fp_per_image, curve.sensitivity, strict=True):
            assert (sens, fp) == pytest.approx(_brute_froc_point(test, cands[label], t, 2.0))
        for k, rate in enumerate(eval_report.FP_RATES):  # best sensitivity with FP/image <= rate
            ok = [s for s, f in zip(curve.sensitivity, curve.fp_per_image, strict=True) if f <= rate]
            assert res.at[label][k] == pytest.approx(max(ok, default=0.0))
        v, lo, hi = res.ci[label]
        np.testing.assert_allclose(v, res.at[label])
        assert np.all(lo <= hi)


def test_froc_curves_fall_back_without_lesion_free_images(toy):
    test, cands, _ = toy
    sub = eval_report.hemorrhage_test_set(test.records[:4], "lesions only")
    res = eval_report.froc_curves(sub, {"SeS": cands["SeS"][:4]}, 2.0, 30, seed=0)
    assert not res.paper_rule and res.fp_rule.startswith("fallback") and res.ci == {}
    assert "FALLBACK" in res.x_label
    # fallback: a detection is false when farther than the tolerance from every lesion of its image
    curve, t = res.curves["SeS"], res.curves["SeS"].thresholds[-1]
    far = sum(sum(p >= t and np.hypot(*(r.hemorrhage_centers - (a, b)).T).min() > 2.0
                  for a, b, p in c.as_detections()) for r, c in zip(sub.records, cands["SeS"][:4], strict=True))
    assert curve.fp_per_image[-1] == pytest.approx(far / 4)


def test_threshold_at_fp_and_gallery_against_brute_force(toy):
    test, cands, scores = toy
    curve = eval_report.froc_curves(test, cands, 2.0, 10, 0).curves["SeS"]
    for rate in (0.0, 0.4, 1.0, 100.0):
        ok = [t for t, f in zip(curve.thresholds, curve.fp_per_image, strict=True) if f <= rate]
        assert eval_report.threshold_at_fp(curve, rate) == (min(ok) if ok else curve.thresholds[0])
    empty = metrics.FROCCurve(np.zeros(0), np.zeros(0), np.zeros(0), 1, 1)
    assert eval_report.threshold_at_fp(empty) == 1.0
    s = np.array([0.9, 0.2, 0.5, 0.7, 0.8, 0.1, 0.6])
    pos, worst = eval_report.gallery(test.y, s, 4)
    np.testing.assert_array_equal(pos, [0, 1, 2, 3])
    assert worst == [1, 2, 4, 6]  # two lowest-scoring lesion images, then the highest lesion-free ones


def test_score_models_are_the_maps_scores_and_candidates_one_by_one():
    recs = [hemorrhage_record(i, lesion=i % 2 == 0, size=48) for i in range(2)]
    torch.manual_seed(0)
    model = models.SeSNet().eval()
    maps, scores, cands = eval_report.score_models({"SeS": model}, recs, 1.0, 3.4, 0.0)
    for r, m, s, c in zip(recs, maps["SeS"], scores["SeS"], cands["SeS"], strict=True):
        np.testing.assert_allclose(m, models.dense_probability_map(model, r.image, r.fov), atol=1e-6)
        assert s == pytest.approx(lesions.image_score(m, 1.0, r.fov))
        want = lesions.candidates(m, 1.0, 3, 0.0, fov=r.fov, return_masks=True)
        np.testing.assert_array_equal(c.as_detections(), want.as_detections())
        assert c.labels is not None


def test_plateau_scores_read_the_checkpoint_of_the_plateau_epoch(tmp_path):
    recs = [hemorrhage_record(i, lesion=i % 2 == 0, size=48) for i in range(2)]
    torch.manual_seed(1)
    at_plateau, final = models.SeSNet().eval(), models.SeSNet().eval()
    ck = train.checkpoint_path(tmp_path / "sesnet_ses_seed0", 3)
    ck.parent.mkdir()
    torch.save({"format": train.CHECKPOINT_FORMAT, "model": at_plateau.state_dict()}, ck)
    assert eval_report.plateau_scores(tmp_path, {"SeS": [5]}, 0, recs, 1.0, {"SeS": final}) == {}  # no epoch 5
    out = eval_report.plateau_scores(tmp_path, {"SeS": [3, 9]}, 0, recs, 1.0, {"SeS": final})
    assert list(out) == ["SeS at its plateau (epoch 3, stride 4)", "SeS final (epoch of the saved model, stride 4)"]
    for model, got in zip((at_plateau, final), out.values(), strict=True):
        maps = [models.dense_probability_map(model, r.image, r.fov, stride=4) for r in recs]
        want = [lesions.image_score(m, 0.25, r.fov[::4, ::4]) for m, r in zip(maps, recs, strict=True)]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_exudate_map_is_the_patch_probability_at_each_grid_centre():
    rec = hemorrhage_record(0, True, size=64)
    torch.manual_seed(0)
    lenet = models.LeNet().eval()
    exact = eval_report.exudate_map(lenet, rec, 1)
    np.testing.assert_allclose(exact, models.dense_probability_map(lenet, rec.image, rec.fov), atol=1e-6)
    coarse = eval_report.exudate_map(lenet, rec, 8)
    assert coarse.shape == rec.fov.shape and np.all(coarse[~rec.fov] == 0)
    rr, cc = patches.patchify(rec.fov, 48, 8)
    cut = np.stack([sliced_patch(rec.image, r, c, 48) for r, c in zip(rr, cc, strict=True)])
    want = models.predict_proba(lenet, cut)
    np.testing.assert_allclose(coarse[rr, cc], want, atol=1e-6)


def test_egl_patch_test_classifies_the_drawn_patches():
    rec = dataclasses.replace(hemorrhage_record(0, True, size=96), hemorrhage_mask=None, hemorrhage_centers=None)
    rec = dataclasses.replace(rec, exudate_mask=np.zeros((96, 96), bool))
    rec.exudate_mask[40:46, 40:46] = True
    torch.manual_seed(0)
    lenet = models.LeNet().eval()
    scores, n_pos, n_neg = eval_report.egl_patch_test(lenet, [rec], 20, np.random.default_rng(0))
    assert n_pos == 20 and n_neg == 20  # 36 exudate pixels, many healthy ones: 20 drawn of each
    rng = np.random.default_rng(0)  # the same draws, patches cut by slicing
    picked = []
    for rows, cols in (patches.exudate_positives(rec), patches.exudate_negatives(rec)):
        take = rng.choice(len(rows), 20, replace=False)
        picked.append(np.stack([sliced_patch(rec.image, rows[i], cols[i], 48) for i in take]))
    p = models.predict_proba(lenet, np.concatenate(picked))
    assert scores == metrics.patch_metrics(np.r_[np.ones(20, int), np.zeros(20, int)], (p >= 0.5).astype(int))


def _results(toy, p_value=0.2, shift=0.0):
    test, cands, scores = toy
    scores = {"SeS": scores["SeS"] + shift * test.y, "NSeS": scores["NSeS"]}
    rows, _ = eval_report.report_table(test.y, scores, 30, 0)
    froc = eval_report.froc_curves(test, cands, 2.0, 30, 0)
    settings = {"image_size": 48, "tolerance_px_at_run": 0.75, "n_bootstrap": 30}
    return eval_report.notebook_metrics(
        test=test, table3_rows=rows, table4_rows=None, paired=(0.1, p_value), plateau={}, froc=froc,
        patch_scores={"f_measure": 0.5, "sensitivity": 0.4, "specificity": 0.6}, n_patches=40,
        egl_independent=None, settings=settings)


def test_notebook_metrics_keep_the_keys_other_notebooks_read(toy):
    r = _results(toy)
    for key in ("size_text", "paired_text"):
        assert isinstance(r["test"][key], str)
    for k in ("ses", "nses"):
        assert r["test"][k]["text"].endswith(")") and " / " in r["test"][k]["froc_text"]
        label = eval_report.NAMES[k]
        assert r["image_level"][k]["az"] == pytest.approx(roc_auc_score(toy[0].y, toy[2][label]))
        assert 0 <= r["froc"][k]["sens_at_0p1"] <= r["froc"][k]["sens_at_1"] <= 1
        assert r["froc"][k]["n_lesions"] == 8
    assert r["test"]["paired_text"] == "+0.100, p = 0.2" and r["egl_patch_test"]["n_patches"] == 40
    assert set(eval_report.paper_table(r).columns) == {"paper", "this run", "how ours differs"}


def test_discussion_wording_follows_the_numbers(toy):
    weak = eval_report.discussion(_results(toy, p_value=0.2))
    assert "cannot tell SeS from NSeS at the 5 % level" in weak
    strong = _results(toy, p_value=0.001)
    assert "it can tell SeS from NSeS" in eval_report.discussion(strong)
    il = strong["image_level"]
    il["ses"].update(az_lo=0.9, az_hi=0.95)
    il["nses"].update(az_lo=0.5, az_hi=0.6)
    text = eval_report.discussion(strong)
    assert "the 95 % CIs do not overlap" in text and "even though" not in text and "met by both" in text
    il["nses"].update(az_lo=0.5, az_hi=0.92)
    text = eval_report.discussion(strong)
    assert "the 95 % CIs overlap" in text and "even though the CIs overlap" in text and "missed by NSeS" in text
    f = strong["froc"]
    f["ses"].update(sens_at_0p1=0.6, sens_at_1=0.8)
    f["nses"].update(sens_at_0p1=0.3, sens_at_1=0.7)
    assert "the same direction, SeS ahead at both rates" in eval_report.discussion(strong)
    f["nses"].update(sens_at_1=0.9)
    assert "not the paper's direction" in eval_report.discussion(strong)
    f["nses"].update(sens_at_0p1=0.6, sens_at_1=0.8)
    assert "no difference at either rate" in eval_report.discussion(strong)
    strong["paired_test"]["p_value"] = 0.0004
    assert "p < 0.001: it can tell" in eval_report.discussion(strong)


def test_paper_table_reads_the_training_row_from_notebook_04(toy):
    r = _results(toy)
    assert eval_report.paper_table(r).loc["training (both networks)", "this run"] == "see notebook 04"
    ses = {"epochs": 30, "patches_per_epoch": 1280, "n_train_images": 32}
    row = eval_report.paper_table(r, ses).loc["training (both networks)"]
    assert row["this run"] == "30 epochs of 1,280 patches, 32 training images" and row["paper"].startswith("SeS 60")


def test_one_class_test_set_is_reported_as_na_with_the_fallback_rule(toy):
    test, cands, _ = toy
    one = eval_report.hemorrhage_test_set(test.records[:4], "lesions only")
    froc = eval_report.froc_curves(one, {k: v[:4] for k, v in cands.items()}, 2.0, 30, 0)
    r = eval_report.notebook_metrics(
        test=one, table3_rows=None, table4_rows=None, paired=(None, None), plateau={}, froc=froc,
        patch_scores={"f_measure": 0.5, "sensitivity": 0.4, "specificity": 0.6}, n_patches=40,
        egl_independent=None, settings={"image_size": 48, "tolerance_px_at_run": 0.75, "n_bootstrap": 30})
    na = "n/a: all 4 test images have hemorrhages (one class)"
    assert r["image_level"]["ses"] == {"az": None, "az_text": na, "reason": na}
    assert r["test"]["ses"]["text"] == na and r["test"]["paired_text"] == na
    assert r["froc"]["ses"]["fp_rule"].startswith("fallback") and "no CI" in r["test"]["ses"]["froc_text"]
    text = eval_report.discussion(r)
    assert f"are {na}" in text and "not comparable with the paper's Fig. 7" in text and "Table IV was skipped" in text
    assert eval_report.paper_table(r).loc["SeS FROC sensitivity @0.1 / @1 FP/image", "how ours differs"].startswith(
        "FALLBACK")
