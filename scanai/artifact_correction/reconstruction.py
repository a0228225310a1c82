"""The scan's side of the CT motion simulator: the parallel-beam :class:`ScanProtocol` and filtered back-projection
(a cached sparse back-projector matching scikit-image's ``iradon``), with its noise gain."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from scanai.core.errors import InputError

#: CT number of air (the value outside the body, added back after the filtered back-projection).
AIR_HU = -1000.0
#: Width (mm) of the field of view the mini thorax needs: pixels * pixel_mm must be at least this.
MIN_FIELD_OF_VIEW_MM = 128.0
#: Linear attenuation of water at about 70 keV (1/mm): line integrals in attenuation units for photon noise.
MU_WATER_PER_MM = 0.0192
#: FBP filters of :func:`skimage.transform.iradon`, sharpest first.
FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
#: Sinogram noise models of :class:`ScanProtocol`.
NOISE_MODELS = ("white", "photon")



@dataclass(frozen=True)
class ScanProtocol:
    """Acquisition and reconstruction: parallel beam, or a fan-beam half-scan rebinned to parallel rays.

    pixels / pixel_mm: the square reconstruction grid (pixels * pixel_mm >= 128 mm for the mini thorax).
    views: parallel projections per window, at angles ``pi k / views`` (a half-scan, digest ¶53: 240).
    rotation_s: gantry rotation time; a window lasts ``rotation_s * (180 deg + fan_deg) / 360 deg``.
    noise_hu: standard deviation of the image noise that the sinogram noise produces (0 = none).
    filter_name: FBP filter of :func:`skimage.transform.iradon`.
    fan_deg: fan angle (0 = parallel beam: every ray of a view at one time). With a fan, the parallel ray at angle
        ``theta`` and detector offset ``s`` was measured when the source stood at ``theta - asin(s / R)``, so each
        ray has its own time (``R = source_radius_mm``).
    noise_model: "white" (the same sinogram noise on every ray) or "photon" (variance growing as ``exp(p)`` with the
        ray's line integral ``p`` in attenuation units, as photon counting gives; ``noise_hu`` then holds for the
        median ray through the object).
    """

    pixels: int = 128
    pixel_mm: float = 1.0
    views: int = 240
    rotation_s: float = 0.3
    noise_hu: float = 15.0
    filter_name: str = "shepp-logan"
    fan_deg: float = 0.0
    source_radius_mm: float = 570.0
    noise_model: str = "white"

    def __post_init__(self) -> None:
        if self.pixels < 32 or self.views < 16 or self.pixel_mm <= 0 or self.rotation_s <= 0 or self.noise_hu < 0:
            raise InputError(
                f"Unusable scan protocol (pixels {self.pixels}, views {self.views}, pixel {self.pixel_mm} mm, "
                f"rotation {self.rotation_s} s, noise {self.noise_hu} HU).",
                "Use at least 32 pixels and 16 views, and a positive pixel size and rotation time.",
            )
        if self.pixels * self.pixel_mm < MIN_FIELD_OF_VIEW_MM - 1e-9:
            raise InputError(
                f"The field of view {self.pixels * self.pixel_mm:g} mm is smaller than the simulated thorax needs.",
                f"Use pixels * pixel_mm >= {MIN_FIELD_OF_VIEW_MM:g} mm (e.g. 128 pixels of 1 mm or 256 of 0.5 mm).",
            )
        if self.filter_name not in FILTERS:
            raise InputError(f"Unknown FBP filter {self.filter_name!r}.", f"Use one of {', '.join(FILTERS)}.")
        if not 0.0 <= self.fan_deg < 90.0 or self.source_radius_mm <= self.pixels * self.pixel_mm / 2.0:
            raise InputError(f"Unusable fan beam (fan {self.fan_deg} deg, source radius {self.source_radius_mm} mm).",
                             "Use a fan angle in [0, 90) degrees and a source outside the field of view.")
        if self.noise_model not in NOISE_MODELS:
            raise InputError(f"Unknown noise model {self.noise_model!r}.", f"Use one of {', '.join(NOISE_MODELS)}.")

    @property
    def half_scan_s(self) -> float:
        """Duration of one half-scan window, seconds: ``rotation_s * (180 + fan_deg) / 360``."""
        return self.rotation_s * (180.0 + self.fan_deg) / 360.0

    def view_angles_deg(self) -> np.ndarray:
        """(views,) projection angles in degrees, ``180 k / views``."""
        return np.arange(self.views) * (180.0 / self.views)


def _skimage_transform():
    try:
        from skimage import transform
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError(
            "The CT motion simulator needs scikit-image, which is not installed.",
            "Install it with `pip install scikit-image` (or the scanai[test] extra).",
        ) from error
    return transform


#: Largest backprojection matrix (non-zeros) kept in memory; larger grids use skimage's iradon loop.
_MAX_MATRIX_NONZEROS = 32_000_000


@lru_cache(maxsize=16)
def _fourier_filter(size: int, filter_name: str) -> np.ndarray:
    """(size,) FBP frequency response as in :func:`skimage.transform.iradon`: the ramp built from its sampled
    spatial kernel (Kak & Slaney ch. 3 eq. 61: h(0) = 1/4, h(odd n) = -1/(pi n)^2), then apodised."""
    n = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)])
    kernel = np.zeros(size)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * n) ** 2
    response = 2.0 * np.real(np.fft.fft(kernel))
    if filter_name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    elif filter_name == "cosine":
        response *= np.fft.fftshift(np.sin(np.linspace(0.0, np.pi, size, endpoint=False)))
    elif filter_name == "hamming":
        response *= np.fft.fftshift(np.hamming(size))
    elif filter_name == "hann":
        response *= np.fft.fftshift(np.hanning(size))
    return response


@dataclass(frozen=True)
class _Backprojector:
    """Filtered back-projection identical to ``skimage.transform.iradon(..., circle=True, interpolation='linear')``:
    the sinogram is zero-padded to the square's diagonal (``bins``, the detector centre kept at ``bins // 2``),
    filtered through an FFT of length ``fft_size``, then back-projected by a sparse (pixels^2, bins*views)
    linear-interpolation matrix (``None`` for large grids, which use iradon's loop)."""

    pixels: int
    views: int
    bins: int
    fft_size: int
    response: np.ndarray
    matrix: object | None


@lru_cache(maxsize=8)
def _backprojection_matrix(pixels: int, views: int) -> _Backprojector:
    bins = int(np.ceil(np.sqrt(2.0) * pixels))
    fft_size = max(64, int(2 ** np.ceil(np.log2(2 * bins))))
    response = np.empty(0)
    radius = pixels // 2
    rows, cols = np.mgrid[:pixels, :pixels] - radius
    inside = np.flatnonzero((rows**2 + cols**2 <= radius**2).ravel())
    if inside.size * views * 2 > _MAX_MATRIX_NONZEROS:
        return _Backprojector(pixels, views, bins, fft_size, response, None)
    import scipy.sparse

    theta = np.deg2rad(np.arange(views) * (180.0 / views))
    position = (cols.ravel()[inside][None, :] * np.cos(theta)[:, None]
                - rows.ravel()[inside][None, :] * np.sin(theta)[:, None]) + bins // 2  # (V, pixels inside)
    lower = np.floor(position).astype(np.int64)
    fraction = position - lower
    view = np.broadcast_to(np.arange(views)[:, None], lower.shape)
    pixel = np.broadcast_to(inside[None, :], lower.shape)
    columns = np.concatenate([(lower * views + view).ravel(), ((lower + 1) * views + view).ravel()])
    weights = np.concatenate([(1.0 - fraction).ravel(), fraction.ravel()]) * (np.pi / (2 * views))
    matrix = scipy.sparse.csr_matrix(
        (weights.astype(np.float32), (np.concatenate([pixel.ravel(), pixel.ravel()]), columns)),
        shape=(pixels * pixels, bins * views))
    return _Backprojector(pixels, views, bins, fft_size, response, matrix)


def _backprojector(pixels: int, views: int, filter_name: str) -> _Backprojector:
    """The cached back-projection of a (pixels, views) grid with the frequency response of ``filter_name``."""
    matrix = _backprojection_matrix(pixels, views)
    return replace(matrix, response=_fourier_filter(matrix.fft_size, filter_name))


def _fbp(sinograms: np.ndarray, protocol: ScanProtocol) -> np.ndarray:
    """FBP of attenuation sinograms (pixels, views) or (B, pixels, views) -> HU images (pixels, pixels) or
    (B, pixels, pixels); equal to :func:`skimage.transform.iradon` (shepp-logan etc., circle=True) to float32
    round-off, pixels outside the reconstruction circle set to air."""
    sinograms = np.asarray(sinograms, dtype=np.float64)
    single = sinograms.ndim == 2
    batch = sinograms[None] if single else sinograms
    n, views = protocol.pixels, protocol.views
    if batch.shape[1:] != (n, views):
        raise InputError(f"Sinogram shape {batch.shape[1:]} does not match the protocol ({n} bins, {views} views).")
    fbp = _backprojector(n, views, protocol.filter_name)
    if fbp.matrix is None:
        transform = _skimage_transform()
        images = np.stack([transform.iradon(s, theta=protocol.view_angles_deg(), output_size=n,
                                            filter_name=protocol.filter_name, circle=True) for s in batch])
    else:
        padded = np.zeros((batch.shape[0], fbp.fft_size, views))
        before = fbp.bins // 2 - n // 2
        padded[:, before:before + n] = batch
        spectrum = np.fft.fft(padded, axis=1) * fbp.response[:, None]
        filtered = np.real(np.fft.ifft(spectrum, axis=1))[:, : fbp.bins]  # (B, bins, V)
        flat = filtered.reshape(batch.shape[0], -1).T.astype(np.float32)
        images = (fbp.matrix @ flat).T.reshape(batch.shape[0], n, n).astype(np.float64)
    images = images + AIR_HU
    return images[0] if single else images


@lru_cache(maxsize=64)
def _noise_gain(pixels: int, views: int, filter_name: str) -> float:
    """Image noise std (central disk) that unit-variance white sinogram noise gives after FBP (measured once)."""
    protocol = ScanProtocol(pixels=pixels, pixel_mm=MIN_FIELD_OF_VIEW_MM / pixels, views=views,
                            filter_name=filter_name)
    rng = np.random.default_rng(12345)
    axis = np.arange(pixels) - pixels // 2
    disk = axis[:, None] ** 2 + axis[None, :] ** 2 <= (pixels / 3.0) ** 2
    variances = [np.var(_fbp(rng.standard_normal((pixels, views)), protocol)[disk]) for _ in range(3)]
    return float(np.sqrt(np.mean(variances)))


def _check_protocol(protocol: ScanProtocol) -> None:
    if not isinstance(protocol, ScanProtocol):
        raise InputError(f"Expected a ScanProtocol, got {type(protocol).__name__}.")
