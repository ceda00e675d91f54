"""Solutions to the exercises of notebook 05 (evaluation: FROC, Az with bootstrap CIs, Tables III/IV).

Each ``exercise_N()`` restates its question, answers it in words (docstring) and checks the answer
on small data in a second or two: the notebook's toy FROC case, or simulated image scores.
Run all: ``python notebooks/solutions/05_evaluation.py``.
"""

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from fundus_nb import eval_report, metrics

# the notebook's toy FROC case: reference centres (row, col) and detections (row, col, probability)
TOY_LESIONS = {"a": np.array([[10, 10], [40, 40]]), "b": np.array([[20, 30]])}
TOY_DET = {"a": np.array([[12, 11, 0.9], [40, 52, 0.7], [30, 30, 0.4]]),
           "b": np.array([[21, 33, 0.6]]),
           "n1": np.array([[5, 5, 0.8], [50, 50, 0.3]]), "n2": np.array([[25, 25, 0.55]])}
TOY_NEG = ["n1", "n2"]


def froc_point_by_hand(t: float, tol: float) -> tuple[float, float]:
    """Lesion sensitivity and FP per lesion-free image of the toy case at threshold ``t``, counted by hand."""
    found = 0
    for key, centres in TOY_LESIONS.items():
        kept = TOY_DET[key][TOY_DET[key][:, 2] >= t]
        for centre in centres:
            found += bool(np.any(np.hypot(*(kept[:, :2] - centre).T) <= tol))
    false_pos = sum(int((TOY_DET[k][:, 2] >= t).sum()) for k in TOY_NEG)
    return found / 3, false_pos / len(TOY_NEG)


def point_on_curve(curve, t: float) -> tuple[float, float]:
    k = int(np.flatnonzero(curve.thresholds == t)[0])
    return float(curve.sensitivity[k]), float(curve.fp_per_image[k])


