"""Tests for fundus_nb.patches: positions, extraction (border rule), augmentation, pools, splits.

All records are small and hand-made so the tests are fast and independent of the generator.
References are brute-force loops written here, numpy's rot90/flip, scipy's distance transform.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import brute_patch, sliced_patch
from scipy import ndimage

from fundus_nb import patches as P
from fundus_nb.data import FundusImage
from fundus_nb.patches.augment import _FLIP_TO_D4


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def disk(shape, centre, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def make_record(id_="a", patient="p0", size=40, ex=None, hem=None, centres=None, seed=0, fov=True):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    shape = (size, size)
    ex_mask = np.zeros(shape, bool) if ex is None else ex
    return FundusImage(
        id=id_, patient_id=patient, image_=img, exudate_mask=ex_mask, hemorrhage_mask=hem,
        hemorrhage_centers=centres, fov=disk(shape, (size // 2, size // 2), size // 2 - 1) if fov else None,
    )


# ----------------------------------------------------------------------------------------------
# extraction and the border rule
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [1, 4, 5, 8, 9])
def test_extract_equals_naive_slicing_including_borders(s):
    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (13, 17, 3), dtype=np.uint8), rng.integers(0, 256, (11, 10, 3), dtype=np.uint8)]
    idx, rows, cols = [], [], []
    for k, im in enumerate(ims):  # every pixel of both images, corners and edges included
        r, c = np.mgrid[: im.shape[0], : im.shape[1]]
        idx += [k] * r.size
        rows += r.ravel().tolist()
        cols += c.ravel().tolist()
    got = P.extract(ims, np.array(idx), np.array(rows), np.array(cols), s)
    assert got.shape == (len(rows), s, s, 3) and got.dtype == np.uint8
    for n in range(len(rows)):
        np.testing.assert_array_equal(got[n], sliced_patch(ims[idx[n]], rows[n], cols[n], s))


def test_extract_border_rule_pixel_loop_even_and_odd():
    rng = np.random.default_rng(2)
    im = rng.integers(1, 256, (20, 20, 3), dtype=np.uint8)
    for s in (12, 11):  # even and odd, both larger than half the image
        for r, c in [(0, 0), (19, 19), (0, 19), (10, 3), (5, 16)]:
            got = P.extract(im, 0, np.array([r]), np.array([c]), s)[0]
            np.testing.assert_array_equal(got, brute_patch(im, r, c, s))
    # even size: the centre is the lower-right of the middle four pixels
    got = P.extract(im, 0, np.array([10]), np.array([10]), 4)[0]
    assert np.array_equal(got[2, 2], im[10, 10]) and np.array_equal(got[0, 0], im[8, 8])


def test_extract_single_image_and_stack_inputs_agree():
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 256, (3, 9, 9, 3), dtype=np.uint8)
    rows, cols, idx = np.array([0, 4, 8]), np.array([8, 4, 0]), np.array([2, 1, 0])
    a = P.extract(stack, idx, rows, cols, 5)
    b = P.extract(list(stack), idx, rows, cols, 5)
    c = np.stack([P.extract(stack[i], 0, rows[n : n + 1], cols[n : n + 1], 5)[0] for n, i in enumerate(idx)])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("s", [1, 4, 5, 8, 9])
def test_windows_every_pixel_matches_the_pixel_loop(s):
    rng = np.random.default_rng(11)
    im = rng.integers(0, 256, (13, 10, 3), dtype=np.uint8)
    rows, cols = (a.ravel() for a in np.mgrid[:13, :10])
    got = P.windows(im, rows, cols, s)
    assert got.shape == (rows.size, s, s, 3) and got.dtype == np.uint8
    for n in range(rows.size):
        np.testing.assert_array_equal(got[n], brute_patch(im, rows[n], cols[n], s))


def test_window_view_layouts_agree_with_the_pixel_loop():
    rng = np.random.default_rng(12)
    ims = rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    s = 4
    padded = P.pad_images(ims, s)
    hwc = P.window_view(padded, s)
    chw = P.window_view(np.ascontiguousarray(padded.transpose(0, 3, 1, 2)), s, channels_first=True)
    flipped = P.window_view(padded.transpose(0, 3, 1, 2)[..., ::-1], s, channels_first=True)
    assert hwc.shape == (2, 9, 11, s, s, 3) and chw.shape == (2, 9, 11, 3, s, s)
    assert not hwc.flags.writeable and not chw.flags.writeable
    wp = padded.shape[2]
    for k, r, c in [(0, 0, 0), (1, 8, 10), (0, 4, 7), (1, 0, 10)]:
        ref = brute_patch(ims[k], r, c, s)
        np.testing.assert_array_equal(hwc[k, r, c], ref)
        np.testing.assert_array_equal(chw[k, r, c], ref.transpose(2, 0, 1))
        # a column-reversed stack gives column-flipped patches (top-left mapped into the flip)
        np.testing.assert_array_equal(flipped[k, r, wp - s - c], ref[:, ::-1].transpose(2, 0, 1))


def test_windows_errors():
    im = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="outside their image"):
        P.windows(im, np.array([10]), np.array([5]), 3)
    with pytest.raises(ValueError, match="uint8"):
        P.windows(im.astype(np.float32), np.array([1]), np.array([1]), 3)


def test_extract_errors():
    im = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="larger than image"):
        P.extract(im, 0, np.array([5]), np.array([5]), 11)
    with pytest.raises(ValueError, match="outside their image"):
        P.extract(im, 0, np.array([10]), np.array([5]), 3)
    with pytest.raises(ValueError, match="outside their image"):
        P.extract(im, 0, np.array([1]), np.array([-1]), 3)
    with pytest.raises(ValueError, match="uint8"):
        P.extract(im.astype(float), 0, np.array([1]), np.array([1]), 3)
    with pytest.raises(ValueError, match="image indices"):
        P.extract(im, 1, np.array([1]), np.array([1]), 3)


def test_to_tensor_scale_and_layout():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (5, 7, 6, 3), dtype=np.uint8)
    t = P.to_tensor(x)
    assert t.dtype == torch.float32 and tuple(t.shape) == (5, 3, 7, 6) and t.is_contiguous()
    ref = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2) / 255
    assert torch.equal(t, ref)  # exactly x / 255
    assert t[0, 2, 3, 1].item() == pytest.approx(x[0, 3, 1, 2] / 255)
    assert torch.equal(P.to_tensor(torch.from_numpy(x)), t)
    with pytest.raises(ValueError, match="uint8 patches"):
        P.to_tensor(x.astype(np.float32))
    with pytest.raises(ValueError, match="batch axis"):
        P.to_tensor(x[0])
    chw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    assert torch.equal(P.to_tensor(chw, channels_first=True), ref)
    assert torch.equal(P.to_tensor(x.transpose(0, 3, 1, 2), channels_first=True), ref)  # strided input
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        P.to_tensor(x, channels_first=True)


# ----------------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------------
def test_d4_has_eight_distinct_symmetries_of_the_square():
    patch = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)  # no symmetry of its own
    copies = P.d4_all(patch)
    assert copies.shape == (8, 5, 5, 3)
    assert len({c.tobytes() for c in copies}) == 8
    # the group, built independently from np.rot90 / np.flip compositions
    ref = []
    for base in (patch, np.flip(patch, axis=1)):
        ref += [np.rot90(base, q, axes=(0, 1)) for q in range(4)]
    ref += [np.flip(patch, axis=0), np.transpose(patch, (1, 0, 2))]  # members by other names
    ref_set = {r.tobytes() for r in ref}
    assert {c.tobytes() for c in copies} == ref_set
    # each element maps the square's pixel grid onto itself: a permutation of positions
    ids = np.arange(25).reshape(5, 5, 1).repeat(3, 2)
    for k in range(8):
        t = P.d4_transform(ids[None], k)[0]
        assert sorted(t[..., 0].ravel().tolist()) == list(range(25))
    np.testing.assert_array_equal(copies[0], patch)


def test_augment_d4_applies_the_drawn_element_to_each_patch():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (16, 6, 6, 3), dtype=np.uint8)
    k = np.arange(16) % 8
    got = P.augment_d4(x, rng, k=k)
    for n in range(16):
        f, q = divmod(k[n], 4)
        ref = np.rot90(np.flip(x[n], 1) if f else x[n], q)
        np.testing.assert_array_equal(got[n], ref)
    drawn = P.augment_d4(np.repeat(x[:1], 400, 0), np.random.default_rng(0))
    assert len({d.tobytes() for d in drawn}) == 8  # random draws reach all 8 elements


def test_augment_flips_and_their_d4_equivalents():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    code = np.array([0, 1, 2, 3])
    got = P.augment_flips(x, rng, code=code)
    # the package's one convention: bit 0 = horizontal (columns reversed), bit 1 = vertical (rows)
    assert (P.FLIP_HORIZONTAL, P.FLIP_VERTICAL) == (1, 2)
    refs = [x[0], x[1][:, ::-1], x[2][::-1], x[3][::-1, ::-1]]
    for n in range(4):
        np.testing.assert_array_equal(got[n], refs[n])
        np.testing.assert_array_equal(P.d4_transform(x[n : n + 1], _FLIP_TO_D4[n])[0], refs[n])
    chw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    P.flip_patches(chw, code, channels_first=True)  # in place, same convention channel-first
    np.testing.assert_array_equal(chw.transpose(0, 2, 3, 1), got)
    np.testing.assert_array_equal(P.augment_flips(x, rng, code=np.zeros(4, int)), x)  # input untouched


def test_random_shifts_are_one_pixel_and_clipped():
    rng = np.random.default_rng(7)
    rows, cols = np.full(3000, 5), np.full(3000, 0)
    r, c = P.random_shifts(rows, cols, rng, shape=(6, 10))
    assert set(np.unique(r)) == {4, 5}  # 6 clipped to the last row 5
    assert set(np.unique(c)) == {0, 1}  # -1 clipped to 0
    r, c = P.random_shifts(np.full(3000, 3), np.full(3000, 3), rng)
    assert set(np.unique(r - 3)) == {-1, 0, 1} and set(np.unique(c - 3)) == {-1, 0, 1}


# ----------------------------------------------------------------------------------------------
# positions
# ----------------------------------------------------------------------------------------------
def test_exudate_positions_match_brute_force_distance():
    shape = (40, 40)
    ex = disk(shape, (12, 12), 2)
    hem = disk(shape, (28, 26), 1)
    rec = make_record(ex=ex, hem=hem, centres=np.array([[30.2, 8.7]]))
    r, c = P.exudate_positives(rec)
    assert r.dtype == np.int32
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == set(zip(*np.nonzero(ex), strict=True))
    margin = 5
    r, c = P.exudate_negatives(rec, margin=margin)
    lesion_pts = np.argwhere(ex | hem | (np.arange(40)[:, None] == 30) & (np.arange(40)[None] == 9))
    expect = set()
    for i in range(40):
        for j in range(40):
            d = np.sqrt(((lesion_pts - [i, j]) ** 2).sum(1)).min()
            if rec.fov[i, j] and d >= margin:
                expect.add((i, j))
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == expect
    assert len(expect) > 100


def test_exudate_negatives_errors():
    rec = make_record(fov=False)
    with pytest.raises(ValueError, match="field-of-view"):
        P.exudate_negatives(rec)
    rec = make_record()
    rec.exudate_mask = None
    with pytest.raises(ValueError, match="no exudate mask"):
        P.exudate_negatives(rec)
    with pytest.raises(ValueError, match="no exudate mask"):
        P.exudate_positives(rec)
    with pytest.raises(ValueError, match="margin"):
        P.exudate_negatives(make_record(ex=disk((40, 40), (5, 5), 1)), margin=-1)


def test_hemorrhage_positives_mask_or_centres():
    shape = (40, 40)
    hem = disk(shape, (20, 20), 2)
    r, c = P.hemorrhage_positives(make_record(hem=hem))
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == set(zip(*np.nonzero(hem), strict=True))
    r, c = P.hemorrhage_positives(make_record(centres=np.array([[3.4, 7.6], [39.9, 0.2]])))
    assert list(zip(r.tolist(), c.tolist(), strict=True)) == [(3, 8), (39, 0)]
    with pytest.raises(ValueError, match="neither a hemorrhage mask"):
        P.hemorrhage_positives(make_record())


def test_hemorrhage_negatives_follow_the_ses_rule():
    shape = (40, 40)
    clean = make_record(hem=np.zeros(shape, bool))
    r, c = P.hemorrhage_negatives(clean)
    assert len(r) == clean.fov.sum()  # every FOV pixel of a hemorrhage-free image
    sick = make_record(hem=disk(shape, (20, 20), 2))
    r, c = P.hemorrhage_negatives(sick)
    assert len(r) == 0  # the paper's rule: no negatives from images with hemorrhages
    r, c = P.hemorrhage_negatives(sick, allow_lesion_images=True, margin=6)
    dist = ndimage.distance_transform_edt(~sick.hemorrhage_mask)
    assert len(r) == (sick.fov & (dist >= 6)).sum() and (dist[r, c] >= 6).all()
    with pytest.raises(ValueError, match="no hemorrhage reference"):
        P.hemorrhage_negatives(make_record())


def test_patchify_grid_and_fov():
    rows, cols = P.patchify((10, 14), 4, 3)
    ref = [(t + 2, left + 2) for t in range(0, 7, 3) for left in range(0, 11, 3)]
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == ref
    fov = np.zeros((10, 14), bool)
    fov[:, :7] = True
    rows, cols = P.patchify(fov, 4, 3)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [p for p in ref if p[1] < 7]
    assert P.patchify((10, 14, 3), 10, 1)[0].tolist() == [5] * 5
    with pytest.raises(ValueError, match="larger than the image"):
        P.patchify((10, 14), 11, 1)
    with pytest.raises(ValueError, match="stride"):
        P.patchify((10, 14), 3, 0)


# ----------------------------------------------------------------------------------------------
# pools
# ----------------------------------------------------------------------------------------------
def small_pool(scheme="d4", s=7):
    rng = np.random.default_rng(8)
    ims = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    pos = np.array([[0, 0, 0], [0, 19, 23], [1, 8, 8], [1, 15, 0], [0, 10, 12], [1, 3, 14]])
    return P.PatchPool(ims, pos, np.array([1, 0, 1, 0, 1, 0]), s, scheme), ims, pos


def test_pool_extract_getitem_and_batch_match_naive():
    pool, ims, pos = small_pool()
    assert len(pool) == 6 and pool.class_counts() == {0: 3, 1: 3}
    got = pool.extract(np.arange(6))
    for n, (k, r, c) in enumerate(pos):
        np.testing.assert_array_equal(got[n], sliced_patch(ims[k], r, c, 7))
    x, y = pool[4]
    assert torch.equal(x, P.to_tensor(sliced_patch(ims[0], 10, 12, 7)[None])[0]) and y.item() == 1
    xb, yb = pool.get_batch(np.array([3, 0]))
    assert yb.dtype == torch.int64 and yb.tolist() == [0, 1]
    assert torch.equal(xb, P.to_tensor(np.stack([sliced_patch(ims[1], 15, 0, 7), sliced_patch(ims[0], 0, 0, 7)])))
    with pytest.raises(IndexError):
        pool[6]
    with pytest.raises(IndexError):
        pool.get_batch(np.array([7]))


def test_pool_d4_batch_elements_are_symmetries_of_the_plain_patch():
    pool, ims, pos = small_pool("d4")
    idx = np.repeat(np.arange(6), 30)
    aug = pool.patches(idx, np.random.default_rng(0), augment=True)
    plain = pool.extract(idx)
    for n in range(len(idx)):
        group = {g.tobytes() for g in P.d4_all(plain[n])}
        assert aug[n].tobytes() in group
    assert len({a.tobytes() for a in aug[:30]}) == 8
    # the fused float path gives exactly to_tensor of the uint8 path for the same draws
    xb, yb = pool.get_batch(idx, np.random.default_rng(0), augment=True)
    assert torch.equal(xb, P.to_tensor(aug)) and yb.tolist() == pool.labels[idx].tolist()


@pytest.mark.parametrize("scheme", ["d4", "ses", "flips"])
def test_fast_and_plain_augmentation_paths_agree(scheme):
    pool, ims, pos = small_pool(scheme)
    slow = P.PatchPool(ims, pos, pool.labels, 7, scheme, fast_augment=False)
    idx = np.repeat(np.arange(6), 20)
    a = pool.patches(idx, np.random.default_rng(3), augment=True)
    b = slow.patches(idx, np.random.default_rng(3), augment=True)
    np.testing.assert_array_equal(a, b)
    xa, ya = pool.get_batch(idx, np.random.default_rng(4), augment=True)
    xb, yb = slow.get_batch(idx, np.random.default_rng(4), augment=True)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a "d4" request on a pool that kept fewer variants falls back to the plain path, same values
    c = P.PatchPool(ims, pos, pool.labels, 7, "none").patches(idx, np.random.default_rng(5), augment="d4")
    d = slow.patches(idx, np.random.default_rng(5), augment="d4")
    np.testing.assert_array_equal(c, d)


def test_pool_ses_scheme_shifts_positives_only_and_flips_all():
    pool, ims, pos = small_pool("ses", s=5)
    idx = np.repeat(np.arange(6), 60)
    aug = pool.patches(idx, np.random.default_rng(1), augment=True)
    def flips(p):
        return {p.tobytes(), p[::-1].tobytes(), p[:, ::-1].tobytes(), p[::-1, ::-1].tobytes()}

    for n, i in enumerate(idx):
        k, r, c = pos[i]
        if pool.labels[i] == 1:
            allowed = set()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr = min(max(r + dr, 0), ims[k].shape[0] - 1)
                    cc = min(max(c + dc, 0), ims[k].shape[1] - 1)
                    allowed |= flips(sliced_patch(ims[k], rr, cc, 5))
        else:
            allowed = flips(sliced_patch(ims[k], r, c, 5))
        assert aug[n].tobytes() in allowed
    # positive at (8, 8) far from borders: all 9 shifts x 4 flips occur
    assert len({a.tobytes() for a in aug[idx == 2]}) > 12
    # negatives only flipped: at most 4 versions
    assert len({a.tobytes() for a in aug[idx == 3]}) <= 4


def test_pool_ses_scheme_draws_through_the_hemorrhage_engine():
    """Replaying the engine with the same rng predicts every shift and flip of the "ses" scheme."""
    pool, ims, pos = small_pool("ses", s=5)
    idx = np.repeat(np.arange(6), 15)
    aug = pool.patches(idx, np.random.default_rng(7), augment=True)
    x, _ = pool.get_batch(idx, np.random.default_rng(7), augment=True)
    assert torch.equal(x, P.to_tensor(aug))
    p = pos[idx]
    lab = pool.labels[idx] == 1
    shapes = np.array([ims[k].shape[:2] for k in p[lab, 0]])
    r, c, pf, nf = P.hemorrhage_augmentation(p[lab, 1], p[lab, 2], shapes, int((~lab).sum()), np.random.default_rng(7))
    rows, cols, code = p[:, 1].copy(), p[:, 2].copy(), np.empty(len(idx), int)
    rows[lab], cols[lab], code[lab], code[~lab] = r, c, pf, nf
    for n in range(len(idx)):
        ref = brute_patch(ims[p[n, 0]], rows[n], cols[n], 5)
        ref = ref[:, ::-1] if code[n] & P.FLIP_HORIZONTAL else ref
        ref = ref[::-1] if code[n] & P.FLIP_VERTICAL else ref
        np.testing.assert_array_equal(aug[n], ref)
    assert set(code.tolist()) == {0, 1, 2, 3}


def test_pool_memory_and_validation():
    pool, ims, pos = small_pool()
    assert pool.bytes_per_position == 13
    m = pool.memory(1_000_000)
    # d4 keeps 4 channel-first variants of each padded image, on a square canvas of side 24 + 6
    assert m["positions"] == 13_000_000 and m["images"] == 4 * 2 * 3 * 30 * 30
    assert m["total"] == m["images"] + m["positions"]
    assert pool.images.shape == (2, 20 + 6, 24 + 6, 3)
    np.testing.assert_array_equal(pool.images[1, 3 : 3 + 16, 3 : 3 + 16], ims[1])
    assert pool.images[1, :3].max() == 0 and pool.images[1, :, 3 + 16 :].max() == 0
    plain = P.PatchPool(ims, pos, np.zeros(6), 7, "none")
    assert plain.memory()["images"] == 1 * 2 * 3 * 30 * 30
    ses = P.PatchPool(ims, pos, np.zeros(6), 7, "ses")
    assert ses.memory()["images"] == 2 * 2 * 3 * 30 * 30
    with pytest.raises(ValueError, match="scheme"):
        P.PatchPool(ims, pos, np.zeros(6), 7, "rotate")
    with pytest.raises(ValueError, match="one entry per position"):
        P.PatchPool(ims, pos, np.zeros(5), 7)
    with pytest.raises(ValueError, match="outside their image"):
        P.PatchPool(ims, np.array([[1, 16, 0]]), np.zeros(1), 7)
    with pytest.raises(ValueError, match="augment"):
        pool.get_batch(np.array([0]), augment="mixup")


def test_iter_batches_cover_indices_once():
    pool, _, _ = small_pool()
    batches = list(pool.iter_batches(np.arange(6), 4, np.random.default_rng(0)))
    assert [len(b[1]) for b in batches] == [4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    torch.utils.data.DataLoader(pool, batch_size=3)  # a torch Dataset
    xs = next(iter(torch.utils.data.DataLoader(pool, batch_size=3)))[0]
    assert tuple(xs.shape) == (3, 3, 7, 7)


def test_exudate_and_hemorrhage_pools_from_records():
    shape = (40, 40)
    recs = [
        make_record("a", "p0", ex=disk(shape, (15, 15), 2), hem=np.zeros(shape, bool), seed=1),
        make_record("b", "p1", ex=np.zeros(shape, bool), hem=disk(shape, (20, 25), 2), seed=2),
        make_record("c", "p2", ex=np.zeros(shape, bool), hem=np.zeros(shape, bool), seed=3),
    ]
    ex = P.exudate_pool(recs, size=8, margin=4, max_negatives_per_image=50, seed=0)
    assert ex.class_counts()[1] == disk(shape, (15, 15), 2).sum()
    assert ex.class_counts()[0] == 150 and ex.scheme == "d4" and ex.image_ids == ["a", "b", "c"]
    hp = P.hemorrhage_pool(recs, size=9, max_negatives_per_image=None)
    neg_imgs = set(hp.positions["image"][hp.labels == 0].tolist())
    assert neg_imgs == {0, 2}  # never from the image with hemorrhages
    assert set(hp.positions["image"][hp.labels == 1].tolist()) == {1}
    # all images with hemorrhages (IDRiD-like): clear error unless the option is given
    sick = [recs[1], make_record("d", "p3", hem=disk(shape, (10, 10), 1), seed=4)]
    with pytest.raises(ValueError, match="allow_lesion_images=True"):
        P.hemorrhage_pool(sick, size=9)
    hp2 = P.hemorrhage_pool(sick, size=9, allow_lesion_images=True, margin=5, max_negatives_per_image=30)
    assert hp2.class_counts()[0] == 60
    with pytest.raises(ValueError, match="no positive patches"):
        P.exudate_pool(recs[1:], size=8)
    with pytest.raises(ValueError, match="no positive patches"):
        P.hemorrhage_pool([recs[0], recs[2]], size=9)
    with pytest.raises(ValueError, match="larger than image"):
        P.exudate_pool(recs, size=41)


# ----------------------------------------------------------------------------------------------
# sampling and splits
# ----------------------------------------------------------------------------------------------
def test_balanced_sample_counts_and_errors():
    pool, _, _ = small_pool()
    rng = np.random.default_rng(0)
    idx = P.balanced_sample(pool, 2, rng)
    assert len(idx) == 4 and len(set(idx.tolist())) == 4
    assert np.bincount(pool.labels[idx], minlength=2).tolist() == [2, 2]
    idx = P.balanced_sample(pool, {0: 1, 1: 3}, rng)
    assert np.bincount(pool.labels[idx], minlength=2).tolist() == [1, 3]
    idx = P.balanced_sample(pool, 1, rng, within=np.array([0, 1, 2, 3]))
    assert set(idx.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="asked for 5 positive .* only 3 exist: 2 short"):
        P.balanced_sample(pool, (1, 5), rng)
    idx = P.balanced_sample(pool, 10, rng, replace=True)
    assert np.bincount(pool.labels[idx]).tolist() == [10, 10]


def records_for_split(n_patients, per_patient=2, lesion_every=3):
    recs = []
    for p in range(n_patients):
        for e in range(per_patient):
            hem = np.zeros((4, 4), bool)
            hem[0, 0] = p % lesion_every == 0
            recs.append(FundusImage(id=f"{p}-{e}", patient_id=f"P{p}", image_=np.zeros((4, 4, 3), np.uint8),
                                    hemorrhage_mask=hem))
    return recs


def test_split_by_patient_keeps_patients_apart_and_is_seeded():
    recs = records_for_split(20)
    sp = P.split_by_patient(recs, (0.6, 0.2, 0.2), seed=3)
    assert list(sp) == ["train", "validation", "test"]
    all_idx = sorted(sum(sp.values(), []))
    assert all_idx == list(range(len(recs)))
    owners = {name: {recs[i].patient_id for i in idx} for name, idx in sp.items()}
    assert not owners["train"] & owners["validation"]
    assert not owners["train"] & owners["test"]
    assert not owners["validation"] & owners["test"]
    assert [len(owners[n]) for n in sp] == [12, 4, 4]
    assert sp == P.split_by_patient(recs, (0.6, 0.2, 0.2), seed=3)
    assert sp != P.split_by_patient(recs, (0.6, 0.2, 0.2), seed=4)


def test_split_by_patient_stratified_spreads_lesion_patients():
    recs = records_for_split(30, lesion_every=3)  # 10 patients with hemorrhages
    sp = P.split_by_patient(recs, (0.6, 0.2, 0.2), seed=0, stratify="has_hemorrhages")
    sick = {name: len({recs[i].patient_id for i in idx if recs[i].has_hemorrhages}) for name, idx in sp.items()}
    assert sick == {"train": 6, "validation": 2, "test": 2}


def test_split_counts_and_split_errors():
    assert P.split_counts(10, (0.6, 0.2, 0.2)).tolist() == [6, 2, 2]
    assert P.split_counts(3, (0.8, 0.1, 0.1)).tolist() == [1, 1, 1]
    assert P.split_counts(7, (0.5, 0.5)).sum() == 7
    with pytest.raises(ValueError, match="2 patient\\(s\\) into 3 splits.*1 patient\\(s\\) short"):
        P.split_by_patient(records_for_split(2, per_patient=5), (0.6, 0.2, 0.2))
    with pytest.raises(ValueError, match="sum to 1"):
        P.split_by_patient(records_for_split(5), (0.6, 0.6))
    with pytest.raises(ValueError, match="one name per fraction"):
        P.split_by_patient(records_for_split(5), (0.5, 0.5), names=["a"])
    recs = records_for_split(5)
    recs[0].hemorrhage_mask = None
    with pytest.raises(ValueError, match="unknown"):
        P.split_by_patient(recs, stratify="has_hemorrhages")


# ----------------------------------------------------------------------------------------------
# pictures (fundus_nb.widgets): headless figures, clear errors
# ----------------------------------------------------------------------------------------------
def test_patch_pictures_headless():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fundus_nb import widgets

    pool, ims, pos = small_pool()
    fig = widgets.plot_patch_grid(pool.extract(np.arange(6)), [str(i) for i in range(6)], ncols=4)
    assert len(fig.axes) == 8 and sum(ax.axison for ax in fig.axes) == 6  # 2 rows x 4, 2 blank
    shown = fig.axes[5].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), sliced_patch(ims[1], 3, 14, 7))
    plt.close(fig)
    fig = widgets.plot_positions(ims[0], {"exudate": (np.array([1, 2, 3]), np.array([4, 5, 6]))}, max_points=2)
    offsets = fig.axes[0].collections[0].get_offsets()
    assert len(offsets) == 2 and "exudate (3)" in fig.axes[0].get_legend().get_texts()[0].get_text()
    plt.close(fig)
    fig = widgets.show_pool_page(pool, np.arange(6), page=1, page_size=4)
    assert sum(ax.axison for ax in fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="page must lie in 0..1"):
        widgets.show_pool_page(pool, np.arange(6), page=2, page_size=4)
    with pytest.raises(ValueError, match="one title per patch"):
        widgets.plot_patch_grid(pool.extract(np.arange(2)), ["a"])


# ------------------------------------------------------------------ grid_pool (natural prevalence)

def _grid_record(size=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (0.45 * size) ** 2
    ex = np.zeros((size, size), bool)
    for r, c in rng.integers(size // 4, 3 * size // 4, (6, 2)):
        ex[r:r + 3, c:c + 2] = True
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return FundusImage(id=f"g{seed}", patient_id="p", image_=img, exudate_mask=ex & fov,
                            hemorrhage_mask=np.zeros_like(ex), fov=fov)


def test_grid_pool_matches_brute_force_rule():
    from fundus_nb import patches as P

    recs = [_grid_record(128, 0), _grid_record(128, 1)]
    pool = P.grid_pool(recs, size=48, stride=16, window=8)  # 128 px: stride 4 px, window 2 px
    step, half = 4, 2
    want = []
    for k, rec in enumerate(recs):
        for r in range(step // 2, 128, step):
            for c in range(step // 2, 128, step):
                if rec.fov[r, c]:
                    win = rec.exudate_mask[max(r - half, 0): r + half + 1, max(c - half, 0): c + half + 1]
                    want.append((k, r, c, int(win.any())))
    got = sorted(zip(pool.positions["image"].tolist(), pool.positions["row"].tolist(),
                     pool.positions["col"].tolist(), pool.labels.tolist(), strict=True))
    assert got == sorted(want)
    assert 0 < pool.labels.mean() < 0.5 and pool.size == 48


@pytest.mark.parametrize("stride, err, text", [
    (0, ValueError, "positive"), (-4, ValueError, "positive"), (2000, ValueError, "larger than the image"),
    ("16", TypeError, "number"), (True, TypeError, "number"),
])
def test_grid_pool_bad_stride(stride, err, text):
    from fundus_nb import patches as P

    with pytest.raises(err, match=text):
        P.grid_pool([_grid_record(128)], stride=stride)
