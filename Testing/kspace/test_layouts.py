"""Array layouts: BART's 16 dimensions (readout-transformed ky-kz planes included), coils-last NumPy/MATLAB arrays,
and ``--axes`` to name what a file's axes hold; a layout the reader cannot settle is refused naming the sizes seen
and an ``--axes`` that reads it.

The BART files are written here by :func:`write_bart` (the header text and column-major complex64 samples, as
BART's own ``writecfl`` does), not by ScanAI's writer, so reader and writer are checked against each other. The
k-space holds a known multi-coil image, so where an axis lands is checked sample by sample and by the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scanai.cli import main
from scanai.core.errors import InputError
from scanai.kspace import coil_sensitivities, parse_axes, read_kspace, reconstruct, rss, shepp_logan, to_kspace

BART_NAMES = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT", "TIME", "TIME2",
              "LEVEL", "SLICE", "AVG", "BATCH")


def write_bart(stem: Path, array: np.ndarray) -> Path:
    """``stem.hdr`` + ``stem.cfl`` as BART writes them: 16 sizes, samples column-major complex64; returns the .cfl."""
    dims = list(array.shape) + [1] * (16 - array.ndim)
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    np.asarray(array, dtype="<c8").ravel(order="F").tofile(stem.with_suffix(".cfl"))
    return stem.with_suffix(".cfl")


def bart_array(sizes: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Random complex samples with BART's 16 axes, ``sizes`` by BART name (others 1)."""
    shape = tuple(sizes.get(name, 1) for name in BART_NAMES)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def coil_kspace(n_coils: int, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(k-space (coils, rows, columns), its RSS image (rows, columns)) of a Shepp-Logan head seen by the coils."""
    images = coil_sensitivities(n_coils, rows, columns) * shepp_logan(rows, columns)[np.newaxis]
    return to_kspace(images.astype(np.complex64)), rss(images, axis=0)


# --------------------------------------------------------------------------------------------- BART


def test_bart_example_readout_transformed_plane(tmp_path):
    """BART's own example layout 1 x 230 x 180 x 8: a ky-kz plane of 8 coils at one readout position."""
    kspace, truth = coil_kspace(8, 230, 180)
    stored = np.moveaxis(kspace, 0, -1)[np.newaxis]  # (1, 230, 180, 8): READ, PHS1, PHS2, COIL
    ks = read_kspace(write_bart(tmp_path / "knee", stored))
    assert ks.data.shape == (8, 1, 230, 180) and not ks.slices_are_kz
    assert ks.metadata["axes"] == ["coil", "slice", "ky", "kz"] and "readout-transformed" in ks.metadata["note"]
    np.testing.assert_array_equal(ks.data[:, 0], kspace)
    image = reconstruct(ks).rss.array[0]
    np.testing.assert_allclose(image, truth, atol=1e-4 * truth.max())
    # the same plane named by hand, BART-style or with ScanAI's names
    for axes in ("READ,PHS1,PHS2,COIL", "x,ky,kz,coil"):
        np.testing.assert_array_equal(read_kspace(tmp_path / "knee.hdr", axes=axes).data, ks.data)


def test_bart_readout_positions_named_with_axes(tmp_path, rng):
    """Several readout positions (x) of readout-transformed data are separate planes; by BART's conventions alone
    the same array is a 3-D k-space (READ, PHS1, PHS2 all > 1)."""
    stored = bart_array({"READ": 6, "PHS1": 20, "PHS2": 14, "COIL": 3}, rng)
    path = write_bart(tmp_path / "hybrid", stored)
    as_3d = read_kspace(path)
    assert as_3d.slices_are_kz and as_3d.data.shape == (3, 14, 20, 6)
    ks = read_kspace(path, axes="x,ky,kz,coil")
    assert ks.data.shape == (3, 6, 20, 14) and not ks.slices_are_kz
    assert ks.metadata["axes"] == ["coil", "x", "ky", "kz"] and ks.metadata["axes_given"] == "x,ky,kz,coil"
    for c, x, y, z in [(0, 0, 0, 0), (2, 5, 19, 13), (1, 3, 7, 2)]:
        assert ks.data[c, x, y, z] == stored[x, y, z, c].item()


def test_bart_dimensions_echo_time_slice(tmp_path, rng):
    """Readout, phase 1, coil, echo (5), time (10) and slice (13) together land where BART's conventions put them."""
    stored = bart_array({"READ": 12, "PHS1": 10, "COIL": 3, "TE": 2, "TIME": 2, "SLICE": 3}, rng)
    ks = read_kspace(write_bart(tmp_path / "multi", stored))
    assert ks.frames.shape == (2, 2, 3, 3, 10, 12) and ks.metadata["repetitions"] == ks.metadata["contrasts"] == 2
    for r, e, c, s, y, x in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 2, 9, 11), (1, 0, 1, 2, 3, 7), (0, 1, 2, 0, 5, 4)]:
        assert ks.frames[r, e, c, s, y, x] == stored[x, y, 0, c, 0, e, 0, 0, 0, 0, r, 0, 0, s, 0, 0]
    np.testing.assert_array_equal(ks.data, ks.frames[0, 0])


