"""Tests of the k-space patch classifier (scanai.kspace.network) and its training entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from scanai.core.catalog import MODELS_DIR, load_card, load_model
from scanai.core.errors import InputError, ModelError
from scanai.kspace.network import (
    MODEL_NAME,
    N_CHANNELS,
    build_patch_classifier,
    central_patches,
    classify_patches,
    load_patch_classifier,
    normalisation_max,
    patch_features,
    patch_thresholds,
)
from scanai.kspace.patches import PatchGrid
from scanai.kspace.phantom import make_phantom
from scanai.kspace.simulate import inject_spikes

HELDOUT_FILE = "2024-02-06-160052.dat"


def phantom_plane(size: int = 128, coils: int = 8, seed: int = 3) -> np.ndarray:
    return make_phantom(size, coils, 1, 0.01, seed=seed).kspace.data[:, 0]


def spike_at(plane: np.ndarray, ky: int, kx: int, amplitude: float, seed: int = 0) -> np.ndarray:
    """A copy of ``plane`` (coils, ky, kx) with one all-coil spike of ``amplitude`` x max RSS |k| at (ky, kx)."""
    rng = np.random.default_rng(seed)
    gains = rng.normal(size=plane.shape[0]) + 1j * rng.normal(size=plane.shape[0])
    peak = np.sqrt((np.abs(plane) ** 2).sum(axis=0)).max()
    out = plane.copy()
    out[:, ky, kx] += (amplitude * peak * gains / np.linalg.norm(gains)).astype(np.complex64)
    return out


def test_import_scanai_kspace_is_torch_free() -> None:
    code = ("import sys; import scanai.kspace, scanai.kspace.network; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_card_and_weights_load() -> None:
    card = load_card(MODEL_NAME)
    assert card.input_contract == {"channels": N_CHANNELS, "patch_size": 32, "position_features": 3}
    assert (MODELS_DIR / card.weights_file).stat().st_size < 2_000_000
    assert "-quick" not in card.version and card.metrics["real_auc"] > 0.8
    model, loaded = load_patch_classifier("cpu")
    assert loaded.sha256 == card.sha256 and not model.training


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    for suffix in (".pt", ".json"):
        shutil.copy(MODELS_DIR / f"{MODEL_NAME}{suffix}", tmp_path)
    weights = tmp_path / f"{MODEL_NAME}.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged"):
        load_model(MODEL_NAME, build_patch_classifier, device="cpu", models_dir=tmp_path)


def test_probabilities_shape_range_and_determinism() -> None:
    plane = phantom_plane()
    grid = PatchGrid.over(plane.shape[-2:])
    first = classify_patches(plane, grid, device="cpu")
    second = classify_patches(plane.copy(), grid, device="cpu")
    assert first.shape == (len(grid),)
    assert np.all((first >= 0) & (first <= 1))
    np.testing.assert_array_equal(first, second)


def test_wrong_patch_size_is_a_model_error() -> None:
    plane = phantom_plane()
    with pytest.raises(ModelError, match="patch_size"):
        classify_patches(plane, PatchGrid.over(plane.shape[-2:], 16), device="cpu")


def test_real_valued_plane_is_an_input_error() -> None:
    with pytest.raises(InputError):
        classify_patches(np.ones((2, 64, 64)), PatchGrid.over((64, 64)), device="cpu")


def _strong_vs_clean(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    grid = PatchGrid.over(plane.shape[-2:])
    ny, nx = plane.shape[-2:]
    spots = [(5, 7), (ny - 9, 11), (6, nx - 12)]
    corrupted = plane
    for index, (ky, kx) in enumerate(spots):
        corrupted = spike_at(corrupted, ky, kx, 0.3, seed=index)
    hit = sorted({p for ky, kx in spots for p in grid.patch_of(ky, kx)})
    return classify_patches(plane, grid, device="cpu"), classify_patches(corrupted, grid, device="cpu"), hit


def test_strong_spikes_high_clean_low_on_heldout_or_phantom(shared_data_dir_or_none) -> None:
    if shared_data_dir_or_none is not None:
        from scanai.kspace.io import read_kspace

        plane = read_kspace(shared_data_dir_or_none / "kspace" / HELDOUT_FILE).data[:, 0]
    else:
        plane = phantom_plane()
    clean, corrupted, hit = _strong_vs_clean(plane)
    grid = PatchGrid.over(plane.shape[-2:])
    thresholds = patch_thresholds(grid)
    assert np.all(corrupted[hit] > 0.9)
    assert np.all(clean <= thresholds), f"clean patches flagged: {np.flatnonzero(clean > thresholds)}"


@pytest.fixture
def shared_data_dir_or_none():
    from scanai.core.paths import shared_data_dir

    folder = shared_data_dir()
    return folder if folder is not None and (folder / "kspace" / HELDOUT_FILE).is_file() else None


def test_features_neutral_on_unacquired_lines_and_normalisation() -> None:
    plane = phantom_plane(64, 4)
    plane[:, :12] = 0  # partial Fourier: 12 lines never acquired
    grid = PatchGrid.over(plane.shape[-2:])
    features, positions = patch_features(plane, grid)
    assert features.shape == (len(grid), N_CHANNELS, 32, 32) and positions.shape == (len(grid), 3)
    assert np.all(features[:2, :, :12] == 0)
    assert features[:, 0].min() >= 0 and features[:, 0].max() <= 1
    assert np.isfinite(features).all()
    np.testing.assert_allclose(normalisation_max(np.array([0.0, 1.0]), 10.0), [20.0, 1.0])
    assert central_patches(PatchGrid.over((256, 256))).sum() == 4


def test_spiked_phantom_scores_with_inject_spikes() -> None:
    plane = phantom_plane(128, 8, seed=11)
    corrupted, truth = inject_spikes(plane[:, None], 4, (0.2, 1.0), kinds={"isolated": 1.0}, seed=5)
    grid = PatchGrid.over(plane.shape[-2:])
    probability = classify_patches(corrupted[:, 0], grid, device="cpu")
    hit = sorted({p for y, x in zip(truth.ky, truth.kx, strict=True) for p in grid.patch_of(y, x)})
    assert probability[hit].min() > 0.5


def test_training_entry_point_quick(tmp_path: Path) -> None:
    from scanai.kspace import train

    card = train.main(["--out", str(tmp_path), "--quick", "--seed", "1"])
    assert (tmp_path / f"{MODEL_NAME}.pt").is_file()
    assert json.loads((tmp_path / f"{MODEL_NAME}.json").read_text())["sha256"] == card.sha256
    model, loaded = load_model(MODEL_NAME, build_patch_classifier, device="cpu", models_dir=tmp_path)
    plane = phantom_plane(64, 2)
    probability = classify_patches(plane, PatchGrid.over(plane.shape[-2:]), model=model)
    assert probability.shape == (4,) and loaded.input_contract["patch_size"] == 32
