"""The four module widgets as Slicer runs them: built from their .ui, bound through Slicer's real parameterNodeWrapper
connectors, entered, left, reloaded, and run from Apply with progress, Cancel, errors and the PyTorch choice.

Slicer's Python layer is real (``../shared/slicer-python``); only the Qt/CTK/qMRML widget classes stand in
(:mod:`qt_standins`). A click is ``button.click()``; typing into a box is setting its value, as a user would.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import replace

import numpy as np
import pytest
import slicer_harness

scene = slicer_harness.install()

import qt  # noqa: E402  (the stand-in installed by the harness)
import slicer  # noqa: E402

from scanai import mrml  # noqa: E402
from scanai.mrml import widgets  # noqa: E402

MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]


def _fresh_scene() -> None:
    """An empty scene without the modules' parameter nodes (Clear(0) keeps singletons)."""
    scene.Clear(0)
    for name in MODULES:
        leftover = scene.GetSingletonNode(name, "vtkMRMLScriptedModuleNode")
        if leftover is not None:
            scene.RemoveNode(leftover)


@pytest.fixture(autouse=True)
def no_installs(monkeypatch):
    """No test installs a package: a pip install that the tests do not expect fails the test."""

    def refuse(requirements, *args, **kwargs):
        raise AssertionError(f"a test tried to pip-install {requirements}")

    monkeypatch.setattr(slicer.util, "pip_install", refuse)


@pytest.fixture
def open_widget():
    """Opens module widgets on an empty scene; unloads them afterwards (as Slicer's Reload does)."""
    opened = []

    def make(name: str):
        widget = slicer_harness.open_widget(name)
        opened.append(name)
        return widget

    _fresh_scene()
    yield make
    for name in opened:
        slicer_harness.unload_module(name)
    slicer.app.on_events = None


def _parameter_widgets(widget) -> dict:
    return {w.property("SlicerParameterName"): w for w in vars(widget.ui).values()
            if hasattr(w, "property") and w.property("SlicerParameterName")}


# ---------------------------------------------------------------------------------------------- binding


def _choices(node, parameter: str) -> list | None:
    """The Choice values of a parameter, or None."""
    _base, *extras = typing.get_args(node.allParameters[parameter].unalteredType) or (None,)
    return next((extra.choices for extra in extras if hasattr(extra, "choices")), None)


def _shown(control):
    """What a control shows, in the parameter's terms (None for node selectors and path boxes)."""
    if isinstance(control, qt.QAbstractButton):
        return control.checked
    if isinstance(control, qt.QComboBox):
        return control.currentIndex
    if isinstance(control, qt.QAbstractSpinBox):
        return control.value
    return None


def _edit(control, choices: list | None):
    """Change a control as a user would; returns the value its parameter should then hold (None: not editable)."""
    if isinstance(control, qt.QAbstractButton):
        control.click()
        return control.checked
    if isinstance(control, qt.QComboBox):
        control.currentIndex = (control.currentIndex + 1) % control.count
        return choices[control.currentIndex]
    if isinstance(control, qt.QAbstractSpinBox):
        control.value = control.minimum if control.value != control.minimum else control.maximum
        return control.value
    return None


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_is_bound_both_ways(name, open_widget):
    """Each ``SlicerParameterName`` of the .ui names a parameter, and every parameter has a control; editing a
    control changes its parameter, and setting the parameter back changes the control back (Slicer's own
    connectors on the stand-in widgets)."""
    widget = open_widget(name)
    node = widget._parameterNode
    controls = _parameter_widgets(widget)
    assert set(controls) == set(node.allParameters)
    for parameter, control in controls.items():
        before, shown = getattr(node, parameter), _shown(control)
        expected = _edit(control, _choices(node, parameter))
        if expected is None:
            continue
        assert getattr(node, parameter) == pytest.approx(expected), parameter
        setattr(node, parameter, before)
        assert _shown(control) == shown, parameter


