"""Screenshots of each module's results as Slicer's own slice views draw them (offscreen, no Qt).

Runs the main job of each module through its Logic on small real inputs (the shared data folder; the library's
phantoms when it is absent), then renders the nodes the module added to the scene with Slicer's slice logic and
displayable managers (``Testing/modules/slicer_views.py``) and writes one PNG per module:

- ``slicer_motioncorrection.png``: the motion network on a Sunnybrook short-axis cine, the end-diastolic
  segmentation propagated to end-systole (segment outlines and fill) over the end-systolic frame, with strain;
- ``slicer_parametricpet.png``: the Patlak Ki map (PET colour table, with its colour legend) over the PET;
- ``slicer_kspacecalibration.png``: the detected spikes (segmentation) over the log k-space magnitude, the image
  before and the corrected image after;
- ``slicer_chestqc.png``: the chest segmentation, the cardiothoracic-ratio width lines, the spine and centre lines
  and the lung box (markups), with the grade in the caption.

Beside the PNGs, ``slicer_screenshots.json`` lists for each picture the overlay colours and the pixel boxes where
they must appear (used by ``Testing/modules/test_slicer_views.py``). With ``--resources`` the PNGs are also copied,
shrunk to fit, to ``Resources/Screenshots/slicer_<module>.png``.

Usage: ``python Utilities/slicer_screenshots.py --out DIR [--resources] [--only chestqc ...]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

HOME = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HOME / "Testing" / "modules"))

import slicer_harness  # noqa: E402  (Testing/modules/ is put on the path just above)
import slicer_views  # noqa: E402

VIEW = 512  # pixels per slice view
CHEST_VIEW = 768  # the radiograph carries several labelled lines: a larger view keeps their labels apart
RESOURCES = HOME / "Resources" / "Screenshots"
RESOURCE_LIMIT_BYTES = 300_000

#: Slicer-like colours: segment colours close to Slicer's terminology defaults, markups lines in Slicer's yellow.
MYOCARDIUM_COLOUR = (0.95, 0.75, 0.25)
BLOOD_POOL_COLOUR = (0.85, 0.25, 0.2)
REFERENCE_CONTOUR_COLOUR = (0.3, 0.9, 1.0)


@dataclass
class Overlay:
    """Where an overlay colour must show in a screenshot: ``box`` = (col0, row0, col1, row1) in PNG pixels."""

    what: str
    colour: tuple[int, int, int]
    box: tuple[int, int, int, int]
    match: str = "exact"  # "exact": opaque pixels of this colour; "hue": the colour blended over a grey image


@dataclass
class Shot:
    """One screenshot: the picture (H, W, 3) uint8, its caption (already drawn in) and the overlays it shows."""

    module: str
    image: np.ndarray
    caption: str
    overlays: list[Overlay] = field(default_factory=list)
    inputs: str = ""
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ scene helpers


def _slicer():
    import slicer

    return slicer


def module_logic(name: str):
    """A core module logic of the harness ("sequences", "segmentations", "colors", ...)."""
    slicer = _slicer()
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, name):
        return getattr(modules, name).logic()
    application = slicer_views.application_logic(slicer.mrmlScene)
    return application.GetModuleLogic(name) or application.GetModuleLogic(name.capitalize())


def _matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _fill_volume(node, array: np.ndarray, geometry) -> None:
    _slicer().util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(_matrix(geometry.ijk_to_ras()))


def add_volume(scene, array: np.ndarray, geometry, name: str, node_class: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node (k, j, i) on ``geometry`` (a :class:`scanai.core.image.Geometry`)."""
    node = scene.AddNewNodeByClass(node_class, name)
    _fill_volume(node, array, geometry)
    node.CreateDefaultDisplayNodes()
    return node


def add_sequence(scene, frames: np.ndarray, geometry, index_values: Sequence[float], name: str,
                 index_name: str = "time", index_unit: str = "s"):
    """A new volume sequence node: one scalar volume per frame of ``frames`` (T, k, j, i)."""
    slicer = _slicer()
    node = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    node.SetIndexName(index_name)
    node.SetIndexUnit(index_unit)
    node.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    for frame, value in zip(frames, index_values, strict=True):
        item = slicer.vtkMRMLScalarVolumeNode()
        _fill_volume(item, frame, geometry)
        node.SetDataNodeAtValue(item, f"{float(value):.6g}")
    return node


