"""Tests of fundus_nb.metrics against independent references (scikit-learn, scipy, brute force)."""

import numpy as np
import pytest
from _reference import assert_one_sentence
from scipy.stats import norm
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from fundus_nb import metrics
from fundus_nb.metrics import froc, froc_sensitivity_ci, sensitivity_at


def _scores(n=80, seed=1, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s)  # many tied scores across classes
    return y, s


# ----------------------------------------------------------------------------- bootstrap / AUC
def test_bootstrap_replicates_are_stratified_and_reproducible():
    y, _ = _scores()
    a = np.concatenate(list(metrics.stratified_bootstrap(y, 50, seed=3)))
    b = np.concatenate(list(metrics.stratified_bootstrap(y, 50, seed=3)))
    assert a.shape == (50, y.size)
    np.testing.assert_array_equal(a, b)
    assert np.all(y[a].sum(axis=1) == y.sum())  # every replicate keeps the class counts
    c = np.concatenate(list(metrics.stratified_bootstrap(y, 50, seed=4)))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_aucs_match_sklearn_on_same_replicates(ties):
    y, s = _scores(ties=ties)
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 200, seed=7)))
    expected = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    got = metrics.bootstrap_aucs(y, s, 200, seed=7)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_roc_auc_ci_matches_sklearn_percentiles():
    y, s = _scores(ties=True)
    auc, lo, hi = metrics.roc_auc_ci(y, s, n_bootstrap=300, alpha=0.1, seed=2)
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 300, seed=2)))
    reps = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert lo == pytest.approx(np.quantile(reps, 0.05))
    assert hi == pytest.approx(np.quantile(reps, 0.95))
    assert lo < auc < hi


def test_roc_auc_ci_chunking_does_not_change_results(monkeypatch):
    y, s = _scores()
    full = metrics.bootstrap_aucs(y, s, 64, seed=5)
    monkeypatch.setattr(metrics, "_CHUNK_VALUES", y.size * 10)  # chunks of 10 replicates
    chunked_idx = np.concatenate(list(metrics.stratified_bootstrap(y, 64, seed=5)))
    expected = np.array([roc_auc_score(y[i], s[i]) for i in chunked_idx])
    np.testing.assert_allclose(metrics.bootstrap_aucs(y, s, 64, seed=5), expected, atol=1e-12)
    assert full.shape == (64,)


def test_paired_auc_test_against_direct_computation():
    y, s = _scores(n=100)
    rng = np.random.default_rng(9)
    s_b = s + rng.normal(scale=1.5, size=s.size)  # a noisier model
    delta, p = metrics.paired_auc_test(y, s, s_b, n_bootstrap=300, seed=1)
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 300, seed=1)))
    diffs = np.array([roc_auc_score(y[i], s[i]) - roc_auc_score(y[i], s_b[i]) for i in idx])
    assert delta == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, s_b))
    assert p == pytest.approx(2 * norm.sf(abs(delta) / diffs.std(ddof=1)))
    assert metrics.paired_auc_test(y, s, s, n_bootstrap=50) == (0.0, 1.0)


def test_paired_auc_test_detects_a_clearly_better_model():
    y, s = _scores(n=300, seed=4)
    rng = np.random.default_rng(0)
    delta, p = metrics.paired_auc_test(y, s, rng.normal(size=s.size), n_bootstrap=500)
    assert delta > 0.2 and p < 0.001


# ----------------------------------------------------------------------------- operating point
def test_operating_point_against_brute_force():
    for seed in range(5):
        y, s = _scores(n=60, seed=seed, ties=seed % 2 == 0)
        best = None
        for t in np.unique(s)[::-1]:  # decreasing: ties keep the higher threshold
            pred = s >= t
            sens = np.mean(pred[y == 1])
            spec = np.mean(~pred[y == 0])
            d = np.hypot(1 - spec, 1 - sens)
            if best is None or d < best[0] - 1e-15:
                best = (d, t, sens, spec)
        op = metrics.operating_point(y, s)
        assert op.threshold == pytest.approx(best[1])
        assert op.sensitivity == pytest.approx(best[2])
        assert op.specificity == pytest.approx(best[3])


