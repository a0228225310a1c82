"""Volumes, sequences, transforms and the scene: MRML nodes <-> :mod:`scanai.core.image` data; every ``*_to_node``
function creates new nodes beside the input and never modifies it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence

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


# ---------------------------------------------------------------------------------------------- scene

#: Node attribute of a result: "true" when the method that made it is validated on simulated data only.
EXPERIMENTAL_ATTRIBUTE = "ScanAI.Experimental"


def mark_experimental(node: slicer.vtkMRMLNode, experimental: bool) -> None:
    """Say on a result ``node`` whether its method is validated on simulated data only (validated on real data, or
    withheld): :data:`EXPERIMENTAL_ATTRIBUTE`, and " (experimental)" after its name, so the data tree says it too."""
    node.SetAttribute(EXPERIMENTAL_ATTRIBUTE, "true" if experimental else "false")
    if experimental:
        node.SetName(f"{node.GetName()} (experimental)")


def is_experimental(node: slicer.vtkMRMLNode) -> bool:
    """Whether ``node`` was marked by :func:`mark_experimental` as coming from a simulation-only method."""
    return node.GetAttribute(EXPERIMENTAL_ATTRIBUTE) == "true"


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


