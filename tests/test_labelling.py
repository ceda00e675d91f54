"""The EGL labelling loop: proposals, answers that persist, resume, undo, updates, bad input."""

import json

import numpy as np
import pytest
import torch
from _reference import assert_one_sentence, sliced_patch

from fundus_nb import data, egl, labelling, models, patches, preprocess
from fundus_nb.labelling import LabellingLoop, mask_oracle


@pytest.fixture(scope="module")
def records():
    recs = data.load("synthetic", n_patients=3, seed=5, size=256)
    return [preprocess.standardize_record(r, 128, cache=False) for r in recs]


def _model(seed=0):
    torch.manual_seed(seed)
    return models.LeNet()


def _loop(records, tmp_path, **kw):
    kw.setdefault("oracle", mask_oracle(records))
    kw.setdefault("steps_per_update", 3)
    return LabellingLoop(_model(), records, tmp_path / "labels_run", stride=64, image_stride=128, k=4, **kw)


def test_egl_proposals_are_the_top_k_of_phi_over_the_image_grid(records, tmp_path):
    loop = _loop(records, tmp_path)
    props = loop.propose()
    rec = records[loop.index[props[0].image_id]]
    # independent reference: Phi of every grid patch (tops 0, 16, ... at 128 px), cut by slicing
    rows, cols = patches.patchify(rec.fov, 48, 16)
    cut = np.stack([sliced_patch(rec.image, r, c, 48) for r, c in zip(rows, cols, strict=True)])
    phi = egl.expected_gradient_length(loop.model, cut).numpy()
    best = {(int(rows[j]), int(cols[j])) for j in np.argsort(-phi)[:4]}
    assert {(p.row, p.col) for p in props} == best
    assert [p.number for p in props] == [1, 2, 3, 4]
    assert np.allclose(sorted(p.score for p in props), np.sort(phi)[-4:], rtol=1e-5)


def test_interestingness_picks_the_image_with_the_largest_phi_sum(records, tmp_path):
    loop = _loop(records, tmp_path)
    sigma = loop.interestingness()
    chosen = loop.next_image()
    assert chosen == max(sigma, key=sigma.get) and len(sigma) == len(records)
    assert chosen not in loop.interestingness()  # an image is chosen once


def test_answers_follow_the_mask_rule_and_persist_line_by_line(records, tmp_path):
    loop = _loop(records, tmp_path)
    updates = loop.simulate(2)
    lines = [json.loads(x) for x in (tmp_path / "labels_run" / "labels.jsonl").read_text().splitlines()]
    labels = [e for e in lines if e["event"] == "label"]
    assert len(labels) == 8 and updates[-1]["n_labels"] == 8
    by_id = {r.id: r for r in records}
    for e in labels:  # the expert's rule, written out: an exudate pixel within 2 px (8 at 512) of the centre
        m = by_id[e["image_id"]].exudate_mask
        truth = m[max(e["row"] - 2, 0) : e["row"] + 3, max(e["col"] - 2, 0) : e["col"] + 3].any()
        assert e["label"] == ("exudate" if truth else "healthy")
        assert e["size"] == 48 and e["strategy"] == "egl" and e["round"] >= 1 and e["time"] > 0
    assert updates[1]["update"] == 2 and updates[1]["seconds"] > 0


def test_reopening_the_run_dir_resumes_labels_images_and_model(records, tmp_path):
    loop = _loop(records, tmp_path)
    loop.simulate(1)
    loop.propose()
    loop.answer()
    again = LabellingLoop(_model(seed=99), records, tmp_path / "labels_run", stride=64, image_stride=128, k=4)
    assert again.labels.keys() == loop.labels.keys() and again.round == loop.round
    assert again.chosen == loop.chosen and len(again.history) == 1
    saved = torch.load(tmp_path / "labels_run" / "labelling_model.pt", weights_only=True)["state_dict"]
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, saved[k])


def test_a_torn_last_line_loses_only_that_answer_and_the_file_only_grows(records, tmp_path):
    loop = _loop(records, tmp_path)
    props = loop.propose()
    for p in props[:3]:
        loop.label(p.patch_id, "healthy")
    path = tmp_path / "labels_run" / "labels.jsonl"
    with open(path, "a") as fh:  # a crash in the middle of writing the fourth answer
        fh.write('{"event": "label", "patch_id": "x')
    size = path.stat().st_size
    again = LabellingLoop(_model(), records, tmp_path / "labels_run", stride=64, image_stride=128, k=4)
    assert len(again.labels) == 3
    again.propose()
    again.label(props[3].patch_id, "exudate")
    assert path.stat().st_size > size
    third = LabellingLoop(_model(), records, tmp_path / "labels_run", stride=64, image_stride=128, k=4)
    assert third.labels[props[3].patch_id]["label"] == "exudate" and len(third.labels) == 4