@pytest.mark.parametrize("name", MODULES)
def test_leaving_closing_the_scene_and_reloading(name, open_widget):
    """exit() unbinds the GUI, enter() binds it again; a scene close makes a new parameter node and binds it while
    the module is shown; Slicer's unload signal reaches ``cleanup``, which removes every observer."""
    widget = open_widget(name)
    box = next(w for w in _parameter_widgets(widget).values() if isinstance(w, qt.QCheckBox))
    parameter = box.property("SlicerParameterName")
    slicer_harness.close_widget(widget)
    before = getattr(widget.logic.getParameterNode(), parameter)
    box.click()
    assert getattr(widget.logic.getParameterNode(), parameter) == before  # not bound while the module is left
    widget.parent.isEntered = True
    widget.enter()
    box.click()
    assert getattr(widget._parameterNode, parameter) == box.checked
    scene.Clear(0)  # File > Close scene: unbound at the start, bound again to the reset parameter node at the end
    default = widget._parameterNode.allParameters[parameter].default.value
    assert getattr(widget._parameterNode, parameter) == default and box.checked == default
    box.click()
    assert getattr(widget._parameterNode, parameter) == box.checked
    assert widget.Observations
    slicer_harness.unload_module(name)
    assert widget.Observations == [] and widget._parameterNode is None  # cleanup ran (it was unreachable before)


# ---------------------------------------------------------------------------------------------- Apply: when and why


def test_pet_apply_needs_a_pet_input(open_widget):
    """An empty path box reads as Path(), i.e. the current folder, which exists: it is not a PET file."""
    from scanai.pet.phantom import pet_phantom

    widget = open_widget("ParametricPET")
    assert not widget.ui.applyButton.enabled and "dynamic PET" in widget.ui.applyButton.toolTip
    phantom = pet_phantom(shape=(1, 8, 8))
    sequence = mrml.sequence_to_node(phantom.sequence, "PET")
    p = widget._parameterNode
    assert p.inputSequence is None  # its selector allows none: nothing is picked for the user
    widget.ui.inputSequenceSelector.setCurrentNode(sequence)
    assert p.inputSequence is sequence and "input function table" in widget.ui.applyButton.toolTip
    p.inputFunctionSource = "blood pool"
    assert "blood pool" in widget.ui.applyButton.toolTip
    p.inputFunctionSource = "table"
    table = mrml.table_to_node({"time_s": phantom.input_function.t_s, "Cp": phantom.input_function.activity}, "Cp")
    widget.ui.inputFunctionSelector.setCurrentNode(table)
    assert p.inputFunctionTable is table and widget.ui.applyButton.enabled
    p.method = "Network (short scan)"
    p.windowStartMin, p.windowEndMin = 30.0, 20.0
    assert "window must end after it starts" in widget.ui.applyButton.toolTip
    p.windowStartMin, p.windowEndMin = 30.0, 50.0
    widget.ui.methodComboBox.currentText = "SRTM"  # a reference-region model: a reference segment, no blood input
    assert p.method == "SRTM" and "reference region" in widget.ui.applyButton.toolTip
    reference = mrml.segmentation_from_labels(phantom.labels.array, phantom.labels.geometry,
                                              {1: ("cerebellum", (0.2, 0.6, 0.9))}, "reference")
    widget.ui.referenceRegionSelector.setCurrentNode(reference)
    assert p.referenceSegmentation is reference and widget.ui.applyButton.enabled


def test_motion_apply_reasons_and_volume_sequences_only(open_widget):
    from scanai.motion.phantom import smooth_motion_phantom

    transforms = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "transforms")
    transforms.SetDataNodeAtValue(slicer.vtkMRMLLinearTransformNode(), "0")
    widget = open_widget("MotionCorrection")
    p = widget._parameterNode
    assert mrml.first_volume_sequence() is None and "Select a cine" in widget.ui.applyButton.toolTip
    sequence, _truth = smooth_motion_phantom(n_frames=3, shape=(1, 32, 32), amplitude_px=1.0)
    p.inputSequence = mrml.sequence_to_node(replace(sequence, frames=sequence.frames[:1], index_values=(0.0,)), "1")
    assert "at least 2 frames" in widget.ui.applyButton.toolTip
    cine = mrml.sequence_to_node(sequence, "cine")
    p.inputSequence = cine
    p.referenceFrame = 5
    assert "between 1 and 3" in widget.ui.applyButton.toolTip
    p.referenceFrame = 0  # end-diastole found automatically: the segmentation's frame must be said
    p.inputSegmentation = mrml.segmentation_from_labels(np.ones((1, 32, 32), dtype=np.uint8), sequence.geometry,
                                                        {1: ("LV blood pool", (0.9, 0.1, 0.1))}, "cavity")
    assert "which frame the segmentation was drawn" in widget.ui.applyButton.toolTip
    p.inputSegmentation = None
    p.referenceFrame = 1
    for output in ("createWarped", "createTransforms", "createJacobian", "createStrain", "createPropagated"):
        setattr(p, output, False)
    assert "at least one output" in widget.ui.applyButton.toolTip
    p.task = "artifact"
    assert widget.ui.applyButton.enabled
    assert [widget.ui.methodComboBox.itemText(i) for i in range(widget.ui.methodComboBox.count)][0].startswith(
        "Multi-pair network")