def add_segmentation(scene, segments: dict[str, tuple[np.ndarray, tuple]], geometry, name: str):
    """A new segmentation node: segment name -> ((k, j, i) bool mask on ``geometry``, (r, g, b) in 0..1)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} import")
    try:
        segmentation = node.GetSegmentation()
        for segment_name, (mask, colour) in segments.items():
            _fill_volume(labelmap, np.asarray(mask, dtype=np.uint8), geometry)
            module_logic("segmentations").ImportLabelmapToSegmentationNode(labelmap, node)
            segment = segmentation.GetNthSegment(segmentation.GetNumberOfSegments() - 1)
            segment.SetName(segment_name)
            segment.SetColor(*colour)
    finally:
        for index in range(labelmap.GetNumberOfDisplayNodes()):
            scene.RemoveNode(labelmap.GetNthDisplayNode(index))
        scene.RemoveNode(labelmap)
    return node


def add_table(scene, columns: dict[str, Sequence[float]], name: str):
    """A new table node with one double column per entry."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for column, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(column)
        for value in values:
            array.InsertNextValue(float(value))
        table.AddColumn(array)
    node.Modified()
    return node


def table_column(node, column: str) -> np.ndarray:
    """A numeric column of a table node (an empty array when it is missing)."""
    array = node.GetTable().GetColumnByName(column)
    if array is None:
        return np.zeros(0)
    return np.array([float(array.GetValue(i)) for i in range(array.GetNumberOfTuples())])


def browse(scene, sequence_node, item: int):
    """Select ``item`` (0-based) in the sequence browser of ``sequence_node`` (made if none), as the Sequences
    module's slider does; returns the browser."""
    logic = module_logic("sequences")
    browser = logic.GetFirstBrowserNodeForSequenceNode(sequence_node)
    if browser is None:
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{sequence_node.GetName()} browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence_node.GetID())
    browser.SetSelectedItemNumber(int(item))
    logic.UpdateProxyNodesFromSequences(browser)
    return browser


def proxy(browser, sequence_node):
    """The scene node that shows ``sequence_node``'s selected item (with display nodes)."""
    node = browser.GetProxyNode(sequence_node)
    if node is not None and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _ras_of_ijk(geometry, ijk: np.ndarray) -> np.ndarray:
    return np.asarray(ijk, dtype=float) @ geometry.ijk_to_ras()[:3, :3].T + geometry.ijk_to_ras()[:3, 3]


def mask_box(view, mask: np.ndarray, geometry, margin: float = 1.0) -> tuple[int, int, int, int]:
    """Pixel box (col0, row0, col1, row1) that the voxels of ``mask`` (k, j, i) cover in ``view``."""
    k, j, i = np.nonzero(mask)
    corners = []
    for di in (-0.5, 0.5):
        for dj in (-0.5, 0.5):
            corners.append(np.stack([i + di, j + dj, k], axis=-1))
    return points_box(view, _ras_of_ijk(geometry, np.concatenate(corners)), margin)


def points_box(view, ras: np.ndarray, margin: float = 2.0) -> tuple[int, int, int, int]:
    pixels = np.array([view.ras_to_pixel(p) for p in np.atleast_2d(ras)])
    col0, row0 = np.floor(pixels.min(axis=0) - margin).astype(int)
    col1, row1 = np.ceil(pixels.max(axis=0) + margin).astype(int)
    width, height = view.size
    return (max(int(col0), 0), max(int(row0), 0), min(int(col1), width - 1), min(int(row1), height - 1))


def rgb255(colour: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * float(c))) for c in colour[:3])


def shifted(box: tuple[int, int, int, int], dx: int) -> tuple[int, int, int, int]:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


# ------------------------------------------------------------------------------------------------ jobs


