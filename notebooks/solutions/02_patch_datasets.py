"""Solutions to the exercises of notebook 02 · Patch datasets.

Each ``exercise_N()`` answers exercise N of the notebook on small synthetic data (256 px images of
4 patients, not cached to disk), asserts what the answer claims and prints the numbers. Run them
all with ``python notebooks/solutions/02_patch_datasets.py``.
"""

from types import SimpleNamespace

import numpy as np

from fundus_nb import data, patches, preprocess

SIZE = 256  # standardized image side: small, so every exercise takes seconds
MARGIN = 12.0  # healthy centres this far (px) from any lesion (the notebook's 24 px at 512 px, scaled)


def _records(n_patients: int = 4, seed: int = 0) -> list:
    """Standardized synthetic records (two eyes per patient), generated in memory."""
    raw = data.load("synthetic", n_patients=n_patients, seed=seed, size=SIZE, cache=False)
    return [preprocess.standardize_record(r, size=SIZE) for r in raw]


def exercise_1():
    """Predict the positive fraction of the exudate pool when ``patches_max_per_image`` changes.

    Answer: image i adds min(P_i, m) exudate and min(N_i, m) healthy positions, with P_i its
    exudate pixels and N_i its healthy pixels. Positives come only from images with exudates,
    healthy positions from every image. So while m is below every image's counts the fraction is
    n_exudate_images / (n_exudate_images + n_images) (3 / 11 = 0.27 here), and as m grows past the
    exudate pixel counts it falls towards the pixel ratio of the masks (about 0.1 %).
    """
    records = _records()
    pos = np.array([len(patches.exudate_positives(r)[0]) for r in records])
    neg = np.array([len(patches.exudate_negatives(r, margin=MARGIN)[0]) for r in records])
    n_ex = int((pos > 0).sum())
    for m in (10, 300, None):
        cap = np.inf if m is None else m
        predicted = np.minimum(pos, cap).sum() / (np.minimum(pos, cap).sum() + np.minimum(neg, cap).sum())
        pool = patches.exudate_pool(records, margin=MARGIN, seed=0,
                                    max_positives_per_image=m, max_negatives_per_image=m)
        c = pool.class_counts()
        measured = c[1] / (c[0] + c[1])
        print(f"max_per_image={m}: predicted {predicted:.4f}, measured {measured:.4f}")
        assert np.isclose(predicted, measured)
        if m == 10:
            assert np.isclose(measured, n_ex / (n_ex + len(records)))
    assert measured < 0.01  # no cap: exudate pixels are rare


def exercise_2():
    """What fraction of a patch centred on the image's top-left pixel (0, 0) is real image, and at
    the bottom-right pixel? Compare 48 (even) with 41 (odd).

    Answer: the patch covers rows r - s//2 .. r - s//2 + s - 1. For s = 41 that is 20 rows above
    and 20 below: at either corner 21 x 21 of 41 x 41 pixels are image (26.2 %). For s = 48 it is
    24 rows above and 23 below (the centre is the lower-right of the middle four): 24 x 24 / 48^2
    = 25.0 % at the top-left corner but 25 x 25 / 48^2 = 27.1 % at the bottom-right one.
    """
    image = np.full((SIZE, SIZE, 3), 255, np.uint8)  # all white: non-zero means "inside the image"
    expected = {(48, 0): (24 / 48) ** 2, (48, SIZE - 1): (25 / 48) ** 2,
                (41, 0): (21 / 41) ** 2, (41, SIZE - 1): (21 / 41) ** 2}
    for (s, corner), want in expected.items():
        patch = patches.extract(image, 0, [corner], [corner], s)[0]
        inside = float((patch[..., 0] > 0).mean())
        print(f"s={s}, centre ({corner}, {corner}): {inside:.1%} of the patch is image")
        assert np.isclose(inside, want)


