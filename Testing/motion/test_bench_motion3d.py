"""Slow benchmark of 3-D+t motion (run by ``make bench``; results in bench_output/motion_3d.json).

The beating-ventricle phantom (:mod:`scanai.motion.phantom3d`: 64 x 64 x 48 voxels of 2 mm, 10 frames over one
cycle, 3.5-voxel endocardial contraction, 10 degree apical twist, 12 % long-axis shortening, noise 0.01) with its
exact motion. The 3-D joint multi-pair SVF optimisation (``--dims 3d``, method svf3d) is held against the truth:
end-systolic end-point error in the myocardium <= 0.5 voxel, folding <= 0.1 %, 3-D GCS / GRS within 2 points of
the analytic strain; so is the experimental 3-D network (``--method network-3d``) with svf3d's optimisation after it,
and alone it must remove most of the motion; the shipped 2-D network run slice by slice (``--dims 2d``) is measured
beside them on the same volumes (it cannot see the through-plane motion); and svf3d on the phantom kept as a
thick-slice short-axis stack. The real test is the Sunnybrook stack (last test).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench_results import write_result

pytest.importorskip("torch")

from scanai.motion.phantom3d import beating_ventricle_phantom
from scanai.motion.pipeline import analyse_cine
from scanai.motion.strain import myocardial_strain

pytestmark = pytest.mark.slow


def _write(key: str, value) -> None:
    write_result("motion_3d.json", key, value)


def _errors(displacement_mm: np.ndarray, phantom) -> dict[str, float]:
    """End-point errors (voxels) against the phantom's truth: myocardium at end-systole, all frames, whole grid."""
    spacing = phantom.sequence.geometry.spacing_mm[0]
    error = np.linalg.norm(displacement_mm - phantom.displacement_mm, axis=-1) / spacing
    es, wall = phantom.end_systole, phantom.myocardium
    return {"es_myocardium_mean_voxels": round(float(error[es][wall].mean()), 4),
            "es_myocardium_p95_voxels": round(float(np.percentile(error[es][wall], 95)), 4),
            "all_frames_myocardium_mean_voxels": round(float(error[1:, wall].mean()), 4),
            "es_whole_grid_mean_voxels": round(float(error[es].mean()), 4)}


@pytest.mark.filterwarnings("ignore:Eroding the myocardium mask")
def test_three_d_phantom_svf_against_exact_truth() -> None:
    phantom = beating_ventricle_phantom()
    sequence, es = phantom.sequence, phantom.end_systole
    truth_motion = np.linalg.norm(phantom.displacement_mm[es], axis=-1)[phantom.myocardium] / 2.0
    started = time.perf_counter()
    result = analyse_cine(sequence, 0, "svf3d", labels=phantom.labels(), myocardium_label=2, blood_pool_label=1,
                          dims="3d", propagate=False)
    seconds = time.perf_counter() - started
    strain = result.strain
    true_gcs, true_grs = phantom.true_strain(strain.mask)
    exact = myocardial_strain(phantom.displacement_mm, sequence.geometry, phantom.myocardium,
                              blood_pool=phantom.blood_pool)
    gcs_error = np.abs(strain.global_circumferential_pct - true_gcs)
    grs_error = np.abs(strain.global_radial_pct - true_grs)
    whole = (result.jacobian[1:] <= 0).mean()
    report = {
        "phantom": {"shape_kji": list(sequence.frames.shape[1:]), "spacing_mm": 2.0, "frames": len(sequence),
                    "end_systole_frame": es + 1, "myocardium_voxels": int(phantom.myocardium.sum()),
                    "es_true_motion_mean_voxels": round(float(truth_motion.mean()), 3),
                    "es_true_motion_max_voxels": round(float(truth_motion.max()), 3)},
        "method": result.fields.method, "settings": {k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in result.fields.options.items()},
        "seconds_end_to_end": round(seconds, 1),
        "endpoint_error": _errors(result.fields.displacement_mm, phantom),
        "folding_pct": {"myocardium_max_over_frames": round(100 * float(result.fold_fraction.max()), 5),
                        "whole_grid": round(100 * float(whole), 5)},
        "strain_pct": {"es_gcs_estimate": round(float(strain.global_circumferential_pct[es]), 2),
                       "es_gcs_truth": round(float(true_gcs[es]), 2),
                       "es_grs_estimate": round(float(strain.global_radial_pct[es]), 2),
                       "es_grs_truth": round(float(true_grs[es]), 2),
                       "gcs_max_error_over_frames": round(float(gcs_error.max()), 2),
                       "grs_max_error_over_frames": round(float(grs_error.max()), 2),
                       "exact_field_es_gcs": round(float(exact.global_circumferential_pct[es]), 2),
                       "exact_field_es_grs": round(float(exact.global_radial_pct[es]), 2)},
    }
    _write("svf3d", report)
    print(report)
    per_slice = _network_per_slice(phantom)  # written before any assertion can stop the test
    network = {refined: _network_3d(phantom, refined) for refined in (False, True)}
    assert report["endpoint_error"]["es_myocardium_mean_voxels"] <= 0.5
    assert report["folding_pct"]["myocardium_max_over_frames"] <= 0.1
    assert gcs_error[es] <= 2.0 and grs_error[es] <= 2.0
    # what 3-D adds: the shipped 2-D network slice by slice cannot follow the through-plane motion
    assert report["endpoint_error"]["es_myocardium_mean_voxels"] < per_slice["endpoint_error"][
        "es_myocardium_mean_voxels"]
    # the 3-D network: alone it removes most of the motion; with svf3d's optimisation after it, the targets hold
    assert network[False]["endpoint_error"]["es_myocardium_mean_voxels"] < 0.5 * report["phantom"][
        "es_true_motion_mean_voxels"]
    refined = network[True]
    assert refined["endpoint_error"]["es_myocardium_mean_voxels"] <= 0.5
    assert refined["folding_pct_myocardium_max"] <= 0.1
    assert abs(refined["es_gcs_estimate"] - refined["es_gcs_truth"]) <= 2.0
    assert abs(refined["es_grs_estimate"] - refined["es_grs_truth"]) <= 2.0


