"""Tests of the short-scan Ki network (scanai.pet.network), its simulator and its training pieces."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from scanai.core.errors import InputError, ModelError
from scanai.core.image import Geometry, VolumeSequence
from scanai.pet.input_function import InputFunction
from scanai.pet.kinetics import patlak_ki, two_tissue_tacs
from scanai.pet.simulate import (
    F18_LAMBDA_PER_MIN,
    as_sequence,
    make_phantom,
    noise_scale,
    noisy_frames,
    random_schedule,
    schedule,
)
from scanai.pet.timing import FrameTiming

HELDOUT_SEED = 987654  # never used by scanai.pet.train (its streams are [seed, 1|2, n] with seed 0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(np.random.SeedSequence([HELDOUT_SEED, 0])))


def nrmse(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm((estimate - reference)[mask]) / np.linalg.norm(reference[mask]))


# ---------------------------------------------------------------------------------------------- simulator
def test_import_is_torch_free() -> None:
    code = ("import sys; import scanai.pet.network, scanai.pet.simulate, scanai.pet.train; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_true_ki_is_the_phantom_convention(phantom) -> None:
    body = phantom.body
    expected = (1 - phantom.vb) * patlak_ki(phantom.k1, phantom.k2, phantom.k3)
    np.testing.assert_allclose(phantom.ki_true[body], expected[body], rtol=1e-12)
    assert np.all(phantom.ki_true[~body] == 0)
    assert phantom.lesions.max() >= 1 and phantom.ki_true[phantom.lesions > 0].mean() > 0.02
    blood = phantom.vb == 1.0
    assert np.all(phantom.ki_true[blood] == 0)
    tissue = body & ~blood
    assert phantom.vb[tissue].min() >= 0.03 and phantom.vb[tissue].max() <= 0.05


def test_noise_free_frames_match_two_tissue_tacs(phantom) -> None:
    timing = schedule((30.0, 50.0), 4)
    clean = phantom.clean_frames(timing)
    rng = np.random.default_rng(0)
    voxels = np.argwhere(phantom.body)
    voxels = np.concatenate([voxels[rng.choice(len(voxels), 6, replace=False)], np.argwhere(phantom.lesions > 0)[:2]])
    for j, i in voxels:
        reference = two_tissue_tacs(phantom.input_function, timing, phantom.k1[j, i], phantom.k2[j, i],
                                    phantom.k3[j, i], 0.0, phantom.vb[j, i])[0]
        np.testing.assert_allclose(clean[:, j, i], reference, rtol=1e-3)


def test_full_scan_patlak_label_is_close_to_true_ki(phantom) -> None:
    uptake = phantom.body & (phantom.ki_true > 0.01)
    error = np.abs(phantom.ki_patlak_full[uptake] / phantom.ki_true[uptake] - 1)
    assert np.median(error) < 0.03 and error.max() < 0.15
    blood = phantom.vb == 1.0
    if blood.any():
        np.testing.assert_allclose(phantom.v_patlak_full[blood], 1.0, atol=1e-6)


def test_simulation_is_seeded(phantom) -> None:
    again = make_phantom(np.random.default_rng(np.random.SeedSequence([HELDOUT_SEED, 0])))
    for name in ("k1", "k2", "k3", "vb", "ki_true", "ki_patlak_full"):
        np.testing.assert_array_equal(getattr(phantom, name), getattr(again, name))
    timing = schedule((30.0, 50.0), 2)
    a = noisy_frames(phantom, timing, np.random.default_rng(5)).frames
    b = noisy_frames(phantom, timing, np.random.default_rng(5)).frames
    c = noisy_frames(phantom, timing, np.random.default_rng(6)).frames
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_scales_with_activity_decay_and_duration(phantom) -> None:
    timing = FrameTiming.from_start_end([2400.0, 3300.0], [3000.0, 3600.0])  # 10 min at 45 min, 5 min at 57.5
    cv = 0.2
    rng = np.random.default_rng(1)
    draws = [noisy_frames(phantom, timing, rng, cv=cv, psf_fwhm_mm=5.0) for _ in range(6)]
    clean = draws[0].clean
    body = phantom.body & (clean[0] > 0.2 * clean[0][phantom.body].mean())
    reference = float(np.average(clean[:, phantom.body].mean(axis=1), weights=timing.duration_s))
    s = noise_scale(cv, reference)
    for k in range(2):
        predicted = s * clean[k] * np.exp(F18_LAMBDA_PER_MIN * timing.mid_min[k]) / (timing.duration_s[k] / 60)
        observed = np.mean([(d.frames[k] - clean[k]) ** 2 for d in draws], axis=0)
        assert abs(observed[body].sum() / predicted[body].sum() - 1) < 0.05


def test_random_schedules_stay_in_the_window() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        timing = random_schedule(rng, (30.0, 50.0))
        assert timing.start_s[0] >= 1800 and timing.end_s[-1] <= 3000 and 1 <= len(timing) <= 6


# ---------------------------------------------------------------------------------------------- features
def test_features_are_scale_invariant_and_recover_the_patlak_slope(phantom) -> None:
    from scanai.pet.network import KI_SCALE, patlak_features, window_axes
    from scanai.pet.patlak import patlak_fit

    timing = schedule((30.0, 50.0), 4)
    frames = noisy_frames(phantom, timing, np.random.default_rng(2)).frames
    x, cp, w = window_axes(timing, phantom.input_function)
    features = patlak_features(frames, x, cp, w)
    scaled_if = InputFunction(phantom.input_function.t_s, phantom.input_function.activity * 37.0)
    x2, cp2, w2 = window_axes(timing, scaled_if)
    np.testing.assert_allclose(patlak_features(frames * 37.0, x2, cp2, w2), features, rtol=1e-5, atol=1e-6)
    fit = patlak_fit(frames[:, phantom.body].T, timing, phantom.input_function, 0.0, "duration")
    np.testing.assert_allclose(features[0][phantom.body] * KI_SCALE, fit.ki_per_min, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(features[2][phantom.body], fit.intercept, rtol=1e-4, atol=1e-5)
    single = patlak_features(frames[:1], x[:1], cp[:1], w[:1])
    assert np.all(single[[0, 2, 4, 5]] == 0) and np.all(single[1][phantom.body & (phantom.ki_true > 0)] != 0)


def test_tiny_network_overfits_one_batch(phantom) -> None:
    torch = pytest.importorskip("torch")
    from scanai.pet.network import build_ki_network
    from scanai.pet.train import loss_terms, render_sample

    torch.manual_seed(0)
    sample = render_sample(phantom, np.random.default_rng(4), schedule((30.0, 50.0), 2), cv=0.1)
    window = (slice(None), slice(28, 60), slice(28, 60))
    x = torch.from_numpy(np.ascontiguousarray(sample.features[window]))[None]
    y = torch.from_numpy(np.ascontiguousarray(sample.target[window]))[None]
    m = torch.from_numpy(sample.body[window[1:]].astype(np.float32))[None]
    model = build_ki_network({"widths": [8, 16, 16], "head_width": 8})
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and robust on a busy CPU
    try:
        for _ in range(150):
            optimiser.zero_grad()
            loss = loss_terms(model(x), y, m)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    assert min(losses[-10:]) < losses[0] / 10, (losses[0], losses[-10:])


# ---------------------------------------------------------------------------------------------- shipped network
@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from scanai.pet.network import load_network

    return load_network("cpu")


def _study(phantom, n_frames: int, seed: int, cv: float = 0.15, slices: int = 1, scale: float = 1.0):
    """A (T, slices, H, W) sequence (each slice an independent noise draw of ``phantom``) with its timing/IF."""
    timing = schedule((30.0, 50.0), n_frames)
    rng = np.random.default_rng(seed)
    frames = np.stack([noisy_frames(phantom, timing, rng, cv=cv, psf_fwhm_mm=5.0).frames for _ in range(slices)],
                      axis=1)
    sequence = VolumeSequence((frames * scale).astype(np.float32),
                              Geometry((4.0, 4.0, 5.0), (-190.0, -170.0, 12.0)), tuple(timing.mid_s))
    base = phantom.input_function
    return sequence, timing, InputFunction(base.t_s, base.activity * scale, base.unit)


def test_shipped_card(shipped) -> None:
    model, card = shipped
    assert card.input_contract["channels"] == 6 and "-quick" not in card.version
    assert card.metrics["2x10min_nrmse_reduction_vs_true"] >= 0.25
    assert card.training_command.startswith("python -m scanai.pet.train")
    assert card.extra["parameters"] == sum(p.numel() for p in model.parameters())


def test_shipped_weights_load_through_the_key_map_and_new_names_round_trip(shipped) -> None:
    """The shipped file keeps KiNet's old names (enc1..., dec2...); KEY_MAP loads it into the shared U-Net, and
    a state dict saved under the U-Net's names (a retrained model) loads unchanged."""
    import torch

    from scanai.core.catalog import MODELS_DIR
    from scanai.nn.blocks import map_state_dict_keys
    from scanai.pet.layers import KEY_MAP
    from scanai.pet.network import build_ki_network

    model, card = shipped
    saved = torch.load(MODELS_DIR / card.weights_file, map_location="cpu", weights_only=True)
    assert {key.split(".")[0] for key in saved} == {"enc1", "enc2", "enc3", "dec2", "dec1", "head"}
    assert list(map_state_dict_keys(saved, KEY_MAP)) == list(model.state_dict())
    fresh = build_ki_network(card.architecture)
    fresh.load_state_dict(model.state_dict())
    assert all(torch.equal(fresh.state_dict()[key], value.cpu()) for key, value in model.state_dict().items())


