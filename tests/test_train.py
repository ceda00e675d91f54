"""Tests of fundus_nb.train.fit: learning, history, checkpoints, exact resume, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fundus_nb.train import History, checkpoint_path, fit, latest_checkpoint, load_checkpoint


def _blobs(n: int = 128, seed: int = 0):
    """Two linearly separable 2-D blobs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 2)) * 0.5 + np.where(y[:, None] == 1, 2.0, -2.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _batches_from(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    def batches(epoch: int, rng: np.random.Generator):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]

    return batches


def _small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)
    )  # fmt: skip


def _image_data(n: int = 48):
    g = torch.Generator().manual_seed(11)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = (x[:, 1].mean(dim=(1, 2)) > 0.5).long()
    return x, y


def _ce_numpy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


# ------------------------------------------------------------------------------ learning


def test_loss_decreases_and_separates(tmp_path):
    x, y = _blobs()
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    hist = fit(model, _batches_from(x, y, 16), epochs=5, lr=0.1, device="cpu", progress=False)
    losses = hist.losses
    assert len(losses) == 5 * 8
    assert losses[-8:].mean() < 0.25 * losses[:8].mean()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()


def test_first_loss_and_sgd_step_match_numpy():
    """Loss = cross-entropy of the initial model; one step = w - lr * (grad + wd * w), by hand."""
    x, y = _blobs(32)
    torch.manual_seed(1)
    model = nn.Linear(2, 2)
    w0 = model.weight.detach().double().numpy().copy()
    b0 = model.bias.detach().double().numpy().copy()
    lr, wd = 0.3, 0.01
    hist = fit(model, lambda e, rng: [(x, y)], epochs=1, lr=lr, weight_decay=wd, device="cpu",
               progress=False)  # fmt: skip
    X, Y = x.double().numpy(), y.numpy()
    logits = X @ w0.T + b0
    assert hist.losses[0] == pytest.approx(_ce_numpy(logits, Y), rel=1e-5)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(2)[Y]) / len(Y)
    w1 = w0 - lr * (d.T @ X + wd * w0)
    b1 = b0 - lr * (d.sum(0) + wd * b0)
    np.testing.assert_allclose(model.weight.detach().numpy(), w1, atol=1e-6)
    np.testing.assert_allclose(model.bias.detach().numpy(), b1, atol=1e-6)


# ------------------------------------------------------------------------------ history


def test_history_records_and_frame():
    x, y = _image_data(32)  # 4 batches of 8 per epoch
    model = _small_cnn(0)
    calls = []

    def eval_fn(m):
        assert not m.training and not torch.is_grad_enabled()
        calls.append(1)
        with torch.no_grad():
            return {"acc": float((m(x).argmax(1) == y).float().mean())}

    def on_epoch_end(epoch, m):
        return {"refreshed": epoch * 10}

    hist = fit(model, _batches_from(x, y, 8), epochs=3, eval_fn=eval_fn, eval_every=3,
               on_epoch_end=on_epoch_end, device="cpu", progress=False)  # fmt: skip
    assert [s["iteration"] for s in hist.steps] == list(range(1, 13))
    assert [s["epoch"] for s in hist.steps] == [0] * 4 + [1] * 4 + [2] * 4
    # in-epoch evals at 3, 6, 9, 12; epoch ends at 4, 8, 12 (12 evaluated once, marked as end)
    assert [e["iteration"] for e in hist.evals] == [3, 4, 6, 8, 9, 12]
    assert [e["epoch_end"] for e in hist.evals] == [0, 1, 0, 1, 0, 1]
    assert len(calls) == 6
    ends = [e for e in hist.evals if e["epoch_end"]]
    assert [e["refreshed"] for e in ends] == [0.0, 10.0, 20.0]
    assert all(0.0 <= e["acc"] <= 1.0 for e in hist.evals)
    frame = hist.to_frame()
    assert len(frame) == 12 and list(frame["iteration"]) == list(range(1, 13))
    assert frame["acc"].notna().sum() == 6
    assert math.isnan(frame.loc[frame.iteration == 1, "acc"].item())
    assert frame.loc[frame.iteration == 12, "refreshed"].item() == 20.0
    assert History.from_dict(hist.to_dict()) == hist
    assert model.training


# ------------------------------------------------------------------------------ checkpoints


def _run(tmp, model_seed, epochs, **kw):
    x, y = _image_data()
    model = _small_cnn(model_seed)
    hist = fit(model, _batches_from(x, y, 12), epochs=epochs, lr=0.05, momentum=0.9,
               weight_decay=1e-3, seed=3, checkpoint_dir=tmp, device="cpu", progress=False,
               eval_fn=lambda m: {"w": float(m[0].weight.sum())}, **kw)  # fmt: skip
    return model, hist


