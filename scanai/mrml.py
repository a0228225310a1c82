"""The one Slicer-facing adapter: MRML nodes <-> :mod:`scanai.core.image` data, results -> nodes.

This is the only file of :mod:`scanai` that imports ``slicer`` and ``vtk``; the four module files call it to
turn their input nodes into arrays with geometry and the library's results into new nodes placed beside the
input in the subject hierarchy. Every ``*_to_node`` function creates new nodes and never modifies its input.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from scanai.core.device import torch_available
from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import CancelToken, Progress

try:  # Slicer's translation function (the status texts, dialogs and errors a user reads)
    from slicer.i18n import tr as _
except ImportError:  # slicer-core without Slicer's Python layer: the source text

    def _(text: str) -> str:
        return text

# ---------------------------------------------------------------------------------------------- helpers


def _scene(scene: slicer.vtkMRMLScene | None = None) -> slicer.vtkMRMLScene:
    return scene if scene is not None else slicer.mrmlScene


def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def module_logic(name: str):
    """The logic of a loaded Slicer module, e.g. ``module_logic("sequences")``."""
    return getattr(slicer.modules, name.lower()).logic()


def format_index_value(value: float) -> str:
    """A sequence index value as Slicer stores it: the shortest exact text of the number."""
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(float(value))


# ---------------------------------------------------------------------------------------------- volumes


def geometry_of_node(node: slicer.vtkMRMLVolumeNode) -> Geometry:
    """The IJK->RAS :class:`Geometry` of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return Geometry.from_ijk_to_ras(_matrix_to_array(matrix))


def volume_from_node(node: slicer.vtkMRMLVolumeNode) -> Volume:
    """A copy of a scalar volume node's voxels, shape (k, j, i), with its geometry."""
    if node is None or node.GetImageData() is None:
        raise InputError("The selected volume has no image data.", "Load or select a volume that holds an image.")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(f"The volume '{node.GetName()}' has several components per voxel (colour or vector).",
                         "Select a scalar (grey-scale) volume.")
    if node.GetParentTransformNode() is not None:
        raise InputError(f"The volume '{node.GetName()}' is under a transform.",
                         "Harden or remove the transform (Data module) before running this tool.")
    return Volume(np.array(slicer.util.arrayFromVolume(node), copy=True), geometry_of_node(node))


def _fill_volume_node(node: slicer.vtkMRMLVolumeNode, array: np.ndarray, geometry: Geometry) -> None:
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(_array_to_matrix(geometry.ijk_to_ras()))


def volume_to_node(volume: Volume, name: str, beside: slicer.vtkMRMLNode | None = None,
                   node_class: str = "vtkMRMLScalarVolumeNode", scene: slicer.vtkMRMLScene | None = None):
    """A new volume node holding ``volume`` (geometry kept exactly), placed beside ``beside``."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    _fill_volume_node(node, volume.array, volume.geometry)
    node.CreateDefaultDisplayNodes()
    place_beside(node, beside)
    return node


def set_colour_map(node: slicer.vtkMRMLVolumeNode, colour_node_id: str,
                   value_range: tuple[float, float] | None = None) -> None:
    """Show ``node`` with the colour table ``colour_node_id`` (when the scene has it) and a window over
    ``value_range`` (default: 0 to the 99.5th percentile of the non-zero voxels)."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    if node.GetScene() is not None and node.GetScene().GetNodeByID(colour_node_id) is not None:
        display.SetAndObserveColorNodeID(colour_node_id)
    if value_range is None:
        values = slicer.util.arrayFromVolume(node)
        values = values[np.isfinite(values) & (values != 0)]
        value_range = (0.0, float(np.percentile(values, 99.5))) if values.size else (0.0, 1.0)
    low, high = value_range
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high if high > low else low + 1.0)


# ---------------------------------------------------------------------------------------------- sequences


def first_volume_sequence(scene: slicer.vtkMRMLScene | None = None) -> slicer.vtkMRMLSequenceNode | None:
    """The scene's first sequence node whose items are scalar volumes (not transforms, tables or markups)."""
    scene = _scene(scene)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSequenceNode")
        if node.GetNumberOfDataNodes() and node.GetNthDataNode(0).IsA("vtkMRMLScalarVolumeNode"):
            return node
    return None


