"""scanai.mrml on a real vtkMRMLScene (slicer-core), through the headless harness."""

from __future__ import annotations

import os

import numpy as np
import pytest
import slicer_harness

scene = slicer_harness.install()

import slicer  # noqa: E402

from scanai import mrml  # noqa: E402
from scanai.core import Geometry, GeometryError, InputError, Volume, VolumeSequence  # noqa: E402
from scanai.mrml import nodes  # noqa: E402

OBLIQUE = Geometry((0.7, 0.8, 2.5), (-12.0, 30.5, 7.0),
                   tuple(map(tuple, np.linalg.qr(np.array([[1, 0.2, 0], [-0.2, 1, 0.1], [0, -0.1, 1.0]]))[0])))


@pytest.fixture(autouse=True)
def clear_scene():
    scene.Clear(0)
    yield


def test_volume_round_trip_keeps_voxels_and_geometry(rng):
    volume = Volume(rng.normal(size=(3, 4, 5)).astype(np.float32), OBLIQUE)
    node = mrml.volume_to_node(volume, "vol")
    back = mrml.volume_from_node(node)
    assert np.array_equal(back.array, volume.array)
    assert back.geometry.is_close(OBLIQUE, 1e-9)
    back.array[:] = 0  # a copy: the node keeps its voxels
    assert np.array_equal(slicer.util.arrayFromVolume(node), volume.array)


def test_volume_under_transform_is_refused(rng):
    node = mrml.volume_to_node(Volume(rng.normal(size=(2, 3, 4))), "vol")
    node.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    with pytest.raises(InputError, match="under a transform"):
        mrml.volume_from_node(node)


def _sequence(rng, frames=4) -> VolumeSequence:
    return VolumeSequence(rng.normal(size=(frames, 2, 3, 4)).astype(np.float32), OBLIQUE,
                          tuple(np.arange(frames) * 1.5), "time", "s")


def test_sequence_round_trip_keeps_index_and_geometry(rng):
    sequence = _sequence(rng)
    node = mrml.sequence_to_node(sequence, "seq")
    assert (node.GetIndexName(), node.GetIndexUnit()) == ("time", "s")
    back = mrml.sequence_from_node(node)
    assert np.array_equal(back.frames, sequence.frames)
    assert back.index_values == sequence.index_values
    assert back.geometry.is_close(OBLIQUE, 1e-9)


def test_sequence_with_frames_on_different_grids_is_refused(rng):
    node = mrml.sequence_to_node(_sequence(rng), "seq")
    shifted = Volume(rng.normal(size=(2, 3, 4)), Geometry((0.7, 0.8, 2.5), (0.0, 0.0, 0.0)))
    item = slicer.vtkMRMLScalarVolumeNode()
    nodes._fill_volume_node(item, shifted.array, shifted.geometry)
    node.SetDataNodeAtValue(item, "99")
    with pytest.raises(GeometryError, match="Frame 5 .* different grid"):
        mrml.sequence_from_node(node)


def test_non_numeric_sequence_index_is_refused(rng):
    node = mrml.sequence_to_node(_sequence(rng, 1), "seq")
    item = slicer.vtkMRMLScalarVolumeNode()
    nodes._fill_volume_node(item, np.zeros((2, 3, 4)), OBLIQUE)
    node.SetIndexType(slicer.vtkMRMLSequenceNode.TextIndex)
    node.SetDataNodeAtValue(item, "late")
    with pytest.raises(InputError, match="not a number"):
        mrml.sequence_from_node(node)


def test_outputs_join_the_input_browser_in_sync(rng):
    sequence = _sequence(rng)
    input_node = mrml.sequence_to_node(sequence, "input")
    output_node = mrml.sequence_to_node(sequence, "output", like=input_node)
    browser = mrml.attach_to_browser([output_node], input_node)
    assert browser.IsSynchronizedSequenceNode(output_node, True)
    browser.SetSelectedItemNumber(2)
    mrml.module_logic("sequences").UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(output_node)
    assert np.array_equal(slicer.util.arrayFromVolume(proxy), sequence.frames[2])
    assert [output_node.GetNthIndexValue(i) for i in range(4)] == [input_node.GetNthIndexValue(i) for i in range(4)]


def test_grid_transform_sequence_holds_the_fields(rng):
    displacement = rng.normal(size=(3, 2, 3, 4, 3))
    node = mrml.transform_sequence_to_node(displacement, OBLIQUE, [0, 1, 2], "motion")
    assert node.GetNumberOfDataNodes() == 3
    for t in range(3):
        assert np.allclose(mrml.displacement_from_grid_transform(node.GetNthDataNode(t)), displacement[t])


def test_grid_transform_moves_points_by_the_field():
    geometry = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    displacement = np.zeros((4, 4, 4, 3))
    displacement[..., 0] = 1.5  # 1.5 mm towards R everywhere
    node = mrml.grid_transform(displacement, geometry)
    scene.AddNode(node)
    moved = node.GetTransformFromParent().TransformPoint((2.0, 2.0, 2.0))
    assert np.allclose(moved, (3.5, 2.0, 2.0), atol=1e-6)


