"""The multi-pair motion network on volumes (3-D+t): structure, training clips with exact truth, the shipped weights on
a phantom they never saw, and the instance optimisation started from its fields."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.motion.pairs import make_pairs
from scanai.motion.phantom3d import beating_ventricle_phantom

torch = pytest.importorskip("torch")


def _random_network_3d():
    from scanai.motion.network import build_motion_network
    from scanai.motion.network3d import ARCHITECTURE_3D

    torch.manual_seed(0)
    return build_motion_network(ARCHITECTURE_3D).eval()


def test_untrained_3d_network_is_the_identity_and_has_the_contract_shape():
    model = _random_network_3d()
    video = torch.rand(1, 4, 1, 16, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fields = model(video, make_pairs(4, 0))
    assert fields.shape == (1, 3, 3, 16, 32, 32) and float(fields.abs().max()) == 0.0
    torch.nn.init.normal_(model.head.weight, 0.0, 0.01)  # joint refinement: a pair's field depends on the others
    changed = video.clone()
    changed[0, 3] = torch.rand(1, 16, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        joint = model(video, make_pairs(4, 0)) - model(changed, make_pairs(4, 0))
        alone = model(video, make_pairs(4, 0), joint=False) - model(changed, make_pairs(4, 0), joint=False)
    assert float(joint[0, 0].abs().max()) > 0.0 and float(alone[0, 0].abs().max()) == 0.0


def test_predicted_fields_come_back_on_the_volume_grid_in_its_voxels():
    from scanai.motion.network3d import predict_volume_fields

    model = _random_network_3d()
    torch.nn.init.constant_(model.head.bias, 0.5)  # a uniform velocity: the field is that shift in every voxel
    video = np.random.default_rng(0).random((3, 12, 40, 20), dtype=np.float32)
    near = predict_volume_fields(model, video, make_pairs(3, 0), working_size=64)
    shrunk = predict_volume_fields(model, video, make_pairs(3, 0), working_size=20)  # 40 -> 20 voxels along j
    assert near.shape == shrunk.shape == (2, 12, 40, 20, 3)
    assert np.allclose(near, 1.0, atol=1e-4)  # 0.5 half-resolution voxels, integrated, at full resolution
    assert np.allclose(shrunk[..., 0], 1.0, atol=1e-4) and np.allclose(shrunk[..., 2], 1.0, atol=1e-4)
    assert np.allclose(shrunk[..., 1], 39 / 19, atol=1e-4)  # one shrunk voxel = 39/19 voxels of the volume


def test_training_clips_keep_the_truth_exact():
    """A clip's frames, flipped, transposed and thinned to thick slices, still satisfy frame_t(x + u_t(x)) =
    frame_ref(x) with the clip's truth (in the clip's voxels)."""
    from scipy import ndimage

    from scanai.motion.train3d import make_clip, random_ventricle

    rng = np.random.default_rng(4)
    volumes = random_ventricle(rng)
    checked = 0
    for _ in range(6):
        video, truth, mask = make_clip(volumes, rng)
        assert video.shape == truth.shape[:-1] and mask.shape == video.shape[1:] and len(video) <= 8
        t = int(np.argmax(np.linalg.norm(truth, axis=-1)[:, mask > 0].mean(axis=1)))
        grid = np.indices(video.shape[1:], dtype=float)
        pulled = ndimage.map_coordinates(video[t], grid + np.moveaxis(truth[t], -1, 0), order=1, mode="nearest")
        wall = (mask > 0) & (ndimage.binary_erosion(np.ones(mask.shape, bool), iterations=2))
        before, after = np.abs(video[t] - video[0])[wall].mean(), np.abs(pulled - video[0])[wall].mean()
        assert after < 0.5 * before
        checked += 1
    assert checked == 6


def test_the_shipped_3d_network_follows_a_phantom_it_never_saw():
    """Held-out ventricle (a texture and size no training phantom had): the network alone removes most of the motion
    in the myocardium at end-systole, and svf3d's optimisation started from its fields removes more."""
    from scanai.motion.pipeline import estimate_motion

    phantom = beating_ventricle_phantom(n_frames=6, shape=(32, 48, 48), endo_radius_px=8.0, wall_px=4.0,
                                        amplitude_px=3.0, twist_deg=10.0, shortening=0.12, noise=0.01, seed=987654)
    es, wall = phantom.end_systole, phantom.myocardium
    still = np.linalg.norm(phantom.displacement_mm[es], axis=-1)[wall].mean()

    def error(refine_steps):
        fields = estimate_motion(phantom.sequence, 0, "network-3d", device="cpu", refine_steps=refine_steps)
        assert fields.options["model"] == "motion_network_3d" and not fields.displacement_mm[0].any()
        return np.linalg.norm(fields.displacement_mm[es] - phantom.displacement_mm[es], axis=-1)[wall].mean()

    alone, refined = error(0), error(None)
    assert alone < 0.5 * still
    assert refined < alone
