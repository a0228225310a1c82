"""The multi-pair motion network: pairing (claims 9/10), structure (claims 1, 5, 7, 8) and the shipped weights on
the analytic phantom (exact truth)."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.errors import InputError
from scanai.motion.pairs import closes_cycle, cyclic_order, make_pairs

torch = pytest.importorskip("torch")


def test_pairing_schemes_follow_the_claims():
    assert make_pairs(5, 0, "reference") == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert make_pairs(5, 0, "consecutive") == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert make_pairs(5, 0, "consecutive", closed=True)[-1] == (4, 0)
    # another reference: the cycle wraps around, fed in the order of the second image
    assert make_pairs(5, 3, "reference") == [(3, 4), (3, 0), (3, 1), (3, 2)]
    assert cyclic_order(4, 2) == [2, 3, 0, 1]
    assert closes_cycle(make_pairs(5, 2, "consecutive", closed=True))
    assert not closes_cycle(make_pairs(5, 0, "consecutive")) and not closes_cycle(make_pairs(5, 0, "reference"))
    for bad in ((1, 0, "reference"), (5, 5, "reference"), (5, 0, "zigzag")):
        with pytest.raises(InputError):
            make_pairs(*bad)


def _random_network(**architecture):
    from scanai.motion.network import build_motion_network

    torch.manual_seed(0)
    model = build_motion_network(architecture).eval()
    return model


def _video(frames: int = 6, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(1, frames, 1, size, size, generator=generator)


def test_untrained_network_is_the_identity_and_has_the_contract_shape():
    from scanai.motion.layers import warp

    model = _random_network()
    video = _video()
    pairs = make_pairs(6, 0)
    with torch.inference_mode():
        fields = model(video, pairs)
    assert fields.shape == (1, 5, 2, 32, 32)
    assert float(fields.abs().max()) == 0.0
    image = video[0, :2]
    assert float((warp(image, torch.zeros(2, 2, 32, 32)) - image).abs().max()) < 1e-5


def _with_random_head(model):
    torch.nn.init.normal_(model.head.weight, 0.0, 0.01)
    return model


def test_refinement_uses_other_pairs_and_the_ablation_does_not():
    model = _with_random_head(_random_network())
    video = _video()
    pairs = make_pairs(6, 0)
    changed = video.clone()
    changed[0, 4] = torch.rand(1, 32, 32)  # frame 4 only enters pair (0, 4), the 4th pair
    with torch.inference_mode():
        joint_a, joint_b = model(video, pairs), model(changed, pairs)
        alone_a, alone_b = model(video, pairs, joint=False), model(changed, pairs, joint=False)
    # joint: perturbing one pair changes the fields of the other pairs (claim 1, refinement across pairs)
    assert float((joint_a[0, 0] - joint_b[0, 0]).abs().max()) > 1e-4
    # pair by pair: the other pairs are untouched, only pair 4 changes
    assert float((alone_a[0, :3] - alone_b[0, :3]).abs().max()) < 1e-6
    assert float((alone_a[0, 3] - alone_b[0, 3]).abs().max()) > 1e-4


def test_joint_velocities_around_a_closed_loop_sum_to_zero():
    from scanai.motion.layers import compose

    model = _with_random_head(_random_network(diffeomorphic=False))  # the head's output is then the field itself
    video = _video()
    loop = make_pairs(6, 0, "consecutive", closed=True)
    with torch.inference_mode():
        joint, alone = model(video, loop)[0], model(video, loop, joint=False)[0]
    assert float(joint.sum(dim=0).abs().max()) < 1e-5  # the loop constraint: no net motion around the cycle
    assert float(alone.sum(dim=0).abs().max()) > 1e-3  # pair by pair, no pair sees the loop

    def closure(fields: torch.Tensor) -> float:
        total = torch.zeros_like(fields[:1])
        for step in fields:
            total = compose(total, step[None])
        return float(total.abs().mean())

    with torch.inference_mode():
        diffeomorphic = _with_random_head(_random_network())
        assert closure(diffeomorphic(video, loop)[0]) < 0.1 * closure(diffeomorphic(video, loop, joint=False)[0])


def test_unidirectional_recurrence_is_causal():
    model = _with_random_head(_random_network(bidirectional=False))
    video = _video()
    pairs = make_pairs(6, 0)
    changed = video.clone()
    changed[0, 3] = torch.rand(1, 32, 32)  # enters the 3rd pair (0, 3)
    with torch.inference_mode():
        before, after = model(video, pairs), model(changed, pairs)
    assert float((before[0, :2] - after[0, :2]).abs().max()) < 1e-6  # earlier pairs unchanged
    assert float((before[0, 3] - after[0, 3]).abs().max()) > 1e-4  # later pairs see the change


def test_the_encoder_is_shared_and_inference_is_deterministic():
    model = _with_random_head(_random_network())
    encoders = [m for m in model.modules() if type(m).__name__ == "SiameseEncoder"]
    assert len(encoders) == 1
    video = _video()
    with torch.inference_mode():
        assert torch.equal(model(video, make_pairs(6, 0)), model(video, make_pairs(6, 0)))


def test_scaling_and_squaring_keeps_a_smooth_field_invertible():
    from scanai.motion.layers import integrate

    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    velocity = torch.stack([6 * torch.sin(x / 5), 6 * torch.cos(y / 5)])[None]  # large, would fold if added
    displacement = integrate(velocity, 7)[0]
    dy_y = torch.gradient(displacement[0], dim=0)[0] + 1
    dx_x = torch.gradient(displacement[1], dim=1)[0] + 1
    dy_x = torch.gradient(displacement[0], dim=1)[0]
    dx_y = torch.gradient(displacement[1], dim=0)[0]
    determinant = dy_y * dx_x - dy_x * dx_y
    assert float(determinant[2:-2, 2:-2].min()) > 0


def test_training_loss_of_a_closed_cycle_has_finite_gradients_at_the_identity():
    """An untrained network returns zero fields; the cycle term must still give finite gradients (a NaN there
    poisoned the weights and later crashed grid_sample's backward)."""
    import numpy as np

    from scanai.motion.train import WEIGHTS, clip_loss, make_clip, random_phantom

    rng = np.random.default_rng(0)
    clip = make_clip(random_phantom(rng, 64, 12), rng, 10, None, closed=True)
    model = _random_network()
    for joint in (True, False):
        model.zero_grad()
        loss, terms = clip_loss(model, clip, "consecutive", joint, WEIGHTS)
        loss.backward()
        assert "cycle" in terms
        assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def _beating_disc_cine(size: int, centre: tuple[float, float], frames: int = 10):
    """A dark chest (size²) with a static bright blob and a bright disc beating 20 -> 14 px about ``centre``:
    (T, H, W) in [0, 1]."""
    import numpy as np

    from scanai.motion.phantom import contraction_profile

    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64)
    static = np.hypot(rows - 30.0, columns - size + 40.0) < 12.0
    radii = 20.0 - 6.0 * contraction_profile(frames)
    movie = [0.2 + 0.6 * static + 0.7 * (np.hypot(rows - centre[0], columns - centre[1]) < r) for r in radii]
    return np.clip(np.asarray(movie, dtype=np.float32), 0.0, 1.0)


