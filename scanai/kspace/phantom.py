"""A numeric multi-coil MRI phantom: a Shepp-Logan-type head, smooth coil sensitivities, Cartesian k-space.

Coordinates are normalised: y and x run over [-1, 1) across the field of view (pixel centres at
``(index - n // 2) / (n / 2)``), so the head fits inside the unit circle. With readout oversampling ``R`` the
x axis of the acquired grid runs over [-R, R): the same head in a field of view R times wider, as a scanner
acquires it before cropping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume
from scanai.kspace.data import KSpaceData
from scanai.kspace.recon import remove_readout_oversampling, to_kspace

# Modified Shepp-Logan head (higher-contrast variant): intensity, semi-axes (a along x, b along y),
# centre (x0, y0), rotation in degrees.
_ELLIPSES = (
    (1.00, 0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (-0.80, 0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (-0.20, 0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (-0.20, 0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.10, 0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.10, 0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.10, 0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.10, 0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.10, 0.0230, 0.0460, 0.06, -0.6050, 0.0),
)


def image_grid(ny: int, nx: int, x_extent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates ``(y, x)``, each of shape (ny, nx); x spans [-x_extent, x_extent)."""
    if ny < 2 or nx < 2:
        raise InputError(f"The phantom needs at least 2 x 2 pixels, got {ny} x {nx}.")
    y = (np.arange(ny) - ny // 2) / (ny / 2)
    x = (np.arange(nx) - nx // 2) / (nx / 2) * x_extent
    return np.meshgrid(y, x, indexing="ij")


def shepp_logan(ny: int, nx: int | None = None, x_extent: float = 1.0) -> np.ndarray:
    """Modified Shepp-Logan head, float64 (ny, nx), intensities in [0, 1] (background 0, skull 1, brain ~0.2)."""
    nx = ny if nx is None else nx
    y, x = image_grid(ny, nx, x_extent)
    y = -y  # rows run downwards, the head's y axis upwards: the three small ellipses end up at the bottom
    image = np.zeros((ny, nx))
    for intensity, a, b, x0, y0, degrees in _ELLIPSES:
        angle = np.deg2rad(degrees)
        u = (x - x0) * np.cos(angle) + (y - y0) * np.sin(angle)
        v = -(x - x0) * np.sin(angle) + (y - y0) * np.cos(angle)
        image[(u / a) ** 2 + (v / b) ** 2 <= 1.0] += intensity
    return np.clip(image, 0.0, None)


def coil_sensitivities(n_coils: int, ny: int, nx: int | None = None, x_extent: float = 1.0,
                       width: float = 0.9) -> np.ndarray:
    """Smooth receive sensitivities, complex64 (coils, ny, nx).

    Coil ``c`` sits at angle ``2 pi c / n_coils`` on a circle of radius 1.3 around the head; its magnitude is a
    Gaussian of standard deviation ``width`` (normalised units) centred on the coil, its phase a gentle linear
    ramp plus a constant offset per coil (as real coils have).
    """
    if n_coils < 1:
        raise InputError(f"The phantom needs at least one coil, got {n_coils}.")
    nx = ny if nx is None else nx
    y, x = image_grid(ny, nx, x_extent)
    maps = np.empty((n_coils, ny, nx), dtype=np.complex64)
    for coil in range(n_coils):
        angle = 2.0 * np.pi * coil / n_coils
        cx, cy = 1.3 * np.cos(angle), 1.3 * np.sin(angle)
        magnitude = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * width**2))
        phase = angle + 0.4 * (x * np.cos(angle) + y * np.sin(angle))
        maps[coil] = magnitude * np.exp(1j * phase)
    return maps


@dataclass(frozen=True)
class PhantomCase:
    """A generated acquisition with its ground truth.

    kspace:        the acquired k-space (coils, 1, ky, kx) with readout oversampling, noise included.
    image:         the head, float64 (ny, nx), on the final (cropped) grid.
    sensitivities: coil maps, complex64 (coils, ny, nx), on the final grid.
    coil_images:   noise-free coil images ``sensitivities * image``, complex64 (coils, ny, nx).
    """

    kspace: KSpaceData
    image: np.ndarray
    sensitivities: np.ndarray
    coil_images: np.ndarray


