"""Tests of scanai.kspace: reading raw k-space, reconstruction, the phantom, the CLI and the demo."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

from scanai.core.errors import Cancelled, FileFormatError, InputError
from scanai.core.progress import Progress
from scanai.io.sitk_image import read_image
from scanai.kspace import (
    KSpaceData,
    as_kspace_array,
    image_stats,
    log_magnitude,
    make_phantom,
    read_kspace,
    reconstruct,
    remove_readout_oversampling,
    rss,
    to_image,
    to_kspace,
    write_kspace_npz,
)
from scanai.kspace import cli as kspace_cli

NOT_IMAGING = {"NOISEADJSCAN", "PHASCOR", "PATREFSCAN", "RTFEEDBACK", "HPFEEDBACK", "SYNCDATA", "ACQEND",
               "REFPHASESTABSCAN", "PHASESTABSCAN"}


def centred_idft_matrix(n: int) -> np.ndarray:
    """Explicit orthonormal inverse DFT with the k-space and image centres at index n // 2 (no FFT, no shifts)."""
    index = np.arange(n) - n // 2
    return np.exp(2j * np.pi * np.outer(index, index) / n) / np.sqrt(n)


def twix_reference_rss(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k-space (coils, ky, kx), RSS image (ny, nx / 2), full-FOV coil images (coils, ny, nx)) of a single-slice
    twix file with 2x readout oversampling, built here independently of scanai (explicit DFT, lines by cLin)."""
    import twixtools

    scan = twixtools.read_twix(str(path), verbose=False)[-1]
    lines = [m for m in scan["mdb"] if not NOT_IMAGING.intersection(m.get_active_flags())]
    order = np.argsort([m.cLin for m in lines], kind="stable")
    kspace = np.stack([np.asarray(lines[i].data, dtype=np.complex128) for i in order], axis=1)
    _, ny, nx = kspace.shape
    images = centred_idft_matrix(ny) @ kspace @ centred_idft_matrix(nx).T
    cropped = images[:, :, nx // 4: nx // 4 + nx // 2]
    return kspace, np.sqrt(np.sum(np.abs(cropped) ** 2, axis=0)), images


# --------------------------------------------------------------------------------------------- real twix data


@pytest.fixture(scope="module")
def gre(shared_data):
    """gre.dat read by scanai and by the independent reference (twix parsing takes about a second)."""
    path = shared_data / "kspace" / "gre.dat"
    return read_kspace(path), twix_reference_rss(path)


def test_gre_twix_rss_matches_independent_reference(gre):
    ks, (reference_kspace, reference_rss, _) = gre
    assert ks.data.shape == (2, 1, 160, 320)
    assert ks.data.dtype == np.complex64
    assert ks.readout_oversampling == 2
    assert ks.spacing_from_header and np.allclose(ks.spacing_mm, (200 / 160, 200 / 160, 4.0))
    images = reconstruct(ks)
    assert images.rss.array.shape == (1, 160, 160)
    assert images.log_kspace.array.shape == (1, 160, 320)
    assert images.rss.geometry.spacing_mm == pytest.approx((1.25, 1.25, 4.0))

    np.testing.assert_allclose(ks.data[:, 0], reference_kspace, rtol=1e-6, atol=1e-6 * np.abs(reference_kspace).max())
    np.testing.assert_allclose(images.rss.array[0], reference_rss, rtol=1e-3, atol=1e-4 * reference_rss.max())


def test_gre_twix_content_is_a_visible_phantom(gre):
    ks, (_, _, full) = gre
    magnitude = rss(ks.data[:, 0])
    peak = np.unravel_index(np.argmax(magnitude), magnitude.shape)
    assert abs(peak[0] - 80) <= 2 and abs(peak[1] - 160) <= 2, "the k-space centre must hold the maximum"
    log_k = reconstruct(ks).log_kspace.array[0]
    assert log_k[78:83, 158:163].max() > log_k.mean() + 5 * log_k.std()

    image = reconstruct(ks).rss.array[0]
    stats = image_stats(image)
    assert stats["object_background_ratio"] > 4.0
    assert 0.2 < stats["object_fraction"] < 0.8
    # The cropped readout margins of the full-FOV image hold only background.
    full_rss = np.sqrt(np.sum(np.abs(full) ** 2, axis=0))
    margins = np.concatenate([full_rss[:, :60], full_rss[:, -60:]], axis=1)
    assert margins.mean() < 0.2 * image.mean()


def test_twix_lines_are_placed_by_their_counters_not_their_order(gre, tmp_path):
    import twixtools

    ks, _ = gre
    scans = twixtools.read_twix(str(ks.metadata["path"]), verbose=False)
    blocks = scans[-1]["mdb"]
    scans[-1]["mdb"] = [blocks[i] for i in np.random.default_rng(5).permutation(len(blocks))]
    twixtools.write_twix(scans, str(tmp_path / "shuffled.dat"))
    shuffled = read_kspace(tmp_path / "shuffled.dat")
    np.testing.assert_array_equal(shuffled.data, ks.data)


@pytest.mark.parametrize("name, coils, shape, oversampling", [
    ("2024-02-06-160052.dat", 16, (128, 128), 1),
    ("2024-02-06-164120.dat", 2, (128, 128), 1),
    ("meas_MID00243_FID33257_pulseq.dat", 32, (64, 64), 1),
])
def test_other_twix_files(shared_data, name, coils, shape, oversampling):
    ks = read_kspace(shared_data / "kspace" / name)
    assert ks.data.shape == (coils, 1) + shape
    assert ks.readout_oversampling == oversampling
    magnitude = rss(ks.data[:, 0])
    peak = np.unravel_index(np.argmax(magnitude), magnitude.shape)
    assert np.hypot(peak[0] - shape[0] // 2, peak[1] - shape[1] // 2) <= 3
    assert image_stats(reconstruct(ks).rss.array)["object_background_ratio"] > 3.0
    if name.startswith("2024"):
        # The Pulseq interpreter's header says 64 x 64: it does not describe these 128 x 128 data.
        assert not ks.spacing_from_header and ks.spacing_mm == (1.0, 1.0, 1.0)


def test_epi_is_refused_unless_allowed_and_then_reflected_lines_are_flipped(shared_data):
    import twixtools

    path = shared_data / "kspace" / "epi.dat"
    with pytest.raises(InputError, match="echo-planar"):
        read_kspace(path)
    ks = read_kspace(path, allow_epi=True)
    assert ks.data.shape == (2, 1, 80, 160)
    assert ks.metadata["epi_uncorrected"] and ks.metadata["reflected_lines"] == 40
    lines = [m for m in twixtools.read_twix(str(path), verbose=False)[-1]["mdb"] if m.is_image_scan()]
    reflected = next(m for m in lines if m.is_flag_set("REFLECT"))
    straight = next(m for m in lines if not m.is_flag_set("REFLECT"))
    np.testing.assert_allclose(ks.data[:, 0, reflected.cLin], np.asarray(reflected.data)[:, ::-1])
    np.testing.assert_allclose(ks.data[:, 0, straight.cLin], np.asarray(straight.data))


def test_matlab_single_channel_file(shared_data):
    ks = read_kspace(shared_data / "kspace" / "se_t1_sag_data.mat")
    assert ks.data.shape == (1, 1, 256, 256)
    assert not ks.spacing_from_header
    image = reconstruct(ks).rss.array
    assert image.shape == (1, 256, 256)
    assert image_stats(image)["object_background_ratio"] > 2.0


def test_truncated_twix_is_a_file_format_error(shared_data, tmp_path):
    source = shared_data / "kspace" / "gre.dat"
    data = source.read_bytes()
    for fraction in (0.02, 0.5, 0.9):
        broken = tmp_path / f"cut_{fraction}.dat"
        broken.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(FileFormatError):
            read_kspace(broken)


# --------------------------------------------------------------------------------------------- reconstruction


def test_phantom_round_trip_rss_equals_rss_of_coil_images():
    case = make_phantom(size=64, n_coils=6, readout_oversampling=2, noise_std=0.0)
    assert case.kspace.data.shape == (6, 1, 64, 128)
    images = reconstruct(case.kspace)
    truth = rss(case.coil_images)
    assert images.rss.array.shape == (1, 64, 64)
    np.testing.assert_allclose(images.rss.array[0], truth, atol=1e-5 * truth.max())
    # ... and that is the head weighted by the combined coil sensitivity.
    np.testing.assert_allclose(truth, case.image * rss(case.sensitivities), atol=1e-5 * truth.max())
    assert images.rss.geometry.spacing_mm == pytest.approx((240 / 64, 240 / 64, 1.0))


def test_phantom_noise_keeps_rss_close_but_not_equal():
    clean = make_phantom(size=48, n_coils=4, noise_std=0.0)
    noisy = make_phantom(size=48, n_coils=4, noise_std=0.01, seed=3)
    a, b = reconstruct(clean.kspace).rss.array, reconstruct(noisy.kspace).rss.array
    difference = np.abs(a - b)
    assert 0.001 < difference.mean() < 0.05


def test_fft_pair_is_centred_orthonormal_and_inverse(rng):
    image = rng.normal(size=(3, 16, 24)) + 1j * rng.normal(size=(3, 16, 24))
    kspace = to_kspace(image)
    np.testing.assert_allclose(to_image(kspace), image, atol=1e-10)
    assert np.sum(np.abs(kspace) ** 2) == pytest.approx(np.sum(np.abs(image) ** 2))
    constant = to_kspace(np.ones((8, 10)))
    assert np.unravel_index(np.argmax(np.abs(constant)), constant.shape) == (4, 5)
    assert np.count_nonzero(np.abs(constant) > 1e-9) == 1
    assert to_image(kspace.astype(np.complex64)).dtype == np.complex64


def test_oversampling_removal_keeps_the_centre():
    image = np.zeros((2, 8, 16))
    image[:, 4, 8] = 1.0
    cropped = remove_readout_oversampling(image, 2)
    assert cropped.shape == (2, 8, 8)
    assert cropped[0, 4, 4] == 1.0 and cropped.sum() == 2.0
    cropped[...] = 5
    assert image.max() == 1.0, "the input must not change"
    with pytest.raises(InputError):
        remove_readout_oversampling(image, 3)


def test_rss_and_log_magnitude():
    coils = np.zeros((2, 4, 4), dtype=np.complex64)
    coils[0] = 3.0
    coils[1] = 4.0j
    np.testing.assert_allclose(rss(coils), 5.0)
    rng = np.random.default_rng(1)
    kspace = (rng.normal(size=(3, 2, 16, 16)) + 1j * rng.normal(size=(3, 2, 16, 16))).astype(np.complex64)
    kspace[:, :, 0, :] = 0  # a line that was not acquired
    display = log_magnitude(kspace)
    assert display.shape == (2, 16, 16) and display.dtype == np.float32
    assert np.all(display[:, 0] == 0) and np.all(display[:, 1:] > 0)
    np.testing.assert_allclose(log_magnitude(1000 * kspace), display, rtol=1e-5)
    spiked = kspace.copy()
    spiked[1, 0, 5, 5] = 1e4
    assert log_magnitude(spiked)[0, 5, 5] > display.max() + 3


def test_reconstruct_leaves_input_alone_and_can_be_cancelled():
    case = make_phantom(size=32, n_coils=2)
    before = case.kspace.data.copy()
    reconstruct(case.kspace)
    np.testing.assert_array_equal(case.kspace.data, before)
    progress = Progress()
    progress.token.cancel()
    with pytest.raises(Cancelled):
        reconstruct(case.kspace, progress=progress)
    reported = []
    reconstruct(case.kspace, progress=Progress(lambda fraction, message: reported.append(fraction)))
    assert reported[-1] == pytest.approx(1.0) and reported == sorted(reported)


def test_3d_partitions_are_fourier_transformed():
    volume = np.zeros((6, 8, 8))
    volume[2, 3:5, 3:5] = 1.0  # an object in partition 2 only
    kspace = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(volume), norm="ortho"))[np.newaxis]
    ks = KSpaceData(kspace.astype(np.complex64), slices_are_kz=True)
    image = reconstruct(ks).rss.array
    np.testing.assert_allclose(image, volume, atol=1e-5)


# --------------------------------------------------------------------------------------------- NumPy / MATLAB


@pytest.mark.parametrize("shape, expected", [((16, 12), (1, 1, 16, 12)), ((3, 16, 12), (3, 1, 16, 12)),
                                             ((3, 2, 16, 12), (3, 2, 16, 12))])
def test_npy_round_trip(tmp_path, rng, shape, expected):
    array = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex128)
    np.save(tmp_path / "k.npy", array)
    ks = read_kspace(tmp_path / "k.npy")
    assert ks.data.shape == expected and ks.data.dtype == np.complex64
    np.testing.assert_allclose(ks.data.reshape(shape), array, rtol=1e-6)
    assert ks.readout_oversampling == 1 and not ks.spacing_from_header


def test_npz_round_trips(tmp_path, rng):
    array = (rng.normal(size=(2, 8, 10)) + 1j * rng.normal(size=(2, 8, 10))).astype(np.complex64)
    np.savez(tmp_path / "named.npz", kspace=array, other=np.zeros(3))
    np.testing.assert_array_equal(read_kspace(tmp_path / "named.npz").data[:, 0], array)
    np.savez(tmp_path / "single.npz", whatever=array)
    np.testing.assert_array_equal(read_kspace(tmp_path / "single.npz").data[:, 0], array)
    np.savez(tmp_path / "ambiguous.npz", a=array, b=array)
    with pytest.raises(FileFormatError, match="kspace"):
        read_kspace(tmp_path / "ambiguous.npz")

    case = make_phantom(size=16, n_coils=3, readout_oversampling=2)
    written = write_kspace_npz(case.kspace, tmp_path / "phantom.npz")
    back = read_kspace(written)
    np.testing.assert_array_equal(back.data, case.kspace.data)
    assert back.readout_oversampling == 2 and back.spacing_from_header
    assert back.spacing_mm == pytest.approx(case.kspace.spacing_mm)


def test_mat_round_trip_and_real_mat(tmp_path, rng):
    import scipy.io

    array = rng.normal(size=(12, 10)) + 1j * rng.normal(size=(12, 10))
    scipy.io.savemat(tmp_path / "k.mat", {"data": array, "label": np.array([1.0])})
    np.testing.assert_allclose(read_kspace(tmp_path / "k.mat").data[0, 0], array, rtol=1e-6)
    scipy.io.savemat(tmp_path / "real.mat", {"data": np.abs(array)})
    with pytest.raises(InputError, match="real numbers"):
        read_kspace(tmp_path / "real.mat")


def test_real_valued_array_is_refused(tmp_path, rng):
    np.save(tmp_path / "magnitude.npy", rng.normal(size=(4, 16, 16)))
    with pytest.raises(InputError, match="real numbers, not complex k-space") as caught:
        read_kspace(tmp_path / "magnitude.npy")
    assert "Export complex raw data" in str(caught.value)
    assert not isinstance(caught.value, FileFormatError)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_refused(tmp_path, rng, bad):
    array = (rng.normal(size=(2, 8, 8)) + 1j * rng.normal(size=(2, 8, 8))).astype(np.complex64)
    array[1, 3, 4] = bad
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_kspace(tmp_path / "bad.npy")


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 8), dtype=np.complex64), "empty"),
    (np.ones((2, 2, 2, 4, 4), dtype=np.complex64), "5 dimensions"),
    (np.ones(8, dtype=np.complex64), "1 dimensions"),
    (np.zeros((4, 4), dtype=np.complex64), "only zeros"),
    (np.array([["a", "b"], ["c", "d"]]), "does not hold numbers"),
])
def test_bad_arrays_are_input_errors(array, message):
    with pytest.raises(InputError, match=message):
        as_kspace_array(array)


def test_as_kspace_array_copies():
    array = np.ones((4, 4), dtype=np.complex64)
    out = as_kspace_array(array)
    out[...] = 0
    assert np.all(array == 1)


def test_missing_garbage_and_unknown_files_are_file_format_errors(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        read_kspace(tmp_path / "nothing.dat")
    garbage = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    for name in ("garbage.dat", "garbage.npy", "garbage.npz", "garbage.mat", "empty.dat"):
        (tmp_path / name).write_bytes(b"" if name.startswith("empty") else garbage)
        with pytest.raises(FileFormatError):
            read_kspace(tmp_path / name)
    (tmp_path / "image.png").write_bytes(garbage)
    with pytest.raises(FileFormatError, match="not a supported"):
        read_kspace(tmp_path / "image.png")


# --------------------------------------------------------------------------------------------- CLI and demo


def test_cli_writes_rss_and_log_kspace(tmp_path, capsys):
    case = make_phantom(size=32, n_coils=3, readout_oversampling=2)
    source = write_kspace_npz(case.kspace, tmp_path / "phantom.npz")
    parser = argparse.ArgumentParser()
    kspace_cli.add_arguments(parser)
    args = parser.parse_args([str(source), "--out", str(tmp_path / "out")])
    assert kspace_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "original.nrrd" in printed and "corrected.nrrd" in printed and "log_kspace.nrrd" in printed
    assert "0 spike sample(s) detected" in printed
    rss_volume = read_image(tmp_path / "out" / "original.nrrd")
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "corrected.nrrd").array, rss_volume.array)
    assert not read_image(tmp_path / "out" / "difference.nrrd").array.any()
    assert (tmp_path / "out" / "spikes.csv").read_text().startswith("slice,coil,pe,ro,magnitude,score,patch")
    assert (tmp_path / "out" / "spikes.png").stat().st_size > 1000
    assert rss_volume.array.shape == (1, 32, 32)
    assert rss_volume.geometry.spacing_mm == pytest.approx(case.kspace.spacing_mm)
    np.testing.assert_allclose(rss_volume.array[0], rss(case.coil_images), atol=1e-4)
    assert read_image(tmp_path / "out" / "log_kspace.nrrd").array.shape == (1, 32, 64)


def test_demo_without_real_data(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report" / "kspace"
    text = kspace_cli.demo(out, None)
    assert text.startswith("## ")
    assert "](kspace/phantom.png)" in text and "Shepp-Logan" in text
    assert (out / "phantom.png").stat().st_size > 1000
    assert (out / "phantom_rss.nrrd").is_file() and (out / "phantom_log_kspace.nrrd").is_file()


def test_demo_with_partial_real_data(tmp_path, shared_data):
    pytest.importorskip("matplotlib")
    data = tmp_path / "data"
    (data / "kspace").mkdir(parents=True)
    shutil.copy(shared_data / "kspace" / "gre.dat", data / "kspace" / "gre.dat")
    text = kspace_cli.demo(tmp_path / "kspace", data)
    assert "](kspace/gre.png)" in text and "| 160 x 320 |" in text
    assert "2024-02-06-160052.dat is not in the data folder" in text
