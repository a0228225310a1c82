"""KSpaceCalibration: raw multi-coil MRI k-space to the root-sum-of-squares image and a k-space view."""

from __future__ import annotations

import pathlib
import unittest

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

from scanai import mrml

#
# KSpaceCalibration
#


class KSpaceCalibration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("K-Space Calibration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["ScanAI contributors"]
        self.parent.helpText = _(
            "Reads raw multi-coil MRI k-space (Siemens twix .dat, or .npy/.npz/.mat arrays) and shows the "
            "root-sum-of-squares image (readout oversampling removed) and the log-magnitude k-space, where "
            "spike ('sparking') artifacts appear as isolated bright points. "
            '<a href="https://github.com/scanai/SlicerScanAI#kspacecalibration">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Siemens raw data reading by twixtools (P. Ehses). Test data: twixtools "
            "examples and pulseq/MR-Physics-with-Pulseq (MIT).")


#
# KSpaceCalibrationParameterNode
#


@parameterNodeWrapper
class KSpaceCalibrationParameterNode:
    """inputPath: raw k-space file. createLogKSpace: also add the log-magnitude k-space volume.
    allowEpi: accept EPI twix data, reconstructed without ramp-sampling or ghost correction."""

    inputPath: pathlib.Path
    createLogKSpace: bool = True
    allowEpi: bool = False


#
# KSpaceCalibrationWidget
#


class KSpaceCalibrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, mrml.ModuleWidgetMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = KSpaceCalibrationLogic()
        self.setupWidget("KSpaceCalibration.ui")

    def missingInputs(self, parameterNode: KSpaceCalibrationParameterNode) -> str:
        path = parameterNode.inputPath
        if not path or not path.is_file():
            return _("Choose a raw k-space file (.dat, .npy, .npz or .mat).")
        return ""

    def process(self, parameterNode: KSpaceCalibrationParameterNode, progress) -> str:
        outputs = self.logic.process(parameterNode.inputPath, parameterNode.createLogKSpace, parameterNode.allowEpi,
                                     progress)
        slicer.util.setSliceViewerLayers(background=outputs["rss"], fit=True)
        return _("Reconstructed {name}.").format(name=outputs["rss"].GetName())


#
# KSpaceCalibrationLogic
#


class KSpaceCalibrationLogic(ScriptedLoadableModuleLogic):
    """Reads raw k-space and reconstructs it; usable without the GUI."""

    def getParameterNode(self):
        return KSpaceCalibrationParameterNode(super().getParameterNode())

    def process(self, path, createLogKSpace: bool = True, allowEpi: bool = False, progress=None) -> dict:
        """Read ``path`` and add ``"rss"`` (image) and optionally ``"logKSpace"`` volumes to the scene.

        The RSS volume carries the attributes ``ScanAI.Coils``, ``ScanAI.Source`` and ``ScanAI.SpacingKnown``.
        """
        from scanai.core.progress import Progress
        from scanai.kspace.io import read_kspace
        from scanai.kspace.recon import reconstruct

        progress = Progress.ensure(progress)
        kspace = read_kspace(path, allow_epi=allowEpi, progress=progress.sub(0.0, 0.5))
        images = reconstruct(kspace, progress=progress.sub(0.5, 1.0))
        name = pathlib.Path(path).stem
        with mrml.scene_transaction():
            outputs = {"rss": mrml.volume_to_node(images.rss, f"{name} RSS image")}
            outputs["rss"].SetAttribute("ScanAI.Coils", str(kspace.data.shape[0]))
            outputs["rss"].SetAttribute("ScanAI.Source", kspace.source)
            outputs["rss"].SetAttribute("ScanAI.SpacingKnown", str(kspace.spacing_from_header).lower())
            if createLogKSpace:
                outputs["logKSpace"] = mrml.volume_to_node(images.log_kspace, f"{name} log k-space",
                                                           beside=outputs["rss"])
        return outputs


#
# KSpaceCalibrationTest
#


class KSpaceCalibrationTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a multi-coil phantom with known image, and the real twix files."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def test_PhantomImageIsRecovered(self):
        import tempfile

        import numpy as np

        from scanai.kspace.io import write_kspace_npz
        from scanai.kspace.phantom import make_phantom
        from scanai.kspace.recon import rss

        case = make_phantom(size=64, n_coils=4)
        path = write_kspace_npz(case.kspace, pathlib.Path(tempfile.mkdtemp()) / "phantom.npz")
        outputs = KSpaceCalibrationLogic().process(path)
        image = slicer.util.arrayFromVolume(outputs["rss"])
        self.assertEqual(image.shape, (1, 64, 64))
        self.assertTrue(np.allclose(image[0], rss(case.coil_images), atol=1e-4 * image.max()))
        self.assertEqual(slicer.util.arrayFromVolume(outputs["logKSpace"]).shape, (1, 64, 128))
        self.assertEqual(outputs["rss"].GetAttribute("ScanAI.Coils"), "4")

    def test_RealValuedFileIsRefused(self):
        import tempfile

        import numpy as np

        from scanai.core.errors import InputError

        path = pathlib.Path(tempfile.mkdtemp()) / "magnitude.npy"
        np.save(path, np.ones((2, 16, 16), dtype=np.float32))
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(InputError, "complex"):
            KSpaceCalibrationLogic().process(path)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_TwixGre(self):
        import numpy as np

        from scanai.core.paths import shared_data_dir

        data = shared_data_dir()
        if data is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        outputs = KSpaceCalibrationLogic().process(data / "kspace" / "gre.dat")
        image = slicer.util.arrayFromVolume(outputs["rss"])
        self.assertEqual(image.shape[1:], (160, 160))
        self.assertEqual(outputs["rss"].GetAttribute("ScanAI.Coils"), "2")
        centre, border = image[0, 60:100, 60:100].mean(), image[0, :10, :10].mean()
        self.assertGreater(centre, 5 * border, "the phantom must stand out from the background")
        self.assertTrue(np.isfinite(image).all())

    def test_EpiNeedsExplicitConsent(self):
        from scanai.core.errors import InputError
        from scanai.core.paths import shared_data_dir

        data = shared_data_dir()
        if data is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        with self.assertRaisesRegex(InputError, "EPI"):
            KSpaceCalibrationLogic().process(data / "kspace" / "epi.dat")
        outputs = KSpaceCalibrationLogic().process(data / "kspace" / "epi.dat", allowEpi=True)
        self.assertEqual(slicer.util.arrayFromVolume(outputs["rss"]).shape[1:], (80, 80))
