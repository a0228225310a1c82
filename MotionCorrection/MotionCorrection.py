"""MotionCorrection: dense cardiac motion over a cine / 4D sequence, strain and segmentation propagation; and
multi-phase cardiac motion-artifact correction of a phase sequence."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
import unittest
from typing import Annotated

import slicer
from slicer import vtkMRMLSegmentationNode, vtkMRMLSequenceNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("scanai") is None:  # a source checkout: scanai/ sits beside this module's folder
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
from scanai import REPOSITORY_URL, mrml

#: Motion estimators (= scanai.motion.pipeline.METHODS; repeated so that loading the module stays light).
METHODS = ["network", "network-pairwise", "demons", "bspline", "svf3d", "network-3d"]
#: What the method box shows for each of METHODS (= scanai.motion.pipeline.METHOD_LABELS).
METHOD_LABELS = ["Multi-pair network (joint)", "Network, pairs independently (ablation)", "Demons (SimpleITK)",
                 "B-spline (SimpleITK)", "Multi-pair SVF optimisation, 3-D (classical)",
                 "Multi-pair network, 3-D (experimental)"]
#: Motion in 2-D slice by slice or in 3-D volumes (= scanai.motion.pipeline.DIMS).
DIMS = ["2d", "3d"]
#: Tasks: motion estimation over a cine, or artifact correction of a phase sequence.
TASKS = ["motion", "artifact"]
#: Artifact-correction methods and phase selections (= scanai.artifact_correction.pipeline.METHODS / SELECTIONS).
ARTIFACT_METHODS = ["network", "registration-fusion", "halfway", "best-phase", "mean"]
ARTIFACT_METHOD_LABELS = ["Multi-phase network (experimental: simulation only)", "Registration-based fusion",
                          "Half-way warping",
                          "Best phase (least motion)", "Mean of the middle phases"]
SELECTIONS = ["successive", "image-smallest", "image-below", "ecg-smallest", "ecg-below"]
#: Table attributes with the peak strains (value in %, and the 1-based frame).
PEAK_ATTRIBUTES = ("ScanAI.PeakGCS_pct", "ScanAI.PeakGCSFrame", "ScanAI.PeakGRS_pct", "ScanAI.PeakGRSFrame")

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
            "Estimates dense motion over a cardiac cine or 4D sequence relative to a reference frame (normally "
            "end-diastole): with the multi-pair network (all image pairs of the cine estimated jointly), the same "
            "network pair by pair, or classical demons / B-spline registration; 'Motion in' chooses 2-D (every slice "
            "on its own) or 3-D (a whole stack or 3-D cine as one volume per frame, through-plane motion included: "
            "the multi-pair SVF optimisation, the experimental 3-D network, demons or B-spline). Outputs, synchronised "
            "with the "
            "input's sequence browser: a sequence of displacement-field transforms, the motion-compensated sequence, "
            "Jacobian-determinant maps (folding where <= 0), and with a segmentation drawn on the reference frame, "
            "the segmentation carried through the cycle and, with a myocardium segment, global circumferential and "
            "radial strain (table and plot). Task 'artifact': corrects the motion artifacts of a multi-phase "
            "(ECG-gated) reconstruction: phase volumes are selected by motion amplitude, ranked by phase and combined "
            "by registration-based fusion (or another classical baseline, or the trained network: experimental, "
            "validated on simulated CT only) into one corrected volume at the centre window, with a "
            "table of per-phase motion amplitude, selection and rank. "
            '<a href="{url}#motion-correction">Documentation</a>.').format(url=REPOSITORY_URL)
        self.parent.helpText += _(
            " To try it: in File > Download Sample Data, click CardiacCinePhantom under ScanAI (a 12-frame cine "
            "phantom with its myocardium and blood-pool segmentation, generated on this computer: nothing is "
            "downloaded). Back here the cine and the segmentation are selected: choose Demons (no PyTorch needed) "
            "and click Apply.")
        self.parent.acknowledgementText = _(
            "Part of the ScanAI extension. Joint multi-pair motion estimation after US 2025/0259316 A1; multi-phase "
            "artifact correction after US 12387302 B2; classical "
            "registration by SimpleITK. Real cine MR test data: Sunnybrook Cardiac Data (Radau et al., MIDAS Journal "
            "2009, CC0).")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data (generated on the user's computer by scanai.samples, never downloaded)
#


def registerSampleData():
    """Add the cardiac cine phantom to Slicer's Sample Data module (category ScanAI) once Slicer has started."""
    mrml.register_sample_data("MotionCorrection", __file__, loadSampleData)


def loadSampleData(source=None) -> list:
    """What the sample's button in Sample Data does: generate the files if needed, load the cine (sequence) and its
    segmentation, and select them as this module's inputs. Returns the loaded nodes."""
    nodes, _files = mrml.load_sample_data("MotionCorrection", source)
    parameterNode = MotionCorrectionLogic().getParameterNode()
    parameterNode.task = "motion"
    parameterNode.referenceFrame = 1
    parameterNode.segmentationFrame = 0
    for node in nodes:
        if isinstance(node, vtkMRMLSequenceNode):
            parameterNode.inputSequence = node
        elif isinstance(node, vtkMRMLSegmentationNode):
            parameterNode.inputSegmentation = node
    return nodes


#
# MotionCorrectionParameterNode
#


@parameterNodeWrapper
class MotionCorrectionParameterNode:
    """inputSequence: cine / 4D volume sequence. referenceFrame: 1-based frame every frame is related to (ED for
    strain), 0 = end-diastole found automatically (the largest LV cavity with a segmentation, else the ECG trigger
    nearest R, else frame 1). inputSegmentation: optional, drawn on frame segmentationFrame (1-based; 0 = the
    reference frame; needed when the reference is found automatically). myocardiumSegment / bloodPoolSegment:
    segment names ("" = pick the segment whose name contains "myo" / "blood", "cavity" or "LV"). The artifact task
    uses inputSequence as the phase sequence and the fields from artifactMethod on."""

    task: Annotated[str, Choice(TASKS)] = "motion"
    inputSequence: vtkMRMLSequenceNode
    referenceFrame: Annotated[int, WithinRange(0, 9999)] = 0
    method: Annotated[str, Choice(METHODS)] = "network"
    dims: Annotated[str, Choice(DIMS)] = "2d"
    inputSegmentation: vtkMRMLSegmentationNode
    segmentationFrame: Annotated[int, WithinRange(0, 9999)] = 0
    myocardiumSegment: str  # "" (the default) = automatic
    bloodPoolSegment: str
    createWarped: bool = True
    createTransforms: bool = True
    createJacobian: bool = True
    createPropagated: bool = True
    createStrain: bool = True
    artifactMethod: Annotated[str, Choice(ARTIFACT_METHODS)] = "registration-fusion"  # the network: experimental
    selection: Annotated[str, Choice(SELECTIONS)] = "successive"
    windowSeconds: Annotated[float, WithinRange(0.001, 2.0)] = 0.15
    rrSeconds: Annotated[float, WithinRange(0.0, 5.0)] = 0.0  # 0 = from the ECG table
    ecgTable: vtkMRMLTableNode
    timingTable: vtkMRMLTableNode
    roiSegmentation: vtkMRMLSegmentationNode
    phaseCount: Annotated[int, WithinRange(0, 64)] = 0  # 0 = the method's default
    amplitudeThreshold: Annotated[float, WithinRange(0.0, 1e6)] = 0.0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    refineOnCine: bool = True  # network methods: instance optimisation after the network; False = the network alone