def job_motion(scene, data: pathlib.Path | None) -> Shot:
    """MotionCorrection: motion network, strain and segmentation propagated from end-diastole to end-systole."""
    from scanai.core.image import VolumeSequence

    module = slicer_harness.load_module("MotionCorrection")
    reference_es = None
    if data is not None:
        from scanai.io.cine import read_sunnybrook_cine
        from scanai.io.contours import read_sunnybrook_contours

        root = data / "cardiac" / "sunnybrook"
        dicoms = root / "dicoms" / "SCD0000101"
        slice_index = 5
        contours = [c for c in read_sunnybrook_contours(root / "contourfiles" / "SC-HF-I-1", dicoms)
                    if c.slice_index == slice_index]
        epicardium = next(c for c in contours if c.kind == "epicardium")
        ed = epicardium.phase_index
        endocardium = next(c for c in contours if c.kind == "endocardium" and c.phase_index == ed)
        reference_es = next(c for c in contours if c.kind == "endocardium" and c.phase_index != ed)
        sequence = read_sunnybrook_cine(dicoms, slice_index=slice_index)
        blood = np.zeros(sequence.frames.shape[1:], dtype=bool)
        blood[0] = endocardium.mask
        myocardium = np.zeros_like(blood)
        myocardium[0] = epicardium.mask & ~endocardium.mask
        es = reference_es.phase_index
        source = (f"Sunnybrook SCD0000101 (CC0), short-axis slice {slice_index + 1} of 12, {len(sequence)} frames; "
                  "ED segmentation from the manual contours")
    else:
        from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom

        sequence, _truth = smooth_motion_phantom(n_frames=8, shape=(1, 96, 96), amplitude_px=4.0, twist_deg=5.0,
                                                 seed=3)
        ed = 0
        myocardium = myocardium_mask(sequence, 0, amplitude_px=4.0, twist_deg=5.0)
        k, j, i = np.indices(myocardium.shape)
        centre = (np.asarray(myocardium.shape[1:]) - 1) / 2.0
        blood = ~myocardium & (np.hypot(j - centre[0], i - centre[1]) < 0.16 * min(myocardium.shape[1:]) * 0.9)
        es = int(np.argmax(contraction_profile(len(sequence))))
        source = "motion phantom (shared data folder absent)"
    sequence = VolumeSequence(sequence.frames, sequence.geometry, sequence.index_values, "time", "s")
    cine = add_sequence(scene, sequence.frames, sequence.geometry, sequence.index_values, "cine")
    segmentation = add_segmentation(scene, {"LV myocardium": (myocardium, MYOCARDIUM_COLOUR),
                                            "LV blood pool": (blood, BLOOD_POOL_COLOUR)},
                                    sequence.geometry, "ED segmentation")
    outputs = module.MotionCorrectionLogic().process(cine, referenceFrame=ed + 1, method="network",
                                                     inputSegmentation=segmentation, createWarped=False,
                                                     createJacobian=False, device="cpu")
    segmentation.GetDisplayNode().SetVisibility(False)  # the ED input is hidden: the view shows the result
    browser = browse(scene, cine, es)
    frame = proxy(browser, cine)
    propagated = proxy(browser, outputs["propagated"])
    frame.SetName(f"cine frame {es + 1} (ES)")
    propagated.SetName("propagated segmentation")
    gcs = table_column(outputs["table"], "GCS_pct")
    grs = table_column(outputs["table"], "GRS_pct")
    if reference_es is not None:  # the manual end-systolic contour, for comparison
        curve = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", "manual ES endocardium")
        points = _ras_of_ijk(sequence.geometry, np.c_[reference_es.points_ij, np.zeros(len(reference_es.points_ij))])
        for point in points[::max(1, len(points) // 40)]:
            curve.AddControlPoint(*map(float, point))
        curve.CreateDefaultDisplayNodes()
        display = curve.GetDisplayNode()
        display.SetSelectedColor(*REFERENCE_CONTOUR_COLOUR)
        display.SetColor(*REFERENCE_CONTOUR_COLOUR)
        display.SetGlyphScale(0.6)
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetLineThickness(0.3)
    rows, cols = np.nonzero(myocardium[0])
    lv = _ras_of_ijk(sequence.geometry, np.stack([cols, rows, np.zeros_like(rows)], axis=-1))
    centre = lv.mean(axis=0)
    extent = float(np.ptp(lv, axis=0).max())
    with slicer_views.SliceView(scene, (VIEW, VIEW)) as view:
        view.show(frame, orientation="Axial", center_ras=centre, field_of_view_mm=max(2.2 * extent, 60.0))
        view.annotate({"lower left": slicer_views.layer_annotation(frame),
                       "upper left": "MotionCorrection: motion network"})
        image = view.capture()
        overlays = [Overlay("propagated LV blood pool outline", rgb255(BLOOD_POOL_COLOUR),
                            mask_box(view, blood, sequence.geometry, margin=14)),
                    Overlay("propagated LV myocardium outline", rgb255(MYOCARDIUM_COLOUR),
                            mask_box(view, myocardium, sequence.geometry, margin=14))]
    caption = (f"MotionCorrection: motion network on a short-axis cine; segmentation propagated from ED (frame "
               f"{ed + 1}) to ES (frame {es + 1}).\nStrain at ES vs ED: GCS {gcs[es]:+.1f} %, GRS {grs[es]:+.1f} %"
               f" (peak GCS {gcs.min():+.1f} %). Orange: myocardium, red: blood pool"
               + (", cyan: manual ES contour." if reference_es is not None else ".") + f"\nData: {source}.")
    return Shot("MotionCorrection", slicer_views.add_caption(image, caption), caption, overlays, source)


def _pet_layout(size: int) -> dict[str, np.ndarray]:
    """Region masks (1, size, size) of a simple body section: an ellipse with an inner disc."""
    j, i = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    body = np.hypot((j - c) / (0.36 * size), (i - c) / (0.43 * size)) <= 1.0
    disc = np.hypot((j - c - 0.05 * size) / (0.2 * size), (i - c + 0.12 * size) / (0.2 * size)) <= 1.0
    return {"body": body[None], "disc": disc[None]}


def job_pet(scene, data: pathlib.Path | None) -> Shot:
    """ParametricPET: Patlak Ki map over the PET, with the PET colour table and its legend."""
    from scanai.core.image import Geometry
    from scanai.pet.phantom import pet_phantom

    module = slicer_harness.load_module("ParametricPET")
    size = 64
    geometry = Geometry((4.0, 4.0, 4.0), (-126.0, -126.0, 0.0))
    if data is not None:
        from scanai.pet.kmap import load_kmap_mat

        brain = load_kmap_mat(data / "pet" / "demo_2tcm_realdata.mat")
        liver = load_kmap_mat(data / "pet" / "demo_liver_realdata.mat")
        timing, plasma = brain.timing, brain.input_function
        regions = _pet_layout(size)
        tacs = {"body": liver.tacs["Liver"], "disc": brain.tacs["GM"]}
        frames = np.zeros((len(timing), 1, size, size))
        for region, mask in regions.items():
            frames[:, mask] = tacs[region][:, None]
        from scipy.ndimage import gaussian_filter

        frames = gaussian_filter(frames, (0, 0, 1.2, 1.2))  # the scanner's resolution (PSF ~ 11 mm FWHM)
        counts = 20.0 / np.max(frames)  # Poisson counting noise, as in a real frame
        scale = (timing.duration_s * counts)[:, None, None, None]
        frames = np.random.default_rng(7).poisson(np.clip(frames, 0, None) * scale) / scale
        overlay_mask = regions["disc"]
        source = ("KMAP-M total-body PET (UC Davis, MIT): real regional TACs (liver in the body, grey matter in the "
                  "disc) on a synthetic 64x64 layout, blurred and with Poisson noise; input: the image-derived "
                  "aorta Cp")
    else:
        phantom = pet_phantom(shape=(1, size, size), counts_per_activity_s=20.0, geometry=geometry)
        timing, plasma = phantom.timing, phantom.input_function
        frames = phantom.sequence.frames
        overlay_mask = phantom.labels.array >= 2
        source = "PET phantom (shared data folder absent)"
    pet = add_sequence(scene, frames.astype(np.float32), geometry, timing.mid_s, "dynamic PET")
    inputs = add_table(scene, {"time_s": plasma.t_s, "Cp": plasma.activity}, "input function")
    frames_table = add_table(scene, {"start_s": timing.start_s, "duration_s": timing.duration_s}, "frames")
    outputs = module.ParametricPETLogic().process(pet, "Patlak", inputs, frames_table, device="cpu")
    ki = outputs["maps"]["Ki"]
    last = len(timing) - 1
    frame = proxy(browse(scene, pet, last), pet)
    frame.SetName(f"PET frame {last + 1} ({timing.mid_s[last] / 60:.0f} min)")
    values = _slicer().util.arrayFromVolume(ki)
    with slicer_views.SliceView(scene, (VIEW, VIEW)) as view:
        view.show(frame, foreground=ki, foreground_opacity=0.6)
        view.add_color_legend(ki, title="Ki (1/min)", label_format="%.3f", size=(0.12, 0.45))
        view.annotate({"lower left": slicer_views.layer_annotation(frame, ki, 0.6),
                       "upper left": "ParametricPET: Patlak"})
        image = view.capture()
        display = ki.GetDisplayNode()
        colour_map = display.GetColorNode().GetScalarsToColors()
        low, high = colour_map.GetRange()
        middle = colour_map.GetColor(low + 0.5 * (high - low))  # the Ki map's colour half-way up its window
        # the disc's blurred rim passes through the middle of the window: its colours lie in the disc's box
        overlays = [Overlay("Ki map colours around the disc", rgb255(middle), mask_box(view, overlay_mask, geometry, 8),
                            match="hue")]
    inside = values[overlay_mask]
    caption = (f"ParametricPET: Patlak Ki map (PET colour table, opacity 0.6) over the last PET frame; Ki in the disc "
               f"{np.median(inside):.4f} /min, in the body {np.median(values[(values > 0) & ~overlay_mask]):.4f} /min."
               f"\nData: {source}.")
    return Shot("ParametricPET", slicer_views.add_caption(image, caption), caption, overlays, source)


def job_kspace(scene, data: pathlib.Path | None) -> Shot:
    """KSpaceCalibration: spikes detected over the log k-space, the image before and after correction."""
    from scanai.kspace.data import KSpaceData
    from scanai.kspace.io import read_kspace, write_kspace_npz
    from scanai.kspace.simulate import inject_spikes

    module = slicer_harness.load_module("KSpaceCalibration")
    if data is not None:
        kspace = read_kspace(data / "kspace" / "se_t1_sag_data.mat")
        source = "LarsonLab MRI-education-resources (MIT): in-vivo sagittal T1 spin echo, 256x256, fully sampled"
    else:
        from scanai.kspace.phantom import make_phantom

        case = make_phantom(size=128, n_coils=4, readout_oversampling=1, noise_std=0.002)
        kspace = KSpaceData(case.kspace.data, source="phantom")
        source = "k-space phantom (shared data folder absent)"
    corrupted, truth = inject_spikes(kspace.data, n_events=20, seed=0)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="scanai-kspace-", dir=_slicer().app.temporaryPath))
    path = write_kspace_npz(replace(kspace, data=corrupted), folder / "kspace_with_spikes.npz")
    from scanai.core.device import torch_available

    detector = "network" if torch_available() else "classical"
    outputs = module.KSpaceCalibrationLogic().process(path, detector=detector)
    spikes = outputs["spikeSegmentation"]
    found = truth.mask(_slicer().util.arrayFromVolume(outputs["logKSpace"]).shape)
    rows = table_column(outputs["spikes"], "pe").astype(int), table_column(outputs["spikes"], "ro").astype(int)
    hits = int(found[0][rows].sum()) if rows[0].size else 0
    display = spikes.GetDisplayNode()
    display.SetOpacity2DFill(1.0)  # single samples: a solid fill reads better than 50 %
    colour = tuple(spikes.GetSegmentation().GetNthSegment(0).GetColor())
    from scanai.core.image import Geometry

    log_geometry = Geometry.from_ijk_to_ras(_vtk_to_array(outputs["logKSpace"]))
    panels = []
    with slicer_views.SliceView(scene, (VIEW, VIEW)) as view:
        view.show(outputs["logKSpace"], label=spikes)
        view.annotate({"lower left": slicer_views.layer_annotation(outputs["logKSpace"]),
                       "upper left": f"spikes detected ({detector})"})
        panels.append(view.capture())
        overlays = [Overlay("detected spikes", rgb255(colour), mask_box(view, found, log_geometry, 3))]
    spikes.GetDisplayNode().SetVisibility(False)  # as when the images are looked at on their own
    for key, title in (("original", "before"), ("corrected", "corrected")):
        with slicer_views.SliceView(scene, (VIEW, VIEW)) as view:
            view.show(outputs[key])
            view.annotate({"lower left": slicer_views.layer_annotation(outputs[key]), "upper left": title})
            panels.append(view.capture())
    image = slicer_views.side_by_side(panels, gap=6)
    caption = (f"KSpaceCalibration: {len(truth)} spike samples ({20} events) injected into the k-space; {detector} "
               f"detector flagged {rows[0].size}, {hits} of them injected ones;\nleft: detected spikes (red "
               f"segmentation) over the log |k|; middle: image with spikes; right: corrected (GRAPPA-style "
               f"re-estimation).\nData: {source}.")
    return Shot("KSpaceCalibration", slicer_views.add_caption(image, caption), caption, overlays, source)


