"""Tests of fundus_nb.ses: weighted sampling, the SeS/NSeS sampler, monitoring scores, plateau rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.ndimage import distance_transform_edt, gaussian_filter
from sklearn.metrics import roc_auc_score

from fundus_nb import ses
from fundus_nb.data import FundusImage

S = 41  # SeSNet patch


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def make_rec(i, lesion, size=48, seed=0, centres_only=False):
    """A small fundus-like record: noisy orange disc (FOV) with optional dark hemorrhage blobs."""
    rng = np.random.default_rng([seed, i])
    fov = _disc(size, size, size / 2 - 0.5, size / 2 - 0.5, size / 2 - 1)
    img = np.zeros((size, size, 3), np.uint8)
    img[fov] = (rng.integers(150, 200), 90, 40)
    img = np.clip(img + rng.integers(0, 20, img.shape) * fov[..., None], 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    centres = np.zeros((0, 2))
    if lesion:
        centres = np.array([[size * 0.35, size * 0.4], [size * 0.6, size * 0.62]])
        for cy, cx in centres:
            mask |= _disc(size, size, cy, cx, 2.5)
        img[mask] = (60, 20, 10)
    return FundusImage(
        id=f"im{i}",
        patient_id=f"p{i}",
        image_=img,
        hemorrhage_mask=None if centres_only else mask,
        hemorrhage_centers=centres,
        fov=fov,
        source="test",
    )


@pytest.fixture(scope="module")
def pool():
    return [make_rec(0, True), make_rec(1, False), make_rec(2, True), make_rec(3, False)]


def brute_patch(img, r, c, s=S):
    """Zero-padded patch centred at (r, c), built pixel by pixel (border rule of CONTRACTS.md)."""
    h, w = img.shape[:2]
    out = np.zeros((s, s, 3), np.uint8)
    for i in range(s):
        for j in range(s):
            rr, cc = r - s // 2 + i, c - s // 2 + j
            if 0 <= rr < h and 0 <= cc < w:
                out[i, j] = img[rr, cc]
    return out


# ------------------------------------------------------------------------------ weighted sampling
def test_weighted_indices_matches_weights_chi_square():
    w = np.array([0.5, 0.0, 2.0, 1.0, 0.25, 3.0, 0.0, 1.25], np.float32)
    rng = np.random.default_rng(0)
    n = 200_000
    idx = ses.weighted_indices(w, n, rng)
    counts = np.bincount(idx, minlength=w.size)
    assert counts[w == 0].sum() == 0  # zero weight: never drawn
    nz = w > 0
    expected = n * w[nz] / w.sum()
    p = stats.chisquare(counts[nz], expected).pvalue
    assert p > 1e-3


def test_weighted_indices_past_2_pow_24():
    n_cand = 2**24 + 1  # torch.multinomial refuses more than 2**24 categories
    w = np.zeros(n_cand, np.float32)
    w[0], w[2**23], w[-1] = 1.0, 2.0, 1.0
    idx = ses.weighted_indices(w, 40_000, np.random.default_rng(1))
    assert set(np.unique(idx)) <= {0, 2**23, n_cand - 1}
    counts = np.array([(idx == k).sum() for k in (0, 2**23, n_cand - 1)])
    assert counts[2] > 0  # the candidate past 2**24 is reachable
    assert stats.chisquare(counts, 40_000 * np.array([0.25, 0.5, 0.25])).pvalue > 1e-3


def test_weighted_indices_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="zero"):
        ses.weighted_indices(np.zeros(5, np.float32), 3, rng)
    with pytest.raises(ValueError, match="non-negative"):
        ses.weighted_indices(np.array([1.0, -1.0]), 3, rng)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ses.weighted_indices(np.zeros((0,)), 3, rng)


def test_refresh_schedule():
    due = [e for e in range(0, 17) if ses.refresh_due(e, 5)]
    assert due == [1, 6, 11, 16]
    assert [e for e in range(0, 5) if ses.refresh_due(e, 1)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="refresh_every"):
        ses.refresh_due(3, 0)


# ------------------------------------------------------------------------------ candidate pools
def test_positives_per_lesion_are_the_centres_drawn_uniformly(pool):
    sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2)
    assert sp.positives == "lesion"
    want = {(i, int(round(r)), int(round(c))) for i in (0, 2) for r, c in pool[i].hemorrhage_centers}
    got = [(int(i), int(r), int(c)) for i, (r, c) in zip(sp.pos_image, sp.pos_rc)]
    assert sorted(got) == sorted(want) and sp.n_positives == 4  # one entry per lesion
    # a mask-only record: one centre per connected component (its centroid), found by brute force
    mask = np.zeros((48, 48), bool)
    mask[5:8, 5:8] = True  # 3x3 blob, centroid (6, 6)
    mask[20:30, 30:34] = True  # 10x4 blob, centroid (24.5, 31.5) -> rounds to (24, 32)
    rec = FundusImage(id="m", patient_id="pm", image_=pool[0].image, hemorrhage_mask=mask, fov=pool[0].fov)
    r, c = ses.lesion_centres(rec)
    assert sorted(zip(r.tolist(), c.tolist())) == [(6, 6), (24, 32)]
    # the big blob (40 px) and the small one (9 px) are drawn equally often
    sp2 = ses.SelectiveSampler([rec, pool[1]], batch_size=400, batches_per_epoch=10, augment=False)
    plan = sp2.plan_epoch(np.random.default_rng(0))
    counts = np.array([(plan["pos_r"] == 6).sum(), (plan["pos_r"] == 24).sum()])
    assert counts.sum() == 2000 and stats.chisquare(counts).pvalue > 1e-3
    sp3 = ses.SelectiveSampler([rec, pool[1]], batch_size=400, batches_per_epoch=10, augment=False, positives="pixel")
    plan3 = sp3.plan_epoch(np.random.default_rng(0))
    assert (plan3["pos_r"] >= 20).mean() > 0.7  # per pixel the big blob dominates (40 of 49 pixels)
    with pytest.raises(ValueError, match="positives must be 'lesion'"):
        ses.SelectiveSampler(pool, positives="blob")


def test_pools_are_lesion_pixels_and_fov_of_negative_images(pool):
    sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2, positives="pixel")
    # positives: every hemorrhage pixel of positive images
    want_pos = {(i, r, c) for i in (0, 2) for r, c in np.argwhere(pool[i].hemorrhage_mask)}
    got_pos = {(int(i), int(r), int(c)) for i, (r, c) in zip(sp.pos_image, sp.pos_rc)}
    assert got_pos == want_pos and sp.n_positives == len(want_pos)
    # negatives: every FOV pixel of the hemorrhage-free images
    want_neg = {(i, r, c) for i in (1, 3) for r, c in np.argwhere(pool[i].fov)}
    got_neg = {(int(i), int(r), int(c)) for i, (r, c) in zip(sp.neg_image, sp.neg_rc())}
    assert got_neg == want_neg and sp.n_negatives == len(want_neg)
    assert sp.negative_images == [1, 3]


def test_no_negative_images_needs_the_option(pool):
    positives = [pool[0], pool[2]]
    with pytest.raises(ValueError, match="allow_lesion_images=True"):
        ses.SelectiveSampler(positives)
    sp = ses.SelectiveSampler(positives, allow_lesion_images=True, lesion_margin=6, batch_size=4, batches_per_epoch=1)
    # brute force: FOV pixels at distance >= 6 from every hemorrhage pixel
    for k, rec in enumerate(positives):
        d = distance_transform_edt(~rec.hemorrhage_mask)
        want = {(r, c) for r, c in np.argwhere(rec.fov & (d >= 6))}
        got = {(int(r), int(c)) for r, c in sp.neg_rc(np.flatnonzero(sp.neg_image == k))}
        assert got == want and len(got) > 0


def test_bad_input_messages(pool):
    small = make_rec(9, False, size=30)
    with pytest.raises(ValueError, match="smaller than the 41x41 patch"):
        ses.SelectiveSampler([pool[0], small])
    with pytest.raises(ValueError, match="even number"):
        ses.SelectiveSampler(pool, batch_size=7)
    with pytest.raises(ValueError, match="empty"):
        ses.SelectiveSampler([])
    with pytest.raises(ValueError, match="no image with hemorrhages"):
        ses.SelectiveSampler([pool[1], pool[3]])
    noref = make_rec(8, False)
    noref.hemorrhage_mask, noref.hemorrhage_centers = None, None
    with pytest.raises(ValueError, match="no hemorrhage reference"):
        ses.SelectiveSampler([pool[0], noref])
    sp = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    with pytest.raises(ValueError, match="one per negative candidate"):
        sp.set_weights(np.ones(3))


def test_centres_only_records_use_rounded_centres():
    recs = [make_rec(0, True, centres_only=True), make_rec(1, False)]
    sp = ses.SelectiveSampler(recs, batch_size=4, batches_per_epoch=1)
    assert {tuple(map(int, rc)) for rc in sp.pos_rc} == {(17, 19), (29, 30)}  # rint(16.8, 19.2), rint(28.8, 29.76)


# ------------------------------------------------------------------------------ batches
def test_batches_follow_the_plan_and_border_rule(pool):
    sp = ses.SelectiveSampler(pool, batch_size=6, batches_per_epoch=3, augment=True)
    plan = sp.plan_epoch(np.random.default_rng([7, 2]))
    batches = list(sp.batches(2, np.random.default_rng([7, 2])))
    assert len(batches) == 3 == len(sp.batches(0, np.random.default_rng(0)))
    half = 3
    for b, (x, y) in enumerate(batches):
        assert x.dtype == torch.float32 and tuple(x.shape) == (6, 3, S, S)
        assert y.tolist() == [1, 1, 1, 0, 0, 0]
        for j in range(half):
            k = b * half + j
            for kind, row in (("pos", j), ("neg", half + j)):
                img = pool[int(plan[f"{kind}_img"][k])].image
                ref = brute_patch(img, int(plan[f"{kind}_r"][k]), int(plan[f"{kind}_c"][k]))
                flip = int(plan[f"{kind}_flip"][k])
                if flip & 1:
                    ref = ref[:, ::-1]
                if flip & 2:
                    ref = ref[::-1]
                want = torch.from_numpy(ref.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
                assert torch.equal(x[row], want)
    # positives are shifted by at most one pixel from a lesion pixel; negatives are candidates
    lesion = np.stack([rec.hemorrhage_mask if rec.hemorrhage_mask is not None else np.zeros((48, 48), bool) for rec in pool])
    for r, c, i in zip(plan["pos_r"], plan["pos_c"], plan["pos_img"]):
        assert lesion[i, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any()
    assert all(pool[i].fov[r, c] and not pool[i].has_hemorrhages for i, r, c in zip(plan["neg_img"], plan["neg_r"], plan["neg_c"]))


def test_batches_depend_only_on_rng(pool):
    sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2)
    a = list(sp.batches(3, np.random.default_rng([0, 3])))
    b = list(sp.batches(3, np.random.default_rng([0, 3])))
    c = list(sp.batches(4, np.random.default_rng([0, 4])))
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_ses_negatives_follow_weights_nses_uniform(pool):
    kw = dict(batch_size=200, batches_per_epoch=50, augment=False)
    sp = ses.SelectiveSampler(pool, selective=True, **kw)
    n = sp.n_negatives
    w = np.zeros(n, np.float32)
    hot = np.arange(0, n, n // 7)[:7]
    w[hot] = np.arange(1, 8, dtype=np.float32)
    sp.set_weights(w)
    neg = sp.plan_epoch(np.random.default_rng(5))["neg_idx"]
    assert set(np.unique(neg)) <= set(hot.tolist())
    counts = np.array([(neg == h).sum() for h in hot])
    assert stats.chisquare(counts, neg.size * w[hot] / w.sum()).pvalue > 1e-3
    # NSeS: the same weights are ignored, negatives uniform over all candidates
    ns = ses.SelectiveSampler(pool, selective=False, **kw)
    ns.set_weights(w)
    neg = ns.plan_epoch(np.random.default_rng(5))["neg_idx"]
    per_image = np.bincount(ns.neg_image[neg], minlength=4)[[1, 3]]
    sizes = np.bincount(ns.neg_image, minlength=4)[[1, 3]]
    assert stats.chisquare(per_image, neg.size * sizes / sizes.sum()).pvalue > 1e-3
    assert np.unique(neg).size > 0.9 * min(n, neg.size) * (1 - np.exp(-neg.size / n))


# ------------------------------------------------------------------------------ model-based parts
@pytest.fixture(scope="module")
def model():
    from fundus_nb.models import SeSNet

    torch.manual_seed(0)
    m = SeSNet()
    with torch.no_grad():  # make p spread over (0, 1) instead of ~0.5 everywhere
        m.fc2.bias.copy_(torch.tensor([0.0, -1.0]))
        m.fc2.weight.mul_(20)
    return m.eval()


_MAPS: dict = {}


def brute_map(model, rec):
    """p for the patch at every pixel by slicing patches (independent of the dense scheme), 0 off-FOV."""
    from fundus_nb.models import predict_proba

    key = (id(model), rec.id)
    if key not in _MAPS:
        h, w = rec.image.shape[:2]
        lo = S // 2
        padded = np.pad(rec.image, ((lo, S - 1 - lo), (lo, S - 1 - lo), (0, 0)))
        pats = np.stack([padded[r : r + S, c : c + S] for r in range(h) for c in range(w)])
        assert np.array_equal(pats[h * 3 + 5], brute_patch(rec.image, 3, 5))  # same border rule
        p = predict_proba(model, pats).reshape(h, w)
        _MAPS[key] = np.where(rec.fov, p, 0.0)
    return _MAPS[key]


def test_update_weights_are_model_probabilities(pool, model):
    sp = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    assert np.all(sp.weights == 1.0)
    sp.update_weights(model)
    for i in sp.negative_images:
        ref = brute_map(model, pool[i])
        sel = sp.neg_image == i
        rc = sp.neg_rc(np.flatnonzero(sel))
        np.testing.assert_allclose(sp.weights[sel], ref[rc[:, 0], rc[:, 1]], atol=1e-5)
    assert sp.weights.std() > 1e-3 and sp.n_updates == 1
    hm = sp.weight_map(1)
    np.testing.assert_allclose(hm[pool[1].fov], brute_map(model, pool[1])[pool[1].fov], atol=1e-5)
    assert np.all(hm[~pool[1].fov] == 0)
    # refresh schedule through the hook: SeS refreshes after epoch 1, NSeS never
    # (fit's epoch is 0-based: epoch 0 ends with 1 epoch done)
    assert sp.on_epoch_end(0, model)["weights_refreshed"] == 1.0
    assert sp.on_epoch_end(1, model) == {"weights_refreshed": 0.0, "weight_seconds": 0.0}
    assert sp.n_updates == 2
    ns = ses.SelectiveSampler(pool, selective=False, batch_size=4, batches_per_epoch=1)
    assert ns.on_epoch_end(0, model)["weights_refreshed"] == 0.0 and ns.n_updates == 0
    # state for a resumed run
    other = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    other.load_state_dict(sp.state_dict())
    assert np.array_equal(other.weights, sp.weights) and other.n_updates == 2


def test_fit_with_sampler_and_monitor_resumes_exactly(pool, tmp_path):
    from fundus_nb.models import SeSNet
    from fundus_nb.train import fit

    def run(epochs, resume):
        torch.manual_seed(0)
        m = SeSNet()
        sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2, refresh_every=1)
        mon = ses.Monitor(pool, sigma=1.0)
        h = fit(m, sp.batches, epochs=epochs, lr=0.01, seed=3, checkpoint_dir=tmp_path, resume=resume,
                eval_fn=mon, on_epoch_end=sp.on_epoch_end, extra_state=sp, device="cpu", progress=False)
        return m, sp, mon, h

    m_full, sp_full, mon_full, h_full = run(3, resume=False)
    ends = [e for e in h_full.evals if e["epoch_end"]]
    assert len(ends) == 3 and all(0.0 <= e["az"] <= 1.0 for e in ends)
    assert [e["weights_refreshed"] for e in ends] == [1.0, 1.0, 1.0] and sp_full.n_updates == 3
    # the Az recorded equals scikit-learn on the scores kept by the monitor
    assert ends[-1]["az"] == pytest.approx(roc_auc_score(mon_full.labels, mon_full.scores[-1]))
    # resume from the epoch-2 checkpoint: same weights, same sampler state
    (tmp_path / "epoch_0003.pt").unlink()
    m_res, sp_res, _, h_res = run(3, resume=True)
    assert np.array_equal(sp_res.weights, sp_full.weights)
    for a, b in zip(m_full.state_dict().values(), m_res.state_dict().values()):
        assert torch.equal(a, b)
    assert np.array_equal(h_res.losses, h_full.losses)


def test_image_scores_and_monitoring_az(pool, model):
    scores, maps = ses.image_scores(model, pool, sigma=1.5, return_maps=True)
    for k, rec in enumerate(pool):
        ref = brute_map(model, rec)
        np.testing.assert_allclose(maps[k], ref, atol=1e-5)
        assert scores[k] == pytest.approx(gaussian_filter(ref.astype(np.float64), 1.5)[rec.fov].max(), abs=1e-5)
    mon = ses.Monitor(pool, sigma=1.5)
    out = mon(model)
    np.testing.assert_allclose(mon.scores[0], scores)
    with pytest.raises(ValueError, match="only images with hemorrhages"):
        ses.Monitor([pool[0], pool[2]])
    az, s, y = ses.monitoring_az(model, pool, sigma=1.5)
    assert out["az"] == pytest.approx(az)
    assert y.tolist() == [1, 0, 1, 0]
    assert az == pytest.approx(roc_auc_score(y, scores))
    with pytest.raises(ValueError, match="monitoring split is empty"):
        ses.monitoring_az(model, [])
    with pytest.raises(ValueError, match="only images without hemorrhages"):
        ses.monitoring_az(model, [pool[1], pool[3]])
    with pytest.raises(ValueError, match="non-empty"):
        ses.image_scores(model, [])
    with pytest.raises(ValueError, match="smaller than"):
        ses.image_scores(model, [make_rec(5, False, size=30)])


def test_image_scores_at_the_natural_stride(pool, model):
    """stride=4: the brute-force map of every 4th pixel, smoothed with sigma / 4, max in the FOV."""
    scores = ses.image_scores(model, pool, sigma=2.0, stride=4)
    for k, rec in enumerate(pool):
        coarse = brute_map(model, rec)[::4, ::4].astype(np.float64)
        want = gaussian_filter(coarse, 0.5)[rec.fov[::4, ::4]].max()
        assert scores[k] == pytest.approx(want, abs=1e-5)
    mon = ses.Monitor(pool, sigma=2.0, stride=4)
    mon(model)
    np.testing.assert_allclose(mon.scores[0], scores)
    with pytest.raises(ValueError, match="stride=1"):
        ses.image_scores(model, pool, stride=4, prob_map=lambda m, i, f: np.zeros(i.shape[:2]))


# ------------------------------------------------------------------------------ plateau rule
def test_plateau_exponential_curve_known_epoch():
    t = np.arange(1, 101)
    tau, tol = 10.0, 0.01
    az = 0.9 - 0.4 * np.exp(-t / tau)
    # clean curve, no smoothing: the rise after e is 0.4 exp(-e/tau) - 0.4 exp(-100/tau) <= tol
    want = int(np.ceil(-tau * np.log(tol / 0.4 + np.exp(-100 / tau))))
    assert ses.plateau_epoch(az, window=1, tol=tol) == want


def test_plateau_noisy_ramp_then_flat():
    rng = np.random.default_rng(3)
    for knee in (12, 30, 55):
        t = np.arange(1, 81)
        az = np.minimum(0.5 + 0.4 * t / knee, 0.9) + rng.uniform(-0.004, 0.004, t.size)
        e = ses.plateau_epoch(az, window=5, tol=0.02)
        assert e is not None and knee - 6 <= e <= knee + 1


def test_plateau_not_reached_and_bad_input():
    assert ses.plateau_epoch(np.linspace(0.5, 0.9, 30), window=5, tol=0.001) is None
    assert ses.plateau_epoch([0.7, 0.71], window=5) is None
    with pytest.raises(ValueError, match="NaN"):
        ses.plateau_epoch([0.5, np.nan, 0.7])
    with pytest.raises(ValueError, match="non-empty"):
        ses.plateau_epoch([])
    with pytest.raises(ValueError, match="window"):
        ses.plateau_epoch([0.5, 0.6], window=0)


def test_balanced_subset(pool):
    recs = pool + [make_rec(4, False), make_rec(5, False)]  # 2 with, 4 without
    assert [r.id for r in ses.balanced_subset(recs, 4)] == ["im0", "im1", "im2", "im3"]
    assert [r.id for r in ses.balanced_subset(recs, 5)] == ["im0", "im1", "im2", "im3", "im4"]
    assert [r.id for r in ses.balanced_subset(recs, 2)] == ["im0", "im1"]
    assert len(ses.balanced_subset(recs, 0)) == 6 and len(ses.balanced_subset(recs, 99)) == 6
    with pytest.raises(ValueError, match=">= 0"):
        ses.balanced_subset(recs, -1)


def test_epoch_seconds_means_the_epoch_end_records():
    from fundus_nb.train import History

    h1 = History(evals=[{"epoch_end": 1.0, "train_seconds": 2.0, "weight_seconds": 3.0, "monitor_seconds": 1.0},
                        {"epoch_end": 0.0, "train_seconds": 99.0},
                        {"epoch_end": 1.0, "train_seconds": 4.0, "weight_seconds": 0.0, "monitor_seconds": 2.0}])
    h2 = History(evals=[{"epoch_end": 1.0, "train_seconds": 6.0, "monitor_seconds": 3.0}])
    assert ses.epoch_seconds([h1, h2]) == {"training": 4.0, "weight_pass": 1.0, "monitoring": 2.0}
    with pytest.raises(ValueError, match="no end-of-epoch records"):
        ses.epoch_seconds([History()])