def test_segmentation_gets_names_colours_and_voxels():
    labels = np.zeros((2, 6, 6), np.uint8)
    labels[:, 1:3, 1:3] = 1
    labels[:, 4:6, 4:6] = 2
    reference = mrml.volume_to_node(Volume(np.zeros((2, 6, 6)), OBLIQUE), "ref")
    segments = {1: ("left lung", (0.2, 0.5, 0.8)), 2: ("heart", (0.9, 0.3, 0.2)), 3: ("clavicle", (1.0, 1.0, 0.5))}
    node = mrml.segmentation_from_labels(labels, OBLIQUE, segments, "anatomy", beside=reference)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == ["left lung", "heart", "clavicle"]
    assert np.allclose(segmentation.GetNthSegment(1).GetColor(), (0.9, 0.3, 0.2))
    masks = mrml.labels_from_segmentation(node, reference)
    assert np.array_equal(masks["left lung"], labels == 1)
    assert np.array_equal(masks["heart"], labels == 2)
    assert not masks["clavicle"].any()


def test_table_plot_and_markups():
    table = mrml.table_to_node({"time_s": [0, 60, 120], "activity": [0.0, 2.5, 1.0]}, "tac",
                               units={"time_s": "s"})
    assert np.allclose(mrml.table_from_node(table)["activity"], [0, 2.5, 1])
    chart = mrml.plot_chart(table, "time_s", ["activity"], "TAC", "time (s)", "kBq/mL")
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    points = mrml.points_to_node(np.array([[1, 2, 3], [4, 5, 6.0]]), ["apex", "base"], "landmarks")
    assert points.GetNumberOfControlPoints() == 2 and points.GetNthControlPointLabel(1) == "base"
    line = mrml.line_to_node((0, 0, 0), (30, 40, 0), "width")
    assert line.GetLineLengthWorld() == pytest.approx(50.0)
    roi = mrml.roi_to_node((1, 2, 3), (10, 20, 1), "pacemaker")
    assert np.allclose(roi.GetSize(), (10, 20, 1))


def test_outputs_are_placed_beside_the_input(rng):
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    source = mrml.volume_to_node(Volume(rng.normal(size=(1, 4, 4))), "input")
    hierarchy.CreateItem(study, source)
    output = mrml.volume_to_node(Volume(rng.normal(size=(1, 4, 4))), "output", beside=source)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study


def test_failed_run_leaves_the_scene_as_it_was(rng):
    mrml.volume_to_node(Volume(rng.normal(size=(1, 4, 4))), "kept")
    count = scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError), mrml.scene_transaction():
        mrml.volume_to_node(Volume(rng.normal(size=(1, 4, 4))), "partial result")
        mrml.table_to_node({"x": [1.0]}, "partial table")
        raise RuntimeError("failure half-way")
    assert scene.GetNumberOfNodes() == count
    assert scene.GetFirstNodeByName("kept") is not None


def test_slicer_progress_drives_the_bar_and_cancels():
    from scanai.core import Cancelled, CancelToken

    class Bar:
        value = 0
        text = ""

        def setFormat(self, text):
            self.text = text

    bar, token = Bar(), CancelToken()
    progress = mrml.slicer_progress(bar, token)
    progress(0.42, "Fitting")
    assert bar.value == 42 and "Fitting" in bar.text
    token.cancel()
    with pytest.raises(Cancelled):
        progress(0.5, "more")


def test_text_table_columns_are_read_as_numbers():
    table = mrml.table_to_node({"time_s": np.array(["0", "60", "n/a"]), "Cp": [1.0, 2.0, 3.0]}, "csv as text")
    columns = mrml.table_from_node(table)
    assert np.allclose(columns["time_s"][:2], [0, 60]) and np.isnan(columns["time_s"][2])


def test_module_requirements_are_library_dependencies():
    """What a module may ask Slicer to install is among the library's own dependencies (pyproject.toml)."""
    import re

    import tomllib
    from slicer_harness import HOME

    declared = tomllib.loads((HOME / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ]", d)[0].lower() for d in declared}
    for module in ("MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"):
        requirements = mrml.read_requirements(HOME / module / "Resources" / "requirements.txt")
        assert {r.name.lower() for r in requirements} <= names
        if not os.environ.get("SCANAI_STOCK_SLICER"):  # the full environment has them all; a stock Slicer not
            assert mrml.missing_requirements(requirements) == []


def test_run_test_methods_runs_each_method_after_set_up():
    import unittest

    calls = []

    class Case(unittest.TestCase):
        def setUp(self):
            calls.append("setUp")

        def runTest(self):
            mrml.run_test_methods(self)

        def test_b(self):
            calls.append("b")

        def test_a(self):
            calls.append("a")
            raise unittest.SkipTest("no data")

    Case().runTest()
    assert calls == ["setUp", "a", "setUp", "b"]
