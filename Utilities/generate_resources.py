"""Regenerate the modules' .ui files, the icons, and the file listing of ``scanai/CMakeLists.txt``.

Run from the repository root: ``python Utilities/generate_resources.py``. The .ui files stay editable in Qt
Designer; this script only keeps the four modules' layouts consistent (Inputs / Outputs / Advanced sections,
``SlicerParameterName`` bindings, Apply + Cancel + progress bar + status line).
"""

from __future__ import annotations

import pathlib
from xml.sax.saxutils import escape

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (kind, object name, label, parameter name, extra properties)
MODULES = {
    "MotionCorrection": {
        "Inputs": [
            ("combo", "taskComboBox", "Task:", "task",
             {"items": ["motion", "artifact"],
              "toolTip": "motion: dense motion over a cine (strain, propagation); artifact: correct the motion "
                         "artifacts of a multi-phase (ECG-gated) reconstruction"}),
            ("node", "inputSequenceSelector", "Cine / 4D / phase sequence:", "inputSequence",
             {"nodeTypes": "vtkMRMLSequenceNode"}),
            ("int", "referenceFrameSpinBox", "Reference frame (end-diastole):", "referenceFrame",
             {"minimum": 0, "maximum": 9999, "specialValueText": "end-diastole, found automatically"}),
            ("combo", "methodComboBox", "Motion estimation:", "method",
             {"items": ["network", "network-pairwise", "demons", "bspline", "svf3d"]}),
            ("combo", "dimsComboBox", "Motion in:", "dims",
             {"items": ["2d", "3d"],
              "toolTip": "2-D: every slice on its own (in-plane motion; the networks, demons, B-spline); 3-D: one "
                         "volume per frame of a stack or 3-D cine, through-plane motion included (SVF "
                         "optimisation, demons, B-spline)"}),
            ("node", "inputSegmentationSelector", "Segmentation (optional):",
             "inputSegmentation", {"nodeTypes": "vtkMRMLSegmentationNode", "noneEnabled": True}),
            ("int", "segmentationFrameSpinBox", "Segmentation drawn on frame:", "segmentationFrame",
             {"minimum": 0, "maximum": 9999, "specialValueText": "the reference frame"}),
            ("text", "myocardiumSegmentLineEdit", "Myocardium segment:", "myocardiumSegment",
             {"placeholderText": "automatic (name contains \"myo\")"}),
            ("text", "bloodPoolSegmentLineEdit", "Blood-pool segment:", "bloodPoolSegment",
             {"placeholderText": "automatic (name contains \"blood\", \"cavity\" or \"LV\")"}),
        ],
        "Outputs": [
            ("check", "createTransformsCheckBox", "Displacement-field transforms", "createTransforms", {}),
            ("check", "createWarpedCheckBox", "Motion-compensated sequence", "createWarped", {}),
            ("check", "createJacobianCheckBox", "Jacobian-determinant maps (folding where <= 0)", "createJacobian", {}),
            ("check", "createPropagatedCheckBox", "Segmentation carried through the cycle", "createPropagated", {}),
            ("check", "createStrainCheckBox", "Strain table and plot (GCS, GRS), folding and residual per frame",
             "createStrain", {}),
        ],
        "Multi-phase artifact correction": [
            ("combo", "artifactMethodComboBox", "Correction:", "artifactMethod",
             {"items": ["network", "registration-fusion", "halfway", "best-phase", "mean"],
              "toolTip": "registration-based fusion (the default) or another classical baseline; the trained "
                         "multi-phase network (the patent's model) is experimental: validated on simulated CT only"}),
            ("combo", "selectionComboBox", "Phase selection:", "selection",
             {"items": ["successive", "image-smallest", "image-below", "ecg-smallest", "ecg-below"],
              "toolTip": "successive: the consecutive windows with the least motion; smallest / below: by the "
                         "image-based (¶56) or ECG-based (¶57) motion amplitude"}),
            ("double", "windowSecondsSpinBox", "Acquisition window:", "windowSeconds",
             {"minimum": 0.001, "maximum": 2.0, "singleStep": 0.01, "decimals": 3, "suffix": " s",
              "toolTip": "data window of each phase volume (a half-scan: half the rotation time)"}),
            ("double", "rrSecondsSpinBox", "R-R interval:", "rrSeconds",
             {"minimum": 0.0, "maximum": 5.0, "singleStep": 0.05, "decimals": 3, "suffix": " s",
              "specialValueText": "from the ECG table", "toolTip": "regular heart cycle length"}),
            ("node", "ecgTableSelector", "ECG / R-peak table (optional):", "ecgTable",
             {"nodeTypes": "vtkMRMLTableNode", "noneEnabled": True,
              "toolTip": "columns time_s and ecg_mV, or r_peak_time_s"}),
            ("node", "timingTableSelector", "Timing table (optional):", "timingTable",
             {"nodeTypes": "vtkMRMLTableNode", "noneEnabled": True,
              "toolTip": "columns item, window_start_s, window_end_s (optional cycle_index, phase_pct)"}),
            ("node", "roiSegmentationSelector", "Heart ROI (optional):", "roiSegmentation",
             {"nodeTypes": "vtkMRMLSegmentationNode", "noneEnabled": True,
              "toolTip": "limits the image-based motion amplitude to these segments"}),
            ("int", "phaseCountSpinBox", "Phase volumes to combine:", "phaseCount",
             {"minimum": 0, "maximum": 64, "specialValueText": "method default"}),
            ("double", "amplitudeThresholdSpinBox", "Amplitude threshold:", "amplitudeThreshold",
             {"minimum": 0.0, "maximum": 1e6, "singleStep": 1.0, "toolTip": "for the '-below' selections"}),
        ],
        "Advanced": [
            ("combo", "deviceComboBox", "Network device:", "device", {"items": ["auto", "cpu", "cuda"]}),
            ("check", "refineOnCineCheckBox", "Refine the network's motion on this cine", "refineOnCine",
             {"toolTip": "network methods: a few steps of instance optimisation on this cine after the network "
                         "(about 0.3 s per 20-frame 256x256 slice; closer strain on phantoms); off: the network "
                         "alone, in three passes"}),
        ],
    },
    "ParametricPET": {
        "Inputs": [
            ("node", "inputSequenceSelector", "Dynamic PET sequence:", "inputSequence",
             {"nodeTypes": "vtkMRMLSequenceNode", "noneEnabled": True}),
            ("path", "inputPathLineEdit", "Or load a dynamic PET file:", "inputPath",
             {"nameFilters": "Dynamic PET (*.dcm *.ima *.nii *.nii.gz *.nrrd *.nhdr *.mha);;All files (*)"}),
            ("node", "frameTimingSelector", "Frame timing table (optional):", "frameTimingTable",
             {"nodeTypes": "vtkMRMLTableNode", "noneEnabled": True}),
            ("combo", "inputFunctionSourceComboBox", "Input function from:", "inputFunctionSource",
             {"items": ["table", "table, Feng fit", "blood pool", "population scaled to blood pool"]}),
            ("node", "inputFunctionSelector", "Input function table:", "inputFunctionTable",
             {"nodeTypes": "vtkMRMLTableNode", "noneEnabled": True}),
            ("node", "bloodPoolSelector", "Blood-pool segmentation:", "bloodPoolSegmentation",
             {"nodeTypes": "vtkMRMLSegmentationNode", "noneEnabled": True}),
            ("node", "referenceRegionSelector", "Reference region (SRTM, MRTM, ... ; its first segment):",
             "referenceSegmentation", {"nodeTypes": "vtkMRMLSegmentationNode", "noneEnabled": True}),
            ("node", "maskSelector", "Mask (optional):", "maskVolume",
             {"nodeTypes": "vtkMRMLScalarVolumeNode", "noneEnabled": True}),
            ("node", "regionSelector", "Regions for statistics and curves (optional):", "regionSegmentation",
             {"nodeTypes": "vtkMRMLSegmentationNode", "noneEnabled": True}),
        ],
        "Outputs": [
            ("combo", "methodComboBox", "Method:", "method",
             {"items": ["Patlak", "Logan", "1TCM", "2TCM irreversible", "2TCM", "Network (short scan)", "SRTM",
                        "SRTM2", "MRTM", "MRTM2", "Logan (reference region)", "Patlak (reference region)"]}),
            ("check", "createFitQualityCheckBox", "Fit quality maps (R², RMSE, parameters at a bound)",
             "createFitQuality", {}),
        ],
        "Advanced": [
            ("double", "tStarSpinBox", "Patlak / Logan start time t*:", "tStarMin",
             {"minimum": 0.0, "maximum": 600.0, "singleStep": 1.0, "suffix": " min",
              "specialValueText": "method default"}),
            ("check", "refineCheckBox", "Refine compartment fits (Levenberg-Marquardt)", "refine", {}),
            ("check", "fitDelayCheckBox", "Fit the input delay (compartment models, within ±30 s)", "fitDelay", {}),
            ("double", "bloodVolumeSpinBox", "Blood volume vB:", "bloodVolume",
             {"minimum": -1.0, "maximum": 0.5, "singleStep": 0.01, "specialValueText": "fitted"}),
            ("double", "windowStartSpinBox", "Network window start:", "windowStartMin",
             {"minimum": 0.0, "maximum": 600.0, "singleStep": 5.0, "suffix": " min"}),
            ("double", "windowEndSpinBox", "Network window end:", "windowEndMin",
             {"minimum": 0.0, "maximum": 600.0, "singleStep": 5.0, "suffix": " min"}),
            ("combo", "deviceComboBox", "Device:", "device", {"items": ["auto", "cpu", "cuda"]}),
        ],
    },
    "KSpaceCalibration": {
        "Inputs": [
            ("path", "inputPathLineEdit", "Raw k-space file:", "inputPath",
             {"nameFilters": "Raw k-space (*.dat *.h5 *.mrd *.cfl *.npy *.npz *.mat)"}),
            ("node", "inputVolumeSelector", "Or a volume (demonstration):", "inputVolume",
             {"nodeTypes": "vtkMRMLScalarVolumeNode", "noneEnabled": True}),
            ("int", "simulatedSpikesSpinBox", "Simulated spike events (demonstration):", "simulatedSpikes",
             {"minimum": 0, "maximum": 500}),
        ],
        "Outputs": [
            ("check", "detectOnlyCheckBox", "Detect only (leave the k-space uncorrected)", "detectOnly", {}),
            ("check", "createLogKSpaceCheckBox", "Log-magnitude k-space volume with the spikes overlaid",
             "createLogKSpace", {}),
        ],
        "Advanced": [
            ("combo", "detectorComboBox", "Detector:", "detector", {"items": ["classical", "network", "combined"]}),
            ("double", "sensitivitySpinBox", "Sensitivity:", "sensitivity",
             {"minimum": 0.05, "maximum": 1.0, "singleStep": 0.05}),
            ("combo", "correctionMethodComboBox", "Correction:", "correctionMethod",
             {"items": ["grappa", "zero", "conjugate", "neighbours"]}),
            ("check", "prewhitenCheckBox", "Pre-whiten coils with the noise scans", "prewhiten", {}),
            ("path", "noisePathLineEdit", "Noise scan or covariance (optional):", "noisePath",
             {"nameFilters": "Noise (*.npy *.npz *.dat *.h5 *.mrd *.cfl);;All files (*)"}),
            ("text", "axesLineEdit", "Axes of an array file (optional):", "axes",
             {"placeholderText": "e.g. coil,ky,kx or READ,PHS1,PHS2,COIL (as stored)"}),
            ("check", "allowEpiCheckBox", "Accept EPI data (reflected lines flipped; no ramp or ghost correction)",
             "allowEpi", {}),
        ],
    },
    "ChestQC": {
        "Inputs": [
            ("node", "inputVolumeSelector", "Loaded radiograph:", "inputVolume",
             {"nodeTypes": "vtkMRMLScalarVolumeNode", "noneEnabled": True,
              "toolTip": "A radiograph already loaded (single-slice scalar volume). Leave empty to load the file "
                         "below."}),
            ("path", "inputPathLineEdit", "or radiograph file:", "inputPath",
             {"nameFilters": "Radiographs (*.dcm *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)",
              "toolTip": "A chest radiograph file: DICOM (CR/DX), PNG, JPEG or TIFF."}),
            ("combo", "backendComboBox", "Detector:", "backend",
             {"items": ["network", "classical"],
              "toolTip": "network: the shipped detection network; classical: thresholds and morphology (no "
                         "learned weights)"}),
            ("combo", "profileComboBox", "Threshold profile:", "profile",
             {"items": ["automatic", "default", "AP", "paediatric", "infant"],
              "toolTip": "automatic: chosen from the view position, age and sex in the header; or a fixed profile"}),
            ("check", "weightedCheckBox", "Weighted grading (scapula and spine both failing gives SECOND, ¶0132)",
             "weighted", {"toolTip": "Off: the claim-10 reading, where any scapula or spine failure gives "
                                     "INTERMEDIATE"}),
            ("check", "experimentalCheckBox", "Experimental objects (scapulae, clavicles, foreign "
             "objects, pneumothorax, effusion; not validated on real radiographs)", "experimental",
             {"toolTip": "Off (default): these objects are not detected, tested or reported. On: they are shown and "
                         "enter the grade and findings, each labelled experimental"}),
        ],
        "Outputs": [
            ("check", "createNormalisedCheckBox", "Normalised image (5th-95th percentile, z-score)",
             "createNormalised", {"toolTip": "Also add the image normalised as the patent's Eq. (1) and Eq. (2)"}),
        ],
        "Advanced": [
            ("double", "lowPercentileSpinBox", "Lower percentile:", "lowPercentile",
             {"minimum": 0.0, "maximum": 49.0, "singleStep": 1.0}),
            ("double", "highPercentileSpinBox", "Upper percentile:", "highPercentile",
             {"minimum": 51.0, "maximum": 100.0, "singleStep": 1.0}),
            ("combo", "deviceComboBox", "Network device:", "device",
             {"items": ["auto", "cpu", "cuda"], "toolTip": "Where the detection network runs"}),
        ],
    },
}
#: Modules whose panel ends with a read-only report box (``reportTextBrowser``) under the status line.
REPORT_MODULES = {"ChestQC": "The quality grade and findings appear here after Apply."}