#
# MotionCorrectionWidget
#


class MotionCorrectionWidget(mrml.ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MotionCorrectionLogic()
        self.setupWidget("MotionCorrection.ui")

    def classicalAlternative(self, parameterNode: MotionCorrectionParameterNode) -> tuple[str, str] | None:
        if parameterNode.task == "artifact":
            return ("artifactMethod", "registration-fusion") if parameterNode.artifactMethod == "network" else None
        onTorch = parameterNode.method.startswith("network") or parameterNode.method == "svf3d"
        return ("method", "demons") if onTorch else None

    def initializeParameterNode(self) -> None:
        mrml.ModuleWidgetMixin.initializeParameterNode(self)
        if not self._parameterNode.inputSequence:
            self._parameterNode.inputSequence = mrml.first_volume_sequence()

    def setParameterNode(self, parameterNode) -> None:
        mrml.ModuleWidgetMixin.setParameterNode(self, parameterNode)
        for boxName, labels in (("methodComboBox", METHOD_LABELS), ("artifactMethodComboBox", ARTIFACT_METHOD_LABELS),
                                ("taskComboBox", [_("Motion estimation (cine)"), _("Artifact correction (phases)")]),
                                ("dimsComboBox", [_("2-D, slice by slice"), _("3-D, one volume per frame")])):
            box = getattr(self.ui, boxName, None)
            if parameterNode and box is not None and hasattr(box, "setItemText"):
                for index, label in enumerate(labels):  # the box keeps the order of the parameter's choices
                    box.setItemText(index, label)

    def missingInputs(self, parameterNode: MotionCorrectionParameterNode) -> str:
        p = parameterNode
        if not p.inputSequence:
            return _("Select a cine or 4D volume sequence.")
        frames = p.inputSequence.GetNumberOfDataNodes()
        if frames < 2:
            return _("The sequence needs at least 2 frames.")
        if p.task == "artifact":
            return ""
        if p.referenceFrame > frames or p.segmentationFrame > frames:
            return _("The reference and segmentation frames must be between 1 and {frames}.").format(frames=frames)
        if p.inputSegmentation and not p.referenceFrame and not p.segmentationFrame:
            return _("Say on which frame the segmentation was drawn (the reference is found automatically).")
        if not (p.createWarped or p.createTransforms or p.createJacobian or p.createStrain
                or (p.createPropagated and p.inputSegmentation)):
            return _("Choose at least one output.")
        return ""

    def process(self, parameterNode: MotionCorrectionParameterNode, progress) -> str:
        p = parameterNode
        if p.task == "artifact":
            outputs = self.logic.correctArtifacts(
                p.inputSequence, p.artifactMethod, p.selection, p.windowSeconds, p.rrSeconds, p.ecgTable,
                p.timingTable, p.phaseCount, p.amplitudeThreshold or None, p.roiSegmentation, device=p.device,
                progress=progress)
            return outputs["corrected"].GetAttribute("ScanAI.Summary")
        outputs = self.logic.process(
            p.inputSequence, p.referenceFrame, p.method, p.createWarped, p.createTransforms, progress,
            inputSegmentation=p.inputSegmentation, segmentationFrame=p.segmentationFrame,
            myocardiumSegment=(p.myocardiumSegment or "").strip(),
            bloodPoolSegment=(p.bloodPoolSegment or "").strip(), createJacobian=p.createJacobian,
            createPropagated=p.createPropagated, createStrain=p.createStrain, device=p.device, dims=p.dims,
            refineOnCine=p.refineOnCine)
        names = ", ".join(node.GetName() for node in outputs.values())
        result = self.logic.lastResult
        rule = result.reference_rule
        from scanai.motion.pipeline import method_description

        summary = _("Registered {n} frames to frame {reference} ({rule}) with the {method}: {names}.").format(
            n=p.inputSequence.GetNumberOfDataNodes(), reference=result.fields.reference_index + 1,
            rule=_("given") if rule == "given" else _("end-diastole by the {rule}").format(rule=rule),
            method=method_description(result.fields), names=names)
        table = outputs.get("table")
        if table is not None and table.GetAttribute(PEAK_ATTRIBUTES[0]):
            summary += " " + _("Peak GCS {gcs} % (frame {gcsFrame}), peak GRS {grs} % (frame {grsFrame}).").format(
                gcs=table.GetAttribute(PEAK_ATTRIBUTES[0]), gcsFrame=table.GetAttribute(PEAK_ATTRIBUTES[1]),
                grs=table.GetAttribute(PEAK_ATTRIBUTES[2]), grsFrame=table.GetAttribute(PEAK_ATTRIBUTES[3]))
        return summary


#
# MotionCorrectionLogic
#


class MotionCorrectionLogic(ScriptedLoadableModuleLogic):
    """Motion, strain and segmentation propagation on MRML nodes; usable without the GUI.

    ``lastResult`` holds the :class:`scanai.motion.pipeline.CineMotion` behind the latest outputs. ``runInWorker``
    (set by the widget) runs the computations in a worker process (:func:`scanai.mrml.compute`).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.lastResult = None
        self.runInWorker = False

    def getParameterNode(self):
        return MotionCorrectionParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------------------------- inputs
    @staticmethod
    def segmentRoles(names, myocardiumSegment: str = "", bloodPoolSegment: str = ""):
        """(myocardium name or None, blood-pool name or None) among the segment ``names``.

        A given name must exist (else InputError). Left empty, the myocardium is the first segment whose name
        contains "myo", the blood pool the first other one containing "blood", else "cavity", else the word "LV".
        """
        from scanai.core.errors import InputError

        names = list(names)

        def named(wanted: str, what: str):
            if wanted not in names:
                raise InputError(f"The segmentation has no segment named '{wanted}' (the {what}); it has: "
                                 f"{', '.join(names) or 'no segment'}.",
                                 f"Choose one of those names for the {what}, or leave the field empty.")
            return wanted

        def first(pattern: str, exclude):
            return next((n for n in names if n != exclude and re.search(pattern, n, re.IGNORECASE)), None)

        myocardium = named(myocardiumSegment, "myocardium") if myocardiumSegment else first("myo", None)
        if bloodPoolSegment:
            bloodPool = named(bloodPoolSegment, "blood pool")
        else:
            bloodPool = first("blood", myocardium) or first("cavity", myocardium) or first(r"\bLV\b", myocardium)
        if myocardium is not None and myocardium == bloodPool:
            raise InputError(f"The segment '{myocardium}' was chosen as both the myocardium and the blood pool.",
                             "Choose two different segments.")
        return myocardium, bloodPool

    @staticmethod
    def segmentMasks(segmentationNode, sequence, referenceIndex: int) -> dict:
        """Each segment as a (K, J, I) bool mask on the cine's grid, keyed by name (the segmentation's order).

        The segmentation must have been drawn on the cine's grid (GeometryError otherwise) and must not be empty
        there (InputError)."""
        from scanai.core.errors import InputError

        mrml.check_segmentation_on_grid(
            segmentationNode, sequence.geometry, single_slice=sequence.frames.shape[1] == 1,
            action="Draw the segmentation on the cine's reference frame (Segment Editor with the sequence's "
                   "volume as the source volume), or resample it onto the cine's grid.")
        with mrml.temporary_nodes():  # the grid to sample the segments on, and what sampling leaves behind
            reference = mrml.volume_to_node(sequence.frame(referenceIndex), "reference frame (temporary)")
            masks = mrml.labels_from_segmentation(segmentationNode, reference)
        if not masks or not any(mask.any() for mask in masks.values()):
            raise InputError(f"The segmentation '{segmentationNode.GetName()}' has no voxel on the cine's grid.",
                             "Draw the structures on the reference frame of the cine.")
        return masks

    # ----------------------------------------------------------------------------------------------- process
    def process(self, inputSequence, referenceFrame: int = 1, method: str = "network", createWarped: bool = True,
                createTransforms: bool = True, progress=None, inputSegmentation=None, myocardiumSegment: str = "",
                bloodPoolSegment: str = "", createJacobian: bool = True, createPropagated: bool = True,
                createStrain: bool = True, device: str = "auto", segmentationFrame: int = 0, dims: str = "2d",
                refineOnCine: bool = True) -> dict:
        """Estimate the motion of every frame relative to ``referenceFrame`` (1-based, as in the sequence browser;
        0 = end-diastole found automatically, :mod:`scanai.motion.end_diastole`) and add the results beside the
        input, synchronised with its sequence browser. ``inputSegmentation`` is drawn on frame
        ``segmentationFrame`` (1-based; 0 = the reference frame, which must then be given); a segmentation drawn on
        another frame is carried onto the reference. ``lastResult.reference_rule`` says how the
        reference was chosen. ``dims``: "2d" = every slice on its own, "3d" = one volume per frame (a stack of at
        least 4 slices; methods svf3d, network-3d, demons, bspline: :func:`scanai.motion.pipeline.checked_dims`).
        ``refineOnCine`` (network methods): refine the network's fields on this cine by instance optimisation (the
        default); False = the network alone (:func:`scanai.motion.network.estimate_with_network`, ``refine_steps``
        0).

        Returns the new nodes: ``"transforms"`` (grid-transform sequence, FromParent = the pull-back field, identity
        at the reference), ``"warped"`` (motion-compensated volume sequence), ``"jacobian"`` (volume sequence of
        det(I + grad u)), ``"propagated"`` (sequence of segmentations with the input's segment names and colours,
        with ``inputSegmentation``), ``"table"`` (per frame: time, GCS_pct, GRS_pct, fold_fraction,
        mean_displacement_mm, mean_residual) and ``"chart"`` (GCS and GRS against time, with a myocardium segment).
        Strain is relative to the reference frame, so that should be end-diastole. Nothing is added when an error
        occurs or the run is cancelled; the input is never modified.
        """
        from scanai.core.errors import InputError
        from scanai.core.image import VolumeSequence
        from scanai.core.progress import Progress
        from scanai.motion.pipeline import pack_label_layers

        progress = Progress.ensure(progress)
        if method not in METHODS:
            raise InputError(f"Unknown motion estimation method {method!r}.", f"Use one of: {', '.join(METHODS)}.")
        sequence = mrml.sequence_from_node(inputSequence)
        count = len(sequence)
        if count < 2:
            raise InputError(f"Motion estimation needs at least 2 frames; the sequence '{inputSequence.GetName()}' "
                             f"has {count}.", "Select a volume sequence (cine) with several time points.")
        for frame, what in ((referenceFrame, "Reference frame"), (segmentationFrame, "Segmentation frame")):
            if not 0 <= int(frame) <= count:
                raise InputError(f"{what} {frame} does not exist: the sequence has {count} frames (1 to {count}; "
                                 "0 = automatic).", "Choose a frame within that range.")
        referenceIndex = int(referenceFrame) - 1 if referenceFrame else None
        drawnIndex = int(segmentationFrame) - 1 if segmentationFrame else referenceIndex
        if inputSegmentation is not None and drawnIndex is None:
            raise InputError("Say on which frame the segmentation was drawn: the reference frame is found "
                             "automatically.", "Set the segmentation frame, or choose a reference frame.")

        masks, colours, layers, order = {}, {}, [], []
        myocardium = bloodPool = None
        if inputSegmentation is not None:
            masks = self.segmentMasks(inputSegmentation, sequence, drawnIndex)
            colours = mrml.segment_colours(inputSegmentation)
            myocardium, bloodPool = self.segmentRoles(masks, myocardiumSegment, bloodPoolSegment)
            for role, what in ((myocardium, "myocardium"), (bloodPool, "blood pool")):
                if role is not None and not masks[role].any():
                    raise InputError(f"The {what} segment '{role}' has no voxel on the cine's grid.",
                                     f"Draw the {what} on the reference frame of the cine.")
            order = [n for n in (myocardium, bloodPool) if n is not None] + [n for n in masks
                                                                            if n not in (myocardium, bloodPool)]
            layers = pack_label_layers([masks[n] for n in order])
        firstLayer, firstMembers = layers[0] if layers else (None, [])
        myocardiumLabel = 1 if myocardium is not None else None
        bloodPoolLabel = None
        if bloodPool is not None and order.index(bloodPool) in firstMembers:
            bloodPoolLabel = order.index(bloodPool) + 1

        propagate = bool(createPropagated) and firstLayer is not None
        result = mrml.compute("motion.cine", progress.sub(0.0, 0.85), self.runInWorker, sequence=sequence,
                              reference_index=referenceIndex, labels_index=drawnIndex, method=method,
                              labels=firstLayer,
                              myocardium_label=myocardiumLabel, blood_pool_label=bloodPoolLabel,
                              device=device if method.startswith("network") or method == "svf3d" else None,
                              propagate=propagate,
                              dims=dims, **({} if refineOnCine or not method.startswith("network") else
                                            {"refine_steps": 0}))
        fields = result.fields
        if len(layers) > 1 and drawnIndex != fields.reference_index:
            raise InputError("Overlapping segments can be carried only from the reference frame.",
                             "Draw the segmentation on the reference frame, or make its segments not overlap.")
        propagated = {}
        if propagate:
            from scanai.motion.propagate import propagate_labels

            step = 0.05 / len(layers)
            layerLabels = [result.labels] + [
                propagate_labels(layer, fields.displacement_mm, sequence.geometry,
                                 progress=progress.sub(0.85 + step * n, 0.85 + step * (n + 1)))
                for n, (layer, _members) in enumerate(layers[1:], start=1)]
            for labels, (_layer, members) in zip(layerLabels, layers, strict=True):
                for member in members:
                    propagated[order[member]] = labels == member + 1
            propagated = {name: propagated[name] for name in masks}  # the input's segment order

        progress(0.9, "Adding the results to the scene")
        name = inputSequence.GetName()
        index = (sequence.index_values, sequence.index_name, sequence.index_unit)
        outputs = {}
        with mrml.scene_transaction():
            if createTransforms:
                outputs["transforms"] = mrml.transform_sequence_to_node(
                    fields.displacement_mm, sequence.geometry, index[0], f"{name} motion", index[1], index[2],
                    like=inputSequence)
            progress(0.92, "Adding the motion-compensated sequence")
            if createWarped:
                outputs["warped"] = mrml.sequence_to_node(fields.warped, f"{name} motion-compensated",
                                                          like=inputSequence)
            progress(0.94, "Adding the Jacobian maps")
            if createJacobian:
                outputs["jacobian"] = mrml.sequence_to_node(VolumeSequence(result.jacobian, sequence.geometry, *index),
                                                            f"{name} Jacobian determinant", like=inputSequence)
            progress(0.96, "Adding the propagated segmentation")
            if propagated:
                segments = {segment: (propagated[segment], colours.get(segment, (0.5, 0.5, 0.5)))
                            for segment in propagated}
                outputs["propagated"] = mrml.segmentation_sequence_to_node(
                    segments, sequence.geometry, index[0], f"{inputSegmentation.GetName()} propagated", index[1],
                    index[2], like=inputSequence)
            sequences = list(outputs.values())
            progress(0.98, "Adding the strain table")
            if createStrain:
                outputs.update(self._tableOutputs(result, sequence, name, inputSequence))
            if sequences:
                browser = mrml.attach_to_browser(sequences, inputSequence)
                if "jacobian" in outputs:
                    self._showJacobian(browser, outputs["jacobian"])
        self.lastResult = result
        progress(1.0, "Done")
        return outputs

    # ------------------------------------------------------------------------------------ artifact correction
    @staticmethod
    def timingFromTables(ecgTable=None, timingTable=None):
        """(R peaks or None, windows or None) from an ECG / R-peak table node and a timing table node."""
        from scanai.artifact_correction.tables import read_ecg_table, windows_from_table

        rPeaks = read_ecg_table(mrml.table_from_node(ecgTable)) if ecgTable is not None else None
        windows = None
        if timingTable is not None:
            columns = mrml.table_from_node(timingTable)
            count = timingTable.GetNumberOfRows()
            windows = windows_from_table([{name: values[row] for name, values in columns.items()}
                                          for row in range(count)])
        return rPeaks, windows

    def roiMask(self, segmentationNode, sequence):
        """All segments of ``segmentationNode`` together as a (K, J, I) bool mask on the phase volumes' grid."""
        import numpy as np

        masks = self.segmentMasks(segmentationNode, sequence, 0)
        return np.logical_or.reduce(list(masks.values()))

    def correctArtifacts(self, inputSequence, method: str = "registration-fusion", selection: str = "successive",
                         windowSeconds: float = 0.15, rrSeconds: float = 0.0, ecgTable=None, timingTable=None,
                         phaseCount: int = 0, amplitudeThreshold: float | None = None, roiSegmentation=None,
                         descending: bool = False, device: str = "auto", progress=None, anchor=None) -> dict:
        """Correct the motion artifacts of the phase sequence ``inputSequence`` (index: phase in % or window centre
        in s; a sequence node, or a library VolumeSequence with ``anchor`` the node to name and place the results
        by) and add the results beside it.

        Timing: ``windowSeconds`` (each phase volume's data window) with ``rrSeconds`` (a regular R-R interval; 0 =
        none) or ``ecgTable`` (time_s + ecg_mV, or r_peak_time_s), or a ``timingTable`` (item, window_start_s,
        window_end_s). Returns ``"corrected"`` (a volume on the input grid; a sequence when the model gives several),
        ``"table"`` (per phase volume: window, cycle, phase, motion amplitudes, selected, rank) and ``"chart"``
        (motion amplitude per phase volume). ``lastResult`` holds the library's ArtifactCorrection. Nothing is
        added when an error occurs or the run is cancelled; the input is never modified.
        """
        import numpy as np

        from scanai.artifact_correction.pipeline import EXPERIMENTAL_NOTE, phase_windows
        from scanai.core.image import VolumeSequence
        from scanai.core.progress import Progress

        progress = Progress.ensure(progress)
        given = isinstance(inputSequence, VolumeSequence)
        sequence = inputSequence if given else mrml.sequence_from_node(inputSequence)
        anchor = anchor or inputSequence
        rPeaks, timing = self.timingFromTables(ecgTable, timingTable)
        windows = phase_windows(sequence, windowSeconds, rPeaks, rrSeconds or None, timing)
        roi = self.roiMask(roiSegmentation, sequence) if roiSegmentation is not None else None
        result = mrml.compute("motion.artifact", progress.sub(0.0, 0.9), self.runInWorker, sequence=sequence,
                              windows=windows, method=method, selection=selection, count=phaseCount or None,
                              threshold=amplitudeThreshold, r_peaks=rPeaks, roi=roi, descending=descending,
                              device=device)
        progress(0.92, "Adding the corrected volume")
        name = anchor.GetName()
        phases = ", ".join(mrml.format_index_value(sequence.index_values[i]) for i in result.selected)
        window = result.output_windows[0]
        where = f"{window.phase_pct:.1f} %" if window.phase_pct is not None else f"{window.mid_s:.3f} s"
        summary = (f"Corrected phase volumes {phases} {sequence.index_unit} (ranked) into one volume at {where} "
                   f"({window.start_s:.3f}-{window.end_s:.3f} s) with the {result.method} method in "
                   f"{result.seconds:.2f} s."
                   + (f" Registration fusion was used instead of the network: {result.fallback_reason}."
                      if result.fallback_reason else "")
                   + (f" Note: {EXPERIMENTAL_NOTE}." if result.experimental else ""))
        outputs = {}
        with mrml.scene_transaction():
            corrected = result.corrected
            if len(corrected) == 1:
                outputs["corrected"] = mrml.volume_to_node(corrected.frame(0), f"{name}_MC_{where.replace(' ', '')}",
                                                           beside=anchor)
            else:
                outputs["corrected"] = mrml.sequence_to_node(corrected, f"{name} corrected")
            mrml.mark_experimental(outputs["corrected"], result.experimental)
            for key, value in (("ScanAI.Method", result.method), ("ScanAI.RequestedMethod", method),
                               ("ScanAI.FallbackReason", result.fallback_reason or ""), ("ScanAI.InputItems", ",".join(
                    str(i + 1) for i in result.selected)), ("ScanAI.OutputWindow_s",
                    ",".join(f"{w.start_s:.4f}-{w.end_s:.4f}" for w in result.output_windows)),
                    ("ScanAI.Summary", summary)):
                outputs["corrected"].SetAttribute(key, value)
            progress(0.96, "Adding the phase table")
            rows = result.table_rows()
            columns = {column: [np.nan if row[column] is None else row[column] for row in rows] for column in rows[0]}
            outputs["table"] = mrml.table_to_node(columns, f"{name} phases", beside=anchor,
                                                  units={"window_start_s": "s", "window_end_s": "s", "phase_pct": "%"})
            amplitudes = ["image_motion_amplitude"] + (["ecg_motion_amplitude"] if result.ecg_amplitude is not None
                                                       else [])
            outputs["chart"] = mrml.plot_chart(outputs["table"], "item", amplitudes, f"{name} motion amplitude",
                                               "phase volume", "motion amplitude")
        self.lastResult = result
        progress(1.0, "Done")
        return outputs

    def correctArtifactsOfVolumes(self, volumeNodes, phasesPct, **kwargs) -> dict:
        """:meth:`correctArtifacts` for separate phase volumes (scalar volume nodes on one grid) with their cardiac
        phases in %; GeometryError naming the first volume on another grid. Results are placed by the first volume."""
        from scanai.core.errors import InputError
        from scanai.core.image import VolumeSequence

        volumeNodes = list(volumeNodes)
        if len(volumeNodes) != len(phasesPct):
            raise InputError(f"{len(volumeNodes)} phase volumes were given with {len(phasesPct)} phases.",
                             "Give one cardiac phase (%) per phase volume.")
        sequence = VolumeSequence.from_volumes([mrml.volume_from_node(node) for node in volumeNodes], phasesPct,
                                               "phase", "%")
        return self.correctArtifacts(sequence, anchor=volumeNodes[0], **kwargs)

    @staticmethod
    def _tableOutputs(result, sequence, name, anchor) -> dict:
        """The per-frame table (strain, folding, displacement, residual), with peak attributes, and the chart."""
        from scanai.motion.pipeline import strain_rows

        rows = strain_rows(result, sequence)
        columns = {column: [row[column] for row in rows] for column in rows[0]}
        unit = sequence.index_unit
        table = mrml.table_to_node(columns, f"{name} motion table", beside=anchor,
                                   units={"time": unit, "GCS_pct": "%", "GRS_pct": "%", "mean_displacement_mm": "mm"})
        outputs = {"table": table}
        if result.strain is not None:
            gcs, gcsFrame = result.strain.peak_circumferential()
            grs, grsFrame = result.strain.peak_radial()
            for attribute, value in zip(PEAK_ATTRIBUTES, (f"{gcs:.2f}", str(gcsFrame + 1), f"{grs:.2f}",
                                                          str(grsFrame + 1)), strict=True):
                table.SetAttribute(attribute, value)
            xLabel = f"{sequence.index_name} ({unit})" if unit else sequence.index_name
            outputs["chart"] = mrml.plot_chart(table, "time", ["GCS_pct", "GRS_pct"], f"{name} strain", xLabel,
                                               "strain (%)")
        return outputs

    @staticmethod
    def _showJacobian(browser, jacobianSequence) -> None:
        """Show the Jacobian proxy volume with a window of 0 to 2 (1 = no volume change)."""
        proxy = browser.GetProxyNode(jacobianSequence)
        if proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode"):
            mrml.set_colour_map(proxy, "vtkMRMLColorTableNodeFileColdToHotRainbow.txt", (0.0, 2.0))