def sequence_from_node(sequence_node: slicer.vtkMRMLSequenceNode) -> VolumeSequence:
    """All frames of a volume sequence node, checked to lie on one grid, with index values, name and unit."""
    if sequence_node is None or sequence_node.GetNumberOfDataNodes() == 0:
        raise InputError("The selected sequence has no frames.", "Select a sequence that holds volumes.")
    volumes, values = [], []
    for index in range(sequence_node.GetNumberOfDataNodes()):
        data_node = sequence_node.GetNthDataNode(index)
        if not data_node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"Item {index + 1} of the sequence '{sequence_node.GetName()}' is a "
                             f"{data_node.GetClassName()}, not a scalar volume.", "Select a volume sequence.")
        raw_value = sequence_node.GetNthIndexValue(index)
        try:
            values.append(float(raw_value))
        except ValueError as error:
            raise InputError(f"The sequence index value '{raw_value}' of frame {index + 1} is not a number.",
                             "Use a sequence indexed by time (or another numeric index).") from error
        if data_node.GetImageData() is None:
            raise InputError(f"Frame {index + 1} of the sequence has no image data.")
        volumes.append(Volume(np.array(slicer.util.arrayFromVolume(data_node), copy=True), geometry_of_node(data_node)))
    return VolumeSequence.from_volumes(volumes, values, sequence_node.GetIndexName(), sequence_node.GetIndexUnit())


def _new_sequence_node(name: str, index_name: str, index_unit: str, scene: slicer.vtkMRMLScene):
    node = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    node.SetIndexName(index_name)
    node.SetIndexUnit(index_unit)
    node.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    return node


def _index_texts(values: Sequence[float], like: slicer.vtkMRMLSequenceNode | None) -> list[str]:
    """Index texts: those of ``like`` when it has the same values (so outputs sync exactly), else formatted."""
    if like is not None and like.GetNumberOfDataNodes() == len(values):
        texts = [like.GetNthIndexValue(i) for i in range(len(values))]
        if all(np.isclose(float(t), v) for t, v in zip(texts, values, strict=True)):
            return texts
    return [format_index_value(v) for v in values]


def sequence_to_node(sequence: VolumeSequence, name: str, like: slicer.vtkMRMLSequenceNode | None = None,
                     scene: slicer.vtkMRMLScene | None = None):
    """A new sequence node of scalar volumes; index name, unit and values kept (texts copied from ``like``)."""
    scene = _scene(scene)
    node = _new_sequence_node(name, sequence.index_name, sequence.index_unit, scene)
    for frame, text in zip(sequence.frames, _index_texts(sequence.index_values, like), strict=True):
        item = slicer.vtkMRMLScalarVolumeNode()
        _fill_volume_node(item, frame, sequence.geometry)
        node.SetDataNodeAtValue(item, text)
    place_beside(node, like)
    return node


def grid_transform(displacement_mm: np.ndarray, geometry: Geometry) -> slicer.vtkMRMLGridTransformNode:
    """A grid transform node (not in a scene) whose FromParent displacement is ``displacement_mm``.

    displacement_mm: (k, j, i, 3) RAS vectors in mm on ``geometry``'s grid. FromParent is Slicer's
    resampling direction, so a volume placed under this transform is shown pulled back through the field.
    """
    displacement_mm = np.asarray(displacement_mm, dtype=np.float64)
    if displacement_mm.ndim != 4 or displacement_mm.shape[-1] != 3:
        raise InputError(f"A displacement field must have shape (k, j, i, 3), got {displacement_mm.shape}.")
    grid = vtk.vtkImageData()
    grid.SetDimensions(displacement_mm.shape[2], displacement_mm.shape[1], displacement_mm.shape[0])
    grid.SetSpacing(geometry.spacing_mm)
    grid.SetOrigin(geometry.origin_mm)
    vectors = numpy_support.numpy_to_vtk(displacement_mm.reshape(-1, 3).copy(), deep=True)
    vectors.SetName("displacement")
    grid.GetPointData().SetScalars(vectors)
    transform = slicer.vtkOrientedGridTransform()
    directions = np.eye(4)
    directions[:3, :3] = geometry.directions
    transform.SetGridDirectionMatrix(_array_to_matrix(directions))
    transform.SetDisplacementGridData(grid)
    transform.SetInterpolationModeToLinear()
    node = slicer.vtkMRMLGridTransformNode()
    node.SetAndObserveTransformFromParent(transform)
    return node


def displacement_from_grid_transform(node: slicer.vtkMRMLGridTransformNode) -> np.ndarray:
    """The (k, j, i, 3) FromParent displacement array of a grid transform node made by :func:`grid_transform`."""
    grid = node.GetTransformFromParent().GetDisplacementGrid()
    k, j, i = reversed(grid.GetDimensions())
    return numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars()).reshape(k, j, i, 3).copy()


