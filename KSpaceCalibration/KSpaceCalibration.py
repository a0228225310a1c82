"""KSpaceCalibration: find and remove spike ("sparking") artifacts in raw multi-coil MRI k-space."""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
import unittest
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("scanai") is None:  # a source checkout: scanai/ sits beside this module's folder
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
from scanai import REPOSITORY_URL, mrml

DETECTED_COLOUR = (1.0, 0.2, 0.2)
SIMULATED_COLOUR = (1.0, 0.85, 0.1)

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
            "Finds spike ('sparking') artifacts in raw multi-coil MRI k-space and removes them: k-space is divided "
            "into 32x32 patches, a trained patch classifier (or the classical robust-statistics detector) finds the "
            "patches with spikes, the spike samples are located and only those samples are re-estimated. Reads "
            "Siemens twix .dat, ISMRMRD/MRD and fastMRI HDF5, BART .cfl, .npy/.npz and .mat; for demonstration, "
            "a volume can be turned into multi-coil k-space with simulated spikes. "
            '<a href="{url}#k-space-calibration">Documentation</a>.').format(url=REPOSITORY_URL)
        self.parent.helpText += _(
            " To try it: in File > Download Sample Data, click SpikedKSpacePhantom under ScanAI (8-coil k-space of a "
            "head phantom with 20 simulated spikes, as .npz, and its spike-free image for comparison, generated on "
            "this computer: nothing is downloaded). Back here the k-space file is filled in: click Apply.")
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Siemens raw data reading by twixtools (P. Ehses). Test data: twixtools "
            "examples, pulseq/MR-Physics-with-Pulseq and LarsonLab MRI-education-resources (MIT).")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data (generated on the user's computer by scanai.samples, never downloaded)
#


def registerSampleData():
    """Add the spiked k-space phantom to Slicer's Sample Data module (category ScanAI) once Slicer has started."""
    mrml.register_sample_data("KSpaceCalibration", __file__, loadSampleData)


def loadSampleData(source=None) -> list:
    """What the sample's button in Sample Data does: generate the files if needed, load the spike-free image, and
    choose the spiked k-space file (.npz, which this module reads) as this module's input. Returns the loaded
    nodes."""
    nodes, files = mrml.load_sample_data("KSpaceCalibration", source)
    KSpaceCalibrationLogic().getParameterNode().inputPath = files[0]  # the spiked k-space (.npz)
    return nodes


#
# KSpaceCalibrationParameterNode
#


@parameterNodeWrapper
class KSpaceCalibrationParameterNode:
    """inputPath: raw k-space file; or inputVolume (demonstration) with simulatedSpikes spike events added.

    detector: robust statistics ("classical"), trained patch classifier ("network"), or the classical levels set by
    the classifier's patch probabilities ("combined"); sensitivity in (0, 1].
    noisePath: optional noise scan or coil noise covariance (pre-whitening, the noise level); axes: optional names of
    an array file's stored axes ("" = from the file), as ``scanai kspace --noise`` and ``--axes``.
    """

    inputPath: pathlib.Path
    inputVolume: vtkMRMLScalarVolumeNode
    simulatedSpikes: Annotated[int, WithinRange(0, 500)] = 20
    detectOnly: bool = False
    createLogKSpace: bool = True
    detector: Annotated[str, Choice(["classical", "network", "combined"])] = "classical"  # measured: README
    sensitivity: Annotated[float, WithinRange(0.05, 1.0)] = 0.5
    correctionMethod: Annotated[str, Choice(["grappa", "zero", "conjugate", "neighbours"])] = "grappa"
    prewhiten: bool = False
    noisePath: pathlib.Path
    axes: str
    allowEpi: bool = False


#
# KSpaceCalibrationWidget
#


class KSpaceCalibrationWidget(mrml.ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = KSpaceCalibrationLogic()
        self.setupWidget("KSpaceCalibration.ui")

    #: The distributions of Resources/requirements.txt that reading each raw format needs (Siemens twix:
    #: twixtools; ISMRMRD / MRD: h5py); the other formats and a volume need none of them.
    readerPackages = {".dat": ("twixtools",), ".h5": ("h5py",), ".hdf5": ("h5py",), ".mrd": ("h5py",)}

    def requiredPackages(self, parameterNode: KSpaceCalibrationParameterNode) -> tuple[str, ...]:
        path = mrml.selected_file(parameterNode.inputPath)
        return self.readerPackages.get(path.suffix.lower(), ()) if path else ()

    def classicalAlternative(self, parameterNode: KSpaceCalibrationParameterNode) -> tuple[str, str] | None:
        return ("detector", "classical") if parameterNode.detector in ("network", "combined") else None

    def missingInputs(self, parameterNode: KSpaceCalibrationParameterNode) -> str:
        if not mrml.selected_file(parameterNode.inputPath) and not parameterNode.inputVolume:
            return _("Choose a raw k-space file, or a volume to turn into k-space for a demonstration.")
        return ""

    def process(self, parameterNode: KSpaceCalibrationParameterNode, progress) -> str:
        p = parameterNode
        path = mrml.selected_file(p.inputPath)
        outputs = self.logic.process(path, p.inputVolume if path is None else None, p.simulatedSpikes, p.detector,
                                     p.sensitivity, p.correctionMethod, p.detectOnly, p.createLogKSpace,
                                     p.prewhiten, p.allowEpi, progress, axes=(p.axes or "").strip() or None,
                                     noisePath=mrml.selected_file(p.noisePath))
        slicer.util.setSliceViewerLayers(background=outputs.get("corrected", outputs["original"]), fit=True)
        return outputs["spikes"].GetAttribute("ScanAI.Summary")


#
# KSpaceCalibrationLogic
#


class KSpaceCalibrationLogic(ScriptedLoadableModuleLogic):
    """Detects and corrects k-space spikes on MRML nodes; usable without the GUI. ``runInWorker`` (set by the
    widget) runs the computation in a worker process (:func:`scanai.mrml.compute`)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.runInWorker = False

    def getParameterNode(self):
        return KSpaceCalibrationParameterNode(super().getParameterNode())

    def process(self, path=None, volume=None, simulatedSpikes: int = 20, detector: str = "classical",
                sensitivity: float = 0.5, method: str = "grappa", detectOnly: bool = False,
                createLogKSpace: bool = True, prewhiten: bool = False, allowEpi: bool = False, progress=None,
                axes=None, noisePath=None) -> dict:
        """Read k-space from ``path`` (or simulate it from ``volume`` with ``simulatedSpikes`` spike events),
        detect and correct spikes, and add the results to the scene.

        ``axes`` (e.g. ``"ky,kx,coil"``) names the stored axes of an array file; ``noisePath`` is a noise
        covariance or noise scan of the same coils (its per-coil noise level reaches the detector).

        Returns new nodes: ``original`` and ``corrected`` RSS images, ``difference``, ``logKSpace`` (with
        ``spikeSegmentation`` on its grid), ``spikes`` (one row per flagged sample) and ``slices`` (summary)
        tables. The ``spikes`` table carries a one-line ``ScanAI.Summary`` attribute.
        """
        from scanai.core.errors import InputError
        from scanai.core.progress import Progress

        progress = Progress.ensure(progress)
        truth = None
        settings = {"detector": detector, "sensitivity": sensitivity, "method": method, "detect_only": detectOnly}
        if path is not None:
            result = mrml.compute("kspace.file", progress, self.runInWorker, path=pathlib.Path(path),
                                  allow_epi=allowEpi, prewhiten=prewhiten, axes=axes or None,
                                  noise=pathlib.Path(noisePath) if noisePath else None, **settings)
            name, anchor = pathlib.Path(path).stem, None
        elif volume is not None:
            kspace, truth = self._simulate(volume, simulatedSpikes)
            name, anchor = volume.GetName(), volume
            result = mrml.compute("kspace.run", progress.sub(0.3, 1.0), self.runInWorker, kspace=kspace, **settings)
        else:
            raise InputError("No input was given.", "Choose a raw k-space file or a volume.")
        images = {"original": result.original, "corrected": result.corrected_image, "difference": result.difference}
        if anchor is not None:  # simulated from a volume: the images keep the volume's geometry exactly
            geometry = mrml.geometry_of_node(anchor)
            images = {key: type(image)(image.array, geometry) for key, image in images.items()}
        if detectOnly:
            del images["corrected"], images["difference"]
        with mrml.scene_transaction():
            outputs = {key: mrml.volume_to_node(image, f"{name} {key}", beside=anchor) for key, image in images.items()}
            if createLogKSpace:
                outputs["logKSpace"] = mrml.volume_to_node(result.log_kspace, f"{name} log k-space", beside=anchor)
                outputs["spikeSegmentation"] = self._spikeSegmentation(result, truth, name, outputs["logKSpace"])
            outputs["spikes"] = self._table(result.detection.table, f"{name} spikes", anchor)
            outputs["slices"] = self._table(result.detection.slices, f"{name} spikes per slice", anchor)
            outputs["spikes"].SetAttribute("ScanAI.Summary", self._summary(result, truth))
        return outputs

    @staticmethod
    def _simulate(volume, events: int):
        """Multi-coil k-space from a volume node, with ``events`` simulated spike events; returns (k-space, truth)."""
        from dataclasses import replace

        from scanai.kspace.phantom import kspace_from_volume
        from scanai.kspace.simulate import inject_spikes

        clean = kspace_from_volume(mrml.volume_from_node(volume), name=volume.GetName())
        corrupted, truth = inject_spikes(clean.data, n_events=events, seed=0)
        return replace(clean, data=corrupted), truth

    @staticmethod
    def _spikeSegmentation(result, truth, name: str, logKSpace):
        """Detected (and, for a simulation, injected) spike samples as segments on the log-k-space grid."""
        labels = result.detection.mask.astype("uint8")
        segments = {1: (_("detected spike"), DETECTED_COLOUR)}
        if truth is not None:
            injected = truth.mask(labels.shape) & (labels == 0)
            labels[injected] = 2
            segments[2] = (_("simulated spike, not detected"), SIMULATED_COLOUR)
        return mrml.segmentation_from_labels(labels, mrml.geometry_of_node(logKSpace), segments, f"{name} spikes",
                                             beside=logKSpace)

    @staticmethod
    def _table(rows: list[dict], name: str, anchor):
        """A table node with one column per key of ``rows`` (empty rows give the pipeline's column names)."""
        from scanai.kspace.pipeline import TABLE_COLUMNS

        columns = list(rows[0]) if rows else list(TABLE_COLUMNS)
        return mrml.table_to_node({c: [row[c] for row in rows] for c in columns}, name, beside=anchor)

    @staticmethod
    def _summary(result, truth) -> str:
        detected = int(result.detection.mask.sum())
        text = _("{n} spike samples flagged ({detector} detector, {method}).").format(
            n=detected, detector=result.detection.detector, method=result.method)
        if truth is not None:
            found = int((result.detection.mask & truth.mask(result.detection.mask.shape)).sum())
            text += _(" Simulated: {found} of {total} found.").format(found=found, total=len(truth))
        return text


#
# KSpaceCalibrationTest
#


class KSpaceCalibrationTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: simulated spikes on a volume, files, and the real twix data."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def _volume(self):
        import numpy as np

        from scanai.core.image import Geometry, Volume
        from scanai.kspace.phantom import shepp_logan

        image = np.stack([shepp_logan(128, 128)] * 2).astype(np.float32) * 1000
        return mrml.volume_to_node(Volume(image, Geometry((0.9, 0.9, 5.0), (10.0, -20.0, 3.0))), "head")

    def test_SimulatedSpikesAreFoundAndRemoved(self):
        import numpy as np

        volume = self._volume()
        # Spike amplitudes span 0.005-1 x max|k|; the network misses more of the weakest (its model card).
        from scanai.core.device import torch_available

        detectors = ((("classical", 0.9), ("network", 0.8), ("combined", 0.9)) if torch_available()
                     else (("classical", 0.9),))
        if not torch_available():
            logging.info("KSpaceCalibration: PyTorch is not installed, so the network detector is not tested.")
        for detector, share in detectors:
            outputs = KSpaceCalibrationLogic().process(volume=volume, simulatedSpikes=15, detector=detector)
            summary = outputs["spikes"].GetAttribute("ScanAI.Summary")
            self.assertIn("Simulated:", summary)
            found, total = (int(v) for v in summary.split("Simulated: ")[1].split(" found")[0].split(" of "))
            self.assertGreaterEqual(found, share * total, summary)
            reference = slicer.util.arrayFromVolume(volume) / slicer.util.arrayFromVolume(volume).max()
            before = slicer.util.arrayFromVolume(outputs["original"])
            after = slicer.util.arrayFromVolume(outputs["corrected"])
            scale = np.median(after[reference > 0.5] / reference[reference > 0.5])
            error_before = np.abs(before / scale - reference).mean()
            error_after = np.abs(after / scale - reference).mean()
            self.assertLess(error_after, 0.5 * error_before)
            self.assertTrue(mrml.geometry_of_node(outputs["corrected"]).is_close(mrml.geometry_of_node(volume)))
            self.assertEqual(outputs["spikeSegmentation"].GetSegmentation().GetNumberOfSegments(), 2)

    def test_DetectOnlyLeavesTheImageAlone(self):
        outputs = KSpaceCalibrationLogic().process(volume=self._volume(), simulatedSpikes=5, detector="classical",
                                                   detectOnly=True)
        self.assertNotIn("corrected", outputs)
        self.assertGreater(outputs["spikes"].GetNumberOfRows(), 0)

    def test_PhantomFileWithoutSpikesIsUntouched(self):
        import tempfile

        import numpy as np

        from scanai.kspace.io import write_kspace_npz
        from scanai.kspace.phantom import make_phantom
        from scanai.kspace.recon import rss

        case = make_phantom(size=64, n_coils=4)
        folder = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        path = write_kspace_npz(case.kspace, folder / "phantom.npz")
        outputs = KSpaceCalibrationLogic().process(path, detector="classical")
        self.assertEqual(outputs["spikes"].GetNumberOfRows(), 0)
        image = slicer.util.arrayFromVolume(outputs["original"])
        self.assertTrue(np.allclose(image[0], rss(case.coil_images), atol=1e-4 * image.max()))
        self.assertTrue(np.array_equal(image, slicer.util.arrayFromVolume(outputs["corrected"])))
        self.assertEqual(slicer.util.arrayFromVolume(outputs["logKSpace"]).shape, (1, 64, 128))

    def test_RealValuedFileIsRefused(self):
        import tempfile

        import numpy as np

        from scanai.core.errors import InputError

        path = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath)) / "magnitude.npy"
        np.save(path, np.ones((2, 16, 16), dtype=np.float32))
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(InputError, "complex"):
            KSpaceCalibrationLogic().process(path)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    @staticmethod
    def _twixDataOrSkip():
        """The shared data folder, when it and twixtools (which Apply offers to install) are there."""
        from scanai.core.paths import shared_data_dir

        if shared_data_dir() is None:
            raise unittest.SkipTest("real data folder ../shared/data is absent")
        import importlib.util

        if importlib.util.find_spec("twixtools") is None:
            raise unittest.SkipTest("twixtools is not installed (Apply asks to install it for a Siemens .dat file)")
        return shared_data_dir()

    def test_TwixGre(self):
        import numpy as np

        data = self._twixDataOrSkip()
        outputs = KSpaceCalibrationLogic().process(data / "kspace" / "gre.dat")
        image = slicer.util.arrayFromVolume(outputs["original"])
        self.assertEqual(image.shape[1:], (160, 160))
        self.assertEqual(outputs["spikes"].GetNumberOfRows(), 0, "the clean scanner file must not be altered")
        centre, border = image[0, 60:100, 60:100].mean(), image[0, :10, :10].mean()
        self.assertGreater(centre, 5 * border, "the phantom must stand out from the background")
        self.assertTrue(np.isfinite(image).all())

    def test_EpiNeedsExplicitConsent(self):
        from scanai.core.errors import InputError

        data = self._twixDataOrSkip()
        with self.assertRaisesRegex(InputError, "EPI"):
            KSpaceCalibrationLogic().process(data / "kspace" / "epi.dat")
        outputs = KSpaceCalibrationLogic().process(data / "kspace" / "epi.dat", allowEpi=True, detectOnly=True)
        self.assertEqual(slicer.util.arrayFromVolume(outputs["original"]).shape[1:], (80, 80))