def test_chest_and_kspace_apply_reasons(open_widget, tmp_path):
    chest = open_widget("ChestQC")
    assert not chest.ui.applyButton.enabled and "radiograph" in chest.ui.applyButton.toolTip
    missing = tmp_path / "none.dcm"
    chest.ui.inputPathLineEdit.currentPath = str(missing)
    assert chest._parameterNode.inputPath == missing and not chest.ui.applyButton.enabled
    chest.ui.inputPathLineEdit.currentPath = str(_chest_file(tmp_path))
    assert chest.ui.applyButton.enabled
    kspace = open_widget("KSpaceCalibration")
    assert not kspace.ui.applyButton.enabled and "k-space file" in kspace.ui.applyButton.toolTip


# ---------------------------------------------------------------------------------------------- Apply: running


def _pet_inputs():
    from scanai.pet.phantom import pet_phantom

    phantom = pet_phantom(shape=(1, 16, 16))
    sequence = mrml.sequence_to_node(phantom.sequence, "PET")
    table = mrml.table_to_node({"time_s": phantom.input_function.t_s, "Cp": phantom.input_function.activity}, "Cp")
    return sequence, table


def _chest_file(tmp_path):
    from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom

    return write_phantom_dicom(make_chest_phantom(size=256, spacing_mm=1.4), tmp_path / "chest.dcm")


def _prepare(name: str, widget, tmp_path) -> str:
    """Inputs for a quick real run of each module through its GUI; returns the name of a node it must add."""
    p = widget._parameterNode
    if name == "ParametricPET":
        p.inputSequence, p.inputFunctionTable = _pet_inputs()
        return "PET Patlak Ki (1/min)"
    if name == "MotionCorrection":
        from scanai.motion.phantom import smooth_motion_phantom

        sequence, _truth = smooth_motion_phantom(n_frames=3, shape=(1, 32, 32), amplitude_px=1.0)
        p.inputSequence = mrml.sequence_to_node(sequence, "cine")
        widget.ui.methodComboBox.currentIndex = 2  # Demons (SimpleITK)
        return "cine motion-compensated"
    if name == "ChestQC":
        _set_path(widget, _chest_file(tmp_path))
        widget.ui.backendComboBox.currentIndex = 1  # classical
        return "chest quality tests"
    volume = mrml.volume_to_node(_phantom_volume(), "knee")
    p.inputVolume = volume
    return "knee spikes"


def _set_path(widget, path) -> None:
    _parameter_widgets(widget)["inputPath"].currentPath = str(path)  # the user picks the file


def _phantom_volume():
    from scanai.core.image import Volume

    rows = np.linspace(-1, 1, 64)
    return Volume((np.add.outer(rows**2, rows**2) < 0.5).astype(np.float32)[None] * 100.0)


@pytest.mark.parametrize("name", MODULES)
def test_apply_from_the_gui_shows_progress_and_adds_the_results(name, open_widget, tmp_path):
    widget = open_widget(name)
    expected = _prepare(name, widget, tmp_path)
    assert widget.ui.applyButton.enabled, widget.ui.applyButton.toolTip
    events = slicer.app.events
    widget.ui.applyButton.click()
    assert widget.ui.progressBar.formats and slicer.app.events > events, "no progress was shown"
    assert widget.ui.statusLabel.text and not widget.ui.statusLabel.text.startswith(("Running", "Cancelled"))
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled and not widget.ui.progressBar.visible
    assert scene.GetFirstNodeByName(expected) is not None, [scene.GetNthNode(i).GetName()
                                                             for i in range(scene.GetNumberOfNodes())]