def transform_sequence_to_node(displacement_mm: np.ndarray, geometry: Geometry, index_values: Sequence[float],
                               name: str, index_name: str = "time", index_unit: str = "s",
                               like: slicer.vtkMRMLSequenceNode | None = None,
                               scene: slicer.vtkMRMLScene | None = None):
    """A new sequence of grid transforms, one per frame of ``displacement_mm`` (t, k, j, i, 3) RAS mm."""
    scene = _scene(scene)
    node = _new_sequence_node(name, index_name, index_unit, scene)
    for field, text in zip(displacement_mm, _index_texts(index_values, like), strict=True):
        node.SetDataNodeAtValue(grid_transform(field, geometry), text)
    place_beside(node, like)
    return node


def attach_to_browser(outputs: Sequence[slicer.vtkMRMLSequenceNode], input_sequence: slicer.vtkMRMLSequenceNode,
                      scene: slicer.vtkMRMLScene | None = None) -> slicer.vtkMRMLSequenceBrowserNode:
    """Add output sequences to the input's sequence browser (created if none) so they play in sync."""
    scene = _scene(scene)
    logic = module_logic("sequences")
    browser = logic.GetFirstBrowserNodeForSequenceNode(input_sequence)
    if browser is None:
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode",
                                          scene.GenerateUniqueName(f"{input_sequence.GetName()} browser"))
        browser.SetAndObserveMasterSequenceNodeID(input_sequence.GetID())
    for output in outputs:
        browser.AddSynchronizedSequenceNode(output)
        browser.SetOverwriteProxyName(output, True)
        browser.SetSaveChanges(output, False)
    logic.UpdateProxyNodesFromSequences(browser)
    return browser


# ---------------------------------------------------------------------------------------------- segmentations


def segmentation_from_labels(labels: np.ndarray, geometry: Geometry, segments: Mapping[int, tuple[str, tuple]],
                             name: str, beside: slicer.vtkMRMLNode | None = None,
                             scene: slicer.vtkMRMLScene | None = None):
    """A new segmentation node from a label array (k, j, i): one segment per entry of ``segments``.

    segments: label value -> (segment name, (r, g, b) in 0..1). Labels absent from ``segments`` are dropped;
    a listed label with no voxel still gets its (empty) segment, so names and colours are stable.
    """
    scene = _scene(scene)
    labels = np.asarray(labels)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    _import_masks(node, [(segment_name, labels == value, colour)
                         for value, (segment_name, colour) in sorted(segments.items())], geometry, scene)
    node.SetReferenceImageGeometryParameterFromVolumeNode(beside) if beside is not None and beside.IsA(
        "vtkMRMLVolumeNode") else None
    place_beside(node, beside)
    return node


def segmentation_from_masks(segments: Mapping[str, tuple[np.ndarray, tuple]], geometry: Geometry, name: str,
                            beside: slicer.vtkMRMLNode | None = None, scene: slicer.vtkMRMLScene | None = None):
    """A new segmentation node with one segment per entry: segment name -> ((k, j, i) bool mask on ``geometry``,
    (r, g, b) in 0..1), in the given order. Segments may overlap (e.g. a lung and the pneumothorax inside it); an
    empty mask gives an empty segment, so names and colours are stable."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    _import_masks(node, [(segment_name, mask, colour) for segment_name, (mask, colour) in segments.items()], geometry,
                  scene)
    if beside is not None and beside.IsA("vtkMRMLVolumeNode"):
        node.SetReferenceImageGeometryParameterFromVolumeNode(beside)
    place_beside(node, beside)
    return node


def labels_from_segmentation(node: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLVolumeNode
                             ) -> dict[str, np.ndarray]:
    """Each segment as a boolean (k, j, i) array on the reference volume's grid, keyed by segment name."""
    segmentation = node.GetSegmentation()
    result = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        array = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, reference)
        result[segmentation.GetSegment(segment_id).GetName()] = np.asarray(array) > 0
    return result


