"""The patent's motion correction model (US 12387302, digest §4.3 / §7.4): tensor contract, the input-count guard
(¶79), slice batching, and the shipped weights on held-out simulated cardiac CT cases (exact ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.artifact_correction.network import (
    ArtifactCorrector,
    baseline_indices,
    build_artifact_network,
    denormalise_hu,
    network_input,
    normalise_hu,
    time_features,
)
from scanai.core.catalog import ModelCard
from scanai.core.errors import Cancelled, InputError, ModelError
from scanai.core.progress import Progress

torch = pytest.importorskip("torch")

SMALL = {"widths": [4, 8, 8]}


def _network(head_scale: float = 0.0, **config):
    torch.manual_seed(0)
    model = build_artifact_network({**SMALL, **config}).eval()
    if head_scale:
        torch.nn.init.normal_(model.head.weight, 0.0, head_scale)
    return model


def _corrector(model=None, **config) -> ArtifactCorrector:
    architecture = {"type": "ResidualUNet2D", "n_inputs": 4, "n_outputs": 1, "time_channels": "sincos",
                    **SMALL, **config}
    card = ModelCard(name="test", version="0", task="test", architecture=architecture,
                     input_contract={"n_inputs": architecture["n_inputs"], "min_size": 16}, training_data="",
                     training_command="", metrics={}, sha256="")
    return ArtifactCorrector(model if model is not None else _network(0.05, **config), card)


def test_normalisation_clips_hu_and_maps_to_unit_range():
    hu = np.array([-3000.0, -1024.0, 0.0, 3071.0, 5000.0])
    np.testing.assert_allclose(normalise_hu(hu), [0.0, 0.0, 1024 / 4095, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(denormalise_hu(normalise_hu(hu[1:4])), hu[1:4], atol=1e-3)
    np.testing.assert_allclose(time_features([0.0, 25.0], "sincos"), [0, 1, 1, 0], atol=1e-7)
    np.testing.assert_allclose(time_features([69.0, 172.0], "phase"), [0.69, 0.72], atol=1e-7)
    x = network_input(np.zeros((4, 8, 8)), [69, 72, 75, 78])
    assert x.shape == (12, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[4:], np.broadcast_to(time_features([69, 72, 75, 78])[:, None, None], (8, 8, 8)))


def test_output_windows_of_the_baseline_follow_paragraphs_68_to_70():
    assert baseline_indices(4, 1) == [(1, 2)]          # ¶70: centred window between the two inner phases
    assert baseline_indices(4, 2) == [(1,), (2,)]      # ¶70: the two inner windows
    assert baseline_indices(3, 1) == [(1,)]            # ¶69: the middle window
    assert baseline_indices(2, 1) == [(0, 1)]          # ¶68: between the two
    with pytest.raises(ModelError):
        baseline_indices(4, 4)                          # claims 1/13 need M < N


@pytest.mark.parametrize(("n_inputs", "n_outputs", "time_channels", "channels"),
                         [(4, 1, "sincos", 12), (4, 2, "phase", 8), (3, 1, "none", 3)])
def test_shape_contract_and_untrained_network_returns_the_interpolation_baseline(n_inputs, n_outputs, time_channels,
                                                                                channels):
    model = _network(n_inputs=n_inputs, n_outputs=n_outputs, time_channels=time_channels)
    x = torch.rand(3, channels, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        y = model(x)
    assert tuple(y.shape) == (3, n_outputs, 32, 48)
    for m, group in enumerate(baseline_indices(n_inputs, n_outputs)):
        assert float((y[:, m] - x[:, list(group)].mean(dim=1)).abs().max()) < 1e-6


def test_network_is_deterministic_in_eval_mode_and_uses_every_input():
    model = _network(0.05)
    x = torch.rand(2, 12, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        first, second = model(x), model(x)
        alone = model(x[1:])
        changed = x.clone()
        changed[:, 0] = torch.rand(32, 32)  # an outer phase: not in the baseline, only seen through the network
        moved = model(changed)
    assert torch.equal(first, second)
    assert float((first[1:] - alone).abs().max()) < 1e-6  # a sample does not depend on the rest of its batch
    assert float((moved - first).abs().max()) > 1e-4


def test_wrong_phase_volume_count_is_refused_with_a_clear_message():
    corrector = _corrector()
    with pytest.raises(ModelError, match="trained for 4 phase volumes, got 3") as error:
        corrector.correct(np.zeros((3, 1, 32, 32)), [70, 73, 76])
    assert "Select exactly 4 phase volumes" in str(error.value)
    with pytest.raises(ModelError, match="got 5"):
        corrector.correct(np.zeros((5, 1, 32, 32)), [64, 67, 70, 73, 76])
    with pytest.raises(ModelError, match="8 x 40 pixels"):
        corrector.correct(np.zeros((4, 1, 8, 40)), [70, 73, 76, 79])
    with pytest.raises(InputError, match="4 phase volumes were given with 3 phases"):
        corrector.correct(np.zeros((4, 1, 32, 32)), [70, 73, 76])
    with pytest.raises(InputError, match=r"\(N, K, J, I\)"):
        corrector.correct(np.zeros((4, 32, 32)), [70, 73, 76, 79])
    bad = np.zeros((4, 1, 32, 32))
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        corrector.correct(bad, [70, 73, 76, 79])


def test_slices_are_corrected_independently_of_batching_and_grid_size():
    corrector = _corrector()
    rng = np.random.default_rng(3)
    phases = rng.normal(40.0, 300.0, (4, 5, 37, 45)).astype(np.float32)  # odd in-plane size: padded and cropped
    original = phases.copy()
    pct = [69.0, 72.0, 75.0, 78.0]
    one_by_one = corrector.correct(phases, pct, batch_slices=1)
    all_at_once = corrector.correct(phases, pct, batch_slices=5)
    assert one_by_one.shape == (1, 5, 37, 45) and one_by_one.dtype == np.float32
    np.testing.assert_allclose(one_by_one, all_at_once, atol=1e-3)  # HU
    reversed_slices = corrector.correct(phases[:, ::-1], pct, batch_slices=2)
    np.testing.assert_allclose(reversed_slices[:, ::-1], one_by_one, atol=1e-3)
    np.testing.assert_array_equal(phases, original)
    assert one_by_one.min() >= -1024.0 and one_by_one.max() <= 3071.0
    assert np.abs(one_by_one[0] - phases[1:3].mean(axis=0)).max() > 0.1  # the residual is applied


def test_progress_is_reported_per_batch_and_cancel_stops():
    corrector = _corrector()
    phases = np.zeros((4, 4, 32, 32), dtype=np.float32)
    seen: list[float] = []
    corrector.correct(phases, [70, 73, 76, 79], Progress(lambda f, _m: seen.append(f)), batch_slices=1)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 5
    progress = Progress()
    progress.token.cancel()
    with pytest.raises(Cancelled):
        corrector.correct(phases, [70, 73, 76, 79], progress)


# ---------------------------------------------------------------------------------------------- shipped weights
@pytest.fixture(scope="module")
def shipped():
    from scanai.artifact_correction.network import load_artifact_corrector

    return load_artifact_corrector("cpu")


@pytest.fixture(scope="module")
def held_out(shipped):
    """Held-out cases of the training seed and domain (test portion, never trained on), simulated afresh: the
    first 22 moving cases, of which the first 12 are scored as a whole, and the first static one. The motion-dominated
    ones (:func:`_motion_dominated`) show whether the moving heart itself is corrected, not only the noise."""
    pytest.importorskip("skimage")
    from scanai.artifact_correction.train import card_draw, is_test_case, make_case

    seed, domain = card_draw(shipped.card)
    moving, static = [], None
    for index in filter(is_test_case, range(1000)):
        case = make_case(seed, index, domain)
        if case.static:
            static = static or case
        else:
            moving.append(case)
        if static is not None and len(moving) == 22:
            break
    return moving, [case for case in moving if _motion_dominated(case)], static


def _rmse(a, b, mask=None) -> float:
    difference = np.asarray(a, np.float64) - b
    return float(np.sqrt(np.mean((difference if mask is None else difference[mask]) ** 2)))


def _centre_rmse(case, mask=None) -> float:
    """Mean RMSE of the two inner input phases (those either side of the centred output window)."""
    return float(np.mean([_rmse(case.inputs[k], case.target[0], mask) for k in (1, 2)]))


def _motion_region(case) -> np.ndarray:
    """Where the first and last phase volumes differ (smoothed |difference| > 20 HU, dilated 3 px): the moving
    heart, from the inputs alone."""
    from scipy import ndimage

    difference = ndimage.gaussian_filter(np.abs(case.inputs[3] - case.inputs[0]), 2.0)
    return ndimage.binary_dilation(difference > 20.0, iterations=3)


def _motion_dominated(case) -> bool:
    """The inner phases' error in the motion region is more than 2.5 times one phase's noise."""
    region = _motion_region(case)
    return bool(region.any()) and _centre_rmse(case, region) > 2.5 * case.features["noise_hu"]


def _guarded(shipped, case, order=(0, 1, 2, 3)) -> np.ndarray:
    """(H, W) HU: what `--method network` delivers (the guarded correction) for ``case``'s phases in ``order``."""
    order = list(order)
    return shipped.correct_guarded(case.inputs[order][:, None], case.phase_pct, (1.0, 1.0)).output[0, 0]