def _untimed(h):
    """The history without its wall-clock entries (which differ between any two runs)."""
    d = h.to_dict()
    for e in d["evals"]:
        assert e.get("epoch_end") == 0.0 or e["train_seconds"] > 0
        e.pop("train_seconds", None)
    return d


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_gives_identical_weights_and_history(tmp_path):
    ref_model, ref_hist = _run(tmp_path / "a", 0, 3)

    # interrupted after 1 epoch (epochs=1), resumed to 3 with a freshly initialised model
    _run(tmp_path / "b", 0, 1)
    assert latest_checkpoint(tmp_path / "b") == checkpoint_path(tmp_path / "b", 1)
    model_b, hist_b = _run(tmp_path / "b", 99, 3)
    _assert_same_state(ref_model, model_b)
    assert _untimed(hist_b) == _untimed(ref_hist)

    # interrupted by an exception during epoch 2's end (no checkpoint for it), then resumed
    def boom(epoch, m):
        if epoch == 1:
            raise KeyboardInterrupt
        return None

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "c", 0, 3, on_epoch_end=boom)
    assert latest_checkpoint(tmp_path / "c") == checkpoint_path(tmp_path / "c", 1)
    model_c, hist_c = _run(tmp_path / "c", 5, 3)
    _assert_same_state(ref_model, model_c)
    assert _untimed(hist_c) == _untimed(ref_hist)

    # asking for fewer epochs than saved loads the matching checkpoint
    model_2, hist_2 = _run(tmp_path / "a", 7, 2)
    assert hist_2.iterations == 8 and hist_2.steps == ref_hist.steps[:8]


def test_resume_restores_extra_state(tmp_path):
    class Counter:
        def __init__(self):
            self.w = torch.zeros(3)

        def state_dict(self):
            return {"w": self.w.clone()}

        def load_state_dict(self, d):
            self.w = d["w"].clone()

    c1 = Counter()

    def bump(epoch, m):
        c1.w += epoch + 1

    _run(tmp_path, 0, 2, on_epoch_end=bump, extra_state=c1)
    c2 = Counter()
    _run(tmp_path, 0, 2, extra_state=c2)  # nothing left to do: only the state is restored
    assert torch.equal(c2.w, torch.full((3,), 3.0))


def test_checkpoint_loads_with_weights_only(tmp_path):
    _run(tmp_path, 0, 1)
    path = checkpoint_path(tmp_path, 1)
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 1 and set(raw["model"]) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    assert len(raw["history"]["steps"]) == 4
    assert load_checkpoint(path)["settings"]["model_class"] == "Sequential"


def test_leftover_tmp_files_never_load(tmp_path):
    ref_model, _ = _run(tmp_path / "ref", 0, 2)
    _run(tmp_path / "x", 0, 1)
    # the debris an interrupted atomic write could leave, plus a look-alike name
    (tmp_path / "x" / ".epoch_0002.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "x" / "epoch_0002.pt.tmp").write_bytes(b"garbage")
    assert latest_checkpoint(tmp_path / "x") == checkpoint_path(tmp_path / "x", 1)
    model, hist = _run(tmp_path / "x", 3, 2)
    _assert_same_state(ref_model, model)
    assert len(list((tmp_path / "x").glob("*.tmp"))) == 2  # left alone, and harmless


def test_resume_false_starts_over(tmp_path):
    _run(tmp_path, 0, 3)
    model, hist = _run(tmp_path, 0, 1, resume=False)
    assert hist.iterations == 4
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0001.pt"]


# ------------------------------------------------------------------------------ errors


def test_mismatched_checkpoint_is_refused(tmp_path):
    _run(tmp_path, 0, 1)
    x, y = _image_data()
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(5 * 3 * 3, 2))  # fmt: skip
    with pytest.raises(ValueError, match="different settings.*resume=False"):
        fit(other, _batches_from(x, y, 12), epochs=2, lr=0.05, momentum=0.9, weight_decay=1e-3,
            seed=3, checkpoint_dir=tmp_path, device="cpu", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="lr"):
        fit(_small_cnn(0), _batches_from(x, y, 12), epochs=2, lr=0.1, momentum=0.9,
            weight_decay=1e-3, seed=3, checkpoint_dir=tmp_path, device="cpu", progress=False)  # fmt: skip


