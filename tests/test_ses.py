"""Tests of fundus_nb.ses: weighted sampling, the SeS/NSeS sampler and its weights (monitoring: test_monitor.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import brute_patch, brute_probability_map, hemorrhage_record, spread_sesnet
from scipy import stats
from scipy.ndimage import distance_transform_edt
from sklearn.metrics import roc_auc_score

from fundus_nb import monitor, patches, ses
from fundus_nb.data import FundusImage
from fundus_nb.models import SeSNet
from fundus_nb.train import fit

S = 41  # SeSNet patch


@pytest.fixture(scope="module")
def pool():
    return [hemorrhage_record(i, lesion) for i, lesion in enumerate((True, False, True, False))]


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
    got = [(int(i), int(r), int(c)) for i, (r, c) in zip(sp.pos_image, sp.pos_rc, strict=True)]
    assert sorted(got) == sorted(want) and sp.n_positives == 4  # one entry per lesion
    # a mask-only record: one centre per connected component (its centroid), found by brute force
    mask = np.zeros((48, 48), bool)
    mask[5:8, 5:8] = True  # 3x3 blob, centroid (6, 6)
    mask[20:30, 30:34] = True  # 10x4 blob, centroid (24.5, 31.5) -> rounds to (24, 32)
    rec = FundusImage(id="m", patient_id="pm", image_=pool[0].image, hemorrhage_mask=mask, fov=pool[0].fov)
    r, c = ses.lesion_centres(rec)
    assert sorted(zip(r.tolist(), c.tolist(), strict=True)) == [(6, 6), (24, 32)]
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
    got_pos = {(int(i), int(r), int(c)) for i, (r, c) in zip(sp.pos_image, sp.pos_rc, strict=True)}
    assert got_pos == want_pos and sp.n_positives == len(want_pos)
    # negatives: every FOV pixel of the hemorrhage-free images
    want_neg = {(i, r, c) for i in (1, 3) for r, c in np.argwhere(pool[i].fov)}
    got_neg = {(int(i), int(r), int(c)) for i, (r, c) in zip(sp.neg_image, sp.neg_rc(), strict=True)}
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
    small = hemorrhage_record(9, False, size=30)
    with pytest.raises(ValueError, match="smaller than the 41x41 patch"):
        ses.SelectiveSampler([pool[0], small])
    with pytest.raises(ValueError, match="even number"):
        ses.SelectiveSampler(pool, batch_size=7)
    with pytest.raises(ValueError, match="empty"):
        ses.SelectiveSampler([])
    with pytest.raises(ValueError, match="no image with hemorrhages"):
        ses.SelectiveSampler([pool[1], pool[3]])
    noref = hemorrhage_record(8, False)
    noref.hemorrhage_mask, noref.hemorrhage_centers = None, None
    with pytest.raises(ValueError, match="no hemorrhage reference"):
        ses.SelectiveSampler([pool[0], noref])
    sp = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    with pytest.raises(ValueError, match="one per negative candidate"):
        sp.set_weights(np.ones(3))


def test_centres_only_records_use_rounded_centres():
    recs = [hemorrhage_record(0, True, centres_only=True), hemorrhage_record(1, False)]
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
                ref = brute_patch(img, int(plan[f"{kind}_r"][k]), int(plan[f"{kind}_c"][k]), S)
                flip = int(plan[f"{kind}_flip"][k])  # the package's convention (patches.FLIP_*)
                if flip & patches.FLIP_HORIZONTAL:
                    ref = ref[:, ::-1]
                if flip & patches.FLIP_VERTICAL:
                    ref = ref[::-1]
                want = torch.from_numpy(ref.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
                assert torch.equal(x[row], want)
    # positives are shifted by at most one pixel from a lesion pixel; negatives are candidates
    lesion = np.stack([np.zeros((48, 48), bool) if r.hemorrhage_mask is None else r.hemorrhage_mask for r in pool])
    for r, c, i in zip(plan["pos_r"], plan["pos_c"], plan["pos_img"], strict=True):
        assert lesion[i, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any()
    negs = zip(plan["neg_img"], plan["neg_r"], plan["neg_c"], strict=True)
    assert all(pool[i].fov[r, c] and not pool[i].has_hemorrhages for i, r, c in negs)


def test_batches_depend_only_on_rng(pool):
    sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2)
    a = list(sp.batches(3, np.random.default_rng([0, 3])))
    b = list(sp.batches(3, np.random.default_rng([0, 3])))
    c = list(sp.batches(4, np.random.default_rng([0, 4])))
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


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
def test_update_weights_are_model_probabilities(pool):
    model = spread_sesnet()
    sp = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    assert np.all(sp.weights == 1.0)
    sp.update_weights(model)
    for i in sp.negative_images:
        ref = brute_probability_map(model, pool[i].image, pool[i].fov)
        sel = sp.neg_image == i
        rc = sp.neg_rc(np.flatnonzero(sel))
        np.testing.assert_allclose(sp.weights[sel], ref[rc[:, 0], rc[:, 1]], atol=1e-5)
    assert sp.weights.std() > 1e-3 and sp.n_updates == 1
    hm = sp.weight_map(1)
    fov1 = pool[1].fov
    np.testing.assert_allclose(hm[fov1], brute_probability_map(model, pool[1].image, fov1)[fov1], atol=1e-5)
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
    def run(epochs, resume):
        torch.manual_seed(0)
        m = SeSNet()
        sp = ses.SelectiveSampler(pool, batch_size=8, batches_per_epoch=2, refresh_every=1)
        mon = monitor.Monitor(pool, sigma=1.0)
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
    for a, b in zip(m_full.state_dict().values(), m_res.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert np.array_equal(h_res.losses, h_full.losses)


def test_sampler_draws_through_the_hemorrhage_engine(pool):
    """Replaying the draws with the same rng (positives, uniform negatives, then the engine) gives the plan."""
    sp = ses.SelectiveSampler(pool, batch_size=10, batches_per_epoch=4, selective=False)
    plan = sp.plan_epoch(np.random.default_rng(11))
    rng = np.random.default_rng(11)
    n = 20
    pos = rng.integers(0, sp.n_positives, size=n)
    neg = rng.integers(0, sp.n_negatives, size=n)
    img = sp.pos_image[pos]
    shapes = np.array([pool[i].image.shape[:2] for i in img])
    r, c, pf, nf = patches.hemorrhage_augmentation(sp.pos_rc[pos, 0], sp.pos_rc[pos, 1], shapes, n, rng)
    assert np.array_equal(plan["neg_idx"], neg) and np.array_equal(plan["pos_img"], img)
    for key, want in (("pos_r", r), ("pos_c", c), ("pos_flip", pf), ("neg_flip", nf)):
        assert np.array_equal(plan[key], want), key
    assert set(pf.tolist()) | set(nf.tolist()) == {0, 1, 2, 3}
    # code FLIP_HORIZONTAL cuts the column-reversed patch (the convention PatchPool's "ses" scheme shares)
    k = int(np.flatnonzero(pf == patches.FLIP_HORIZONTAL)[0])
    x = sp._cut(img[k : k + 1], r[k : k + 1], c[k : k + 1], pf[k : k + 1])[0]
    np.testing.assert_array_equal(x, brute_patch(pool[img[k]].image, r[k], c[k], S)[:, ::-1].transpose(2, 0, 1))
