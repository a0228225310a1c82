"""Tests of the k-space readers (ISMRMRD/MRD, fastMRI, BART, NumPy, twix noise scans) and of coil pre-whitening.

No ISMRMRD, fastMRI or BART sample files are available offline, so small writers below make such files from a
known multi-coil phantom; every reader must give the phantom back exactly, in (coils, slices, ky, kx) order, with
the image upright. The phantom has a non-square matrix (96 phase-encoding lines x 64 pixels, readout 2x
oversampled to 128 samples) and a bright marker in its top-left corner, so a swapped or flipped axis shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest

from scanai.core.errors import FileFormatError, InputError
from scanai.kspace import (
    KSpaceData,
    coil_sensitivities,
    noise_covariance,
    prewhiten,
    prewhiten_kspace,
    read_kspace,
    reconstruct,
    remove_readout_oversampling,
    rss,
    shepp_logan,
    to_kspace,
    whitening_matrix,
    write_kspace_npz,
)
from scanai.kspace.readers.bart import kspace_to_bart, read_cfl, write_cfl

NY, NX, OS = 96, 64, 2          # image rows (phase encoding), image columns (readout), readout oversampling
NKX = NX * OS                   # acquired readout samples
FOV_MM = (240.0, 180.0, 5.0)    # image field of view (readout, phase, slice thickness)
SLICE_GAP_MM = 6.0


# --------------------------------------------------------------------------------------------- phantom


def upright_head(n_slices: int = 2) -> np.ndarray:
    """Magnitude images (slices, NY, NKX) on the oversampled grid: Shepp-Logan plus a marker at the top left of
    the cropped field of view; slice s is scaled by 1 + 0.25 s."""
    head = shepp_logan(NY, NKX, x_extent=float(OS))
    left = NKX // 2 - NX // 2
    head[4:14, left + 4:left + 14] = 1.5
    return np.stack([head * (1.0 + 0.25 * s) for s in range(n_slices)])


def phantom_frames(n_coils: int = 4, n_slices: int = 2, repetitions: int = 1, contrasts: int = 1) -> np.ndarray:
    """complex64 (repetitions, contrasts, coils, slices, NY, NKX): centred k-space of the upright head; each
    repetition/contrast is scaled differently so that a mix-up shows."""
    maps = coil_sensitivities(n_coils, NY, NKX, x_extent=float(OS))
    coil_images = maps[:, np.newaxis] * upright_head(n_slices)[np.newaxis]
    kspace = to_kspace(coil_images.astype(np.complex64))
    scale = np.array([[1.0 + r + 0.5 * c for c in range(contrasts)] for r in range(repetitions)], dtype=np.float32)
    return (scale[:, :, None, None, None, None] * kspace[None, None]).astype(np.complex64)


def expected_rss(frames: np.ndarray) -> np.ndarray:
    """RSS image (slices, NY, NX) of the first repetition and contrast, cropped, computed here from the truth."""
    from scanai.kspace import to_image

    return rss(remove_readout_oversampling(to_image(frames[0, 0]), OS), axis=0)


def assert_upright(image: np.ndarray) -> None:
    """The marker (top-left of the cropped field of view) is bright; its mirror images are not."""
    marker = image[4:14, 4:14].mean()
    assert marker > 3 * image[-14:-4, 4:14].mean(), "flipped upside down"
    assert marker > 3 * image[4:14, -14:-4].mean(), "flipped left-right"


def correlated_noise(n_coils: int, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noise complex (coils, samples), its true covariance (coils, coils)): coil noise mixed by a random matrix."""
    mixing = rng.normal(size=(n_coils, n_coils)) + 1j * rng.normal(size=(n_coils, n_coils))
    mixing = mixing * 0.3 + np.diag(np.linspace(1.0, 3.0, n_coils))
    white = (rng.normal(size=(n_coils, n_samples)) + 1j * rng.normal(size=(n_coils, n_samples))) / np.sqrt(2)
    return (mixing @ white).astype(np.complex64), mixing @ mixing.conj().T


# --------------------------------------------------------------------------------------------- ISMRMRD writer

