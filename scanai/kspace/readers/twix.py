"""Siemens raw data ("twix", VB and VD/VE ``.dat``) read with ``twixtools``.

The last measurement of a multi-raid file is the imaging scan; noise adjustment readouts (``NOISEADJSCAN``, usually
in an earlier measurement of the same file) are kept for pre-whitening. Lines are placed by their counters
(``cLin``, ``cSlc``/``cPar``), echoes (``cEco``) become contrasts and ``cRep`` repetitions; only the first set
(``cSet``) and cardiac phase (``cPhs``) are kept.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.progress import Progress
from scanai.kspace.data import SUPPORTED_FORMATS, KSpaceData, as_kspace_array
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

_AGAIN = "Copy the .dat file again from the scanner."
_CUT = "so it was probably cut off while copying"
#: A VD/VE file opens with a multi-raid header: header size < 10000, measurement count <= 64, then per measurement
#: its id, file id and the measurement's byte offset (u64 at byte 16 for the first).
_RAID_LIMIT = 64
#: A measurement opens with its header length, its buffer count and the first buffer's name (e.g. "Config"), NUL-ended.
_BUFFER_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]{3,63}\x00")


def _looks_like_text(head: bytes) -> str | None:
    """The first printable words of ``head`` when it is plain text (ASCII / UTF-8 without control bytes), else None."""
    try:
        text = head[:200].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return None
    words = " ".join(text.split())[:40]
    return words or None


def _measurement_start(path: Path, head: bytes, size: int) -> int:
    """Byte offset of the first measurement: 0 for VB files, the multi-raid header's first entry for VD/VE files.
    FileFormatError when a VD/VE header points beyond the end of the file (cut off)."""
    first, count = struct.unpack("<II", head[:8])
    if not (first < 10000 and 0 < count <= _RAID_LIMIT):
        return 0
    offset = struct.unpack_from("<Q", head, 8 + 8)[0] if len(head) >= 24 else size
    if offset + 8 > size:
        raise FileFormatError(f"{path.name} is incomplete: its Siemens raw-data header puts the first measurement at "
                              f"byte {offset}, but the file holds only {size} bytes, {_CUT}.", _AGAIN)
    return int(offset)


def _not_twix(path: Path, seen: str) -> FileFormatError:
    return FileFormatError(f"{path.name} is not a Siemens raw-data (twix) file: {seen}.",
                           f"Choose one of the files ScanAI reads: {SUPPORTED_FORMATS}.")


def check_twix_header(path: Path) -> None:
    """FileFormatError unless ``path`` opens like a Siemens raw-data file (VB: a measurement header at byte 0;
    VD/VE: a multi-raid header pointing at one), saying what was seen instead (text, other bytes, a cut file)."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(1 << 12)
        if len(head) < 8:
            raise _not_twix(path, f"it holds only {size} bytes")
        start = _measurement_start(path, head, size)
        stream.seek(start)
        measurement = stream.read(72)
    text = _looks_like_text(head)
    if text is not None:
        raise _not_twix(path, f"it is a text file (it starts '{text}') instead of binary raw data")
    header_length, buffers = struct.unpack("<II", measurement[:8]) if len(measurement) >= 8 else (0, 0)
    if not (0 < buffers <= _RAID_LIMIT and _BUFFER_NAME.match(measurement[8:])):
        raise _not_twix(path, "its first bytes are not a twix measurement header (header length, buffer count and "
                              "a buffer name such as 'Config')")
    if start + header_length > size:
        raise FileFormatError(f"{path.name} is incomplete: it ends inside the header of its measurement "
                              f"({size - start} of {header_length} bytes), {_CUT}.", _AGAIN)


def _load_twix_scans(path: Path) -> tuple[list[dict], list[str]]:
    """twixtools' scan list, with whatever it printed kept as warnings instead of cluttering the console."""
    import twixtools

    check_twix_header(path)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            scans = twixtools.read_twix(str(path), verbose=False, parse_pmu=False, parse_geometry=False)
    except Exception as error:  # twixtools raises ValueError, KeyError, IndexError, ... on damaged files
        raise FileFormatError(f"{path.name} could not be read as Siemens raw data (twix): it may be corrupt, "
                              "truncated or not a raw-data file.",
                              "Copy the .dat file again from the scanner (twix / raw-data export).") from error
    warnings = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    if not scans:
        raise FileFormatError(f"{path.name} holds no measurement.", _AGAIN)
    return scans, warnings


