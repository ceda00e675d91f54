"""Tests of fundus_nb.data: the synthetic generator, the file readers and every loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _reference import assert_one_sentence
from PIL import Image
from scipy import ndimage
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from fundus_nb import data

os.environ.setdefault("TQDM_DISABLE", "1")


# ------------------------------------------------------------------ synthetic generator

@pytest.fixture(scope="module")
def big():
    """Two 256-px images with both lesion kinds (one good, one poor) and one healthy image."""
    return [
        data.synthetic_fundus(seed=5, index=0, size=256, category="both", eye="R"),
        data.synthetic_fundus(seed=5, index=1, size=256, category="both", eye="L", quality="poor"),
        data.synthetic_fundus(seed=5, index=2, size=256, category="healthy"),
    ]


@pytest.fixture(scope="module")
def small_set():
    return data.load("synthetic", n_patients=5, size=96, cache=False)


def test_synthetic_is_deterministic_per_seed():
    a = data.synthetic_fundus(seed=1, index=3, size=128)
    b = data.synthetic_fundus(seed=1, index=3, size=128)
    c = data.synthetic_fundus(seed=2, index=3, size=128)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.hemorrhage_mask, b.hemorrhage_mask)
    assert np.array_equal(a.exudate_mask, b.exudate_mask) and np.array_equal(a.fov, b.fov)
    assert np.mean(a.image != c.image) > 0.5


def test_dataset_is_deterministic(small_set):
    again = data.load("synthetic", n_patients=5, size=96, cache=False)
    assert [r.id for r in again] == [r.id for r in small_set]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(again, small_set, strict=True))
    other = data.load("synthetic", n_patients=5, size=96, seed=1, cache=False)
    assert not np.array_equal(other[0].image, small_set[0].image)


def test_record_types_and_fov(big):
    for rec in big:
        assert rec.image.shape == (256, 256, 3) and rec.image.dtype == np.uint8
        for m in (rec.fov, rec.exudate_mask, rec.hemorrhage_mask):
            assert m.shape == (256, 256) and m.dtype == bool
        assert rec.hemorrhage_centers.shape[1] == 2 and rec.source == "synthetic"
        # pixels outside the exact FOV are near black, inside clearly brighter
        assert rec.image[~rec.fov].max() <= 12
        assert np.median(rec.image[rec.fov][:, 0]) > 60
        # a field of view is a disc of radius 0.44-0.48 of the side, possibly cut top/bottom
        area = rec.fov.mean()
        assert 0.45 < area < np.pi * 0.48**2 + 0.01


def test_centres_are_component_centroids(big):
    for rec in big[:2]:
        props = regionprops(sk_label(rec.hemorrhage_mask, connectivity=2))
        ref = np.array([p.centroid for p in props]).reshape(-1, 2)
        got = rec.hemorrhage_centers
        assert len(ref) >= 1 and got.shape == ref.shape
        assert np.allclose(np.sort(got, axis=0), np.sort(ref, axis=0))
        labels = sk_label(rec.hemorrhage_mask, connectivity=2)
        inside = [labels[int(round(r)), int(round(c))] > 0 for r, c in got]
        assert np.mean(inside) >= 0.8  # centroids of convex-ish blobs fall on the lesion
        for (r, c), p in zip(ref, props, strict=True):  # and always inside the component's bounding box
            r0, c0, r1, c1 = p.bbox
            assert r0 <= r <= r1 and c0 <= c <= c1


def test_lesions_inside_fov_and_coloured(big):
    for rec in big:
        assert not (rec.exudate_mask & ~rec.fov).any() and not (rec.hemorrhage_mask & ~rec.fov).any()
    rec = big[0]
    img = rec.image.astype(float)
    bg = rec.fov & ~rec.exudate_mask & ~rec.hemorrhage_mask
    ex = img[rec.exudate_mask].mean(0)
    assert rec.exudate_mask.sum() > 20
    assert ex[1] > img[bg][:, 1].mean() + 40  # much more green: yellow
    assert ex[0] > ex[2] + 40 and ex[1] > ex[2] + 40  # red and green over blue: yellow
    he = img[rec.hemorrhage_mask].sum(1).mean()
    assert he < img[bg].sum(1).mean() - 60  # hemorrhages are dark


def test_masks_cover_exactly_the_drawn_lesions():
    """Same (seed, index) drawn healthy and with lesions: pixels differ only at the masks (+ blur)."""
    for index in (0, 1):
        healthy = data.synthetic_fundus(seed=9, index=index, size=192, category="healthy")
        sick = data.synthetic_fundus(seed=9, index=index, size=192, category="both")
        lesion = sick.exudate_mask | sick.hemorrhage_mask
        changed = (healthy.image != sick.image).any(-1)
        assert lesion.sum() > 10
        assert not (changed & ~ndimage.binary_dilation(lesion, iterations=3)).any()
        assert (changed & lesion).sum() >= 0.95 * lesion.sum()


def test_healthy_image_has_empty_truth(big):
    rec = big[2]
    assert not rec.exudate_mask.any() and not rec.hemorrhage_mask.any()
    assert rec.hemorrhage_centers.shape == (0, 2) and rec.grade == 0
    assert rec.has_exudates is False and rec.has_hemorrhages is False


def test_poor_quality_image_is_less_sharp(big):
    def sharpness(rec):
        g = rec.image[..., 1].astype(float)
        inner = ndimage.binary_erosion(rec.fov, iterations=4)
        return np.abs(ndimage.laplace(g))[inner].mean()

    assert big[1].quality == "poor" and big[0].quality == "good"
    assert sharpness(big[1]) < 0.8 * sharpness(big[0])


def test_confounders_are_drawn_but_not_labelled():
    plain = data.synthetic_fundus(seed=0, index=0, size=128, category="healthy", confounder_density=0.0)
    busy = data.synthetic_fundus(seed=0, index=0, size=128, category="healthy", confounder_density=5.0)
    assert not busy.exudate_mask.any() and not busy.hemorrhage_mask.any()
    diff = np.abs(busy.image.astype(int) - plain.image.astype(int)).max(-1)
    assert (diff > 25).sum() > 20  # dark dots, pale spots, reflections changed pixels


@pytest.fixture(scope="module")
def confounded():
    """Twelve 256-px images (all categories) at twice the default confounder density."""
    cats = ["healthy", "exudates", "hemorrhages", "both"] * 3
    return [data.synthetic_fundus(seed=3, index=i, size=256, category=c, confounder_density=2.0)
            for i, c in enumerate(cats)]


def test_confounder_map_codes_and_never_lesions(confounded):
    seen = set()
    for rec in confounded:
        km = rec.confounder_map
        assert km.shape == rec.fov.shape and km.dtype == np.uint8
        assert km.max() < len(data.CONFOUNDER_KINDS)
        assert not km[~rec.fov].any()  # only inside the field of view
        assert not km[rec.exudate_mask | rec.hemorrhage_mask].any()  # never on a labelled lesion
        seen |= set(np.unique(km).tolist())
    assert seen == set(range(len(data.CONFOUNDER_KINDS)))  # every kind occurs in a dozen images


def test_bright_confounders_are_bright_and_unlabelled(confounded):
    """Every kind lifts the green channel above the plain background around it (brightness is what
    makes it a hard negative for an exudate detector), and none is ever in a lesion mask."""
    for code, name in enumerate(data.CONFOUNDER_KINDS[1:], start=1):
        lifts = []
        for rec in confounded:
            m = rec.confounder_map == code
            if m.sum() < 5:
                continue
            ring = ndimage.binary_dilation(m, iterations=6) & ~ndimage.binary_dilation(m, iterations=3)
            ring &= rec.fov & (rec.confounder_map == 0) & ~rec.exudate_mask & ~rec.hemorrhage_mask
            g = rec.image[..., 1].astype(float)
            lifts.append(g[m].mean() - g[ring].mean())
        assert lifts and np.median(lifts) > 8, (name, lifts)


def test_new_confounders_leave_lesions_and_hemorrhages_alone():
    """Lesion masks and hemorrhage centres do not depend on the confounders at all, and with no
    confounders the confounder map is empty."""
    for i in range(3):
        a = data.synthetic_fundus(seed=4, index=i, size=192, category="both", confounder_density=0.0)
        b = data.synthetic_fundus(seed=4, index=i, size=192, category="both", confounder_density=3.0)
        assert np.array_equal(a.exudate_mask, b.exudate_mask) and np.array_equal(a.hemorrhage_mask, b.hemorrhage_mask)
        assert np.allclose(a.hemorrhage_centers, b.hemorrhage_centers)
        assert not a.confounder_map.any() and b.confounder_map.any()


def test_cache_key_has_the_generator_version():
    assert data.GENERATOR_VERSION >= 3
    assert f"synthetic-v{data.GENERATOR_VERSION}-" in data.synthetic_cache_path(n_patients=1).name


def test_dataset_composition(small_set):
    recs = small_set
    assert len(recs) == 10 and len({r.id for r in recs}) == 10
    patients = {}
    for r in recs:
        patients.setdefault(r.patient_id, []).append(r)
    assert len(patients) == 5 and all(len(v) == 2 for v in patients.values())
    kinds = [(r.exudate_mask.any(), r.hemorrhage_mask.any()) for r in recs]
    assert kinds.count((False, False)) == 4
    assert kinds.count((True, False)) == 2 and kinds.count((False, True)) == 2 and kinds.count((True, True)) == 2
    assert sum(r.quality == "poor" for r in recs) == 2  # round(0.15 * 10)
    for r, (e, h) in zip(recs, kinds, strict=True):
        assert (r.grade == 0) == (not e and not h) and 0 <= r.grade <= 3
        assert r.exudate_mask is not None and r.hemorrhage_mask is not None and r.fov.any()


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_NB_HOME", str(tmp_path))
    first = data.load("synthetic", n_patients=1, size=80)
    path = data.synthetic_cache_path(n_patients=1, size=80)
    assert path.is_file() and path.parent == tmp_path / "data" / "cache"
    assert data.synthetic_cache_path(n_patients=1, size=80, seed=1) != path
    assert data.synthetic_cache_path(n_patients=1, size=80, lesion_contrast=0.5) != path
    second = data.load("synthetic", n_patients=1, size=80)
    for a, b in zip(first, second, strict=True):
        assert a.id == b.id and a.patient_id == b.patient_id and a.grade == b.grade and a.quality == b.quality
        for name in ("image", "exudate_mask", "hemorrhage_mask", "fov", "hemorrhage_centers", "confounder_map"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    path.write_bytes(b"garbage")  # a damaged cache is regenerated, not trusted
    third = data.load("synthetic", n_patients=1, size=80)
    assert np.array_equal(third[0].image, first[0].image)


@pytest.mark.parametrize(
    "options, error, text",
    [
        ({"n_patients": 0}, ValueError, "n_patients"),
        ({"size": 32}, ValueError, "size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"lesion_contrast": 0}, ValueError, "lesion_contrast"),
        ({"confounder_density": -1.0}, ValueError, "confounder_density"),
        ({"poor_fraction": 2.0}, ValueError, "poor_fraction"),
        ({"n_patients": 2.0}, TypeError, "n_patients must be an integer"),
        ({"size": "512"}, TypeError, "size must be an integer"),
        ({"seed": True}, TypeError, "seed must be an integer"),
        ({"lesion_size": "big"}, TypeError, "lesion_size must be a number"),
        ({"cache": "yes"}, TypeError, "cache must be True or False"),
        ({"n_patient": 3}, ValueError, "accepted options"),
    ],
)
def test_synthetic_bad_options(options, error, text):
    with pytest.raises(error, match=text):
        data.load("synthetic", **options)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="choose one of: synthetic, skimage-retina, idrid"):
        data.load("idrd")
    with pytest.raises(TypeError, match="dataset name must be a string"):
        data.load(None)


def test_skimage_retina():
    (rec,) = data.load("skimage-retina")
    assert rec.image.ndim == 3 and rec.image.shape[2] == 3 and rec.image.dtype == np.uint8
    assert rec.exudate_mask is None and rec.hemorrhage_mask is None and rec.hemorrhage_centers is None
    assert rec.source == "skimage-retina" and rec.grade == 0
    with pytest.raises(ValueError, match="accepted options: \\(none\\)"):
        data.load("skimage-retina", size=3)


# ------------------------------------------------------------------ file readers

def _rgb(h=30, w=40, seed=0):
    return np.random.default_rng(seed).integers(20, 230, (h, w, 3), dtype=np.uint8)


def _truth(h=30, w=40):
    m = np.zeros((h, w), bool)
    m[5:9, 10:15] = True
    m[20:22, 30:33] = True
    return m


def _save_rgb(path: Path, arr=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb() if arr is None else arr).save(path, **kw)
    return path


def _save_palette(path: Path, mask):
    """Palette image, index 1 = red lesion (what converting to grey would turn into 76)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.save(path)
    return path