def test_heart_window_holds_the_beating_heart_at_full_resolution():
    from scanai.motion.network import SIZE_MULTIPLE, WORKING_SIZE, heart_window

    video = _beating_disc_cine(256, (160.0, 90.0))
    rows, columns = heart_window(video)
    assert rows.stop - rows.start == columns.stop - columns.start == WORKING_SIZE  # the cine's own pixels
    for part, centre in ((rows, 160), (columns, 90)):
        assert part.start <= centre - 40 and centre + 40 <= part.stop  # the disc, its motion and the taper
    big = _beating_disc_cine(256, (128.0, 128.0))
    big[:, 60:196, 60:196] += 0.1 * np.sign(np.sin(np.arange(10)))[:, None, None]  # a larger moving region
    rows, columns = heart_window(big)
    assert rows.stop - rows.start > WORKING_SIZE and (rows.stop - rows.start) % SIZE_MULTIPLE == 0
    small = _beating_disc_cine(96, (48.0, 48.0))
    assert heart_window(small) == (slice(0, 96), slice(0, 96))  # a small cine runs whole


def test_refinement_works_on_the_heart_window_and_leaves_the_rest():
    """The refinement of a 256² cine moves the fields inside the heart's window only (the rest keeps the network's
    field, here zero), and tracks the beating disc at least as well as on the whole image."""
    from scanai.motion.layers import warp
    from scanai.motion.network import heart_window, refine_fields
    from scanai.nn.backend import torch

    video = _beating_disc_cine(256, (160.0, 90.0))
    rows, columns = heart_window(video, 128)
    start = np.zeros((*video.shape, 2), dtype=np.float32)
    focused = refine_fields(video, start, 0)
    outside = np.ones(video.shape[1:], dtype=bool)
    outside[rows, columns] = False
    assert np.abs(focused[:, outside]).max() == 0.0 and np.abs(focused[:, rows, columns]).max() > 0.5
    assert (focused[0] == 0).all() and start.max() == 0  # the reference stays zero; the input is not modified

    def error(fields):  # mean |warped frame - reference| over the disc's neighbourhood
        moved = warp(torch.from_numpy(video[:, None]), torch.from_numpy(fields).permute(0, 3, 1, 2))[:, 0].numpy()
        return float(np.abs(moved - video[0])[:, 130:190, 60:120].mean())

    assert error(focused) <= error(refine_fields(video, start, 0, focus=False)) < 0.8 * error(start)