WIDGET_CLASSES = {"node": "qMRMLNodeComboBox", "int": "QSpinBox", "double": "QDoubleSpinBox",
                  "check": "QCheckBox", "combo": "QComboBox", "path": "ctkPathLineEdit", "text": "QLineEdit"}


def _property(name: str, value) -> str:
    if isinstance(value, bool):
        return f'<property name="{name}"><bool>{str(value).lower()}</bool></property>'
    if isinstance(value, int):
        return f'<property name="{name}"><number>{value}</number></property>'
    if isinstance(value, float):
        return f'<property name="{name}"><double>{value}</double></property>'
    return f'<property name="{name}"><string>{escape(value)}</string></property>'


def _field(kind: str, name: str, label: str, parameter: str, extra: dict) -> str:
    properties = [f'<property name="SlicerParameterName" stdset="0"><string>{parameter}</string></property>']
    if kind == "node":
        properties += [f'<property name="nodeTypes"><stringlist><string>{extra["nodeTypes"]}</string></stringlist>'
                       "</property>", _property("showChildNodeTypes", False), _property("addEnabled", False),
                       _property("removeEnabled", False), _property("noneEnabled", extra.get("noneEnabled", False))]
    elif kind == "check":
        properties.append(_property("text", label))
    elif kind == "path":
        properties += [_property("nameFilters", extra["nameFilters"]), _property("filters", "ctkPathLineEdit::Files")]
    if kind in ("node", "check", "path") and "toolTip" in extra:
        properties.append(_property("toolTip", extra["toolTip"]))
    elif kind not in ("node", "check", "path"):
        properties += [_property(k, v) for k, v in extra.items() if k != "items"]
    items = "".join(f'<item><property name="text"><string>{i}</string></property></item>'
                    for i in extra.get("items", []))
    widget = f'<widget class="{WIDGET_CLASSES[kind]}" name="{name}">{"".join(properties)}{items}</widget>'
    if kind == "check":
        return f'<item row="{{row}}" column="0" colspan="2">{widget}</item>'
    return (f'<item row="{{row}}" column="0"><widget class="QLabel" name="{name}Label">{_property("text", label)}'
            f'</widget></item><item row="{{row}}" column="1">{widget}</item>')


