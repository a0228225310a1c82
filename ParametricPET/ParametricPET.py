"""ParametricPET: voxelwise Patlak Ki and intercept maps from a dynamic PET sequence and an input function."""

from __future__ import annotations

import unittest
from typing import Annotated

import slicer
from slicer import vtkMRMLSequenceNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

from scanai import mrml

#
# ParametricPET
#


class ParametricPET(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Parametric PET")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = []
        self.parent.contributors = ["ScanAI contributors"]
        self.parent.helpText = _(
            "Voxelwise Patlak graphical analysis of a dynamic PET sequence: net influx rate Ki (1/min), "
            "intercept and R² maps, from a plasma input function table (time and activity columns; integrated "
            "from injection). The sequence index is the frame mid-time in seconds after injection, or give a "
            "frame timing table (start_s, duration_s). "
            '<a href="https://github.com/scanai/SlicerScanAI#parametricpet">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Real test curves: KMAP-M (UC Davis total-body PET, MIT) and kinfitr "
            "[11C]PBR28 data (Matheson et al., EJNMMI Research 2017, MIT).")


#
# ParametricPETParameterNode
#


@parameterNodeWrapper
class ParametricPETParameterNode:
    """inputSequence: PET frames (index = mid-time, s). tStarMin: start of the linear Patlak phase (min)."""

    inputSequence: vtkMRMLSequenceNode
    inputFunctionTable: vtkMRMLTableNode
    frameTimingTable: vtkMRMLTableNode
    createFitQuality: bool = True
    tStarMin: Annotated[float, WithinRange(0.0, 600.0)] = 20.0  # = scanai.pet.patlak.DEFAULT_T_STAR_MIN


#
# ParametricPETWidget
#


class ParametricPETWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, mrml.ModuleWidgetMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ParametricPETLogic()
        self.setupWidget("ParametricPET.ui")

    def missingInputs(self, parameterNode: ParametricPETParameterNode) -> str:
        if not parameterNode.inputSequence:
            return _("Select the dynamic PET sequence.")
        if not parameterNode.inputFunctionTable:
            return _("Select the input function table (time and plasma activity columns).")
        return ""

    def process(self, parameterNode: ParametricPETParameterNode, progress) -> str:
        outputs = self.logic.process(parameterNode.inputSequence, parameterNode.inputFunctionTable,
                                     parameterNode.frameTimingTable, parameterNode.tStarMin,
                                     parameterNode.createFitQuality, progress)
        slicer.util.setSliceViewerLayers(background=outputs["ki"], fit=True)
        return _("Patlak maps computed: {names}.").format(names=", ".join(n.GetName() for n in outputs.values()))


#
# ParametricPETLogic
#


class ParametricPETLogic(ScriptedLoadableModuleLogic):
    """Voxelwise Patlak analysis on MRML nodes; usable without the GUI."""

    def getParameterNode(self):
        return ParametricPETParameterNode(super().getParameterNode())

    def process(self, inputSequence, inputFunctionTable, frameTimingTable=None, tStarMin: float = 20.0,
                createFitQuality: bool = True, progress=None) -> dict:
        """Compute Ki (1/min), intercept and R² maps; add them and the input-function plot to the scene.

        Frame timing comes from ``frameTimingTable`` when given, else from the sequence's index values taken as
        contiguous frame mid-times in seconds. Returns the new nodes keyed ``ki``, ``intercept``, ``r2``,
        ``inputFunction`` (table) and ``inputFunctionChart``.
        """
        from scanai.pet.input_function import InputFunction
        from scanai.pet.patlak import patlak_maps
        from scanai.pet.timing import FrameTiming

        sequence = mrml.sequence_from_node(inputSequence)
        input_function = InputFunction.from_columns(mrml.table_from_node(inputFunctionTable))
        if frameTimingTable is not None:
            timing = FrameTiming.from_columns(mrml.table_from_node(frameTimingTable))
        else:
            timing = FrameTiming.from_mid_times(self._indexSeconds(sequence))
        maps = patlak_maps(sequence, timing, input_function, t_star_min=tStarMin, progress=progress)
        name = inputSequence.GetName()
        with mrml.scene_transaction():
            outputs = {"ki": mrml.volume_to_node(maps.ki, f"{name} Patlak Ki (1/min)", beside=inputSequence)}
            if createFitQuality:
                outputs["intercept"] = mrml.volume_to_node(maps.intercept, f"{name} Patlak intercept",
                                                           beside=inputSequence)
                outputs["r2"] = mrml.volume_to_node(maps.r2, f"{name} Patlak R2", beside=inputSequence)
            table = mrml.table_to_node({"time_s": input_function.t_s, "activity": input_function.activity},
                                       f"{name} input function", beside=inputSequence, units={"time_s": "s"})
            outputs["inputFunction"] = table
            outputs["inputFunctionChart"] = mrml.plot_chart(table, "time_s", ["activity"], f"{name} input function",
                                                            "time after injection (s)", "plasma activity")
        return outputs

    @staticmethod
    def _indexSeconds(sequence):
        """Sequence index values in seconds (index unit s, sec or min)."""
        from scanai.core.errors import InputError

        unit = sequence.index_unit.strip().lower()
        scale = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0, "minute": 60.0, "minutes": 60.0}
        if unit not in scale:
            raise InputError(f"The PET sequence's index unit is '{sequence.index_unit}', not a time unit, so the "
                             "frame timing is missing.",
                             "Give a frame timing table (start_s, duration_s) or a sequence indexed by time in s.")
        return [value * scale[unit] for value in sequence.index_values]