def _raw(shipped, case, order=(0, 1, 2, 3), pct=None) -> np.ndarray:
    """(H, W) HU: the network alone for ``case``'s phases in ``order`` (labelled ``pct``, default ascending)."""
    order = list(order)
    return shipped.correct(case.inputs[order][:, None], case.phase_pct if pct is None else pct)[0, 0]


def test_shipped_card_states_the_contract(shipped):
    card = shipped.card
    assert (shipped.n_inputs, shipped.n_outputs) == (4, 1)
    for key, value in {"order": "ascending_phase", "output_window_rule": "centre", "dims": "2D"}.items():
        assert card.input_contract[key] == value
    assert card.training_command.startswith("python -m scanai.artifact_correction.train")
    assert card.metrics["accuracy_rate_ssim_gt_0.90"] >= 0.90  # ¶87 acceptance on the test portion
    with pytest.raises(ModelError, match="trained for 4 phase volumes, got 2"):
        shipped.correct(np.zeros((2, 1, 64, 64)), [70, 75])


def test_shipped_model_corrects_held_out_cases(shipped, held_out):
    """What `--method network` delivers on the first 12 moving test cases: on average at most 0.7x the inner phases'
    error (measured 0.61), never worse than them, better than their plain mean in all but one or two (measured 12
    of 12); the network alone passes ¶87's SSIM > 0.90 on at least 10 of 12 (measured 11)."""
    from scanai.artifact_correction.image_quality import ssim

    moving = held_out[0][:12]
    ratios, below_plain, passing = [], 0, 0
    for case in moving:
        truth = case.target[0]
        output = _guarded(shipped, case)
        ratios.append(_rmse(output, truth) / _centre_rmse(case))
        assert ratios[-1] < 1.0 and ssim(output, truth) > 0.85, (case.index, ratios[-1])
        below_plain += _rmse(output, truth) < _rmse(case.inputs[1:3].mean(axis=0), truth)
        passing += ssim(_raw(shipped, case), truth) > 0.90
    assert np.mean(ratios) <= 0.7, ratios
    assert below_plain >= 10 and passing >= 10, (below_plain, passing)