def test_operating_point_lies_on_sklearn_roc():
    y, s = _scores()
    op = metrics.operating_point(y, s)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    i = np.flatnonzero(thr == op.threshold)[0]
    assert (tpr[i], 1 - fpr[i]) == pytest.approx((op.sensitivity, op.specificity))


# ----------------------------------------------------------------------------- binary metrics
def test_binary_metrics_ci_against_sklearn_on_same_replicates():
    y, s = _scores(n=90)
    pred = (s > 0.6).astype(int)
    out = metrics.binary_metrics_ci(y, pred, n_bootstrap=200, alpha=0.05, seed=11)
    assert out["sensitivity"][0] == pytest.approx(recall_score(y, pred))
    assert out["specificity"][0] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert out["kappa"][0] == pytest.approx(cohen_kappa_score(y, pred))
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 200, seed=11)))
    kap = np.array([cohen_kappa_score(y[i], pred[i]) for i in idx])
    sens = np.array([recall_score(y[i], pred[i]) for i in idx])
    assert out["kappa"][1:] == pytest.approx(tuple(np.quantile(kap, [0.025, 0.975])))
    assert out["sensitivity"][1:] == pytest.approx(tuple(np.quantile(sens, [0.025, 0.975])))


def test_quality_mask_and_filtered_report():
    y, s = _scores(n=60)
    quality = ["good" if i % 4 else "Poor" for i in range(y.size)]
    keep = metrics.quality_mask(quality)
    assert keep.sum() == 45 and not keep[0] and keep[1]
    rep = metrics.image_level_report(y[keep], s[keep], n_bootstrap=100)
    assert rep["az"] == pytest.approx(roc_auc_score(y[keep], s[keep]))
    assert rep["tp"] + rep["fn"] + rep["fp"] + rep["tn"] == rep["n_images"] == 45
    assert rep["az_lo"] <= rep["az"] <= rep["az_hi"]
    with pytest.raises(ValueError, match="quality is unknown"):
        metrics.quality_mask(["good", None])


def test_patch_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.8, y, 1 - y)
    m = metrics.patch_metrics(y, p)
    assert m["f_measure"] == pytest.approx(f1_score(y, p))
    assert m["sensitivity"] == pytest.approx(recall_score(y, p))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - p))
    assert metrics.patch_metrics([0, 1, 1], [0, 0, 0])["f_measure"] == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.roc_auc_ci([1, 1, 1], [0.1, 0.2, 0.3]), "only positive"),
        (lambda: metrics.roc_auc_ci([0, 1, 0], [0.1, np.nan, 0.3]), "NaN"),
        (lambda: metrics.roc_auc_ci([0, 1, 2], [0.1, 0.2, 0.3]), "only 0"),
        (lambda: metrics.roc_auc_ci([0, 1], [0.1, 0.2, 0.3]), "one score per label"),
        (lambda: metrics.roc_auc_ci([0, 1], [0.1, 0.2], alpha=1.5), "alpha"),
        (lambda: metrics.roc_auc_ci([0, 1], [0.1, 0.2], n_bootstrap=0), "n_bootstrap"),
        (lambda: metrics.operating_point([0, 0], [0.1, 0.2]), "only negative"),
        (lambda: metrics.paired_auc_test([0, 1], [0.1, 0.2], [0.3]), "score_b"),
        (lambda: metrics.patch_metrics([0, 1], [0, 1, 1]), "one prediction per patch"),
        (lambda: metrics.binary_metrics([0, 1], [0, 1, 1]), "one prediction per image"),
        (lambda: metrics.roc_curve_ci([0, 1], [0.1, 0.2], n_grid=1), "n_grid"),
        (lambda: metrics.paired_auc_test([0, 1], [0.1, 0.2], [0.3, 0.1], n_bootstrap=1), "n_bootstrap"),
        (lambda: metrics.bootstrap_ratio([1.0, 2.0], [1.0]), "one value per seed"),
        (lambda: metrics.grid_scores([0, 1], [0.5], weights=[1, 1]), "same length"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert_one_sentence(info.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.roc_auc_ci(["a", "b"], [0.1, 0.2]), "y_true must hold 0/1 numbers"),
        (lambda: metrics.roc_auc_ci([0, 1], ["x", "y"]), "y_score must hold numbers"),
        (lambda: metrics.roc_auc_ci([0, 1], [0.1, 0.2], n_bootstrap="100"), "n_bootstrap must be a whole number"),
        (lambda: metrics.roc_auc_ci([0, 1], [0.1, 0.2], alpha="0.05"), "alpha must be a number"),
    ],
)
def test_wrong_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_confusion_counts_match_sklearn_for_one_vector_and_for_replicate_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    p = np.where(rng.random(50) < 0.7, y, 1 - y)
    np.testing.assert_array_equal(metrics._confusion_counts(y, p), confusion_matrix(y, p, labels=[0, 1]).ravel())
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 40, seed=2)))
    rows = metrics._confusion_counts(y[idx], p[idx])
    want = np.array([confusion_matrix(y[i], p[i], labels=[0, 1]).ravel() for i in idx])
    np.testing.assert_array_equal(rows, want)
    # one class only in a row still gives four cells (sklearn's labels=[0, 1])
    np.testing.assert_array_equal(metrics._confusion_counts(np.zeros(4, int), np.array([0, 1, 1, 0])), [2, 2, 0, 0])
    sens, spec, kappa = metrics._rates(rows)
    np.testing.assert_allclose(kappa, [cohen_kappa_score(y[i], p[i]) for i in idx], atol=1e-12)
    np.testing.assert_allclose(spec, [recall_score(1 - y[i], 1 - p[i]) for i in idx], atol=1e-12)


