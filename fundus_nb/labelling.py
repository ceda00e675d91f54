"""The expert in the loop: EGL proposes, an ophthalmologist (or a simulated one) labels.

:class:`LabellingLoop` is the headless core of notebook 07 and of
:func:`fundus_nb.widgets.labelling_widget`. It holds the model, the unlabelled images and the
labels given so far, and offers

* :meth:`~LabellingLoop.next_image` -- Algorithm 2's choice: the unchosen image with the largest
  interestingness (sum of the expected gradient length Phi over its grid of patches), or a random
  one with ``strategy="random"``;
* :meth:`~LabellingLoop.propose` -- the current image's ``k`` unlabelled grid patches with the
  largest Phi (Algorithm 1's top-k), a uniform draw (``"random"``) or BADGE's diverse picks;
* :meth:`~LabellingLoop.label` / :meth:`~LabellingLoop.undo` -- answers ``"exudate"``,
  ``"healthy"`` or ``"skip"``;
* :meth:`~LabellingLoop.update` -- the model update on everything labelled so far (a fixed number
  of SGD steps on D4-augmented patches, :func:`fundus_nb.train.fit`).

Nothing is lost: every answer is appended to ``run_dir/labels.jsonl`` (one JSON object a line,
flushed and fsynced before :meth:`label` returns, so a crash loses at most the answer being
written); the file is only ever appended to, an undo is an ``"undo"`` line. The model after each
update is written atomically to ``run_dir/labelling_model.pt``. Opening a loop on the same
``run_dir`` replays the file and continues where the last session stopped.

An ``oracle`` (for example :func:`mask_oracle`, the ground truth under the series' grid label rule)
answers in place of the expert, so the same loop runs in tests and under papermill.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import egl
from ._io import atomic_torch_save, atomic_write_json
from .metrics import patch_metrics
from .models import device_of, eval_mode, predict_proba
from .patches import PatchPool, augment_d4, extract, lesion_near, patchify, to_tensor
from .preprocess import scale_length
from .train import fit

__all__ = [
    "LABELS",
    "LABELS_FILE",
    "Proposal",
    "LabellingLoop",
    "mask_oracle",
    "prepare_labels_dir",
    "describe",
    "grid_prevalence",
    "session_summary",
    "paper_vs_run",
    "discussion",
]

#: The answers an expert can give.
LABELS = ("exudate", "healthy", "skip")
#: Name of the append-only answer log in the run folder.
LABELS_FILE = "labels.jsonl"
MODEL_FILE = "labelling_model.pt"
HISTORY_FILE = "labelling_history.json"
FORMAT = "fundus_nb.labels/1"
STRATEGIES = ("egl", "random", "badge")


@dataclass(frozen=True)
class Proposal:
    """A patch the loop asks about: its id, where it lies, its rank and score (Phi for EGL)."""

    patch_id: str
    image_id: str
    row: int
    col: int
    size: int
    number: int
    score: float


def _check_count(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}; pass a whole number >= 1")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}; pass a whole number >= 1")
    return int(v)


def _patch_id(image_id: str, row: int, col: int) -> str:
    return f"{image_id}@{int(row)},{int(col)}"


def mask_oracle(records: Sequence, window: float = 8.0) -> Callable[[str, int, int], str]:
    """A simulated expert answering from the records' exudate masks.

    It follows the series' grid label rule (:func:`fundus_nb.patches.lesion_near`, as
    :func:`fundus_nb.patches.grid_pool` does): a patch is an exudate patch when an exudate pixel lies
    within ``window`` pixels (Chebyshev distance, given at 512-px scale) of its centre, else healthy.
    """
    near = {}
    for rec in records:
        if rec.exudate_mask is None:
            raise ValueError(
                f"record {rec.id!r} has no exudate mask, so a mask oracle cannot answer for it; "
                "use annotated images or label by hand"
            )
        near[rec.id] = lesion_near(rec.exudate_mask, window)

    def answer(image_id: str, row: int, col: int) -> str:
        return "exudate" if near[image_id][row, col] else "healthy"

    return answer


def prepare_labels_dir(path: str | os.PathLike, resume: bool = True) -> Path:
    """The folder of a labelling session. With ``resume=False`` an existing folder is not deleted but
    renamed ``<name>.<n>`` (nothing an expert labelled is ever thrown away) and a new one begun.
    """
    path = Path(path)
    if path.exists() and not resume:
        n = 1
        while path.with_name(f"{path.name}.{n}").exists():
            n += 1
        path.rename(path.with_name(f"{path.name}.{n}"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe(summary: dict[str, Any]) -> str:
    """One paragraph on a labelling session, generated from its numbers (notebook 07's summary)."""
    n = summary["n_answers"]
    if not n:
        return "No answers were given, so nothing was learned yet."
    frac, f = summary.get("exudate_fraction") or 0.0, summary.get("f_measure_final")
    text = (
        f"The {summary['strategy']} loop asked about {n} patches in {summary['n_images']} images; "
        f"{summary['n_exudate']} ({frac:.0%}) were exudates"
    )
    text += (
        ", far above the ~1 % of grid patches that are exudate, so the proposals concentrate the "
        "expert's effort on lesions"
        if frac > 0.05
        else ", close to their rarity on the whole grid, so the proposals did not find the lesions yet"
    )
    if f is not None:
        text += f". After the last update the validation F-measure is {f:.3f}"
    if summary.get("seconds_per_update") is not None:
        text += (
            f". One update took {summary['seconds_per_update']:.2f} s and one proposal (Phi over a "
            f"{summary['image_size']}-px image) {summary['seconds_per_proposal']:.2f} s on this machine"
        )
    return text + "."


class LabellingLoop:
    """EGL-guided labelling of exudate patches, persisted in ``run_dir``.

    Parameters
    ----------
    model : nn.Module
        A two-class patch classifier taking ``patch_size`` patches (a :class:`~fundus_nb.models.LeNet`).
    records : sequence of FundusImage
        Standardized images (``image``, ``fov``) the expert may be asked about; ids must be unique.
    run_dir : path
        Where ``labels.jsonl``, the model and the update history live. An existing ``labels.jsonl``
        is replayed (it must be for these images and this patch size).
    patch_size : int
        Side of the proposed patches (48 in the EGL paper).
    stride, image_stride : float
        Grid step of the proposals and of the interestingness grid, in pixels at 512-px scale.
    strategy : {"egl", "random", "badge"}
        How images and patches are proposed (random and BADGE are baselines the paper does not show;
        BADGE picks the current image's patches only and chooses images like EGL).
    k : int
        Patches proposed at a time.
    oracle : callable, optional
        ``oracle(image_id, row, col) -> "exudate" | "healthy" | "skip"``; used by :meth:`answer`.
    val_pool : PatchPool, optional
        Validation patches; :meth:`update` then records their F-measure.
    initial : (uint8 patches (N, s, s, 3), 0/1 labels (N,)), optional
        Algorithm 1's L0: the labelled patches the initial model was trained on. Every update trains
        on L0 together with the expert's answers (updating on the answers alone lets a few
        "healthy" answers turn the model into one that calls everything healthy).
    steps_per_update, batch_size, lr, momentum : SGD settings of :meth:`update`.
    seed : int
        Seeds image/patch draws and the update's batches.
    """

    def __init__(
        self,
        model: nn.Module,
        records: Sequence,
        run_dir: str | os.PathLike,
        *,
        patch_size: int = 48,
        stride: float = 16.0,
        image_stride: float = 48.0,
        strategy: str = "egl",
        k: int = 8,
        oracle: Callable[[str, int, int], str] | None = None,
        val_pool: PatchPool | None = None,
        initial: tuple[np.ndarray, np.ndarray] | None = None,
        steps_per_update: int = 20,
        batch_size: int = 32,
        lr: float = 0.01,
        momentum: float = 0.9,
        seed: int = 0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}; pass 'egl', 'random' or 'badge'")
        for name, v in (
            ("k", k),
            ("steps_per_update", steps_per_update),
            ("batch_size", batch_size),
            ("patch_size", patch_size),
        ):
            _check_count(name, v)
        self.records = list(records)
        if not self.records:
            raise ValueError(
                "no records given, but the labelling loop needs at least one image; pass the images to label"
            )
        self.ids = [str(r.id) for r in self.records]
        if len(set(self.ids)) != len(self.ids):
            dups = sorted({i for i in self.ids if self.ids.count(i) > 1})[:3]
            raise ValueError(
                f"record ids must be unique (the labels file names patches by image id), got {dups} "
                "more than once; give every record its own id"
            )
        self.index = {i: n for n, i in enumerate(self.ids)}
        self.model, self.patch_size, self.strategy, self.k = model, int(patch_size), strategy, int(k)
        self.stride, self.image_stride = float(stride), float(image_stride)
        self.oracle, self.val_pool = oracle, val_pool
        self.initial = self._check_initial(initial, int(patch_size))
        self.steps_per_update, self.batch_size = int(steps_per_update), int(batch_size)
        self.lr, self.momentum, self.seed = float(lr), float(momentum), int(seed)
        self._check_model()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.labels_path = self.run_dir / LABELS_FILE
        self.rng = np.random.default_rng(self.seed)
        self.chosen: list[int] = []  # image indices in the order they were chosen
        self.current: int | None = None
        self.proposals: list[Proposal] = []
        self.phi_map: np.ndarray | None = None
        self._known: dict[str, dict] = {}  # every patch ever proposed or labelled: where it lies
        self._stack: list[dict] = []  # label events not undone, in order
        self.history: list[dict] = []
        self.seconds_labelling = 0.0
        self._t_last = time.monotonic()
        self._replay()
        self._load_model_and_history()

    # ------------------------------------------------------------------ state
    @property
    def round(self) -> int:
        """Images chosen so far (the Algorithm 2 round)."""
        return len(self.chosen)

    @property
    def labels(self) -> dict[str, dict]:
        """The current answer of every labelled patch (undone answers removed; last answer wins)."""
        out: dict[str, dict] = {}
        for ev in self._stack:
            out[ev["patch_id"]] = ev
        return out

    def counts(self) -> dict[str, int]:
        """How many patches carry each answer."""
        c = {name: 0 for name in LABELS}
        for ev in self.labels.values():
            c[ev["label"]] += 1
        return c

    @staticmethod
    def _check_initial(initial, size: int) -> tuple[np.ndarray, np.ndarray]:
        if initial is None:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
        x, y = (np.asarray(a) for a in initial)
        if x.dtype != np.uint8 or x.shape[1:] != (size, size, 3) or y.shape != (len(x),):
            raise ValueError(
                f"initial must be (uint8 patches (N, {size}, {size}, 3), N labels), got shapes "
                f"{x.shape} {x.dtype} and {y.shape}; pass pool.extract(idx), pool.labels[idx]"
            )
        if not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"initial labels must be 0 (healthy) or 1 (exudate), got {np.unique(y)[:5].tolist()}; "
                "map the classes to 0/1"
            )
        return x, y.astype(np.int64)

    def _check_model(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, got {type(self.model).__name__}; "
                "pass the patch classifier (e.g. models.LeNet())"
            )
        s = self.patch_size
        try:
            with eval_mode(self.model), torch.no_grad():
                out = self.model(torch.zeros(1, 3, s, s, device=device_of(self.model)))
        except (RuntimeError, ValueError) as exc:
            why = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"the model does not take {s}x{s} patches ({why}); "
                "pass a model built for that input (LeNet for 48 px) or set patch_size to its input size"
            ) from None
        if out.shape != (1, 2):
            raise ValueError(
                f"the model must return 2 logits per patch, got output shape {tuple(out.shape)}; "
                "pass a two-class patch classifier"
            )

    # ------------------------------------------------------------------ persistence
    def _append(self, event: dict) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        with open(self.labels_path, "ab") as fh:
            if fh.tell() > 0:  # a torn last line (crash mid-write) must not swallow this one
                with open(self.labels_path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":  # close it and say so, so replay knows it is not a hand edit
                        fh.write(b"\n" + json.dumps({"event": "torn", "time": time.time()}).encode() + b"\n")
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def _replay(self) -> None:
        if not self.labels_path.is_file():
            self._append(
                {
                    "event": "open",
                    "format": FORMAT,
                    "patch_size": self.patch_size,
                    "strategy": self.strategy,
                    "time": time.time(),
                    "image_shapes": {i: list(r.image.shape[:2]) for i, r in zip(self.ids, self.records, strict=True)},
                }
            )
            return
        lines = self.labels_path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                nxt = lines[n] if n < len(lines) else ""
                if n == len(lines) or nxt.startswith('{"event": "torn"'):
                    continue  # the answer being written when a session crashed
                raise ValueError(
                    f"{self.labels_path} line {n} is not JSON (the file was edited by hand); "
                    "restore it or use another run_dir"
                ) from None
            self._apply(ev, n)

    def _apply(self, ev: dict, n: int) -> None:
        kind = ev.get("event")
        where = f"{self.labels_path} line {n}"
        if kind == "open":
            if ev.get("patch_size") != self.patch_size:
                raise ValueError(
                    f"{where} holds labels for {ev.get('patch_size')}-px patches, not "
                    f"{self.patch_size}; use patch_size={ev.get('patch_size')} or another run_dir"
                )
            for i, shape in ev.get("image_shapes", {}).items():
                now = list(self.records[self.index[i]].image.shape[:2]) if i in self.index else shape
                if now != shape:
                    raise ValueError(
                        f"{where} holds labels made on image {i!r} at {shape[0]}x{shape[1]} px, but it "
                        f"is {now[0]}x{now[1]} px now; use the image size the labels were made at or "
                        "another run_dir"
                    )
        elif kind == "image":
            self._check_known_image(ev, where)
            self.chosen.append(self.index[ev["image_id"]])
            self.current = self.chosen[-1]
        elif kind == "label":
            self._check_known_image(ev, where)
            if ev["size"] != self.patch_size:
                raise ValueError(
                    f"{where} holds a {ev['size']}-px patch, but this loop cuts {self.patch_size}-px "
                    "patches; use the patch size the labels were made with or another run_dir"
                )
            self._known[ev["patch_id"]] = {k: ev[k] for k in ("image_id", "row", "col")}
            self._stack.append(ev)
            self.seconds_labelling = float(ev.get("seconds_total", self.seconds_labelling))
        elif kind == "undo":
            if self._stack:
                self._stack.pop()

    def _check_known_image(self, ev: dict, where: str) -> None:
        if ev["image_id"] not in self.index:
            raise ValueError(
                f"{where} names image {ev['image_id']!r}, which is not among this loop's images; "
                "open the loop with the images it was made for or use another run_dir"
            )

    def _load_model_and_history(self) -> None:
        path = self.run_dir / MODEL_FILE
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["state_dict"])
        hist = self.run_dir / HISTORY_FILE
        if hist.is_file():
            self.history = json.loads(hist.read_text())["updates"]

    # ------------------------------------------------------------------ choosing
    def _phi_map(self, i: int, stride: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Phi over image ``i``'s grid (``stride`` at 512 scale): the map and each grid patch's value."""
        rec = self.records[i]
        step = max(1, int(round(scale_length(stride, max(rec.image.shape[:2]), "stride"))))
        fov = getattr(rec, "fov", None)
        phi_map = egl.egl_map(self.model, rec.image, fov, stride=step, patch_size=self.patch_size)
        rows, cols = patchify(rec.image.shape[:2] if fov is None else np.asarray(fov, bool), self.patch_size, step)
        return phi_map, rows, cols, phi_map[rows, cols]

    def interestingness(self) -> dict[str, float]:
        """Sum of Phi over each unchosen image's grid (``image_stride``): Algorithm 2's score."""
        out = {}
        for i in range(len(self.records)):
            if i not in self.chosen:
                out[self.ids[i]] = float(np.nansum(self._phi_map(i, self.image_stride)[3]))
        return out

    def next_image(self) -> str:
        """Choose the next image to annotate (largest interestingness, or random) and return its id."""
        left = [i for i in range(len(self.records)) if i not in self.chosen]
        if not left:
            raise ValueError("every image has been chosen already; add images or stop labelling")
        if self.strategy == "random":
            i = int(self.rng.choice(left))
        else:
            sigma = self.interestingness()
            i = self.index[max(sigma, key=sigma.get)]
        self.chosen.append(i)
        self.current = i
        self.proposals = []
        self._append(
            {
                "event": "image",
                "image_id": self.ids[i],
                "round": self.round,
                "strategy": self.strategy,
                "time": time.time(),
            }
        )
        return self.ids[i]

    def propose(self, k: int | None = None) -> list[Proposal]:
        """The next ``k`` unlabelled patches of the current image (a new image first if needed)."""
        k = self.k if k is None else _check_count("k", k)
        if self.current is None:
            self.next_image()
        i = self.current
        self.phi_map, rows, cols, phi = self._phi_map(i, self.stride)
        done = self.labels
        free = np.array([_patch_id(self.ids[i], r, c) not in done for r, c in zip(rows, cols, strict=True)], bool)
        if not free.any():
            self.next_image()
            return self.propose(k)
        cand = np.flatnonzero(free)
        k = min(k, len(cand))
        if self.strategy == "random":
            pick = self.rng.choice(cand, size=k, replace=False)
        elif self.strategy == "badge":
            x = extract(self.records[i].image, 0, rows[cand], cols[cand], self.patch_size)
            pick = cand[egl.kmeans_pp(egl.gradient_embedding(self.model, x), k, self.rng)]
        else:
            pick = cand[np.argsort(-phi[cand], kind="stable")[:k]]
        self.proposals = []
        for n, j in enumerate(pick, 1):
            pid = _patch_id(self.ids[i], rows[j], cols[j])
            self._known[pid] = {"image_id": self.ids[i], "row": int(rows[j]), "col": int(cols[j])}
            self.proposals.append(
                Proposal(pid, self.ids[i], int(rows[j]), int(cols[j]), self.patch_size, n, float(phi[j]))
            )
        return list(self.proposals)

    def proposal_patches(self) -> np.ndarray:
        """uint8 ``(k, s, s, 3)`` pixels of the current proposals (what the expert looks at)."""
        if not self.proposals:
            return np.zeros((0, self.patch_size, self.patch_size, 3), np.uint8)
        img = self.records[self.index[self.proposals[0].image_id]].image
        return extract(img, 0, [p.row for p in self.proposals], [p.col for p in self.proposals], self.patch_size)

    # ------------------------------------------------------------------ answering
    def label(self, patch_id: str, value: str) -> None:
        """Record the answer ``value`` ("exudate", "healthy" or "skip") for a proposed patch."""
        if not isinstance(value, str):
            raise TypeError(f"label must be a string, got {type(value).__name__}; answer one of {LABELS}")
        if value not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {value!r}; answer one of these")
        if patch_id not in self._known:
            raise ValueError(f"unknown patch {patch_id!r}; label one of the proposed patches (loop.proposals)")
        now = time.monotonic()
        self.seconds_labelling += min(now - self._t_last, 300.0)  # a coffee break is not labelling time
        self._t_last = now
        where = self._known[patch_id]
        ev = {
            "event": "label",
            "patch_id": patch_id,
            **where,
            "size": self.patch_size,
            "label": value,
            "strategy": self.strategy,
            "round": self.round,
            "time": time.time(),
            "seconds_total": round(self.seconds_labelling, 3),
        }
        self._append(ev)
        self._stack.append(ev)

    def undo(self) -> str:
        """Take the last answer back; returns its patch id."""
        if not self._stack:
            raise ValueError("nothing to undo because no answer has been given yet; label a patch first")
        ev = self._stack.pop()
        self._append({"event": "undo", "patch_id": ev["patch_id"], "time": time.time()})
        return ev["patch_id"]

    def answer(self, oracle: Callable[[str, int, int], str] | None = None) -> dict[str, int]:
        """Let ``oracle`` (default: the loop's) answer every current proposal; returns the counts."""
        oracle = oracle or self.oracle
        if oracle is None:
            raise ValueError("no oracle was given; pass oracle=mask_oracle(records) or label the patches by hand")
        for p in self.proposals:
            self.label(p.patch_id, oracle(p.image_id, p.row, p.col))
        return self.counts()

    # ------------------------------------------------------------------ learning
    def labelled_patches(self) -> tuple[np.ndarray, np.ndarray]:
        """uint8 patches and 0/1 labels of every exudate/healthy answer (skips left out)."""
        evs = [e for e in self.labels.values() if e["label"] != "skip"]
        if not evs:
            return np.zeros((0, self.patch_size, self.patch_size, 3), np.uint8), np.zeros(0, np.int64)
        imgs = [self.records[self.index[e["image_id"]]].image for e in evs]
        x = np.concatenate(
            [extract(im, 0, [e["row"]], [e["col"]], self.patch_size) for im, e in zip(imgs, evs, strict=True)]
        )
        y = np.array([e["label"] == "exudate" for e in evs], np.int64)
        return x, y

    def training_set(self) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`update` trains on: L0 (``initial``) followed by the expert's answers."""
        x, y = self.labelled_patches()
        return np.concatenate([self.initial[0], x]), np.concatenate([self.initial[1], y])

    def update(self) -> dict[str, Any]:
        """Algorithm 1's model update on L0 and everything labelled: ``steps_per_update`` SGD steps
        on D4-augmented batches drawn uniformly from them; saves the model and returns
        ``{"n_labels", "seconds", ...}`` (plus the validation F-measure, sensitivity and specificity when
        ``val_pool`` was given). The model is left in training mode, as :func:`fundus_nb.train.fit`
        leaves it; the loop's predictions run under :func:`fundus_nb.models.eval_mode`.
        """
        answers = self.labelled_patches()[1]
        if len(answers) == 0:
            raise ValueError("nothing labelled yet; answer some proposals (exudate or healthy) before updating")
        n_answers, n_exudate = len(answers), int(answers.sum())
        x, y = self.training_set()
        t0 = time.perf_counter()
        n_up = len(self.history)

        def batches(epoch: int, rng: np.random.Generator):
            for _ in range(self.steps_per_update):
                idx = rng.integers(0, len(y), size=min(self.batch_size, len(y)))
                yield to_tensor(augment_d4(x[idx], rng)), torch.from_numpy(y[idx])

        # fit leaves the model in training mode; every prediction below and in the next proposals runs
        # under models.eval_mode, so the loop never sets a mode by hand
        fit(self.model, batches, epochs=1, lr=self.lr, momentum=self.momentum, seed=self.seed + n_up, progress=False)
        rec: dict[str, Any] = {
            "update": n_up + 1,
            "n_labels": n_answers,
            "n_exudate": n_exudate,
            "seconds_labelling": round(self.seconds_labelling, 3),
        }
        if self.val_pool is not None:
            idx = np.arange(len(self.val_pool))
            p = predict_proba(self.model, self.val_pool.extract(idx))
            rec.update(patch_metrics(self.val_pool.labels[idx], (p >= 0.5).astype(int)))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        self.history.append(rec)
        atomic_torch_save(
            {"format": FORMAT, "state_dict": self.model.state_dict(), "update": n_up + 1}, self.run_dir / MODEL_FILE
        )
        atomic_write_json(self.run_dir / HISTORY_FILE, {"format": FORMAT, "updates": self.history})
        return rec

    def simulate(self, rounds: int, oracle: Callable[[str, int, int], str] | None = None) -> list[dict]:
        """``rounds`` of Algorithm 2 with a simulated expert: choose the next image, propose its top
        ``k`` patches, let the oracle answer, update the model. Returns the updates' records.
        """
        out = []
        for _ in range(int(rounds)):
            self.next_image()
            self.propose()
            self.answer(oracle)
            out.append(self.update())
        return out


# ---------------------------------------------------------------------- notebook 07's bookkeeping
def grid_prevalence(records: Sequence, patch_size: int = 48, stride: float = 16.0, window: float = 8.0) -> float:
    """The exudate fraction a random proposal would have: the share of each image's grid patches
    (``stride`` at 512-px scale, inside the FOV) that :func:`mask_oracle` calls exudate, averaged over
    the images (the ``"random"`` strategy draws an image uniformly, then patches uniformly).
    """
    _check_count("patch_size", patch_size)
    shares = []
    for rec in records:
        if rec.exudate_mask is None:
            raise ValueError(
                f"record {rec.id!r} has no exudate mask, so its prevalence is unknown; pass annotated images"
            )
        step = max(1, int(round(scale_length(stride, max(rec.image.shape[:2]), "stride"))))
        fov = getattr(rec, "fov", None)
        rows, cols = patchify(rec.image.shape[:2] if fov is None else np.asarray(fov, bool), patch_size, step)
        shares.append(float(lesion_near(rec.exudate_mask, window)[rows, cols].mean()) if len(rows) else 0.0)
    if not shares:
        raise ValueError("no records given, so there is no grid to count; pass the images the loop labels")
    return float(np.mean(shares))


def session_summary(
    loop: LabellingLoop,
    timings: Sequence[dict],
    *,
    image_size: int,
    f_initial: float | None = None,
    random_expected: float | None = None,
) -> dict[str, Any]:
    """Notebook 07's metrics of a labelling session: answers, images, F-measure before and after each
    update, timings of this session's rounds (``timings``: dicts with ``propose_s`` and ``update_s``).
    """
    counts = loop.counts()
    answered = sum(counts.values())
    f_curve = [h.get("f_measure") for h in loop.history if "f_measure" in h]

    def mean(key: str) -> float | None:
        return float(np.mean([t[key] for t in timings])) if timings else None

    return {
        "strategy": loop.strategy,
        "n_answers": answered,
        "n_exudate": counts["exudate"],
        "n_images": loop.round,
        "exudate_fraction": counts["exudate"] / answered if answered else None,
        "f_measure_final": f_curve[-1] if f_curve else None,
        "seconds_per_update": mean("update_s"),
        "seconds_per_proposal": mean("propose_s"),
        "image_size": int(image_size),
        "k": loop.k,
        "steps_per_update": loop.steps_per_update,
        "n_updates": len(loop.history),
        "rounds_this_session": len(timings),
        "f_measure_initial": f_initial,
        "f_measure_per_update": f_curve,
        "exudate_fraction_random_expected": random_expected,
        "overlapping_pairs": overlapping_pairs(loop.proposals),
    }


def paper_vs_run(summary: dict[str, Any], *, dataset: str, mu: int, init_batches: int) -> pd.DataFrame:
    """The EGL paper's labelling setting (Otálora et al. 2017, Algorithm 2, Fig. 2) beside this session's."""
    s = summary
    f0, f1 = s.get("f_measure_initial"), s.get("f_measure_final")
    f_text = "not measured" if f1 is None else (f"{f1:.3f}" if f0 is None else f"{f0:.3f} before, {f1:.3f} after")
    frac, rand = s.get("exudate_fraction"), s.get("exudate_fraction_random_expected")
    frac_text = "no answers" if frac is None else f"{frac:.0%}" + ("" if rand is None else f" (random: {rand:.1%})")
    rows = [
        (
            "data",
            "e-ophtha EX, 1440x960 to 2540x1690 px",
            f"{dataset}, {s['image_size']} px",
            "smaller images; synthetic lesions unless a local dataset is given",
        ),
        (
            "initial model M",
            "LeNet on 5 batches of 32 from mu=4 images",
            f"{init_batches} batches of 32 from {mu} image" + ("s" if mu != 1 else ""),
            "5 batches left our LeNet calling every patch healthy",
        ),
        (
            "expert",
            "simulated from the ground-truth segmentations",
            "mask oracle: exudate pixel within 8 px of the centre",
            "the same kind of simulated expert",
        ),
        (
            "images chosen",
            "largest interestingness (sum of Phi)",
            f"{s['n_images']} by {s['strategy']}",
            "fewer rounds",
        ),
        (
            "answers per image",
            "every patch of the chosen image",
            f"{s['k']} patches a round ({s['strategy']}): {s['n_answers']} answers in all",
            "the expert labels patches, not whole images",
        ),
        (
            "model updates",
            "SGD until convergence (~15 batches)",
            f"{s['n_updates']} of {s['steps_per_update']} steps",
            "a few short updates",
        ),
        ("exudate share of answers", "not reported", frac_text, "measured here only"),
        ("validation F-measure", "Fig. 2 curve; EGL above random", f_text, "one session, no random run beside it"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "paper", "this run", "how ours differs"]).set_index("quantity")


def overlapping_pairs(proposals: Sequence[Proposal]) -> float | None:
    """Share of pairs of ``proposals`` (one image) whose patches overlap: centres closer than a patch
    side in both directions. ``None`` for fewer than two proposals.
    """
    pairs = [
        abs(a.row - b.row) < a.size and abs(a.col - b.col) < a.size
        for n, a in enumerate(proposals)
        for b in proposals[n + 1 :]
    ]
    return float(np.mean(pairs)) if pairs else None


def _chance_of_at_least(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p): how often a uniform draw finds ``x`` exudates or more."""
    return float(1.0 - sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(x)))


def discussion(summary: dict[str, Any]) -> str:
    """Notebook 07's closing discussion, every sentence chosen by this session's numbers (markdown)."""
    s, out = summary, []
    n, x, rand = s["n_answers"], s["n_exudate"], s.get("exudate_fraction_random_expected")
    if not n:
        return "No answers were given in this run, so there is nothing to discuss yet."
    if rand is not None:
        chance = _chance_of_at_least(x, n, rand)
        if x == 0 and n * rand < 1:
            verdict = (
                "too few answers to tell the strategy from a random draw, which would most likely have found none too"
            )
        elif chance < 0.05:
            verdict = f"more than a random draw finds (it gets {x} or more only {chance:.1%} of the time)"
        else:
            verdict = f"no more than a random draw finds by luck ({chance:.0%} of the time it gets {x} or more)"
        out.append(
            f"{x} of {n} answers ({x / n:.0%}) were exudate, where a uniform draw over the same images' grids "
            f"expects {n * rand:.1f} ({rand:.1%}): {verdict}."
        )
    f0, curve = s.get("f_measure_initial"), s.get("f_measure_per_update") or []
    if curve and f0 is not None:
        d = curve[-1] - f0
        # first against last: the updates in between may go either way
        trend = "ended higher than it began" if d > 0.01 else "ended lower than it began" if d < -0.01 else (
            "ended where it began")
        out.append(
            f"The validation F-measure {trend} ({f0:.3f} before the first answer, "
            + ", ".join(f"{f:.3f}" for f in curve)
            + " after each update)"
            + (
                "; as no answer was an exudate, the answers only added healthy examples and the rise comes from "
                "the extra SGD steps on L0 (the initial model's patches, kept in every update)."
                if x == 0 and d > 0.01
                else "."
            )
        )
    over = s.get("overlapping_pairs")
    if over is not None:
        out.append(
            f"{over:.0%} of the pairs of the last proposals overlap one another: "
            + (
                "Phi changes little between neighbouring grid patches, so the top k are near-duplicates, "
                'which BADGE\'s diverse picks (label_strategy="badge") are designed to avoid.'
                if over > 0.5
                else "the top k are spread over the image."
            )
        )
    if s.get("seconds_per_update") is not None:
        wait = s["seconds_per_update"] + s["seconds_per_proposal"]
        out.append(
            f"Between two batches of {s['k']} patches the expert waits {wait:.1f} s on this machine "
            f"(update {s['seconds_per_update']:.1f} s, proposal {s['seconds_per_proposal']:.1f} s)"
            + (
                ", short enough to label without losing the thread."
                if wait < 10
                else ", long enough that a real session should update in the background."
            )
        )
    if n < 100:
        out.append(
            f"With {n} answers this run shows the loop working, not EGL's label efficiency: "
            "notebook 03 measures that over seeds against random."
        )
    return " ".join(out)
