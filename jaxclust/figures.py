"""The report's figures as PNG bytes (matplotlib, without pyplot's global state): cluster sizes, the 2-D
map of the embedding, image exemplar grids, per-cluster feature profiles, the confusion matrix and the
training curves. Each function takes plain arrays and returns the PNG; :mod:`jaxclust.report` decides
what to show and writes the files.

Figures are small (dpi 80), drawn with few artists and laid out by fixed margins: a run's end renders them
all, and matplotlib's constrained layout doubled their time (0.54 s against 0.27 s for 8 panels).
"""

from __future__ import annotations

import io

import numpy as np

DPI = 80


def _figure(width: float, height: float, panels: tuple[int, int] = (1, 1), *, left=0.7, right=0.2, bottom=0.55,
            top=0.35, wspace=0.6, hspace=0.75, grid=None):
  """A figure of ``width x height`` inches and its axes ``[rows, columns]`` (``panels``), laid out for a
  ``grid`` of panels (default: ``panels``); the margins and the space between panels are in inches."""
  from matplotlib.figure import Figure  # imported when a report is drawn, not with the library
  fig = Figure(figsize=(width, height))
  rows, columns = grid or panels
  panel_width = max((width - left - right - (columns - 1) * wspace) / columns, 0.1)
  panel_height = max((height - top - bottom - (rows - 1) * hspace) / rows, 0.1)
  fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                      wspace=wspace / panel_width, hspace=hspace / panel_height)
  return fig, fig.subplots(*panels, squeeze=False) if all(panels) else None


def _png(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=DPI)
  return buffer.getvalue()


def _colours(k: int):
  """A colour per id: tab10 / tab20 where they are distinct enough, else a ring of hues."""
  from matplotlib import colormaps
  if k <= 10:
    return colormaps["tab10"].colors[:k]
  if k <= 20:
    return colormaps["tab20"].colors[:k]
  return colormaps["hsv"](np.linspace(0.0, 1.0, k, endpoint=False))


def sizes(counts) -> bytes:
  """A bar per cluster: its number of rows, empty clusters marked at 0."""
  counts = np.asarray(counts)
  k = len(counts)
  fig, axes = _figure(min(2.5 + 0.35 * k, 12.0), 2.8)
  ax = axes[0, 0]
  ax.bar(np.arange(k), counts, color=_colours(k) if k <= 20 else "tab:blue", width=0.8)
  ax.set_xlabel("cluster")
  ax.set_ylabel("rows")
  if k <= 40:
    ax.set_xticks(np.arange(k))
  ax.set_xlim(-0.7, k - 0.3)
  empty = np.flatnonzero(counts == 0)
  if len(empty):
    ax.plot(empty, np.zeros(len(empty)), "x", color="tab:red", label="empty")
    ax.legend(loc="upper right", fontsize=8)
  return _png(fig)


def embedding_map(points, labels, k: int, y=None, *, title: str) -> bytes:
  """``points [m, 2]`` coloured by cluster (``labels [m]`` in ``[0, k)``) and, with ``y [m]``, a second
  panel coloured by the true label."""
  panels = [("by cluster", np.asarray(labels), k)]
  if y is not None:
    classes, y = np.unique(y, return_inverse=True)
    panels.append(("by true label", y, len(classes)))
  fig, axes = _figure(4.6 * len(panels), 4.4, (1, len(panels)), left=0.1, right=0.6, bottom=0.1, top=0.55,
                      wspace=0.7)
  size = 4.0 if len(points) > 2000 else 8.0
  for ax, (name, ids, count) in zip(axes[0], panels):
    colours = np.asarray(_colours(count))[:, :3]
    ax.scatter(points[:, 0], points[:, 1], c=colours[ids], s=size, linewidths=0)
    ax.set_title(name, fontsize=10)
    # A few far rows would shrink the rest to a dot: the limits hold the central 99% of each axis.
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    pad = 0.05 * np.maximum(high - low, 1e-9)
    ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
    ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
    ax.set_xticks([])
    ax.set_yticks([])
    if count <= 20:  # a legend of 20 entries at most; a larger k is read from the sizes chart
      handles = [ax.scatter([], [], color=colours[c], s=12) for c in range(count)]
      names = [str(c) for c in range(count)] if name == "by cluster" else [str(c) for c in classes]
      ax.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                handletextpad=0.1)
  fig.suptitle(title, fontsize=9)
  return _png(fig)


