"""The artifact network's training: the guarded loss (``--loss guarded``) is spent where the phases disagree, the
relative loss (``--loss relative``, the shipped weights') weighs every case by its improvement on its own input, and
the training entry point runs end to end with both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanai.artifact_correction import train

torch = pytest.importorskip("torch")


def _moving_phases() -> np.ndarray:
    """(4, 48, 48) HU: a 300 HU disk moving 2 px per phase through 40 HU tissue, 5 HU noise."""
    rows, columns = np.mgrid[:48, :48]
    phases = [np.where((rows - 24) ** 2 + (columns - 14 - 2 * k) ** 2 < 64, 300.0, 40.0) for k in range(4)]
    return (np.stack(phases) + 5.0 * np.random.default_rng(0).normal(size=(4, 48, 48))).astype(np.float32)


def test_gate_and_mean_follow_the_guard():
    phases = _moving_phases()
    gate, mean = train.gate_and_mean(phases)
    assert gate.shape == mean.shape == (48, 48) and gate.dtype == np.float32
    assert gate[24, 12:26].max() > 0.8 and gate[:, 40:].max() == 0.0  # the moving disk, not the still tissue
    np.testing.assert_allclose(mean * (train.HU_MAX - train.HU_MIN) + train.HU_MIN, phases.mean(axis=0), atol=0.01)
    still_gate, _ = train.gate_and_mean(np.repeat(phases[:1], 4, axis=0))
    assert not still_gate.any()


def test_the_guarded_loss_is_spent_where_the_gate_is_open():
    phases = _moving_phases()
    gate, mean = (torch.from_numpy(a)[None, None] for a in train.gate_and_mean(phases))
    target = torch.full((1, 1, 48, 48), 0.3)
    output = torch.full((1, 1, 48, 48), 0.5, requires_grad=True)
    train.guarded_loss(output, target, gate, mean).backward()
    still, moving = output.grad[0, 0, :, 40:].abs().mean(), output.grad[0, 0, 22:27, 14:22].abs().mean()
    assert moving > 5 * still > 0  # where the gate is shut only the raw term (weight 0.1) pulls
    with torch.no_grad():
        plain = float(train.loss_function(output, target))
        open_gate = float(train.guarded_loss(output, target, torch.ones_like(gate), mean))
        shut_gate = float(train.guarded_loss(output, target, torch.zeros_like(gate), mean))
        of_mean = float(train.loss_function(mean, target))
    assert open_gate == pytest.approx((1 + train.RAW_LOSS_WEIGHT) * plain, rel=1e-5)
    assert shut_gate == pytest.approx(of_mean + train.RAW_LOSS_WEIGHT * plain, rel=1e-5)


def test_the_relative_loss_weighs_each_case_by_its_improvement_on_the_phases_mean():
    """Each case's guarded loss is divided by that of the phases' mean: returning the mean scores 1 +
    RAW_LOSS_WEIGHT on a quiet and on a noisy case alike although their absolute losses differ several-fold, and a
    batch scores the mean of its cases."""
    phases = _moving_phases()
    gate, quiet = (torch.from_numpy(a)[None, None] for a in train.gate_and_mean(phases))
    target = torch.from_numpy(train.normalise_hu(phases[1]))[None, None]
    noisy = quiet + 0.03 * torch.randn(quiet.shape, generator=torch.Generator().manual_seed(1))
    absolute = [float(train.guarded_loss(mean, target, gate, mean)) for mean in (quiet, noisy)]
    relative = [float(train.relative_loss(mean, target, gate, mean)) for mean in (quiet, noisy)]
    assert absolute[1] > 3 * absolute[0]
    assert relative == pytest.approx([1 + train.RAW_LOSS_WEIGHT] * 2, rel=0.05)  # 1e-3 keeps still cases finite
    better = [(mean + target) / 2 for mean in (quiet, noisy)]
    alone = [float(train.relative_loss(out, target, gate, mean))
             for out, mean in zip(better, (quiet, noisy), strict=True)]
    batch = train.relative_loss(torch.cat(better), torch.cat([target] * 2), torch.cat([gate] * 2),
                                torch.cat([quiet, noisy]))
    assert float(batch) == pytest.approx(np.mean(alone), rel=1e-5) and max(alone) < 1.0


@pytest.mark.parametrize("loss", ["guarded", "relative"])
def test_training_runs_end_to_end(tmp_path, loss):
    card = train.main(["--cases", "5", "--steps", "2", "--eval-every", "1", "--workers", "1", "--threads", "1",
                       "--batch", "2", "--domain", "mini", "--loss", loss, "--cache", str(tmp_path / "c.npz"),
                       "--out", str(tmp_path)])
    assert f"--loss {loss}" in card.training_command and card.extra["loss"] == loss
    assert card.extra["steps_run"] == 2 and np.isfinite(card.extra["loss_history"]).all()
    assert json.loads((tmp_path / "motion_artifact_network.json").read_text())["sha256"] == card.sha256
