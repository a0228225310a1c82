"""ChestQC: chest radiograph loading with correct pixel spacing and the patent's intensity normalisation."""

from __future__ import annotations

import pathlib
import unittest
from typing import Annotated

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

from scanai import mrml

#
# ChestQC
#


class ChestQC(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Chest QC")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["ScanAI contributors"]
        self.parent.helpText = _(
            "Loads a chest radiograph (DICOM: MONOCHROME1 inverted, rescale and pixel spacing applied; or PNG) "
            "into a scalar volume with its true pixel size, and computes the normalised image used by the "
            "quality and findings tools (5th-95th percentile rescale, then z-score). "
            '<a href="https://github.com/scanai/SlicerScanAI#chestqc">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. DICOM reading by pydicom. Test radiographs: NIH ChestX-ray14 / RSNA "
            "(Wang et al., CVPR 2017) and the Wingspan CTR set (Dong et al., MICCAI 2018/2019, MIT).")


#
# ChestQCParameterNode
#


@parameterNodeWrapper
class ChestQCParameterNode:
    """inputPath: the radiograph file. low/highPercentile: the normalisation window (percent)."""

    inputPath: pathlib.Path
    createNormalised: bool = True
    lowPercentile: Annotated[float, WithinRange(0.0, 49.0)] = 5.0
    highPercentile: Annotated[float, WithinRange(51.0, 100.0)] = 95.0


#
# ChestQCWidget
#


class ChestQCWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, mrml.ModuleWidgetMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ChestQCLogic()
        self.setupWidget("ChestQC.ui")

    def missingInputs(self, parameterNode: ChestQCParameterNode) -> str:
        path = parameterNode.inputPath
        if not path or not path.is_file():
            return _("Choose a chest radiograph file (DICOM or PNG).")
        return ""

    def process(self, parameterNode: ChestQCParameterNode, progress) -> str:
        outputs = self.logic.process(parameterNode.inputPath, parameterNode.createNormalised,
                                     parameterNode.lowPercentile, parameterNode.highPercentile, progress)
        radiograph = outputs["radiograph"]
        slicer.util.setSliceViewerLayers(background=outputs.get("normalised", radiograph), fit=True)
        spacing = radiograph.GetSpacing()
        known = radiograph.GetAttribute("ScanAI.SpacingKnown") == "true"
        return _("Loaded {name}: pixel size {r:.3f} x {c:.3f} mm{warning}.").format(
            name=radiograph.GetName(), r=spacing[1], c=spacing[0],
            warning="" if known else _(" (not in the file: 1 mm assumed, distances are not in mm)"))


#
# ChestQCLogic
#


class ChestQCLogic(ScriptedLoadableModuleLogic):
    """Loads and normalises chest radiographs; usable without the GUI."""

    def getParameterNode(self):
        return ChestQCParameterNode(super().getParameterNode())

    def process(self, path, createNormalised: bool = True, lowPercentile: float = 5.0, highPercentile: float = 95.0,
                progress=None) -> dict:
        """Read ``path`` into a new volume (true spacing) and, optionally, its normalised copy.

        Returns ``{"radiograph": node, "normalised": node}``; the radiograph node carries the attributes
        ``ScanAI.SpacingKnown`` and ``ScanAI.SpacingSource``.
        """
        from scanai.chest.io import read_radiograph
        from scanai.chest.preprocess import normalise
        from scanai.core.progress import Progress

        progress = Progress.ensure(progress)
        progress(0.0, _("Reading the radiograph"))
        radiograph = read_radiograph(path)
        normalised = None
        if createNormalised:
            progress(0.5, _("Normalising"))
            normalised = normalise(radiograph.image, lowPercentile, highPercentile)
        name = pathlib.Path(path).stem
        with mrml.scene_transaction():
            outputs = {"radiograph": mrml.volume_to_node(radiograph.image, name)}
            outputs["radiograph"].SetAttribute("ScanAI.SpacingKnown", str(radiograph.spacing_known).lower())
            outputs["radiograph"].SetAttribute("ScanAI.SpacingSource", str(radiograph.metadata.get("spacing_source")))
            if normalised is not None:
                outputs["normalised"] = mrml.volume_to_node(normalised, f"{name} normalised",
                                                            beside=outputs["radiograph"])
        progress(1.0, _("Done"))
        return outputs


#
# ChestQCTest
#


class ChestQCTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a DICOM phantom written in both photometric forms, and real files."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def test_PhantomMonochromeFormsAgree(self):
        import tempfile

        import numpy as np

        from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom

        phantom = make_chest_phantom(size=128, spacing_mm=0.7)
        folder = pathlib.Path(tempfile.mkdtemp())
        logic = ChestQCLogic()
        arrays = {}
        for photometric in ("MONOCHROME1", "MONOCHROME2"):
            path = write_phantom_dicom(phantom, folder / f"{photometric}.dcm", photometric=photometric)
            outputs = logic.process(path)
            self.assertAlmostEqual(outputs["radiograph"].GetSpacing()[0], 0.7, places=4)
            arrays[photometric] = slicer.util.arrayFromVolume(outputs["normalised"]).copy()
        self.assertTrue(np.allclose(arrays["MONOCHROME1"], arrays["MONOCHROME2"], atol=1e-5))
        self.assertAlmostEqual(float(arrays["MONOCHROME2"].mean()), 0.0, places=4)
        self.assertAlmostEqual(float(arrays["MONOCHROME2"].std()), 1.0, places=3)
        lungs = phantom.masks["right_lung"] | phantom.masks["left_lung"]
        self.assertLess(arrays["MONOCHROME2"][0][lungs].mean(), arrays["MONOCHROME2"][0][phantom.masks["spine"]].mean())

    def test_FileWithoutPixelDataIsRefused(self):
        import tempfile

        import pydicom

        from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom
        from scanai.core.errors import FileFormatError

        path = write_phantom_dicom(make_chest_phantom(size=64), pathlib.Path(tempfile.mkdtemp()) / "x.dcm")
        dataset = pydicom.dcmread(path)
        del dataset.PixelData
        dataset.save_as(path)
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(FileFormatError):
            ChestQCLogic().process(path)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_RealDicomAndPng(self):
        import numpy as np

        from scanai.core.paths import shared_data_dir

        data = shared_data_dir()
        if data is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        import tempfile

        from scanai.chest.phantom import write_monochrome1_copy

        chest = data / "chest"
        logic = ChestQCLogic()
        original = chest / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
        mono2 = slicer.util.arrayFromVolume(logic.process(original)["normalised"])
        recoded = write_monochrome1_copy(original, pathlib.Path(tempfile.mkdtemp()) / "mono1.dcm")
        outputs = logic.process(recoded)
        self.assertAlmostEqual(outputs["radiograph"].GetSpacing()[0], 0.168, places=3)
        self.assertTrue(np.allclose(slicer.util.arrayFromVolume(outputs["normalised"]), mono2, atol=1e-5))
        # Fake_MONOHR1.dcm holds the very same stored pixels labelled MONOCHROME1: read correctly, it is the
        # photographic negative, so its normalised image is exactly minus the MONOCHROME2 one.
        fake = slicer.util.arrayFromVolume(logic.process(chest / "Fake_MONOHR1.dcm")["normalised"])
        self.assertTrue(np.allclose(fake, -mono2, atol=1e-5))
        png = logic.process(chest / "00000001_000.png")
        self.assertEqual(png["radiograph"].GetAttribute("ScanAI.SpacingKnown"), "false")
        self.assertEqual(slicer.util.arrayFromVolume(png["normalised"]).shape, (1, 512, 512))