#
# MotionCorrectionTest
#


class MotionCorrectionTest(ScriptedLoadableModuleTest):
    """Runs the logic on real MRML nodes: a phantom with exact motion and myocardium, bad inputs, the Sunnybrook
    cine when present, and the network when its weights are installed."""

    PHANTOM = {"n_frames": 5, "shape": (1, 64, 64), "amplitude_px": 3.0, "twist_deg": 4.0, "seed": 3}

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        mrml.run_test_methods(self)

    def _phantomSequenceNode(self, **overrides):
        from scanai.motion.phantom import smooth_motion_phantom

        sequence, truth = smooth_motion_phantom(**{**self.PHANTOM, **overrides})
        return mrml.sequence_to_node(sequence, "phantom cine"), sequence, truth

    def _phantomSegmentation(self, sequence, name="phantom segmentation", geometry=None):
        """LV myocardium (label 1) and blood pool (label 2) of the phantom's first frame (end-diastole)."""
        import numpy as np

        from scanai.motion.phantom import myocardium_mask

        myocardium = myocardium_mask(sequence, 0, amplitude_px=self.PHANTOM["amplitude_px"],
                                     twist_deg=self.PHANTOM["twist_deg"])
        k, j, i = np.indices(myocardium.shape)
        centre = (np.asarray(myocardium.shape[1:]) - 1) / 2.0
        inner = 0.16 * min(myocardium.shape[1:]) * 0.9
        blood = ~myocardium & (np.hypot(j - centre[0], i - centre[1]) < inner)
        labels = myocardium.astype(np.uint8) + 2 * blood.astype(np.uint8)
        return mrml.segmentation_from_labels(labels, geometry or sequence.geometry,
                                             {1: ("LV myocardium", (0.8, 0.3, 0.2)),
                                              2: ("LV blood pool", (0.9, 0.1, 0.1))}, name)

    def test_PhantomWithSegmentationGivesEveryOutput(self):
        import numpy as np

        from scanai.motion.phantom import contraction_profile, myocardium_mask
        from scanai.motion.propagate import dice

        node, sequence, truth = self._phantomSequenceNode()
        segmentation = self._phantomSegmentation(sequence)
        logic = MotionCorrectionLogic()
        outputs = logic.process(node, referenceFrame=1, method="demons", inputSegmentation=segmentation)
        for key in ("transforms", "warped", "jacobian", "propagated", "table", "chart"):
            self.assertIn(key, outputs)
        for leftover in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLLabelMapVolumeDisplayNode"):  # no helper nodes left
            self.assertEqual(slicer.mrmlScene.GetNodesByClass(leftover).GetNumberOfItems(), 0, leftover)
        count = len(sequence)
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(node)
        for key in ("transforms", "warped", "jacobian", "propagated"):
            output = outputs[key]
            self.assertEqual(output.GetNumberOfDataNodes(), count, key)
            self.assertEqual([output.GetNthIndexValue(t) for t in range(count)],
                             [node.GetNthIndexValue(t) for t in range(count)], key)
            self.assertEqual((output.GetIndexName(), output.GetIndexUnit()), (node.GetIndexName(), node.GetIndexUnit()))
            self.assertTrue(browser.IsSynchronizedSequenceNode(output, True), key)
        # the grid transforms hold exactly the library's field, and that field is the phantom's motion
        library = logic.lastResult.fields.displacement_mm
        spacing = np.asarray(sequence.geometry.spacing_mm)
        for t in range(count):
            field = mrml.displacement_from_grid_transform(outputs["transforms"].GetNthDataNode(t))
            self.assertLess(np.abs(field - library[t]).max(), 1e-4)
            self.assertLess(np.linalg.norm((field - truth[t]) / spacing, axis=-1).mean(), 0.5)
        # table: one row per frame, no strain at the reference frame, contraction shortens the circumference
        table = mrml.table_from_node(outputs["table"])
        self.assertEqual(outputs["table"].GetNumberOfRows(), count)
        np.testing.assert_allclose(table["time"], sequence.index_values)
        self.assertLess(abs(table["GCS_pct"][0]), 1e-6)
        self.assertLess(abs(table["GRS_pct"][0]), 1e-6)
        endSystole = int(np.argmax(contraction_profile(count)))
        self.assertLess(table["GCS_pct"][endSystole], -2.0)
        self.assertGreater(table["GRS_pct"][endSystole], 2.0)
        self.assertEqual(outputs["chart"].GetNumberOfPlotSeriesNodes(), 2)
        self.assertEqual(outputs["table"].GetAttribute(PEAK_ATTRIBUTES[1]), str(endSystole + 1))
        # the propagated segmentation keeps names and colours and follows the myocardium to end-systole
        reference = mrml.volume_to_node(sequence.frame(0), "grid")
        propagatedNode = outputs["propagated"].GetNthDataNode(endSystole)
        self.assertEqual(mrml.segment_colours(propagatedNode), mrml.segment_colours(segmentation))
        propagated = mrml.labels_from_segmentation(propagatedNode, reference)["LV myocardium"]
        expected = myocardium_mask(sequence, endSystole, amplitude_px=self.PHANTOM["amplitude_px"],
                                   twist_deg=self.PHANTOM["twist_deg"])
        self.assertGreaterEqual(dice(propagated, expected), 0.95)
        # the Jacobian is 1 at the reference and shows the wall's compression elsewhere
        jacobian = slicer.util.arrayFromVolume(outputs["jacobian"].GetNthDataNode(0))
        np.testing.assert_allclose(jacobian, 1.0, atol=1e-6)

    def test_RecoversPhantomMotion(self):
        import numpy as np

        node, sequence, truth = self._phantomSequenceNode(n_frames=4)
        outputs = MotionCorrectionLogic().process(node, referenceFrame=1, method="demons", createWarped=False,
                                                  createJacobian=False, createStrain=False)
        self.assertEqual(set(outputs), {"transforms"})
        transforms = outputs["transforms"]
        self.assertEqual(transforms.GetNumberOfDataNodes(), 4)
        spacing = np.asarray(sequence.geometry.spacing_mm)
        for t in range(4):
            field = mrml.displacement_from_grid_transform(transforms.GetNthDataNode(t))
            error_px = np.linalg.norm((field - truth[t]) / spacing, axis=-1).mean()
            self.assertLess(error_px, 0.5, f"frame {t + 1}: mean endpoint error {error_px:.2f} px")

    def test_WarpedFramesMatchReference(self):
        import numpy as np

        node, sequence, _truth = self._phantomSequenceNode(n_frames=4)
        warped = MotionCorrectionLogic().process(node, referenceFrame=1, method="demons",
                                                 createTransforms=False)["warped"]
        reference = sequence.frames[0]
        for t in range(1, 4):
            before = np.abs(sequence.frames[t] - reference).mean()
            after = np.abs(slicer.util.arrayFromVolume(warped.GetNthDataNode(t)) - reference).mean()
            self.assertLess(after, 0.6 * before)

    def test_SegmentRolesArePickedByName(self):
        from scanai.core.errors import InputError

        roles = MotionCorrectionLogic.segmentRoles
        self.assertEqual(roles(["LV blood pool", "LV myocardium", "RV"]), ("LV myocardium", "LV blood pool"))
        self.assertEqual(roles(["Myocardium", "LV cavity"]), ("Myocardium", "LV cavity"))
        self.assertEqual(roles(["myo", "LV"]), ("myo", "LV"))
        self.assertEqual(roles(["RV", "aorta"]), (None, None))
        self.assertEqual(roles(["wall", "inside"], "wall", "inside"), ("wall", "inside"))
        with self.assertRaisesRegex(InputError, "no segment named 'muscle'"):
            roles(["LV myocardium"], "muscle")

    def test_EndDiastoleIsFoundAutomatically(self):
        """Reference 0: the largest LV cavity of the segmentation carried through the cycle (the phantom relaxes
        at frame 1, contracts after), with the segmentation drawn on a later frame."""
        node, sequence, _truth = self._phantomSequenceNode()
        segmentation = self._phantomSegmentation(sequence)
        logic = MotionCorrectionLogic()
        logic.process(node, referenceFrame=0, segmentationFrame=1, method="demons", inputSegmentation=segmentation,
                      createWarped=False, createTransforms=False, createJacobian=False)
        self.assertEqual(logic.lastResult.fields.reference_index, 0)
        self.assertIn("cavity", logic.lastResult.reference_rule)

    def test_BadInputsAreRefusedAndTheSceneIsUnchanged(self):
        import numpy as np

        from scanai.core.errors import GeometryError, InputError
        from scanai.core.image import Geometry, VolumeSequence

        node, sequence, _truth = self._phantomSequenceNode(n_frames=3)
        single = mrml.sequence_to_node(VolumeSequence(sequence.frames[:1], sequence.geometry), "one frame")
        elsewhere = self._phantomSegmentation(sequence, "coarse segmentation", Geometry((2.0, 2.0, 1.0)))
        segmentation = self._phantomSegmentation(sequence)
        before = [slicer.util.arrayFromVolume(node.GetNthDataNode(t)).copy() for t in range(3)]
        count = slicer.mrmlScene.GetNumberOfNodes()
        cases = [((single,), {}, InputError, "at least 2 frames"),
                 ((node,), {"referenceFrame": 4}, InputError, "Reference frame 4"),
                 ((node,), {"referenceFrame": -1}, InputError, "Reference frame -1"),
                 ((node,), {"referenceFrame": 0, "inputSegmentation": segmentation}, InputError, "which frame"),
                 ((node,), {"inputSegmentation": elsewhere}, GeometryError, "another grid"),
                 ((node,), {"inputSegmentation": elsewhere, "myocardiumSegment": "muscle"}, GeometryError, "grid"),
                 ((node,), {"method": "optical flow"}, InputError, "Unknown motion estimation method"),
                 ((node,), {"dims": "3d"}, InputError, "3-D motion needs one volume per frame")]
        for args, kwargs, error, words in cases:
            with self.assertRaisesRegex(error, words):
                MotionCorrectionLogic().process(*args, **{"method": "demons", **kwargs})
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        for t in range(3):
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node.GetNthDataNode(t)), before[t])
        self.assertEqual(node.GetNumberOfDataNodes(), 3)

    def test_ThreeDimensionalMotion(self):
        """A 3-D+t cine in 3-D (the SVF optimisation and the 3-D network): through-plane motion recovered; without
        PyTorch both say what to install."""
        import numpy as np

        from scanai.core.device import torch_available
        from scanai.core.errors import ModelError
        from scanai.motion.phantom3d import beating_ventricle_phantom

        phantom = beating_ventricle_phantom(n_frames=2, shape=(20, 24, 24), endo_radius_px=4.0, wall_px=2.5,
                                            amplitude_px=1.5, noise=0.0)
        node = mrml.sequence_to_node(phantom.sequence, "3-D cine")
        if not torch_available():
            for method in ("svf3d", "network-3d"):
                with self.assertRaisesRegex(ModelError, "PyTorch is not installed"):
                    MotionCorrectionLogic().process(node, referenceFrame=1, method=method, dims="3d")
            return
        for method in ("svf3d", "network-3d"):
            logic = MotionCorrectionLogic()
            outputs = logic.process(node, referenceFrame=1, method=method, dims="3d", createWarped=False,
                                    device="cpu")
            self.assertIn("transforms", outputs)
            fields = logic.lastResult.fields
            self.assertEqual(fields.method, method)
            wall = phantom.myocardium
            error = np.linalg.norm(fields.displacement_mm[1] - phantom.displacement_mm[1], axis=-1)[wall].mean()
            still = np.linalg.norm(phantom.displacement_mm[1], axis=-1)[wall].mean()
            self.assertLess(error, 0.5 * still)
            self.assertGreater(np.abs(fields.displacement_mm[1][wall][:, 2]).max(), 1.0)  # through-plane motion

    def test_CancelLeavesTheSceneUnchanged(self):
        from scanai.core.errors import Cancelled
        from scanai.core.progress import CancelToken, Progress

        node, sequence, _truth = self._phantomSequenceNode(n_frames=3)
        segmentation = self._phantomSegmentation(sequence)
        token = CancelToken()

        def cancelLate(fraction, message):
            if fraction > 0.93:  # after the first outputs were added to the scene
                token.cancel()

        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)  # exists in the application
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(Cancelled):
            MotionCorrectionLogic().process(node, method="demons", inputSegmentation=segmentation,
                                            progress=Progress(cancelLate, token))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_NetworkMethod(self):
        """The shipped network through the module (skipped until its weights are installed)."""
        import numpy as np

        from scanai.core.catalog import MODELS_DIR
        from scanai.core.device import torch_available

        if not torch_available():
            raise unittest.SkipTest("PyTorch is not installed")
        if not (MODELS_DIR / "motion_network.pt").is_file():
            raise unittest.SkipTest("the motion network weights are not installed")
        node, sequence, truth = self._phantomSequenceNode()
        segmentation = self._phantomSegmentation(sequence)
        for method, refine in (("network", True), ("network-pairwise", True), ("network", False)):
            logic = MotionCorrectionLogic()
            outputs = logic.process(node, method=method, inputSegmentation=segmentation, device="cpu",
                                    refineOnCine=refine)
            self.assertEqual(logic.lastResult.fields.method, method)
            self.assertEqual(logic.lastResult.fields.options["refine_steps"] > 0, refine)
            spacing = np.asarray(sequence.geometry.spacing_mm)
            for t in range(len(sequence)):
                field = mrml.displacement_from_grid_transform(outputs["transforms"].GetNthDataNode(t))
                self.assertLess(np.abs(field - logic.lastResult.fields.displacement_mm[t]).max(), 1e-4)
                error = np.linalg.norm((field - truth[t]) / spacing, axis=-1).mean()
                still = np.linalg.norm(truth[t] / spacing, axis=-1).mean()
                # half the true motion, or 0.5 px for frames that barely move (near end-diastole)
                self.assertLessEqual(error, max(0.5 * still, 0.5), f"{method}, frame {t + 1}: {error:.2f} px")
            self.assertLess(abs(mrml.table_from_node(outputs["table"])["GCS_pct"][0]), 1e-6)
            self.assertEqual(outputs["propagated"].GetNumberOfDataNodes(), len(sequence))

    # ------------------------------------------------------------------------------------ artifact correction
    def _phaseSequenceNode(self, phases=(69.0, 72.0, 75.0, 78.0), slices=2, seed=5):
        """A simulated multi-phase cardiac CT (phase index in %), its R-peak table node and the library truth."""
        import numpy as np

        from scanai.artifact_correction.simulator import simulate_phase_sequence

        sequence, rPeaks, truth = simulate_phase_sequence(np.random.default_rng(seed), list(phases), slices=slices)
        node = mrml.sequence_to_node(sequence, "phase sequence")
        table = mrml.table_to_node({"r_peak_time_s": rPeaks.times_s}, "R peaks")
        return node, table, sequence, truth

    def test_ArtifactCorrectionGivesACorrectedVolumeOnTheInputGrid(self):
        import numpy as np

        node, table, sequence, truth = self._phaseSequenceNode()
        logic = MotionCorrectionLogic()
        outputs = logic.correctArtifacts(node, "registration-fusion", windowSeconds=0.15, ecgTable=table)
        corrected = outputs["corrected"]
        self.assertTrue(mrml.geometry_of_node(corrected).is_close(sequence.geometry, 1e-9))
        array = slicer.util.arrayFromVolume(corrected)
        self.assertEqual(array.shape, sequence.frames.shape[1:])
        self.assertEqual(array.dtype, sequence.frames.dtype)
        centre = 0.5 * (sequence.frames[1] + sequence.frames[2])
        target = truth.target[0]
        self.assertLess(np.sqrt(np.mean((array - target) ** 2)), np.sqrt(np.mean((sequence.frames[1] - target) ** 2)))
        self.assertGreater(np.sqrt(np.mean((centre - target) ** 2)), 0.0)
        rows = mrml.table_from_node(outputs["table"])
        self.assertEqual(list(rows["item"]), [1, 2, 3, 4])
        self.assertEqual(list(rows["rank"]), [1, 2, 3, 4])
        np.testing.assert_allclose(rows["phase_pct"], [69, 72, 75, 78], atol=1e-6)
        self.assertEqual(corrected.GetAttribute("ScanAI.InputItems"), "1,2,3,4")
        self.assertFalse(mrml.is_experimental(corrected))  # the classical twin
        self.assertIn("73.5 %", corrected.GetAttribute("ScanAI.Summary"))
        self.assertEqual(outputs["chart"].GetNumberOfPlotSeriesNodes(), 2)

    def test_ArtifactBadInputsAreRefusedAndTheSceneIsUnchanged(self):
        from scanai.core.errors import InputError

        node, table, _sequence, _truth = self._phaseSequenceNode(phases=(70.0, 75.0, 80.0))
        short = mrml.table_to_node({"r_peak_time_s": [0.0, 0.5]}, "short ECG")
        timing = mrml.table_to_node({"item": [1, 2, 3], "window_start_s": [1.6, 1.65, 1.7],
                                     "window_end_s": [1.75, 1.8, 1.85]}, "timing")
        count = slicer.mrmlScene.GetNumberOfNodes()
        cases = [({"method": "mean", "ecgTable": short, "timingTable": timing}, "cover"),
                 ({"method": "mean", "rrSeconds": 1.0, "phaseCount": 5}, "only 3"),
                 ({"method": "mean", "rrSeconds": 1.0, "selection": "ecg-smallest"}, "ECG"),
                 ({"method": "unknown", "rrSeconds": 1.0}, "Unknown method")]
        for kwargs, words in cases:
            with self.assertRaisesRegex(InputError, words, msg=str(kwargs)):
                MotionCorrectionLogic().correctArtifacts(node, **kwargs)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_ArtifactCorrectionOfSeparateVolumes(self):
        from scanai.core.errors import GeometryError
        from scanai.core.image import Geometry, Volume

        _node, _table, sequence, _truth = self._phaseSequenceNode()
        volumes = [mrml.volume_to_node(sequence.frame(t), f"phase {t}") for t in range(4)]
        outputs = MotionCorrectionLogic().correctArtifactsOfVolumes(volumes, [69.0, 72.0, 75.0, 78.0],
                                                                    method="mean", rrSeconds=1.0)
        self.assertTrue(mrml.geometry_of_node(outputs["corrected"]).is_close(sequence.geometry, 1e-9))
        self.assertTrue(outputs["corrected"].GetName().startswith("phase 0_MC_73.5%"))
        elsewhere = mrml.volume_to_node(Volume(sequence.frames[3], Geometry((2.0, 2.0, 2.0))), "coarse")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaisesRegex(GeometryError, "different grid"):
            MotionCorrectionLogic().correctArtifactsOfVolumes(volumes[:3] + [elsewhere], [69.0, 72.0, 75.0, 78.0],
                                                              method="mean", rrSeconds=1.0)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_ArtifactNetwork(self):
        """The shipped multi-phase network through the module (skipped until its weights are installed)."""
        import numpy as np

        from scanai.core.catalog import MODELS_DIR
        from scanai.core.device import torch_available
        from scanai.core.errors import InputError

        if not torch_available():
            raise unittest.SkipTest("PyTorch is not installed")
        if not (MODELS_DIR / "motion_artifact_network.pt").is_file():
            raise unittest.SkipTest("the motion-artifact network weights are not installed")
        node, table, sequence, truth = self._phaseSequenceNode()
        outputs = MotionCorrectionLogic().correctArtifacts(node, "network", ecgTable=table, device="cpu")
        experimental = mrml.is_experimental(outputs["corrected"])
        self.assertEqual(experimental, outputs["corrected"].GetAttribute("ScanAI.Method") == "network")
        self.assertEqual(experimental, "(experimental)" in outputs["corrected"].GetName())
        array = slicer.util.arrayFromVolume(outputs["corrected"]).astype(float)
        target = truth.target[0]
        rmse = np.sqrt(np.mean((array - target) ** 2))
        self.assertLess(rmse, np.sqrt(np.mean((sequence.frames[1] - target) ** 2)))
        three, threeTable, _s, _t = self._phaseSequenceNode(phases=(70.0, 75.0, 80.0))
        with self.assertRaisesRegex(InputError, "4 phase volumes"):
            MotionCorrectionLogic().correctArtifacts(three, "network", ecgTable=threeTable, device="cpu")

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
        warped = MotionCorrectionLogic().process(node, method="demons", createTransforms=False,
                                                 createJacobian=False, createStrain=False)["warped"]
        reference = sequence.frames[0]
        before = np.mean([np.abs(sequence.frames[t] - reference).mean() for t in range(1, 4)])
        after = np.mean([np.abs(slicer.util.arrayFromVolume(warped.GetNthDataNode(t)) - reference).mean()
                         for t in range(1, 4)])
        self.assertLess(after, before)
