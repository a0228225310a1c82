"""Slow multi-phase motion-artifact benchmarks (``make bench``): the trained network against the classical baselines
on held-out simulated cardiac CT cases (the 8:2 test portion of the training seed, never trained on): RMSE, SSIM
(¶87 accuracy rate), coronary width, input-order sensitivity and speed (results in bench_output/motion_artifact.json,
figure Resources/Screenshots/motion_artifact.png)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from bench_results import SCREENSHOTS, write_result

pytest.importorskip("torch")
pytest.importorskip("skimage")

from scanai.artifact_correction.evaluate import evaluate_methods, method_outputs
from scanai.artifact_correction.figures import comparison_figure
from scanai.artifact_correction.network import load_artifact_corrector
from scanai.artifact_correction.train import held_out_cases

pytestmark = pytest.mark.slow

CASES = 40


@pytest.fixture(scope="module")
def results():
    corrector = load_artifact_corrector("cpu")
    cases = held_out_cases(CASES)
    moving = [case for case, static in cases if not static]
    evaluation = evaluate_methods(moving, corrector)
    write_result("motion_artifact.json", "held_out", {"cases": len(moving), **evaluation["summary"]})
    print(json.dumps(evaluation["summary"], indent=1))
    return corrector, cases, evaluation["summary"]


def test_network_beats_the_centre_phase_and_every_baseline(results) -> None:
    _corrector, _cases, summary = results
    network = summary["network"]
    assert network["rmse_ratio_to_centre"] <= 0.7
    for baseline in ("registration-fusion", "halfway", "best-phase", "mean"):
        assert network["rmse_hu"] < summary[baseline]["rmse_hu"], baseline


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
    """Timed on one held-out slice, best of 5, torch on one thread (the scoring loop's single timings swing with
    the machine's load). The raw network meets the issue's 10x; the guarded one (what the pipeline runs: two
    network passes and the guard) is about half as fast and is held to 4x."""
    import torch

    from scanai.artifact_correction import baselines

    corrector, cases, _summary = results
    case = next(case for case, is_static in cases if not is_static)
    phases, pct = np.asarray(case.inputs, dtype=np.float32)[:, None], [w.phase_pct for w in case.windows]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        corrector.correct_guarded(phases, pct, (1.0, 1.0))  # warm-up
        network = _best_seconds(lambda: corrector.correct(phases, pct))
        guarded = _best_seconds(lambda: corrector.correct_guarded(phases, pct, (1.0, 1.0)))
        fusion = _best_seconds(lambda: baselines.registration_fusion(phases, (1.0, 1.0, 1.0)), 3)
    finally:
        torch.set_num_threads(threads)
    speed = {"network_s": network, "network_guarded_s": guarded, "registration_fusion_s": fusion,
             "ratio": fusion / network, "ratio_guarded": fusion / guarded}
    write_result("motion_artifact.json", "speed", speed)
    print(speed)
    assert speed["ratio"] >= 10.0
    assert speed["ratio_guarded"] >= 4.0


def test_the_guard_keeps_most_of_the_networks_gain_in_distribution(results) -> None:
    """On the training simulator the guard gives up the network's denoising where nothing moves (the output there
    is the mean of the phases), but stays well ahead of the centre phase and of registration fusion in the heart."""
    _corrector, _cases, summary = results
    guarded = summary["network-guarded"]
    assert guarded["rmse_ratio_to_centre"] <= 0.7
    assert guarded["rmse_heart_hu"] < summary["registration-fusion"]["rmse_heart_hu"]


def test_static_cases_come_back_unchanged_and_figure(results) -> None:
    corrector, cases, _summary = results
    static = [case for case, is_static in cases if is_static]
    errors = [float(np.sqrt(np.mean((corrector.correct(case.inputs[:, None], [w.phase_pct for w in case.windows])
                                     [0, 0] - case.target[0]) ** 2))) for case in static]
    write_result("motion_artifact.json", "static_rmse_hu", errors)
    assert all(error < 10.0 for error in errors)
    moving = [case for case, is_static in cases if not is_static]
    case = max(moving, key=lambda c: np.sqrt(np.mean((c.inputs[1] - c.target[0]) ** 2)))  # the most motion
    outputs = {name: function(case) for name, function in method_outputs(corrector).items()
               if name in ("network", "registration-fusion", "halfway", "best-phase", "mean")}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = comparison_figure(case, outputs, SCREENSHOTS / "motion_artifact.png")
    assert path.stat().st_size > 10_000
