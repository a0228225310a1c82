"""Tables, plot charts, markups (points, lines, ROIs) and text nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import slicer
import vtk

from scanai.mrml.nodes import _array_to_matrix, _scene, place_beside

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