def _vtk_to_array(volume) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def job_chest(scene, data: pathlib.Path | None) -> Shot:
    """ChestQC: segmentation, cardiothoracic-ratio width lines, spine and centre lines, grade."""
    module = slicer_harness.load_module("ChestQC")
    if data is not None:
        path = data / "chest" / "00000001_000.png"
        source = "NIH ChestX-ray14 00000001_000.png (public; Wang et al., CVPR 2017), 512x512, not in the training set"
    else:
        from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom

        phantom = make_chest_phantom(size=512, spacing_mm=0.7)
        folder = pathlib.Path(tempfile.mkdtemp(prefix="scanai-chest-", dir=_slicer().app.temporaryPath))
        path = write_phantom_dicom(phantom, folder / "chest.dcm", "MONOCHROME2")
        source = "chest phantom (shared data folder absent)"
    logic = module.ChestQCLogic()
    outputs = logic.process(inputPath=path, backend="network", device="cpu")
    radiograph = outputs["radiograph"]
    try:
        summary = logic.summary(logic.lastResult)
    except Exception:  # the one-line summary is a convenience: fall back to the report's first line
        summary = (outputs["report"].GetText() or "").splitlines()[0] if "report" in outputs else ""
    segmentation = outputs.get("segmentation")
    overlays = []
    for roi in [outputs.get("lungBox"), *outputs.get("foreignObjects", [])]:
        if roi is not None and roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetFillOpacity(0.15)  # a light box (Slicer: 0.5), so the segments stay readable
    with slicer_views.SliceView(scene, (CHEST_VIEW, CHEST_VIEW)) as view:
        # the module puts radiographs in a coronal plane (patient left on the screen's right, head up)
        view.show(radiograph, label=segmentation, orientation="Coronal")
        # the layer name goes under the title: the lower left holds the foreign-object box's label here
        view.annotate({"upper left": "ChestQC: network detector\n" + slicer_views.layer_annotation(radiograph)})
        image = view.capture()
        box = outputs.get("lungBox")
        if box is not None:  # the ROI's outline and label, in its colour, around both lungs
            bounds = [0.0] * 6
            box.GetRASBounds(bounds)
            corners = np.array([[x, y, z] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])
            overlays.append(Overlay("lung box (ROI)", rgb255(box.GetDisplayNode().GetSelectedColor()),
                                    points_box(view, corners, margin=8)))
        if segmentation is not None:
            from scanai.core.image import Geometry

            grid = Geometry.from_ijk_to_ras(_vtk_to_array(radiograph))
            seg = segmentation.GetSegmentation()
            for n in range(seg.GetNumberOfSegments()):
                segment = seg.GetNthSegment(n)
                if segment.GetName() != "Heart":
                    continue
                mask = _slicer().util.arrayFromSegmentBinaryLabelmap(segmentation, seg.GetNthSegmentID(n), radiograph)
                if np.asarray(mask).any():
                    overlays.append(Overlay("heart segment", rgb255(segment.GetColor()),
                                            mask_box(view, np.asarray(mask) > 0, grid, 3)))
    lines = ", ".join(name for key, name in (("heartWidth", "heart width (red)"), ("lungWidth", "lung width (blue)"),
                                             ("spineLine", "spine (green)"), ("centreLine", "image centre (grey)"))
                      if key in outputs)
    caption = (f"ChestQC grade: {summary}\nSegmentation (lungs, heart, spine) with the cardiothoracic-ratio lines: "
               f"{lines};\nlung box and foreign objects as ROIs."
               + (" The PNG has no pixel spacing, so lengths are in pixels (shown as mm)."
                  if str(path).lower().endswith(".png") else "") + f" Data: {source}.")
    return Shot("ChestQC", slicer_views.add_caption(image, caption), caption, overlays, source)


