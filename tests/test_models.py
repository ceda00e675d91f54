"""Tests of fundus_nb.models: architectures, predict_proba, exact dense probability maps."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from _reference import hemorrhage_record, spread_sesnet
from torch import nn

from fundus_nb import ses
from fundus_nb.data import FundusImage
from fundus_nb.models import (
    LeNet,
    SeSNet,
    dense_probability_map,
    dense_probability_maps,
    device_of,
    eval_mode,
    fully_connected_layers,
    fully_connected_parameters,
    layer_table,
    output_stride,
    predict_proba,
    receptive_extent,
)
from fundus_nb.patches import record_fov


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _numpy_softmax1(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().double().numpy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e[:, 1] / e.sum(axis=1)


def _brute_map_at(model: nn.Module, image: torch.Tensor, rows, cols) -> np.ndarray:
    """Classify the s x s patches of the zero-padded image centred at (rows, cols) one by one."""
    s = model.patch_size
    _, h, w = image.shape
    padded = torch.zeros(3, h + s, w + s)
    padded[:, s // 2 : s // 2 + h, s // 2 : s // 2 + w] = image
    # patch centred at r covers rows r - s//2 .. r - s//2 + s - 1 -> padded rows r .. r + s - 1
    patches = torch.stack([padded[:, r : r + s, c : c + s] for r, c in zip(rows, cols, strict=True)])
    model.eval()
    with torch.no_grad():
        return _numpy_softmax1(model(patches))


def _test_pixels(h: int, w: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    fixed = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h // 2, 0),
             (h - 1, w // 2), (h // 2, w - 1), (1, 1), (h - 2, w - 2)]  # fmt: skip
    border = [(0, c) for c in rng.integers(0, w, 20)] + [(r, w - 1) for r in rng.integers(0, h, 20)]
    inner = list(zip(rng.integers(0, h, n), rng.integers(0, w, n), strict=True))
    pts = np.array(fixed + border + inner)
    return pts[:, 0], pts[:, 1]


def _train_a_little(model: nn.Module, steps: int = 3, seed: int = 0) -> nn.Module:
    """A few SGD steps on random patches so the weights leave their initial distribution."""
    g = torch.Generator().manual_seed(seed)
    s = model.patch_size
    x = torch.rand(32, 3, s, s, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0.5).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


# ----------------------------------------------------------------------------- architectures


def test_lenet_shapes_and_parameter_count():
    m = LeNet()
    assert m.patch_size == 48
    out = m(torch.rand(3, 3, 48, 48))
    assert out.shape == (3, 2)
    expected = (3 * 25 * 20 + 20) + (20 * 25 * 50 + 50) + (50 * 9 * 9 * 500 + 500) + (500 * 2 + 2)
    assert _n_params(m) == expected
    assert [layer.out_features for layer in m.fc_layers()] == [500, 2]
    assert m.fc_layers()[0] is m.fc1 and m.fc_layers()[1] is m.fc2


def test_sesnet_shapes_and_parameter_count():
    m = SeSNet()
    assert m.patch_size == 41
    assert m(torch.rand(2, 3, 41, 41)).shape == (2, 2)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 5 and all(c.out_channels == 32 and c.kernel_size == (3, 3) for c in convs)
    # feature map sizes 39 -> 19 -> 17 -> 8 -> 6 -> 4 -> 2 as PAPERS.md states
    assert tuple(m.features(torch.zeros(1, 3, 41, 41)).shape) == (1, 32, 2, 2)
    expected = (3 * 9 * 32 + 32) + 4 * (32 * 9 * 32 + 32) + (128 * 1024 + 1024) + (1024 * 2 + 2)
    assert _n_params(m) == expected


def test_sesnet_paper_init_has_variance_005():
    torch.manual_seed(0)
    m = SeSNet(init="paper")
    w = m.fc1.weight.detach().numpy().ravel()  # 131072 draws
    assert abs(w.std() - math.sqrt(0.05)) < 0.01 * math.sqrt(0.05)
    assert abs(w.mean()) < 0.005
    assert all(float(layer.bias.detach().abs().max()) == 0.0 for layer in fully_connected_layers(m))
    d = SeSNet(init="default")
    assert d.fc1.weight.detach().std() < 0.5 * math.sqrt(0.05)  # Kaiming-uniform is much smaller


def test_sesnet_bad_init():
    with pytest.raises(ValueError, match="init"):
        SeSNet(init="xavier")


@pytest.mark.parametrize("model_cls", [LeNet, SeSNet])
def test_wrong_patch_size_or_channels_raise(model_cls):
    m = model_cls()
    s = m.patch_size
    with pytest.raises(ValueError, match=f"{s}, {s}"):
        m(torch.rand(2, 3, s + 1, s + 1))
    with pytest.raises(ValueError, match="shape"):
        m(torch.rand(2, 4, s, s))
    with pytest.raises(ValueError, match="float"):
        m(torch.zeros(2, 3, s, s, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        predict_proba(m, torch.rand(2, 3, 24, 24))


def test_fully_connected_parameters():
    m = LeNet()
    params = fully_connected_parameters(m)
    assert [tuple(p.shape) for p in params] == [(500, 4050), (500,), (2, 500), (2,)]
    assert params[0] is m.fc1.weight
    with pytest.raises(ValueError, match="no fully connected"):
        fully_connected_parameters(nn.Sequential(nn.Conv2d(3, 2, 3)))


# ----------------------------------------------------------------------------- predict_proba


def test_predict_proba_matches_softmax_and_uint8_path():
    torch.manual_seed(1)
    m = _train_a_little(SeSNet())
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(37, 41, 41, 3), dtype=np.uint8)
    x = torch.from_numpy(u8.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = _numpy_softmax1(m.eval()(x))
    m.train()
    p = predict_proba(m, x, batch_size=8)  # several batches, the last one partial
    assert p.dtype == np.float32 and p.shape == (37,)
    np.testing.assert_allclose(p, ref, atol=1e-6)
    np.testing.assert_allclose(predict_proba(m, u8), ref, atol=1e-6)
    assert m.training  # mode restored
    assert predict_proba(m, torch.zeros(0, 3, 41, 41)).shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        predict_proba(m, x, batch_size=0)


def test_eval_mode_restores_every_submodule_mode_also_on_error():
    m = SeSNet()
    m.train()
    m.classifier.eval()  # mixed modes: the model in training, its classifier in eval
    before = [mod.training for mod in m.modules()]
    with eval_mode(m) as inside:
        assert inside is m and not any(mod.training for mod in m.modules())
    assert [mod.training for mod in m.modules()] == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(m):
        raise RuntimeError("boom")
    assert [mod.training for mod in m.modules()] == before
    m.eval()
    with eval_mode(m):
        pass
    assert not m.training
    with pytest.raises(TypeError, match="nn.Module"):
        with eval_mode("model"):
            pass


def test_device_of_parameters_buffers_and_empty_models():
    assert device_of(LeNet()) == torch.device("cpu")
    assert device_of(nn.BatchNorm2d(3, affine=False)) == torch.device("cpu")  # buffers only
    assert device_of(nn.ReLU()) == torch.device("cpu")  # nothing: CPU
    if torch.cuda.is_available():
        assert device_of(LeNet().cuda()).type == "cuda"
    with pytest.raises(TypeError, match="nn.Module"):
        device_of(torch.zeros(3))


# ----------------------------------------------------------------------------- dense maps


@pytest.mark.parametrize("model_cls", [LeNet, SeSNet])
@pytest.mark.parametrize("trained", [False, True])
def test_dense_map_equals_patchwise_classification(model_cls, trained):
    torch.manual_seed(3)
    m = model_cls()
    if trained:
        _train_a_little(m)
    h, w = 53, 67  # odd, not multiples of any pooling stride
    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, h, w, generator=g)
    dense = dense_probability_map(m, image, device="cpu")
    assert dense.shape == (h, w) and dense.dtype == np.float32
    rows, cols = _test_pixels(h, w, 200, seed=7)
    ref = _brute_map_at(m, image, rows, cols)
    assert len(rows) >= 240
    assert np.abs(dense[rows, cols] - ref).max() <= 1e-5
    assert dense.std() > 0  # the map is not constant, so the comparison means something


def test_dense_map_even_square_image_and_uint8_input():
    torch.manual_seed(4)
    m = _train_a_little(LeNet())
    rng = np.random.default_rng(2)
    u8 = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    from_u8 = dense_probability_map(m, u8, device="cpu")
    as_float = torch.from_numpy(u8.astype(np.float32) / 255.0).permute(2, 0, 1)
    np.testing.assert_array_equal(from_u8, dense_probability_map(m, as_float, device="cpu"))
    rows, cols = _test_pixels(64, 64, 60, seed=1)
    assert np.abs(from_u8[rows, cols] - _brute_map_at(m, as_float, rows, cols)).max() <= 1e-5


def test_dense_map_tiling_does_not_change_the_result():
    torch.manual_seed(5)
    m = _train_a_little(SeSNet())
    image = torch.rand(3, 70, 45)
    one = dense_probability_map(m, image, device="cpu", max_tile_mb=1e4)
    many = dense_probability_map(m, image, device="cpu", max_tile_mb=2.0)  # about 6 rows per tile
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_dense_map_fov_zeroes_outside():
    torch.manual_seed(6)
    m = SeSNet()
    image = torch.rand(3, 50, 50)
    yy, xx = np.mgrid[:50, :50]
    fov = (yy - 25) ** 2 + (xx - 25) ** 2 < 20**2
    full = dense_probability_map(m, image, device="cpu")
    masked = dense_probability_map(m, image, fov=fov, device="cpu")
    assert np.all(masked[~fov] == 0)
    np.testing.assert_array_equal(masked[fov], full[fov])


@pytest.mark.parametrize("model_cls", [LeNet, SeSNet])
def test_strided_map_is_the_patchwise_probability_every_stride_pixels(model_cls):
    torch.manual_seed(8)
    m = _train_a_little(model_cls())
    assert output_stride(m) == 4
    h, w = 57, 50  # neither a multiple of 4
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(9))
    coarse = dense_probability_map(m, image, stride=4, device="cpu")
    assert coarse.shape == (15, 13)  # ceil(57 / 4), ceil(50 / 4)
    rr, cc = np.meshgrid(np.arange(0, h, 4), np.arange(0, w, 4), indexing="ij")
    ref = _brute_map_at(m, image, rr.ravel(), cc.ravel()).reshape(coarse.shape)
    assert np.abs(coarse - ref).max() <= 1e-5 and ref.std() > 0
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - 28) ** 2 + (xx - 23) ** 2 < 20**2
    masked = dense_probability_map(m, image, fov, stride=4, device="cpu")
    np.testing.assert_array_equal(masked[~fov[::4, ::4]], 0.0)
    np.testing.assert_allclose(masked[fov[::4, ::4]], coarse[fov[::4, ::4]], atol=1e-6)


def test_strided_map_rejects_other_strides():
    m = SeSNet()
    with pytest.raises(ValueError, match="natural output stride 4"):
        dense_probability_map(m, torch.rand(3, 48, 48), stride=2)
    with pytest.raises(TypeError, match="stride must be an int"):
        dense_probability_map(m, torch.rand(3, 48, 48), stride=4.0)


def test_sesnet_receptive_extent_is_38():
    """Flooring in the poolings means patch rows/columns 38..40 never reach SeSNet's output."""
    assert receptive_extent(SeSNet()) == 38 and receptive_extent(LeNet()) == 48
    torch.manual_seed(0)
    m = SeSNet().eval()
    x = torch.rand(4, 3, 41, 41)
    x2 = x.clone()
    x2[:, :, 38:, :] = torch.rand(4, 3, 3, 41)
    x2[:, :, :, 38:] = torch.rand(4, 3, 41, 3)
    x3 = x.clone()
    x3[:, :, 37, 37] += 1.0  # row/column 37 does matter
    with torch.no_grad():
        assert torch.equal(m(x), m(x2))
        assert not torch.equal(m(x), m(x3))


