"""The motion pipeline (estimate -> Jacobian, folding, propagation, strain -> table) and ``scanai motion``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from scanai import cli as main_cli
from scanai.core.catalog import load_card
from scanai.core.errors import Cancelled, GeometryError, InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import CancelToken, Progress
from scanai.io.sequence_file import read_sequence, write_sequence
from scanai.io.sitk_image import write_image
from scanai.motion.export import read_displacement_field, read_displacement_sequence
from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom
from scanai.motion.pipeline import (
    METHOD_LABELS,
    METHODS,
    CineMotion,
    analyse_cine,
    estimate_motion,
    pack_label_layers,
    strain_rows,
)
from scanai.motion.propagate import dice
from scanai.motion.strain import myocardial_strain

PHANTOM = {"n_frames": 5, "shape": (1, 64, 64), "spacing_mm": (1.25, 1.25, 8.0), "amplitude_px": 3.0,
           "twist_deg": 4.0, "noise": 0.01, "seed": 11, "origin_mm": (-30.0, 12.0, 40.0)}
MASK_ARGS = {"amplitude_px": PHANTOM["amplitude_px"], "twist_deg": PHANTOM["twist_deg"]}
END_SYSTOLE = int(np.argmax(contraction_profile(PHANTOM["n_frames"])))


def _labels(sequence: VolumeSequence) -> np.ndarray:
    """1 = myocardium, 2 = blood pool (inside the endocardium) of the phantom's first frame; uint8 (K, J, I)."""
    myocardium = myocardium_mask(sequence, 0, **MASK_ARGS)
    _k, j, i = np.indices(myocardium.shape)
    centre = (np.asarray(myocardium.shape[1:]) - 1) / 2.0
    blood = ~myocardium & (np.hypot(j - centre[0], i - centre[1]) < 0.16 * min(myocardium.shape[1:]) * 0.9)
    return (myocardium.astype(np.uint8) + 2 * blood.astype(np.uint8)).astype(np.uint8)


@pytest.fixture(scope="module")
def phantom():
    sequence, truth = smooth_motion_phantom(**PHANTOM)
    return sequence, truth, _labels(sequence)


@pytest.fixture(scope="module")
def analysed(phantom):
    sequence, _truth, labels = phantom
    frames, label_copy = sequence.frames.copy(), labels.copy()
    result = analyse_cine(sequence, 0, "demons", labels=labels, myocardium_label=1, blood_pool_label=2)
    assert np.array_equal(sequence.frames, frames), "the input sequence was modified"
    assert np.array_equal(labels, label_copy), "the input labels were modified"
    return result


# ------------------------------------------------------------------------------------------------ dispatch


def test_methods_and_labels():
    assert METHODS == ("network", "network-pairwise", "demons", "bspline", "svf3d", "network-3d")
    assert set(METHOD_LABELS) == set(METHODS)
    assert METHOD_LABELS["network"] == "Multi-pair network (joint)"


def test_unknown_method_lists_the_methods(phantom):
    with pytest.raises(InputError, match="network, network-pairwise, demons, bspline"):
        estimate_motion(phantom[0], 0, "optical-flow")
    with pytest.raises(InputError, match="Unknown motion estimation method"):
        analyse_cine(phantom[0], 0, "optical-flow")


def test_classical_dispatch_recovers_the_motion(phantom):
    sequence, truth, _labels = phantom
    fields = estimate_motion(sequence, 0, "demons", device="cuda", iterations=60)  # device: networks only
    assert fields.method == "demons" and fields.options["iterations"] == 60
    error_px = np.linalg.norm(fields.displacement_mm - truth, axis=-1) / PHANTOM["spacing_mm"][0]
    assert error_px[1:].mean() < 0.5
    with pytest.raises(InputError, match="Unknown option"):
        estimate_motion(sequence, 0, "bspline", scheme="consecutive")


