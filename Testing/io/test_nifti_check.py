"""NIfTI files prove what they hold (scanai.io.nifti_check through scanai.io.sitk_image.read_image): SimpleITK alone
reads a cut file with its missing voxels as 0 and turns NaN / infinite voxels into 0."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scanai.core.errors import FileFormatError, InputError, ScanAIError
from scanai.io.sitk_image import read_image


def _write(path, array: np.ndarray):
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_whole_files_read_and_cut_or_non_finite_ones_are_refused(tmp_path, suffix):
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 100, (6, 16, 16)).astype(np.float32)
    good = _write(tmp_path / f"good{suffix}", frames)
    np.testing.assert_array_equal(read_image(good).array, frames)
    data = good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(cut))).shape == frames.shape  # what SimpleITK alone does
    with pytest.raises(FileFormatError, match="incomplete"):
        read_image(cut)
    holes = frames.copy()
    holes[2, 3, 4], holes[5, 0, 0] = np.nan, np.inf
    with pytest.raises(InputError, match="2 voxels that are not numbers"):
        read_image(_write(tmp_path / f"nan{suffix}", holes))
    integers = _write(tmp_path / f"int{suffix}", np.arange(6 * 16 * 16, dtype=np.int16).reshape(6, 16, 16))
    assert read_image(integers).array.sum() == np.arange(6 * 16 * 16).sum()


def test_damaged_files_end_in_a_clear_error_or_the_right_image(tmp_path):
    """Seeded: truncation at random offsets (both forms) and random byte flips (compressed, which carries a CRC)."""
    rng = np.random.default_rng(20261206)
    frames = rng.uniform(0, 100, (4, 12, 12)).astype(np.float32)
    outcomes = {"error": 0, "same": 0}
    for suffix in (".nii", ".nii.gz"):
        data = _write(tmp_path / f"source{suffix}", frames).read_bytes()
        cases = [data[: int(rng.integers(1, len(data)))] for _ in range(25)]
        if suffix == ".nii.gz":
            for _ in range(25):
                flipped = bytearray(data)
                flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
                cases.append(bytes(flipped))
        for number, case in enumerate(cases):
            path = tmp_path / f"damaged{number}{suffix}"
            path.write_bytes(case)
            try:
                image = read_image(path)
            except ScanAIError:
                outcomes["error"] += 1
                continue
            np.testing.assert_array_equal(image.array, frames)  # never a silently different image
            outcomes["same"] += 1
    assert outcomes["error"] >= 60