def test_output_shape_geometry_and_positivity(shipped, phantom) -> None:
    from scanai.pet.network import predict_parametric

    sequence, timing, input_function = _study(phantom, 2, 11, slices=2)
    maps = predict_parametric(sequence, timing, input_function)
    assert maps.ki.array.shape == sequence.frames.shape[1:] == maps.v.array.shape
    assert maps.ki.geometry == sequence.geometry
    assert np.all(maps.ki.array >= 0) and np.all(np.isfinite(maps.ki.array))
    assert list(maps.frames) == [0, 1] and maps.patlak is not None
    assert maps.patlak.ki.array.shape == maps.ki.array.shape


def test_progress_reports_and_cancel(shipped, phantom) -> None:
    from scanai.core.errors import Cancelled
    from scanai.core.progress import Progress
    from scanai.pet.network import predict_parametric

    sequence, timing, input_function = _study(phantom, 2, 11)
    seen: list[float] = []
    predict_parametric(sequence, timing, input_function, progress=Progress(lambda f, m: seen.append(f)))
    assert seen and seen[-1] == pytest.approx(1.0)
    progress = Progress()
    progress.token.cancel()
    with pytest.raises(Cancelled):
        predict_parametric(sequence, timing, input_function, progress=progress)


def test_schedules_give_close_maps_and_scale_invariance(shipped, phantom) -> None:
    from scanai.pet.network import predict_parametric

    body = phantom.body
    maps = {}
    for n in (2, 4):
        sequence, timing, input_function = _study(phantom, n, 21)
        maps[n] = predict_parametric(sequence, timing, input_function, mask=body[None]).ki.array[0]
    assert nrmse(maps[2], maps[4], body) < 0.1
    for n in (2, 4):
        assert nrmse(maps[n], phantom.ki_true, body) < 0.2
    sequence, timing, input_function = _study(phantom, 2, 21, scale=37.0)
    scaled = predict_parametric(sequence, timing, input_function, mask=body[None]).ki.array[0]
    assert nrmse(scaled, maps[2], body) < 1e-5