def check_segmentation_on_grid(node: slicer.vtkMRMLSegmentationNode, geometry: Geometry, single_slice: bool = False,
                               action: str = "Draw the segmentation on the image (Segment Editor with that image as "
                                             "the source volume), or resample it onto the image's grid.") -> None:
    """Raise :class:`GeometryError` unless every segment's binary labelmap lies on the voxel lattice of
    ``geometry``: same spacing and axes, origin shifted by whole voxels. For a ``single_slice`` grid (k, j, i) =
    (1, J, I) only the in-plane lattice counts, and the segment must lie in the slice's plane. Segments without a
    binary labelmap (e.g. closed surfaces only) are not checked."""
    from scanai.core.errors import GeometryError

    if node.GetParentTransformNode() is not None:
        raise GeometryError(f"The segmentation '{node.GetName()}' is under a transform.",
                            "Harden or remove the transform (Data module) first.")
    segmentation = node.GetSegmentation()
    expected = np.asarray(geometry.ijk_to_ras())
    axes = 2 if single_slice else 3
    inverse = np.linalg.inv(expected[:3, :3])
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        if labelmap is None:
            continue
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        actual = _matrix_to_array(matrix)
        offset = inverse @ (actual[:3, 3] - expected[:3, 3])  # segment origin in the grid's voxel units
        columns = np.allclose(actual[:3, :axes], expected[:3, :axes], atol=1e-4 * min(geometry.spacing_mm))
        in_plane = not single_slice or abs(offset[2]) < 0.5
        if not columns or not in_plane or not np.allclose(offset[:axes], np.round(offset[:axes]), atol=1e-3):
            spacing = tuple(round(float(v), 4) for v in np.linalg.norm(actual[:3, :3], axis=0))
            raise GeometryError(f"The segment '{segment.GetName()}' lies on another grid (spacing {spacing} mm, "
                                "or another origin or orientation) than the image "
                                f"(spacing {tuple(round(v, 4) for v in geometry.spacing_mm)} mm).", action)


def _import_masks(node: slicer.vtkMRMLSegmentationNode, masks: Sequence[tuple[str, np.ndarray, tuple]],
                  geometry: Geometry, scene: slicer.vtkMRMLScene) -> None:
    """Add one segment per (name, (k, j, i) bool mask, (r, g, b)) to ``node``; an empty mask gives an empty segment."""
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    try:
        segmentation = node.GetSegmentation()
        for segment_name, mask, colour in masks:
            _fill_volume_node(labelmap, np.asarray(mask, dtype=bool).astype(np.uint8), geometry)
            before = segmentation.GetNumberOfSegments()
            module_logic("segmentations").ImportLabelmapToSegmentationNode(labelmap, node)
            if segmentation.GetNumberOfSegments() == before:
                segmentation.AddEmptySegment("", segment_name, colour)
            segment = segmentation.GetNthSegment(segmentation.GetNumberOfSegments() - 1)
            segment.SetName(segment_name)
            segment.SetColor(*colour)
    finally:
        scene.RemoveNode(labelmap)


def segmentation_sequence_to_node(segments: Mapping[str, tuple[np.ndarray, tuple]], geometry: Geometry,
                                  index_values: Sequence[float], name: str, index_name: str = "time",
                                  index_unit: str = "s", like: slicer.vtkMRMLSequenceNode | None = None,
                                  scene: slicer.vtkMRMLScene | None = None):
    """A new sequence of segmentation nodes, one per frame, each with the same segments (names, colours).

    segments: segment name -> (masks (t, k, j, i) bool on ``geometry``, (r, g, b) in 0..1), in display order;
    segments may overlap. Index name, unit and values as for :func:`sequence_to_node`.
    """
    scene = _scene(scene)
    node = _new_sequence_node(name, index_name, index_unit, scene)
    for frame, text in enumerate(_index_texts(index_values, like)):
        item = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{name} frame"))
        try:
            _import_masks(item, [(segment_name, masks[frame], colour)
                                 for segment_name, (masks, colour) in segments.items()], geometry, scene)
            node.SetDataNodeAtValue(item, text)
        finally:
            displays = [item.GetNthDisplayNode(i) for i in range(item.GetNumberOfDisplayNodes())]
            for removed in [*displays, item]:
                if removed is not None and removed.GetScene() is scene:
                    scene.RemoveNode(removed)
    place_beside(node, like)
    return node


def segment_colours(node: slicer.vtkMRMLSegmentationNode) -> dict[str, tuple[float, float, float]]:
    """Each segment's (r, g, b) colour in 0..1, keyed by segment name, in the segmentation's order."""
    segmentation = node.GetSegmentation()
    return {segmentation.GetNthSegment(i).GetName(): tuple(segmentation.GetNthSegment(i).GetColor())
            for i in range(segmentation.GetNumberOfSegments())}


# ---------------------------------------------------------------------------------------------- tables, plots