def test_network_dispatch_passes_scheme_joint_and_device(phantom, monkeypatch):
    import scanai.motion.network as network

    calls = []

    def fake(sequence, reference_index=0, scheme="reference", joint=True, device=None, progress=None):
        calls.append((reference_index, scheme, joint, device))
        return "fields"

    monkeypatch.setattr(network, "estimate_with_network", fake)
    assert estimate_motion(phantom[0], 2, "network", device="auto") == "fields"
    estimate_motion(phantom[0], 1, "network-pairwise", device="cuda", scheme="consecutive")
    assert calls == [(2, "reference", True, None), (1, "consecutive", False, "cuda")]


def test_network_options_are_checked_before_loading(phantom):
    with pytest.raises(InputError, match="Unknown option.*iterations"):
        estimate_motion(phantom[0], 0, "network", iterations=5)


# ------------------------------------------------------------------------------------------------ analysis


def test_analysis_outputs_match_the_phantom(phantom, analysed):
    sequence, truth, labels = phantom
    count = len(sequence)
    assert isinstance(analysed, CineMotion)
    assert analysed.fields.displacement_mm.shape == (*sequence.frames.shape, 3)
    assert analysed.jacobian.shape == sequence.frames.shape and analysed.jacobian.dtype == np.float32
    np.testing.assert_allclose(analysed.jacobian[0], 1.0, atol=1e-6)
    assert analysed.fold_fraction.shape == (count,) and analysed.fold_fraction.max() <= 0.001
    assert analysed.seconds > 0
    # propagation: the reference frame is the input, end-systole follows the true myocardium
    assert analysed.labels.shape == sequence.frames.shape
    assert np.array_equal(analysed.labels[0], labels)
    assert set(np.unique(analysed.labels)) <= {0, 1, 2}
    expected = myocardium_mask(sequence, END_SYSTOLE, **MASK_ARGS)
    assert dice(analysed.labels[END_SYSTOLE] == 1, expected) >= 0.95
    # strain: exactly the strain of the estimated fields on the myocardium label, zero at the reference
    strain = analysed.strain
    direct = myocardial_strain(analysed.fields.displacement_mm, sequence.geometry, labels == 1, blood_pool=labels == 2)
    np.testing.assert_array_equal(strain.global_circumferential_pct, direct.global_circumferential_pct)
    np.testing.assert_array_equal(strain.global_radial_pct, direct.global_radial_pct)
    assert abs(strain.global_circumferential_pct[0]) < 1e-6 and abs(strain.global_radial_pct[0]) < 1e-6
    # against the true field's strain: GCS within 2 strain points; demons' field smoothing (1.5 px) flattens the
    # radial gradient across this 5-pixel wall, so GRS is only close (the network's accuracy is tested elsewhere)
    true_strain = myocardial_strain(truth, sequence.geometry, labels == 1, blood_pool=labels == 2)
    assert true_strain.global_circumferential_pct[END_SYSTOLE] < -3.0  # the phantom really contracts
    np.testing.assert_allclose(strain.global_circumferential_pct, true_strain.global_circumferential_pct, atol=2.0)
    np.testing.assert_allclose(strain.global_radial_pct, true_strain.global_radial_pct, atol=5.0)
    assert strain.peak_radial()[1] == strain.peak_circumferential()[1] == END_SYSTOLE
    assert analysed.myocardium.sum() == (labels == 1).sum()


def test_strain_rows(phantom, analysed):
    sequence, _truth, labels = phantom
    rows = strain_rows(analysed, sequence)
    assert [row["frame"] for row in rows] == list(range(1, len(sequence) + 1))
    assert list(rows[0]) == ["frame", "time", "GCS_pct", "GRS_pct", "fold_fraction", "mean_displacement_mm",
                             "mean_residual", "LV_cavity_mm2"]
    cavity = np.array([row["LV_cavity_mm2"] for row in rows])  # the blood pool, carried through the cycle
    assert cavity[0] == pytest.approx(np.count_nonzero(labels == 2) * 1.25**2)
    assert cavity[END_SYSTOLE] < 0.9 * cavity[0] and np.argmax(cavity) == 0
    np.testing.assert_allclose([row["time"] for row in rows], sequence.index_values)
    assert rows[0]["GCS_pct"] == pytest.approx(0.0, abs=1e-6) and rows[0]["mean_displacement_mm"] == 0.0
    assert rows[0]["mean_residual"] == 0.0
    es = rows[END_SYSTOLE]
    assert es["GCS_pct"] == pytest.approx(float(analysed.strain.global_circumferential_pct[END_SYSTOLE]))
    # means over the myocardium: |u| there, and the warped frame closer to the reference than the raw frame
    myocardium = labels == 1
    magnitude = np.linalg.norm(analysed.fields.displacement_mm[END_SYSTOLE], axis=-1)
    assert es["mean_displacement_mm"] == pytest.approx(float(magnitude[myocardium].mean()))
    raw = np.abs(sequence.frames[END_SYSTOLE] - sequence.frames[0])[myocardium].mean()
    assert es["mean_residual"] < 0.6 * raw