def test_undo_and_relabel(records, tmp_path):
    loop = _loop(records, tmp_path)
    with pytest.raises(ValueError, match="nothing to undo"):
        loop.undo()
    a, b = loop.propose()[:2]
    loop.label(a.patch_id, "exudate")
    loop.label(b.patch_id, "skip")
    loop.label(a.patch_id, "healthy")
    assert loop.labels[a.patch_id]["label"] == "healthy"
    assert loop.undo() == a.patch_id and loop.labels[a.patch_id]["label"] == "exudate"
    assert loop.counts() == {"exudate": 1, "healthy": 0, "skip": 1}
    x, y = loop.labelled_patches()  # skips are not training data
    assert x.shape == (1, 48, 48, 3) and y.tolist() == [1]
    again = LabellingLoop(_model(), records, tmp_path / "labels_run", stride=64, image_stride=128, k=4)
    assert again.counts() == loop.counts()


def test_random_and_badge_propose_distinct_unlabelled_patches_of_the_current_image(records, tmp_path):
    for strategy in ("random", "badge"):
        loop = _loop(records, tmp_path / strategy, strategy=strategy)
        first = loop.propose()
        loop.answer()
        second = loop.propose()
        ids = [p.patch_id for p in first + second]
        assert len(set(ids)) == len(ids) == 8
        assert len({p.image_id for p in first + second}) == 1


def _raises(error, match, call, *args, **kwargs):
    """``call`` raises ``error`` matching ``match`` in the package's style: one sentence, '; ' before the fix."""
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    assert_one_sentence(info.value)


def test_bad_input_gives_one_clear_sentence(records, tmp_path):
    loop = _loop(records, tmp_path)
    p = loop.propose()[0]
    _raises(ValueError, "label must be one of", loop.label, p.patch_id, "maybe")
    _raises(TypeError, "label must be a string, got int", loop.label, p.patch_id, 1)
    _raises(ValueError, "unknown patch", loop.label, "nowhere@1,1", "healthy")
    _raises(ValueError, "nothing labelled yet", loop.update)
    _raises(ValueError, "nothing to undo", loop.undo)
    _raises(ValueError, "k must be >= 1", loop.propose, 0)
    _raises(ValueError, "no oracle was given", LabellingLoop(_model(), records, tmp_path / "o").answer)
    loop.label(p.patch_id, "healthy")
    others = [r for r in records if r.id != p.image_id]
    _raises(ValueError, "not among this loop's images", LabellingLoop, _model(), others, tmp_path / "labels_run")
    any_size = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    _raises(ValueError, "holds labels for 48-px patches, not 32", LabellingLoop, any_size, records,
            tmp_path / "labels_run", patch_size=32)
    _raises(ValueError, "does not take 32x32 patches", LabellingLoop, _model(), records, tmp_path / "p32",
            patch_size=32)
    _raises(ValueError, "does not take 48x48 patches", LabellingLoop, models.SeSNet(), records, tmp_path / "other")
    _raises(ValueError, "strategy must be one of", LabellingLoop, _model(), records, tmp_path / "other",
            strategy="greedy")
    _raises(TypeError, "k must be an integer", LabellingLoop, _model(), records, tmp_path / "other", k=2.5)
    _raises(TypeError, "model must be a torch.nn.Module", LabellingLoop, "LeNet", records, tmp_path / "other")
    _raises(ValueError, "record ids must be unique", LabellingLoop, _model(), records + records[:1], tmp_path / "d")
    lines = (tmp_path / "labels_run" / "labels.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["event"] == "label" for x in lines) == 1  # nothing lost by the errors
    assert labelling.LABELS == ("exudate", "healthy", "skip")


def test_labels_made_at_another_image_size_are_refused_and_resume_false_keeps_them(records, tmp_path):
    loop = _loop(records, tmp_path)
    loop.label(loop.propose()[0].patch_id, "healthy")
    small = [preprocess.standardize_record(r, 96, cache=False) for r in records]
    _raises(ValueError, "made on image .* at 128x128 px, but it is 96x96 px now", LabellingLoop, _model(), small,
            tmp_path / "labels_run")
    fresh = labelling.prepare_labels_dir(tmp_path / "labels_run", resume=False)
    assert fresh == tmp_path / "labels_run" and not any(fresh.iterdir())
    kept = tmp_path / "labels_run.1" / "labels.jsonl"
    assert '"label": "healthy"' in kept.read_text()
    assert labelling.describe({"n_answers": 0}).startswith("No answers")
    text = labelling.describe({"strategy": "egl", "n_answers": 10, "n_images": 2, "n_exudate": 4,
                               "exudate_fraction": 0.4, "f_measure_final": 0.5, "seconds_per_update": 1.0,
                               "seconds_per_proposal": 2.0, "image_size": 512})
    assert "4 (40%) were exudates" in text and "F-measure is 0.500" in text


def test_updates_train_on_l0_together_with_the_answers(records, tmp_path):
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 255, size=(6, 48, 48, 3), dtype=np.uint8)
    y0 = np.array([1, 1, 1, 0, 0, 0])
    loop = _loop(records, tmp_path, initial=(x0, y0))
    props = loop.propose()
    loop.label(props[0].patch_id, "healthy")
    loop.label(props[1].patch_id, "skip")
    x, y = loop.training_set()
    assert x.shape == (7, 48, 48, 3) and y.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert np.array_equal(x[:6], x0)
    assert loop.update()["n_labels"] == 1
    with pytest.raises(ValueError, match="initial must be"):
        _loop(records, tmp_path / "bad", initial=(x0[:, :32, :32], y0))
    with pytest.raises(ValueError, match="0 \\(healthy\\) or 1"):
        _loop(records, tmp_path / "bad2", initial=(x0, y0 + 1))