def table_from_node(node: slicer.vtkMRMLTableNode) -> dict[str, np.ndarray]:
    """Columns of a table node as float arrays (non-numeric text becomes NaN), keyed by column name."""
    table = node.GetTable()
    columns = {}
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        values = []
        for r in range(table.GetNumberOfRows()):
            try:  # numeric arrays give floats, string arrays (e.g. a CSV loaded as text) give str
                values.append(float(column.GetValue(r)))
            except (TypeError, ValueError):
                values.append(np.nan)
        columns[column.GetName()] = np.asarray(values, dtype=float)
    return columns


def table_to_node(columns: Mapping[str, Sequence[float]], name: str, beside: slicer.vtkMRMLNode | None = None,
                  units: Mapping[str, str] | None = None, scene: slicer.vtkMRMLScene | None = None):
    """A new table node with one numeric (or text) column per entry; ``units`` per column name."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    for column_name, values in columns.items():
        values = np.asarray(values)
        array = vtk.vtkStringArray() if values.dtype.kind in "OUS" else vtk.vtkDoubleArray()
        array.SetName(column_name)
        for value in values:
            array.InsertNextValue(str(value) if values.dtype.kind in "OUS" else float(value))
        node.AddColumn(array)
        if units and column_name in units:
            node.SetColumnUnitLabel(column_name, units[column_name])
    place_beside(node, beside)
    return node


def plot_chart(table: slicer.vtkMRMLTableNode, x_column: str, y_columns: Sequence[str], title: str,
               x_label: str, y_label: str, scene: slicer.vtkMRMLScene | None = None):
    """A new plot chart with one line series per ``y_columns`` of ``table``, shown when the app has views."""
    scene = _scene(scene)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(title))
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_label)
    chart.SetYAxisTitle(y_label)
    for y_column in y_columns:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(y_column))
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName(x_column)
        series.SetYColumnName(y_column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetUniqueColor()
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    place_beside(chart, table)
    return chart


# ---------------------------------------------------------------------------------------------- markups


def points_to_node(points_ras: np.ndarray, labels: Sequence[str], name: str, beside: slicer.vtkMRMLNode | None = None,
                   scene: slicer.vtkMRMLScene | None = None):
    """A new point-list markups node, one labelled control point per row of ``points_ras`` (n, 3) mm."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    for point, label in zip(np.asarray(points_ras, dtype=float), labels, strict=True):
        node.AddControlPoint(vtk.vtkVector3d(*point), label)
    place_beside(node, beside)
    return node


def line_to_node(start_ras: Sequence[float], end_ras: Sequence[float], name: str,
                 beside: slicer.vtkMRMLNode | None = None, scene: slicer.vtkMRMLScene | None = None):
    """A new markups line (a measurement) between two RAS points in mm."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", scene.GenerateUniqueName(name))
    node.AddControlPoint(vtk.vtkVector3d(*map(float, start_ras)))
    node.AddControlPoint(vtk.vtkVector3d(*map(float, end_ras)))
    place_beside(node, beside)
    return node


def roi_to_node(center_ras: Sequence[float], size_mm: Sequence[float], name: str,
                beside: slicer.vtkMRMLNode | None = None, scene: slicer.vtkMRMLScene | None = None,
                axes: np.ndarray | None = None, description: str = ""):
    """A new markups ROI box (e.g. a detected object) centred at ``center_ras`` with edge lengths ``size_mm``.

    axes: optional 3x3 matrix whose columns are the RAS unit vectors of the box's edges (e.g. an image's
    ``Geometry.directions``, so a box drawn on an oblique image follows its rows and columns); ``size_mm`` is given
    along those columns. Default: edges along R, A, S. description: the node's description (e.g. a confidence).
    """
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GenerateUniqueName(name))
    if axes is not None:
        rotation = np.asarray(axes, dtype=float)
        if np.linalg.det(rotation) < 0:  # a box is symmetric: flip its third edge to keep a rotation
            rotation = rotation * np.array([1.0, 1.0, -1.0])
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        node.SetAndObserveObjectToNodeMatrix(_array_to_matrix(matrix))  # before SetCenter, which it would reset
    node.SetCenter(*map(float, center_ras))
    node.SetSize(*map(float, size_mm))
    if description:
        node.SetDescription(description)
    place_beside(node, beside)
    return node


def text_to_node(text: str, name: str, beside: slicer.vtkMRMLNode | None = None,
                 scene: slicer.vtkMRMLScene | None = None):
    """A new text node holding ``text`` (e.g. a report), placed beside ``beside``."""
    scene = _scene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLTextNode", scene.GenerateUniqueName(name))
    node.SetText(str(text))
    place_beside(node, beside)
    return node


# ---------------------------------------------------------------------------------------------- scene


def place_beside(node: slicer.vtkMRMLNode, beside: slicer.vtkMRMLNode | None) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study, folder) as ``beside``."""
    if beside is None or node.GetScene() is None:
        return
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    anchor = hierarchy.GetItemByDataNode(beside)
    if not anchor:
        return
    parent, item = hierarchy.GetItemParent(anchor), hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # the application's subject-hierarchy plugins normally create the item; without them, do it here
        hierarchy.CreateItem(parent, node)