def test_heldout_network_beats_voxelwise_patlak(shipped) -> None:
    """Acceptance: on freshly simulated phantoms of an unseen seed, Ki NRMSE >= 25 % lower than Patlak's."""
    from scanai.pet.network import predict_parametric

    network, patlak = [], []
    for n in range(1, 4):
        phantom = make_phantom(np.random.default_rng(np.random.SeedSequence([HELDOUT_SEED, n])))
        sequence, timing, input_function = _study(phantom, 2, 100 + n)
        maps = predict_parametric(sequence, timing, input_function, mask=phantom.body[None])
        network.append(nrmse(maps.ki.array[0], phantom.ki_true, phantom.body))
        patlak.append(nrmse(maps.patlak.ki.array[0], phantom.ki_true, phantom.body))
    assert np.mean(network) <= 0.75 * np.mean(patlak), (network, patlak)


def test_single_frame_works_without_a_patlak_baseline(shipped, phantom) -> None:
    from scanai.pet.network import predict_parametric

    sequence, timing, input_function = _study(phantom, 1, 31)
    maps = predict_parametric(sequence, timing, input_function, mask=phantom.body[None])
    assert maps.patlak is None and np.all(maps.ki.array >= 0)
    assert nrmse(maps.ki.array[0], phantom.ki_true, phantom.body) < 0.6


def test_input_errors(shipped, phantom) -> None:
    from scanai.pet.network import predict_parametric

    sequence, timing, input_function = _study(phantom, 2, 41)
    early = FrameTiming.from_start_end([600.0, 1200.0], [1200.0, 1500.0])
    with pytest.raises(InputError, match="No frame lies inside the window"):
        predict_parametric(sequence, early, input_function)
    with pytest.raises(InputError, match="outside the range the network was trained"):
        predict_parametric(sequence, timing, input_function, window_min=(5.0, 20.0))
    with pytest.raises(InputError, match="not a valid time range"):
        predict_parametric(sequence, timing, input_function, window_min=(50.0, 30.0))
    broken = sequence.frames.copy()
    broken[1, 0, 40, 40] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_parametric(replace(sequence, frames=broken), timing, input_function)
    with pytest.raises(InputError, match="frame timing lists"):
        predict_parametric(sequence, schedule((30.0, 50.0), 4), input_function)
    as_sequence(np.zeros((2, 8, 8)), timing)  # helper accepts 2-D frames


def test_model_contract_errors(shipped, phantom) -> None:
    from scanai.pet.network import predict_parametric

    model, card = shipped
    sequence, timing, input_function = _study(phantom, 2, 51)
    wrong = replace(card, input_contract={**card.input_contract, "features": "something-else"})
    with pytest.raises(ModelError):
        predict_parametric(sequence, timing, input_function, model=model, card=wrong)
    with pytest.raises(ModelError):
        predict_parametric(sequence, timing, input_function, model=model)