@pytest.mark.parametrize("name", MODULES)
def test_cancel_from_the_gui_leaves_the_scene_as_it_was(name, open_widget, tmp_path):
    widget = open_widget(name)
    _prepare(name, widget, tmp_path)
    before = scene.GetNumberOfNodes()
    slicer.app.on_events = widget.ui.cancelButton.click  # the user clicks Cancel as soon as the GUI answers
    widget.ui.applyButton.click()
    slicer.app.on_events = None
    assert widget.ui.statusLabel.text.startswith("Cancelled")
    assert scene.GetNumberOfNodes() == before
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled


def test_a_failed_run_shows_the_error_and_adds_nothing(open_widget):
    sequence, _table = _pet_inputs()
    widget = open_widget("ParametricPET")
    p = widget._parameterNode
    p.inputSequence, p.inputFunctionTable = sequence, mrml.table_to_node({"Cp": [0.0, 1.0, 2.0]}, "no time")
    before = scene.GetNumberOfNodes()
    with slicer_harness.dialogs() as shown, pytest.raises(Exception, match="time column"):
        widget.ui.applyButton.click()
    assert len(shown) == 1 and "could not complete" in shown[0]["text"] and "time column" in shown[0]["text"]
    assert scene.GetNumberOfNodes() == before
    assert widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled


def test_pet_runs_from_a_chosen_file(open_widget, tmp_path):
    from scanai.pet.dynamic import DynamicPet
    from scanai.pet.phantom import pet_phantom
    from scanai.pet.study import write_dynamic_pet

    phantom = pet_phantom(shape=(1, 8, 8))
    image, _sidecar = write_dynamic_pet(DynamicPet(phantom.sequence, phantom.timing, unit="kBq/mL"),
                                        tmp_path / "study.nii.gz")
    widget = open_widget("ParametricPET")
    _set_path(widget, image)
    table = mrml.table_to_node({"time_s": phantom.input_function.t_s, "Cp": phantom.input_function.activity}, "Cp")
    widget.ui.inputFunctionSelector.setCurrentNode(table)
    widget.ui.applyButton.click()
    assert widget._parameterNode.inputSequence.GetName() == "study"  # loaded, then selected for the next run
    assert widget.ui.statusLabel.text.startswith("Patlak maps computed")


def test_motion_strain_and_artifact_tasks_from_the_gui(open_widget):
    from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom

    sequence, _truth = smooth_motion_phantom(n_frames=4, shape=(1, 48, 48), amplitude_px=2.0)
    cine = mrml.sequence_to_node(sequence, "cine")
    labels = myocardium_mask(sequence, 0, amplitude_px=2.0).astype(np.uint8)
    segmentation = mrml.segmentation_from_labels(labels, sequence.geometry, {1: ("Myocardium", (1.0, 0.5, 0.0))},
                                                 "heart")
    widget = open_widget("MotionCorrection")
    p = widget._parameterNode
    assert p.inputSequence is cine and mrml.first_volume_sequence() is cine  # a volume sequence is picked
    p.method, p.inputSegmentation, p.segmentationFrame = "demons", segmentation, 1  # reference: found automatically
    widget.ui.applyButton.click()
    assert "Peak GCS" in widget.ui.statusLabel.text, widget.ui.statusLabel.text
    assert "end-diastole by the largest LV cavity" in widget.ui.statusLabel.text, widget.ui.statusLabel.text
    phases, ecg, _sequence, _truth = slicer_harness.load_module("MotionCorrection").MotionCorrectionTest(
    )._phaseSequenceNode()
    p.task, p.inputSequence, p.ecgTable, p.artifactMethod, p.windowSeconds = "artifact", phases, ecg, "mean", 0.15
    widget.ui.applyButton.click()
    assert "%" in widget.ui.statusLabel.text and scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()