def exercise_3():
    """What breaks if the two eyes of one patient land in different splits?

    Answer: the test no longer measures unseen patients. A patient's two eyes share camera,
    pigmentation and (usually) disease stage, so a model that memorised one eye recognises the
    other and the test score is flattered. Demonstration: 40 simulated patients whose two eyes
    share an appearance vector and a label that is random per patient (nothing to generalise).
    A 1-nearest-neighbour "model", which can only memorise, scores near chance (0.5) on a patient
    split. Split by image instead and about half the test eyes have their fellow eye in training:
    those are all "right", and the test accuracy climbs to about 0.75 with nothing learned.
    """
    rng = np.random.default_rng(0)
    n, dim = 200, 16
    look = rng.normal(size=(n, dim))  # each patient's appearance, shared by both eyes
    y = np.repeat(rng.integers(0, 2, n), 2)  # a per-patient finding, random
    x = np.repeat(look, 2, axis=0) + 0.1 * rng.normal(size=(2 * n, dim))
    eyes = [SimpleNamespace(patient_id=f"p{i // 2}") for i in range(2 * n)]
    splits = {"patient": patches.split_by_patient(eyes, (0.5, 0.5), seed=0),
              "image": dict(zip(("train", "test"), np.split(rng.permutation(2 * n), 2), strict=True))}
    acc = {}
    for kind, split in splits.items():
        train, test = np.asarray(split["train"]), np.asarray(split["test"])
        nearest = np.argmin(((x[test, None] - x[None, train]) ** 2).sum(-1), axis=1)
        right = y[train][nearest] == y[test]
        fellow_in_train = np.isin(test ^ 1, train)  # eyes 2p and 2p+1 belong to patient p
        acc[kind] = float(right.mean())
        print(f"split by {kind}: {int(fellow_in_train.sum())} test eyes have their fellow eye in training; "
              f"1-NN test accuracy {acc[kind]:.2f}")
        assert fellow_in_train.any() == (kind == "image")
    assert abs(acc["patient"] - 0.5) < 0.12 and acc["image"] > acc["patient"] + 0.12
    assert right[fellow_in_train].mean() > 0.95  # the leak: a fellow eye in training is always "recognised"


def _my_d4(patch: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square: optional left-right flip, then 0-3 quarter turns."""
    return [np.rot90(np.flip(patch, axis=1) if f else patch, q) for f in (0, 1) for q in range(4)]


def exercise_4():
    """Implement the 8 D4 transforms with ``np.rot90`` / ``np.flip`` and compare them with the
    package's augmentation.

    Answer: ``rot90(flip(x) if f else x, q)`` for f in {0, 1} and q in 0..3 gives 8 distinct
    patches, element for element equal to ``patches.d4_transform(x, 4 * f + q)``; composing two
    of them gives one of the 8 (a group). Every patch ``PatchPool.patches(..., augment="d4")``
    returns is one of the 8, and in 800 draws each appears about 100 times (uniform).
    """
    records = _records()
    pool = patches.exudate_pool(records, margin=MARGIN, seed=0, max_positives_per_image=20,
                                max_negatives_per_image=20)
    one = pool.class_indices(1)[0]
    patch = pool.extract([one])[0]
    mine = _my_d4(patch)
    for k, x in enumerate(mine):
        np.testing.assert_array_equal(x, patches.d4_transform(patch[None], k)[0])
    keys = [x.tobytes() for x in mine]
    assert len(set(keys)) == 8, "a lesion patch has no symmetry of its own, so the 8 copies differ"
    assert all(y.tobytes() in keys for x in mine for y in _my_d4(x)), "D4 is closed under composition"
    drawn = pool.patches(np.full(800, one), np.random.default_rng(0), augment="d4")
    which = np.array([keys.index(x.tobytes()) for x in drawn])  # raises if a draw is not one of the 8
    counts = np.bincount(which, minlength=8)
    print("draws of each D4 element in 800 augmented copies:", counts.tolist())
    assert counts.min() >= 60 and counts.max() <= 140


if __name__ == "__main__":
    for exercise in (exercise_1, exercise_2, exercise_3, exercise_4):
        print(f"--- {exercise.__name__}")
        exercise()
