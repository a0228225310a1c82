"""Report figures for ChestQC: the normalisation panels and the overlay of detections, grade and CTR lines
(matplotlib, Agg canvas: no window, no global pyplot state). The overlay draws the radiograph and the mask outlines
on block means sized for the picture (:func:`display_factor`), so a full-size radiograph draws in a fraction of a
second, and keeps its legend in a strip under the picture, off the lungs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scanai.core.image import Volume

if TYPE_CHECKING:
    from scanai.chest.detection import Box

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


#: The overlay draws the radiograph and the mask outlines on k x k block means with at most this many pixels on the
#: long side, and no more than the axis shows (see :func:`display_factor`): a 2048² radiograph draws as fast as a
#: small one.
DISPLAY_GRID = 1024
#: The legend under the overlay: entries per row (in the strip of :func:`save_overlay`; two under an axis of
#: :func:`draw_overlay`, which may be one of several side by side), and its look (dark, so white and grey lines show).
LEGEND_COLUMNS = 4
LEGEND_STYLE = {"fontsize": 7, "handlelength": 2.0, "columnspacing": 1.2, "frameon": True, "facecolor": "0.2",
                "edgecolor": "0.2", "framealpha": 1.0, "labelcolor": "white", "fancybox": False}


def display_factor(shape: tuple[int, int], shown_pixels: float | None = None) -> int:
    """The block size k at which a (rows, cols) image is drawn: the smallest that leaves at most
    :data:`DISPLAY_GRID` pixels on the long side, or, when larger, the one that brings the long side nearest to
    ``shown_pixels`` (the screen or file pixels it will cover)."""
    factor = max(1, -(-max(shape) // DISPLAY_GRID))
    return max(factor, round(max(shape) / shown_pixels)) if shown_pixels else factor


def _display_window(image: np.ndarray, step: int = 1) -> tuple[float, float]:
    """(low, high) grey window: the 0.5th and 99.5th percentiles of every ``step``-th pixel along each axis."""
    low, high = np.percentile(image[::step, ::step], [0.5, 99.5])
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


def outline(mask: np.ndarray, box: Box, factor: int) -> list[np.ndarray]:
    """The 0.5 contour of a (rows, cols) bool mask as polylines, each (n, 2) (x = column, y = row) in image
    pixel-index coordinates: traced (contourpy, matplotlib's contour engine) on the mask's ``factor`` x ``factor``
    block means over its ``box`` grown by one block on the image's block grid."""
    import contourpy

    from scanai.chest.detection import block_mean

    rows, cols = mask.shape
    top, left = max(0, (box.top // factor - 1) * factor), max(0, (box.left // factor - 1) * factor)
    bottom, right = min(rows, (box.bottom // factor + 2) * factor), min(cols, (box.right // factor + 2) * factor)
    coverage = block_mean(mask[top:bottom, left:right], factor)
    centre = (factor - 1) / 2.0  # a block's centre, in pixels from its first pixel
    y = top + centre + factor * np.arange(coverage.shape[0])
    x = left + centre + factor * np.arange(coverage.shape[1])
    return list(contourpy.contour_generator(x, y, coverage).lines(0.5))


def _line(colour, label: str, **style):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, label=label, **style)


def draw_overlay(axis, image: np.ndarray, detections, assessment, title: str = "",
                 spacing_mm: tuple[float, float] | None = None, caption: bool = True, legend: bool = True) -> list:
    """Draw the radiograph with what was detected and measured on a matplotlib ``axis``; returns the legend handles.

    image: (rows, cols) raw intensities (bright = dense), row 0 at the top, column 0 = the patient's right; drawn
    (with the mask outlines) on block means of :func:`display_factor` for the axis size, in image pixel-index
    coordinates. detections: :class:`~scanai.chest.detection.Detections` on that grid, or None (only the image and
    the image centreline are drawn). assessment: :class:`~scanai.chest.metrics.Assessment`. Drawn: each object's
    mask outline in its standard colour (:data:`scanai.chest.pipeline.SEGMENT_STYLE`), foreign-object boxes with
    their confidence, the lung union box, the heart and lung width lines of the cardiothoracic ratio, the spine
    centreline and the image centreline; with ``legend`` a legend under the axis (outside the image), with
    ``caption`` the axis title is :func:`overlay_caption`. ``spacing_mm`` (row, column) sets the aspect ratio.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle

    from scanai.chest.detection import EXPERIMENTAL, Box, block_mean
    from scanai.chest.pipeline import FOREIGN_COLOUR, SEGMENT_STYLE, centre_line, spine_line, width_line_indices

    pixels = _pixels(image)
    rows, cols = pixels.shape
    window = axis.get_window_extent()
    factor = display_factor((rows, cols), max(window.width, window.height))
    aspect = (spacing_mm[0] / spacing_mm[1]) if spacing_mm else 1.0
    low, high = _display_window(pixels, max(1, -(-max(rows, cols) // 512)))  # ~512² samples are plenty
    shown = block_mean(pixels, factor)  # block (i, j) covers pixels i*k .. i*k + k - 1: its edges are at -0.5 + i*k
    grey = np.clip((shown - low) * (255.0 / (high - low)), 0.0, 255.0).astype(np.uint8)
    axis.imshow(np.repeat(grey[:, :, None], 3, axis=2), aspect=aspect, interpolation="bilinear",
                extent=(-0.5, shown.shape[1] * factor - 0.5, shown.shape[0] * factor - 0.5, -0.5))
    handles = []
    if detections is not None:
        outlines = []  # (polyline, colour, width): drawn as one collection
        for name, found in detections.objects.items():
            label, colour = SEGMENT_STYLE.get(name, (name, (1.0, 1.0, 1.0)))
            label += " (experimental)" if name in EXPERIMENTAL else ""
            if found.mask.any():
                outlines += [(line, colour, 1.2) for line in outline(found.mask, found.box, factor)]
                handles.append(_line(colour, label))
        for index, found in enumerate(detections.foreign_objects):
            top, left, bottom, right = found.box
            outlines += [(line, FOREIGN_COLOUR, 1.0) for line in outline(found.mask, found.box, factor)]
            axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                     edgecolor=FOREIGN_COLOUR, linewidth=1.2))
            axis.text(left - 0.5, top - 2.0, f"FO {index + 1}: {found.confidence:.2f}", color=FOREIGN_COLOUR,
                      fontsize=8, va="bottom")
        if detections.foreign_objects:
            handles.append(_line(FOREIGN_COLOUR, "foreign object (confidence)"))
        if outlines:
            lines, colours, widths = zip(*outlines, strict=True)
            axis.add_collection(LineCollection(lines, colors=colours, linewidths=widths), autolim=False)
        lung_boxes = [found.box for name, found in detections.objects.items() if name in ("lung_right", "lung_left")]
        if lung_boxes:
            top, left, bottom, right = lung_boxes[0] if len(lung_boxes) == 1 else Box.union(*lung_boxes)
            axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                     edgecolor="white", linewidth=0.8, linestyle=":"))
            handles.append(_line("white", "lung box", linestyle=":"))
        spine = spine_line(detections)
        if spine is not None:
            axis.plot([spine[1], spine[3]], [spine[0], spine[2]], color=SPINE_LINE_COLOUR, linewidth=1.2,
                      linestyle="--")
            handles.append(_line(SPINE_LINE_COLOUR, "spine line", linestyle="--"))
    top, centre, bottom, _ = centre_line((rows, cols))
    axis.plot([centre, centre], [top, bottom], color="0.85", linewidth=0.8, linestyle="-.")
    handles.append(_line("0.85", "image centre", linestyle="-."))
    line_colours = {"heart": SEGMENT_STYLE["heart"][1], "lungs": SEGMENT_STYLE["lung_left"][1]}
    for line in getattr(assessment, "width_lines", ()):
        colour = line_colours.get(line.name, "white")
        row, start, end = width_line_indices(line)
        axis.plot([start, end], [row, row], color=colour, linewidth=2.0)
        axis.plot([start, end], [row, row], color=colour, marker="|", markersize=10, linestyle="none")
        handles.append(_line(colour, f"{line.name} width", linewidth=2.0))
    axis.set_xlim(-0.5, cols - 0.5)
    axis.set_ylim(rows - 0.5, -0.5)
    axis.set_axis_off()
    if legend:  # under the picture, never over the lungs
        axis.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                    **{**LEGEND_STYLE, "fontsize": 6, "handlelength": 1.5, "labelspacing": 0.25, "borderpad": 0.3})
    if caption:
        axis.set_title(overlay_caption(assessment, title, 70), fontsize=8.5)
    return handles


def save_overlay(image: np.ndarray, detections, assessment, path: str | Path, title: str = "",
                 spacing_mm: tuple[float, float] | None = None) -> Path:
    """Write a PNG (7 inches wide, 100 dpi) of :func:`draw_overlay`: :func:`overlay_caption` above the picture and
    the legend in a strip below it; returns the path.

    image: (rows, cols) raw intensities; detections (or None) and assessment as for :func:`draw_overlay`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows, cols = _pixels(image).shape
    aspect = (spacing_mm[0] / spacing_mm[1]) if spacing_mm else 1.0
    text = overlay_caption(assessment, title)
    width = 7.0  # inches
    header = 0.15 + 0.16 * (text.count("\n") + 1)  # inches for the caption lines
    picture = width * rows * aspect / cols
    figure = Figure(figsize=(width, picture + header), dpi=100)
    FigureCanvasAgg(figure)
    try:
        axis = figure.add_axes((0.0, 0.0, 1.0, picture / (picture + header)))
        handles = draw_overlay(axis, image, detections, assessment, title, spacing_mm, caption=False, legend=False)
        strip = 0.1 + 0.17 * -(-len(handles) // LEGEND_COLUMNS)  # inches for the legend rows
        height = picture + header + strip
        figure.set_size_inches(width, height)
        axis.set_position((0.0, strip / height, 1.0, picture / height))
        figure.add_artist(Rectangle((0.0, 0.0), 1.0, strip / height, transform=figure.transFigure,
                                    facecolor=LEGEND_STYLE["facecolor"], edgecolor="none"))
        figure.legend(handles=handles, loc="center", bbox_to_anchor=(0.0, 0.0, 1.0, strip / height), mode="expand",
                      borderaxespad=0.0, ncol=LEGEND_COLUMNS, **{**LEGEND_STYLE, "frameon": False})
        figure.text(0.5, 1.0 - 0.05 / height, text, ha="center", va="top", fontsize=8.5)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(str(path), pil_kwargs={"compress_level": 1})  # fast zlib: the PNG is written per image
    finally:  # the figure and its canvas refer to each other: free the drawing now, not at the next collection
        figure.clear()
        figure.canvas = None
    return path
