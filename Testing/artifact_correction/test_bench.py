"""Slow multi-phase motion-artifact benchmarks (``make bench``): the trained network against the classical baselines
on held-out simulated cardiac CT cases (the 8:2 test portion of the training seed and domain, never trained on, on
their own acquisition grids): RMSE, SSIM (¶87 accuracy rate), coronary width, input-order sensitivity and speed
(results in bench_output/motion_artifact.json, figure Resources/Screenshots/motion_artifact.png)."""

from __future__ import annotations

import json
import time
from functools import partial

import numpy as np
import pytest
from bench_results import SCREENSHOTS, write_result

pytest.importorskip("torch")
pytest.importorskip("skimage")

from scanai.artifact_correction.evaluate import case_heart, evaluate_methods, method_outputs
from scanai.artifact_correction.figures import comparison_figure
from scanai.artifact_correction.image_quality import rmse
from scanai.artifact_correction.network import load_artifact_corrector
from scanai.artifact_correction.train import card_draw, held_out_cases

pytestmark = pytest.mark.slow

CASES = 40


@pytest.fixture(scope="module")
def results():
    corrector = load_artifact_corrector("cpu")
    cases = held_out_cases(CASES, *card_draw(corrector.card))
    moving = [case for case, static in cases if not static]
    evaluation = evaluate_methods(moving, corrector)
    write_result("motion_artifact.json", "held_out", {"cases": len(moving), **evaluation["summary"]})
    print(json.dumps(evaluation["summary"], indent=1))
    return corrector, cases, evaluation["summary"]


def test_the_guarded_network_beats_the_inputs_and_ties_registration_fusion(results) -> None:
    """The guarded network (what `--method network` delivers: the network on the box around the moving heart) on its
    own simulator's held-out cases: at most 0.7x the better inner phase (measured 0.64), below registration fusion,
    half-way warping, the best phase and the plain mean (whole slice 8.4 vs fusion 9.1 HU, heart 20.2 vs 23.6). The
    raw network on the whole field of view is behind (0.86x): it sees more than the heart-centred crops it was
    trained on."""
    _corrector, _cases, summary = results
    guarded = summary["network-guarded"]
    assert guarded["rmse_ratio_to_centre"] <= 0.7
    for baseline in ("registration-fusion", "halfway", "best-phase", "mean"):
        assert guarded["rmse_hu"] < summary[baseline]["rmse_hu"], baseline
    assert guarded["rmse_heart_hu"] < summary["registration-fusion"]["rmse_heart_hu"]
    assert summary["network"]["rmse_ratio_to_centre"] <= 0.9


def test_acceptance_rate_coronary_width_and_input_order(results) -> None:
    _corrector, _cases, summary = results
    network = summary["network"]
    assert network["accuracy_rate_ssim_gt_0.90"] >= 0.90
    assert network["coronary_width_error_median"] <= 0.20
    assert summary["network-shuffled"]["rmse_hu"] > network["rmse_hu"]


def _best_seconds(function, repeats: int = 5) -> float:
    """The shortest of ``repeats`` timings of ``function()`` (the machine's load only ever adds time)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def test_network_is_ten_times_faster_than_registration_fusion(results) -> None:
    """Timed on the first five held-out moving slices at their own pixel sizes (what `--method network` runs: the
    network at its 1 mm, fusion on the slice's grid), best of 3 each, torch on one thread (single timings swing with
    the machine's load, and fusion's demons stop early on some slices). What it runs (the guarded network: two passes
    over the box around the moving heart, and the guard) meets the issue's 10x (measured 11.3x); the raw network
    over the whole field of view measured 10.4x and is held to 5x."""
    import torch

    from scanai.artifact_correction import baselines

    corrector, cases, _summary = results
    moving = [case for case, is_static in cases if not is_static][:5]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = {"network": 0.0, "network_guarded": 0.0, "registration_fusion": 0.0}
    try:
        for case in moving:
            phases, pct = np.asarray(case.inputs, dtype=np.float32)[:, None], [w.phase_pct for w in case.windows]
            pixel = (case.pixel_mm, case.pixel_mm)
            runs = {"network": partial(corrector.correct_on_grid, phases, pct, pixel),
                    "network_guarded": partial(corrector.correct_guarded, phases, pct, pixel),
                    "registration_fusion": partial(baselines.registration_fusion, phases, (*pixel, 1.0))}
            runs["network_guarded"]()  # warm-up
            for name, run in runs.items():
                seconds[name] += _best_seconds(run, 3)
    finally:
        torch.set_num_threads(threads)
    speed = {f"{name}_s": value / len(moving) for name, value in seconds.items()}
    speed |= {"ratio": seconds["registration_fusion"] / seconds["network"],
              "ratio_guarded": seconds["registration_fusion"] / seconds["network_guarded"]}
    write_result("motion_artifact.json", "speed", speed)
    print(speed)
    assert speed["ratio_guarded"] >= 10.0
    assert speed["ratio"] >= 5.0


def test_the_guard_never_costs_the_network_its_gain(results) -> None:
    """Where the phases agree the guard returns their mean, where they disagree the network's correction within
    the phases' range: on this simulator it is better than the raw network (measured 8.4 vs 10.6 HU)."""
    _corrector, _cases, summary = results
    assert summary["network-guarded"]["rmse_hu"] <= summary["network"]["rmse_hu"]
    assert summary["network-guarded"]["rmse_heart_hu"] <= summary["network"]["rmse_heart_hu"]


def _motion_over_noise(case) -> float:
    """How far an inner phase's error in the heart exceeds its error elsewhere (motion against noise)."""
    heart = case_heart(case)
    error = (case.inputs[1] - case.target[0]) ** 2
    return float(np.sqrt(error[heart].mean() / error[~heart].mean()))


def test_static_cases_come_back_unchanged_and_figure(results) -> None:
    """A still heart comes back no worse than the mean of its phases (issue 27's identity target); the figure shows
    the moving case whose motion most exceeds its noise."""
    corrector, cases, _summary = results
    static = [case for case, is_static in cases if is_static]
    errors = []
    for case in static:
        pixel = (case.pixel_mm, case.pixel_mm)
        output = corrector.correct_guarded(case.inputs[:, None], [w.phase_pct for w in case.windows], pixel)
        errors.append((rmse(output.output[0, 0], case.target[0]), rmse(case.inputs.mean(axis=0), case.target[0])))
    write_result("motion_artifact.json", "static_rmse_hu", errors)
    assert all(output <= mean + 0.5 for output, mean in errors), errors
    moving = [case for case, is_static in cases if not is_static]
    case = max(moving, key=_motion_over_noise)
    outputs = {name: function(case) for name, function in method_outputs(corrector).items()
               if name in ("network-guarded", "registration-fusion", "halfway", "best-phase", "mean")}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = comparison_figure(case, outputs, SCREENSHOTS / "motion_artifact.png")
    assert path.stat().st_size > 10_000