def test_without_labels_no_strain_and_whole_grid_means(phantom):
    sequence = VolumeSequence(phantom[0].frames[:3], phantom[0].geometry, phantom[0].index_values[:3])
    result = analyse_cine(sequence, 1, "demons", iterations=30)
    assert result.labels is None and result.strain is None and result.myocardium is None
    np.testing.assert_allclose(result.jacobian[1], 1.0, atol=1e-6)
    rows = strain_rows(result, sequence)
    assert all(np.isnan(row["GCS_pct"]) and np.isnan(row["GRS_pct"]) for row in rows)
    magnitude = np.linalg.norm(result.fields.displacement_mm[2], axis=-1)
    assert rows[2]["mean_displacement_mm"] == pytest.approx(float(magnitude.mean()))
    with pytest.raises(InputError, match="frames"):
        strain_rows(result, phantom[0])


def test_labels_without_propagation_and_overlapping_layers(phantom):
    sequence, _truth, labels = phantom
    short = VolumeSequence(sequence.frames[:2], sequence.geometry, sequence.index_values[:2])
    result = analyse_cine(short, 0, "demons", labels=Volume(labels, sequence.geometry), myocardium_label=1,
                          propagate=False, iterations=30)
    assert result.labels is None and result.strain is not None
    ring, disc = labels == 1, labels > 0  # the disc overlaps the ring: two layers
    layers = pack_label_layers([ring, labels == 2, disc])
    assert [members for _layer, members in layers] == [[0, 1], [2]]
    assert np.array_equal(layers[0][0], labels) and np.array_equal(layers[1][0] == 3, disc)