def test_dense_map_bad_input():
    m = SeSNet()
    with pytest.raises(ValueError, match="smaller than"):
        dense_probability_map(m, torch.rand(3, 40, 100))
    with pytest.raises(ValueError, match="HxWx3"):
        dense_probability_map(m, np.zeros((64, 64, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        dense_probability_map(m, torch.rand(64, 64, 3))
    with pytest.raises(ValueError, match="fov"):
        dense_probability_map(m, torch.rand(3, 64, 64), fov=np.ones((64, 63), bool))
    with pytest.raises(TypeError, match="features"):
        dense_probability_map(nn.Sequential(nn.Conv2d(3, 2, 3)), torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="uint8 HxWx3 or float"):
        dense_probability_map(m, np.zeros((3, 64, 64), dtype=np.int32))


@pytest.mark.parametrize("cls, shapes", [
    (LeNet, [(20, 44, 44), (20, 22, 22), (50, 18, 18), (50, 9, 9), (4050,), (500,), (500,), (2,)]),
    (SeSNet, [(32, 39, 39), (32, 39, 39), (32, 19, 19), (32, 17, 17), (32, 17, 17), (32, 8, 8), (32, 6, 6),
              (32, 6, 6), (32, 4, 4), (32, 4, 4), (32, 2, 2), (32, 2, 2), (128,), (1024,), (1024,), (2,)]),
])
def test_layer_table_shapes_and_parameter_counts(cls, shapes):
    model = cls()
    rows = layer_table(model)
    assert [r["output"] for r in rows] == shapes  # the sizes worked out by hand in the class docstrings
    assert sum(r["parameters"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert rows[0]["parameters"] == 3 * rows[0]["output"][0] * (25 if cls is LeNet else 9) + rows[0]["output"][0]


# ----------------------------------------------------------------------------- maps in bulk


def _bulk_inputs():
    """Images of several sizes: two records (one with a stored FOV, one without) and two plain images."""
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((60, 52), (48, 64), (50, 50), (70, 45))]
    fov = np.zeros((60, 52), bool)
    fov[8:50, 5:47] = True
    recs = [FundusImage(id="a", patient_id="p", image_=images[0], fov=fov),
            FundusImage(id="b", patient_id="p", image_=images[1])]
    return recs + images[2:], recs


@pytest.mark.parametrize("stride", [1, 4])
def test_dense_probability_maps_equal_the_per_image_maps_in_input_order(stride):
    model = _train_a_little(SeSNet(), seed=3).eval()
    inputs, recs = _bulk_inputs()
    seen = []
    maps = dense_probability_maps(model, inputs, stride=stride, on_map=lambda k, m: seen.append(k))
    expected = [dense_probability_map(model, r.image, record_fov(r), stride=stride) for r in recs]
    expected += [dense_probability_map(model, im, stride=stride) for im in inputs[2:]]
    assert seen == [0, 1, 2, 3] and len(maps) == 4
    for got, want in zip(maps, expected, strict=True):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    fovs = [None, None, np.ones((50, 50), bool), None]  # explicit masks: None computes everywhere
    explicit = dense_probability_maps(model, inputs, fovs=fovs, stride=stride)
    assert np.array_equal(explicit[0], dense_probability_map(model, recs[0].image, stride=stride))


def test_dense_probability_maps_bad_input():
    model = SeSNet().eval()
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(TypeError, match="wrap a single image in a list"):
        dense_probability_maps(model, image)
    with pytest.raises(ValueError, match="one mask"):
        dense_probability_maps(model, [image, image], fovs=[None])


@pytest.mark.notebooks  # starts worker processes (tens of seconds on a loaded machine)
def test_dense_probability_maps_on_a_dask_cluster_equal_the_local_maps():
    distributed = pytest.importorskip("distributed")
    model = _train_a_little(SeSNet(), seed=4).eval()
    inputs, _ = _bulk_inputs()
    inputs = inputs * 3  # 12 images, more than the tasks kept in flight
    local = dense_probability_maps(model, inputs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            arrived = []
            spread = dense_probability_maps(model, inputs, client=client, on_map=lambda k, m: arrived.append(k),
                                            device="cpu")
            strided = dense_probability_maps(model, inputs[:4], client=client, stride=4)
            # nothing left behind: the model and the maps are released (the scheduler learns it asynchronously)
            deadline = time.monotonic() + 15
            while any(client.who_has().values()) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(client.who_has().values()), client.who_has()
    assert sorted(arrived) == list(range(12))
    for got, want in zip(spread, local, strict=True):
        assert np.array_equal(got, want)
    for got, inp in zip(strided, inputs[:4], strict=True):
        image, fov = (inp.image, record_fov(inp)) if isinstance(inp, FundusImage) else (inp, None)
        assert np.array_equal(got, dense_probability_map(model, image, fov, stride=4))



def test_ses_weight_pass_with_the_bulk_maps_is_bit_identical_to_the_per_image_loop():
    pool = [hemorrhage_record(i, lesion) for i, lesion in enumerate((True, False, True, False))]
    model = spread_sesnet()  # probabilities spread over (0, 1), as test_ses uses
    bulk = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    bulk.update_weights(model)  # default: models.iter_dense_probability_maps, no client
    loop = ses.SelectiveSampler(pool, batch_size=4, batches_per_epoch=1)
    loop.update_weights(model, prob_map=dense_probability_map)  # one dense_probability_map per image
    assert bulk.weights.std() > 1e-3 and np.array_equal(bulk.weights, loop.weights)