def test_shipped_model_corrects_the_moving_heart_not_only_the_noise(shipped, held_out):
    """Where motion dominates the noise (9 of the first 22 moving test cases), inside the moving region: the
    guarded output's error is on average at most 0.9x the inner phases' mean's (measured 0.78; the network alone
    0.80) and below it in most cases (measured 9 of 9)."""
    strong = held_out[1]
    assert len(strong) >= 8
    guarded, raw, better = [], [], 0
    for case in strong:
        region, truth = _motion_region(case), case.target[0]
        plain = _rmse(case.inputs[1:3].mean(axis=0), truth, region)
        guarded.append(_rmse(_guarded(shipped, case), truth, region) / plain)
        raw.append(_rmse(_raw(shipped, case), truth, region) / plain)
        better += guarded[-1] < 1.0
    assert np.mean(guarded) <= 0.9 and np.mean(raw) <= 0.9, (guarded, raw)
    assert better >= 0.75 * len(strong), guarded


def test_shipped_model_leaves_a_still_heart_unchanged_within_noise(shipped, held_out):
    static = held_out[2]
    assert static is not None
    output = shipped.correct(static.inputs[:, None], static.phase_pct)[0, 0]
    truth = static.target[0]
    # nothing moves: the output stays within the noise of the inputs' mean and adds no structure of its own (it is
    # closer to the truth than the plain mean)
    assert _rmse(output, static.inputs.mean(axis=0)) < 10.0
    assert _rmse(output, truth) <= _rmse(static.inputs[1:3].mean(axis=0), truth)