def test_aha_segments_add_segmental_columns(phantom):
    sequence, _truth, labels = phantom
    short = VolumeSequence(sequence.frames[:3], sequence.geometry, sequence.index_values[:3])
    centre = sequence.geometry.ras_of_ijk(np.array([31.5, 31.5, 0.0]))
    result = analyse_cine(short, 0, "demons", labels=labels, myocardium_label=1, blood_pool_label=2,
                          rv_insertion_ras=centre + [-12.0, 12.0, 0.0], level="mid", propagate=False, iterations=30)
    rows = strain_rows(result, short)
    segmental = [column for column in rows[0] if column.endswith("CS_pct") and column != "GCS_pct"]
    assert segmental == [f"{n} mid {name} CS_pct" for n, name in zip(range(7, 13), (
        "anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral", "anterolateral"), strict=True)]
    assert all(rows[2][column] < -2.0 for column in segmental)  # the ring contracts all round
    assert all(rows[2][column.replace("CS_pct", "RS_pct")] > 2.0 for column in segmental)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_are_clear_errors(phantom):
    sequence, _truth, labels = phantom
    frames = sequence.frames.copy()
    expected = r"cine's grid is 64 x 64 pixels \(rows x columns\) of 1.25 x 1.25 mm, first voxel at RAS \(-30, 12, 40\)"
    with pytest.raises(GeometryError, match=r"another grid: it is 32 x 32 pixels\. The " + expected):
        analyse_cine(sequence, 0, "demons", labels=labels[:, ::2, ::2])
    moved = Volume(labels, Geometry((2.0, 2.0, 8.0), PHANTOM["origin_mm"]))
    with pytest.raises(GeometryError, match=r"its spacing is 2 x 2 mm\. The " + expected):
        analyse_cine(sequence, 0, "demons", labels=moved)
    shifted = Volume(labels, Geometry(PHANTOM["spacing_mm"], (-30.0, 15.0, 44.0)))
    with pytest.raises(GeometryError, match=r"origin is 5 mm away \(RAS \(-30, 15, 44\) mm, 0 columns and 2\.4 rows"):
        analyse_cine(sequence, 0, "demons", labels=shifted)
    with pytest.raises(InputError, match="label 5 does not occur.*1, 2"):
        analyse_cine(sequence, 0, "demons", labels=labels, myocardium_label=5)
    with pytest.raises(InputError, match="without a label map"):
        analyse_cine(sequence, 0, "demons", myocardium_label=1)
    with pytest.raises(InputError, match="same label"):
        analyse_cine(sequence, 0, "demons", labels=labels, myocardium_label=1, blood_pool_label=1)
    with pytest.raises(InputError, match="empty"):
        analyse_cine(sequence, 0, "demons", labels=np.zeros_like(labels))
    with pytest.raises(InputError, match="whole numbers"):
        analyse_cine(sequence, 0, "demons", labels=labels + 0.5)
    with pytest.raises(InputError, match="need strain"):
        analyse_cine(sequence, 0, "demons", labels=labels, level="mid")
    with pytest.raises(InputError, match="level 'middle'"):
        analyse_cine(sequence, 0, "demons", labels=labels, myocardium_label=1, level="middle")
    with pytest.raises(InputError, match="three RAS coordinates"):
        analyse_cine(sequence, 0, "demons", labels=labels, myocardium_label=1, rv_insertion_ras=(1.0, 2.0))
    with pytest.raises(InputError, match="at least 2 frames"):
        analyse_cine(VolumeSequence(sequence.frames[:1], sequence.geometry), 0, "demons")
    for reference in (-1, 5):
        with pytest.raises(InputError, match=f"Reference frame {reference} does not exist"):
            analyse_cine(sequence, reference, "demons", labels=labels)
    with pytest.raises(InputError, match="frame the label map was drawn on is not known"):
        analyse_cine(sequence, None, "demons", labels=labels)
    with pytest.raises(InputError, match=r"frame the label map was drawn on \(0-based index 7\) does not exist"):
        analyse_cine(sequence, 0, "demons", labels=labels, labels_index=7)
    assert np.array_equal(sequence.frames, frames)


def test_cancel_and_progress(phantom):
    sequence, _truth, labels = phantom
    short = VolumeSequence(sequence.frames[:3], sequence.geometry, sequence.index_values[:3])
    seen: list[float] = []
    analyse_cine(short, 0, "demons", labels=labels, myocardium_label=1, iterations=20,
                 progress=Progress(lambda fraction, message: seen.append(fraction)))
    assert seen[-1] == 1.0 and all(b >= a - 1e-9 for a, b in zip(seen, seen[1:], strict=False))
    token = CancelToken()

    def cancel_in_propagation(fraction: float, message: str) -> None:
        if fraction > 0.8:
            token.cancel()

    with pytest.raises(Cancelled):
        analyse_cine(short, 0, "demons", labels=labels, iterations=20, progress=Progress(cancel_in_propagation, token))


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cine_files(tmp_path_factory, phantom):
    sequence, _truth, labels = phantom
    folder = tmp_path_factory.mktemp("cine")
    short = VolumeSequence(sequence.frames[:4], sequence.geometry, sequence.index_values[:4])
    return (write_sequence(short, folder / "cine.seq.nrrd"),
            write_image(Volume(labels, sequence.geometry), folder / "labels.nrrd"), short)


