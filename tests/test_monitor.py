"""Tests of fundus_nb.monitor: image scores against brute-force maps, monitoring Az, the plateau rule."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import brute_probability_map, hemorrhage_record, spread_sesnet
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from fundus_nb import lesions, monitor
from fundus_nb.train import History


@pytest.fixture(scope="module")
def pool():
    return [hemorrhage_record(i, lesion) for i, lesion in enumerate((True, False, True, False))]


def test_image_scores_and_monitoring_az(pool):
    model = spread_sesnet()
    scores, maps = monitor.image_scores(model, pool, sigma=1.5, return_maps=True)
    for k, rec in enumerate(pool):
        ref = brute_probability_map(model, rec.image, rec.fov)
        np.testing.assert_allclose(maps[k], ref, atol=1e-5)
        assert scores[k] == pytest.approx(gaussian_filter(ref.astype(np.float64), 1.5)[rec.fov].max(), abs=1e-5)
    mon = monitor.Monitor(pool, sigma=1.5)
    out = mon(model)
    np.testing.assert_allclose(mon.scores[0], scores)
    with pytest.raises(ValueError, match="only images with hemorrhages"):
        monitor.Monitor([pool[0], pool[2]])
    az, s, y = monitor.monitoring_az(model, pool, sigma=1.5)
    assert out["az"] == pytest.approx(az)
    assert y.tolist() == [1, 0, 1, 0]
    assert az == pytest.approx(roc_auc_score(y, scores))
    with pytest.raises(ValueError, match="monitoring split is empty"):
        monitor.monitoring_az(model, [])
    with pytest.raises(ValueError, match="only images without hemorrhages"):
        monitor.monitoring_az(model, [pool[1], pool[3]])
    with pytest.raises(ValueError, match="non-empty"):
        monitor.image_scores(model, [])
    with pytest.raises(ValueError, match="smaller than"):
        monitor.image_scores(model, [hemorrhage_record(5, False, size=30)])


def test_image_scores_at_the_natural_stride(pool):
    model = spread_sesnet()
    """stride=4: the brute-force map of every 4th pixel, smoothed with sigma / 4, max in the FOV."""
    scores = monitor.image_scores(model, pool, sigma=2.0, stride=4)
    for k, rec in enumerate(pool):
        coarse = brute_probability_map(model, rec.image, rec.fov)[::4, ::4].astype(np.float64)
        want = gaussian_filter(coarse, 0.5)[rec.fov[::4, ::4]].max()
        assert scores[k] == pytest.approx(want, abs=1e-5)
    mon = monitor.Monitor(pool, sigma=2.0, stride=4)
    mon(model)
    np.testing.assert_allclose(mon.scores[0], scores)
    with pytest.raises(ValueError, match="stride=1"):
        monitor.image_scores(model, pool, stride=4, prob_map=lambda m, i, f: np.zeros(i.shape[:2]))


# ------------------------------------------------------------------------------ plateau rule
def test_plateau_exponential_curve_known_epoch():
    t = np.arange(1, 101)
    tau, tol = 10.0, 0.01
    az = 0.9 - 0.4 * np.exp(-t / tau)
    # clean curve, no smoothing: the rise after e is 0.4 exp(-e/tau) - 0.4 exp(-100/tau) <= tol
    want = int(np.ceil(-tau * np.log(tol / 0.4 + np.exp(-100 / tau))))
    assert monitor.plateau_epoch(az, window=1, tol=tol) == want


def test_plateau_noisy_ramp_then_flat():
    rng = np.random.default_rng(3)
    for knee in (12, 30, 55):
        t = np.arange(1, 81)
        az = np.minimum(0.5 + 0.4 * t / knee, 0.9) + rng.uniform(-0.004, 0.004, t.size)
        e = monitor.plateau_epoch(az, window=5, tol=0.02)
        assert e is not None and knee - 6 <= e <= knee + 1


def test_plateau_not_reached_and_bad_input():
    assert monitor.plateau_epoch(np.linspace(0.5, 0.9, 30), window=5, tol=0.001) is None
    assert monitor.plateau_epoch([0.7, 0.71], window=5) is None
    with pytest.raises(ValueError, match="NaN"):
        monitor.plateau_epoch([0.5, np.nan, 0.7])
    with pytest.raises(ValueError, match="empty"):
        monitor.plateau_epoch([])
    with pytest.raises(ValueError, match="window"):
        monitor.plateau_epoch([0.5, 0.6], window=0)


def test_balanced_subset(pool):
    recs = pool + [hemorrhage_record(4, False), hemorrhage_record(5, False)]  # 2 with, 4 without
    assert [r.id for r in monitor.balanced_subset(recs, 4)] == ["im0", "im1", "im2", "im3"]
    assert [r.id for r in monitor.balanced_subset(recs, 5)] == ["im0", "im1", "im2", "im3", "im4"]
    assert [r.id for r in monitor.balanced_subset(recs, 2)] == ["im0", "im1"]
    assert len(monitor.balanced_subset(recs, 0)) == 6 and len(monitor.balanced_subset(recs, 99)) == 6
    with pytest.raises(ValueError, match=">= 0"):
        monitor.balanced_subset(recs, -1)


def test_epoch_seconds_means_the_epoch_end_records():
    h1 = History(evals=[{"epoch_end": 1.0, "train_seconds": 2.0, "weight_seconds": 3.0, "monitor_seconds": 1.0},
                        {"epoch_end": 0.0, "train_seconds": 99.0},
                        {"epoch_end": 1.0, "train_seconds": 4.0, "weight_seconds": 0.0, "monitor_seconds": 2.0}])
    h2 = History(evals=[{"epoch_end": 1.0, "train_seconds": 6.0, "monitor_seconds": 3.0}])
    assert monitor.epoch_seconds([h1, h2]) == {"training": 4.0, "weight_pass": 1.0, "monitoring": 2.0}
    with pytest.raises(ValueError, match="no end-of-epoch records"):
        monitor.epoch_seconds([History()])


def test_image_scores_are_lesions_image_score_and_records_without_fov(pool):
    model = spread_sesnet()
    """The score is lesions.image_score of the map; a record without a stored FOV gets preprocess.fov_mask's."""
    import dataclasses

    from fundus_nb import preprocess

    s, maps = monitor.image_scores(model, pool, sigma=1.0, return_maps=True)
    for k, rec in enumerate(pool):
        assert s[k] == lesions.image_score(maps[k], 1.0, rec.fov)
    bare = dataclasses.replace(pool[0], fov=None)
    got = monitor.image_scores(model, [bare], sigma=1.0, prob_map=lambda m, im, f: np.where(f, 0.25, 0.0))
    assert got[0] == pytest.approx(0.25) and preprocess.fov_mask(bare.image).any()
    empty = dataclasses.replace(pool[0], fov=np.zeros((48, 48), bool))
    assert monitor.image_scores(model, [empty], prob_map=lambda m, im, f: np.zeros(im.shape[:2]))[0] == 0.0