@pytest.mark.parametrize("dimension", [4, 6, 7, 8, 9, 11, 12, 14, 15])
def test_bart_dimensions_without_a_place_need_axes(tmp_path, rng, dimension):
    """Maps, coefficients, iterations, shifts, time 2, levels, averages and batches are refused by default; named
    with --axes (here as repetitions) the same file reads."""
    stored = bart_array({"READ": 8, "PHS1": 6, "COIL": 2, BART_NAMES[dimension]: 2}, rng)
    path = write_bart(tmp_path / "extra", stored)
    with pytest.raises(InputError, match=r"does not have: .*\(2\).*--axes"):
        read_kspace(path)
    names = ["kx", "ky", "_", "coil"] + ["_"] * (dimension - 4) + ["repetition"]
    ks = read_kspace(path, axes=",".join(names))
    assert ks.frames.shape == (2, 1, 2, 1, 6, 8)
    assert ks.frames[1, 0, 1, 0, 5, 7] == stored.reshape(8, 6, 1, 2, *[1] * (dimension - 4), 2)[7, 5, 0, 1, ..., 1]


def test_bart_with_one_kspace_axis_is_refused_with_a_working_suggestion(tmp_path, rng):
    """256 readout samples x 8 coils x 20 time points: one k-space axis. The error names the axes seen and an
    --axes (time as phase encoding) that the same file then reads with."""
    stored = bart_array({"READ": 32, "COIL": 4, "TIME": 20}, rng)
    path = write_bart(tmp_path / "lines", stored)
    with pytest.raises(InputError) as caught:
        read_kspace(path)
    message = str(caught.value)
    assert "kx 32, coil 4, repetition 20" in message and "BART's dimension conventions" in message
    suggestion = message.split("--axes ")[1].split(" ")[0]
    assert suggestion == "kx,_,_,coil,_,_,_,_,_,_,ky"
    ks = read_kspace(path, axes=suggestion)
    assert ks.data.shape == (4, 1, 20, 32)
    assert ks.data[3, 0, 19, 31] == stored[31, 0, 0, 3, 0, 0, 0, 0, 0, 0, 19].item()


def test_multislab_and_bad_axes_are_refused(tmp_path, rng):
    path = write_bart(tmp_path / "slabs", bart_array({"READ": 8, "PHS1": 6, "PHS2": 4, "COIL": 2, "SLICE": 2}, rng))
    with pytest.raises(InputError, match="kz and slice|slice and kz|multi-slab"):
        read_kspace(path)
    with pytest.raises(InputError, match="unknown axis name.*'phase'"):
        read_kspace(path, axes="kx,phase,kz,coil")
    with pytest.raises(InputError, match="names coil more than once"):
        read_kspace(path, axes="kx,coil,kz,coil")
    with pytest.raises(InputError, match=r"axis 14 \(size 2\).*does not name"):
        read_kspace(path, axes="kx,ky,kz,coil")
    with pytest.raises(InputError, match=r"size 2, named _"):
        read_kspace(path, axes="kx,ky,kz,coil,_,_,_,_,_,_,_,_,_,_")
    (tmp_path / "raw.h5").write_bytes(b"not read")
    with pytest.raises(InputError, match="--axes applies to plain arrays"):
        read_kspace(tmp_path / "raw.h5", axes="coil,ky,kx")
    assert parse_axes(" COIL, phs1 ,Read") == ("coil", "ky", "kx")