def _section(title: str, fields: list, collapsed: bool) -> str:
    rows = "".join(_field(*field).replace("{row}", str(row)) for row, field in enumerate(fields))
    words = "".join(c if c.isalnum() else " " for c in title).split()
    slug = words[0].lower() + "".join(word.capitalize() for word in words[1:])  # "Multi-phase x" -> multiPhaseX
    return (f'<item><widget class="ctkCollapsibleButton" name="{slug}CollapsibleButton">'
            f'{_property("text", title)}{_property("collapsed", collapsed)}'
            f'<layout class="QFormLayout" name="{slug}FormLayout">{rows}</layout></widget></item>')


def ui_text(module: str, sections: dict) -> str:
    body = "".join(_section(title, fields, title == "Advanced") for title, fields in sections.items() if fields)
    run = ('<item><widget class="QPushButton" name="applyButton">'
           f'{_property("enabled", False)}{_property("toolTip", "Run with the selected inputs.")}'
           f'{_property("text", "Apply")}</widget></item>'
           f'<item><layout class="QHBoxLayout" name="progressLayout">'
           f'<item><widget class="QProgressBar" name="progressBar">{_property("value", 0)}</widget></item>'
           f'<item><widget class="QPushButton" name="cancelButton">{_property("text", "Cancel")}</widget></item>'
           '</layout></item>'
           f'<item><widget class="QLabel" name="statusLabel">{_property("text", "")}'
           f'{_property("wordWrap", True)}</widget></item>'
           + (f'<item><widget class="QTextBrowser" name="reportTextBrowser">'
              f'{_property("placeholderText", REPORT_MODULES[module])}</widget></item>' if module in REPORT_MODULES
              else "") +
           '<item><spacer name="verticalSpacer"><property name="orientation"><enum>Qt::Vertical</enum></property>'
           '</spacer></item>')
    selectors = [f[1] for fields in sections.values() for f in fields if f[0] == "node"]
    connections = "".join(
        f"<connection><sender>{module}</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        f"<receiver>{name}</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>" for name in selectors)
    customs = "".join(f"<customwidget><class>{c}</class><extends>{e}</extends><header>{h}</header>{x}</customwidget>"
                      for c, e, h, x in [
                          ("qMRMLWidget", "QWidget", "qMRMLWidget.h", "<container>1</container>"),
                          ("qMRMLNodeComboBox", "QWidget", "qMRMLNodeComboBox.h", ""),
                          ("ctkCollapsibleButton", "QWidget", "ctkCollapsibleButton.h", "<container>1</container>"),
                          ("ctkPathLineEdit", "QWidget", "ctkPathLineEdit.h", "")])
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ui version="4.0"><class>{module}</class>'
            f'<widget class="qMRMLWidget" name="{module}"><layout class="QVBoxLayout" name="verticalLayout">'
            f"{body}{run}</layout></widget><customwidgets>{customs}</customwidgets><resources/>"
            f"<connections>{connections}</connections></ui>\n")


