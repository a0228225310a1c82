"""The shared widget behaviour (scanai.mrml.ModuleWidgetMixin) on real parameter nodes and a real scene.

Qt is not available here, so the .ui objects are small stand-ins with the properties the mixin touches; the
parameter node, its observers, the logic and the scene are real.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import slicer_harness

scene = slicer_harness.install()

import slicer  # noqa: E402

from scanai import mrml  # noqa: E402


class _Control:
    def __init__(self) -> None:
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.text = ""
        self.value = 0
        self.formats: list[str] = []
        self.on_format = None

    def setFormat(self, text: str) -> None:
        self.formats.append(text)
        if self.on_format is not None:
            self.on_format()


def _widget(name: str):
    module = slicer_harness.load_module(name)
    widget = module.__dict__[f"{name}Widget"](types.SimpleNamespace(isEntered=True))
    widget.logic = module.__dict__[f"{name}Logic"]()
    widget.ui = types.SimpleNamespace(applyButton=_Control(), cancelButton=_Control(), progressBar=_Control(),
                                      statusLabel=_Control())
    widget._parameterNode = widget._parameterNodeGuiTag = widget._cancelToken = None
    widget.initializeParameterNode()
    return widget


@pytest.fixture
def pet_inputs():
    from scanai.pet.phantom import pet_phantom

    scene.Clear(0)
    phantom = pet_phantom(shape=(1, 16, 16))
    sequence = mrml.sequence_to_node(phantom.sequence, "PET")
    table = mrml.table_to_node({"time_s": phantom.input_function.t_s, "Cp": phantom.input_function.activity}, "Cp")
    return sequence, table


def test_apply_is_enabled_only_with_valid_inputs(pet_inputs):
    sequence, table = pet_inputs
    widget = _widget("ParametricPET")
    assert not widget.ui.applyButton.enabled and "sequence" in widget.ui.applyButton.toolTip
    widget._parameterNode.inputSequence = sequence  # a parameter change re-checks through the node's observer
    assert not widget.ui.applyButton.enabled and "input function" in widget.ui.applyButton.toolTip
    widget._parameterNode.inputFunctionTable = table
    assert widget.ui.applyButton.enabled


def test_apply_runs_with_progress_and_reports(pet_inputs):
    sequence, table = pet_inputs
    widget = _widget("ParametricPET")
    widget._parameterNode.inputSequence, widget._parameterNode.inputFunctionTable = sequence, table
    widget.onApplyButton()
    assert widget.ui.progressBar.formats, "no progress was shown"
    assert widget.ui.statusLabel.text.startswith("Patlak maps computed")
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled and not widget.ui.progressBar.visible
    assert scene.GetFirstNodeByName("PET Patlak Ki (1/min)") is not None


def test_cancel_stops_the_run_and_leaves_the_scene_as_it_was(pet_inputs):
    sequence, table = pet_inputs
    widget = _widget("ParametricPET")
    widget._parameterNode.inputSequence, widget._parameterNode.inputFunctionTable = sequence, table
    widget.ui.progressBar.on_format = widget.onCancelButton  # the user clicks Cancel at the first progress report
    before = scene.GetNumberOfNodes()
    widget.onApplyButton()
    assert widget.ui.statusLabel.text.startswith("Cancelled")
    assert scene.GetNumberOfNodes() == before
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled


def test_failed_run_propagates_a_clear_error_and_adds_nothing(pet_inputs):
    from scanai.core.errors import InputError

    sequence, _table = pet_inputs
    widget = _widget("ParametricPET")
    bad_table = mrml.table_to_node({"Cp": [0.0, 1.0, 2.0]}, "no time")
    widget._parameterNode.inputSequence, widget._parameterNode.inputFunctionTable = sequence, bad_table
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="time column"):  # Slicer's tryWithErrorDisplay shows this message
        widget.onApplyButton()
    assert scene.GetNumberOfNodes() == before
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled


def test_motion_widget_picks_the_first_sequence_and_checks_the_reference():
    from scanai.motion.phantom import smooth_motion_phantom

    scene.Clear(0)
    sequence, _truth = smooth_motion_phantom(n_frames=3, shape=(1, 48, 48), amplitude_px=2.0)
    node = mrml.sequence_to_node(sequence, "cine")
    widget = _widget("MotionCorrection")
    assert widget._parameterNode.inputSequence is node
    widget._parameterNode.referenceFrame = 5
    assert not widget.ui.applyButton.enabled and "between 1 and 3" in widget.ui.applyButton.toolTip
    widget._parameterNode.referenceFrame = 2
    assert widget._parameterNode.method == "network"  # the default; the classical method keeps this test fast
    widget._parameterNode.method = "demons"
    widget.onApplyButton()
    assert "Registered 3 frames" in widget.ui.statusLabel.text
    warped = scene.GetFirstNodeByName("cine motion-compensated")
    assert np.allclose(slicer.util.arrayFromVolume(warped.GetNthDataNode(1)), sequence.frames[1])


def test_motion_widget_with_a_segmentation_reports_peak_strain_and_gates_outputs():
    from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom

    scene.Clear(0)
    sequence, _truth = smooth_motion_phantom(n_frames=4, shape=(1, 48, 48), amplitude_px=2.0)
    node = mrml.sequence_to_node(sequence, "cine")
    labels = myocardium_mask(sequence, 0, amplitude_px=2.0).astype(np.uint8)
    segmentation = mrml.segmentation_from_labels(labels, sequence.geometry, {1: ("Myocardium", (1.0, 0.5, 0.0))},
                                                 "heart")
    widget = _widget("MotionCorrection")
    p = widget._parameterNode
    assert p.inputSequence is node
    p.method, p.inputSegmentation = "demons", segmentation
    for output in ("createWarped", "createTransforms", "createJacobian", "createStrain"):
        setattr(p, output, False)
    assert widget.ui.applyButton.enabled  # the propagated segmentation is still asked for
    p.createPropagated = False
    assert not widget.ui.applyButton.enabled and "at least one output" in widget.ui.applyButton.toolTip
    p.createStrain = True
    widget.onApplyButton()
    assert "Peak GCS" in widget.ui.statusLabel.text, widget.ui.statusLabel.text
    assert scene.GetFirstNodeByName("cine motion table") is not None
    assert scene.GetFirstNodeByName("cine motion") is None  # transforms were not asked for