#
# ParametricPETTest
#


class ParametricPETTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a 2-tissue phantom with exact Ki, bad tables, real curves."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def _phantomNodes(self, shape=(2, 16, 16)):
        from scanai.pet.phantom import DEFAULT_REGIONS, pet_phantom

        # FDG-like irreversible kinetics; slow-exchange tissue (k2 + k3 close to the input's late decay rate) is
        # biased high by Patlak itself and is covered, with its expected bias, by the library tests.
        regions = {name: DEFAULT_REGIONS[name] for name in ("white matter", "grey matter", "tumour")}
        phantom = pet_phantom(shape=shape, regions=regions)
        sequence = mrml.sequence_to_node(phantom.sequence, "PET phantom")
        inputFunction = mrml.table_to_node({"time_s": phantom.input_function.t_s,
                                            "Cp": phantom.input_function.activity}, "Feng input")
        timing = mrml.table_to_node({"start_s": phantom.timing.start_s, "duration_s": phantom.timing.duration_s},
                                    "frames")
        return phantom, sequence, inputFunction, timing

    def test_KiMatchesTruthOnPhantom(self):
        import numpy as np

        phantom, sequence, inputFunction, timing = self._phantomNodes()
        for timingTable in (timing, None):
            outputs = ParametricPETLogic().process(sequence, inputFunction, timingTable, tStarMin=30.0)
            ki = slicer.util.arrayFromVolume(outputs["ki"])
            truth = phantom.ki_true.array
            inside = truth > 0
            relative = np.abs(ki[inside] - truth[inside]) / truth[inside]
            self.assertLess(relative.max(), 0.025, f"Ki error up to {100 * relative.max():.2f} %")
            self.assertTrue(mrml.geometry_of_node(outputs["ki"]).is_close(phantom.sequence.geometry))
            self.assertGreater(slicer.util.arrayFromVolume(outputs["r2"])[inside].min(), 0.99)

    def test_TableWithoutTimeColumnIsRefused(self):
        from scanai.core.errors import InputError

        _phantom, sequence, _inputFunction, _timing = self._phantomNodes(shape=(1, 8, 8))
        noTime = mrml.table_to_node({"Cp": [0.0, 5.0, 3.0, 2.0], "whole_blood": [0.0, 4.0, 2.5, 1.8]}, "bad")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(InputError, "time column"):
            ParametricPETLogic().process(sequence, noTime)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_RealTimeActivityCurves(self):
        import numpy as np

        from scanai.core.image import Geometry, VolumeSequence
        from scanai.core.paths import shared_data_dir
        from scanai.pet.kmap import load_kmap_mat

        data = shared_data_dir()
        if data is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        demo = load_kmap_mat(data / "pet" / "demo_2tcm_realdata.mat")
        tacs = np.stack(list(demo.tacs.values()))  # (regions, T)
        frames = tacs.T.astype(np.float32)[:, np.newaxis, np.newaxis, :]  # (T, 1, 1, regions)
        sequence = mrml.sequence_to_node(VolumeSequence(frames, Geometry(), tuple(demo.timing.mid_s)), "real TACs")
        inputFunction = mrml.table_to_node({"time_s": demo.input_function.t_s, "Cp": demo.input_function.activity},
                                           "aorta input")
        timing = mrml.table_to_node({"start_s": demo.timing.start_s, "duration_s": demo.timing.duration_s}, "frames")
        ki = slicer.util.arrayFromVolume(ParametricPETLogic().process(sequence, inputFunction, timing)["ki"])
        self.assertTrue(np.all(np.isfinite(ki)) and np.all(ki > 0))