def test_shuffled_input_order_makes_the_correction_worse(shipped, held_out):
    """On the motion-dominated cases, moving phases out of their ranked places raises the network's error in the
    moving region on every case (by at least 7 %), by a median of more than 10 % (measured 26 %); feeding them in
    descending order (labels reversed too) raises it by a median of more than 10 % (measured 21 %). (Swapping the
    two inner or the two outer phases while keeping the ascending labels is close to a symmetry of the
    centred-window task and is not asserted.)"""
    rises, descending = [], []
    for case in held_out[1]:
        region, truth = _motion_region(case), case.target[0]
        right = _rmse(_raw(shipped, case), truth, region)
        wrong = [_rmse(_raw(shipped, case, order), truth, region) for order in ([1, 3, 0, 2], [2, 0, 3, 1])]
        assert min(wrong) > right, (case.index, wrong, right)
        rises.append(np.mean(wrong) / right)
        reverse = [3, 2, 1, 0]
        descending.append(_rmse(_raw(shipped, case, reverse, case.phase_pct[reverse]), truth, region) / right)
    assert np.median(rises) > 1.1 and np.median(descending) > 1.1, (rises, descending)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cpu_and_cuda_outputs_agree(held_out):
    from scanai.artifact_correction.network import load_artifact_corrector, normalise_hu

    case = held_out[1][0]
    cpu = load_artifact_corrector("cpu").correct(case.inputs[:, None], case.phase_pct)
    cuda = load_artifact_corrector("cuda").correct(case.inputs[:, None], case.phase_pct)
    assert float(np.abs(normalise_hu(cpu) - normalise_hu(cuda)).max()) < 1e-4  # normalised units (digest §7.4)


def test_finer_pixels_are_corrected_at_the_training_pixel_size_and_keep_their_grid(shipped, held_out):
    """0.5 mm pixels (the simulated slices upsampled twice): the correction is made at the model's 1.0 mm and added
    back, so the result keeps the twice finer grid; it keeps the inputs' finest-scale noise too, so it is a little
    behind correcting the 1.0 mm slices directly, and ahead of the inner phases' mean."""
    from scipy import ndimage

    _moving, strong, _static = held_out
    case = strong[0]

    def finer(images: np.ndarray) -> np.ndarray:
        return ndimage.zoom(images, (1,) * (images.ndim - 2) + (2, 2), order=1, grid_mode=True, mode="nearest")

    inputs, truth = finer(case.inputs[:, None]), finer(case.target)[0]
    output = shipped.correct_on_grid(inputs, case.phase_pct, (0.5, 0.5))
    assert output.shape == (1, 1, *truth.shape)
    direct = finer(shipped.correct(case.inputs[:, None], case.phase_pct))[0, 0]
    assert _rmse(output[0, 0], truth) <= 1.5 * _rmse(direct, truth)  # measured 5.5 vs 5.6 HU
    assert _rmse(output[0, 0], truth) <= 0.8 * _rmse(inputs[1:3].mean(axis=0)[0], truth)  # vs 7.6 HU
    same = shipped.correct_on_grid(case.inputs[:, None], case.phase_pct, (1.05, 0.95))
    np.testing.assert_array_equal(same, shipped.correct(case.inputs[:, None], case.phase_pct))


def test_the_guarded_network_beats_the_uncorrected_inputs_and_keeps_the_coronary_width(shipped):
    """Four held-out moving cases on their own acquisition grids (0.9-1.4 mm pixels: the correction is made at the
    model's 1 mm and added back), scored side by side: the guarded network is below the inner phases' mean and the
    best phase on every case, at most 0.75x the better inner phase (measured 0.64) and, in the heart, below
    registration fusion on average (measured 20.3 vs 23.8 HU; below it on all four); coronary widths kept (median
    error 4 %). The full comparison is in make bench."""
    pytest.importorskip("skimage")
    from scanai.artifact_correction.evaluate import evaluate_methods
    from scanai.artifact_correction.train import card_draw, held_out_cases

    cases = [case for case, static in held_out_cases(6, *card_draw(shipped.card)) if not static][:4]
    summary = evaluate_methods(cases, shipped, ["network-guarded", "registration-fusion", "best-phase", "mean",
                                                "centre"])["summary"]
    guarded = summary["network-guarded"]
    for baseline in ("best-phase", "mean"):
        assert guarded[f"fraction_below_{baseline}"] == 1.0, (baseline, summary)
    assert guarded["rmse_ratio_to_centre"] <= 0.75
    assert guarded["rmse_heart_hu"] < summary["registration-fusion"]["rmse_heart_hu"]
    assert guarded["accuracy_rate_ssim_gt_0.90"] == 1.0
    assert guarded["coronary_width_error_median"] <= 0.2
