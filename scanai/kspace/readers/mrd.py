"""ISMRMRD / MRD raw data in HDF5, read with h5py (no dependency on the ``ismrmrd`` package).

Layout: a group (``/dataset`` by default) holding ``xml`` (the ISMRMRD XML header) and ``data``, a table of
acquisitions with the compound fields ``head`` (the 340-byte AcquisitionHeader: ``flags``, ``number_of_samples``,
``active_channels``, ``center_sample``, ``sample_time_us``, ``position``, ``idx.kspace_encode_step_1/2``,
``idx.slice``, ``idx.contrast``, ``idx.repetition``, ...), ``traj`` and ``data`` (float32, interleaved real and
imaginary parts, channel-major: ``2 * channels * samples`` numbers). Flags are numbered from 1: flag N is bit
N - 1 of ``head.flags``.

Noise acquisitions (flag 19) are kept for pre-whitening; calibration-only (20), navigator (23), phase-correction
(24), feedback (26, 28), dummy (27), surface-coil correction (29) and phase-stabilisation (30, 31) readouts are
skipped; reversed readouts (22, EPI) are flipped back when allowed. Only encoding space 0 is read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.progress import Progress
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.readers.lines import (
    Grid,
    LineTable,
    assemble_lines,
    assembly_facts,
    centred_axis,
    check_centre_acquired,
    check_counters,
    compact,
    split_frames,
)

FLAG_NOISE = 19
FLAG_CALIBRATION = 20
FLAG_CALIBRATION_AND_IMAGING = 21
FLAG_REVERSE = 22
SKIPPED_FLAGS = {20: "calibration", 23: "navigation", 24: "phase correction", 26: "HP feedback", 27: "dummy scan",
                 28: "RT feedback", 29: "surface coil correction", 30: "phase stabilisation reference",
                 31: "phase stabilisation"}
_CARTESIAN = ("cartesian", "epi")
_AGAIN = "Export the raw data again (e.g. with siemens_to_ismrmrd), or check that the file was copied completely."


@dataclass(frozen=True)
class MrdHeader:
    """The parts of an ISMRMRD XML header that a Cartesian reconstruction needs (first encoding only).

    encoded_matrix / recon_matrix: (x, y, z) sizes; x = readout, y = phase encoding 1, z = phase encoding 2 (or 1
    for 2-D). encoded_fov_mm / recon_fov_mm: field of view (x, y, z) in mm (z: slice thickness for 2-D). Any of
    them is None when the header lacks it. limits: encodingLimits by name (``kspace_encoding_step_1``, ``slice``,
    ...) -> (minimum, maximum, center), each None when absent.
    """

    encoded_matrix: tuple[int, int, int] | None = None
    encoded_fov_mm: tuple[float, float, float] | None = None
    recon_matrix: tuple[int, int, int] | None = None
    recon_fov_mm: tuple[float, float, float] | None = None
    trajectory: str = "cartesian"
    limits: dict[str, tuple[int | None, int | None, int | None]] = field(default_factory=dict)
    receiver_channels: int | None = None
    protocol: str = ""

    def centre(self, name: str) -> int | None:
        """The encodingLimits centre of counter ``name`` (e.g. ``kspace_encoding_step_1``), or None."""
        return self.limits.get(name, (None, None, None))[2]

    def readout_oversampling(self, n_kx: int) -> int:
        """encoded x / recon x when it is a whole number that divides ``n_kx``; else 1."""
        if not self.encoded_matrix or not self.recon_matrix or self.recon_matrix[0] <= 0:
            return 1
        encoded, recon = self.encoded_matrix[0], self.recon_matrix[0]
        factor = encoded // recon
        return factor if factor >= 1 and factor * recon == encoded and n_kx % factor == 0 else 1


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element | None, *names: str) -> ElementTree.Element | None:
    """The first descendant along ``names`` (namespace-free local names), or None."""
    for name in names:
        if element is None:
            return None
        element = next((c for c in element if _local(c.tag) == name), None)
    return element


def _number(element: ElementTree.Element | None, kind: type = int) -> Any:
    try:
        return kind(element.text.strip()) if element is not None and element.text else None
    except ValueError:
        return None


def _triple(element: ElementTree.Element | None, kind: type) -> Any:
    values = [_number(_child(element, axis), kind) for axis in ("x", "y", "z")]
    return tuple(values) if all(v is not None and v > 0 for v in values) else None


def parse_mrd_header(xml: str | bytes, source: str = "the file") -> MrdHeader:
    """Parse an ISMRMRD XML header (text or bytes). Raises :class:`FileFormatError` for malformed XML."""
    try:
        root = ElementTree.fromstring(xml.encode() if isinstance(xml, str) else bytes(xml))
    except ElementTree.ParseError as error:
        raise FileFormatError(f"The ISMRMRD XML header of {source} is malformed ({error}).", _AGAIN) from error
    encoding = _child(root, "encoding")
    limits: dict[str, tuple[int | None, int | None, int | None]] = {}
    for counter in list(_child(encoding, "encodingLimits") or []):
        limits[_local(counter.tag)] = tuple(_number(_child(counter, part)) for part in  # type: ignore[assignment]
                                            ("minimum", "maximum", "center"))
    trajectory = _child(encoding, "trajectory")
    protocol = _child(root, "measurementInformation", "protocolName")
    return MrdHeader(
        encoded_matrix=_triple(_child(encoding, "encodedSpace", "matrixSize"), int),
        encoded_fov_mm=_triple(_child(encoding, "encodedSpace", "fieldOfView_mm"), float),
        recon_matrix=_triple(_child(encoding, "reconSpace", "matrixSize"), int),
        recon_fov_mm=_triple(_child(encoding, "reconSpace", "fieldOfView_mm"), float),
        trajectory=(trajectory.text or "cartesian").strip().lower() if trajectory is not None else "cartesian",
        limits=limits,
        receiver_channels=_number(_child(root, "acquisitionSystemInformation", "receiverChannels")),
        protocol=(protocol.text or "").strip() if protocol is not None else "",
    )


def read_text(value: Any) -> str | bytes:
    """An XML header stored as an HDF5 string dataset or attribute (bytes, str, or a 1-element array of them)."""
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    return value if isinstance(value, (str, bytes)) else str(value)


def header_spacing(header: MrdHeader | None, grid: tuple[int, int, int], slice_gap_mm: float | None
                   ) -> tuple[tuple[float, float, float], bool]:
    """(spacing_mm in (readout, phase, slice) order, from_header) for a (n_kx, n_ky, n_kz_or_1) grid.

    The k-space step is 1 / encoded FOV, so a pixel is the encoded FOV divided by the grid size along each axis
    (unchanged by readout-oversampling removal). For 2-D slices the slice spacing is ``slice_gap_mm`` when known
    (distance between slice positions), else the encoded FOV z (the slice thickness).
    """
    if header is None or header.encoded_fov_mm is None:
        return (1.0, 1.0, float(slice_gap_mm) if slice_gap_mm else 1.0), False
    fov_x, fov_y, fov_z = header.encoded_fov_mm
    n_kx, n_ky, n_kz = grid
    slice_mm = fov_z / n_kz if n_kz > 1 else (slice_gap_mm or fov_z)
    return (fov_x / n_kx, fov_y / n_ky, float(slice_mm)), True


def _read_table(group: Any, source: str) -> np.ndarray:
    if "data" not in group:
        raise InputError(f"{source} holds an ISMRMRD header but no acquisitions: nothing was acquired.",
                         "Export the raw data of the whole measurement.")
    try:
        table = group["data"][()]
    except Exception as error:  # h5py raises OSError, TypeError, ... on damaged tables
        raise FileFormatError(f"The acquisitions of {source} could not be read: the file is damaged or truncated.",
                              _AGAIN) from error
    names = table.dtype.names or ()
    if not {"head", "data"} <= set(names) or "flags" not in (table.dtype["head"].names or ()):
        raise FileFormatError(f"{source} has an ISMRMRD group whose 'data' table is not a list of acquisitions "
                              f"(fields: {', '.join(names) or 'none'}).", _AGAIN)
    if table.size == 0:
        raise InputError(f"{source} holds no acquisitions: nothing was acquired.",
                         "Export the raw data of the whole measurement.")
    return table.ravel()


def _flag(flags: np.ndarray, number: int) -> np.ndarray:
    """Boolean per acquisition: ISMRMRD flag ``number`` (1-based) is set."""
    return ((flags >> np.uint64(number - 1)) & np.uint64(1)).astype(bool)


def _samples(row: Any, channels: int, samples: int, source: str, what: str) -> np.ndarray:
    """complex64 (channels, samples) from an acquisition's interleaved float32 data."""
    values = np.asarray(row, dtype=np.float32)
    if values.size != 2 * channels * samples:
        raise FileFormatError(f"{source} is damaged: {what} holds {values.size} numbers instead of 2 x {channels} "
                              f"channels x {samples} samples.", _AGAIN)
    return values.view(np.complex64).reshape(channels, samples)