def test_taper_and_the_residual_pass_layout():
    from scanai.motion.network import TAPER_PX, _aligned_pairs, _taper

    weights = _taper((256, 256), (slice(0, 128), slice(64, 192)))
    assert weights.shape == (128, 128) and weights[0, 64] == 1.0  # the image's border keeps the field
    assert weights[64, 0] < 0.05 and weights[64, -1] < 0.05 and weights[127, 64] < 0.05  # inner edges fade
    assert (weights[:-TAPER_PX, TAPER_PX:-TAPER_PX] == 1.0).all()
    video = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)
    warped = -np.ones((4, 4, 4), np.float32) * np.arange(1, 5, dtype=np.float32)[:, None, None]
    aligned, pairs = _aligned_pairs(video, make_pairs(5, 0), warped)  # reference pairs: frames replaced
    assert pairs == make_pairs(5, 0) and aligned[0, 0, 0] == 0 and aligned[3, 0, 0] == -3
    assert video[3, 0, 0] == 3  # the input is not modified
    consecutive = make_pairs(5, 0, "consecutive", closed=True)
    aligned, pairs = _aligned_pairs(video, consecutive[:4], warped)  # each pair gets its own two frames
    assert pairs == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [aligned[k, 0, 0] for k in range(8)] == [0, -1, 1, -2, 2, -3, 3, -4]


def test_residual_passes_on_the_heart_track_a_real_basal_slice(shared_data):
    """The Sunnybrook cine's most basal contoured slice (large, fast motion): the ED endocardium carried to ES by
    the network alone, one pass (the whole cine shrunk to 128²) against the default passes on the heart at full
    resolution (0.87 -> 0.91 Dice with the shipped weights; the previous weights 0.77 -> 0.88)."""
    from sunnybrook_cases import contoured_slices

    from scanai.motion.network import NETWORK_PASSES
    from scanai.motion.pipeline import analyse_cine
    from scanai.motion.propagate import dice

    _index, sequence, labels, endo_ed, endo_es = next(iter(contoured_slices(shared_data)))
    scores = {}
    for passes in (1, NETWORK_PASSES):
        result = analyse_cine(sequence, endo_ed.phase_index, "network", labels=labels, device="cpu",
                              refine_steps=0, passes=passes)
        scores[passes] = dice(result.labels[endo_es.phase_index][0] == 1, endo_es.mask)
    assert scores[NETWORK_PASSES] >= scores[1] + 0.03 and scores[NETWORK_PASSES] >= 0.89, scores