def _network_3d(phantom, refined: bool) -> dict:
    """The shipped 3-D network (``--dims 3d --method network-3d``) on the phantom, alone or refined by svf3d's
    optimisation started from its fields."""
    es = phantom.end_systole
    started = time.perf_counter()
    result = analyse_cine(phantom.sequence, 0, "network-3d", labels=phantom.labels(), myocardium_label=2,
                          blood_pool_label=1, dims="3d", propagate=False, device="cpu",
                          refine_steps=None if refined else 0)
    seconds = time.perf_counter() - started
    true_gcs, true_grs = phantom.true_strain(result.strain.mask)
    report = {"method": f"network 3-D, {'refined' if refined else 'alone'}", "seconds_end_to_end": round(seconds, 1),
              "endpoint_error": _errors(result.fields.displacement_mm, phantom),
              "folding_pct_myocardium_max": round(100 * float(result.fold_fraction.max()), 5),
              "es_gcs_estimate": round(float(result.strain.global_circumferential_pct[es]), 2),
              "es_gcs_truth": round(float(true_gcs[es]), 2),
              "es_grs_estimate": round(float(result.strain.global_radial_pct[es]), 2),
              "es_grs_truth": round(float(true_grs[es]), 2),
              "gcs_max_error_over_frames": round(float(np.abs(result.strain.global_circumferential_pct
                                                              - true_gcs).max()), 2),
              "grs_max_error_over_frames": round(float(np.abs(result.strain.global_radial_pct - true_grs).max()), 2)}
    _write(f"network_3d_{'refined' if refined else 'alone'}", report)
    print(report)
    return report


def _network_per_slice(phantom) -> dict:
    """The shipped 2-D network per slice (``--dims 2d``) on the same phantom, reported beside the 3-D method."""
    es = phantom.end_systole
    started = time.perf_counter()
    result = analyse_cine(phantom.sequence, 0, "network", labels=phantom.labels(), myocardium_label=2,
                          blood_pool_label=1, dims="2d", propagate=False, device="cpu")
    seconds = time.perf_counter() - started
    true_gcs, true_grs = phantom.true_strain(result.strain.mask)
    report = {"method": "network, 2-D slice by slice", "seconds_end_to_end": round(seconds, 1),
              "endpoint_error": _errors(result.fields.displacement_mm, phantom),
              "folding_pct_myocardium_max": round(100 * float(result.fold_fraction.max()), 5),
              "es_gcs_estimate": round(float(result.strain.global_circumferential_pct[es]), 2),
              "es_gcs_truth": round(float(true_gcs[es]), 2),
              "es_grs_estimate": round(float(result.strain.global_radial_pct[es]), 2),
              "es_grs_truth": round(float(true_grs[es]), 2)}
    _write("network_2d_per_slice", report)
    print(report)
    return report