def simulated_scores(n_pos: int, n_neg: int, separation: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Labels and image scores: positives ~ N(separation, 1), negatives ~ N(0, 1)."""
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, rng.normal(0, 1, y.size) + separation * y


def mann_whitney_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Az as the share of (positive, negative) pairs the positive wins, ties counted 1/2."""
    sp, sn = s[y == 1][:, None], s[y == 0][None, :]
    return float(((sp > sn) + 0.5 * (sp == sn)).mean())


def exercise_1():
    """Raise the toy case's tolerance from 4 to 12 px: sensitivity and FP/image at t = 0.55?

    Answer: sensitivity rises from 2/3 to 3/3 (the detection 12 px from lesion (40, 40) of image a,
    p = 0.7, now hits it) and FP/image stays 1.0. Under the paper's rule the tolerance decides only
    which lesions are found; false positives are counted on lesion-free images, where no tolerance
    applies. So a larger ``froc_tolerance`` can only keep or raise the sensitivity at every FP rate.
    """
    assert froc_point_by_hand(0.55, 4.0) == (2 / 3, 1.0)
    assert froc_point_by_hand(0.55, 12.0) == (1.0, 1.0)
    curve = metrics.froc(TOY_DET, TOY_LESIONS, TOY_NEG, tolerance=12.0)
    assert point_on_curve(curve, 0.55) == (1.0, 1.0)
    # on a larger random case: the FP axis never moves, the sensitivity never falls with the tolerance
    rng = np.random.default_rng(0)
    lesions = {f"l{i}": rng.uniform(0, 100, (3, 2)) for i in range(20)}
    det = {k: np.column_stack([c + rng.normal(0, 6, c.shape), rng.uniform(0, 1, len(c))]) for k, c in lesions.items()}
    det |= {f"n{i}": np.column_stack([rng.uniform(0, 100, (4, 2)), rng.uniform(0, 1, 4)]) for i in range(20)}
    negatives = [f"n{i}" for i in range(20)]
    curves = [metrics.froc(det, lesions, negatives, tol) for tol in (2.0, 4.0, 8.0, 16.0)]
    for a, b in zip(curves, curves[1:], strict=False):
        np.testing.assert_array_equal(a.fp_per_image, b.fp_per_image)
        assert np.all(b.sensitivity >= a.sensitivity)
    print("sensitivity at 1 FP/image for tolerance 2, 4, 8, 16 px:",
          [round(float(metrics.sensitivity_at(c, 1.0)[0]), 3) for c in curves])


def exercise_2():
    """With four times as many test images, how wide is the Az CI?

    Answer: about half as wide: the bootstrap CI narrows about as 1/sqrt(number of images), so 4x
    the images give about 1/2 the width (the ratio below, averaged over simulated test sets, lies
    near 0.5).
    """
    rng = np.random.default_rng(0)
    widths = {}
    for n in (20, 80):  # positives = negatives = n
        w = []
        for _ in range(6):
            y, s = simulated_scores(n, n, 1.0, rng)
            _, lo, hi = metrics.roc_auc_ci(y, s, 1000, seed=0)
            w.append(hi - lo)
        widths[n] = float(np.mean(w))
    ratio = widths[80] / widths[20]
    print(f"mean Az CI width: {widths[20]:.3f} with 40 images, {widths[80]:.3f} with 160; ratio {ratio:.2f}")
    assert 0.35 < ratio < 0.7


def exercise_3():
    """Table IV: remove the poor-quality images (whose scores are noise) and rebuild Table III.

    Answer: Az rises, because the removed images carried no information about their label. On real
    data it can fall: if poor images were the easy ones (or removal leaves too few positives), or by
    chance on a small test set, whose CI is wide.
    """
    rng = np.random.default_rng(1)
    y, s = simulated_scores(30, 30, 1.5, rng)
    poor = rng.permutation(60) < 20
    s[poor] = rng.normal(0.5, 1.5, poor.sum())  # a poor image's score says nothing about its label
    quality = np.where(poor, "poor", "good")
    keep = metrics.quality_mask(quality)
    rows3, _ = eval_report.report_table(y, {"SeS": s}, 500, seed=0)
    rows4, table4 = eval_report.report_table(y, {"SeS": s}, 500, seed=0, keep=keep)
    print(table4)
    print(f"Az on all 60 images {rows3['SeS']['az']:.3f}, without the {poor.sum()} poor ones {rows4['SeS']['az']:.3f}")
    assert rows4["SeS"]["az"] > rows3["SeS"]["az"]
    assert rows4["SeS"]["az"] == roc_auc_score(y[keep], s[keep])


def exercise_4():
    """The toy case's FROC point at t = 0.3, by hand and against metrics.froc.

    Answer: 2 of 3 lesions found (sensitivity 0.667) and 3 false positives on 2 lesion-free images
    (1.5 FP/image: n1's 0.3 now counts). ``sensitivity_at(curve, 1.0)`` reads the best sensitivity
    at an FP rate of at most 1, and t = 0.3 exceeds it: it reads the lowest threshold still within
    1 FP/image, t = 0.4 (also 0.667).
    """
    sens, fp = froc_point_by_hand(0.3, 4.0)
    assert (sens, fp) == (2 / 3, 1.5)
    curve = metrics.froc(TOY_DET, TOY_LESIONS, TOY_NEG, tolerance=4.0)
    assert point_on_curve(curve, 0.3) == (sens, fp)
    k = int(np.flatnonzero(curve.fp_per_image <= 1.0)[-1])
    assert curve.thresholds[k] == 0.4 and metrics.sensitivity_at(curve, 1.0)[0] == curve.sensitivity[k]
    print(f"t = 0.3: sensitivity {sens:.3f} at {fp:.2f} FP/image; at <= 1 FP/image the curve reads t = 0.4")


def exercise_5():
    """Implement the paired bootstrap test of two models' Az and check it against the package.

    Answer: the same stratified rows for both models make the test paired; p is small when the
    observed difference is large against the spread of the replicate differences.
    """
    rng = np.random.default_rng(2)
    y, a = simulated_scores(25, 35, 1.2, rng)
    b = a + rng.normal(0, 1.0, y.size)  # model b: a's scores plus noise, so a should win
    n_rep, draw = 500, np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = np.concatenate([pos[draw.integers(0, len(pos), (n_rep, len(pos)))],
                           neg[draw.integers(0, len(neg), (n_rep, len(neg)))]], axis=1)
    diffs = np.array([mann_whitney_auc(y[r], a[r]) - mann_whitney_auc(y[r], b[r]) for r in rows])
    delta = mann_whitney_auc(y, a) - mann_whitney_auc(y, b)
    assert np.isclose(delta, roc_auc_score(y, a) - roc_auc_score(y, b))
    p = 2 * norm.sf(abs(delta) / diffs.std(ddof=1))
    want = metrics.paired_auc_test(y, a, b, n_rep, seed=0)
    np.testing.assert_allclose([delta, p], want, rtol=1e-9)
    print(f"Az(a) - Az(b) = {delta:+.3f}, paired bootstrap p = {p:.4f} (package: {want[1]:.4f})")


if __name__ == "__main__":
    for f in (exercise_1, exercise_2, exercise_3, exercise_4, exercise_5):
        print(f"--- {f.__name__}")
        f()
