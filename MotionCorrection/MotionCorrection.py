"""MotionCorrection: dense cardiac motion over a cine / 4D sequence, registered frame by frame to a reference."""

from __future__ import annotations

import unittest
from typing import Annotated

import slicer
from slicer import vtkMRMLSequenceNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

from scanai import mrml

#
# MotionCorrection
#


class MotionCorrection(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Motion Correction")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Cardiac")]
        self.parent.dependencies = []
        self.parent.contributors = ["ScanAI contributors"]
        self.parent.helpText = _(
            "Estimates dense motion over a cardiac cine or 4D sequence: every frame is registered to a reference "
            "frame (demons or B-spline), giving a sequence of displacement-field transforms and the "
            "motion-compensated sequence, both synchronised with the input's sequence browser. "
            '<a href="https://github.com/scanai/SlicerScanAI#motioncorrection">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Registration by SimpleITK. Real cine MR test data: Sunnybrook Cardiac "
            "Data (Radau et al., MIDAS Journal 2009, CC0).")


#
# MotionCorrectionParameterNode
#


@parameterNodeWrapper
class MotionCorrectionParameterNode:
    """inputSequence: cine / 4D volume sequence. referenceFrame: 1-based frame every frame is aligned to."""

    inputSequence: vtkMRMLSequenceNode
    referenceFrame: Annotated[int, WithinRange(1, 9999)] = 1
    method: Annotated[str, Choice(["demons", "bspline"])] = "demons"
    createWarped: bool = True
    createTransforms: bool = True


#
# MotionCorrectionWidget
#


class MotionCorrectionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, mrml.ModuleWidgetMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MotionCorrectionLogic()
        self.setupWidget("MotionCorrection.ui")

    def initializeParameterNode(self) -> None:
        mrml.ModuleWidgetMixin.initializeParameterNode(self)
        if not self._parameterNode.inputSequence:
            self._parameterNode.inputSequence = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceNode")

    def missingInputs(self, parameterNode: MotionCorrectionParameterNode) -> str:
        if not parameterNode.inputSequence:
            return _("Select a cine or 4D volume sequence.")
        frames = parameterNode.inputSequence.GetNumberOfDataNodes()
        if parameterNode.referenceFrame > frames:
            return _("The reference frame must be between 1 and {frames}.").format(frames=frames)
        if not (parameterNode.createWarped or parameterNode.createTransforms):
            return _("Choose at least one output.")
        return ""

    def process(self, parameterNode: MotionCorrectionParameterNode, progress) -> str:
        outputs = self.logic.process(parameterNode.inputSequence, parameterNode.referenceFrame,
                                     parameterNode.method, parameterNode.createWarped,
                                     parameterNode.createTransforms, progress)
        names = ", ".join(node.GetName() for node in outputs.values())
        return _("Registered {n} frames: {names}.").format(n=parameterNode.inputSequence.GetNumberOfDataNodes(),
                                                           names=names)


#
# MotionCorrectionLogic
#


class MotionCorrectionLogic(ScriptedLoadableModuleLogic):
    """Registers every frame of a volume sequence to a reference frame; usable without the GUI."""

    def getParameterNode(self):
        return MotionCorrectionParameterNode(super().getParameterNode())

    def process(self, inputSequence, referenceFrame: int = 1, method: str = "demons", createWarped: bool = True,
                createTransforms: bool = True, progress=None) -> dict:
        """Register, then add the outputs beside the input and to its sequence browser.

        referenceFrame is 1-based (as in the sequence browser). Returns the new nodes: ``"warped"`` (volume
        sequence) and/or ``"transforms"`` (grid-transform sequence, FromParent = resampling field).
        """
        from scanai.motion.registration import register_to_reference

        sequence = mrml.sequence_from_node(inputSequence)
        fields = register_to_reference(sequence, referenceFrame - 1, method, progress=progress)
        name = inputSequence.GetName()
        outputs = {}
        with mrml.scene_transaction():
            if createWarped:
                outputs["warped"] = mrml.sequence_to_node(fields.warped, f"{name} motion-compensated",
                                                          like=inputSequence)
            if createTransforms:
                outputs["transforms"] = mrml.transform_sequence_to_node(
                    fields.displacement_mm, sequence.geometry, sequence.index_values, f"{name} motion",
                    sequence.index_name, sequence.index_unit, like=inputSequence)
            mrml.attach_to_browser(list(outputs.values()), inputSequence)
        return outputs


#
# MotionCorrectionTest
#


class MotionCorrectionTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a phantom with exact motion, and the Sunnybrook cine when present."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def _phantomSequenceNode(self):
        from scanai.motion.phantom import smooth_motion_phantom

        sequence, truth = smooth_motion_phantom(n_frames=4, shape=(1, 64, 64), amplitude_px=3.0, seed=3)
        return mrml.sequence_to_node(sequence, "phantom cine"), sequence, truth

    def test_RecoversPhantomMotion(self):
        import numpy as np

        node, sequence, truth = self._phantomSequenceNode()
        outputs = MotionCorrectionLogic().process(node, referenceFrame=1)
        transforms = outputs["transforms"]
        self.assertEqual(transforms.GetNumberOfDataNodes(), 4)
        self.assertEqual(transforms.GetIndexName(), node.GetIndexName())
        spacing = np.asarray(sequence.geometry.spacing_mm)
        for t in range(4):
            field = mrml.displacement_from_grid_transform(transforms.GetNthDataNode(t))
            error_px = np.linalg.norm((field - truth[t]) / spacing, axis=-1).mean()
            self.assertLess(error_px, 0.5, f"frame {t + 1}: mean endpoint error {error_px:.2f} px")
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(node)
        self.assertTrue(browser.IsSynchronizedSequenceNode(transforms.GetID(), True))

    def test_WarpedFramesMatchReference(self):
        import numpy as np

        node, sequence, _truth = self._phantomSequenceNode()
        warped = MotionCorrectionLogic().process(node, referenceFrame=1, createTransforms=False)["warped"]
        reference = sequence.frames[0]
        for t in range(1, 4):
            before = np.abs(sequence.frames[t] - reference).mean()
            after = np.abs(slicer.util.arrayFromVolume(warped.GetNthDataNode(t)) - reference).mean()
            self.assertLess(after, 0.6 * before)

    def test_BadReferenceFrameIsRefused(self):
        from scanai.core.errors import InputError

        node, _sequence, _truth = self._phantomSequenceNode()
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            MotionCorrectionLogic().process(node, referenceFrame=9)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_SunnybrookCine(self):
        import numpy as np

        from scanai.core.paths import shared_data_dir
        from scanai.io.cine import read_sunnybrook_cine

        data = shared_data_dir()
        if data is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        sequence = read_sunnybrook_cine(data / "cardiac" / "sunnybrook" / "dicoms" / "SCD0000101", slice_index=5)
        node = mrml.sequence_to_node(type(sequence)(sequence.frames[:4], sequence.geometry,
                                                    sequence.index_values[:4], "time", "s"), "Sunnybrook cine")
        warped = MotionCorrectionLogic().process(node, createTransforms=False)["warped"]
        reference = sequence.frames[0]
        before = np.mean([np.abs(sequence.frames[t] - reference).mean() for t in range(1, 4)])
        after = np.mean([np.abs(slicer.util.arrayFromVolume(warped.GetNthDataNode(t)) - reference).mean()
                         for t in range(1, 4)])
        self.assertLess(after, before)
