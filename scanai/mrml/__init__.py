"""The one Slicer-facing adapter: MRML nodes <-> :mod:`scanai.core.image` data, results -> nodes, and the widget
behaviour the four modules share.

This package is the only part of :mod:`scanai` that imports ``slicer``, ``vtk``, ``qt`` or ``ctk``
(``Testing/core/test_import_graph.py`` holds it to that); the four module files call it as ``mrml.<name>`` to turn their
input nodes into arrays with geometry and the library's results into new nodes placed beside the input in the
subject hierarchy. Every ``*_to_node`` function creates new nodes and never modifies its input.

- :mod:`~scanai.mrml.nodes`: volumes, sequences, transforms, the scene (subject hierarchy, transactions);
- :mod:`~scanai.mrml.segmentations`: segmentations <-> label maps and masks;
- :mod:`~scanai.mrml.annotations`: tables, plot charts, markups, text;
- :mod:`~scanai.mrml.widgets`: progress and Cancel, worker computations, requirements and PyTorch, sample data,
  self-tests, :class:`~scanai.mrml.widgets.ModuleWidgetMixin`.
"""

from scanai.mrml.annotations import (
           line_to_node,
           plot_chart,
           points_to_node,
           roi_to_node,
           table_from_node,
           table_to_node,
           text_to_node,
)
from scanai.mrml.nodes import (
           attach_to_browser,
           displacement_from_grid_transform,
           first_volume_sequence,
           format_index_value,
           geometry_of_node,
           grid_transform,
           is_experimental,
           mark_experimental,
           module_logic,
           place_beside,
           scene_transaction,
           sequence_from_node,
           sequence_to_node,
           set_colour_map,
           temporary_nodes,
           transform_sequence_to_node,
           volume_from_node,
           volume_to_node,
)
from scanai.mrml.segmentations import (
           check_segmentation_on_grid,
           labels_from_segmentation,
           segment_colours,
           segmentation_from_labels,
           segmentation_from_masks,
           segmentation_sequence_to_node,
)
from scanai.mrml.widgets import (
           TORCH_REQUIREMENT,
           ModuleWidgetMixin,
           compute,
           ensure_requirements,
           install_torch_or_classical,
           load_sample_data,
           missing_requirements,
           read_requirements,
           register_sample_data,
           run_test_methods,
           selected_file,
           slicer_progress,
)

__all__ = ["TORCH_REQUIREMENT", "ModuleWidgetMixin", "attach_to_browser", "check_segmentation_on_grid", "compute",
           "displacement_from_grid_transform", "ensure_requirements", "first_volume_sequence", "format_index_value",
           "geometry_of_node", "grid_transform", "install_torch_or_classical", "is_experimental",
           "labels_from_segmentation", "line_to_node", "load_sample_data", "mark_experimental", "missing_requirements",
           "module_logic", "place_beside", "plot_chart", "points_to_node", "read_requirements", "register_sample_data",
           "roi_to_node", "run_test_methods", "scene_transaction", "segment_colours", "segmentation_from_labels",
           "segmentation_from_masks", "segmentation_sequence_to_node", "selected_file", "sequence_from_node",
           "sequence_to_node", "set_colour_map", "slicer_progress", "table_from_node", "table_to_node",
           "temporary_nodes", "text_to_node", "transform_sequence_to_node", "volume_from_node", "volume_to_node"]