HEAD_DTYPE = np.dtype([
    ("version", "<u2"), ("flags", "<u8"), ("measurement_uid", "<u4"), ("scan_counter", "<u4"),
    ("acquisition_time_stamp", "<u4"), ("physiology_time_stamp", "<u4", (3,)), ("number_of_samples", "<u2"),
    ("available_channels", "<u2"), ("active_channels", "<u2"), ("channel_mask", "<u8", (16,)),
    ("discard_pre", "<u2"), ("discard_post", "<u2"), ("center_sample", "<u2"), ("encoding_space_ref", "<u2"),
    ("trajectory_dimensions", "<u2"), ("sample_time_us", "<f4"), ("position", "<f4", (3,)),
    ("read_dir", "<f4", (3,)), ("phase_dir", "<f4", (3,)), ("slice_dir", "<f4", (3,)),
    ("patient_table_position", "<f4", (3,)),
    ("idx", [("kspace_encode_step_1", "<u2"), ("kspace_encode_step_2", "<u2"), ("average", "<u2"),
             ("slice", "<u2"), ("contrast", "<u2"), ("phase", "<u2"), ("repetition", "<u2"), ("set", "<u2"),
             ("segment", "<u2"), ("user", "<u2", (8,))]),
    ("user_int", "<i4", (8,)), ("user_float", "<f4", (8,)),
])
NOISE, CALIBRATION, REVERSE, NAVIGATION = 19, 20, 22, 23


@dataclass
class Acq:
    """One ISMRMRD acquisition to write: samples complex (channels, samples) and its header fields."""

    samples: np.ndarray
    step1: int = 0
    step2: int = 0
    slice: int = 0
    contrast: int = 0
    repetition: int = 0
    flags: tuple[int, ...] = ()
    center_sample: int = NKX // 2
    sample_time_us: float = 5.0
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extra: dict = field(default_factory=dict)


def mrd_xml(encoded=(NKX, NY, 1), encoded_fov=(2 * FOV_MM[0], FOV_MM[1], FOV_MM[2]), recon=(NX, NY, 1),
            recon_fov=FOV_MM, centre1: int | None = NY // 2, trajectory: str = "cartesian", coils: int = 4) -> str:
    def triple(tag, values):
        return f"<{tag}><x>{values[0]}</x><y>{values[1]}</y><z>{values[2]}</z></{tag}>"

    limits = ""
    if centre1 is not None:
        limits = (f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{encoded[1] - 1}</maximum>"
                  f"<center>{centre1}</center></kspace_encoding_step_1></encodingLimits>")
    return ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            "<measurementInformation><protocolName>phantom</protocolName></measurementInformation>"
            f"<acquisitionSystemInformation><receiverChannels>{coils}</receiverChannels></acquisitionSystemInformation>"
            "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
            "</experimentalConditions><encoding>"
            f"<encodedSpace>{triple('matrixSize', encoded)}{triple('fieldOfView_mm', encoded_fov)}</encodedSpace>"
            f"<reconSpace>{triple('matrixSize', recon)}{triple('fieldOfView_mm', recon_fov)}</reconSpace>"
            f"{limits}<trajectory>{trajectory}</trajectory></encoding></ismrmrdHeader>")


def imaging_acqs(frames: np.ndarray, rng: np.random.Generator) -> list[Acq]:
    """One acquisition per (repetition, contrast, slice, ky) line of ``frames``, in shuffled order."""
    reps, cons, _, slices, n_ky, _ = frames.shape
    acqs = [Acq(frames[r, c, :, s, ky], step1=ky, slice=s, contrast=c, repetition=r,
                position=(0.0, 0.0, SLICE_GAP_MM * s))
            for r in range(reps) for c in range(cons) for s in range(slices) for ky in range(n_ky)]
    return [acqs[i] for i in rng.permutation(len(acqs))]


def write_mrd(path: Path, acqs: list[Acq], xml: str | None, group: str = "dataset") -> Path:
    """An ISMRMRD HDF5 file written with h5py from the ISMRMRD layout (no ismrmrd package)."""
    table = np.zeros(len(acqs), dtype=[("head", HEAD_DTYPE), ("traj", h5py.vlen_dtype(np.float32)),
                                       ("data", h5py.vlen_dtype(np.float32))])
    for row, acq in enumerate(acqs):
        head = table["head"][row:row + 1]
        channels, samples = acq.samples.shape
        head["version"], head["number_of_samples"], head["scan_counter"] = 1, samples, row
        head["available_channels"] = head["active_channels"] = channels
        head["center_sample"], head["sample_time_us"] = acq.center_sample, acq.sample_time_us
        head["position"] = acq.position
        head["flags"] = sum(1 << (flag - 1) for flag in acq.flags)
        for name, value in {"kspace_encode_step_1": acq.step1, "kspace_encode_step_2": acq.step2,
                            "slice": acq.slice, "contrast": acq.contrast, "repetition": acq.repetition,
                            **acq.extra}.items():
            head["idx"][name] = value
        table["traj"][row] = np.zeros(0, np.float32)
        table["data"][row] = np.ascontiguousarray(acq.samples, dtype=np.complex64).view(np.float32).ravel()
    with h5py.File(path, "w") as file:
        grp = file.create_group(group)
        if xml is not None:
            grp.create_dataset("xml", data=np.array([xml.encode()], dtype=object), dtype=h5py.string_dtype())
        grp.create_dataset("data", data=table)
    return path


