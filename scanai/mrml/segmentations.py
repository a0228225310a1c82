"""Segmentation nodes <-> label maps and masks on a volume's grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import slicer
import vtk

from scanai.core.image import Geometry
from scanai.mrml.nodes import (
    _fill_volume_node,
    _index_texts,
    _matrix_to_array,
    _new_sequence_node,
    _scene,
    module_logic,
    place_beside,
)

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