def _save_rgba_lzw(path: Path, mask):
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[..., 3] = 255
    rgba[mask, 0] = 255
    tifffile.imwrite(path, rgba, compression="lzw", photometric="rgb", extrasamples=["unassalpha"])
    return path


def _save_png(path: Path, mask, value=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * value).astype(np.uint8)).save(path)
    return path


def test_read_mask_encodings(tmp_path):
    import tifffile

    m = _truth()
    pal = _save_palette(tmp_path / "p.tif", m)
    assert np.array(Image.open(pal).convert("L")).max() == 76  # the trap a grey conversion falls into
    assert np.array_equal(data.read_mask(pal), m)
    assert np.array_equal(data.read_mask(_save_palette(tmp_path / "p.png", m)), m)
    lzw = _save_rgba_lzw(tmp_path / "r.tif", m)
    with tifffile.TiffFile(lzw) as tf:
        assert tf.pages[0].compression == 5  # LZW really used
    assert np.array_equal(data.read_mask(lzw), m)
    tifffile.imwrite(tmp_path / "b.tif", m)  # 1-bit bilevel TIFF
    assert np.array_equal(data.read_mask(tmp_path / "b.tif"), m)
    assert np.array_equal(data.read_mask(_save_png(tmp_path / "m.png", m)), m)
    rgb = np.zeros(m.shape + (3,), np.uint8)
    rgb[m] = (0, 0, 200)
    assert np.array_equal(data.read_mask(_save_rgb(tmp_path / "c.png", rgb)), m)


