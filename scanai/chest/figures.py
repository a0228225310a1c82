"""Report figures for ChestQC: the normalisation panels and the overlay of detections, grade and CTR lines
(matplotlib, Agg canvas: no window, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scanai.core.image import Volume

#: Colour of the spine centreline (distinct from the spine outline).
SPINE_LINE_COLOUR = (0.30, 0.90, 0.30)


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


def _display_window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _pixels(image: np.ndarray) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float64)
    return pixels[0] if pixels.ndim == 3 and pixels.shape[0] == 1 else pixels


def overlay_caption(assessment, title: str = "", width: int = 110) -> str:
    """The overlay's caption: ``title``, then the level (rule) and the cardiothoracic ratio, then the first two
    reasons; wrapped to ``width`` characters."""
    import textwrap

    from scanai.chest.pipeline import finding

    rule = getattr(assessment, "rule", "")
    headline = f"{assessment.level}" + (f" ({rule})" if rule and rule != "NA" else "")
    ctr = finding(assessment, "cardiothoracic_ratio")
    if ctr is not None and np.isfinite(ctr.value):
        headline += f"   CTR {ctr.value:.3f}" + (" (> threshold)" if ctr.present else "")
    reasons = "; ".join(assessment.reasons[:2]) + (" ..." if len(assessment.reasons) > 2 else "")
    text = "\n".join(part for part in (title, headline, reasons) if part)
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def draw_overlay(axis, image: np.ndarray, detections, assessment, title: str = "",
                 spacing_mm: tuple[float, float] | None = None, caption: bool = True, legend: bool = True) -> None:
    """Draw the radiograph with what was detected and measured on a matplotlib ``axis``.

    image: (rows, cols) raw intensities (bright = dense), row 0 at the top, column 0 = the patient's right.
    detections: :class:`~scanai.chest.detection.Detections` on that grid, or None (only the image and the image
    centreline are drawn). assessment: :class:`~scanai.chest.metrics.Assessment`. Drawn: each object's mask outline
    in its standard colour (:data:`scanai.chest.pipeline.SEGMENT_STYLE`), foreign-object boxes with their
    confidence, the lung union box, the heart and lung width lines of the cardiothoracic ratio, the spine
    centreline and the image centreline; with ``caption`` the axis title is :func:`overlay_caption`. ``spacing_mm``
    (row, column) sets the aspect ratio.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from scanai.chest.detection import EXPERIMENTAL, Box
    from scanai.chest.pipeline import FOREIGN_COLOUR, SEGMENT_STYLE, centre_line, spine_line, width_line_indices

    pixels = _pixels(image)
    rows, cols = pixels.shape
    aspect = (spacing_mm[0] / spacing_mm[1]) if spacing_mm else 1.0
    low, high = _display_window(pixels)
    axis.imshow(pixels, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="antialiased")
    handles = []
    if detections is not None:
        for name, found in detections.objects.items():
            label, colour = SEGMENT_STYLE.get(name, (name, (1.0, 1.0, 1.0)))
            label += " (experimental)" if name in EXPERIMENTAL else ""
            if found.mask.any():
                axis.contour(found.mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
                handles.append(Line2D([], [], color=colour, label=label))
        for index, found in enumerate(detections.foreign_objects):
            top, left, bottom, right = found.box
            axis.contour(found.mask.astype(np.float32), levels=[0.5], colors=[FOREIGN_COLOUR], linewidths=1.0)
            axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                     edgecolor=FOREIGN_COLOUR, linewidth=1.2))
            axis.text(left - 0.5, top - 2.0, f"FO {index + 1}: {found.confidence:.2f}", color=FOREIGN_COLOUR,
                      fontsize=8, va="bottom")
        if detections.foreign_objects:
            handles.append(Line2D([], [], color=FOREIGN_COLOUR, label="foreign object (confidence)"))
        lungs = detections.lungs()
        if lungs.any():
            top, left, bottom, right = Box.of_mask(lungs)
            axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                     edgecolor="white", linewidth=0.8, linestyle=":"))
            handles.append(Line2D([], [], color="white", linestyle=":", label="lung box"))
        spine = spine_line(detections)
        if spine is not None:
            axis.plot([spine[1], spine[3]], [spine[0], spine[2]], color=SPINE_LINE_COLOUR, linewidth=1.2,
                      linestyle="--")
            handles.append(Line2D([], [], color=SPINE_LINE_COLOUR, linestyle="--", label="spine line"))
    top, centre, bottom, _ = centre_line((rows, cols))
    axis.plot([centre, centre], [top, bottom], color="0.85", linewidth=0.8, linestyle="-.")
    handles.append(Line2D([], [], color="0.85", linestyle="-.", label="image centre"))
    line_colours = {"heart": SEGMENT_STYLE["heart"][1], "lungs": SEGMENT_STYLE["lung_left"][1]}
    for line in getattr(assessment, "width_lines", ()):
        colour = line_colours.get(line.name, "white")
        row, start, end = width_line_indices(line)
        axis.plot([start, end], [row, row], color=colour, linewidth=2.0)
        axis.plot([start, end], [row, row], color=colour, marker="|", markersize=10, linestyle="none")
        handles.append(Line2D([], [], color=colour, linewidth=2.0, label=f"{line.name} width"))
    axis.set_xlim(-0.5, cols - 0.5)
    axis.set_ylim(rows - 0.5, -0.5)
    axis.set_axis_off()
    if legend:
        axis.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.6)
    if caption:
        axis.set_title(overlay_caption(assessment, title, 70), fontsize=8.5)


def save_overlay(image: np.ndarray, detections, assessment, path: str | Path, title: str = "",
                 spacing_mm: tuple[float, float] | None = None) -> Path:
    """Write a PNG (7 inches wide) of :func:`draw_overlay` with :func:`overlay_caption` above it; returns the path.

    image: (rows, cols) raw intensities; detections (or None) and assessment as for :func:`draw_overlay`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = _pixels(image).shape
    aspect = (spacing_mm[0] / spacing_mm[1]) if spacing_mm else 1.0
    text = overlay_caption(assessment, title)
    width = 7.0  # inches
    header = 0.15 + 0.16 * (text.count("\n") + 1)  # inches for the caption lines
    height = width * rows * aspect / cols + header
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    try:
        axis = figure.add_axes((0.0, 0.0, 1.0, 1.0 - header / height))
        draw_overlay(axis, image, detections, assessment, title, spacing_mm, caption=False)
        figure.text(0.5, 1.0 - 0.05 / height, text, ha="center", va="top", fontsize=8.5)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(str(path))
    finally:  # the figure and its canvas refer to each other: free the drawing now, not at the next collection
        figure.clear()
        figure.canvas = None
    return path