def _noise_covariance(table: np.ndarray, noise: np.ndarray, n_coils: int, imaging_dwell: float, source: str
                      ) -> tuple[np.ndarray | None, dict[str, Any]]:
    from scanai.kspace.recon import noise_covariance

    head = table["head"]
    rows = np.flatnonzero(noise & (head["active_channels"] == n_coils) & (head["number_of_samples"] > 0))
    facts: dict[str, Any] = {"noise_scans": int(np.count_nonzero(noise))}
    if len(rows) < facts["noise_scans"]:
        facts["noise_note"] = f"{facts['noise_scans'] - len(rows)} noise acquisition(s) with another coil count ignored"
    if not len(rows):
        return None, facts
    readouts = [_samples(table["data"][i], n_coils, int(head["number_of_samples"][i]), source,
                         f"noise acquisition {i}") for i in rows]
    samples = np.concatenate(readouts, axis=1)
    noise_dwell = float(head["sample_time_us"][rows[0]])
    ratio = noise_dwell / imaging_dwell if noise_dwell > 0 and imaging_dwell > 0 else 1.0
    facts.update({"noise_samples": int(samples.shape[1]), "noise_dwell_ratio": ratio})
    return noise_covariance(samples, dwell_ratio=ratio), facts


def _slice_gap_mm(head: np.ndarray, slice_index: np.ndarray) -> float | None:
    """Distance (mm) between the positions of the first two slices, from the acquisition headers."""
    if slice_index.max() < 1 or "position" not in (head.dtype.names or ()):
        return None
    first, second = np.flatnonzero(slice_index == 0)[0], np.flatnonzero(slice_index == 1)[0]
    distance = float(np.linalg.norm(np.asarray(head["position"][second], float) - head["position"][first]))
    return distance if np.isfinite(distance) and distance > 0 else None


