"""ChestQC overlay figure: drawn on a reduced grid (block means) whose outlines still follow the masks, with the
legend outside the picture (a strip under it), on any image size."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from scanai.chest.detection import Box, detections_from_masks
from scanai.chest.figures import LEGEND_STYLE, display_factor, draw_overlay, outline, save_overlay
from scanai.chest.metrics import assess


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def _chest(shape: tuple[int, int]):
    """(image, detections, assessment) of a simple drawn chest on a (rows, cols) grid, with a foreign object."""
    rows, cols = shape
    masks = {"lung_right": _ellipse(shape, (0.45 * rows, 0.3 * cols), (0.3 * rows, 0.14 * cols)),
             "lung_left": _ellipse(shape, (0.45 * rows, 0.7 * cols), (0.3 * rows, 0.14 * cols)),
             "heart": _ellipse(shape, (0.6 * rows, 0.55 * cols), (0.12 * rows, 0.13 * cols)),
             "spine": np.zeros(shape, bool), "foreign_object": np.zeros(shape, bool)}
    masks["spine"][int(0.05 * rows):int(0.9 * rows), int(0.47 * cols):int(0.53 * cols)] = True
    masks["foreign_object"][int(0.9 * rows):int(0.93 * rows), int(0.08 * cols):int(0.11 * cols)] = True  # outside
    lungs = masks["lung_right"] | masks["lung_left"]
    image = 1000.0 + 2000.0 * ~lungs + np.random.default_rng(1).normal(0, 50, shape)
    detections = detections_from_masks(masks, image, {"foreign_object": 0.9})
    return image, detections, assess(detections)


def test_display_factor_caps_the_grid_and_follows_the_shown_size():
    assert display_factor((512, 512)) == 1
    assert display_factor((2048, 2048)) == 2
    assert display_factor((2048, 1500), 700.0) == 3
    assert display_factor((300, 200), 700.0) == 1


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_outline_follows_the_mask_boundary(factor):
    mask = _ellipse((400, 300), (210.0, 140.0), (80.0, 80.0))
    lines = outline(mask, Box.of_mask(mask), factor)
    assert len(lines) == 1
    x, y = lines[0][:, 0], lines[0][:, 1]
    radius = np.hypot(y - 210.0, x - 140.0)
    assert np.abs(radius - 80.0).max() <= 0.5 + 0.25 * factor
    assert np.allclose(lines[0][0], lines[0][-1])  # closed


def test_overlay_legend_sits_under_the_picture():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image, detections, assessment = _chest((600, 500))
    figure = Figure(figsize=(6, 8), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0.05, 0.25, 0.9, 0.7))
    handles = draw_overlay(axis, image, detections, assessment, "test")
    figure.canvas.draw()
    legend = axis.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [handle.get_label() for handle in handles]
    assert {"Lung_Right", "Heart", "spine line", "image centre", "heart width"} <= set(legend_labels(legend))
    renderer = figure.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= axis.get_window_extent(renderer).y0 + 1.0


def legend_labels(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()]


@pytest.mark.parametrize("shape", [(2048, 1536), (300, 260)])
def test_saved_overlay_has_caption_picture_and_legend_strip(shape, tmp_path):
    from PIL import Image

    image, detections, assessment = _chest(shape)
    path = save_overlay(image, detections, assessment, tmp_path / "overlay.png", "a title")
    with Image.open(path) as png:
        picture = np.asarray(png.convert("RGB"))
    assert picture.shape[1] == 700
    picture_rows = round(700 * shape[0] / shape[1])
    assert picture.shape[0] > picture_rows + 40  # caption above, legend strip below
    strip = round(255 * float(LEGEND_STYLE["facecolor"]))
    bottom = picture[-5:]  # the legend strip's background: dark grey, never the radiograph
    assert np.mean(np.all(np.abs(bottom.astype(int) - strip) <= 2, axis=-1)) > 0.8
    assert np.all(picture[:3] == 255)  # white caption band at the top
