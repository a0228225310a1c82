"""``--noise FILE`` / ``read_kspace(..., noise=)``: the coils' noise from a covariance or a noise scan, for
pre-whitening and each coil's noise level, checked against the known covariance of generated correlated noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from scanai.cli import main
from scanai.core.errors import FileFormatError, InputError
from scanai.kspace import (
    as_noise_covariance,
    noise_covariance,
    noise_sigma,
    read_kspace,
    read_noise,
    write_cfl,
)

from .test_io import noise_readouts

COILS = 4


def mixing(rng: np.random.Generator, n_coils: int = COILS) -> np.ndarray:
    """A coil mixing matrix A; noise A @ w (w white, E|w|^2 = 1) has covariance A A^H, coils unequal and coupled."""
    return np.diag(np.linspace(0.5, 2.0, n_coils)) + 0.3 * (rng.normal(size=(n_coils, n_coils))
                                                          + 1j * rng.normal(size=(n_coils, n_coils)))


def noise(rng: np.random.Generator, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Correlated complex noise (coils,) + shape with covariance ``a a^H``."""
    white = (rng.normal(size=(a.shape[1], *shape)) + 1j * rng.normal(size=(a.shape[1], *shape))) / np.sqrt(2)
    return np.tensordot(a, white, axes=1).astype(np.complex64)


def test_covariance_or_samples_from_arrays_and_files(tmp_path, rng):
    a = mixing(rng)
    truth = a @ a.conj().T
    samples = noise(rng, a, (20_000,))
    estimate = noise_covariance(samples)
    assert np.abs(estimate - truth).max() < 0.05 * np.abs(truth).max()  # the estimate is the truth, sampled
    np.testing.assert_array_equal(as_noise_covariance(truth), truth)  # a covariance is taken as it is
    np.testing.assert_allclose(as_noise_covariance(samples), estimate)
    np.save(tmp_path / "psi.npy", truth)
    np.save(tmp_path / "samples.npy", samples)
    np.testing.assert_array_equal(read_noise(tmp_path / "psi.npy", COILS), truth)
    np.testing.assert_allclose(read_noise(tmp_path / "samples.npy", COILS), estimate)
    np.savez(tmp_path / "noise.npz", noise=samples)
    np.testing.assert_allclose(read_noise(tmp_path / "noise.npz"), estimate)
    np.testing.assert_allclose(noise_sigma(truth), np.sqrt(np.real(np.diag(truth))))
    # one coil, 1-D samples
    single = samples[0]
    np.testing.assert_allclose(read_noise(single, 1), [[np.mean(np.abs(single.astype(complex)) ** 2)]], rtol=1e-6)
    # a k-space-shaped noise scan with zero-filled lines: the zeros are not acquired, so not noise
    scan = noise(rng, a, (64, 80))
    scan[:, ::2] = 0
    np.save(tmp_path / "scan.npy", scan)
    np.testing.assert_allclose(read_noise(tmp_path / "scan.npy", COILS), noise_covariance(scan[:, 1::2]), rtol=1e-6)
    # a BART noise scan: readout x coil (dimension 3)
    bart = np.moveaxis(noise(rng, a, (256, 1, 1)), 0, 3)  # (256, 1, 1, coils)
    write_cfl(tmp_path / "noise", bart)
    np.testing.assert_allclose(read_noise(tmp_path / "noise.cfl", COILS),
                               noise_covariance(np.moveaxis(bart, 3, 0)), rtol=1e-6)


def test_bad_noise_files(tmp_path, rng):
    a = mixing(rng)
    np.save(tmp_path / "psi.npy", a @ a.conj().T)
    with pytest.raises(InputError, match="describes 4 coil.*k-space has 8.*same acquisition"):
        read_noise(tmp_path / "psi.npy", 8)
    with pytest.raises(FileFormatError, match="does not exist.*--noise"):
        read_noise(tmp_path / "missing.npy", 4)
    with pytest.raises(InputError, match="real"):
        read_noise(np.ones((4, 100)), 4)  # real samples: coil noise is complex
    with pytest.raises(InputError, match="positive definite"):
        read_noise(np.diag([1.0, 1.0, 0.0, 1.0]) + 0j, 4)  # a dead coil


