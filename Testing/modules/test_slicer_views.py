"""Screenshots drawn by Slicer's own slice logic and displayable managers (Testing/modules/slicer_views.py), offscreen.

A tiny synthetic scene checks that the pictures show what the scene holds, where it is: a segment's colour inside
its square and nowhere else, a markups line along its end points, a foreground colour table and its legend, the
chosen slice, and that rendering leaves the scene as it was. The screenshot script's pictures are checked for
their overlay colours in the boxes it reports (two quick modules here; all four with ``-m slow``).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
import slicer_harness
import slicer_views

AVAILABLE, REASON = slicer_views.offscreen_rendering_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

SIZE = 256  # view pixels; the 64-voxel volume fills it, 4 pixels per voxel
GREEN = (0.0, 1.0, 0.0)
YELLOW = (1.0, 1.0, 0.0)
SQUARE = (10, 30)  # voxels i, j in [10, 30) hold the segment


@pytest.fixture(scope="module")
def scene():
    return slicer_harness.install()


@pytest.fixture
def synthetic(scene):
    """A 64x64 grey ramp (identity IJK->RAS), a green segment square and a yellow markups line."""
    import slicer
    import vtk

    scene.Clear(0)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # a singleton Slicer always has
    ramp = np.tile(np.linspace(20.0, 100.0, 64, dtype=np.float32), (1, 64, 1))
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ramp")
    slicer.util.updateVolumeFromArray(volume, ramp)
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevelMinMax(0.0, 200.0)  # mid greys: no pixel is near green or yellow
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "square")
    segmentation.CreateDefaultDisplayNodes()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "square labels")
    mask = np.zeros((1, 64, 64), dtype=np.uint8)
    mask[0, SQUARE[0]:SQUARE[1], SQUARE[0]:SQUARE[1]] = 1
    slicer.util.updateVolumeFromArray(labelmap, mask)
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    segmentation.GetSegmentation().GetNthSegment(0).SetColor(*GREEN)
    line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "line")
    line.AddControlPoint(vtk.vtkVector3d(40.0, 45.0, 0.0))
    line.AddControlPoint(vtk.vtkVector3d(55.0, 45.0, 0.0))
    line.CreateDefaultDisplayNodes()
    line.GetDisplayNode().SetSelectedColor(*YELLOW)
    line.GetDisplayNode().SetColor(*YELLOW)
    line.GetDisplayNode().SetPropertiesLabelVisibility(False)
    return scene, volume, segmentation, line


def pixel_box(i0: float, i1: float, j0: float, j1: float, margin: int = 3) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1) of the voxel range [i0, i1) x [j0, j1) in the axial view: R (= +i) is on the
    screen's left and A (= +j) at its top, as in Slicer; 4 pixels per voxel."""
    scale = SIZE / 64
    return (int((64 - i1) * scale) - margin, int((64 - j1) * scale) - margin,
            int((64 - i0) * scale) + margin, int((64 - j0) * scale) + margin)


def close_to(image: np.ndarray, colour, tolerance: int = 40) -> np.ndarray:
    target = np.asarray([round(255 * c) for c in colour])
    return np.abs(image.astype(int) - target).max(axis=-1) <= tolerance


def hue_like(image: np.ndarray, colour, min_chroma: float = 25.0, min_cosine: float = 0.95) -> np.ndarray:
    """Pixels whose colour, less its grey part, points the way ``colour``'s does (the colour blended over grey)."""
    pixels = image.astype(float)
    chroma = pixels - pixels.mean(axis=-1, keepdims=True)
    target = np.asarray(colour, dtype=float)
    target = target - target.mean()
    norm = np.linalg.norm(chroma, axis=-1)
    cosine = chroma @ target / np.maximum(norm * np.linalg.norm(target), 1e-9)
    return (norm >= min_chroma) & (cosine >= min_cosine)


def inside(mask: np.ndarray, box) -> np.ndarray:
    col0, row0, col1, row1 = box
    region = np.zeros_like(mask)
    region[max(row0, 0):row1 + 1, max(col0, 0):col1 + 1] = True
    return mask & region


def test_segment_and_line_are_drawn_where_they_are(synthetic):
    scene, volume, segmentation, line = synthetic
    count = scene.GetNumberOfNodes()
    image = slicer_views.render_slice_view(scene, volume, label_or_segmentation=segmentation, size=(SIZE, SIZE),
                                           annotate=False)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert image.std() > 10, "blank screenshot"
    assert scene.GetNumberOfNodes() == count, "the view's nodes must leave the scene with it"

    green = close_to(image, GREEN, 30)  # the outline (opaque) in the segment's colour
    greenish = hue_like(image, GREEN)   # and the fill, blended over the ramp
    square = pixel_box(*SQUARE, *SQUARE)
    assert inside(green, square).sum() >= 4 * 4 * (SQUARE[1] - SQUARE[0]) * 0.8, "segment outline missing"
    assert inside(greenish, square).sum() >= 0.8 * (4 * (SQUARE[1] - SQUARE[0])) ** 2, "segment fill missing"
    assert greenish.sum() - inside(greenish, square).sum() == 0, "segment colour outside its square"

    yellow = close_to(image, YELLOW, 40)
    along = pixel_box(40, 56, 45, 46, margin=6)  # the line from (40, 45) to (55, 45), its end-point glyphs
    assert inside(yellow, along).sum() >= 40, "markups line missing"
    assert yellow.sum() - inside(yellow, along).sum() <= 0.05 * yellow.sum(), "line colour elsewhere"

    # the projection helper agrees with Slicer's axial convention
    with slicer_views.SliceView(scene, (SIZE, SIZE)) as view:
        view.show(volume)
        col, row = view.ras_to_pixel((SQUARE[0], SQUARE[0], 0.0))
        assert abs(col - (64 - SQUARE[0] - 0.5) * 4) <= 2.5 and abs(row - (64 - SQUARE[0] - 0.5) * 4) <= 2.5