def test_changed_batch_setting_between_two_calls_is_refused(tmp_path):
    """The checkpoint remembers what produced it: a new batch size cannot resume the old run."""
    x, y = _image_data()
    kw = dict(lr=0.05, momentum=0.9, seed=3, checkpoint_dir=tmp_path, device="cpu", progress=False)
    fit(_small_cnn(0), _batches_from(x, y, 12), epochs=1, fingerprint={"batch_size": 12, "ids": ["a", "b"]}, **kw)
    with pytest.raises(ValueError) as err:
        fit(_small_cnn(0), _batches_from(x, y, 6), epochs=2, fingerprint={"batch_size": 6, "ids": ["a", "b"]}, **kw)
    msg = str(err.value)
    assert "batch_size: checkpoint 12 vs now 6" in msg and "ids" not in msg and "resume=False" in msg
    # the same fingerprint resumes (tuples and lists are the same JSON): one more epoch, 4 more steps
    hist = fit(
        _small_cnn(0), _batches_from(x, y, 12), epochs=2, fingerprint={"ids": ("a", "b"), "batch_size": 12}, **kw
    )
    assert hist.iterations == 8
    # a checkpoint without fingerprint against one with: the new key is named
    with pytest.raises(ValueError, match="augment: checkpoint '<absent>' vs now True"):
        fit(_small_cnn(0), _batches_from(x, y, 12), epochs=3,
            fingerprint={"ids": ["a", "b"], "batch_size": 12, "augment": True}, **kw)  # fmt: skip


def test_fingerprint_must_be_a_json_dict(tmp_path):
    x, y = _image_data()
    with pytest.raises(TypeError, match="JSON-serialisable"):
        fit(_small_cnn(0), _batches_from(x, y, 12), epochs=1, lr=0.05, device="cpu", progress=False,
            checkpoint_dir=tmp_path, fingerprint={"ids": np.arange(3)})  # fmt: skip
    with pytest.raises(TypeError, match="must be a dict"):
        fit(_small_cnn(0), _batches_from(x, y, 12), epochs=1, lr=0.05, device="cpu", progress=False,
            fingerprint=["batch_size", 12])  # fmt: skip
    assert not list(tmp_path.glob("epoch_*.pt"))  # refused before any training


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "epoch_0001.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        _run(tmp_path, 0, 2)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "epoch_0009.pt")


def test_bad_arguments_and_batches():
    x, y = _blobs(16)
    m = nn.Linear(2, 2)
    ok = lambda e, rng: [(x, y)]  # noqa: E731
    kw = dict(device="cpu", progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        fit(m, ok, epochs=-1, **kw)
    # wrong types are TypeErrors, wrong values ValueErrors; each message names the fix
    for bad_kw, match in (
        ({"epochs": 2.0}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"epochs": 1, "lr": "0.1"}, "lr must be a number"),
        ({"epochs": 1, "momentum": None}, "momentum must be a number"),
        ({"epochs": 1, "eval_every": 1.5, "eval_fn": dict}, "eval_every must be an integer"),
    ):
        with pytest.raises(TypeError, match=match + ".*; pass"):
            fit(m, ok, **bad_kw, **kw)
    with pytest.raises(TypeError, match="batches must be a callable"):
        fit(m, [(x, y)], epochs=1, **kw)
    with pytest.raises(ValueError, match="eval_every must be positive"):
        fit(m, ok, epochs=1, eval_every=0, eval_fn=dict, **kw)
    with pytest.raises(ValueError, match="lr"):
        fit(m, ok, epochs=1, lr=0.0, **kw)
    with pytest.raises(ValueError, match="eval_fn"):
        fit(m, ok, epochs=1, eval_every=2, **kw)
    with pytest.raises(ValueError, match="no batches"):
        fit(m, lambda e, rng: [], epochs=1, **kw)
    with pytest.raises(ValueError, match="one label per sample"):
        fit(m, lambda e, rng: [(x, y[:3])], epochs=1, **kw)
    with pytest.raises(ValueError, match="integer class labels"):
        fit(m, lambda e, rng: [(x, y.float())], epochs=1, **kw)
    with pytest.raises(TypeError, match="torch tensors"):
        fit(m, lambda e, rng: [(x.numpy(), y)], epochs=1, **kw)
    with pytest.raises(TypeError, match="dict of numbers"):
        fit(m, ok, epochs=1, eval_fn=lambda model: 0.5, **kw)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit(m, lambda e, rng: [(bad, y)], epochs=1, **kw)


def test_eval_fn_runs_in_eval_mode_and_train_mode_is_restored():
    x, y = _blobs(16)
    model = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    seen = []

    def eval_fn(m):
        seen.append([sub.training for sub in m.modules()])
        return {}

    fit(model, lambda e, rng: [(x, y), (x, y)], epochs=2, eval_fn=eval_fn, eval_every=1, device="cpu", progress=False)
    assert len(seen) == 4 and not any(any(flags) for flags in seen)  # every submodule in eval mode inside
    assert all(sub.training for sub in model.modules())  # and back in train mode after each evaluation


def test_progress_bar_and_its_silencing(capsys, monkeypatch):
    x, y = _blobs(16)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    fit(nn.Linear(2, 2), lambda e, rng: [(x, y)], epochs=2, device="cpu", progress=True)
    assert "fit" in capsys.readouterr().err
    fit(nn.Linear(2, 2), lambda e, rng: [(x, y)], epochs=2, device="cpu", progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    fit(nn.Linear(2, 2), lambda e, rng: [(x, y)], epochs=2, device="cpu", progress=True)
    assert capsys.readouterr().err == ""
