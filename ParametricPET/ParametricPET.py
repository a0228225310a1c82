"""ParametricPET: voxelwise kinetic maps (Patlak, Logan, 1TCM, 2TCM) and the short-scan Ki network."""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
import unittest
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSequenceNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("scanai") is None:  # a source checkout: scanai/ sits beside this module's folder
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
from scanai import REPOSITORY_URL, mrml

#: Methods as shown in the method box (= scanai.pet.analysis.METHOD_LABELS, then the reference-region models of
#: scanai.pet.reference_cli.REFERENCE_LABELS, which take a reference region instead of an input function).
METHODS = ["Patlak", "Logan", "1TCM", "2TCM irreversible", "2TCM", "Network (short scan)", "SRTM", "SRTM2", "MRTM",
           "MRTM2", "Logan (reference region)", "Patlak (reference region)"]
REFERENCE_METHODS = METHODS[6:]
#: Where the plasma input function comes from.
INPUT_SOURCES = ["table", "table, Feng fit", "blood pool", "population scaled to blood pool"]
#: Slicer's PET colour map (created by the Colors module), used for every parameter map.
PET_COLOUR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
#: Sequence-node attributes written when this module loads a dynamic PET file (frame timing and units).
TIMING_ATTRIBUTES = ("ScanAI.FrameStart_s", "ScanAI.FrameDuration_s")
UNIT_ATTRIBUTE = "ScanAI.ActivityUnit"

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
            "Voxelwise kinetic modelling of dynamic PET: Patlak (Ki, V), Logan (VT), one- and two-tissue "
            "compartment models (K1, k2, k3, k4, vB, Ki, VT; basis functions with optional Levenberg-Marquardt "
            "refinement), and a network that maps late frames (default 30-50 min) plus the input function to Ki. "
            "The plasma input comes from a table (time and activity columns), a blood-pool segment, or a population "
            "curve scaled to the blood pool. Frame timing comes from a table (start_s, duration_s), from the file "
            "loaded here (DICOM or 4-D image with a BIDS sidecar), or from the sequence index (frame mid-times). "
            "Outputs: parameter maps, fit quality, per-segment statistics, the segments' refined fits with their "
            "bound hits and the input delay (optionally fitted), curves with model fits and the Patlak or Logan plot. "
            '<a href="{url}#parametric-pet">Documentation</a>.').format(url=REPOSITORY_URL)
        self.parent.helpText += _(
            " To try it: in File > Download Sample Data, click DynamicPETPhantom under ScanAI (a 60-min dynamic FDG "
            "phantom and its plasma input-function table, generated on this computer: nothing is downloaded). Back "
            "here both are selected: click Apply for Patlak Ki maps.")
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Real test curves: KMAP-M (UC Davis total-body PET, MIT) and kinfitr "
            "[11C]PBR28 data (Matheson et al., EJNMMI Research 2017, MIT).")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data (generated on the user's computer by scanai.samples, never downloaded)
#


def registerSampleData():
    """Add the dynamic PET phantom to Slicer's Sample Data module (category ScanAI) once Slicer has started."""
    mrml.register_sample_data("ParametricPET", __file__, loadSampleData)


def loadSampleData(source=None) -> list:
    """What the sample's button in Sample Data does: generate the files if needed, load the PET frames (sequence)
    and the input-function table, and select them as this module's inputs. Returns the loaded nodes."""
    nodes, _files = mrml.load_sample_data("ParametricPET", source)
    parameterNode = ParametricPETLogic().getParameterNode()
    parameterNode.inputFunctionSource = "table"
    parameterNode.frameTimingTable = None  # the frames' timing is in the sequence index (mid-times, contiguous)
    for node in nodes:
        if isinstance(node, vtkMRMLSequenceNode):
            parameterNode.inputSequence = node
        elif isinstance(node, vtkMRMLTableNode):
            parameterNode.inputFunctionTable = node
    return nodes


#
# ParametricPETParameterNode
#


@parameterNodeWrapper
class ParametricPETParameterNode:
    """inputSequence: PET frames, or inputPath: a DICOM file of the series / a 4-D image with a BIDS sidecar.

    tStarMin: start of the linear phase for Patlak / Logan (0 = the method's default). bloodVolume: fixed vB, or
    negative to fit it. windowStartMin / windowEndMin: the network's late window. fitDelay: fit one input delay
    (compartment models, ±30 s) on the mask's mean curve and use it for every voxel and segment.
    """

    inputSequence: vtkMRMLSequenceNode
    inputPath: pathlib.Path
    frameTimingTable: vtkMRMLTableNode
    inputFunctionSource: Annotated[str, Choice(INPUT_SOURCES)] = "table"
    inputFunctionTable: vtkMRMLTableNode
    bloodPoolSegmentation: vtkMRMLSegmentationNode
    referenceSegmentation: vtkMRMLSegmentationNode
    maskVolume: vtkMRMLScalarVolumeNode
    regionSegmentation: vtkMRMLSegmentationNode
    method: Annotated[str, Choice(METHODS)] = "Patlak"
    createFitQuality: bool = True
    tStarMin: Annotated[float, WithinRange(0.0, 600.0)] = 0.0  # 0: Patlak 20 min, Logan 30 min
    refine: bool = False
    fitDelay: bool = False
    bloodVolume: Annotated[float, WithinRange(-1.0, 0.5)] = -1.0
    windowStartMin: Annotated[float, WithinRange(0.0, 600.0)] = 30.0
    windowEndMin: Annotated[float, WithinRange(0.0, 600.0)] = 50.0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


#
# ParametricPETWidget
#


class ParametricPETWidget(mrml.ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ParametricPETLogic()
        self.setupWidget("ParametricPET.ui")

    def classicalAlternative(self, parameterNode: ParametricPETParameterNode) -> tuple[str, str] | None:
        return ("method", "Patlak") if parameterNode.method.startswith("Network") else None

    def missingInputs(self, parameterNode: ParametricPETParameterNode) -> str:
        p = parameterNode
        if not p.inputSequence and not mrml.selected_file(p.inputPath):
            return _("Select the dynamic PET sequence, or a dynamic PET file to load.")
        if p.method in REFERENCE_METHODS:
            if not p.referenceSegmentation:
                return _("Select a segmentation whose first segment is the reference region (no specific binding).")
        elif p.inputFunctionSource.startswith("table") and not p.inputFunctionTable:
            return _("Select the input function table (time and plasma activity columns).")
        elif not p.inputFunctionSource.startswith("table") and not p.bloodPoolSegmentation:
            return _("Select a segmentation whose first segment is the blood pool (aorta or left ventricle).")
        if p.method.startswith("Network") and p.windowEndMin <= p.windowStartMin:
            return _("The network window must end after it starts.")
        return ""

    def process(self, parameterNode: ParametricPETParameterNode, progress) -> str:
        p = parameterNode
        sequence = p.inputSequence
        if not sequence:
            sequence = self.logic.loadDynamicPet(p.inputPath)
            p.inputSequence = sequence
        outputs = self.logic.process(
            sequence, p.method, inputFunctionTable=p.inputFunctionTable, frameTimingTable=p.frameTimingTable,
            inputFunctionSource=p.inputFunctionSource, bloodPoolSegmentation=p.bloodPoolSegmentation,
            referenceSegmentation=p.referenceSegmentation, maskVolume=p.maskVolume,
            regionSegmentation=p.regionSegmentation, tStarMin=p.tStarMin, refine=p.refine,
            fitDelay=p.fitDelay, bloodVolume=p.bloodVolume, windowMin=(p.windowStartMin, p.windowEndMin),
            createFitQuality=p.createFitQuality, device=p.device, progress=progress)
        first = next(iter(outputs["maps"].values()))
        slicer.util.setSliceViewerLayers(background=first, fit=True)
        done = _("{method} maps computed: {names}.").format(
            method=p.method, names=", ".join(n.GetName() for n in outputs["maps"].values()))
        if mrml.is_experimental(first):
            from scanai.pet.analysis import EXPERIMENTAL_NOTE

            done += " " + _("Note: {text}.").format(text=EXPERIMENTAL_NOTE)
        return done + (" " + _("Warning: {text}").format(text=outputs["warning"]) if outputs["warning"] else "")


#
# ParametricPETLogic
#


class ParametricPETLogic(ScriptedLoadableModuleLogic):
    """Kinetic modelling on MRML nodes; usable without the GUI. ``runInWorker`` (set by the widget) runs the map
    computation in a worker process (:func:`scanai.mrml.compute`)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.runInWorker = False

    def getParameterNode(self):
        return ParametricPETParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------------------------- inputs
    def loadDynamicPet(self, path):
        """Read a dynamic PET (a DICOM file or folder of the series, or a 4-D image with a BIDS JSON sidecar)
        into a new sequence node (index = frame mid-times in s) whose attributes keep the frame timing and unit."""
        from scanai.pet.study import read_dynamic_pet

        path = pathlib.Path(path)
        study = read_dynamic_pet(path.parent if path.suffix.lower() in (".dcm", ".ima") else path)
        with mrml.scene_transaction():
            node = mrml.sequence_to_node(study.sequence, path.name.split(".")[0] or "dynamic PET")
            node.SetAttribute(TIMING_ATTRIBUTES[0], ",".join(f"{v:.6g}" for v in study.timing.start_s))
            node.SetAttribute(TIMING_ATTRIBUTES[1], ",".join(f"{v:.6g}" for v in study.timing.duration_s))
            node.SetAttribute(UNIT_ATTRIBUTE, study.unit)
            mrml.attach_to_browser([], node)
        for warning in study.warnings:
            logging.warning(f"ParametricPET, {path.name}: {warning}")
        return node

    @staticmethod
    def frameTiming(sequenceNode, sequence, frameTimingTable=None):
        """Frame timing: the table if given, else the node's timing attributes, else contiguous index mid-times."""
        from scanai.core.errors import InputError
        from scanai.pet.timing import FrameTiming

        if frameTimingTable is not None:
            return FrameTiming.from_columns(mrml.table_from_node(frameTimingTable))
        starts, durations = (sequenceNode.GetAttribute(name) for name in TIMING_ATTRIBUTES)
        if starts and durations:
            return FrameTiming.from_start_duration([float(v) for v in starts.split(",")],
                                                   [float(v) for v in durations.split(",")])
        unit = sequence.index_unit.strip().lower()
        scale = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0, "minute": 60.0, "minutes": 60.0}
        if unit not in scale:
            raise InputError(f"The PET sequence's index unit is '{sequence.index_unit}', not a time unit, so the "
                             "frame timing is missing.",
                             "Give a frame timing table (start_s, duration_s) or a sequence indexed by time in s.")
        return FrameTiming.from_mid_times([value * scale[unit] for value in sequence.index_values])

    def inputFunction(self, source, table, bloodPool, sequence, timing, reference):
        """(plasma, whole blood or None) from a table, a Feng fit to it, the blood pool or a scaled population curve."""
        from scanai.core.errors import InputError
        from scanai.pet.analysis import blood_pool_input, feng_fitted_input
        from scanai.pet.blood import BloodCurves

        if source.startswith("table"):
            if table is None:
                raise InputError("No input function table was given.", "Select a table with time and Cp columns.")
            curves = BloodCurves.from_columns(mrml.table_from_node(table), unit=self._columnUnit(table))
            if source == "table, Feng fit":
                return feng_fitted_input(curves.plasma, timing), curves.whole_blood
            return curves.plasma, curves.whole_blood
        if bloodPool is None:
            raise InputError("No blood-pool segmentation was given.",
                             "Segment the aorta or the left ventricle and select that segmentation.")
        inside = next(iter(mrml.labels_from_segmentation(bloodPool, reference).values()), None)
        if inside is None:
            raise InputError("The blood-pool segmentation has no segment.", "Add a segment over the blood pool.")
        return blood_pool_input(sequence, timing, inside, population=source != "blood pool"), None

    @staticmethod
    def _columnUnit(table) -> str:
        for index in range(table.GetNumberOfColumns()):
            label = table.GetColumnUnitLabel(table.GetColumnName(index)) or ""
            if label and not table.GetColumnName(index).lower().startswith("time"):
                return label
        return ""

    # ----------------------------------------------------------------------------------------------- process
    def process(self, inputSequence, method: str = "Patlak", inputFunctionTable=None, frameTimingTable=None,
                inputFunctionSource: str = "table", bloodPoolSegmentation=None, maskVolume=None,
                regionSegmentation=None, tStarMin: float = 0.0, refine: bool = False, bloodVolume: float = -1.0,
                windowMin=(30.0, 50.0), createFitQuality: bool = True, device: str = "auto", fitDelay: bool = False,
                referenceSegmentation=None, progress=None) -> dict:
        """Compute parameter maps of ``inputSequence`` and add them, with tables and charts, to the scene.

        Returns the new nodes: ``maps`` (parameter name -> volume, PET colour map), ``quality`` (R2, RMSE,
        bound_hit volumes when ``createFitQuality``), ``inputFunction`` (table) and ``inputFunctionChart``, and with
        ``regionSegmentation``: ``regionStatistics`` (one row per segment, statistics over the fitted voxels, with
        the count of voxels on a fit bound), ``regionFits`` (one row per segment: the refined fit of its mean curve,
        R², whether a parameter sits on a bound, the input delay), ``regionCurves`` + ``regionCurvesChart``
        (mean TACs with the model fit) and ``graphicalPlot`` + ``graphicalPlotChart`` (Patlak or Logan plot); and
        ``warning``: "" or a paragraph saying the fit looks wrong and why (:func:`scanai.pet.analysis.fit_warning`,
        also logged). Nothing is added when an error occurs or the run is cancelled.

        The reference-region methods (SRTM, SRTM2, MRTM, MRTM2, Logan and Patlak with a reference region) take the
        first segment of ``referenceSegmentation`` instead of an input function: their outputs hold
        ``referenceCurve`` (table) and ``referenceCurveChart`` instead of the input function, and no graphical plot.
        """
        from scanai.core.progress import Progress
        from scanai.pet.analysis import fit_warning, in_frame_unit, method_key
        from scanai.pet.kinetic_parameters import KINETIC_PARAMETERS
        from scanai.pet.models import DEFAULT_DELAY_RANGE_S
        from scanai.pet.reference_cli import REFERENCE_LABELS

        progress = Progress.ensure(progress)
        referenceKeys = {label: key for key, label in REFERENCE_LABELS.items()}
        key = referenceKeys.get(method) or method_key(method)
        sequence = mrml.sequence_from_node(inputSequence)
        timing = self.frameTiming(inputSequence, sequence, frameTimingTable)
        mask = mrml.volume_from_node(maskVolume) if maskVolume is not None else None
        name = inputSequence.GetName()
        with mrml.scene_transaction():
            reference = mrml.volume_to_node(sequence.frame(0), f"{name} reference")  # the PET grid, removed below
            try:
                if key in REFERENCE_LABELS:
                    referenceCurve = self.referenceCurve(referenceSegmentation, sequence, reference)
                else:
                    plasma, wholeBlood = self.inputFunction(inputFunctionSource, inputFunctionTable,
                                                            bloodPoolSegmentation, sequence, timing, reference)
                regions = (mrml.labels_from_segmentation(regionSegmentation, reference)
                           if regionSegmentation is not None else {})
            finally:
                for display in [reference.GetNthDisplayNode(i) for i in range(reference.GetNumberOfDisplayNodes())]:
                    slicer.mrmlScene.RemoveNode(display)
                slicer.mrmlScene.RemoveNode(reference)
        if key in REFERENCE_LABELS:
            return self._processReference(inputSequence, key, sequence, timing, referenceCurve, mask, regions,
                                          tStarMin or None, createFitQuality, progress)
        imageUnit = inputSequence.GetAttribute(UNIT_ATTRIBUTE) or ""
        inputUnit = plasma.unit
        plasma, wholeBlood = in_frame_unit(imageUnit, plasma, wholeBlood)
        result = mrml.compute("pet.maps", progress.sub(0.0, 0.9), self.runInWorker, sequence=sequence,
                              timing=timing, plasma=plasma, method=key, whole_blood=wholeBlood, mask=mask,
                              t_star_min=tStarMin or None, refine=refine,
                              vb=bloodVolume if bloodVolume >= 0 else None, window_min=tuple(windowMin), device=device,
                              delay_s=DEFAULT_DELAY_RANGE_S if fitDelay and key in KINETIC_PARAMETERS else None)
        warning = fit_warning(result, sequence, timing, plasma, imageUnit, inputUnit)
        if warning:
            logging.warning(f"ParametricPET, {name}: {warning}")
        progress(0.92, "Adding the results to the scene")
        with mrml.scene_transaction():
            outputs = {**self._mapNodes(result, inputSequence, createFitQuality), "warning": warning}
            table = mrml.table_to_node({"time_s": plasma.t_s, "activity": plasma.activity}, f"{name} input function",
                                       beside=inputSequence, units={"time_s": "s", "activity": plasma.unit})
            outputs["inputFunction"] = table
            outputs["inputFunctionChart"] = mrml.plot_chart(table, "time_s", ["activity"], f"{name} input function",
                                                            "time after injection (s)", "plasma activity")
            if regions:
                outputs.update(self._regionOutputs(name, key, result, regions, sequence, timing, plasma, wholeBlood,
                                                   tStarMin or None, bloodVolume, inputSequence))
        progress(1.0, "Done")
        return outputs

    def _mapNodes(self, result, inputSequence, createFitQuality: bool) -> dict:
        """``maps`` (parameter -> volume node, PET colour map) and ``quality`` (R2, RMSE, bound_hit volume nodes
        when ``createFitQuality``) of ``result`` (a :class:`scanai.pet.analysis.ParametricResult`)."""
        from scanai.pet.analysis import EXPERIMENTAL_METHODS

        name, label = inputSequence.GetName(), self._label(result.method)
        outputs = {"maps": {}, "quality": {}}
        for parameter, volume in result.maps.items():
            unit = result.units.get(parameter, "")
            node = mrml.volume_to_node(volume, f"{name} {label} {parameter}" + (f" ({unit})" if unit else ""),
                                       beside=inputSequence)
            mrml.mark_experimental(node, result.method in EXPERIMENTAL_METHODS)
            mrml.set_colour_map(node, PET_COLOUR_NODE_ID)
            outputs["maps"][parameter] = node
        if createFitQuality:
            for quality, volume in result.quality.items():
                outputs["quality"][quality] = mrml.volume_to_node(volume, f"{name} {label} {quality}",
                                                                  beside=inputSequence)
        return outputs

    @staticmethod
    def _curveOutputs(name, label, regions, tacs, predicted, timing, anchor) -> dict:
        """``regionCurves`` (table: time, each region's mean TAC (R, T) ``tacs`` and its ``predicted`` fit) and
        ``regionCurvesChart``."""
        columns = {"time_min": timing.mid_min}
        for number, region in enumerate(regions):
            columns[region] = tacs[number]
            columns[f"{region} fit"] = predicted[number]
        table = mrml.table_to_node(columns, f"{name} region curves", beside=anchor, units={"time_min": "min"})
        chart = mrml.plot_chart(table, "time_min", list(columns)[1:], f"{name} region curves ({label} fit)",
                                "time after injection (min)", "activity")
        return {"regionCurves": table, "regionCurvesChart": chart}

    @staticmethod
    def referenceCurve(segmentation, sequence, reference):
        """(T,) mean curve of the first segment of ``segmentation`` (the reference region) on the PET grid of
        ``reference`` (a volume node)."""
        from scanai.core.errors import InputError
        from scanai.pet.reference_cli import reference_curve

        if segmentation is None:
            raise InputError("No reference-region segmentation was given.",
                             "Segment a region without specific binding (e.g. cerebellum) and select it.")
        inside = next(iter(mrml.labels_from_segmentation(segmentation, reference).values()), None)
        if inside is None:
            raise InputError("The reference-region segmentation has no segment.", "Add a segment over the region.")
        return reference_curve(sequence, inside)

    def _processReference(self, inputSequence, key, sequence, timing, referenceCurve, mask, regions, tStarMin,
                          createFitQuality, progress) -> dict:
        """The reference-region maps (in the worker when ``runInWorker``), the reference curve and, with
        ``regions``, per-segment statistics, refined fits and curves added to the scene."""
        from scanai.pet.analysis import bound_voxels, fitted_voxels, region_statistics
        from scanai.pet.reference_cli import regional_reference_fits

        result = mrml.compute("pet.reference_maps", progress.sub(0.0, 0.9), self.runInWorker, sequence=sequence,
                              reference=referenceCurve, timing=timing, model=key, mask=mask, t_star_min=tStarMin)
        fitted = regional_reference_fits(sequence, referenceCurve, timing, key, regions, t_star_min=tStarMin)
        progress(0.92, "Adding the results to the scene")
        name, label = inputSequence.GetName(), self._label(key)
        with mrml.scene_transaction():
            outputs = {**self._mapNodes(result, inputSequence, createFitQuality), "warning": ""}
            table = mrml.table_to_node({"time_min": timing.mid_min, "activity": referenceCurve},
                                       f"{name} reference curve", beside=inputSequence, units={"time_min": "min"})
            outputs["referenceCurve"] = table
            outputs["referenceCurveChart"] = mrml.plot_chart(table, "time_min", ["activity"], f"{name} reference curve",
                                                             "time after injection (min)", "activity")
            if regions:
                statistics = region_statistics(result.maps, regions, fitted_voxels(result), bound_voxels(result))
                outputs["regionStatistics"] = mrml.table_to_node(statistics, f"{name} {label} statistics",
                                                                 beside=inputSequence)
            if fitted is not None:
                names, tacs, fit = fitted
                fits = {"region": names, **fit.parameters, "R2": fit.r2, "bound_hit": fit.bound_hit.astype(int)}
                outputs["regionFits"] = mrml.table_to_node(fits, f"{name} {label} region fits", beside=inputSequence)
                outputs.update(self._curveOutputs(name, label, names, tacs, fit.predicted, timing, inputSequence))
        progress(1.0, "Done")
        return outputs

    @staticmethod
    def _label(key: str) -> str:
        from scanai.pet.analysis import METHOD_LABELS
        from scanai.pet.reference_cli import REFERENCE_LABELS

        if key in METHOD_LABELS:
            return METHOD_LABELS[key].split(" (")[0]
        return REFERENCE_LABELS[key].replace(" (reference region)", " ref")

    def _regionOutputs(self, name, key, result, regions, sequence, timing, plasma, wholeBlood, tStarMin, bloodVolume,
                       anchor) -> dict:
        """Per-segment statistics table, mean TACs with the model fit, and the Patlak / Logan plot."""
        import numpy as np

        from scanai.pet.analysis import bound_voxels, fitted_voxels, graphical_axes, region_statistics, region_tacs
        from scanai.pet.models import fit_tacs

        outputs = {}
        statistics = region_statistics(result.maps, regions, fitted_voxels(result), bound_voxels(result))
        outputs["regionStatistics"] = mrml.table_to_node(statistics, f"{name} {self._label(key)} statistics",
                                                         beside=anchor)
        curves = region_tacs(sequence, regions)
        if not curves:
            return outputs
        tacs = np.stack(list(curves.values()))
        fitMethod = "patlak" if key == "network" else key
        fit = fit_tacs(tacs, timing, plasma, fitMethod, t_star_min=tStarMin, whole_blood=wholeBlood,
                       vb=bloodVolume if bloodVolume >= 0 else None, delay_s=result.delay_s)
        fits = {"region": list(curves), **{parameter: values for parameter, values in fit.parameters.items()},
                "R2": fit.r2, "bound_hit": fit.bound_hit.astype(int), "delay_s": fit.delay_s}
        outputs["regionFits"] = mrml.table_to_node(fits, f"{name} {self._label(fitMethod)} region fits",
                                                   beside=anchor, units={"delay_s": "s"})
        outputs.update(self._curveOutputs(name, self._label(fitMethod), list(curves), tacs, fit.predicted, timing,
                                          anchor))
        x, y, xLabel, yLabel = graphical_axes(fitMethod, tacs, timing, plasma)
        plotColumns = {}
        for number, region in enumerate(curves):
            plotColumns[f"{region} x"] = x[number]
            plotColumns[region] = y[number]
        plotTable = mrml.table_to_node(plotColumns, f"{name} graphical plot", beside=anchor)  # x, y per region
        plotName = "Logan plot" if xLabel.startswith("∫Cp / C ") else "Patlak plot"
        chart = mrml.plot_chart(plotTable, f"{next(iter(curves))} x", list(curves), f"{name} {plotName}", xLabel,
                                yLabel)
        for number, region in enumerate(curves):  # each region against its own abscissa
            series = chart.GetNthPlotSeriesNode(number)
            series.SetXColumnName(f"{region} x")
        outputs["graphicalPlot"], outputs["graphicalPlotChart"] = plotTable, chart
        return outputs


#
# ParametricPETTest
#


class ParametricPETTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: phantoms with exact Ki, every method, bad inputs, real curves."""

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

    def _regionSegmentation(self, phantom):
        names = {number: (name, (0.2 * number, 0.8, 0.4)) for number, name in enumerate(phantom.regions, start=1)}
        return mrml.segmentation_from_labels(phantom.labels.array, phantom.labels.geometry, names, "regions")

    def test_KiMatchesTruthOnPhantom(self):
        import numpy as np

        phantom, sequence, inputFunction, timing = self._phantomNodes()
        for timingTable in (timing, None):
            outputs = ParametricPETLogic().process(sequence, "Patlak", inputFunction, timingTable, tStarMin=30.0)
            ki = slicer.util.arrayFromVolume(outputs["maps"]["Ki"])
            truth = phantom.ki_true.array
            inside = truth > 0
            relative = np.abs(ki[inside] - truth[inside]) / truth[inside]
            self.assertLess(relative.max(), 0.025, f"Ki error up to {100 * relative.max():.2f} %")
            self.assertTrue(mrml.geometry_of_node(outputs["maps"]["Ki"]).is_close(phantom.sequence.geometry))
            self.assertGreater(slicer.util.arrayFromVolume(outputs["quality"]["R2"])[inside].min(), 0.99)
            self.assertEqual(outputs["warning"], "")
        scaled = mrml.table_to_node({"time_s": phantom.input_function.t_s,  # Bq/mL read as the image's kBq/mL
                                     "Cp": 1000.0 * phantom.input_function.activity}, "Feng input x1000")
        outputs = ParametricPETLogic().process(sequence, "Patlak", scaled, timing, tStarMin=30.0)
        self.assertIn("x1000", outputs["warning"])

    def test_CompartmentModelWithRegionsGivesStatisticsCurvesAndPlot(self):
        import numpy as np

        phantom, sequence, inputFunction, timing = self._phantomNodes(shape=(1, 12, 12))
        segmentation = self._regionSegmentation(phantom)
        outputs = ParametricPETLogic().process(sequence, "2TCM irreversible", inputFunction, timing,
                                               regionSegmentation=segmentation)
        ki = slicer.util.arrayFromVolume(outputs["maps"]["Ki"])
        # The compartment Ki is per mL of tissue; the phantom's voxel Ki includes the blood fraction (1 - vB).
        vb = np.array([0.0] + [parameters[4] for parameters in phantom.regions.values()])[phantom.labels.array]
        truth = phantom.ki_true.array / (1.0 - vb)
        inside = truth > 0
        self.assertLess(np.max(np.abs(ki[inside] - truth[inside]) / truth[inside]), 0.01)
        statistics = mrml.table_from_node(outputs["regionStatistics"])
        self.assertEqual(outputs["regionStatistics"].GetNumberOfRows(), len(phantom.regions))
        self.assertIn("Ki_mean", statistics)
        curves = mrml.table_from_node(outputs["regionCurves"])
        for region in phantom.regions:
            np.testing.assert_allclose(curves[f"{region} fit"], curves[region], rtol=0.02, atol=1e-3)
        self.assertEqual(outputs["graphicalPlotChart"].GetNumberOfPlotSeriesNodes(), len(phantom.regions))
        self.assertEqual(outputs["maps"]["Ki"].GetDisplayNode().GetColorNodeID(), PET_COLOUR_NODE_ID)

    def test_ReferenceRegionModelGivesBPnd(self):
        """SRTM and MRTM2 with a reference segment: BPnd of three 1TCM regions (0.5, 2, 5) within 2 %, per voxel and
        per segment; no input function needed; a missing reference segmentation is a clear error."""
        import numpy as np

        from scanai.core.errors import InputError
        from scanai.core.image import Geometry, VolumeSequence
        from scanai.pet.input_function import InputFunction
        from scanai.pet.kinetics import two_tissue_tacs
        from scanai.pet.timing import FrameTiming

        timing = FrameTiming.from_durations([10.0] * 6 + [30.0] * 6 + [120.0] * 5 + [300.0] * 14)
        plasma = InputFunction.feng(end_s=timing.end_s[-1] + 1.0, step_s=1.0)
        truth = np.array([0.5, 2.0, 5.0])
        reference = two_tissue_tacs(plasma, timing, 0.2, 0.25, 0.0)[0]
        targets = two_tissue_tacs(plasma, timing, 0.24, 0.24 / (0.8 * (1.0 + truth)), 0.0)
        frames = np.empty((len(timing), 1, 4, 5), dtype=np.float32)
        frames[:, 0, 0, :] = reference[:, None]
        frames[:, 0, 1:, :] = np.transpose(targets)[:, :, None]
        geometry = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
        sequence = mrml.sequence_to_node(VolumeSequence(frames, geometry, list(timing.mid_s)), "reference PET")
        table = mrml.table_to_node({"start_s": timing.start_s, "duration_s": timing.duration_s}, "frames")
        labels = np.zeros((1, 4, 5), dtype=np.uint8)
        labels[0, 1:, :] = np.arange(1, 4)[:, None]
        referenceSegment = mrml.segmentation_from_labels((labels == 0).astype(np.uint8), geometry,
                                                         {1: ("cerebellum", (0.2, 0.6, 0.9))}, "reference")
        regions = mrml.segmentation_from_labels(labels, geometry, {n: (f"region {n}", (0.3 * n, 0.8, 0.4))
                                                                   for n in (1, 2, 3)}, "regions")
        for method in ("SRTM", "MRTM2"):
            outputs = ParametricPETLogic().process(sequence, method, frameTimingTable=table,
                                                   referenceSegmentation=referenceSegment, regionSegmentation=regions)
            bpnd = slicer.util.arrayFromVolume(outputs["maps"]["BPnd"])[0, 1:, :]
            np.testing.assert_allclose(bpnd, np.broadcast_to(truth[:, None], bpnd.shape), rtol=0.02)
            fits = mrml.table_from_node(outputs["regionFits"])
            np.testing.assert_allclose(np.asarray(fits["BPnd"], dtype=float), truth, rtol=0.02)
            self.assertEqual(outputs["referenceCurve"].GetNumberOfRows(), len(timing))
        with self.assertRaises(InputError):
            ParametricPETLogic().process(sequence, "SRTM", frameTimingTable=table)

    def test_RegionFitsShowBoundHitsAndTheFittedDelay(self):
        phantom, sequence, inputFunction, timing = self._phantomNodes(shape=(1, 12, 12))
        segmentation = self._regionSegmentation(phantom)
        outputs = ParametricPETLogic().process(sequence, "2TCM irreversible", inputFunction, timing,
                                               regionSegmentation=segmentation, fitDelay=True)
        fits = mrml.table_from_node(outputs["regionFits"])
        self.assertEqual([outputs["regionFits"].GetCellText(row, 0) for row in range(len(phantom.regions))],
                         list(phantom.regions))
        for column in ("K1", "Ki", "R2", "bound_hit", "delay_s"):
            self.assertIn(column, fits)
        self.assertLess(max(abs(float(d)) for d in fits["delay_s"]), 2.0)  # the phantom's input has no delay
        self.assertTrue(all(float(r) > 0.999 for r in fits["R2"]))
        self.assertIn("bound_hit_voxels", mrml.table_from_node(outputs["regionStatistics"]))

    def test_BloodPoolInputFunction(self):
        import numpy as np

        from scanai.core.image import Volume

        phantom, sequence, inputFunction, timing = self._phantomNodes(shape=(1, 16, 16))
        # Put blood (activity = Cp, frame-averaged) in one corner and use it as the input.
        frames = phantom.sequence.frames.copy()
        cp = phantom.input_function.mean_over_frames(phantom.timing)
        frames[:, 0, :3, :3] = cp[:, None, None]
        from dataclasses import replace

        withBlood = mrml.sequence_to_node(replace(phantom.sequence, frames=frames), "PET with blood")
        pool = np.zeros(frames.shape[1:], dtype=np.int16)
        pool[0, :3, :3] = 1
        blood = mrml.segmentation_from_labels(pool, phantom.sequence.geometry, {1: ("aorta", (1.0, 0.0, 0.0))},
                                              "blood pool")
        mask = mrml.volume_to_node(Volume((phantom.labels.array > 0).astype(np.uint8), phantom.sequence.geometry),
                                   "body")
        outputs = ParametricPETLogic().process(withBlood, "Patlak", None, timing, inputFunctionSource="blood pool",
                                               bloodPoolSegmentation=blood, maskVolume=mask, tStarMin=30.0)
        ki = slicer.util.arrayFromVolume(outputs["maps"]["Ki"])
        truth = phantom.ki_true.array
        inside = truth > 0
        # Frame-mid samples of the blood curve: a few % from the exact curve on the long late frames.
        self.assertLess(np.median(np.abs(ki[inside] - truth[inside]) / truth[inside]), 0.05)

    def test_BadInputsAreRefusedAndTheSceneIsUnchanged(self):
        import numpy as np

        from scanai.core.errors import GeometryError, InputError
        from scanai.core.image import Geometry, Volume

        _phantom, sequence, inputFunction, timing = self._phantomNodes(shape=(1, 8, 8))
        noTime = mrml.table_to_node({"Cp": [0.0, 5.0, 3.0, 2.0], "whole_blood": [0.0, 4.0, 2.5, 1.8]}, "bad")
        shortInput = mrml.table_to_node({"time_s": [0.0, 60.0, 120.0, 600.0], "Cp": [0.0, 50.0, 20.0, 10.0]},
                                        "short input")
        overlapping = mrml.table_to_node({"start_s": [0.0, 50.0], "duration_s": [60.0, 60.0]}, "overlap")
        withNaN = mrml.sequence_from_node(sequence)
        nanFrames = withNaN.frames.copy()
        nanFrames[5, 0, 2, 2] = np.nan
        nanSequence = mrml.sequence_to_node(type(withNaN)(nanFrames, withNaN.geometry, withNaN.index_values), "NaN")
        nonMonotonic = mrml.table_to_node({"start_s": [0.0, 600.0, 300.0], "duration_s": [60.0, 60.0, 60.0]},
                                          "unsorted")
        otherGrid = mrml.volume_to_node(Volume(np.ones((1, 8, 8), np.uint8), Geometry((3.0, 3.0, 3.0))), "mask")
        count = slicer.mrmlScene.GetNumberOfNodes()
        cases = [((sequence, "Patlak", noTime), {}, InputError, "time column"),
                 ((sequence, "Patlak", shortInput, timing), {}, InputError, "input function"),
                 ((sequence, "Patlak", inputFunction, overlapping), {}, InputError, "overlaps"),
                 ((sequence, "Patlak", inputFunction, nonMonotonic), {}, InputError, "not increasing"),
                 ((nanSequence, "2TCM", inputFunction, timing), {}, InputError, "NaN"),
                 ((sequence, "Patlak", inputFunction, timing), {"maskVolume": otherGrid}, GeometryError, "grid")]
        for args, kwargs, error, words in cases:
            with self.assertRaisesRegex(error, words):
                ParametricPETLogic().process(*args, **kwargs)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        suvSequence = mrml.sequence_to_node(mrml.sequence_from_node(sequence), "SUV frames")
        suvSequence.SetAttribute(UNIT_ATTRIBUTE, "SUV")
        becquerel = mrml.table_to_node({"time_s": [0.0, 60.0, 3600.0], "Cp": [0.0, 5e4, 1e4]}, "Bq input",
                                       units={"Cp": "Bq/mL"})
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(InputError, "SUV"):
            ParametricPETLogic().process(suvSequence, "Patlak", becquerel, timing)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_LoadedStudyKeepsItsTimingAndUnit(self):
        import tempfile

        import numpy as np

        from scanai.pet.study import DynamicPet, write_dynamic_pet

        phantom, _sequence, inputFunction, _timing = self._phantomNodes(shape=(1, 8, 8))
        folder = pathlib.Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        # A 4-D NIfTI with its BIDS sidecar, which carries the frame timing and the unit.
        image, _sidecar = write_dynamic_pet(DynamicPet(phantom.sequence, phantom.timing, unit="kBq/mL"),
                                            folder / "study.nii.gz")
        node = ParametricPETLogic().loadDynamicPet(image)
        self.assertEqual(node.GetAttribute(UNIT_ATTRIBUTE), "kBq/mL")
        sequence = mrml.sequence_from_node(node)
        timing = ParametricPETLogic.frameTiming(node, sequence)
        np.testing.assert_allclose(timing.start_s, phantom.timing.start_s, atol=1e-3)
        np.testing.assert_allclose(timing.duration_s, phantom.timing.duration_s, atol=1e-3)
        ki = slicer.util.arrayFromVolume(ParametricPETLogic().process(node, "Patlak", inputFunction,
                                                                      tStarMin=30.0)["maps"]["Ki"])
        inside = phantom.ki_true.array > 0
        self.assertLess(np.max(np.abs(ki[inside] / phantom.ki_true.array[inside] - 1)), 0.025)

    def test_NetworkOnLateFrames(self):
        import numpy as np

        from scanai.core.device import torch_available

        if not torch_available():
            raise unittest.SkipTest("PyTorch is not installed")
        phantom, sequence, inputFunction, timing = self._phantomNodes(shape=(1, 32, 32))
        outputs = ParametricPETLogic().process(sequence, "Network (short scan)", inputFunction, timing,
                                               windowMin=(30.0, 60.0))
        ki = slicer.util.arrayFromVolume(outputs["maps"]["Ki"])
        self.assertTrue(mrml.is_experimental(outputs["maps"]["Ki"]))  # simulation only
        self.assertTrue(outputs["maps"]["Ki"].GetName().endswith("(experimental)"))
        self.assertEqual(ki.shape, phantom.ki_true.array.shape)
        self.assertTrue(np.all(ki >= 0))
        inside = phantom.ki_true.array > 0
        self.assertGreater(np.corrcoef(ki[inside], phantom.ki_true.array[inside])[0, 1], 0.8)

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
        for method in ("Patlak", "2TCM"):
            maps = ParametricPETLogic().process(sequence, method, inputFunction, timing)["maps"]
            ki = slicer.util.arrayFromVolume(maps["Ki"])
            self.assertTrue(np.all(np.isfinite(ki)) and np.all(ki > 0), f"{method}: {ki}")
