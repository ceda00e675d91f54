"""Solutions to the exercises of notebook 04 (selective sampling for hemorrhage detection).

Each ``exercise_N()`` answers in its docstring, then checks the answer with the package on a small
synthetic pool (four images at 96 px, the quick preset's sizes) and prints the numbers. Run them all
with ``python notebooks/solutions/04_ses_hemorrhage.py``; each takes a few seconds on one core.
"""

import time

import numpy as np

import fundus_nb
from fundus_nb import data, models, monitor, ses, ses_report, train

SIZE, BATCH = 96, 32  # quick-preset image side and a small even mini-batch


def _pool():
    """Four standardized, contrast-enhanced synthetic images at 96 px, two with hemorrhages."""
    raw = data.load("synthetic", n_patients=4)
    return ses_report.prepare_records(raw, range(len(raw)), 4, size=SIZE, enhance=True)


def _dark_p(model, image, fov):
    """A stand-in for an early network's map (``update_weights``' ``prob_map`` hook): p grows with
    how much darker than the typical FOV pixel a pixel is, as a young network confuses vessels and
    dark dots with hemorrhages (the paper's Fig. 5). A few seconds of training on one core leave a
    real SeSNet at p = 0.5 everywhere, which would show nothing here.
    """
    g = image[..., 1].astype(np.float32) / 255
    return np.clip((np.median(g[fov]) - g) / 0.3, 0, 1) * fov


def _sampler(recs, refresh_every=1):
    return ses.SelectiveSampler(recs, batch_size=BATCH, batches_per_epoch=2, refresh_every=refresh_every,
                                lesion_margin=3.75)


def _trained(recs, epochs=3, refresh_every=1, seed=0):
    """A SeSNet trained with SeS for a few short epochs; returns (model, sampler, history)."""
    fundus_nb.seed_everything(seed)
    sampler = _sampler(recs, refresh_every)
    model = models.SeSNet()
    history = train.fit(model, sampler.batches, epochs=epochs, lr=0.03, momentum=0.9, weight_decay=0.0005,
                        seed=seed, on_epoch_end=sampler.on_epoch_end, progress=False)
    return model, sampler, history


def exercise_1():
    """Refresh every epoch (``ses_refresh_every = 1``): how many weight passes, at what cost?

    Answer: the weights are refreshed after epochs 1, 1 + k, 1 + 2k, ... (``ses.refresh_due``), so a
    run of E epochs makes ``(E - 1) // k + 1`` passes: with the default E = 30, k = 3 gives 10 passes
    and k = 1 gives 30, three times the weight-pass time (each pass is one dense map per negative
    training image, about the same cost every time). Training and monitoring cost do not change;
    the time per epoch grows by (30 - 10) passes x one pass's time / 30 epochs.
    """
    for epochs, k in ((30, 3), (30, 1)):
        n = sum(ses.refresh_due(e, k) for e in range(1, epochs + 1))
        assert n == (epochs - 1) // k + 1
        print(f"E = {epochs}, refresh_every = {k}: {n} weight passes")
    recs = _pool()
    for k in (1, 2):
        t0 = time.perf_counter()
        _, sampler, history = _trained(recs, epochs=3, refresh_every=k)
        passes = sum(e.get("weights_refreshed", 0) for e in history.evals if e.get("epoch_end"))
        assert sampler.n_updates == passes == (3 - 1) // k + 1, (sampler.n_updates, passes)
        spent = monitor.epoch_seconds([history])["weight_pass"] * 3
        print(f"3 epochs, refresh_every = {k}: {sampler.n_updates} passes, {spent:.2f} s of weight passes, "
              f"{time.perf_counter() - t0:.1f} s in all")


def exercise_2():
    """A looser plateau rule (``ses_plateau_tol`` 0.02 -> 0.05): earlier or later plateau?

    Answer: earlier or the same, never later. The plateau epoch is the first e with
    ``max(m[e:]) <= max(m[:e]) + tol`` (m the smoothed Az); a larger tol makes that condition
    easier, so every epoch that met it still meets it and the first one can only come sooner.
    A run whose plateau was "not reached" may now reach one. Checked on 200 noisy saturating curves.
    """
    rng = np.random.default_rng(0)
    e = np.arange(1, 31)
    moved = 0
    for _ in range(200):
        curve = np.clip(0.95 - 0.45 * np.exp(-e / rng.uniform(3, 10)) + rng.normal(0, 0.03, e.size), 0, 1)
        tight, loose = (monitor.plateau_epoch(curve, 3, tol) for tol in (0.02, 0.05))
        assert loose is not None or tight is None
        assert tight is None or loose <= tight, (tight, loose)
        moved += tight is None or loose < tight
    print(f"tol 0.05 gave an earlier plateau than 0.02 on {moved} of 200 curves, a later one on none")


def exercise_3():
    """Fewer negatives (a tenth of the candidate pixels): what happens to the SeS draws?

    Answer: the effective number of candidates, ``(sum w)^2 / sum w^2``, falls by about ten times
    (it scales with the pool for the same kind of weights), so an epoch's draws repeat the same
    pixels more often: fewer distinct negatives per epoch, each hard one seen more often, and less
    variety in what the network learns to reject.
    """
    sampler = _sampler(_pool())
    w = sampler.update_weights(None, prob_map=_dark_p).astype(np.float64)
    tenth = w[np.random.default_rng(1).permutation(w.size)[: w.size // 10]]
    n = 20 * 32  # the negatives of one default-preset epoch (20 batches of 64, half negative)
    out = {}
    for name, weights in (("all", w), ("tenth", tenth)):
        draws = ses.weighted_indices(weights, n, np.random.default_rng(0))
        out[name] = (weights.size, ses_report.effective_sample_size(weights), np.unique(draws).size)
        print(f"{name}: {out[name][0]} candidates, effective {out[name][1]:,.0f}, "
              f"{out[name][2]} distinct pixels in {n} draws")
    assert out["tenth"][1] < out["all"][1] / 5
    assert out["tenth"][2] < out["all"][2]


def exercise_4():
    """Change the SeS weight rule: ``w = p ** 2`` or ``w = 0.5 * p / p.mean() + 0.5``.

    Answer: squaring sharpens the focus: the top 1% of candidates hold at least as large a share
    of the sampling mass as with ``w = p`` (``p ** 2 / p`` grows with p, so the highest p gain
    relatively). The half-and-half mixture blunts it: its probabilities are
    ``0.5 * p / sum(p) + 0.5 / N``, so the top 1% hold half their SeS share plus half a percent,
    between uniform (1%) and SeS.
    """
    sampler = _sampler(_pool())
    p = sampler.update_weights(None, prob_map=_dark_p).astype(np.float64)
    share = {}
    for name, w in (("p", p), ("p ** 2", p**2), ("half uniform", 0.5 * p / p.mean() + 0.5)):
        sampler.set_weights(w)
        share[name] = ses_report.top_share(sampler.probabilities(), 0.01)
        print(f"w = {name}: top 1% of the candidates hold {share[name]:.2%} of the sampling mass")
    assert share["p ** 2"] >= share["p"] - 1e-9
    top = int(p.size * 0.01) / p.size  # the uniform share of the top 1% (0.01 up to rounding)
    np.testing.assert_allclose(share["half uniform"], 0.5 * share["p"] + 0.5 * top, rtol=1e-6)
    assert top - 1e-9 <= share["half uniform"] <= share["p"] + 1e-9


if __name__ == "__main__":
    for fn in (exercise_1, exercise_2, exercise_3, exercise_4):
        print(f"--- {fn.__name__}")
        fn()