def make_phantom(size: int = 128, n_coils: int = 8, readout_oversampling: int = 2, noise_std: float = 0.0,
                 fov_mm: float = 240.0, seed: int = 0) -> PhantomCase:
    """Simulate a 2-D multi-coil Cartesian acquisition of the Shepp-Logan head.

    size:                 image matrix (size x size) after oversampling removal.
    readout_oversampling: the acquired readout has ``size * readout_oversampling`` samples.
    noise_std:            standard deviation of the complex Gaussian noise added to every k-space sample (real
                          and imaginary parts each), in image intensity units (the FFT is orthonormal, so the
                          image noise has the same standard deviation; the skull has intensity 1).
    fov_mm:               field of view, giving ``spacing_mm = (fov/size, fov/size, 1)``.
    """
    if size < 8 or readout_oversampling < 1 or noise_std < 0 or fov_mm <= 0:
        raise InputError(f"Phantom settings out of range: size {size} (>= 8), oversampling {readout_oversampling} "
                         f"(>= 1), noise {noise_std} (>= 0), field of view {fov_mm} mm (> 0).")
    nx_acquired = size * readout_oversampling
    head = shepp_logan(size, nx_acquired, x_extent=float(readout_oversampling))
    maps = coil_sensitivities(n_coils, size, nx_acquired, x_extent=float(readout_oversampling))
    coil_images_acquired = (maps * head).astype(np.complex64)
    kspace = _acquire(coil_images_acquired[:, np.newaxis], noise_std, seed)
    spacing = fov_mm / size
    data = KSpaceData(kspace, readout_oversampling=readout_oversampling,
                      spacing_mm=(spacing, spacing, 1.0), spacing_from_header=True, source="Shepp-Logan phantom",
                      metadata={"format": "phantom", "coils": n_coils, "noise_std": noise_std, "seed": seed})
    crop = remove_readout_oversampling
    return PhantomCase(kspace=data, image=crop(head, readout_oversampling),
                       sensitivities=crop(maps, readout_oversampling),
                       coil_images=crop(coil_images_acquired, readout_oversampling))


def _acquire(coil_images: np.ndarray, noise_std: float, seed: int) -> np.ndarray:
    """k-space (coils, slices, ky, kx) complex64 of coil images (coils, slices, ny, nx), plus complex noise."""
    kspace = to_kspace(coil_images.astype(np.complex64))
    if noise_std > 0:
        noise = np.random.default_rng(seed).normal(0.0, noise_std, size=kspace.shape + (2,)).astype(np.float32)
        kspace = kspace + (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64)
    return kspace


def kspace_from_volume(volume: Volume, n_coils: int = 8, noise_fraction: float = 0.002, seed: int = 0,
                       name: str = "volume") -> KSpaceData:
    """Multi-coil k-space simulated from an image volume, for demonstration (the patent allows k-space "by
    performing Fourier transformation on an MRI image", L380).

    volume: (slices, rows, cols) magnitude image; each slice becomes one (ky = rows, kx = cols) k-space plane,
    weighted by :func:`coil_sensitivities` (phase included). noise_fraction: complex noise standard deviation
    relative to the image maximum. The spacing is the volume's (column, row, slice) spacing in mm.
    """
    image = np.asarray(volume.array, dtype=np.float32)
    if not np.isfinite(image).all():
        raise InputError("The volume contains NaN or infinite values.", "Fix or mask them before simulating k-space.")
    if min(image.shape[1:]) < 8:
        raise InputError(f"Each slice must be at least 8 x 8 pixels to make k-space, got {image.shape[1:]}.")
    peak = float(np.abs(image).max()) or 1.0
    rows, cols = image.shape[1:]
    maps = coil_sensitivities(n_coils, rows, cols, x_extent=cols / rows if cols > rows else 1.0)
    coil_images = maps[:, np.newaxis] * (image / peak)[np.newaxis]
    kspace = _acquire(coil_images, noise_fraction, seed)
    return KSpaceData(kspace, readout_oversampling=1, spacing_mm=volume.geometry.spacing_mm,
                      spacing_from_header=True, source=f"simulated from {name}",
                      metadata={"format": "simulated", "coils": n_coils, "noise_fraction": noise_fraction,
                                "seed": seed, "intensity_scale": peak})
