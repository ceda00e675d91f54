"""Pictures of patches and a patch browser widget.

The plotting functions work headless (they return matplotlib figures); :func:`patch_browser`
builds ipywidgets and is only called when a notebook runs with ``interactive=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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
    import matplotlib.pyplot as plt

    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
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
        ax.scatter(cols[keep], rows[keep], s=6, c=color, marker="o", linewidths=0,
                   label=f"{name} ({len(rows):,})")
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
    import matplotlib.pyplot as plt

    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or len(patches) == 0:
        raise ValueError(f"patches must be a non-empty (N, s, s, 3) array, got shape {patches.shape}")
    if titles is not None and len(titles) != len(patches):
        raise ValueError(f"need one title per patch: {len(patches)} patches, {len(titles)} titles")
    ncols = max(1, min(int(ncols), len(patches)))
    nrows = -(-len(patches) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.2 * (titles is not None)),
                             squeeze=False)
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
        raise ValueError(f"page must lie in 0..{n_pages - 1}, got {page}")
    sel = indices[page * page_size : (page + 1) * page_size]
    pos = pool.positions[sel]
    titles = [
        f"{'pos' if pool.labels[i] else 'neg'} {pool.image_ids[p['image']]}\n({p['row']},{p['col']})"
        for i, p in zip(sel, pos)
    ]
    return plot_patch_grid(pool.extract(sel), titles, ncols=ncols)


def patch_browser(pool: PatchPool, indices: np.ndarray | None = None, page_size: int = 16, ncols: int = 8):
    """An ipywidgets browser paging through ``pool`` patches with their labels and source positions.

    Build it only in a live kernel (``interactive=True``); the drawing is :func:`show_pool_page`.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

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
        with out:
            out.clear_output(wait=True)
            if len(idx):
                fig = show_pool_page(pool, idx, min(page.value, page.max), page_size, ncols)
                display(fig)
                plt.close(fig)
            else:
                print("no patches of this class")

    page.observe(redraw, "value")
    label_filter.observe(redraw, "value")
    redraw()
    return W.VBox([W.HBox([label_filter, page]), out])
