"""Pictures of patches and a patch browser widget.

The plotting functions work headless (they return matplotlib figures); :func:`patch_browser`
builds ipywidgets and is only called when a notebook runs with ``interactive=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from .patches import PatchPool

#: Colours of the position kinds in :func:`plot_positions`.
POSITION_COLORS = {"exudate": "yellow", "healthy": "cyan", "hemorrhage": "red", "normal": "lime"}


def plot_positions(
    image: np.ndarray,
    positions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    max_points: int = 400,
    seed: int = 0,
    ax=None,
    title: str | None = None,
):
    """An image with candidate patch centres overlaid, one colour per kind.

    Parameters
    ----------
    image : np.ndarray
        HxWx3 uint8 image.
    positions : mapping of str to (rows, cols)
        Centres per kind (e.g. ``{"exudate": exudate_positives(rec)}``).
    max_points : int
        At most this many points per kind are drawn (a seeded uniform subsample), so dense
        masks stay readable; the legend gives the true count.
    seed : int
        Seed of the subsample.
    ax : matplotlib Axes, optional
        Draw into this axes; a new figure otherwise.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)):
        raise TypeError(f"max_points must be an integer, got {type(max_points).__name__}; pass e.g. 400")
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}; pass e.g. 400")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    else:
        fig = ax.figure
    ax.imshow(image)
    rng = np.random.default_rng(seed)
    for k, (name, (rows, cols)) in enumerate(positions.items()):
        rows, cols = np.asarray(rows), np.asarray(cols)
        keep = rng.choice(len(rows), size=min(max_points, len(rows)), replace=False) if len(rows) else []
        color = POSITION_COLORS.get(name, f"C{k}")
        ax.scatter(cols[keep], rows[keep], s=6, c=color, marker="o", linewidths=0, label=f"{name} ({len(rows):,})")
    ax.legend(loc="lower right", fontsize=8, markerscale=2, framealpha=0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def plot_patch_grid(
    patches: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    row_labels: Sequence[str] | None = None,
    scale: float = 1.1,
):
    """A grid of uint8 ``(N, s, s, 3)`` patches, ``ncols`` per row, with optional titles.

    ``row_labels`` names each grid row (e.g. the class of the patches in that row).
    """
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or len(patches) == 0:
        raise ValueError(
            f"patches must be a non-empty (N, s, s, 3) array, got shape {patches.shape}; "
            "pass RGB patches such as pool.extract(idx)"
        )
    if titles is not None and len(titles) != len(patches):
        raise ValueError(f"got {len(titles)} titles for {len(patches)} patches; pass one title per patch")
    ncols = max(1, min(int(ncols), len(patches)))
    nrows = -(-len(patches) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.2 * (titles is not None)), squeeze=False
    )
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(patches):
            ax.set_axis_off()
            continue
        ax.imshow(patches[i], interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def show_pool_page(pool: PatchPool, indices: np.ndarray, page: int = 0, page_size: int = 16, ncols: int = 8):
    """One page of a pool's patches (no augmentation), titled with label and source position."""
    indices = np.asarray(indices)
    n_pages = max(1, -(-len(indices) // page_size))
    if not 0 <= page < n_pages:
        raise ValueError(f"page must lie in 0..{n_pages - 1}, got {page}; pass a page in that range")
    sel = indices[page * page_size : (page + 1) * page_size]
    pos = pool.positions[sel]
    titles = [
        f"{'pos' if pool.labels[i] else 'neg'} {pool.image_ids[p['image']]}\n({p['row']},{p['col']})"
        for i, p in zip(sel, pos, strict=True)
    ]
    return plot_patch_grid(pool.extract(sel), titles, ncols=ncols)


def show_in(out, fig) -> None:
    """Replace what the ipywidgets ``Output`` ``out`` shows by the figure ``fig`` (drawn once, then
    closed so that it is not shown a second time by the notebook). Works in and out of a kernel, so
    tests can read ``out.outputs``.
    """
    out.outputs = ()
    out.append_display_data(fig)
    plt.close(fig)


def patch_browser(pool: PatchPool, indices: np.ndarray | None = None, page_size: int = 16, ncols: int = 8):
    """An ipywidgets browser paging through ``pool`` patches with their labels and source positions.

    Build it only in a live kernel (``interactive=True``); the drawing is :func:`show_pool_page`.
    The returned box exposes ``page_slider``, ``class_filter`` and the ``out`` it draws into.
    """
    indices = np.arange(len(pool)) if indices is None else np.asarray(indices)
    n_pages = max(1, -(-len(indices) // page_size))
    out = W.Output()
    label_filter = W.Dropdown(options=["all", "positive", "negative"], value="all", description="class")
    page = W.IntSlider(min=0, max=n_pages - 1, value=0, description="page")

    def current() -> np.ndarray:
        if label_filter.value == "all":
            return indices
        return indices[pool.labels[indices] == (1 if label_filter.value == "positive" else 0)]

    def redraw(*_):
        idx = current()
        page.max = max(0, -(-len(idx) // page_size) - 1)
        if len(idx):
            show_in(out, show_pool_page(pool, idx, min(page.value, page.max), page_size, ncols))
        else:
            out.outputs = ({"output_type": "stream", "name": "stdout", "text": "no patches of this class\n"},)

    page.observe(redraw, "value")
    label_filter.observe(redraw, "value")
    redraw()
    box = W.VBox([W.HBox([label_filter, page]), out])
    box.page_slider, box.class_filter, box.out = page, label_filter, out  # for scripting and tests
    return box


# ----------------------------------------------------------------------------------------------
# the expert in the loop (notebook 07)
# ----------------------------------------------------------------------------------------------
def plot_labelling_view(loop, ax=None):
    """The current image with its EGL map (Phi per grid cell, colour bar) and the proposed patches
    outlined and numbered: what the expert is asked to label next.
    """
    if loop.current is None:
        raise ValueError("no image chosen yet; call loop.propose() first")
    rec = loop.records[loop.current]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
    else:
        fig = ax.figure
    ax.imshow(rec.image)
    if loop.phi_map is not None:
        im = ax.imshow(np.ma.masked_invalid(loop.phi_map), cmap="magma", alpha=0.45)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="expected gradient length Φ")
    half = loop.patch_size // 2
    for p in loop.proposals:
        ax.add_patch(
            Rectangle(
                (p.col - half - 0.5, p.row - half - 0.5),
                loop.patch_size,
                loop.patch_size,
                fill=False,
                edgecolor="cyan",
                linewidth=1.5,
            )
        )
        ax.text(p.col - half, p.row - half - 2, str(p.number), color="cyan", fontsize=10, weight="bold")
    ax.set_title(f"{rec.id}: round {loop.round}, {len(loop.proposals)} proposed patches ({loop.strategy})")
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    return fig


def plot_labelling_curve(history, ax=None):
    """Validation F-measure after each model update against the number of labelled patches."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
    else:
        fig = ax.figure
    n = [h["n_labels"] for h in history if "f_measure" in h]
    f = [h["f_measure"] for h in history if "f_measure" in h]
    ax.plot(n, f, "o-", color="C0")
    ax.set_xlabel("labelled patches")
    ax.set_ylabel("validation F-measure")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("learning as you label" if n else "no update yet")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: Keyboard shortcuts of the labelling widget's key box.
LABEL_KEYS = {"e": "exudate", "h": "healthy", "s": "skip"}


def labelling_widget(loop):
    """The ipywidgets tool an ophthalmologist uses with a :class:`~fundus_nb.labelling.LabellingLoop`.

    The image with the EGL map and the numbered proposals; the proposals enlarged; one toggle per
    patch (exudate / healthy / skip); a key box (type ``e``, ``h`` or ``s`` once per patch, in
    order); "undo", "update model" and "next image" buttons; the validation F-measure against the
    labels given; a counter of labels and labelling time. Every answer is saved as it is given.
    Attributes ``toggles``, ``key_box``, ``update_button``, ``next_button``, ``undo_button``, ``status``
    and the outputs ``view``, ``grid``, ``curve`` are exposed on the returned box for scripting.
    """
    show = show_in
    view, grid, curve = W.Output(), W.Output(), W.Output()
    status = W.HTML()
    toggles_box = W.VBox()
    keys = W.Text(placeholder="keys: e = exudate, h = healthy, s = skip", description="keys", continuous_update=True)
    update_button = W.Button(description="update model", button_style="primary", icon="refresh")
    next_button = W.Button(description="next image", icon="forward")
    undo_button = W.Button(description="undo", icon="undo")
    box = W.VBox()
    state = {"busy": False, "last_update": None}

    def refresh_status():
        c = loop.counts()
        upd = "" if state["last_update"] is None else f" · last update {state['last_update']:.1f} s"
        status.value = (
            f"<b>{sum(c.values())}</b> labels (exudate {c['exudate']}, healthy {c['healthy']}, "
            f"skip {c['skip']}) · {loop.seconds_labelling:.0f} s labelling{upd}"
        )

    def on_toggle(change):
        if state["busy"] or change["new"] is None:
            return
        loop.label(change["owner"].patch_id, change["new"])
        refresh_status()

    def redraw_proposals():
        if not loop.proposals:
            loop.propose()
        show(view, plot_labelling_view(loop))
        show(
            grid,
            plot_patch_grid(
                loop.proposal_patches(),
                [f"{p.number}: Φ={p.score:.3g}" for p in loop.proposals],
                ncols=min(8, len(loop.proposals)),
                scale=1.4,
            ),
        )
        done = loop.labels
        state["busy"] = True
        toggles = []
        for p in loop.proposals:
            t = W.ToggleButtons(
                options=list(LABEL_KEYS.values()),
                value=done.get(p.patch_id, {}).get("label"),
                description=f"patch {p.number}",
                style={"button_width": "80px"},
            )
            t.patch_id = p.patch_id
            t.observe(on_toggle, "value")
            toggles.append(t)
        toggles_box.children = toggles
        box.toggles = toggles
        keys.value = ""
        state["busy"] = False
        refresh_status()

    def on_keys(change):
        typed = [ch for ch in change["new"].lower() if ch in LABEL_KEYS]
        for t, ch in zip(box.toggles, typed, strict=False):  # keys beyond the last patch are ignored
            if t.value != LABEL_KEYS[ch]:
                t.value = LABEL_KEYS[ch]

    def on_update(_):
        rec = loop.update()
        state["last_update"] = rec["seconds"]
        loop.proposals = []
        redraw_proposals()
        show(curve, plot_labelling_curve(loop.history))

    def on_next(_):
        loop.next_image()
        redraw_proposals()

    def on_undo(_):
        try:
            pid = loop.undo()
        except ValueError as exc:
            status.value = f"<b>{exc}</b>"
            return
        state["busy"] = True
        for t in box.toggles:
            if t.patch_id == pid:
                t.value = loop.labels.get(pid, {}).get("label")
        state["busy"] = False
        refresh_status()

    keys.observe(on_keys, "value")
    update_button.on_click(on_update)
    next_button.on_click(on_next)
    undo_button.on_click(on_undo)
    redraw_proposals()
    show(curve, plot_labelling_curve(loop.history))
    box.children = [
        status,
        W.HBox([view, W.VBox([curve, W.HBox([undo_button, update_button, next_button])])]),
        grid,
        keys,
        toggles_box,
    ]
    box.key_box, box.status, box.view, box.grid, box.curve = keys, status, view, grid, curve
    box.update_button, box.next_button, box.undo_button = update_button, next_button, undo_button
    return box
