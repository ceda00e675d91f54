"""Solutions to the exercises of notebook 03 (LeNet and EGL active learning for exudates).

Each ``exercise_N()`` restates its question, answers it in words in the docstring, then computes the
answer with the package on a tiny synthetic pool (3 patients, 256 px images, 30 positions per image
and class; a few SGD steps) and asserts what the answer claims. Run all: ``python 03_lenet_egl.py``.
"""

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from fundus_nb import data, egl, models, patches, preprocess, train

FIT = partial(train.fit, lr=0.01, momentum=0.9, progress=False, device="cpu")


def _tiny_pool(seed: int = 0) -> patches.PatchPool:
    """6 standardized synthetic images (2 with exudates for seed 0), 30 positions per image and class."""
    raw = data.load("synthetic", n_patients=3, seed=seed, size=256)
    recs = [preprocess.standardize_record(r, size=256) for r in raw]
    return patches.exudate_pool(recs, max_positives_per_image=30, max_negatives_per_image=30, seed=seed)


def _trained_lenet(pool: patches.PatchPool, steps: int = 15, seed: int = 0) -> models.LeNet:
    """A LeNet after ``steps`` SGD steps of 16 patches on a balanced sample of ``pool`` (seconds on a CPU)."""
    torch.manual_seed(seed)
    model = models.LeNet()
    idx = patches.balanced_sample(pool, min(pool.class_counts().values()), np.random.default_rng(seed))

    def batches(epoch, rng):
        for _, batch in zip(range(steps), pool.iter_batches(np.tile(idx, 20), 16, rng, augment=True), strict=False):
            yield batch

    FIT(model, batches, epochs=1, seed=seed)
    return model


def exercise_1():
    """Set ``egl_initial_positive=False`` (the paper's uniform draw of the ``egl_mu`` initial images).
    For which seeds does anything change, and what does the initial model do when it does?

    Answer: only seeds whose ``mu`` random images hold no exudate change (with True the last one is
    swapped for an image with exudates; every other draw is identical). With False those seeds'
    L0 is 160 healthy patches, so the initial model has seen one class and predicts "healthy" for
    every patch: the run starts collapsed whatever the strategy.
    """
    pool = _tiny_pool()
    x = patches.to_tensor(pool.extract(np.arange(len(pool))))
    kw = dict(mu=2, rounds=0, augment=False, batch_size=8)  # L0 = 5 batches of 8 (32 in the notebook)
    changed = []
    for seed in range(6):
        torch.manual_seed(seed)
        plain_model = models.LeNet()
        plain = egl.select_images(plain_model, pool, FIT, seed=seed, initial_steps=10, **kw)
        fixed = egl.select_images(models.LeNet(), pool, FIT, seed=seed, initial_positive=True, initial_steps=1, **kw)
        if plain.image_order == fixed.image_order:
            continue
        changed.append(seed)
        assert pool.labels[plain.selected[0]].sum() == 0  # the uniform draw left L0 one class
        assert pool.labels[fixed.selected[0]].sum() > 0  # the swapped-in image brings exudates
        share = float((models.predict_proba(plain_model, x) >= 0.5).mean())
        print(f"seed {seed}: plain images {[int(i) for i in plain.image_order]} (L0 all healthy), initial model "
              f"calls {share:.0%} of the patches exudate; with the rule: images {[int(i) for i in fixed.image_order]}")
        assert share == 0.0  # trained on one class, it predicts that class everywhere
    assert changed, "no seed drew two lesion-free images here; try more seeds"
    print(f"seeds changed by the rule: {changed} of 0-5")


