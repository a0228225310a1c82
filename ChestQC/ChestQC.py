"""ChestQC: the patent's quality grade, its reasons and the clinical findings of a frontal chest radiograph."""

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

#: Detection backends (= scanai.chest.pipeline.BACKENDS; repeated so that loading the module stays light).
BACKENDS = ["network", "classical"]
#: Threshold profiles: "automatic" (from the view, age and sex in the header) then the names of
#: scanai.chest.metrics.THRESHOLD_PROFILES (repeated; the self-test checks they agree).
PROFILES = ["automatic", "default", "AP", "paediatric", "infant"]
#: Volume-node attributes this module writes (and reads back when a loaded volume is analysed again).
ATTRIBUTES = {"spacing_known": "ScanAI.SpacingKnown", "spacing_source": "ScanAI.SpacingSource",
              "view_position": "ScanAI.ViewPosition", "patient_age": "ScanAI.PatientAge",
              "patient_sex": "ScanAI.PatientSex", "level": "ScanAI.ChestQCLevel"}
#: Colours of the measurement lines (heart and lung widths, spine line, image centreline).
LINE_COLOURS = {"heart": (0.90, 0.20, 0.20), "lungs": (0.20, 0.45, 0.85), "spine": (0.30, 0.90, 0.30),
                "centre": (0.85, 0.85, 0.85)}

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
            "Quality control of a frontal chest radiograph as in US 2020/0211186 A1: detects the lungs, heart and "
            "spine with a network or a classical detector, grades the image FIRST / INTERMEDIATE / SECOND with one "
            "reason per failed test (lung field inside the image, spine offset), and for usable images reports the "
            "cardiothoracic ratio. Scapulae (the scapula tests), clavicles (rotation), foreign objects (C5), "
            "pneumothorax and effusion are experimental, not validated on real radiographs: off by "
            "default, labelled experimental when turned on. Lateral views and images whose "
            "grey scale looks inverted are reported as not assessable. Input: a radiograph file (DICOM with "
            "MONOCHROME1 inversion, rescale and pixel spacing; PNG, JPEG) or a loaded scalar volume. Outputs: a "
            "segmentation with standard names and colours, boxes (lung field, foreign objects with confidence), the "
            "width lines of the cardiothoracic ratio, the spine and image centrelines, a table of tests and a text "
            "report. Not a diagnosis. "
            '<a href="{url}#chest-qc">Documentation</a>.').format(url=REPOSITORY_URL)
        self.parent.helpText += _(
            " To try it: in File > Download Sample Data, click ChestRadiographPhantom under ScanAI (a synthetic PA "
            "chest radiograph, generated on this computer: nothing is downloaded). Back here it is selected: choose "
            "the classical detector (no PyTorch needed) and click Apply.")
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. DICOM reading by pydicom. Test radiographs: NIH ChestX-ray14 / RSNA "
            "(Wang et al., CVPR 2017) and the Wingspan CTR set (Dong et al., MICCAI 2018/2019, MIT).")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data (generated on the user's computer by scanai.samples, never downloaded)
#


def registerSampleData():
    """Add the chest radiograph phantom to Slicer's Sample Data module (category ScanAI) once Slicer has started."""
    mrml.register_sample_data("ChestQC", __file__, loadSampleData)


def loadSampleData(source=None) -> list:
    """What the sample's button in Sample Data does: generate the file if needed, load the radiograph (a volume,
    marked as a PA view) and select it as this module's input. Returns the loaded nodes."""
    nodes, _files = mrml.load_sample_data("ChestQC", source)
    for node in nodes:
        if isinstance(node, vtkMRMLScalarVolumeNode):
            node.SetAttribute(ATTRIBUTES["view_position"], "PA")  # what the phantom is; a DICOM file would say so
            ChestQCLogic().getParameterNode().inputVolume = node
    return nodes


#
# ChestQCParameterNode
#


@parameterNodeWrapper
class ChestQCParameterNode:
    """inputVolume: a loaded radiograph (single-slice scalar volume), or inputPath: a radiograph file to load.
    backend: detector. profile: threshold profile ("automatic" = from the header). weighted: the patent's ¶0132
    rule (scapula and spine both failing -> SECOND). experimental: also show the objects not validated on real
    radiographs (scapulae, clavicles, foreign objects, pneumothorax, effusion), labelled experimental.
    low/highPercentile: the normalisation window (percent)."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputPath: pathlib.Path
    backend: Annotated[str, Choice(BACKENDS)] = "network"
    profile: Annotated[str, Choice(PROFILES)] = "automatic"
    weighted: bool = True
    experimental: bool = False
    createNormalised: bool = True
    lowPercentile: Annotated[float, WithinRange(0.0, 49.0)] = 5.0
    highPercentile: Annotated[float, WithinRange(51.0, 100.0)] = 95.0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


#
# ChestQCWidget
#


class ChestQCWidget(mrml.ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ChestQCLogic()
        self.setupWidget("ChestQC.ui")

    def classicalAlternative(self, parameterNode: ChestQCParameterNode) -> tuple[str, str] | None:
        return ("backend", "classical") if parameterNode.backend == "network" else None

    def missingInputs(self, parameterNode: ChestQCParameterNode) -> str:
        if not parameterNode.inputVolume and not mrml.selected_file(parameterNode.inputPath):
            return _("Select a loaded radiograph, or choose a chest radiograph file (DICOM, PNG or JPEG).")
        return ""

    def process(self, parameterNode: ChestQCParameterNode, progress) -> str:
        p = parameterNode
        outputs = self.logic.process(
            inputPath=None if p.inputVolume else p.inputPath, inputVolume=p.inputVolume, backend=p.backend,
            profile=p.profile, weighted=p.weighted, experimental=p.experimental, createNormalised=p.createNormalised,
            lowPercentile=p.lowPercentile, highPercentile=p.highPercentile, device=p.device, progress=progress)
        radiograph = outputs["radiograph"]
        slicer.util.setSliceViewerLayers(background=radiograph, fit=True)
        result = self.logic.lastResult
        browser = getattr(self.ui, "reportTextBrowser", None)
        if browser is not None and hasattr(browser, "setPlainText"):
            browser.setPlainText(self.logic.reportText(result))
        return self.logic.summary(result)


#
# ChestQCLogic
#


class ChestQCLogic(ScriptedLoadableModuleLogic):
    """Loads a chest radiograph, grades it and adds the results to the scene; usable without the GUI.

    ``lastResult`` holds the :class:`scanai.chest.pipeline.ChestResult` behind the latest outputs. ``runInWorker``
    (set by the widget) runs the computation in a worker process (:func:`scanai.mrml.compute`).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.lastResult = None
        self.runInWorker = False

    def getParameterNode(self):
        return ChestQCParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------------------------- inputs
    @staticmethod
    def radiographFromNode(volumeNode):
        """A :class:`scanai.chest.io.Radiograph` from a scalar volume node: its voxels and geometry, and the header
        facts this module stored when it loaded the file (else, for a volume loaded by Slicer's DICOM module, the
        view position, age and sex from the DICOM database). InputError for a volume that is not one 2-D image."""
        from scanai.chest.detection import check_radiograph_array
        from scanai.chest.io import Radiograph

        volume = mrml.volume_from_node(volumeNode)
        check_radiograph_array(volume.array)
        metadata = {"format": "volume node", "source": volumeNode.GetName(),
                    "spacing_source": volumeNode.GetAttribute(ATTRIBUTES["spacing_source"]) or "volume node"}
        for key in ("view_position", "patient_age", "patient_sex"):
            metadata[key] = volumeNode.GetAttribute(ATTRIBUTES[key]) or ""
        if not metadata["view_position"]:
            metadata.update(ChestQCLogic._dicomHeaderFacts(volumeNode))
        known = volumeNode.GetAttribute(ATTRIBUTES["spacing_known"]) != "false"
        return Radiograph(volume, known, metadata)

    @staticmethod
    def _dicomHeaderFacts(volumeNode) -> dict:
        """ViewPosition, PatientAge, PatientSex of a volume loaded by Slicer's DICOM module ({} when unknown)."""
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)
        if not uids or database is None:
            return {}
        facts = {}
        for key, tag in (("view_position", "0018,5101"), ("patient_age", "0010,1010"), ("patient_sex", "0010,0040")):
            try:
                facts[key] = str(database.instanceValue(uids[0], tag) or "").strip()
            except Exception:  # a database without the instance: the header facts are optional
                facts[key] = ""
        return facts

    def loadRadiograph(self, path):
        """Read ``path`` into a new volume node (true spacing) carrying the header facts as attributes; returns
        ``(node, radiograph)``."""
        from scanai.chest.io import read_radiograph

        radiograph = read_radiograph(path)
        node = mrml.volume_to_node(radiograph.image, pathlib.Path(path).name.split(".")[0] or "radiograph")
        self._setAttributes(node, radiograph)
        return node, radiograph

    @staticmethod
    def _setAttributes(node, radiograph) -> None:
        meta = radiograph.metadata
        node.SetAttribute(ATTRIBUTES["spacing_known"], str(radiograph.spacing_known).lower())
        node.SetAttribute(ATTRIBUTES["spacing_source"], str(meta.get("spacing_source", "unknown")))
        for key in ("view_position", "patient_age", "patient_sex"):
            if meta.get(key):
                node.SetAttribute(ATTRIBUTES[key], str(meta[key]))

    @staticmethod
    def thresholds(profile: str = "automatic"):
        """The :class:`~scanai.chest.metrics.Thresholds` of a named profile, or None for "automatic"."""
        from scanai.chest.metrics import THRESHOLD_PROFILES
        from scanai.core.errors import InputError

        if profile in (None, "", "automatic"):
            return None
        if profile not in THRESHOLD_PROFILES:
            raise InputError(f"Unknown threshold profile {profile!r}.",
                             f"Choose one of: {', '.join(['automatic', *THRESHOLD_PROFILES])}.")
        return THRESHOLD_PROFILES[profile]

    # ----------------------------------------------------------------------------------------------- process
    def process(self, inputPath=None, inputVolume=None, backend: str = "network", profile: str = "automatic",
                weighted: bool = True, experimental: bool = False, createNormalised: bool = True,
                lowPercentile: float = 5.0,
                highPercentile: float = 95.0, device: str = "auto", progress=None, detector=None,
                analyse: bool = True) -> dict:
        """Grade a radiograph (``inputVolume``, else the file ``inputPath``) and add the results to the scene.

        backend: "network" or "classical" (``detector``: any object with ``name`` and ``detect``, used instead).
        profile: threshold profile ("automatic" = from the view, age and sex). weighted: ¶0132 rule R6.
        experimental: also detect and report the objects not validated on real radiographs (scapulae, clavicles,
        foreign objects, pneumothorax, effusion; off by default), labelled experimental.
        analyse=False only loads (and normalises) the image.
        Returns the new nodes: "radiograph" (the input volume, or the volume loaded from the file), "normalised"
        (with ``createNormalised``), "segmentation" (segments Lung_Right, Lung_Left, Heart, Spine, with
        ``experimental`` also Scapula_Right, Scapula_Left, Clavicle_Right, Clavicle_Left, AbnormalPart_Pneumothorax,
        AbnormalPart_Effusion; then ForeignObject_k; empty when not found), "lungBox" (ROI), "foreignObjects" (list
        of ROIs, the confidence in each description), "heartWidth" / "lungWidth" (lines of the cardiothoracic
        ratio), "spineLine", "centreLine", "table" (one row per test, the overall level, the findings) and "report"
        (text node). A
        result that is not assessable has no segmentation, boxes or lines. Nothing is added when an error occurs
        or the run is cancelled; the input is never modified.
        """
        from scanai.chest.io import read_radiograph
        from scanai.chest.preprocess import normalise
        from scanai.core.errors import InputError
        from scanai.core.progress import Progress

        progress = Progress.ensure(progress)
        progress(0.0, "Reading the radiograph")
        if inputVolume is not None:
            radiograph = self.radiographFromNode(inputVolume)
            name = inputVolume.GetName()
        elif inputPath:
            radiograph = read_radiograph(inputPath)
            name = pathlib.Path(inputPath).name.split(".")[0] or "radiograph"
        else:
            raise InputError("No radiograph was given.", "Select a loaded radiograph or choose a radiograph file.")
        result = None
        if analyse:
            detector = detector or backend  # a backend name is loaded where the computation runs
            result = mrml.compute("chest.analyse", progress.sub(0.02, 0.85), self.runInWorker and isinstance(
                detector, str), radiograph=radiograph, detector=detector, thresholds=self.thresholds(profile),
                overrides={"weighted": bool(weighted), "experimental": bool(experimental)}, device=device)
        normalised = normalise(radiograph.image, lowPercentile, highPercentile) if createNormalised else None
        progress(0.88, "Adding the results to the scene")
        outputs = {}
        with mrml.scene_transaction():
            if inputVolume is not None:
                outputs["radiograph"] = inputVolume
            else:
                outputs["radiograph"] = mrml.volume_to_node(radiograph.image, name)
                self._setAttributes(outputs["radiograph"], radiograph)
            anchor = outputs["radiograph"]
            if normalised is not None:
                outputs["normalised"] = mrml.volume_to_node(normalised, f"{name} normalised", beside=anchor)
            if result is not None:
                outputs.update(self._resultNodes(result, name, anchor, progress))
                if inputVolume is None:  # never modify the input node
                    anchor.SetAttribute(ATTRIBUTES["level"], result.assessment.level)
            progress(1.0, "Done")  # a Cancel pressed while the nodes were added still removes them
        self.lastResult = result
        return outputs

    def _resultNodes(self, result, name: str, anchor, progress) -> dict:
        """Segmentation, boxes, lines, table and report of a :class:`ChestResult` (inside a scene transaction)."""
        from scanai.chest.pipeline import table_columns

        outputs = {}
        geometry = result.radiograph.image.geometry
        if result.detections is not None:
            progress(0.9, "Adding the segmentation")
            experimental = bool(result.assessment.thresholds and result.assessment.thresholds.experimental)
            outputs["segmentation"] = mrml.segmentation_from_masks(self.segments(result.detections, experimental),
                                                                   geometry, f"{name} anatomy", beside=anchor)
            progress(0.95, "Adding boxes and measurement lines")
            outputs.update(self._markups(result, name, anchor))
        progress(0.98, "Adding the table of tests and the report")
        outputs["table"] = mrml.table_to_node(table_columns(result.assessment.table_rows()),
                                              f"{name} quality tests", beside=anchor)
        outputs["report"] = mrml.text_to_node(self.reportText(result), f"{name} ChestQC report", beside=anchor)
        return outputs

    @staticmethod
    def segments(detections, experimental: bool = False) -> dict:
        """Segment name -> ((1, rows, cols) bool mask, colour): every standard object (empty when not found; the
        experimental ones only with ``experimental``), then one ForeignObject_k per foreign object."""
        from scanai.chest.detection import EXPERIMENTAL
        from scanai.chest.pipeline import FOREIGN_COLOUR, SEGMENT_STYLE, foreign_segment_name

        segments = {segment: (detections.mask(obj)[None], colour) for obj, (segment, colour) in SEGMENT_STYLE.items()
                    if experimental or obj not in EXPERIMENTAL}
        for index, found in enumerate(detections.foreign_objects):
            segments[foreign_segment_name(index)] = (found.mask[None], FOREIGN_COLOUR)
        return segments

    def _markups(self, result, name: str, anchor) -> dict:
        """ROI boxes (lung union, foreign objects) and lines (widths, spine, image centre) in RAS."""
        import numpy as np

        from scanai.chest.detection import Box
        from scanai.chest.pipeline import box_in_ras, centre_line, ras_of_pixel, spine_line, width_line_indices

        detections = result.detections
        geometry = result.radiograph.image.geometry
        axes = np.asarray(geometry.directions)
        outputs = {}
        lungs = detections.lungs()
        if lungs.any():
            centre, size = box_in_ras(geometry, Box.of_mask(lungs))
            outputs["lungBox"] = mrml.roi_to_node(centre, size, f"{name} lung box", beside=anchor, axes=axes,
                                                  description="box around both lungs (tests C4)")
        outputs["foreignObjects"] = []
        for index, found in enumerate(detections.foreign_objects):
            centre, size = box_in_ras(geometry, found.box)
            outputs["foreignObjects"].append(mrml.roi_to_node(
                centre, size, f"{name} foreign object {index + 1}", beside=anchor, axes=axes,
                description=f"confidence {found.confidence:.3f}"))
        keys = {"heart": "heartWidth", "lungs": "lungWidth"}
        for line in result.assessment.width_lines:
            row, start, end = width_line_indices(line)
            node = mrml.line_to_node(ras_of_pixel(geometry, row, start), ras_of_pixel(geometry, row, end),
                                     f"{name} {line.name} width", beside=anchor)
            node.SetDescription(f"maximum horizontal width of the {line.name} ({line.length_px:g} px)")
            self._colour(node, LINE_COLOURS.get(line.name, (1.0, 1.0, 1.0)))
            outputs[keys.get(line.name, f"{line.name}Width")] = node
        spine = spine_line(detections)
        if spine is not None:
            outputs["spineLine"] = mrml.line_to_node(ras_of_pixel(geometry, spine[0], spine[1]),
                                                     ras_of_pixel(geometry, spine[2], spine[3]),
                                                     f"{name} spine line", beside=anchor)
            self._colour(outputs["spineLine"], LINE_COLOURS["spine"])
        top, col, bottom, _col = centre_line(detections.shape)
        outputs["centreLine"] = mrml.line_to_node(ras_of_pixel(geometry, top, col), ras_of_pixel(geometry, bottom, col),
                                                  f"{name} image centre line", beside=anchor)
        self._colour(outputs["centreLine"], LINE_COLOURS["centre"])
        return outputs

    @staticmethod
    def _colour(node, colour) -> None:
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*colour)
            display.SetColor(*colour)

    # ----------------------------------------------------------------------------------------------- text
    @staticmethod
    def reportText(result) -> str:
        """The report shown in the module and stored in the text node: the assessment's report and the warnings."""
        if result is None:
            return ""
        text = result.assessment.report_text()
        if result.warnings:
            text += "Input warnings:\n" + "".join(f"  - {warning}\n" for warning in result.warnings)
        if result.backend:
            text += f"Detector: {result.backend} ({result.seconds:.2f} s).\n"
        return text

    @staticmethod
    def summary(result) -> str:
        """One line for the status label: the level, the rule, the first reasons and the cardiothoracic ratio."""
        from scanai.chest.pipeline import finding

        if result is None:
            return _("Radiograph loaded.")
        assessment = result.assessment
        text = f"{assessment.level}" + (f" ({assessment.rule})" if assessment.rule not in ("", "NA") else "")
        ctr = finding(assessment, "cardiothoracic_ratio")
        if ctr is not None and ctr.value == ctr.value:
            text += f"; cardiothoracic ratio {ctr.value:.3f}"
        if assessment.reasons:
            text += ": " + "; ".join(assessment.reasons[:2]) + (" ..." if len(assessment.reasons) > 2 else "")
        if result.warnings:
            logging.info("ChestQC warnings: " + "; ".join(result.warnings))
        return text