# ----------------------------------------------------------------------------- FROC
SHAPES = {"a": (64, 64), "n": (64, 64)}


def _brute_froc(detections, lesions, negative_ids, tol):
    """Reference FROC: explicit loops over thresholds, lesions and detections."""
    probs = sorted({float(d[2]) for dets in detections.values() for d in dets}, reverse=True)
    n_les = sum(len(v) for v in lesions.values())
    sens, fps = [], []
    for t in probs:
        hit = 0
        for key, centres in lesions.items():
            for c in centres:
                for d in detections.get(key, []):
                    if d[2] >= t and np.hypot(d[0] - c[0], d[1] - c[1]) <= tol:
                        hit += 1
                        break
        fp = sum(1 for key in negative_ids for d in detections.get(key, []) if d[2] >= t)
        sens.append(hit / n_les)
        fps.append(fp / len(negative_ids))
    return np.array(probs), np.array(fps), np.array(sens)


def _random_case(rng):
    detections, lesions = {}, {}
    for i in range(rng.integers(2, 6)):
        c = rng.uniform(0, 60, (rng.integers(1, 5), 2))
        lesions[f"p{i}"] = c
        near = c[rng.integers(0, len(c), rng.integers(0, 6))] + rng.normal(0, 6, (1, 2))
        far = rng.uniform(0, 60, (rng.integers(0, 4), 2))
        pts = np.vstack([near.reshape(-1, 2), far])
        detections[f"p{i}"] = np.column_stack([pts, np.round(rng.random(len(pts)), 1)])
    negs = [f"n{i}" for i in range(rng.integers(1, 5))]
    for k in negs:
        m = rng.integers(0, 5)
        detections[k] = np.column_stack([rng.uniform(0, 60, (m, 2)), np.round(rng.random(m), 1)])
    return detections, lesions, negs


def test_froc_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(40):
        det, les, negs = _random_case(rng)
        curve = metrics.froc(det, les, negs, tolerance=8.0)
        t, fp, se = _brute_froc(det, les, negs, 8.0)
        np.testing.assert_allclose(curve.thresholds, t)
        np.testing.assert_allclose(curve.fp_per_image, fp)
        np.testing.assert_allclose(curve.sensitivity, se)
        assert np.all(np.diff(curve.thresholds) < 0)
        # sensitivity_at against a brute-force scan
        for rate in (0.1, 0.5, 1.0, 2.0):
            ok = fp <= rate
            want = se[ok].max() if ok.any() else 0.0
            assert metrics.sensitivity_at(curve, [rate])[0] == pytest.approx(want)