# --------------------------------------------------------------------------------------------- NumPy / MATLAB


def test_coils_last_arrays_are_refused_then_read_with_axes(tmp_path):
    """A (ky, kx, coil) array read coils-first would be 48 coils of 40 x 6 samples: refused with the --axes that
    reads it; MATLAB's (ky, kx, slice, coil) likewise."""
    kspace, truth = coil_kspace(6, 48, 40)
    np.save(tmp_path / "last.npy", np.moveaxis(kspace, 0, -1))
    with pytest.raises(InputError, match=r"48 x 40 x 6\. Read as \(coil, ky, kx\) it would be 48 coils.*"
                                         r"--axes ky,kx,coil"):
        read_kspace(tmp_path / "last.npy")
    ks = read_kspace(tmp_path / "last.npy", axes="ky,kx,coil")
    np.testing.assert_array_equal(ks.data[:, 0], kspace)
    np.testing.assert_allclose(reconstruct(ks).rss.array[0], truth, atol=1e-4 * truth.max())

    import scipy.io

    volume = np.stack([kspace, 2 * kspace], axis=1)  # (coil, slice, ky, kx)
    scipy.io.savemat(tmp_path / "k.mat", {"data": volume.transpose(2, 3, 1, 0)})
    with pytest.raises(InputError, match="--axes ky,kx,slice,coil"):
        read_kspace(tmp_path / "k.mat")
    np.testing.assert_array_equal(read_kspace(tmp_path / "k.mat", axes="ky,kx,slice,coil").data, volume)
    # frames from named echo and repetition axes
    frames = np.stack([volume, 3 * volume])[:, np.newaxis]  # (repetition, echo, coil, slice, ky, kx)
    np.save(tmp_path / "frames.npy", frames.transpose(4, 5, 3, 2, 0, 1)[..., 0])  # ky, kx, slice, coil, repetition
    ks = read_kspace(tmp_path / "frames.npy", axes="ky,kx,slice,coil,repetition")
    np.testing.assert_array_equal(ks.frames, frames)


def test_cli_axes_and_its_errors(tmp_path, capsys):
    kspace, _ = coil_kspace(4, 40, 32)
    write_bart(tmp_path / "plane", np.moveaxis(kspace, 0, -1)[np.newaxis])
    assert main(["kspace", str(tmp_path / "plane.cfl"), "--out", str(tmp_path / "out"), "--detect-only"]) == 0
    assert (tmp_path / "out" / "spikes.csv").is_file()
    assert "readout-transformed data: each slice is a ky x kz k-space plane" in capsys.readouterr().out
    np.save(tmp_path / "last.npy", np.moveaxis(kspace, 0, -1))
    capsys.readouterr()
    assert main(["kspace", str(tmp_path / "last.npy"), "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--axes ky,kx,coil" in error and not (tmp_path / "bad").exists()
    assert main(["kspace", str(tmp_path / "last.npy"), "--out", str(tmp_path / "good"), "--axes", "ky,kx,coil",
                 "--detect-only"]) == 0


def test_real_kspace_as_a_bart_readout_transformed_plane(shared_data, tmp_path):
    """The 16-coil Pulseq scan stored as BART stores a ky-kz plane (1 x 128 x 128 x 16) reads back sample for
    sample, and its image is the twix file's image (before the readout-oversampling crop)."""
    from dataclasses import replace

    original = read_kspace(shared_data / "kspace" / "2024-02-06-160052.dat")
    plane = original.data[:, 0]
    ks = read_kspace(write_bart(tmp_path / "pulseq", np.moveaxis(plane, 0, -1)[np.newaxis]))
    np.testing.assert_array_equal(ks.data, original.data)
    np.testing.assert_array_equal(reconstruct(ks).rss.array, reconstruct(replace(original, readout_oversampling=1))
                                  .rss.array)