def test_read_mask_agreement_threshold(tmp_path):
    grey = np.array([[0, 63, 127, 190, 191, 255]], np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(grey).save(path)
    assert data.read_mask(path).tolist() == [[False, True, True, True, True, True]]
    assert data.read_mask(path, threshold=0.75).tolist() == [[False, False, False, False, True, True]]
    assert data.read_mask(path, threshold=0.5).tolist() == [[False, False, True, True, True, True]]


def test_read_image_modes_and_errors(tmp_path):
    arr = _rgb()
    assert np.array_equal(data.read_image(_save_rgb(tmp_path / "a.PNG", arr)), arr)
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    assert np.array_equal(data.read_image(_save_rgb(tmp_path / "o.png", rgba)), arr)  # opaque alpha dropped
    rgba[0, 0, 3] = 0
    with pytest.raises(ValueError, match="transparent"):
        data.read_image(_save_rgb(tmp_path / "t.png", rgba))
    grey = tmp_path / "g.png"
    Image.fromarray(arr[..., 1]).save(grey)
    with pytest.raises(ValueError, match="grayscale.*colour fundus photograph"):
        data.read_image(grey)
    with pytest.raises(ValueError, match="grayscale"):
        data.image_size(grey)
    jpg = _save_rgb(tmp_path / "x.jpg", _rgb(200, 200))
    (tmp_path / "cut.jpg").write_bytes(jpg.read_bytes()[:600])
    with pytest.raises(ValueError, match="cut.jpg.*unreadable or truncated"):
        data.read_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.tif").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="junk.tif.*unreadable"):
        data.read_image(tmp_path / "junk.tif")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.read_image(tmp_path / "nope.png")


# ------------------------------------------------------------------ loaders on fixture trees

SEG = "A. Segmentation"
GT = "2. All Segmentation Groundtruths"


def _idrid_tree(root: Path) -> Path:
    img = root / SEG / "1. Original Images"
    gt = root / SEG / GT
    _save_rgb(img / "a. Training Set" / "IDRiD_01.jpg")
    _save_rgb(img / "a. Training Set" / "IDRiD_02.JPG")
    (img / "a. Training Set" / "Thumbs.db").write_bytes(b"\0junk")
    (img / "a. Training Set" / ".hidden.jpg").write_bytes(b"junk")
    _save_palette(gt / "a. Training Set" / "3. Hard Exudates" / "IDRiD_01_EX.tif", _truth())
    _save_rgba_lzw(gt / "a. Training Set" / "3. Hard Exudates" / "IDRiD_02_EX.TIF", _truth()[::-1])
    _save_palette(gt / "a. Training Set" / "2. Haemorrhages" / "IDRiD_01_HE.tif", _truth())
    _save_rgb(img / "b. Testing Set" / "IDRiD_55.jpg")
    _save_palette(gt / "b. Testing Set" / "3. Hard Exudates" / "IDRiD_55_EX.tif", _truth())
    return root


def test_idrid_fixture_tree(tmp_path):
    root = _idrid_tree(tmp_path / "IDRiD")
    recs = {r.id: r for r in data.load("idrid", root)}
    assert sorted(recs) == ["IDRiD_01", "IDRiD_02", "IDRiD_55"]
    r1, r2, r55 = recs["IDRiD_01"], recs["IDRiD_02"], recs["IDRiD_55"]
    assert r1.image.shape == (30, 40, 3) and r1.source == "idrid" and r1.patient_id == "IDRiD_01"
    assert np.array_equal(r1.exudate_mask, _truth()) and np.array_equal(r2.exudate_mask, _truth()[::-1])
    assert np.allclose(r1.hemorrhage_centers, [[6.5, 12.0], [20.5, 31.0]])  # centres of the two boxes
    assert r2.hemorrhage_mask.shape == (30, 40) and not r2.hemorrhage_mask.any()  # file missing: no lesion
    assert r2.hemorrhage_centers.shape == (0, 2)
    assert r55.hemorrhage_mask is None and r55.hemorrhage_centers is None  # folder missing: unknown
    assert [r.id for r in data.load("idrid", root / SEG, subset="test")] == ["IDRiD_55"]
    assert len(data.load("idrid", root, subset="train")) == 2
    with pytest.raises(ValueError, match="subset"):
        data.load("idrid", root, subset="val")
    with pytest.raises(TypeError, match="verify must be True or False"):
        data.load("idrid", root, verify="no")


def test_unread_names_the_deferred_fields_and_reads_nothing(tmp_path):
    root = _idrid_tree(tmp_path / "IDRiD")
    recs = {r.id: r for r in data.load("idrid", root)}
    r1, r55 = recs["IDRiD_01"], recs["IDRiD_55"]
    all_four = {"image", "exudate_mask", "hemorrhage_mask", "hemorrhage_centers"}
    assert r1.unread() == all_four and r1.unread() == all_four  # asking twice reads nothing
    assert r1.image_ is None
    assert r55.unread() == {"image", "exudate_mask"}  # no haemorrhage folder: absent, not unread
    _ = r1.hemorrhage_centers  # reads the haemorrhage mask it is computed from
    assert r1.unread() == {"image", "exudate_mask"}
    _ = r1.image
    assert r1.unread() == {"exudate_mask"}
    r1.exudate_mask = np.zeros((30, 40), bool)  # assigned: no longer deferred
    assert r1.unread() == set()
    assert r1.load_all().unread() == set() and r55.load_all().unread() == set()
    rec = data.synthetic_fundus(0, 0, size=64)
    assert rec.unread() == set()


def test_idrid_mask_size_mismatch(tmp_path):
    root = _idrid_tree(tmp_path / "IDRiD")
    bad = root / SEG / GT / "a. Training Set" / "2. Haemorrhages" / "IDRiD_01_HE.tif"
    _save_palette(bad, np.zeros((31, 40), bool))
    with pytest.raises(ValueError, match="IDRiD_01_HE.tif.*40x31.*40x30"):
        data.load("idrid", root)
    lazy = [r for r in data.load("idrid", root, verify=False) if r.id == "IDRiD_01"][0]
    with pytest.raises(ValueError, match="must have its image's size"):
        _ = lazy.hemorrhage_mask


def test_idrid_layout_errors(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(FileNotFoundError, match="IDRiD layout not found.*'A. Segmentation'.*found 'stuff/'"):
        data.load("idrid", tmp_path)
    (tmp_path / SEG / "1. Original Images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="a. Training Set or b. Testing Set.*empty"):
        data.load("idrid", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("idrid", tmp_path / "missing")
    with pytest.raises(ValueError, match="root="):
        data.load("idrid")
    with pytest.raises(ValueError, match="accepted options: subset, verify"):
        data.load("idrid", tmp_path, threshold=0.5)


def test_eophtha_fixture_tree(tmp_path):
    base = tmp_path / "e_optha_EX"
    _save_rgb(base / "EX" / "E0001" / "C0001.jpg")
    _save_rgb(base / "EX" / "E0001" / "C0002.JPG")
    (base / "EX" / "E0001" / "Thumbs.db").write_bytes(b"x")
    _save_png(base / "Annotation_EX" / "E0001" / "C0001_EX.png", _truth())
    _save_rgb(base / "healthy" / "E0002" / "DS001.jpg")
    (base / "healthy" / "Thumbs.db").write_bytes(b"x")
    recs = {r.id: r for r in data.load("eophtha-ex", tmp_path)}
    assert sorted(recs) == ["C0001", "C0002", "DS001"]
    assert np.array_equal(recs["C0001"].exudate_mask, _truth()) and recs["C0001"].patient_id == "E0001"
    assert recs["C0002"].exudate_mask is None  # annotation missing: unknown
    assert recs["DS001"].patient_id == "E0002" and not recs["DS001"].exudate_mask.any()
    assert all(r.hemorrhage_mask is None for r in recs.values())
    with pytest.raises(FileNotFoundError, match="e-ophtha EX layout not found.*'EX'"):
        data.load("eophtha-ex", tmp_path / "e_optha_EX" / "EX")


def test_diaretdb1_fixture_tree(tmp_path):
    res = tmp_path / "ddb1_v1.1" / "resources"
    grey = np.zeros((30, 40), np.uint8)
    grey[5:9, 10:15] = 255
    grey[20:22, 30:33] = 127  # only half the experts: below 0.75
    for i in (1, 2, 3):
        _save_rgb(res / "images" / "ddb1_fundusimages" / f"image00{i}.png")
    _save_png(res / "images" / "ddb1_groundtruth" / "hemorrhages" / "image001.png", grey, 1)
    _save_png(res / "images" / "ddb1_groundtruth" / "hardexudates" / "image002.png", grey, 1)
    (res / "traindatasets").mkdir()
    listed = "images/ddb1_fundusimages/image001.png\nimages/ddb1_fundusimages/image003.png\n"
    (res / "traindatasets" / "trainset.txt").write_text(listed)
    recs = {r.id: r for r in data.load("diaretdb1", tmp_path / "ddb1_v1.1")}
    assert sorted(recs) == ["image001", "image002", "image003"]
    expect = np.zeros((30, 40), bool)
    expect[5:9, 10:15] = True
    assert np.array_equal(recs["image001"].hemorrhage_mask, expect)
    assert np.allclose(recs["image001"].hemorrhage_centers, [[6.5, 12.0]])
    assert not recs["image001"].exudate_mask.any() and np.array_equal(recs["image002"].exudate_mask, expect)
    low = data.load("diaretdb1", tmp_path / "ddb1_v1.1", threshold=0.25)
    assert low[0].hemorrhage_mask.sum() == expect.sum() + 6
    assert [r.id for r in data.load("diaretdb1", res, subset="train")] == ["image001", "image003"]
    with pytest.raises(FileNotFoundError, match="testset.txt"):
        data.load("diaretdb1", res, subset="test")
    with pytest.raises(ValueError, match="threshold"):
        data.load("diaretdb1", res, threshold=75)
    with pytest.raises(TypeError, match="threshold must be a number"):
        data.load("diaretdb1", res, threshold="0.75")


def test_kaggle_fixture_tree(tmp_path):
    _save_rgb(tmp_path / "train" / "10_left.jpeg")
    _save_rgb(tmp_path / "train" / "10_right.JPEG")
    _save_rgb(tmp_path / "train" / "13_left.jpeg")
    (tmp_path / "train" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "trainLabels.csv").write_text("image,level\n10_left,0\n10_right,2\n13_left,4\n15_left,1\n")
    with pytest.raises(FileNotFoundError, match="15_left.*missing='skip'"):
        data.load("kaggle", tmp_path)
    recs = data.load("kaggle", tmp_path, missing="skip")
    assert [(r.id, r.patient_id, r.grade) for r in recs] == [
        ("10_left", "10", 0), ("10_right", "10", 2), ("13_left", "13", 4)
    ]
    assert recs[1].image.shape == (30, 40, 3) and recs[1].exudate_mask is None and recs[1].hemorrhage_mask is None
    (tmp_path / "trainLabels.csv").write_text("name,grade\n10_left,0\n")
    with pytest.raises(ValueError, match="lacks column.*'image'"):
        data.load("kaggle", tmp_path)


def test_messidor_fixture_tree(tmp_path):
    base = tmp_path / "Base11"
    _save_rgb(base / "20051019_38557_0100_PP.tif")
    _save_rgb(base / "20051020_43808_0100_PP.TIF")
    (base / "Annotation_Base11.csv").write_text(
        "Image name,Ophthalmologic department,Retinopathy grade,Risk of macular edema \n"
        "20051019_38557_0100_PP.tif,Service Ophtalmologie Lariboisière,0,0\n"
        "20051020_43808_0100_PP.tif,Service Ophtalmologie Lariboisière,3,2\n",
        encoding="utf-8",
    )
    recs = data.load("messidor", tmp_path)
    assert [(r.id, r.grade) for r in recs] == [("20051019_38557_0100_PP", 0), ("20051020_43808_0100_PP", 3)]
    assert recs[1].image.shape == (30, 40, 3) and recs[0].source == "messidor"
    (tmp_path / "Base12").mkdir()
    (tmp_path / "Base12" / "Annotation_Base12.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(ValueError, match="xlrd.*Annotation_Base12.csv"):
        data.load("messidor", tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'Base11'"):
        data.load("messidor", base)


def test_folder_fixture_tree(tmp_path):
    _save_rgb(tmp_path / "images" / "a.png")
    _save_rgb(tmp_path / "images" / "b.JPG")
    (tmp_path / "images" / "Thumbs.db").write_bytes(b"x")
    _save_png(tmp_path / "masks" / "a_EX.png", _truth())
    _save_png(tmp_path / "masks" / "a_HE.png", _truth())
    recs = {r.id: r for r in data.load("folder", tmp_path)}
    assert sorted(recs) == ["a", "b"]
    assert np.array_equal(recs["a"].exudate_mask, _truth()) and not recs["b"].exudate_mask.any()
    assert len(recs["a"].hemorrhage_centers) == 2 and recs["b"].hemorrhage_centers.shape == (0, 2)
    (tmp_path / "hemorrhage_centers.csv").write_text("image,row,col\nb.JPG,3,4\nb,10.5,7\n")
    (tmp_path / "labels.csv").write_text("image,patient_id,grade,quality\na,p1,2,good\nb.JPG,p1,0,poor\n")
    recs = {r.id: r for r in data.load("folder", tmp_path)}
    assert np.array_equal(recs["b"].hemorrhage_centers, [[3, 4], [10.5, 7]])
    assert recs["a"].hemorrhage_centers.shape == (0, 2)
    assert (recs["a"].patient_id, recs["a"].grade, recs["b"].grade, recs["b"].quality) == ("p1", 2, 0, "poor")
    (tmp_path / "hemorrhage_centers.csv").write_text("image,row,col\nzz,3,4\n")
    with pytest.raises(ValueError, match="row 2 names image 'zz'"):
        data.load("folder", tmp_path)
    os.remove(tmp_path / "hemorrhage_centers.csv")
    grey = tmp_path / "images" / "c.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(grey)
    with pytest.raises(ValueError, match="c.png.*grayscale"):
        data.load("folder", tmp_path)
    os.remove(grey)
    (tmp_path / "images" / "d.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="d.png.*unreadable or truncated"):
        data.load("folder", tmp_path)
    with pytest.raises(FileNotFoundError, match="folder layout not found.*'images'"):
        data.load("folder", tmp_path / "masks")


def test_raw_data_is_never_written(tmp_path):
    root = _idrid_tree(tmp_path / "IDRiD")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    for r in data.load("idrid", root):
        r.load_all()
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


# ------------------------------------------------------------------ real IDRiD samples

def test_idrid_real_samples(idrid_root):
    recs = data.load("idrid", idrid_root)
    assert len(recs) == 20
    assert sum("exudate" in r.mask_paths for r in recs) == 20
    assert sum("hemorrhage" in r.mask_paths for r in recs) == 19
    r43 = [r for r in recs if r.id == "IDRiD_43"][0]
    assert r43.image.shape == (2848, 4288, 3)
    assert r43.hemorrhage_mask.shape == (2848, 4288) and not r43.hemorrhage_mask.any()
    ex = r43.exudate_mask
    ref = np.array(Image.open(r43.mask_paths["exudate"])) > 0  # palette index, read independently
    assert ex.any() and np.array_equal(ex, ref)
    assert ex.sum() < 0.05 * ex.size


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda tmp: data.load("synthetic", n_patients=0), ValueError),
        (lambda tmp: data.load("synthetic", size=64.0), TypeError),
        (lambda tmp: data.load("synthetic", cache="yes"), TypeError),
        (lambda tmp: data.synthetic_fundus(0, 0, size=64, eye="X"), ValueError),
        (lambda tmp: data.load("idrd"), ValueError),
        (lambda tmp: data.load(3), TypeError),
        (lambda tmp: data.load("idrid"), ValueError),
        (lambda tmp: data.load("idrid", tmp / "missing"), FileNotFoundError),
        (lambda tmp: data.load("idrid", tmp), FileNotFoundError),
        (lambda tmp: data.load("folder", tmp, verify=1), TypeError),
        (lambda tmp: data.read_image(tmp / "nope.png"), FileNotFoundError),
        (lambda tmp: data.read_mask(tmp / "nope.png"), FileNotFoundError),
    ],
)
def test_errors_are_one_sentence_with_the_fix(tmp_path, call, error):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert_one_sentence(info.value)


def test_centers_from_mask_are_the_mean_pixel_of_each_8_connected_component():
    rng = np.random.default_rng(3)
    mask = rng.random((60, 80)) > 0.93  # scattered pixels, many joined only at a corner
    mask[10:20, 30:45] = True
    got = data.centers_from_mask(mask)
    # brute force: flood-fill each component with 8-neighbours, in the scan order of its first pixel
    seen, expected = np.zeros_like(mask), []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        stack, pixels = [(r0, c0)], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < 60 and 0 <= cc < 80 and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        expected.append(np.mean(pixels, axis=0))
    assert len(expected) > 50 and got.shape == (len(expected), 2)
    np.testing.assert_allclose(got, expected)
    assert data.centers_from_mask(np.zeros((5, 5), bool)).shape == (0, 2) and data.centers_from_mask(None) is None