def test_three_d_phantom_as_a_thick_slice_stack() -> None:
    """The same phantom kept as a short-axis stack (every fourth slice: 12 slices of 8 mm, no slice-profile blur):
    svf3d with its defaults, errors in mm against the exact truth of those slices."""
    from scanai.core.image import Geometry, VolumeSequence

    phantom = beating_ventricle_phantom()
    kept = slice(2, 48, 4)
    geometry = phantom.sequence.geometry
    stack = VolumeSequence(phantom.sequence.frames[:, kept],
                           Geometry((2.0, 2.0, 8.0), tuple(geometry.ras_of_ijk(np.array([0.0, 0.0, 2.0]))),
                                    geometry.directions), phantom.sequence.index_values)
    truth, wall, es = phantom.displacement_mm[:, kept], phantom.myocardium[kept], phantom.end_systole
    started = time.perf_counter()
    result = analyse_cine(stack, 0, "svf3d", labels=phantom.labels()[kept], myocardium_label=2, dims="3d",
                          propagate=False)
    error = np.linalg.norm(result.fields.displacement_mm[es] - truth[es], axis=-1)[wall]
    through = np.abs(result.fields.displacement_mm[es][..., 2] - truth[es][..., 2])[wall]
    seconds = time.perf_counter() - started
    report = {"stack": "12 slices of 8 mm, 2 mm in-plane", "seconds_end_to_end": round(seconds, 1),
              "es_myocardium_mean_error_mm": round(float(error.mean()), 3),
              "es_myocardium_through_plane_error_mm": round(float(through.mean()), 3),
              "es_true_motion_mean_mm": round(float(np.linalg.norm(truth[es], axis=-1)[wall].mean()), 3),
              "folding_pct_myocardium_max": round(100 * float(result.fold_fraction.max()), 5)}
    _write("svf3d_stack_8mm", report)
    print(report)
    assert report["es_myocardium_mean_error_mm"] <= 0.25 * report["es_true_motion_mean_mm"]
    assert report["folding_pct_myocardium_max"] <= 0.1


def test_sunnybrook_stack_in_three_d_against_slice_by_slice(shared_data) -> None:
    """The only real 3-D+t cine at hand: the Sunnybrook short-axis stack (12 slices of 10 mm, 1.37 mm pixels, 20
    frames), cropped to the contours plus 24 pixels. The experts' ED endocardium of the nine contoured slices,
    carried to ES by svf3d and the 3-D network (refined and alone) in 3-D and by the network slice by slice, against
    their ES contours (Dice per slice). Measured: svf3d mean 0.917 (the base 0.814, the apex 0.867), slice by slice
    0.926 (the base 0.860, the apex 0.878): on slices this thick 2-D (the default) is the better choice; 3-D stays
    within reach of it. The 3-D network 0.894 refined (the base 0.61), 0.863 alone; not moving at all 0.835."""
    from sunnybrook_cases import contoured_stack

    from scanai.motion.propagate import dice

    sequence, labels, ed, ends = contoured_stack(shared_data)
    results = {}
    for name, method, dims, options in (("3-D svf3d", "svf3d", "3d", {}), ("2-D network", "network", "2d", {}),
                                        ("3-D network", "network-3d", "3d", {}),
                                        ("3-D network alone", "network-3d", "3d", {"refine_steps": 0})):
        started = time.perf_counter()
        result = analyse_cine(sequence, ed, method, labels=labels, myocardium_label=2, blood_pool_label=1,
                              device="cpu", dims=dims, **options)
        dices = {index: round(dice(result.labels[es][index] == 1, mask), 3) for index, (es, mask) in ends.items()}
        results[name] = {"dice": dices, "mean": round(float(np.mean(list(dices.values()))), 4),
                         "seconds_end_to_end": round(time.perf_counter() - started, 1)}
    _write("sunnybrook_stack", {"crop_kji": list(sequence.frames.shape[1:]), **results})
    print(results)
    three_d = results["3-D svf3d"]
    assert three_d["mean"] >= 0.90 and min(three_d["dice"].values()) >= 0.70
    assert all(value >= 0.85 for index, value in three_d["dice"].items() if index != min(ends))  # all but the base
    network = results["3-D network"]  # experimental: it loses at the base (0.61), holds elsewhere
    assert all(value >= 0.85 for index, value in network["dice"].items() if index != min(ends))
    assert results["3-D network alone"]["mean"] > 0.835  # above not moving the contours at all