def image_grid(grid, names, per_cluster: int) -> bytes:
  """An RGB mosaic (:func:`jaxclust.reporting.exemplar_grid`), its rows named ``names``. One image, not one
  subplot per exemplar: 80 subplots took 2.5 s to lay out."""
  rows = len(names)
  fig, axes = _figure(per_cluster * 0.9 + 1.2, max(1.0, 0.9 * rows), left=1.1, right=0.1, bottom=0.05, top=0.05)
  ax = axes[0, 0]
  ax.imshow(grid, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks((np.arange(rows) + 0.5) * grid.shape[0] / rows, names, fontsize=7)
  ax.tick_params(length=0)
  for side in ax.spines.values():
    side.set_visible(False)
  return _png(fig)


def profile(z, clusters, features) -> bytes:
  """A heatmap of ``z [c, f]``: each shown cluster's mean of each shown feature as a z-score (the feature's
  mean and spread over all rows), red above the mean, blue below, clipped at 3."""
  z = np.asarray(z)
  fig, axes = _figure(min(3.0 + 0.28 * z.shape[1], 14.0), min(1.4 + 0.3 * z.shape[0], 14.0), left=0.9, right=0.1,
                      bottom=0.8, top=0.1)
  ax = axes[0, 0]
  image = ax.imshow(z, cmap="RdBu_r", vmin=-3.0, vmax=3.0, aspect="auto", interpolation="nearest")
  ax.set_yticks(np.arange(len(clusters)), [f"cluster {c}" for c in clusters], fontsize=7)
  ax.set_xticks(np.arange(len(features)), features, fontsize=7, rotation=90)
  ax.set_xlabel("feature")
  fig.colorbar(image, ax=ax, shrink=0.8, label="z-score of the cluster mean")
  return _png(fig)


def confusion(table, classes, clusters) -> bytes:
  """``table [classes, clusters]`` of counts, each row shaded by its share, counts written where they fit."""
  table = np.asarray(table)
  share = table / np.maximum(table.sum(1, keepdims=True), 1)
  rows, cols = table.shape
  fig, axes = _figure(min(max(1.4 + 0.42 * cols, 4.0), 14.0), min(max(1.0 + 0.36 * rows, 2.5), 14.0), left=0.7,
                      right=0.1, bottom=0.6, top=0.1)
  ax = axes[0, 0]
  ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
  if rows * cols <= 900:
    for (i, j), count in np.ndenumerate(table):
      if count:
        ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                color="white" if share[i, j] > 0.6 else "black")
  if cols <= 60:
    ax.set_xticks(np.arange(cols), [str(c) for c in clusters], fontsize=7)
  if rows <= 60:
    ax.set_yticks(np.arange(rows), [str(c) for c in classes], fontsize=7)
  ax.set_xlabel("cluster (in the order of the matched labels)")
  ax.set_ylabel("true label")
  return _png(fig)


def curves(panels) -> bytes:
  """Training curves: ``panels`` is ``[(stage, [(title, {series: (x, y)}, x_name), ...]), ...]``, a row of
  panels per stage (only the panels that exist are made: an empty one costs as much to lay out)."""
  columns = max(len(row) for _, row in panels)
  fig, _ = _figure(3.6 * columns, 2.5 * len(panels), (0, 0), left=0.6, right=0.15, bottom=0.5, top=0.3,
                   wspace=0.7, hspace=0.8, grid=(len(panels), columns))
  for r, (stage, row) in enumerate(panels):
    for c, (title, series, x_name) in enumerate(row):
      ax = fig.add_subplot(len(panels), columns, r * columns + c + 1)
      for name, (x, y) in series.items():
        ax.plot(x, y, marker="." if len(x) < 30 else None, label=name, linewidth=1.2)
      ax.set_title(f"{stage}: {title}", fontsize=9)
      ax.set_xlabel(x_name, fontsize=8)
      ax.tick_params(labelsize=7)
      if len(series) > 1:
        ax.legend(fontsize=7)
      else:
        ax.set_ylabel(next(iter(series)), fontsize=8)
  return _png(fig)


def choose_k_curves(ks, curves: dict, chosen: int) -> bytes:
  """One panel per criterion of :mod:`jaxclust.choose_k` (``curves``: title -> ``(values, errors or None)``)
  against k, the recommended k marked in each."""
  columns = 3
  rows = -(-len(curves) // columns)
  fig, axes = _figure(3.2 * columns, 2.4 * rows, (rows, columns))
  for ax, (title, (values, errors)) in zip(axes.flat, curves.items()):
    ax.errorbar(ks, values, yerr=errors, marker="o", markersize=3, linewidth=1)
    ax.axvline(chosen, color="tab:red", linewidth=1, linestyle="--")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("k", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(curves):]:
    ax.set_visible(False)
  return _png(fig)


def stability(ari, names, cluster_jaccard) -> bytes:
  """Pairwise ARI between labelings (a heat map) and each cluster's mean best-match Jaccard (bars)."""
  r = len(names)
  fig, axes = _figure(9.0, 3.6, (1, 2), left=0.9, bottom=0.9)
  image = axes[0, 0].imshow(ari, vmin=0, vmax=1, cmap="viridis")
  axes[0, 0].set_xticks(range(r), [str(i) for i in range(r)], fontsize=7)
  axes[0, 0].set_yticks(range(r), [str(i) for i in range(r)], fontsize=7)
  axes[0, 0].set_title("ARI between labelings (0: the run)", fontsize=9)
  fig.colorbar(image, ax=axes[0, 0], fraction=0.046)
  k = len(cluster_jaccard)
  axes[0, 1].bar(range(k), cluster_jaccard, color=["tab:green" if j >= 0.75 else "tab:orange" if j >= 0.5
                                                   else "tab:red" for j in cluster_jaccard])
  axes[0, 1].axhline(0.75, color="grey", linewidth=0.8, linestyle="--")
  axes[0, 1].axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
  axes[0, 1].set_ylim(0, 1)
  axes[0, 1].set_xlabel("cluster of the run", fontsize=8)
  axes[0, 1].set_title("best-match Jaccard, mean over labelings", fontsize=9)
  axes[0, 1].tick_params(labelsize=7)
  return _png(fig)