def test_froc_edge_cases():
    les = {"a": np.array([[10.0, 10.0], [40.0, 40.0]])}
    # no detections at all
    curve = metrics.froc({}, les, ["n"])
    assert len(curve) == 0
    np.testing.assert_array_equal(metrics.sensitivity_at(curve, [0.1, 1.0]), [0.0, 0.0])
    # a detection exactly at the tolerance counts; just beyond does not
    curve = metrics.froc({"a": np.array([[18.0, 10.0, 0.9], [40.0, 48.001, 0.8]])}, les, ["n"])
    np.testing.assert_allclose(curve.sensitivity, [0.5, 0.5])
    # two detections on one lesion count once; ties give one entry
    det = {
        "a": np.array([[10.0, 11.0, 0.7], [11.0, 10.0, 0.7], [40.0, 41.0, 0.7]]),
        "n": np.array([[5.0, 5.0, 0.7], [6.0, 6.0, 0.2]]),
    }
    curve = metrics.froc(det, les, ["n", "m"])
    np.testing.assert_allclose(curve.thresholds, [0.7, 0.2])
    np.testing.assert_allclose(curve.sensitivity, [1.0, 1.0])
    np.testing.assert_allclose(curve.fp_per_image, [0.5, 1.0])
    np.testing.assert_allclose(metrics.sensitivity_at(curve, [0.1, 0.5, 1.0]), [0.0, 1.0, 1.0])
    # FPs on lesion images are not counted (the paper's rule)
    curve = metrics.froc({"a": np.array([[50.0, 5.0, 0.9]])}, les, ["n"])
    np.testing.assert_allclose(curve.fp_per_image, [0.0])
    np.testing.assert_allclose(curve.sensitivity, [0.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(detections={"zz": np.array([[1.0, 1.0, 0.5]])}), "neither in `lesions`"),
        (dict(lesions={"a": np.array([[1.0, 1.0]]), "n": np.array([[2.0, 2.0]])}), "negative_ids"),
        (dict(negative_ids=[]), "negative_ids is empty"),
        (dict(lesions={"a": np.zeros((0, 2))}), "no reference lesions"),
        (dict(detections={"n": np.array([[1.0, 1.0, np.nan]])}), "NaN"),
        (dict(detections={"a": np.array([[1.0, 1.0]])}), r"\(N, 3\)"),
        (dict(detections={"a": np.array([[100.0, 1.0, 0.5]])}, image_shapes=SHAPES), "outside"),
        (dict(lesions={"a": np.array([[1.0, -3.0]])}, image_shapes=SHAPES), "outside"),
        (dict(detections={"n": np.array([[1.0, 70.0, 0.5]])}, image_shapes=SHAPES), "outside"),
        (dict(image_shapes={"a": (64, 64)}), "image_shapes lacks"),
        (dict(tolerance=-1.0), "tolerance"),
    ],
)
def test_froc_bad_input(kwargs, match):
    args = dict(detections={}, lesions={"a": np.array([[5.0, 5.0]])}, negative_ids=["n"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        metrics.froc(**args)
    assert_one_sentence(info.value)


def test_sensitivity_at_rejects_negative_rates():
    curve = metrics.froc({}, {"a": np.array([[5.0, 5.0]])}, ["n"])
    with pytest.raises(ValueError, match="fp_rates"):
        metrics.sensitivity_at(curve, [-1.0])


def test_roc_curve_ci_against_sklearn_roc_on_same_replicates():
    y, s = _scores(n=70, ties=True)

    def step_tpr(yy, ss, grid):  # reference: sklearn's ROC, highest TPR at FPR <= f
        fpr, tpr, _ = roc_curve(yy, ss, drop_intermediate=False)
        return np.array([tpr[fpr <= f + 1e-12].max() for f in grid])

    band = metrics.roc_curve_ci(y, s, n_bootstrap=60, alpha=0.1, seed=3, n_grid=21)
    np.testing.assert_allclose(band.tpr, step_tpr(y, s, band.fpr), atol=1e-12)
    idx = np.concatenate(list(metrics.stratified_bootstrap(y, 60, seed=3)))
    reps = np.array([step_tpr(y[i], s[i], band.fpr) for i in idx])
    np.testing.assert_allclose(band.lo, np.quantile(reps, 0.05, axis=0), atol=1e-12)
    np.testing.assert_allclose(band.hi, np.quantile(reps, 0.95, axis=0), atol=1e-12)
    assert np.all(band.lo <= band.tpr + 1e-12) and np.all(band.tpr <= band.hi + 1e-12)


# ------------------------------------------------------------------ label efficiency (issue 10)


def test_bootstrap_ratio_matches_a_loop():
    M = metrics
    a, b = np.array([100.0, 80, 120, 60, 90]), np.array([150.0, 100, 110, 120, 100])
    out = M.bootstrap_ratio(a, b, n_bootstrap=500, seed=4)
    logs = np.log(a / b)
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 5, (500, 5))
    reps = [np.exp(np.mean(logs[row])) for row in idx]
    assert out["mean"] == pytest.approx(np.exp(logs.mean()))
    assert out["ci_low"] == pytest.approx(np.quantile(reps, 0.025))
    assert out["ci_high"] == pytest.approx(np.quantile(reps, 0.975))
    assert out["per_seed"] == pytest.approx((a / b).tolist()) and out["n_used"] == 5
    out = M.bootstrap_ratio([1.0, np.nan], [2.0, 1.0], n_bootstrap=10)
    assert out["per_seed"][1] is None and out["n_used"] == 1


def test_grid_scores_match_sklearn_and_count_fp_per_kind():
    M = metrics
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(int)
    p = np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1)
    kinds = np.where(y == 1, 0, rng.integers(0, 3, 300))
    w = rng.uniform(1, 3, 300)
    out = M.grid_scores(y, p, kinds, ["none", "drusen", "rim"], weights=w)
    assert out["ap"] == pytest.approx(average_precision_score(y, p, sample_weight=w))
    assert out["prevalence"] == pytest.approx(np.sum(w * y) / w.sum())
    for code, key in enumerate(["plain", "drusen", "rim"]):
        m = (kinds == code) & (y == 0)
        want = sum(wi for wi, pi in zip(w[m], p[m], strict=True) if pi >= 0.5) / w[m].sum()
        assert out["fp_rate"][key] == pytest.approx(want)