def test_prewhitening_with_a_noise_scan_whitens_the_data(tmp_path, rng):
    """k-space of pure correlated noise (the outer k-space of a scan) whitened with a separate noise scan of the
    same coils has identity covariance; its per-coil noise level is the truth's."""
    a = mixing(rng)
    truth = a @ a.conj().T
    np.save(tmp_path / "k.npy", noise(rng, a, (96, 96)))
    np.save(tmp_path / "noise.npy", noise(rng, a, (20_000,)))
    plain = read_kspace(tmp_path / "k.npy", noise=tmp_path / "noise.npy")
    assert plain.metadata["noise_file"] == "noise.npy" and not plain.metadata["prewhitened"]
    np.testing.assert_allclose(plain.noise_sigma, np.sqrt(np.real(np.diag(truth))), rtol=0.03)
    white = read_kspace(tmp_path / "k.npy", noise=tmp_path / "noise.npy", prewhiten=True)
    assert white.metadata["prewhitened"]
    np.testing.assert_array_equal(white.noise_sigma, np.ones(COILS))
    np.testing.assert_allclose(noise_covariance(white.data), np.eye(COILS), atol=0.05)
    before = np.abs(noise_covariance(plain.data) - np.eye(COILS)).max()
    assert before > 1.0  # the raw coils were far from white


def test_prewhiten_without_noise_points_at_the_noise_option(tmp_path, rng, capsys):
    a = mixing(rng)
    np.save(tmp_path / "k.npy", noise(rng, a, (32, 32)) + 5)
    with pytest.raises(InputError, match=r"--noise FILE"):
        read_kspace(tmp_path / "k.npy", prewhiten=True)
    assert main(["kspace", str(tmp_path / "k.npy"), "--out", str(tmp_path / "a"), "--prewhiten"]) == 2
    assert "--noise FILE" in capsys.readouterr().err
    np.save(tmp_path / "psi.npy", a @ a.conj().T)
    assert main(["kspace", str(tmp_path / "k.npy"), "--out", str(tmp_path / "b"), "--prewhiten", "--noise",
                 str(tmp_path / "psi.npy"), "--detect-only"]) == 0
    sigma = ", ".join(f"{s:.3g}" for s in np.sqrt(np.real(np.diag(a @ a.conj().T))))
    assert f"noise level per coil (from psi.npy, data as stored): {sigma}; the coils were pre-whitened" in \
        capsys.readouterr().out


def test_twix_noise_scan_file(shared_data, tmp_path, rng):
    """A Siemens noise-only measurement (noise adjustment readouts, no imaging lines) as --noise for gre.dat."""
    import twixtools

    source = shared_data / "kspace" / "gre.dat"
    scans = twixtools.read_twix(str(source), verbose=False)
    blocks = scans[-1]["mdb"]
    template = next(b for b in blocks if b.is_image_scan())
    n_coils, n_samples = np.asarray(template.data).shape
    samples = noise(rng, mixing(rng, n_coils), (16 * n_samples,))
    readouts = noise_readouts(template, samples, 16)
    readouts[-1].set_flags(["NOISEADJSCAN", "LASTSCANINMEAS"])
    scans[-1]["mdb"] = readouts
    twixtools.write_twix(scans, str(tmp_path / "noise.dat"))
    with pytest.raises(InputError, match="no imaging lines"):
        read_kspace(tmp_path / "noise.dat")
    ks = read_kspace(source, noise=tmp_path / "noise.dat")
    np.testing.assert_allclose(ks.noise_covariance, noise_covariance(samples), rtol=1e-5, atol=1e-6)