@contextlib.contextmanager
def scene_transaction(scene: slicer.vtkMRMLScene | None = None) -> Iterator[None]:
    """Remove every node added inside the block when it raises, so a failed run leaves the scene as it was."""
    scene = _scene(scene)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in before]):
            if node.GetScene() is scene:
                scene.RemoveNode(node)
        raise


@contextlib.contextmanager
def temporary_nodes(scene: slicer.vtkMRMLScene | None = None) -> Iterator[None]:
    """Remove every node added inside the block when it ends, whether it succeeds or raises (helper volumes,
    and the display nodes some Slicer calls leave behind). The subject hierarchy node is kept."""
    scene = _scene(scene)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in before]):
            if node.GetScene() is scene and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


# ---------------------------------------------------------------------------------------------- progress


def slicer_progress(progress_bar=None, token: CancelToken | None = None) -> Progress:
    """A :class:`Progress` that drives a ``QProgressBar`` and keeps the application responsive.

    The widget's Cancel button calls ``token.cancel()``; the next progress report then raises ``Cancelled``.
    """

    def update(fraction: float, message: str) -> None:
        if progress_bar is not None:
            progress_bar.value = int(round(100 * fraction))
            progress_bar.setFormat(f"{message} (%p%)" if message else "%p%")
        app = getattr(slicer, "app", None)
        if app is not None:
            app.processEvents()

    return Progress(update, token or CancelToken())


# ---------------------------------------------------------------------------------------------- computations


def compute(job: str, progress: Progress, in_worker: bool = False, **arguments):
    """Run one of the library's computations (a key of :data:`scanai.core.jobs.JOBS`) with ``arguments``.

    in_worker=False: in this process (tests, Python users, the CLI). in_worker=True (the module widgets): in a
    worker process run by Slicer's Python (:func:`scanai.core.jobs.run_worker`), so Slicer's window keeps
    answering (its events are processed at least every 50 ms) and Cancel ends the worker at once; the scene is
    not touched until the result is back.
    """
    from scanai.core import jobs

    if not in_worker:
        return jobs.function_of(job)(**arguments, progress=progress)
    return jobs.run_worker(job, arguments, progress, launch=_launch_worker, idle=slicer.app.processEvents)


def _launch_worker(command: list[str], environment: dict[str, str]):
    """Start the worker with Slicer's own Python (``PythonSlicer``; this interpreter outside Slicer), in Slicer's
    start-up environment with ScanAI's folder on PYTHONPATH, as SlicerMONAIAuto3DSeg launches its inference."""
    import shutil

    from scanai.core.jobs import worker_environment

    python = shutil.which("PythonSlicer") or command[0]
    return slicer.util.launchConsoleProcess([python, *command[1:]], useStartupEnvironment=True,
                                            updateEnvironment=worker_environment(slicer.util.startupEnvironment()))


# ---------------------------------------------------------------------------------------------- sample data


def register_sample_data(module: str, module_file: str, loader) -> None:
    """Add ``module``'s sample (generated on this computer by :mod:`scanai.samples`, never downloaded) to Slicer's
    Sample Data module, category ScanAI, with the module's icon; its button calls ``loader(source)``. Also lets
    ``SampleData.downloadSample(name)`` generate the files (a URL rule, where Sample Data has them)."""
    import SampleData

    from scanai import samples

    logic = SampleData.SampleDataLogic
    logic.registerCustomSampleDataSource(
        **samples.source_arguments(module, samples.sample_folder(slicer.app.cachePath)),
        thumbnailFileName=str(pathlib.Path(module_file).parent / "Resources" / "Icons" / f"{module}.png"),
        customDownloader=loader)
    if hasattr(logic, "registerUrlRewriteRule"):
        logic.registerUrlRewriteRule(samples.CATEGORY, samples.generate_for_url)


def load_sample_data(module: str, source=None) -> tuple[list, list[pathlib.Path]]:
    """Generate ``module``'s sample files when missing and load them with Sample Data (``source``: its registered
    source, default looked up by name); returns (loaded nodes, the sample's files)."""
    import SampleData

    from scanai import samples

    logic = SampleData.SampleDataLogic()
    source = source or logic.sourceForSampleName(samples.SAMPLES[module].sample_name)
    files = samples.write_sample(module, samples.path_of_url(source.uris[0]).parent)
    return logic.downloadFromSource(source), files