def _pretty(text: str) -> str:
    import xml.dom.minidom

    return xml.dom.minidom.parseString(text).toprettyxml(indent=" ", encoding="UTF-8").decode()


ICONS = {  # module -> (glyph colour, background, short mark)
    "MotionCorrection": ("#ffffff", "#b03a48", "MC"),
    "ParametricPET": ("#ffffff", "#d9822b", "Ki"),
    "KSpaceCalibration": ("#ffffff", "#3a6db0", "k"),
    "ChestQC": ("#ffffff", "#3a9b6a", "QC"),
}


def write_icon(path: pathlib.Path, colour: str, background: str, mark: str, size: int = 128) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    figure = plt.figure(figsize=(1, 1), dpi=size)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.add_patch(FancyBboxPatch((0.06, 0.06), 0.88, 0.88, boxstyle="round,pad=0,rounding_size=0.18",
                                  facecolor=background, edgecolor="none"))
    axes.text(0.5, 0.47, mark, color=colour, ha="center", va="center", fontsize=40 if len(mark) < 3 else 30,
              fontweight="bold", family="DejaVu Sans")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, transparent=True)
    plt.close(figure)


LIBRARY_CMAKE = """# The shared inference library, packaged as a library-only scripted target:
# WITH_SUBDIR installs the files under qt-scripted-modules/scanai/, so every module can `import scanai`.
# No GUI module, no generic test.
# Every file must be listed (Slicer silently drops unlisted files); regenerate with
# `python Utilities/generate_resources.py` (Testing/modules/test_packaging.py fails when this list is stale).
set(SCANAI_PYTHON_SCRIPTS
{scripts}
  )

set(SCANAI_PYTHON_RESOURCES
{resources}
  )

slicerMacroBuildScriptedModule(
  NAME scanai
  SCRIPTS ${{SCANAI_PYTHON_SCRIPTS}}
  RESOURCES ${{SCANAI_PYTHON_RESOURCES}}
  WITH_SUBDIR
  )
"""


def write_library_cmakelists() -> None:
    package = ROOT / "scanai"

    def listing(patterns: tuple[str, ...]) -> str:
        files = sorted(str(p.relative_to(package)) for pattern in patterns for p in package.rglob(pattern)
                       if "__pycache__" not in p.parts)
        return "\n".join(f"  {f}" for f in files)

    (package / "CMakeLists.txt").write_text(LIBRARY_CMAKE.format(scripts=listing(("*.py",)),
                                                                 resources=listing(("*.json", "*.pt"))))


def main() -> None:
    for module, sections in MODULES.items():
        ui_path = ROOT / module / "Resources" / "UI" / f"{module}.ui"
        ui_path.parent.mkdir(parents=True, exist_ok=True)
        ui_path.write_text(_pretty(ui_text(module, sections)))
        write_icon(ROOT / module / "Resources" / "Icons" / f"{module}.png", *ICONS[module])
    write_icon(ROOT / "Resources" / "Icons" / "ScanAI.png", "#ffffff", "#24303f", "AI")
    write_library_cmakelists()


if __name__ == "__main__":
    main()