def read_mrd(group: Any, xml: str | bytes | None, path: Path, allow_epi: bool, progress: Progress) -> KSpaceData:
    """Read the ISMRMRD acquisitions of ``group`` (an open h5py group) into a :class:`KSpaceData`."""
    source = path.name
    header = parse_mrd_header(xml, source) if xml else None
    if header is not None and header.trajectory not in _CARTESIAN:
        raise InputError(f"{source} holds a non-Cartesian ({header.trajectory}) acquisition, which needs gridding "
                         "that ScanAI does not do.", "Use Cartesian raw data.")
    table = _read_table(group, source)
    head = table["head"]
    flags = head["flags"].astype(np.uint64)
    noise = _flag(flags, FLAG_NOISE)
    skipped = {name: _flag(flags, number) for number, name in SKIPPED_FLAGS.items()}
    skipped["calibration"] &= ~_flag(flags, FLAG_CALIBRATION_AND_IMAGING)
    skip = np.logical_or.reduce(list(skipped.values()))
    channels, n_samples_all = head["active_channels"].astype(int), head["number_of_samples"].astype(int)
    other_space = head["encoding_space_ref"] != 0
    imaging = ~noise & ~skip & ~other_space & (channels > 0) & (n_samples_all > 0)
    if not imaging.any():
        raise InputError(f"{source} holds no imaging acquisitions ({int(noise.sum())} noise, {int(skip.sum())} "
                         f"calibration/navigator/other of {len(table)}): there is no image to reconstruct.",
                         "Export the raw data of the imaging scan itself.")
    sizes = Counter(zip(channels[imaging].tolist(), n_samples_all[imaging].tolist(), strict=True))
    if len(sizes) > 1:
        raise InputError(f"The imaging acquisitions of {source} have inconsistent dimensions (channels, samples): "
                         f"{dict(sizes)}; this is not a Cartesian scan that ScanAI can assemble.",
                         "Use Cartesian raw data whose readouts all have the same length and coil count.")
    (n_coils, n_samples), = sizes
    reversed_ = _flag(flags, FLAG_REVERSE)
    is_epi = bool((reversed_ & imaging).any()) or (header is not None and header.trajectory == "epi")
    if is_epi and not allow_epi:
        raise InputError(f"{source} holds an echo-planar (EPI) scan: its lines alternate direction, which needs "
                         "ghost (phase) correction that ScanAI does not do.",
                         "Use Cartesian (GRE, SE, TSE) raw data, or read it with allow_epi=True to get the "
                         "uncorrected k-space.")

    idx = head["idx"]
    keep = imaging.copy()
    dropped: dict[str, int] = {}
    for name in ("phase", "set"):
        values = idx[name][imaging]
        if len(np.unique(values)) > 1:
            dropped[name] = len(np.unique(values)) - 1
            keep &= idx[name] == values.min()
    rows = np.flatnonzero(keep)
    step1, step2 = idx["kspace_encode_step_1"][rows].astype(np.int64), idx["kspace_encode_step_2"][rows].astype(
        np.int64)
    slice_counter = idx["slice"][rows].astype(np.int64)
    matrix = header.encoded_matrix if header is not None else None
    slices_are_kz = len(np.unique(step2)) > 1 or bool(matrix and matrix[2] > 1)
    if slices_are_kz and len(np.unique(slice_counter)) > 1:
        raise InputError(f"{source} is a multi-slab 3-D scan ({len(np.unique(slice_counter))} slabs), which ScanAI "
                         "does not assemble.", "Use a single-slab 3-D or a 2-D multi-slice acquisition.")
    centre = header.centre if header is not None else (lambda name: None)
    n_ky, ky_shift = centred_axis(step1, centre("kspace_encoding_step_1"), matrix[1] if matrix else None)
    if slices_are_kz:
        n_sl, kz_shift = centred_axis(step2, centre("kspace_encoding_step_2"), matrix[2] if matrix else None)
        slice_index = step2 + kz_shift
    else:
        slice_index, n_sl = compact(slice_counter)
    centre_sample = int(head["center_sample"][rows[0]])
    n_kx, kx_offset = centred_axis(np.array([0, n_samples - 1]),
                                   centre_sample if 0 < centre_sample < n_samples else None,
                                   matrix[0] if matrix else None)
    contrast, n_contrasts = compact(idx["contrast"][rows])
    repetition, n_repetitions = compact(idx["repetition"][rows])
    lines = LineTable(ky=step1 + ky_shift, slice=slice_index, contrast=contrast, repetition=repetition)
    kz_counters = (step2, centre("kspace_encoding_step_2")) if slices_are_kz else None
    check_counters((step1, centre("kspace_encoding_step_1")), kz_counters, lines, source)

    def read_line(i: int) -> np.ndarray:
        row = rows[i]
        samples = _samples(table["data"][row], n_coils, n_samples, source, f"acquisition {row}")
        return samples[:, ::-1] if reversed_[row] else samples

    frames, count = assemble_lines(read_line, lines, n_coils, Grid(n_sl, n_ky, n_kx, kx_offset),
                                   progress.sub(0.0, 0.95))
    check_centre_acquired(count, slices_are_kz, source)
    data, frames = split_frames(frames)
    imaging_dwell = float(head["sample_time_us"][rows[0]])
    covariance, noise_facts = _noise_covariance(table, noise, n_coils, imaging_dwell, source)
    progress(1.0, "Reading k-space: done")

    oversampling = header.readout_oversampling(n_kx) if header is not None else 1
    gap = None if slices_are_kz else _slice_gap_mm(head[rows], slice_index)
    spacing, from_header = header_spacing(header, (n_kx, n_ky, n_sl if slices_are_kz else 1), gap)
    metadata: dict[str, Any] = {
        "format": "ismrmrd",
        "path": str(path),
        "group": group.name,
        "axes": ["coil", "kz" if slices_are_kz else "slice", "ky", "kx"],
        "protocol": header.protocol if header is not None else "",
        "header": header is not None,
        "acquisitions": int(len(table)),
        "imaging_lines": int(len(rows)),
        "skipped": {name: int(np.count_nonzero(mask)) for name, mask in skipped.items() if mask.any()},
        "other_encoding_spaces": int(np.count_nonzero(other_space)),
        **assembly_facts(count, kx_offset, n_kx, n_samples, n_repetitions, n_contrasts, dropped),
        "spacing_note": "spacing from the header's encoded field of view" if from_header else
                        "the header has no field of view: 1 mm pixels assumed",
        "prewhitened": False,
        **noise_facts,
    }
    if is_epi:
        metadata["epi_uncorrected"] = True
        metadata["reflected_lines"] = int(np.count_nonzero(reversed_[rows]))
    data = as_kspace_array(data, f"The k-space in {source}")
    return KSpaceData(data, readout_oversampling=oversampling, spacing_mm=spacing, spacing_from_header=from_header,
                      slices_are_kz=slices_are_kz, source=source, metadata=metadata, frames=frames,
                      noise_covariance=covariance)