# ---------------------------------------------------------------------------------------------- self-tests


def run_test_methods(case) -> None:
    """Slicer's "Reload and Test" for a module's ``*Test`` case: every ``test_*`` method, each after ``setUp``.

    A method that raises ``unittest.SkipTest`` (e.g. real data absent) is logged and the others still run.
    """
    import logging
    import unittest

    for name in sorted(n for n in dir(case) if n.startswith("test_")):
        case.setUp()
        try:
            getattr(case, name)()
        except unittest.SkipTest as reason:
            logging.info(f"{type(case).__name__}.{name} skipped: {reason}")


# ---------------------------------------------------------------------------------------------- requirements

def read_requirements(path: pathlib.Path) -> list:
    """The requirements of a module's ``Resources/requirements.txt`` (``packaging`` Requirement objects; comments
    and blank lines skipped)."""
    from packaging.requirements import Requirement

    lines = (line.split("#")[0].strip() for line in pathlib.Path(path).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def missing_requirements(requirements: Sequence) -> list:
    """The requirements whose distribution is not installed at a version they accept."""
    import importlib.metadata

    missing = []
    for requirement in requirements:
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(requirement)
    return missing


def ensure_requirements(path: pathlib.Path, names: Sequence[str] | None = None, requester: str = "ScanAI") -> None:
    """Make a module's requirements (``path``: its ``Resources/requirements.txt``; only the distributions
    ``names`` of it when given) installed, asking the user first and never at import: ``slicer.packaging.pip_ensure``
    (its own dialog and progress) on Slicer >= 5.11, a confirmation and ``slicer.util.pip_install`` on 5.10.
    Nothing is asked when they are all there. ScanAIError when the user declines."""
    from scanai.core.errors import ScanAIError

    wanted = {name.lower() for name in names} if names is not None else None
    requirements = [r for r in read_requirements(path) if wanted is None or r.name.lower() in wanted]
    missing = missing_requirements(requirements)
    if not missing:
        return
    declined = ScanAIError(_("{requester} needs Python packages that are not installed: {packages}.").format(
        requester=requester, packages=", ".join(str(r) for r in missing)),
        _("Click Apply again and accept the installation, or install them from the Python console with "
          "slicer.util.pip_install()."))
    try:
        import slicer.packaging as packaging
    except ImportError:  # Slicer 5.10
        packaging = None
    if packaging is not None:
        try:
            packaging.pip_ensure(missing, requester=requester)
        except RuntimeError as error:
            if "declined" in str(error):
                raise declined from error
            raise
        return
    if not slicer.util.confirmOkCancelDisplay(_("{requester} needs these Python packages, which are not installed "
                                                "yet:\n{packages}\n\nInstall them now?").format(
                                                  requester=requester, packages="\n".join(str(r) for r in missing))):
        raise declined
    slicer.util.pip_install(" ".join(f'"{r}"' for r in missing))


#: The torch versions ScanAI's shipped networks are tested with (asked of the PyTorch extension's installer).
TORCH_REQUIREMENT = ">=2.0"


def install_torch_or_classical(method: str, classical: str) -> str:
    """Ask the user, when PyTorch is missing, whether to install it (through the PyTorch extension, as
    SlicerTotalSegmentator does) or to run the classical method instead. Returns "torch" (installed), "classical"
    or "cancel". ``method`` / ``classical`` name the two methods in the question."""
    import qt

    answer = slicer.util.messageBox(
        _("The {method} needs PyTorch, which is not installed in Slicer yet.\n\n"
          "Yes: install PyTorch now through the PyTorch extension (a large download; Slicer may need a restart).\n"
          "No: use the {classical} instead (no PyTorch needed).\nCancel: do nothing.").format(
              method=method, classical=classical),
        windowTitle=_("ScanAI: PyTorch is not installed"),
        standardButtons=qt.QMessageBox.Yes | qt.QMessageBox.No | qt.QMessageBox.Cancel)
    if answer == qt.QMessageBox.No:
        return "classical"
    if answer != qt.QMessageBox.Yes:
        return "cancel"
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                          torchVersionRequirement=TORCH_REQUIREMENT)
    return "torch" if torch is not None else "cancel"


