"""Report figures for the chest preprocessing (matplotlib, Agg canvas: no window, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scanai.core.image import Volume


def save_normalisation_figure(raw: Volume, normalised: Volume, path: str | Path, title: str = "") -> Path:
    """Write a PNG with four panels: raw image, normalised image, raw histogram, normalised histogram.

    raw, normalised: (1, rows, cols) volumes on the same grid; drawn with row 0 at the top (the default
    radiograph orientation: patient's right on the left). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    raw_pixels = np.asarray(raw.array[0], dtype=np.float64)
    norm_pixels = np.asarray(normalised.array[0], dtype=np.float64)
    column_mm, row_mm = raw.geometry.spacing_mm[0], raw.geometry.spacing_mm[1]
    figure = Figure(figsize=(15, 3.8), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1.2, 1.2]})
    low, high = np.percentile(raw_pixels, [0.5, 99.5])
    axes[0].imshow(raw_pixels, cmap="gray", vmin=low, vmax=high, aspect=row_mm / column_mm, interpolation="none")
    axes[0].set_title("raw")
    axes[1].imshow(norm_pixels, cmap="gray", vmin=-2.5, vmax=2.5, aspect=row_mm / column_mm, interpolation="none")
    axes[1].set_title("normalised (Eq. 1 + Eq. 2), window ±2.5")
    for axis in axes[:2]:
        axis.set_xticks([])
        axis.set_yticks([])
    p5, p95 = np.percentile(raw_pixels, [5, 95])
    axes[2].hist(raw_pixels.ravel(), bins=128, color="0.35")
    for value, label in ((p5, "5th pct"), (p95, "95th pct")):
        axes[2].axvline(value, color="tab:red", linestyle="--", linewidth=1)
        axes[2].text(value, axes[2].get_ylim()[1] * 0.95, f" {label}", color="tab:red", fontsize=8, va="top")
    axes[2].set_title("histogram before")
    axes[2].set_xlabel("raw intensity")
    axes[3].hist(norm_pixels.ravel(), bins=128, color="tab:blue")
    axes[3].set_title(f"histogram after (mean {norm_pixels.mean():.2f}, std {norm_pixels.std():.2f})")
    axes[3].set_xlabel("normalised intensity")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path))
    return path