def header_value(header: dict, *keys: Any, default: Any = None) -> Any:
    """``header[k0][k1]...`` or ``default`` when any level is missing."""
    value: Any = header
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return default
    return value


def _is_ramp_sampled(header: dict) -> bool:
    for section in ("Meas", "Protocol"):
        mode = header_value(header, section, "alRegridMode")
        if isinstance(mode, (list, tuple)) and mode and isinstance(mode[0], (int, float)):
            return mode[0] > 1  # 1 = no regridding, 2 = trapezoidal ramp sampling, ...
    return False


def _readout_oversampling(header: dict, samples: int) -> int:
    factor = header_value(header, "Dicom", "flReadoutOSFactor")
    if isinstance(factor, (int, float)) and factor >= 1 and abs(factor - round(factor)) < 1e-6:
        factor = int(round(factor))
        if samples % factor == 0:
            return factor
    base = header_value(header, "MeasYaps", "sKSpace", "lBaseResolution")
    if isinstance(base, int) and base > 0 and samples == 2 * base:
        return 2
    return 1


def _dwell_time_ns(header: dict) -> float | None:
    dwell = header_value(header, "MeasYaps", "sRXSPEC", "alDwellTime", 0)
    return float(dwell) if isinstance(dwell, (int, float)) and dwell > 0 else None


def _twix_spacing(header: dict, image_shape: tuple[int, int, int], slices_are_kz: bool
                  ) -> tuple[tuple[float, float, float], bool, str]:
    """(spacing_mm, from_header, note): spacing from FOV / matrix when the header describes this data."""
    n_slices, ny, nx = image_shape
    first = header_value(header, "MeasYaps", "sSliceArray", "asSlice", 0, default={})
    base = header_value(header, "MeasYaps", "sKSpace", "lBaseResolution")
    lines = header_value(header, "MeasYaps", "sKSpace", "lPhaseEncodingLines")
    fov_ro, fov_pe = first.get("dReadoutFOV"), first.get("dPhaseFOV")
    thickness = first.get("dThickness")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (fov_ro, fov_pe, thickness, base, lines)):
        return (1.0, 1.0, 1.0), False, "the header has no field of view or matrix: 1 mm pixels assumed"
    if nx != base or ny != lines:
        return (1.0, 1.0, 1.0), False, (
            f"the header's matrix ({base} x {lines}) does not match the data ({nx} x {ny}), e.g. a Pulseq or "
            "custom sequence: 1 mm pixels assumed")
    slice_mm = float(thickness)
    if slices_are_kz:
        slice_mm = float(thickness) / n_slices
    elif n_slices > 1:
        second = header_value(header, "MeasYaps", "sSliceArray", "asSlice", 1, default={})
        positions = [np.array([header_value(s, "sPosition", axis, default=0.0) for axis in ("dSag", "dCor", "dTra")],
                              dtype=float) for s in (first, second)]
        distance = float(np.linalg.norm(positions[1] - positions[0]))
        slice_mm = distance if distance > 0 else slice_mm
    return (float(fov_ro) / nx, float(fov_pe) / ny, slice_mm), True, "spacing from the header's FOV and matrix"