def selected_file(path: pathlib.Path | None) -> pathlib.Path | None:
    """The path a path box holds when it names an existing file, else None. (An empty box reads as ``Path()``, the
    current folder, which exists: only a file counts as chosen.)"""
    return path if path is not None and path.is_file() else None


# ---------------------------------------------------------------------------------------------- module widgets


class ModuleWidgetMixin:
    """The behaviour the four ScanAI module widgets share, on top of Slicer's ScriptedLoadableModuleWidget.

    The module's widget class inherits ``(ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin)``
    (the mixin first, so that its ``cleanup``, ``enter`` and ``exit`` replace the base class's empty ones), sets
    ``self.logic`` and implements:

    - ``missingInputs(parameterNode) -> str``: why Apply cannot run yet ("" when it can);
    - ``process(parameterNode, progress) -> str``: run the logic, return a one-line summary for the status;
    - ``classicalAlternative(parameterNode) -> (parameter, value) | None``: when the chosen method needs PyTorch,
      the parameter and value that select the module's classical method instead (None when it needs no PyTorch);
    - optionally ``requiredPackages(parameterNode)``: which distributions of its ``Resources/requirements.txt``
      (what it needs beyond Slicer's own Python) this run needs, when that depends on the input.

    Its ``.ui`` file must hold ``applyButton``, ``cancelButton``, ``progressBar`` and ``statusLabel``. Errors are
    shown with ``slicer.util.tryWithErrorDisplay``; the logic runs inside :func:`scene_transaction`, so a failure
    or a Cancel leaves no partial output.
    """

    def requiredPackages(self, parameterNode) -> tuple[str, ...] | None:
        """The distributions of ``Resources/requirements.txt`` this run needs (None: all of them)."""
        return None

    def setupWidget(self, uiFileName: str) -> None:
        """Load the .ui, bind the common buttons, observe scene close, create the parameter node; the logic's
        computations run in a worker process from now on (:func:`compute`)."""
        self.logic.runInWorker = True
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{uiFileName}"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelToken = None
        self._observedInputs: list = []
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Slicer unloads the module (e.g. Reload): unbind the GUI and remove every observer."""
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()
        else:
            self._observeInputs([])

    def _observeInputs(self, nodes: list) -> None:
        """Observe exactly ``nodes`` (the selected input nodes), so that Apply is re-checked when one of them
        changes (e.g. a sequence that gets its frames after it was selected)."""
        observed = self._observedInputs
        for node in [n for n in observed if n not in nodes]:
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        for node in [n for n in nodes if n not in observed]:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._observedInputs = list(nodes)

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._parameterNode:
            values = (getattr(self._parameterNode, name) for name in self._parameterNode.allParameters)
            self._observeInputs([value for value in values if isinstance(value, slicer.vtkMRMLNode)])
        reason = self.missingInputs(self._parameterNode) if self._parameterNode else _("No parameter node.")
        running = self._cancelToken is not None
        self.ui.applyButton.enabled = not reason and not running
        self.ui.applyButton.toolTip = reason or _("Run with the selected inputs.")

    def onCancelButton(self) -> None:
        if self._cancelToken is not None:
            self._cancelToken.cancel()
            self.ui.statusLabel.text = _("Cancelling…")

    def _torchOrClassical(self) -> bool:
        """When the chosen method needs PyTorch and Slicer has none: install it or switch to the classical method,
        as the user chooses (:func:`install_torch_or_classical`). False when the user cancels."""
        alternative = self.classicalAlternative(self._parameterNode)
        if alternative is None or torch_available():
            return True
        name, classical = alternative
        choice = install_torch_or_classical(_("{method} method").format(method=getattr(self._parameterNode, name)),
                                            _("classical method ({method})").format(method=classical))
        if choice == "classical":
            setattr(self._parameterNode, name, classical)
        return choice != "cancel"

    def onApplyButton(self) -> None:
        from scanai.core.errors import Cancelled

        self._cancelToken = CancelToken()
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Running…")
        try:
            with slicer.util.tryWithErrorDisplay(_("ScanAI could not complete the computation."), waitCursor=True):
                ensure_requirements(self.resourcePath("requirements.txt"), self.requiredPackages(self._parameterNode),
                                    self.moduleName)
                try:
                    if not self._torchOrClassical():
                        raise Cancelled()
                    summary = self.process(self._parameterNode, slicer_progress(self.ui.progressBar, self._cancelToken))
                    self.ui.statusLabel.text = summary or _("Done.")
                except Cancelled:
                    self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
        finally:
            self._cancelToken = None
            self.ui.cancelButton.enabled = False
            self.ui.progressBar.visible = False
            self._checkCanApply()