def write_mrd_official(path: Path, acqs: list[Acq], xml: str) -> Path:
    """The same file written with the official ismrmrd-python library."""
    import ismrmrd

    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(xml)
    for acq in acqs:
        out = ismrmrd.Acquisition.from_array(np.ascontiguousarray(acq.samples, dtype=np.complex64))
        out.center_sample, out.sample_time_us = acq.center_sample, acq.sample_time_us
        out.position[:] = acq.position
        out.idx.kspace_encode_step_1, out.idx.kspace_encode_step_2 = acq.step1, acq.step2
        out.idx.slice, out.idx.contrast, out.idx.repetition = acq.slice, acq.contrast, acq.repetition
        for flag in acq.flags:
            out.set_flag(flag)
        dataset.append_acquisition(out)
    dataset.close()
    return path


@pytest.fixture
def mrd_case(tmp_path, rng):
    """An ISMRMRD file of the phantom: 2 slices, 2 contrasts, 2 repetitions, 4 coils, 8 noise readouts of
    correlated noise, and navigator / calibration-only lines filled with garbage that must be skipped."""
    frames = phantom_frames(repetitions=2, contrasts=2)
    noise, truth = correlated_noise(4, 8 * 256, rng)
    acqs = imaging_acqs(frames, rng)
    acqs += [Acq(block, flags=(NOISE,), center_sample=0, sample_time_us=2.5) for block in np.split(noise, 8, axis=1)]
    garbage = (1e3 * (rng.normal(size=(4, NKX)) + 1j)).astype(np.complex64)
    acqs += [Acq(garbage, step1=NY // 2, flags=(NAVIGATION,)), Acq(garbage, step1=3, flags=(CALIBRATION,))]
    path = write_mrd(tmp_path / "phantom.h5", acqs, mrd_xml())
    return path, frames, noise, truth, acqs


# --------------------------------------------------------------------------------------------- ISMRMRD tests


def test_ismrmrd_round_trip_axes_frames_and_geometry(mrd_case):
    path, frames, noise, _, _ = mrd_case
    ks = read_kspace(path)
    assert ks.data.shape == (4, 2, NY, NKX) and ks.axes == ("coil", "slice", "ky", "kx")
    np.testing.assert_array_equal(ks.data, frames[0, 0])
    assert ks.frames is not None and ks.frames.shape == (2, 2, 4, 2, NY, NKX)
    np.testing.assert_array_equal(ks.frames, frames)
    assert ks.frame_axes == ("repetition", "contrast", "coil", "slice", "ky", "kx")
    assert ks.readout_oversampling == OS
    assert ks.spacing_from_header
    assert ks.spacing_mm == pytest.approx((FOV_MM[0] / NX, FOV_MM[1] / NY, SLICE_GAP_MM))
    meta = ks.metadata
    assert meta["format"] == "ismrmrd" and meta["repetitions"] == 2 and meta["contrasts"] == 2
    assert meta["skipped"] == {"navigation": 1, "calibration": 1}
    assert meta["noise_scans"] == 8 and meta["noise_samples"] == 8 * 256 and meta["prewhitened"] is False
    # noise dwell 2.5 us, imaging 5 us: the imaging band is half as wide, so half the noise variance
    assert meta["noise_dwell_ratio"] == pytest.approx(0.5)
    np.testing.assert_allclose(ks.noise_covariance, 0.5 * noise_covariance(noise), rtol=1e-5)

    image = reconstruct(ks).rss.array
    assert image.shape == (2, NY, NX)
    np.testing.assert_allclose(image, expected_rss(frames), rtol=1e-4, atol=1e-4 * image.max())
    assert_upright(image[0])


def test_ismrmrd_agrees_with_the_official_library(mrd_case, tmp_path):
    ismrmrd = pytest.importorskip("ismrmrd")
    path, frames, _, _, acqs = mrd_case
    official = write_mrd_official(tmp_path / "official.h5", acqs, mrd_xml())
    ours, theirs = read_kspace(path), read_kspace(official)
    np.testing.assert_array_equal(theirs.frames, ours.frames)
    np.testing.assert_allclose(theirs.noise_covariance, ours.noise_covariance)
    assert theirs.spacing_mm == ours.spacing_mm and theirs.readout_oversampling == ours.readout_oversampling
    # ... and the official library reads the test writer's file as written (the writer follows the format)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    for index in (0, len(acqs) - 1):
        acquisition = dataset.read_acquisition(index)
        np.testing.assert_array_equal(acquisition.data, acqs[index].samples)
        assert acquisition.idx.kspace_encode_step_1 == acqs[index].step1
        assert acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) == (NOISE in acqs[index].flags)
    dataset.close()


def test_ismrmrd_asymmetric_echo_partial_fourier_and_3d(tmp_path, rng):
    frames = phantom_frames(n_slices=1)
    kspace = frames[0, 0, :, 0]
    # asymmetric echo: the first 32 readout samples are not acquired; partial Fourier: the first 24 lines neither
    acqs = [Acq(kspace[:, ky, 32:], step1=ky, center_sample=NKX // 2 - 32) for ky in range(24, NY)]
    ks = read_kspace(write_mrd(tmp_path / "partial.h5", acqs, mrd_xml()))
    expected = kspace.copy()
    expected[:, :24] = 0
    expected[:, :, :32] = 0
    np.testing.assert_array_equal(ks.data[:, 0], expected)
    assert ks.metadata["readout_padding"] == [32, 0] and ks.metadata["sampled_fraction"] == pytest.approx(72 / 96)

    # 3-D: kspace_encode_step_2 is the partition (kz) axis
    volume = phantom_frames(n_slices=4)[0, 0]
    acqs = [Acq(volume[:, kz, ky], step1=ky, step2=kz) for kz in range(4) for ky in range(NY)]
    xml = mrd_xml(encoded=(NKX, NY, 4), encoded_fov=(480.0, 180.0, 40.0), recon=(NX, NY, 4))
    ks = read_kspace(write_mrd(tmp_path / "3d.h5", acqs, xml))
    assert ks.slices_are_kz and ks.axes == ("coil", "kz", "ky", "kx") and ks.frames is None
    np.testing.assert_array_equal(ks.data, volume)
    assert ks.spacing_mm == pytest.approx((3.75, 1.875, 10.0))


def test_ismrmrd_without_header_and_in_another_group(tmp_path, rng):
    frames = phantom_frames(n_slices=1)
    path = write_mrd(tmp_path / "bare.mrd", imaging_acqs(frames, rng), None, group="scan")
    ks = read_kspace(path)
    np.testing.assert_array_equal(ks.data, frames[0, 0])
    assert ks.readout_oversampling == 1 and not ks.spacing_from_header and ks.metadata["group"] == "/scan"


def test_ismrmrd_reversed_lines_are_epi(tmp_path, rng):
    kspace = phantom_frames(n_slices=1)[0, 0, :, 0]
    acqs = [Acq(kspace[:, ky, ::-1] if ky % 2 else kspace[:, ky], step1=ky, flags=(REVERSE,) if ky % 2 else ())
            for ky in range(NY)]
    path = write_mrd(tmp_path / "epi.h5", acqs, mrd_xml())
    with pytest.raises(InputError, match="echo-planar"):
        read_kspace(path)
    ks = read_kspace(path, allow_epi=True)
    np.testing.assert_array_equal(ks.data[:, 0], kspace)
    assert ks.metadata["epi_uncorrected"] and ks.metadata["reflected_lines"] == NY // 2


def test_ismrmrd_bad_files(tmp_path, rng):
    kspace = phantom_frames(n_slices=1)[0, 0, :, 0]
    good = [Acq(kspace[:, ky], step1=ky) for ky in range(NY)]
    # readouts of different lengths
    uneven = good[:-1] + [Acq(kspace[:, -1, :100], step1=NY - 1)]
    with pytest.raises(InputError, match="inconsistent dimensions"):
        read_kspace(write_mrd(tmp_path / "uneven.h5", uneven, mrd_xml()))
    # only noise: no imaging acquisition
    noise_only = [Acq(kspace[:, 0], flags=(NOISE,))]
    with pytest.raises(InputError, match="no imaging acquisitions"):
        read_kspace(write_mrd(tmp_path / "noise_only.h5", noise_only, mrd_xml()))
    # a header and no acquisitions at all
    with h5py.File(tmp_path / "empty.h5", "w") as file:
        file.create_group("dataset").create_dataset("xml", data=[mrd_xml().encode()], dtype=h5py.string_dtype())
    with pytest.raises(InputError, match="no acquisitions"):
        read_kspace(tmp_path / "empty.h5")
    # a readout whose data do not match its header's channels x samples
    path = write_mrd(tmp_path / "short.h5", good, mrd_xml())
    with h5py.File(path, "r+") as file:
        table = file["dataset/data"][()]
        table["data"][5] = table["data"][5][:-2]
        del file["dataset/data"]
        file["dataset"].create_dataset("data", data=table)
    with pytest.raises(FileFormatError, match="damaged"):
        read_kspace(path)
    # malformed XML, non-Cartesian trajectory
    with pytest.raises(FileFormatError, match="malformed"):
        read_kspace(write_mrd(tmp_path / "badxml.h5", good, mrd_xml()[:-20]))
    with pytest.raises(InputError, match="non-Cartesian"):
        read_kspace(write_mrd(tmp_path / "radial.h5", good, mrd_xml(trajectory="radial")))


# --------------------------------------------------------------------------------------------- fastMRI


def write_fastmri(path: Path, kspace: np.ndarray, xml: str | None, mask: bool = False, single_coil: bool = False
                  ) -> Path:
    """A fastMRI-style file: kspace (slices, coils, readout, phase) = ScanAI's (coils, slices, ky, kx) transposed."""
    stored = kspace.transpose(1, 0, 3, 2)
    if single_coil:
        stored = stored[:, 0]
    with h5py.File(path, "w") as file:
        file.create_dataset("kspace", data=np.ascontiguousarray(stored))
        if xml is not None:
            file.create_dataset("ismrmrd_header", data=xml.encode())
        if mask:
            file.create_dataset("mask", data=np.ones(kspace.shape[2], dtype=bool))
        file.attrs["acquisition"] = "CORPD_FBK"
    return path


def test_fastmri_readout_rows_are_transposed_to_ky_kx(tmp_path):
    frames = phantom_frames()
    kspace = frames[0, 0]
    ks = read_kspace(write_fastmri(tmp_path / "file1000.h5", kspace, mrd_xml()))
    assert ks.data.shape == (4, 2, NY, NKX)
    np.testing.assert_array_equal(ks.data, kspace)
    assert ks.readout_oversampling == OS and ks.spacing_mm[:2] == pytest.approx((FOV_MM[0] / NX, FOV_MM[1] / NY))
    assert ks.metadata["file_axes"] == ["slice", "coil", "kx", "ky"] and ks.metadata["acquisition"] == "CORPD_FBK"
    image = reconstruct(ks).rss.array
    np.testing.assert_allclose(image, expected_rss(frames), rtol=1e-4, atol=1e-4 * image.max())
    assert_upright(image[1])

    # without a header the sampling mask (along phase encoding) tells the axes apart
    ks = read_kspace(write_fastmri(tmp_path / "mask.h5", kspace, None, mask=True))
    np.testing.assert_array_equal(ks.data, kspace)
    assert "mask" in ks.metadata["orientation"] and ks.readout_oversampling == 1
    # only the acquired phase-encoding lines stored (partial Fourier): padded back to the header's matrix
    acquired = kspace[:, :, 24:]
    ks = read_kspace(write_fastmri(tmp_path / "partial.h5", acquired, mrd_xml(centre1=24)))
    expected = kspace.copy()
    expected[:, :, :24] = 0
    np.testing.assert_array_equal(ks.data, expected)
    assert ks.metadata["phase_padding"] == 24
    # single-coil files: (slices, readout, phase)
    ks = read_kspace(write_fastmri(tmp_path / "single.h5", kspace, mrd_xml(coils=1), single_coil=True))
    np.testing.assert_array_equal(ks.data, kspace[:1])


def test_fastmri_bad_files(tmp_path):
    with h5py.File(tmp_path / "real.h5", "w") as file:
        file.create_dataset("kspace", data=np.ones((2, 4, 8, 8), np.float32))
    with pytest.raises(InputError, match="not complex"):
        read_kspace(tmp_path / "real.h5")
    with h5py.File(tmp_path / "flat.h5", "w") as file:
        file.create_dataset("kspace", data=np.ones((8, 8), np.complex64))
    with pytest.raises(InputError, match="fastMRI k-space is"):
        read_kspace(tmp_path / "flat.h5")
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file.create_dataset("image", data=np.ones((8, 8)))
    with pytest.raises(FileFormatError, match="neither ISMRMRD"):
        read_kspace(tmp_path / "other.h5")


# --------------------------------------------------------------------------------------------- BART


def test_bart_round_trips(tmp_path):
    frames = phantom_frames(repetitions=2, contrasts=1)
    write_cfl(tmp_path / "kspace", kspace_to_bart(frames))
    assert read_cfl_dims_text(tmp_path / "kspace.hdr")[:4] == [NKX, NY, 1, 4]
    for name in ("kspace.cfl", "kspace.hdr"):
        ks = read_kspace(tmp_path / name)
        assert ks.data.shape == (4, 2, NY, NKX) and not ks.slices_are_kz
        np.testing.assert_array_equal(ks.data, frames[0, 0])
        np.testing.assert_array_equal(ks.frames, frames)
        assert ks.metadata["format"] == "bart" and ks.metadata["repetitions"] == 2
    assert_upright(reconstruct(KSpaceData(ks.data, readout_oversampling=OS)).rss.array[0])

    # 3-D: BART phase 2 is the partition axis
    volume = phantom_frames(n_slices=4)[0, 0]
    write_cfl(tmp_path / "volume.cfl", kspace_to_bart(volume, slices_are_kz=True))
    ks = read_kspace(tmp_path / "volume.cfl")
    assert ks.slices_are_kz and ks.frames is None
    np.testing.assert_array_equal(ks.data, volume)

    # the generic array I/O is column-major, like BART's own cfl.py
    array = (np.arange(24) + 1j * np.arange(24)).reshape(2, 3, 4).astype(np.complex64)
    write_cfl(tmp_path / "plain", array)
    np.testing.assert_array_equal(read_cfl(tmp_path / "plain"), array)
    assert (tmp_path / "plain.cfl").read_bytes()[8:16] == array[1, 0, 0].tobytes()


def read_cfl_dims_text(header: Path) -> list[int]:
    lines = header.read_text().splitlines()
    return [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]


def test_bart_bad_files(tmp_path):
    kspace = phantom_frames(n_slices=1)[0, 0]
    header, data = write_cfl(tmp_path / "k", kspace_to_bart(kspace))
    header.write_text("# Dimensions\n128 96 1 5 1\n")  # one coil more than the data hold
    with pytest.raises(FileFormatError, match="bytes"):
        read_kspace(data)
    header.write_text("not a header\n")
    with pytest.raises(FileFormatError, match="Dimensions"):
        read_kspace(data)
    header.unlink()
    with pytest.raises(FileFormatError, match="missing"):
        read_kspace(data)
    maps = np.zeros((8, 8, 1, 2, 2), np.complex64)
    maps[...] = 1
    write_cfl(tmp_path / "maps", maps)
    with pytest.raises(InputError, match="maps"):
        read_kspace(tmp_path / "maps.cfl")


# --------------------------------------------------------------------------------------------- dispatch


def test_unknown_and_corrupt_files(tmp_path, rng):
    (tmp_path / "scan.nii").write_bytes(b"\0" * 100)
    with pytest.raises(FileFormatError, match="not a supported") as error:
        read_kspace(tmp_path / "scan.nii")
    assert all(suffix in str(error.value) for suffix in (".dat", ".h5", ".mrd", ".cfl", ".hdr", ".npz", ".mat"))
    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("garbage.h5", "garbage.mrd", "garbage.hdf5"):
        (tmp_path / name).write_bytes(garbage)
        with pytest.raises(FileFormatError, match="HDF5"):
            read_kspace(tmp_path / name)
    # a real HDF5 file cut in half
    path = write_fastmri(tmp_path / "whole.h5", phantom_frames()[0, 0], mrd_xml())
    (tmp_path / "cut.h5").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FileFormatError):
        read_kspace(tmp_path / "cut.h5")


def test_npz_keeps_frames_covariance_and_noise(tmp_path, rng):
    frames = phantom_frames(repetitions=1, contrasts=2)
    noise, _ = correlated_noise(4, 2000, rng)
    covariance = noise_covariance(noise)
    ks = KSpaceData(frames[0, 0], readout_oversampling=OS, spacing_mm=(3.75, 1.875, 6.0), spacing_from_header=True,
                    frames=frames, noise_covariance=covariance)
    back = read_kspace(write_kspace_npz(ks, tmp_path / "k.npz"))
    np.testing.assert_array_equal(back.frames, frames)
    np.testing.assert_array_equal(back.noise_covariance, covariance)
    assert back.spacing_mm == ks.spacing_mm and back.readout_oversampling == OS
    whitened = read_kspace(tmp_path / "k.npz", prewhiten=True)
    again = read_kspace(write_kspace_npz(whitened, tmp_path / "w.npz"))
    assert again.metadata["prewhitened"]
    with pytest.raises(InputError, match="already pre-whitened"):
        prewhiten_kspace(again)
    # raw noise samples under the key 'noise'
    np.savez(tmp_path / "raw.npz", kspace=frames[0, 0], noise=noise)
    raw = read_kspace(tmp_path / "raw.npz")
    np.testing.assert_allclose(raw.noise_covariance, covariance)


def test_kspace_data_checks_frames_and_covariance():
    data = phantom_frames(n_slices=1)[0, 0]
    with pytest.raises(InputError, match="frames"):
        KSpaceData(data, frames=data[np.newaxis])
    with pytest.raises(InputError, match="covariance"):
        KSpaceData(data, noise_covariance=np.eye(3))


# --------------------------------------------------------------------------------------------- pre-whitening


def test_whitening_makes_correlated_noise_white(rng):
    noise, truth = correlated_noise(8, 40_000, rng)
    estimate = noise_covariance(noise)
    assert estimate.shape == (8, 8) and np.allclose(estimate, estimate.conj().T)
    assert np.abs(estimate - truth).max() < 0.05 * np.abs(truth).max()
    before = noise.copy()
    white = prewhiten(noise, estimate)
    np.testing.assert_array_equal(noise, before)
    assert white.dtype == np.complex64 and white.shape == noise.shape
    np.testing.assert_allclose(noise_covariance(white), np.eye(8), atol=1e-5)
    # fresh noise from the same coils, whitened with the estimate: identity within the sampling error
    fresh, _ = correlated_noise(8, 40_000, np.random.default_rng(20261120))
    np.testing.assert_allclose(noise_covariance(prewhiten(fresh, estimate)), np.eye(8), atol=0.05)
    weights = whitening_matrix(estimate)
    assert np.allclose(np.triu(weights, 1), 0)
    np.testing.assert_allclose(weights @ estimate @ weights.conj().T, np.eye(8), atol=1e-10)


def test_whitening_refuses_bad_covariances_and_noise(rng):
    with pytest.raises(InputError, match="positive definite"):
        whitening_matrix(np.diag([1.0, 0.0, 1.0]).astype(complex))
    with pytest.raises(InputError, match="Hermitian"):
        whitening_matrix(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(InputError, match="square"):
        whitening_matrix(np.ones((2, 3)))
    with pytest.raises(InputError, match="fewer samples than coils"):
        noise_covariance(np.ones((8, 4), complex))
    with pytest.raises(InputError, match="real"):
        noise_covariance(np.ones((2, 40)))
    with pytest.raises(InputError, match="describes 3 coils"):
        prewhiten(np.ones((4, 10), np.complex64), np.eye(3))


def test_read_with_prewhitening(mrd_case):
    path, frames, _, truth, _ = mrd_case
    plain = read_kspace(path)
    ks = read_kspace(path, prewhiten=True)
    assert ks.metadata["prewhitened"] and not plain.metadata["prewhitened"]
    np.testing.assert_array_equal(ks.noise_covariance, plain.noise_covariance)
    np.testing.assert_allclose(ks.data, prewhiten(plain.data, plain.noise_covariance), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ks.frames[1, 1], prewhiten(frames[1, 1], plain.noise_covariance), rtol=1e-4,
                               atol=1e-4 * np.abs(ks.frames[1, 1]).max())
    image = reconstruct(ks).rss.array
    assert np.isfinite(image).all()
    assert_upright(image[0])


def test_prewhitening_without_noise_data_is_an_input_error(tmp_path):
    np.save(tmp_path / "k.npy", phantom_frames(n_slices=1)[0, 0])
    with pytest.raises(InputError, match="no noise-only samples"):
        read_kspace(tmp_path / "k.npy", prewhiten=True)


# --------------------------------------------------------------------------------------------- twix


def noise_readouts(template, samples: np.ndarray, count: int) -> list:
    """``count`` twix noise adjustment readouts (NOISEADJSCAN) like the readout ``template``, holding ``samples``
    (coils, count x readout samples) in order."""
    readouts = []
    for part in np.split(samples, count, axis=1):
        block = template.convert_to_local()
        block.data = part
        block.set_flags(["NOISEADJSCAN"])
        readouts.append(block)
    return readouts


def twix_with_noise_and_repetition(source: Path, target: Path, rng: np.random.Generator
                                   ) -> tuple[np.ndarray, np.ndarray]:
    """gre.dat plus 16 noise adjustment readouts of correlated noise and a second repetition (lines x 2)."""
    import twixtools

    scans = twixtools.read_twix(str(source), verbose=False)
    blocks = scans[-1]["mdb"]
    template = next(b for b in blocks if b.is_image_scan())
    n_coils, n_samples = np.asarray(template.data).shape
    noise, truth = correlated_noise(n_coils, 16 * n_samples, rng)
    added = noise_readouts(template, noise, 16)
    for block in [b for b in blocks if b.is_image_scan()]:
        copy = block.convert_to_local()
        copy.data = 2 * np.asarray(block.data)
        copy.mdh.Counter.Rep = 1
        copy.set_flags([f for f in block.get_active_flags() if f not in ("LASTSCANINMEAS",)])
        added.append(copy)
    last = next(i for i, b in enumerate(blocks) if b.is_flag_set("LASTSCANINMEAS"))
    scans[-1]["mdb"] = added[:16] + blocks[:last] + added[16:] + blocks[last:]
    twixtools.write_twix(scans, str(target))
    return noise, truth


def test_twix_noise_scans_repetitions_and_prewhitening(shared_data, tmp_path, rng):
    source = shared_data / "kspace" / "gre.dat"
    noise, truth = twix_with_noise_and_repetition(source, tmp_path / "noisy.dat", rng)
    original = read_kspace(source)
    assert original.metadata["noise_scans"] == 0 and original.noise_covariance is None
    with pytest.raises(InputError, match="no noise-only samples"):
        read_kspace(source, prewhiten=True)

    ks = read_kspace(tmp_path / "noisy.dat")
    np.testing.assert_array_equal(ks.data, original.data)
    assert ks.frames is not None and ks.frames.shape[:2] == (2, 1) and ks.metadata["repetitions"] == 2
    np.testing.assert_allclose(ks.frames[1, 0], 2 * original.data, rtol=1e-6)
    assert ks.metadata["noise_scans"] == 16
    np.testing.assert_allclose(ks.noise_covariance, noise_covariance(noise), rtol=1e-5, atol=1e-6)

    white = read_kspace(tmp_path / "noisy.dat", prewhiten=True)
    assert white.metadata["prewhitened"]
    image = reconstruct(white).rss.array
    assert np.isfinite(image).all() and image.max() > 0
    np.testing.assert_allclose(white.data, prewhiten(original.data, ks.noise_covariance), rtol=1e-4,
                               atol=1e-4 * np.abs(white.data).max())


def test_corrupt_samples_are_refused_with_their_place():
    """Bit-flipped samples (|k| 1e13 times the rest) and NaN samples are refused, naming where they are."""
    from scanai.kspace.data import as_kspace_array
    from scanai.kspace.phantom import make_phantom

    clean = make_phantom(size=32, n_coils=4, noise_std=1e-3).kspace.data
    assert as_kspace_array(clean).shape == clean.shape
    flipped = clean.copy()
    flipped[2, 0, 10, 33] = 1e13
    with pytest.raises(InputError, match="coil 3, slice 1, phase-encoding line 11, readout sample 34.*corrupt"):
        as_kspace_array(flipped)
    holes = clean.copy()
    holes[1, 0, 5, 7] = np.nan
    with pytest.raises(InputError, match="NaN or infinite.*coil 2, slice 1, phase-encoding line 6"):
        as_kspace_array(holes)