JOBS: dict[str, Callable] = {"motioncorrection": job_motion, "parametricpet": job_pet,
                             "kspacecalibration": job_kspace, "chestqc": job_chest}


# ------------------------------------------------------------------------------------------------ main


def run(out: pathlib.Path, only: Sequence[str] | None = None, resources: bool = False, use_data: bool = True
        ) -> dict:
    """Run the jobs, write the PNGs and the JSON manifest into ``out``; returns the manifest.

    only: job keys of :data:`JOBS` (default all). resources: also copy the PNGs to Resources/Screenshots.
    use_data: False runs on the library's phantoms even when the shared data folder is present."""
    available, reason = slicer_views.offscreen_rendering_available()
    if not available:
        raise SystemExit(f"slicer_screenshots: {reason}")
    try:
        import torch

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    except ImportError:
        pass
    from scanai.core.paths import shared_data_dir

    data = shared_data_dir() if use_data else None
    scene = slicer_harness.install()
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"data": str(data) if data is not None else None, "shots": {}}
    for key, job in JOBS.items():
        if only and key not in only:
            continue
        scene.Clear(0)
        start = time.perf_counter()
        shot = job(scene, data)
        shot.seconds = time.perf_counter() - start
        path = slicer_views.save_png(shot.image, out / f"slicer_{key}.png")
        entry = {"png": path.name, "module": shot.module, "caption": shot.caption, "seconds": round(shot.seconds, 2),
                 "size": [int(shot.image.shape[1]), int(shot.image.shape[0])],
                 "overlays": [{"what": o.what, "colour": list(o.colour), "box": list(o.box), "match": o.match}
                              for o in shot.overlays]}
        if resources:
            entry["resource"] = str(copy_to_resources(shot.image, key).relative_to(HOME))
        manifest["shots"][key] = entry
        print(f"{path}: {shot.seconds:.1f} s", flush=True)
    (out / "slicer_screenshots.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def copy_to_resources(image: np.ndarray, key: str) -> pathlib.Path:
    """Copy a screenshot to Resources/Screenshots/slicer_<key>.png under the size limit: as it is, else with a
    256-colour palette at full size (median cut, then octree for noisy images; shrinking would lose the overlays'
    detail), else shrunk too."""
    target = RESOURCES / f"slicer_{key}.png"
    width = image.shape[1]
    candidates = [(width, None, False), (width, 256, False), (width, 256, True)]
    candidates += [(int(f * width), 256, True) for f in (0.85, 0.7, 0.55, 0.4)]
    for max_width, colours, fast in candidates:
        slicer_views.save_png(image, target, max_width=max_width, colours=colours, fast_palette=fast)
        if target.stat().st_size <= RESOURCE_LIMIT_BYTES:
            break
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for the PNGs and the manifest")
    parser.add_argument("--only", nargs="*", choices=sorted(JOBS), help="run only these modules' jobs")
    parser.add_argument("--resources", action="store_true",
                        help="also copy the PNGs to Resources/Screenshots/slicer_<module>.png (< 300 kB each)")
    parser.add_argument("--phantoms", action="store_true",
                        help="use the library's phantoms even when the shared data folder is present")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run(args.out, args.only, args.resources, use_data=not args.phantoms)
    print(f"slicer_screenshots: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