# ------------------------------------------------------------------------------ FROC bootstrap CI
def test_froc_sensitivity_ci_matches_a_brute_force_bootstrap_loop():
    """Each replicate rebuilt by hand (images copied under new ids) and scored by froc()."""
    rng = np.random.default_rng(4)
    lesions, det, negs = {}, {}, []
    for i in range(7):  # lesion images: 1-3 lesions, detections near some of them plus strays
        c = rng.uniform(10, 90, (rng.integers(1, 4), 2))
        near = c[rng.random(len(c)) < 0.7] + rng.normal(0, 2.0, (1, 2))
        stray = rng.uniform(0, 99, (rng.integers(0, 3), 2))
        pts = np.r_[near, stray]
        lesions[f"L{i}"] = c
        det[f"L{i}"] = np.c_[pts, rng.random(len(pts))]
    for j in range(6):  # negative images: 0-4 false detections
        pts = rng.uniform(0, 99, (rng.integers(0, 5), 2))
        negs.append(f"N{j}")
        det[f"N{j}"] = np.c_[pts, rng.random(len(pts))]
    value, lo, hi = froc_sensitivity_ci(det, lesions, negs, (0.1, 1.0), tolerance=5.0, n_bootstrap=300, seed=9)
    np.testing.assert_allclose(value, sensitivity_at(froc(det, lesions, negs, 5.0), [0.1, 1.0]))
    # the documented draws, replayed
    r = np.random.default_rng(9)
    les_ids, neg_ids = list(lesions), negs
    i_l = r.integers(0, len(les_ids), (300, len(les_ids)))
    i_n = r.integers(0, len(neg_ids), (300, len(neg_ids)))
    reps = []
    for b in range(300):
        d, les, ng = {}, {}, []
        for k, i in enumerate(i_l[b]):
            les[f"l{k}"], d[f"l{k}"] = lesions[les_ids[i]], det[les_ids[i]]
        for k, j in enumerate(i_n[b]):
            ng.append(f"n{k}")
            d[f"n{k}"] = det[neg_ids[j]]
        reps.append(sensitivity_at(froc(d, les, ng, 5.0), [0.1, 1.0]))
    want_lo, want_hi = np.percentile(np.array(reps), [2.5, 97.5], axis=0)
    np.testing.assert_allclose(lo, want_lo, atol=1e-12)
    np.testing.assert_allclose(hi, want_hi, atol=1e-12)
    assert np.all(lo <= value) and np.all(value <= hi) and np.any(hi > lo)
    with pytest.raises(ValueError, match="negative_ids is empty"):
        froc_sensitivity_ci({k: det[k] for k in lesions}, lesions, [], n_bootstrap=10)