#
# ChestQCTest
#


class ChestQCTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a DICOM phantom graded with a detector that returns its ground truth
    (so the test does not depend on trained weights), bad inputs, the classical detector, and real files."""

    class PhantomOracle:
        """A detector that returns the phantom's ground-truth masks."""

        name = "oracle"

        def __init__(self, phantom) -> None:
            self.phantom = phantom

        def detect(self, image, progress=None):
            from scanai.chest.detection import OBJECTS, detections_from_masks

            names = {"right_lung": "lung_right", "left_lung": "lung_left"}
            masks = {names.get(k, k): v for k, v in self.phantom.masks.items() if names.get(k, k) in OBJECTS}
            return detections_from_masks(masks, image, body=self.phantom.masks.get("torso"), backend=self.name)

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def _phantomFile(self, size=256, photometric="MONOCHROME2", edit=None):
        import tempfile

        import pydicom

        from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom

        phantom = make_chest_phantom(size=size, spacing_mm=0.7)
        folder = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        path = write_phantom_dicom(phantom, folder / f"{photometric}.dcm", photometric)
        if edit is not None:
            dataset = pydicom.dcmread(path)
            edit(dataset)
            dataset.save_as(path)
        return phantom, path

    def test_PhantomGivesEveryOutputOnTheImageGrid(self):
        import numpy as np

        from scanai.chest.detection import EXPERIMENTAL, Box
        from scanai.chest.metrics import THRESHOLD_PROFILES
        from scanai.chest.pipeline import SEGMENT_STYLE

        self.assertEqual(PROFILES[1:], list(THRESHOLD_PROFILES))
        phantom, path = self._phantomFile()
        logic = ChestQCLogic()
        outputs = logic.process(path, detector=self.PhantomOracle(phantom))
        for key in ("radiograph", "normalised", "segmentation", "lungBox", "heartWidth", "lungWidth", "spineLine",
                    "centreLine", "table", "report"):
            self.assertIn(key, outputs)
        volume = outputs["radiograph"]
        self.assertAlmostEqual(volume.GetSpacing()[0], 0.7, places=4)
        self.assertEqual(volume.GetAttribute(ATTRIBUTES["level"]), "FIRST")
        self.assertEqual(logic.lastResult.assessment.level, "FIRST")
        # segments: standard names and colours, masks on the image grid exactly where the phantom's organs are
        colours = mrml.segment_colours(outputs["segmentation"])
        for obj, (segment, colour) in SEGMENT_STYLE.items():
            if obj in EXPERIMENTAL:  # withheld by default: not validated on real radiographs
                self.assertNotIn(segment, colours)
                continue
            self.assertIn(segment, colours)
            np.testing.assert_allclose(colours[segment], colour, atol=1e-6)
        masks = mrml.labels_from_segmentation(outputs["segmentation"], volume)
        np.testing.assert_array_equal(masks["Lung_Right"][0], phantom.masks["right_lung"])
        np.testing.assert_array_equal(masks["Heart"][0], phantom.masks["heart"])
        self.assertNotIn("pneumothorax", [item.name for item in logic.lastResult.assessment.findings])
        shownLogic = ChestQCLogic()
        shown = shownLogic.process(path, detector=self.PhantomOracle(phantom), experimental=True)
        masks = mrml.labels_from_segmentation(shown["segmentation"], shown["radiograph"])
        self.assertFalse(masks["AbnormalPart_Pneumothorax"].any())
        self.assertIn("experimental", shownLogic.lastResult.assessment.finding("pneumothorax").text)
        # the lung box ROI covers exactly the lungs' pixels, in RAS
        box = Box.of_mask(phantom.masks["right_lung"] | phantom.masks["left_lung"])
        bounds = [0.0] * 6
        outputs["lungBox"].GetRASBounds(bounds)
        geometry = mrml.geometry_of_node(volume)
        corners = geometry.ras_of_ijk(np.array([[box.left - 0.5, box.top - 0.5, 0], [box.right - 0.5, box.bottom - 0.5,
                                                                                        0]]))
        np.testing.assert_allclose([bounds[0], bounds[1]], sorted(corners[:, 0]), atol=1e-3)
        np.testing.assert_allclose([bounds[4], bounds[5]], sorted(corners[:, 2]), atol=1e-3)
        self.assertEqual(outputs["foreignObjects"], [])
        # the width lines measure the heart and lung widths in mm
        heartCols = np.flatnonzero(phantom.masks["heart"].any(axis=0))
        self.assertAlmostEqual(outputs["heartWidth"].GetLineLengthWorld(),
                               (heartCols[-1] - heartCols[0] + 1) * 0.7, places=3)
        ctr = logic.lastResult.assessment.finding("cardiothoracic_ratio").value
        self.assertAlmostEqual(outputs["heartWidth"].GetLineLengthWorld() / outputs["lungWidth"].GetLineLengthWorld(),
                               ctr, places=6)
        # the spine line runs down the image centre (the phantom's spine is centred)
        start, end = [0.0] * 3, [0.0] * 3
        outputs["spineLine"].GetNthControlPointPositionWorld(0, start)
        outputs["spineLine"].GetNthControlPointPositionWorld(1, end)
        self.assertLess(abs(start[0]), 0.7)
        self.assertGreater(start[2], end[2])
        # the table holds the tests and the overall level; the report names the level
        table = outputs["table"].GetTable()
        ids = [table.GetValueByName(r, "id").ToString() for r in range(table.GetNumberOfRows())]
        for test in ("C4_top", "C6", "overall_level", "F_ctr"):
            self.assertIn(test, ids)
        self.assertNotIn("C2", ids)  # the scapula and foreign-object tests are experimental: off by default
        self.assertNotIn("C5", ids)
        self.assertEqual(table.GetValueByName(ids.index("overall_level"), "value").ToString(), "FIRST")
        self.assertIn("FIRST", outputs["report"].GetText())
        self.assertIn("Not a diagnosis", outputs["report"].GetText())

    def test_MonochromeFormsAgree(self):
        import numpy as np

        logic = ChestQCLogic()
        arrays, tests = {}, {}
        for photometric in ("MONOCHROME1", "MONOCHROME2"):
            phantom, path = self._phantomFile(size=128, photometric=photometric)
            outputs = logic.process(path, detector=self.PhantomOracle(phantom))
            arrays[photometric] = slicer.util.arrayFromVolume(outputs["normalised"]).copy()
            tests[photometric] = logic.lastResult.assessment.as_dict()
        self.assertTrue(np.allclose(arrays["MONOCHROME1"], arrays["MONOCHROME2"], atol=1e-5))
        self.assertEqual(tests["MONOCHROME1"], tests["MONOCHROME2"])
        self.assertAlmostEqual(float(arrays["MONOCHROME2"].mean()), 0.0, places=4)

    def test_LateralViewIsNotAssessable(self):
        def lateral(dataset):
            dataset.ViewPosition = "LL"

        phantom, path = self._phantomFile(size=128, edit=lateral)
        logic = ChestQCLogic()
        outputs = logic.process(path, detector=self.PhantomOracle(phantom))
        self.assertEqual(logic.lastResult.assessment.level, "NOT ASSESSABLE")
        self.assertIsNone(logic.lastResult.detections)
        self.assertNotIn("segmentation", outputs)
        self.assertIn("lateral", outputs["report"].GetText())
        self.assertIn("lateral", logic.summary(logic.lastResult))

    def test_ExistingVolumeNodeIsAnalysedAndKept(self):
        phantom, path = self._phantomFile(size=128)
        logic = ChestQCLogic()
        node, _radiograph = logic.loadRadiograph(path)
        count = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        outputs = logic.process(inputVolume=node, detector=self.PhantomOracle(phantom), createNormalised=False,
                                weighted=False)
        self.assertIs(outputs["radiograph"], node)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), count)
        self.assertEqual(logic.lastResult.radiograph.metadata["view_position"], "PA")
        self.assertFalse(logic.lastResult.assessment.thresholds.weighted)
        self.assertIsNone(node.GetAttribute(ATTRIBUTES["level"]))  # the input node is not modified

    def test_BadInputsAreRefusedAndTheSceneIsUnchanged(self):
        import tempfile

        import numpy as np
        import pydicom
        import SimpleITK as sitk

        from scanai.core.errors import FileFormatError, InputError
        from scanai.core.image import Volume

        phantom, path = self._phantomFile(size=64)
        folder = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        dataset = pydicom.dcmread(path)
        del dataset.PixelData
        dataset.save_as(folder / "nopixels.dcm")
        (folder / "empty.dcm").write_bytes(b"")
        (folder / "cut.dcm").write_bytes(path.read_bytes()[:4000])
        rng = np.random.default_rng(0)
        colour = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(folder / "colour.png"))
        stack = mrml.volume_to_node(Volume(rng.normal(size=(5, 96, 96))), "CT stack")
        oracle = self.PhantomOracle(phantom)
        count = slicer.mrmlScene.GetNumberOfNodes()
        cases = [({"inputPath": folder / "nopixels.dcm"}, FileFormatError, "no image"),
                 ({"inputPath": folder / "empty.dcm"}, FileFormatError, "empty"),
                 ({"inputPath": folder / "cut.dcm"}, FileFormatError, "incomplete"),
                 ({"inputPath": folder / "colour.png"}, InputError, "colour"),
                 ({"inputVolume": stack}, InputError, "one 2-D image"),
                 ({"inputPath": path, "profile": "giant"}, InputError, "profile"),
                 ({"inputPath": path, "backend": "magic"}, InputError, "backend")]
        for kwargs, error, words in cases:
            with self.assertRaisesRegex(error, words):
                ChestQCLogic().process(**{"detector": oracle if "backend" not in kwargs else None, **kwargs})
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_CancelLeavesTheSceneUnchanged(self):
        from scanai.core.errors import Cancelled
        from scanai.core.progress import CancelToken, Progress

        phantom, path = self._phantomFile(size=128)
        token = CancelToken()

        def cancelLate(fraction, message):
            if fraction > 0.93:  # after the first outputs were added to the scene
                token.cancel()

        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            ChestQCLogic().process(path, detector=self.PhantomOracle(phantom), progress=Progress(cancelLate, token))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_ClassicalBackend(self):
        import importlib.util

        if importlib.util.find_spec("scanai.chest.classical") is None:
            raise unittest.SkipTest("the classical detector is not installed")
        _phantom, path = self._phantomFile(size=256)
        logic = ChestQCLogic()
        outputs = logic.process(path, backend="classical", createNormalised=False)
        result = logic.lastResult
        self.assertEqual(result.backend, "classical")
        self.assertIn(result.assessment.level, ("FIRST", "INTERMEDIATE", "SECOND"))
        self.assertTrue(result.detections.lungs().any())
        self.assertIn("segmentation", outputs)

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
        mono2 = slicer.util.arrayFromVolume(logic.process(original, analyse=False)["normalised"])
        folder = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        recoded = write_monochrome1_copy(original, folder / "mono1.dcm")
        outputs = logic.process(recoded, analyse=False)
        self.assertAlmostEqual(outputs["radiograph"].GetSpacing()[0], 0.168, places=3)
        self.assertTrue(np.allclose(slicer.util.arrayFromVolume(outputs["normalised"]), mono2, atol=1e-5))
        # Fake_MONOHR1.dcm holds the very same stored pixels labelled MONOCHROME1: read correctly, it is the
        # photographic negative, so its normalised image is exactly minus the MONOCHROME2 one.
        fake = slicer.util.arrayFromVolume(logic.process(chest / "Fake_MONOHR1.dcm", analyse=False)["normalised"])
        self.assertTrue(np.allclose(fake, -mono2, atol=1e-5))
        png = logic.process(chest / "00000001_000.png", analyse=False)
        self.assertEqual(png["radiograph"].GetAttribute(ATTRIBUTES["spacing_known"]), "false")
        self.assertEqual(slicer.util.arrayFromVolume(png["normalised"]).shape, (1, 512, 512))