def _twix_noise(path: Path, scans: list[dict], n_coils: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Noise covariance from the file's noise adjustment readouts (any measurement), and what was found."""
    from scanai.kspace.recon import noise_covariance

    blocks, dwell_noise = [], None
    for scan in scans:
        found = [b for b in scan.get("mdb") or [] if b.is_flag_set("NOISEADJSCAN") and b.mdh.SamplesInScan > 0]
        if found and dwell_noise is None and scan is not scans[-1]:
            dwell_noise = _dwell_time_ns(scan.get("hdr") or {})
        blocks += found
    facts: dict[str, Any] = {"noise_scans": len(blocks)}
    if not blocks:
        return None, facts
    try:
        readouts = [np.asarray(b.data, dtype=np.complex64) for b in blocks]
    except Exception as error:
        raise FileFormatError(f"{path.name} is incomplete: a noise adjustment readout could not be read.",
                              _AGAIN) from error
    readouts = [r for r in readouts if r.ndim == 2 and r.shape[0] == n_coils]
    if len(readouts) < len(blocks):
        facts["noise_note"] = f"{len(blocks) - len(readouts)} noise readout(s) with another coil count were ignored"
    if not readouts:
        return None, facts
    noise = np.concatenate(readouts, axis=1)
    dwell_image = _dwell_time_ns(scans[-1].get("hdr") or {})
    ratio = dwell_noise / dwell_image if dwell_noise and dwell_image else 1.0
    facts.update({"noise_samples": int(noise.shape[1]), "noise_dwell_ratio": float(ratio)})
    return noise_covariance(noise, dwell_ratio=ratio), facts


def read_twix_noise(path: Path, n_coils: int) -> np.ndarray | None:
    """Noise covariance (n_coils, n_coils) from the noise adjustment readouts of a twix file (which may hold no
    imaging lines: a noise-only measurement), or None when it has none with ``n_coils`` coils."""
    scans, _ = _load_twix_scans(path)
    return _twix_noise(path, scans, n_coils)[0]


def read_twix(path: Path, allow_epi: bool, progress: Progress) -> KSpaceData:
    """Read a Siemens twix file (see the module docstring) into a :class:`KSpaceData`."""
    scans, warnings = _load_twix_scans(path)
    scan = scans[-1]  # the last measurement of a multi-raid file is the imaging scan (earlier ones: adjustments)
    header = scan.get("hdr") or {}
    blocks = scan.get("mdb") or []
    if not any(block.is_flag_set("LASTSCANINMEAS") for block in blocks):
        raise FileFormatError(f"{path.name} is incomplete: the scanner's end-of-measurement marker is missing, so "
                              "the file was probably truncated during copying or the scan was aborted.", _AGAIN)
    lines = [block for block in blocks if block.is_image_scan() and block.mdh.UsedChannels > 0
             and block.mdh.SamplesInScan > 0]
    if not lines:
        raise InputError(f"{path.name} holds no imaging lines (only noise, reference or navigator scans).",
                         "Export the raw data of the imaging scan itself.")
    sizes = Counter((int(b.mdh.UsedChannels), int(b.mdh.SamplesInScan)) for b in lines)
    if len(sizes) > 1:
        raise InputError(f"The imaging lines of {path.name} differ in coils or length ({dict(sizes)}): this is not "
                         "a Cartesian scan that ScanAI can assemble.", "Use a Cartesian (GRE, SE, TSE) raw-data file.")
    (n_coils, n_samples), = sizes
    reflected = np.array([b.is_flag_set("REFLECT") for b in lines], dtype=bool)
    is_epi = bool(reflected.any()) or _is_ramp_sampled(header)
    if is_epi and not allow_epi:
        raise InputError(f"{path.name} holds an echo-planar (EPI) scan: its lines alternate direction and are "
                         "sampled on the gradient ramps, which needs ramp-sampling regridding and ghost (phase) "
                         "correction that ScanAI does not do.",
                         "Use a Cartesian (GRE, SE, TSE) raw-data file, or read it with allow_epi=True to get the "
                         "uncorrected k-space.")

    counters = {name: np.array([getattr(b, name) for b in lines], dtype=np.int64)
                for name in ("cLin", "cPar", "cSlc", "cEco", "cRep", "cSet", "cPhs", "cAve")}
    n_par, n_slc = len(np.unique(counters["cPar"])), len(np.unique(counters["cSlc"]))
    if n_par > 1 and n_slc > 1:
        raise InputError(f"{path.name} is a multi-slab 3-D scan ({n_slc} slabs x {n_par} partitions), which ScanAI "
                         "does not assemble.", "Use a single-slab 3-D or a 2-D multi-slice raw-data file.")
    keep = np.ones(len(lines), dtype=bool)
    dropped: dict[str, int] = {}
    for name in ("cSet", "cPhs"):
        values = counters[name]
        if len(np.unique(values)) > 1:
            dropped[name] = len(np.unique(values)) - 1
            keep &= values == values.min()
    selected = np.flatnonzero(keep)
    slices_are_kz = n_par > 1
    mdh = lines[0].mdh
    # A zero centre counter means "not set" (e.g. Pulseq): the counters are then taken as grid positions.
    n_ky, ky_shift = centred_axis(counters["cLin"][selected], int(mdh.CenterLin) or None)
    if slices_are_kz:
        n_sl, sl_shift = centred_axis(counters["cPar"][selected], int(mdh.CenterPar) or None)
        slice_index = counters["cPar"][selected] + sl_shift
    else:
        slice_index, n_sl = compact(counters["cSlc"][selected])
    centre_col = int(mdh.CenterCol)
    n_kx, kx_offset = centred_axis(np.array([0, n_samples - 1]), centre_col if 0 < centre_col < n_samples else None)
    contrast, n_contrasts = compact(counters["cEco"][selected])
    repetition, n_repetitions = compact(counters["cRep"][selected])
    table = LineTable(ky=counters["cLin"][selected] + ky_shift, slice=slice_index, contrast=contrast,
                      repetition=repetition)
    kz_counters = (counters["cPar"][selected], int(mdh.CenterPar) or None) if slices_are_kz else None
    check_counters((counters["cLin"][selected], int(mdh.CenterLin) or None), kz_counters, table, path.name)

    def read_line(i: int) -> np.ndarray:
        block = lines[selected[i]]
        try:
            samples = np.asarray(block.data)
        except Exception as error:
            raise FileFormatError(f"{path.name} is incomplete: line {i + 1} of the scan could not be read, so "
                                  "the file was probably truncated.", _AGAIN) from error
        if samples.shape != (n_coils, n_samples):
            raise FileFormatError(f"{path.name} is damaged: a line holds {samples.shape} samples instead of "
                                  f"{(n_coils, n_samples)}.", _AGAIN)
        return samples[:, ::-1] if reflected[selected[i]] else samples

    frames, count = assemble_lines(read_line, table, n_coils, Grid(n_sl, n_ky, n_kx, kx_offset),
                                   progress.sub(0.0, 0.95))
    check_centre_acquired(count, slices_are_kz, path.name)
    data, frames = split_frames(frames)
    covariance, noise_facts = _twix_noise(path, scans, n_coils)
    progress(1.0, "Reading k-space: done")

    oversampling = _readout_oversampling(header, n_kx)
    image_shape = (n_sl, n_ky, n_kx // oversampling)
    spacing, from_header, spacing_note = _twix_spacing(header, image_shape, slices_are_kz)
    sequence = str(header_value(header, "MeasYaps", "tSequenceFileName", default=""))
    if from_header and "pulseq" in sequence.lower():
        spacing_note += " (Pulseq: the header is the interpreter's protocol; check it against the .seq file's FOV)"
    metadata: dict[str, Any] = {
        "format": "siemens-twix",
        "path": str(path),
        "axes": ["coil", "kz" if slices_are_kz else "slice", "ky", "kx"],
        "measurement": len(scans),
        "protocol": header_value(header, "MeasYaps", "tProtocolName", default=""),
        "sequence": sequence,
        "imaging_lines": int(len(selected)),
        "other_blocks": int(len(blocks) - len(lines)),
        **assembly_facts(count, kx_offset, n_kx, n_samples, n_repetitions, n_contrasts, dropped),
        "spacing_note": spacing_note,
        "prewhitened": False,
        **noise_facts,
        "twixtools_messages": warnings,
    }
    if is_epi:
        metadata["epi_uncorrected"] = True
        metadata["reflected_lines"] = int(np.count_nonzero(reflected[selected][
            (repetition == 0) & (contrast == 0)]))
    data = as_kspace_array(data, f"The k-space in {path.name}")
    return KSpaceData(data, readout_oversampling=oversampling, spacing_mm=spacing, spacing_from_header=from_header,
                      slices_are_kz=slices_are_kz, source=path.name, metadata=metadata, frames=frames,
                      noise_covariance=covariance)