def exercise_2():
    """Change ``egl_k`` from 32 to 8. How many patches are labelled after the same rounds, and how
    many SGD steps does the run take?

    Answer: the labelled set grows by ``k`` per Algorithm-1 round: ``n0 + r * egl_inner_rounds * k``
    patches after round r (n0 = L0, the paper's 5 batches of 32, fewer when the initial images hold
    fewer pool patches). Each update makes ``egl_epochs_per_round`` passes over everything
    labelled, ``ceil(labelled / batch)`` SGD steps per pass, so a smaller k makes a run cheaper in
    labels and in compute; with the same rounds it also ends with fewer labels, so compare
    strategies at equal labelled patches (the notebook's curves), not at equal rounds.
    """
    pool = _tiny_pool()
    bs = 8  # batches of 8 here (32 in the notebook) to keep the solution fast
    for k in (8, 32):
        res = egl.select_images(models.LeNet(), pool, FIT, mu=2, rounds=2, k=k, initial_steps=5, batch_size=bs,
                                epochs_per_round=1, stride=64, augment=False, seed=0)
        n = [r["n_patches"] for r in res.records]
        steps = [r["iterations"] for r in res.records]
        assert n == [n[0], n[0] + k, n[0] + 2 * k] and n[0] <= 5 * bs, n
        assert steps == [5, 5 + -(-n[1] // bs), 5 + -(-n[1] // bs) + -(-n[2] // bs)], steps
        print(f"egl_k={k}: labelled patches per round {n}, SGD steps {steps}")


def exercise_3():
    """Run the ``entropy`` strategy (``egl_strategies="egl,random,entropy"``). For two classes,
    show that Φ(x) = 2·p(1-p)·K(x) where K(x) depends only on the activations, and predict whether
    entropy and EGL pick the same top 32 patches.

    Answer: with θ = fc1 and fc2, ``dJ/dlogits = p - e_y``, which for two classes is ``p1 (-1, 1)``
    (y = 0) or ``p0 (1, -1)`` (y = 1). So ``||grad J(x, 0)|| = p1 K`` and ``||grad J(x, 1)|| = p0 K``
    with ``K^2 = 2 (||a||^2 + 1) + ||v * m||^2 (||h||^2 + 1)`` (a: fc2's input, h: fc1's input,
    m: the ReLU mask, v = w2[1] - w2[0]); Φ = p0 p1 K + p1 p0 K = 2 p0 p1 K. Entropy is a monotone
    function of p0 p1 alone, so it ranks by uncertainty only; EGL multiplies the uncertainty by the
    activation size K, so it prefers strongly activating (bright, high-contrast) patches: the two
    top-32 sets differ (on the tiny pool below they do not overlap at all).
    """
    pool = _tiny_pool()
    model = _trained_lenet(pool).eval()
    x = patches.to_tensor(pool.extract(np.arange(min(len(pool), 120))))
    with torch.no_grad():
        h = model.features(x).flatten(1)
        z1 = model.fc1(h)
        a = torch.relu(z1)
        p = torch.softmax(model.fc2(a), 1)
    v = model.fc2.weight[1] - model.fc2.weight[0]
    k_act = torch.sqrt(2 * (a.pow(2).sum(1) + 1) + ((v * (z1 > 0)).pow(2).sum(1)) * (h.pow(2).sum(1) + 1))
    phi = egl.expected_gradient_length(model, x)
    torch.testing.assert_close(phi, (2 * p[:, 0] * p[:, 1] * k_act).detach().float(), rtol=1e-3, atol=1e-6)
    ent = egl.predictive_entropy(model, x)
    assert spearmanr(ent, (p[:, 0] * p[:, 1]).numpy()).statistic > 0.999  # entropy ranks by p(1-p) only
    top = lambda s: set(np.argsort(-np.asarray(s), kind="stable")[:32].tolist())  # noqa: E731
    overlap = len(top(phi) & top(ent))
    print(f"Φ = 2 p(1-p) K checked on {len(x)} patches; K ranges {k_act.min():.1f}-{k_act.max():.1f}; "
          f"top-32 overlap of EGL and entropy: {overlap} of 32")
    assert overlap < 32  # K varies, so EGL and entropy do not pick the same patches


def exercise_4():
    """Run BADGE (``egl_strategies="egl,random,badge"``). Predict: do BADGE's k picks cover the
    candidates better or worse than EGL's top k?

    Answer: better. BADGE (Ash et al. 2020) runs k-means++ seeding on the gradient embeddings
    ``(p - e_yhat) ⊗ a``, whose length is Φ-like (uncertainty times activation size), so it starts
    from the most informative patch and then draws patches far from those already chosen. EGL's
    top k often sit in one cluster of similar patches. Measured by the k-means cost (sum over the
    candidates of the squared distance to the nearest pick, in embedding space), BADGE's picks
    cover the candidates with a lower cost.
    """
    pool = _tiny_pool()
    model = _trained_lenet(pool)
    x = patches.to_tensor(pool.extract(np.arange(min(len(pool), 120))))
    emb = egl.gradient_embedding(model, x)
    k = 16

    def cost(picks):
        d2 = ((emb[:, None, :] - emb[None, picks, :]) ** 2).sum(-1)
        return float(d2.min(1).sum())

    egl_picks = np.argsort(-egl.expected_gradient_length(model, x).numpy(), kind="stable")[:k]
    badge_picks = egl.kmeans_pp(emb, k, np.random.default_rng(0))
    print(f"k-means cost of {k} picks: EGL top-k {cost(egl_picks):.4g}, BADGE {cost(badge_picks):.4g}")
    assert cost(badge_picks) < cost(egl_picks)


def exercise_5():
    """Implement Φ over all parameters (``params="all"``: the convolutions too) with the per-sample
    loop of the notebook and check it against ``egl.expected_gradient_length(..., params="all")``.
    Predict: is Φ_all larger or smaller than Φ_fc, and does it rank the patches the same way?

    Answer: larger, patch by patch: the squared gradient length over all parameters is the fc
    part plus the convolution part, so ``||grad_all|| >= ||grad_fc||`` for every class and Φ_all >=
    Φ_fc. The ranking is close but not identical (the paper saw no significant difference between
    the two for selection).
    """
    pool = _tiny_pool()
    model = _trained_lenet(pool).eval()
    idx = patches.balanced_sample(pool, 4, np.random.default_rng(0))
    x8 = patches.to_tensor(pool.extract(idx))
    theta = list(model.parameters())  # every parameter: conv1, conv2, fc1, fc2

    def grad_length(logits, y):
        loss = F.cross_entropy(logits, torch.tensor([y]))
        return torch.sqrt(sum((g**2).sum() for g in torch.autograd.grad(loss, theta, retain_graph=True)))

    phi_all = []
    for x in x8:
        logits = model(x[None])
        p = torch.softmax(logits, 1)[0].detach()
        phi_all.append(sum(p[y] * grad_length(logits, y) for y in range(2)).detach())
    phi_all = torch.stack(phi_all)
    torch.testing.assert_close(phi_all, egl.expected_gradient_length(model, x8, params="all"), rtol=1e-4, atol=1e-6)
    phi_fc = egl.expected_gradient_length(model, x8, params="fc")
    assert bool((phi_all >= phi_fc * (1 - 1e-5)).all())
    rho = spearmanr(phi_all, phi_fc).statistic
    print(f"Φ_all / Φ_fc per patch: {np.round((phi_all / phi_fc).numpy(), 2)}; rank correlation {rho:.2f}")


if __name__ == "__main__":
    for exercise in (exercise_1, exercise_2, exercise_3, exercise_4, exercise_5):
        print(f"--- {exercise.__name__}")
        exercise()
