"""Slow benchmarks of the short-scan Ki network (run by ``make bench``): CPU inference speed on a clinical-size
volume and the held-out evaluation over the whole held-out split (writes bench_output/pet_network.json)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench_results import write_result

pytest.importorskip("torch")

from scanai.core.image import Geometry, VolumeSequence
from scanai.pet.network import load_network, predict_parametric
from scanai.pet.simulate import make_phantom, noisy_frames, schedule

pytestmark = pytest.mark.slow


def _write(key: str, value) -> None:
    write_result("pet_network.json", key, value)


def test_inference_speed_256x256x200_three_frames() -> None:
    """256 x 256 x 200 voxels, 3 late frames (30-50 min): network + Patlak baseline under 30 s on the CPU."""
    load_network("cpu")  # load once outside the timing (sha256 check, torch import)
    phantom = make_phantom(np.random.default_rng(np.random.SeedSequence([555, 0])))
    timing = schedule((30.0, 50.0), 3)
    rng = np.random.default_rng(1)
    slices = [np.kron(noisy_frames(phantom, timing, rng, cv=0.15).frames, np.ones((1, 3, 3)))[:, 16:272, 16:272]
              for _ in range(4)]
    frames = np.stack([slices[k % 4] for k in range(200)], axis=1).astype(np.float32)  # (3, 200, 256, 256)
    sequence = VolumeSequence(frames, Geometry((1.33, 1.33, 2.0)), tuple(timing.mid_s))
    started = time.perf_counter()
    maps = predict_parametric(sequence, timing, phantom.input_function, device="cpu")
    seconds = time.perf_counter() - started
    print(f"\npet network inference 256x256x200, 3 frames: {seconds:.1f} s (incl. features and Patlak baseline)")
    _write("inference_256x256x200_3frames_s", round(seconds, 2))
    assert maps.ki.array.shape == (200, 256, 256)
    assert seconds < 30.0


def test_heldout_split_evaluation() -> None:
    """Network vs voxelwise Patlak on the whole validation split (20 % of the training phantoms, by phantom) and
    on the test phantoms, through scanai.pet.train.evaluate; prints and writes the numbers."""
    from scanai.pet.train import evaluate, split_phantoms

    model, card = load_network("cpu")
    seed = int(card.extra.get("seed", 0))
    _, validation, test = split_phantoms(seed, int(card.extra["phantoms"]), int(card.extra["test_phantoms"]))
    results = {}
    for name, phantoms in (("validation_split", validation), ("test", test)):
        metrics, _ = evaluate(model, phantoms, seed)
        results[name] = metrics
        print(f"\n{name} ({len(phantoms)} phantoms):")
        for schedule_name in ("2x10min", "4x5min"):
            print(f"  {schedule_name}: NRMSE network {metrics[f'{schedule_name}_nrmse_ki_network_vs_true']:.3f} vs "
                  f"Patlak {metrics[f'{schedule_name}_nrmse_ki_patlak_vs_true']:.3f} (reduction "
                  f"{metrics[f'{schedule_name}_nrmse_reduction_vs_true']:.1%}); SSIM network "
                  f"{metrics[f'{schedule_name}_ssim_ki_network_vs_true']:.3f} vs Patlak "
                  f"{metrics[f'{schedule_name}_ssim_ki_patlak_vs_true']:.3f}")
    _write("heldout", results)
    for metrics in results.values():
        assert metrics["2x10min_nrmse_reduction_vs_true"] >= 0.25
        assert metrics["2x10min_ssim_ki_network_vs_true"] > metrics["2x10min_ssim_ki_patlak_vs_true"]