@pytest.mark.parametrize("slicer_5_10", [False, True], ids=["slicer.packaging", "Slicer 5.10"])
def test_missing_packages_are_asked_for_and_installed_or_refused(slicer_5_10, open_widget, monkeypatch, tmp_path):
    """A module whose requirements.txt names a package Slicer lacks asks before installing it (slicer.packaging's
    pip_ensure, or a confirmation and pip_install on 5.10); declining leaves a clear error; nothing is asked for
    the packages a run does not need."""
    installed = []
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("scanai-absent-package>=1  # a package no Slicer has\n")
    widget = open_widget("KSpaceCalibration")
    monkeypatch.setattr(widget, "resourcePath", lambda name: str(requirements))
    monkeypatch.setattr(widget, "requiredPackages", lambda node: None)
    monkeypatch.setattr(widget, "process", lambda node, progress: "ran")
    widget._parameterNode.inputVolume = mrml.volume_to_node(_phantom_volume(), "volume")
    if slicer_5_10:
        monkeypatch.delattr(slicer, "packaging")
        monkeypatch.setitem(sys.modules, "slicer.packaging", None)
        monkeypatch.setattr(slicer.util, "pip_install", installed.append)
    else:
        monkeypatch.setattr(slicer.packaging, "pip_install", lambda reqs, **options: installed.append(reqs))
        monkeypatch.setattr(slicer.packaging, "_find_updated_imported_packages", lambda before, after: [])
    with slicer_harness.dialogs(qt.QMessageBox.Cancel) as shown, pytest.raises(Exception, match="not installed"):
        widget.ui.applyButton.click()
    assert "scanai-absent-package>=1" in str(shown[0]) and installed == []
    with slicer_harness.dialogs(qt.QMessageBox.Ok):
        widget.ui.applyButton.click()
    assert "scanai-absent-package>=1" in str(installed) and widget.ui.statusLabel.text == "ran"
    monkeypatch.setattr(widget, "requiredPackages", lambda node: ())  # this run needs none of them
    with slicer_harness.dialogs(qt.QMessageBox.Cancel) as shown:
        widget.ui.applyButton.click()
    assert shown == [] and widget.ui.statusLabel.text == "ran"


# ---------------------------------------------------------------------------------------------- PyTorch missing


@pytest.fixture
def without_torch(monkeypatch):
    """Slicer as installed, before the PyTorch extension has installed torch."""
    import importlib.util

    assert widgets.torch_available() == (importlib.util.find_spec("torch") is not None)
    slicer_harness.load_slicer_module("PyTorchUtils")
    monkeypatch.setattr(widgets, "torch_available", lambda: False)


@pytest.mark.parametrize(("name", "parameter", "network", "classical"), [
    ("ChestQC", "backend", "network", "classical"), ("KSpaceCalibration", "detector", "network", "classical"),
    ("MotionCorrection", "method", "network", "demons"), ("ParametricPET", "method", "Network (short scan)", "Patlak")])
def test_network_without_torch_offers_install_or_classical(name, parameter, network, classical, open_widget,
                                                           without_torch, tmp_path):
    """The default network of each module, with torch absent: one dialog offers to install PyTorch through the
    PyTorch extension or to use the classical method; No runs the classical method, Cancel does nothing, Yes asks
    the extension's own confirmation (declined here)."""
    widget = open_widget(name)
    _prepare(name, widget, tmp_path)
    p = widget._parameterNode
    setattr(p, parameter, network)
    if name == "ParametricPET":
        p.windowStartMin, p.windowEndMin = 0.0, 60.0
    before = scene.GetNumberOfNodes()
    with slicer_harness.dialogs(qt.QMessageBox.Cancel) as shown:
        widget.ui.applyButton.click()
    assert len(shown) == 1 and "needs PyTorch" in shown[0]["text"] and "classical method" in shown[0]["text"]
    assert shown[0]["standardButtons"] == qt.QMessageBox.Yes | qt.QMessageBox.No | qt.QMessageBox.Cancel
    assert scene.GetNumberOfNodes() == before and getattr(p, parameter) == network
    with slicer_harness.dialogs(qt.QMessageBox.Yes) as shown:  # install: the extension asks, the user declines
        widget.ui.applyButton.click()
    assert len(shown) == 2 and "light-the-torch" in shown[1]["text"] and scene.GetNumberOfNodes() == before
    with slicer_harness.dialogs(qt.QMessageBox.No) as shown:
        widget.ui.applyButton.click()
    assert len(shown) == 1 and getattr(p, parameter) == classical
    assert scene.GetNumberOfNodes() > before and not widget.ui.statusLabel.text.startswith("Cancelled")