def test_hidden_segmentation_is_not_drawn(synthetic):
    scene, volume, segmentation, _line = synthetic
    segmentation.GetDisplayNode().SetVisibility(False)
    image = slicer_views.render_slice_view(scene, volume, size=(SIZE, SIZE), annotate=False)
    assert hue_like(image, GREEN).sum() == 0


def test_foreground_colour_table_and_legend(synthetic):
    scene, volume, segmentation, line = synthetic
    import slicer

    segmentation.GetDisplayNode().SetVisibility(False)
    line.GetDisplayNode().SetVisibility(False)
    hot = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hot")
    values = np.zeros((1, 64, 64), dtype=np.float32)
    values[0, 40:60, 40:60] = 1.0  # i, j in [40, 60): the screen's upper left
    slicer.util.updateVolumeFromArray(hot, values)
    hot.CreateDefaultDisplayNodes()
    display = hot.GetDisplayNode()
    display.SetAndObserveColorNodeID("vtkMRMLPETProceduralColorNodePET-Heat")
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 2.0)  # 1.0 is half-way: PET-Heat's yellow
    plain = slicer_views.render_slice_view(scene, volume, hot, foreground_opacity=0.0, size=(SIZE, SIZE),
                                           annotate=False)
    image = slicer_views.render_slice_view(scene, volume, hot, foreground_opacity=0.6, size=(SIZE, SIZE),
                                           annotate=False, color_legend=True)
    yellowish = hue_like(image, YELLOW)
    spot = pixel_box(40, 60, 40, 60)
    assert hue_like(plain, YELLOW).sum() == 0, "opacity 0 must hide the foreground"
    assert inside(yellowish, spot).sum() >= 0.8 * 80 * 80
    legend = yellowish.copy()
    legend[:, : SIZE * 3 // 4] = False  # Slicer's legend stands at the right edge
    assert legend.sum() > 20, "colour legend missing"
    assert (yellowish.sum() - inside(yellowish, spot).sum() - legend.sum()) == 0


def test_slice_index_picks_the_slice(scene):
    import slicer

    scene.Clear(0)
    stack = np.stack([np.full((32, 32), value, dtype=np.float32) for value in (10.0, 50.0, 90.0)])
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "three slices")
    slicer.util.updateVolumeFromArray(volume, stack)
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevelMinMax(0.0, 100.0)
    means = [slicer_views.render_slice_view(scene, volume, slice_index=k, size=(64, 64), annotate=False).mean()
             for k in range(3)]
    assert means[0] < means[1] < means[2]
    assert means[1] == pytest.approx(127.5, abs=4)
    with pytest.raises(IndexError):
        slicer_views.render_slice_view(scene, volume, slice_index=3, size=(64, 64))


def test_caption_and_png(tmp_path):
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    captioned = slicer_views.add_caption(image, "a caption long enough to be wrapped onto a second line")
    assert captioned.shape[1] == 60 and captioned.shape[0] > 40 + 30
    path = slicer_views.save_png(slicer_views.side_by_side([image, image]), tmp_path / "pair.png", colours=16)
    from PIL import Image

    assert Image.open(path).size == (124, 40)


# ------------------------------------------------------------------------------------------------ the script


def _script():
    if "slicer_screenshots" in sys.modules:
        return sys.modules["slicer_screenshots"]
    path = pathlib.Path(__file__).resolve().parents[2] / "Utilities" / "slicer_screenshots.py"
    spec = importlib.util.spec_from_file_location("slicer_screenshots", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["slicer_screenshots"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _check_pictures(out, keys) -> None:
    from PIL import Image

    manifest = json.loads((out / "slicer_screenshots.json").read_text())
    assert sorted(manifest["shots"]) == sorted(keys)
    for key, shot in manifest["shots"].items():
        image = np.asarray(Image.open(out / shot["png"]).convert("RGB"))
        assert image.shape[1::-1] == tuple(shot["size"]), key
        assert image.std() > 20, f"{key}: blank screenshot"
        assert shot["overlays"], f"{key}: no overlay reported"
        for overlay in shot["overlays"]:
            colour = [c / 255 for c in overlay["colour"]]
            matches = close_to(image, colour, 40) if overlay["match"] == "exact" else hue_like(image, colour)
            found = inside(matches, overlay["box"]).sum()
            assert found >= 20, f"{key}: {overlay['what']} not in its box ({found} pixels)"
            assert found >= matches.sum() - found, f"{key}: {overlay['what']} mostly outside its box"


def test_script_pictures_of_two_modules(tmp_path):
    """ParametricPET and KSpaceCalibration (a few seconds): real data when present, else phantoms."""
    _script().run(tmp_path, only=["parametricpet", "kspacecalibration"])
    _check_pictures(tmp_path, ["parametricpet", "kspacecalibration"])


@pytest.mark.slow
def test_script_pictures_of_every_module(tmp_path):
    pytest.importorskip("torch")
    script = _script()
    script.run(tmp_path)
    _check_pictures(tmp_path, list(script.JOBS))