# ------------------------------------------- FROC fallback (a test set without lesion-free images)
def _brute_froc_all_images(detections, lesions, tolerance):
    """Sensitivity and FP/image at every distinct probability, by explicit loops."""
    probs = sorted({float(d[2]) for det in detections.values() for d in det}, reverse=True)
    n_lesions = sum(len(c) for c in lesions.values())
    sens, fps = [], []
    for t in probs:
        found = fp = 0
        for key, centres in lesions.items():
            det = [d for d in detections.get(key, []) if d[2] >= t]
            for c in centres:
                if any(np.hypot(d[0] - c[0], d[1] - c[1]) <= tolerance for d in det):
                    found += 1
            for d in det:
                if all(np.hypot(d[0] - c[0], d[1] - c[1]) > tolerance for c in centres):
                    fp += 1
        sens.append(found / n_lesions)
        fps.append(fp / len(lesions))
    return np.array(probs), np.array(sens), np.array(fps)


def test_froc_all_images_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    lesions, detections = {}, {}
    for k in range(6):
        centres = rng.uniform(0, 100, (rng.integers(0, 5), 2))
        lesions[f"im{k}"] = centres
        near = centres + rng.normal(0, 5, centres.shape)  # some within 8 px, some not
        far = rng.uniform(0, 100, (rng.integers(0, 6), 2))
        pts = np.clip(np.vstack([near, far]), 0, 99)
        detections[f"im{k}"] = np.column_stack([pts, rng.uniform(0, 1, len(pts))])
    assert sum(len(c) for c in lesions.values()) > 0  # the seed draws lesions
    curve = metrics.froc_all_images(detections, lesions, 8.0, image_shapes={k: (100, 100) for k in lesions})
    thr, sens, fps = _brute_froc_all_images(detections, lesions, 8.0)
    np.testing.assert_allclose(curve.thresholds, thr)
    np.testing.assert_allclose(curve.sensitivity, sens)
    np.testing.assert_allclose(curve.fp_per_image, fps)
    assert curve.n_lesions == sum(len(c) for c in lesions.values())
    assert curve.n_negative_images == len(lesions)


def test_froc_all_images_small_case_by_hand():
    det = {"a": np.array([[10, 10, 0.9], [50, 50, 0.8], [11, 10, 0.3]]), "b": np.array([[5, 5, 0.7]])}
    les = {"a": np.array([[10, 12.0]]), "b": np.zeros((0, 2))}
    curve = metrics.froc_all_images(det, les, 8.0)
    # the lesion is found from 0.9 on; (50,50) at 0.8 and (5,5) at 0.7 are the false positives of 2 images
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.3])
    np.testing.assert_allclose(curve.sensitivity, [1, 1, 1, 1])
    np.testing.assert_allclose(curve.fp_per_image, [0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(metrics.sensitivity_at(curve, [0.1, 1.0]), [1.0, 1.0])


def test_froc_all_images_rejects_bad_input():
    les = {"a": np.array([[10, 12.0]])}
    with pytest.raises(ValueError, match="missing from `lesions`"):
        metrics.froc_all_images({"zz": np.array([[1, 1, 0.5]])}, les)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.froc_all_images({}, les, tolerance=-1)
    with pytest.raises(ValueError, match="no reference lesions"):
        metrics.froc_all_images({"a": np.array([[1, 1, 0.5]])}, {"a": np.zeros((0, 2))})
    with pytest.raises(ValueError, match="outside"):
        metrics.froc_all_images({"a": np.array([[500, 1, 0.5]])}, les, image_shapes={"a": (100, 100)})