def test_the_loop_leaves_the_model_in_the_mode_it_found_it(records, tmp_path):
    """Checking, proposing (EGL and BADGE) and scoring run under models.eval_mode: nothing sets a mode by hand."""
    for strategy in ("egl", "badge"):
        model = _model()
        for training in (True, False):
            model.train(training)
            loop = LabellingLoop(model, records, tmp_path / f"{strategy}{training}", stride=64, image_stride=128,
                                 k=2, strategy=strategy, oracle=mask_oracle(records), steps_per_update=1)
            assert model.training is training
            loop.propose()
            assert model.training is training and all(m.training is training for m in model.modules())


def test_grid_prevalence_is_the_oracle_share_of_each_grid_averaged_over_images(records):
    # brute force: tops 0, 16, 32, ... (64 px at 512 = 16 px at 128) while the patch fits, centre in the FOV,
    # an exudate pixel within 2 px (8 at 512) of the centre
    shares = []
    for rec in records:
        m, h = rec.exudate_mask, rec.image.shape[0]
        cells = [(t + 24, s + 24) for t in range(0, h - 48 + 1, 16) for s in range(0, h - 48 + 1, 16)]
        cells = [(r, c) for r, c in cells if rec.fov[r, c]]
        shares.append(np.mean([m[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3].any() for r, c in cells]))
    assert labelling.grid_prevalence(records, stride=64) == pytest.approx(np.mean(shares))
    assert any(s > 0 for s in shares)
    with pytest.raises(ValueError, match="no records given"):
        labelling.grid_prevalence([])


def test_session_summary_paper_table_and_overlaps(records, tmp_path):
    val = patches.exudate_pool(records, max_positives_per_image=10, max_negatives_per_image=10, seed=0)
    loop = _loop(records, tmp_path, val_pool=val)
    loop.simulate(2)
    props = loop.propose()
    timings = [{"propose_s": 1.0, "update_s": 3.0}, {"propose_s": 2.0, "update_s": 5.0}]
    s = labelling.session_summary(loop, timings, image_size=128, f_initial=0.25, random_expected=0.01)
    assert s["n_answers"] == 8 and s["n_images"] == 2 and s["n_updates"] == 2
    assert s["f_measure_per_update"] == [h["f_measure"] for h in loop.history] and s["f_measure_final"] == s[
        "f_measure_per_update"][-1]
    assert s["seconds_per_update"] == 4.0 and s["seconds_per_proposal"] == 1.5
    pairs = [(a, b) for n, a in enumerate(props) for b in props[n + 1 :]]  # patches overlap when |d| < 48 both ways
    assert s["overlapping_pairs"] == pytest.approx(
        np.mean([abs(a.row - b.row) < 48 and abs(a.col - b.col) < 48 for a, b in pairs]))
    assert labelling.overlapping_pairs(props[:1]) is None
    table = labelling.paper_vs_run(s, dataset="synthetic", mu=1, init_batches=40)
    assert list(table.columns) == ["paper", "this run", "how ours differs"]
    assert table.loc["validation F-measure", "this run"] == f"0.250 before, {s['f_measure_final']:.3f} after"
    assert table.loc["initial model M", "this run"] == "40 batches of 32 from 1 image"


def test_discussion_sentences_follow_the_numbers():
    from scipy.stats import binom

    base = {"n_answers": 20, "k": 4, "seconds_per_update": 1.0, "seconds_per_proposal": 2.0,
            "exudate_fraction_random_expected": 0.05, "f_measure_initial": 0.2, "f_measure_per_update": [0.3, 0.5]}
    assert labelling._chance_of_at_least(4, 20, 0.05) == pytest.approx(binom.sf(3, 20, 0.05))
    many = labelling.discussion({**base, "n_exudate": 6, "overlapping_pairs": 0.9})
    few = labelling.discussion({**base, "n_exudate": 1, "overlapping_pairs": 0.1})
    assert f"only {binom.sf(5, 20, 0.05):.1%} of the time" in many and "more than a random draw finds" in many
    assert "no more than a random draw finds by luck" in few
    assert "near-duplicates" in many and "spread over the image" in few
    assert ("F-measure ended higher than it began (0.200 before the first answer, 0.300, 0.500 after each "
            "update).") in many
    none = labelling.discussion({**base, "n_answers": 8, "n_exudate": 0, "exudate_fraction_random_expected": 0.01,
                                 "f_measure_per_update": [0.1]})
    assert "too few answers to tell" in none and "F-measure ended lower than it began (" in none
    assert "waits 3.0 s on this machine" in none and "With 8 answers" in none
    assert labelling.discussion({"n_answers": 0, "n_exudate": 0}).startswith("No answers")