def test_cli_writes_every_output(tmp_path, cine_files, capsys):
    cine, labels_path, short = cine_files
    out = tmp_path / "out"
    centre = short.geometry.ras_of_ijk(np.array([31.5, 31.5, 0.0]))
    point = ",".join(f"{v:.3f}" for v in centre + [-12.0, 12.0, 0.0])
    code = main_cli.main(["motion", str(cine), "--method", "network", "--device", "cpu", "--labels", str(labels_path),
                          "--labels-frame", "1", "--myocardium-label", "1", "--blood-pool-label", "2",
                          f"--rv-insertion={point}", "--level", "basal", "--displacement-folder", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Peak global circumferential strain" in printed and "strain.png" in printed
    assert "Cine: cine.seq.nrrd: 4 frames of 64 x 64 pixels." in printed
    assert "Multi-pair network (joint), refined on this cine (30 steps), 2-D slice by slice" in printed
    # the phantom's largest cavity is its first frame, where the labels were drawn
    assert "Reference: frame 1 of 4 (end-diastole by the largest LV cavity" in printed
    for name in ("warped.seq.nrrd", "displacement.seq.nrrd", "jacobian.seq.nrrd", "labels.seq.nrrd", "motion.csv",
                 "strain_peaks.csv", "strain.png", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "network" and summary["options"]["refine_steps"] == 30
    assert summary["model"]["sha256"] == load_card("motion_network").sha256 and summary["frames"] == 4
    assert summary["reference_frame"] == 1 and summary["reference_rule"].startswith("largest LV cavity")
    assert summary["peak_global_strain"]["GCS_pct"] < -2.0 and summary["input"].startswith("cine.seq.nrrd")
    assert sorted(p.name for p in (out / "displacement").iterdir()) == [f"frame_{t:03d}.nrrd" for t in range(1, 5)]
    assert np.abs(read_displacement_field(out / "displacement" / "frame_001.nrrd")[0]).max() == 0.0
    fields, geometry, times = read_displacement_sequence(out / "displacement.seq.nrrd")
    assert fields.shape == (4, 1, 64, 64, 3) and geometry.is_close(short.geometry)
    np.testing.assert_allclose(times, short.index_values)
    for t in range(4):  # the sequence file holds the per-frame files' fields (float32)
        single, _ = read_displacement_field(out / "displacement" / f"frame_{t + 1:03d}.nrrd")
        np.testing.assert_allclose(fields[t], single, atol=1e-5)
    with open(out / "strain_peaks.csv") as stream:
        peaks = list(csv.DictReader(stream))
    assert [row["region"] for row in peaks][:2] == ["global", "1 basal anterior"] and len(peaks) == 7
    assert float(peaks[0]["peak_CS_pct"]) < -2.0 and peaks[0]["CS_frame"] in ("2", "3", "4")
    propagated = read_sequence(out / "labels.seq.nrrd")
    assert propagated.frames.shape == short.frames.shape and propagated.geometry.is_close(short.geometry)
    np.testing.assert_array_equal(propagated.frames[0], _labels(short))
    np.testing.assert_allclose(propagated.index_values, short.index_values)
    jacobian = read_sequence(out / "jacobian.seq.nrrd")
    np.testing.assert_allclose(jacobian.frames[0], 1.0, atol=1e-6)
    with open(out / "motion.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["frame"] for row in rows] == ["1", "2", "3", "4"]
    assert "1 basal anterior CS_pct" in rows[0] and "6 basal anterolateral RS_pct" in rows[0]
    assert abs(float(rows[0]["GCS_pct"])) < 1e-6 and float(rows[2]["GCS_pct"]) < -2.0


def test_cli_runs_the_network_alone_when_asked(tmp_path, cine_files, capsys):
    """--refine-steps 0: the network alone (its three passes), said in the summary; a negative count is refused."""
    cine, _labels_path, _short = cine_files
    command = ["motion", str(cine), "--method", "network", "--device", "cpu", "--reference", "1"]
    assert main_cli.main([*command, "--refine-steps", "0", "--out", str(tmp_path / "alone")]) == 0
    assert "Multi-pair network (joint) alone (3 passes)" in capsys.readouterr().out
    assert (tmp_path / "alone" / "displacement.seq.nrrd").is_file()
    assert main_cli.main([*command, "--refine-steps", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--refine-steps must be 0 or more" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_cli_without_labels_and_bad_inputs(tmp_path, cine_files, capsys):
    cine, labels_path, _short = cine_files
    assert main_cli.main(["motion", str(cine), "--method", "demons", "--reference", "2",
                          "--out", str(tmp_path / "plain")]) == 0
    printed = capsys.readouterr().out
    assert "Reference: frame 2 of 4 (given)" in printed and "relative to frame 2" in printed
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["method"] == "demons" and summary["model"] is None and summary["peak_global_strain"] is None
    assert not (tmp_path / "plain" / "strain.png").exists() and not (tmp_path / "plain" / "labels.seq.nrrd").exists()
    assert not (tmp_path / "plain" / "displacement").exists()
    assert np.abs(read_displacement_sequence(tmp_path / "plain" / "displacement.seq.nrrd")[0][1]).max() == 0.0
    with open(tmp_path / "plain" / "motion.csv") as stream:
        assert next(csv.DictReader(stream))["GCS_pct"] == "nan"
    capsys.readouterr()
    other = write_image(Volume(np.ones((1, 20, 20), np.uint8), Geometry()), tmp_path / "other.nrrd")
    cases = [(["--labels", str(other), "--reference", "1"], "another grid"),
             (["--myocardium-label", "1"], "without a label map"),
             (["--labels", str(labels_path), "--reference", "1", "--myocardium-label", "7"], "label 7 does not occur"),
             (["--scheme", "consecutive"], "--scheme applies to the network"),
             (["--refine-steps", "0"], "--refine-steps applies to the network"),
             (["--reference", "9"], "Reference frame 9 does not exist: the cine has 4 frames, numbered 1 to 4"),
             (["--reference", "0"], "Reference frame 0 does not exist"),
             (["--labels", str(labels_path)], "Say on which frame the label map was drawn"),
             (["--labels-frame", "2"], "--labels-frame was given without --labels"),
             (["--labels", str(labels_path), "--labels-frame", "5"], "Labels frame 5 does not exist")]
    for extra, words in cases:
        code = main_cli.main(["motion", str(cine), "--method", "demons", "--out", str(tmp_path / "bad"), *extra])
        error = capsys.readouterr().err
        assert code == 2 and words in error and "Traceback" not in error, (extra, error)
    with pytest.raises(SystemExit) as stop:
        main_cli.main(["motion", str(cine), "--rv-insertion", "1,2"])
    assert stop.value.code == 2 and "R,A,S" in capsys.readouterr().err
    code = main_cli.main(["motion", str(tmp_path / "missing.seq.nrrd"), "--method", "demons"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_displacement_sequence_loads_in_slicer_as_a_vector_volume_sequence(tmp_path):
    """Slicer's own volume-sequence reader (slicer-core) takes displacement.seq.nrrd: one vector volume per frame
    holding the LPS vectors, with the cine's index name, unit and values."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLVolumeSequenceStorageNode"):
        pytest.skip("slicer-core's Sequences storage node is not available")
    from vtk.util.numpy_support import vtk_to_numpy

    from scanai.motion.export import write_displacement_sequence

    sequence = VolumeSequence(np.zeros((4, 1, 6, 8)), Geometry((1.5, 1.25, 8.0), (3.0, 4.0, 5.0)), (0.0, 0.1, 0.2, 0.3))
    fields = np.random.default_rng(0).normal(size=(4, 1, 6, 8, 3))
    path = write_displacement_sequence(fields, sequence, tmp_path / "displacement.seq.nrrd")
    np.testing.assert_allclose(read_displacement_sequence(path)[0], fields, atol=1e-6)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    assert (node.GetNumberOfDataNodes(), node.GetIndexName(), node.GetIndexUnit()) == (4, "time", "s")
    np.testing.assert_allclose([float(node.GetNthIndexValue(t)) for t in range(4)], sequence.index_values)
    frame = node.GetNthDataNode(2)
    assert frame.GetClassName() == "vtkMRMLVectorVolumeNode"
    values = vtk_to_numpy(frame.GetImageData().GetPointData().GetScalars()).reshape(1, 6, 8, 3)
    np.testing.assert_allclose(values, fields[2] * [-1.0, -1.0, 1.0], atol=1e-6)  # LPS, as ITK fields
