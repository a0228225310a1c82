"""Damaged k-space files end in a clear error or the right data, never in another exception (seeded).

Every reader gets about 40 damaged copies of a good file: truncations at random offsets and single flipped bits
(some anywhere, some in the headers that say where the data go). Each must end in a :class:`ScanAIError` whose
message names the file, or in the k-space of the good file, except where the format has no checksum: a bit
flipped inside a sample changes that sample only (NumPy, BART), and in a twix or ISMRMRD file a bit flipped in a
readout or its counters changes at most two readout lines. Also: a text file named ``.dat`` is said to be no
Siemens raw-data file, and every real ``.dat`` file in ../shared/data/kspace still reads.
"""

from __future__ import annotations

import struct
import warnings
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from damage import damaged_copies

from scanai.core.errors import FileFormatError, ScanAIError
from scanai.kspace import read_kspace, write_cfl
from scanai.kspace.readers.bart import kspace_to_bart
from scanai.kspace.readers.twix import check_twix_header

SEED = 20261207
COILS, LINES, SAMPLES = 2, 16, 32


def read_or_error(path: Path):
    """The k-space of ``path``, or the ScanAIError it raised (any other exception fails the test)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_kspace(path, allow_epi=True)
    except ScanAIError as error:
        return error


def assert_clear(error: ScanAIError, path: Path, label: str) -> None:
    message = str(error)
    assert path.name in message or path.stem in message, f"{label}: the message does not name the file: {message}"
    assert len(message) < 600 and "Traceback" not in message, f"{label}: {message}"


def judge(outcome, path: Path, label: str, reference: np.ndarray, changed_samples: int) -> str:
    """'error' (clear), 'same' (the reference k-space) or 'changed' (at most ``changed_samples`` samples differ,
    for a bit flipped where the format has no checksum)."""
    if isinstance(outcome, ScanAIError):
        assert_clear(outcome, path, label)
        return "error"
    assert outcome.data.shape == reference.shape, f"{label}: k-space of shape {outcome.data.shape} was returned"
    different = int(np.count_nonzero(outcome.data != reference))
    assert different <= changed_samples, f"{label}: {different} samples differ from the file's k-space"
    return "same" if different == 0 else "changed"


def run_cases(copies: list[tuple[str, bytes]], path: Path, reference: np.ndarray, changed_samples: int,
              read_path: Path | None = None) -> Counter:
    """Write each damaged copy to ``path``, read it (through ``read_path`` when another file names it), judge it."""
    outcomes: Counter = Counter()
    for label, content in copies:
        path.write_bytes(content)
        target = read_path or path
        outcome = read_or_error(target)
        verdict = judge(outcome, target, label, reference, changed_samples if "flipped" in label else 0)
        outcomes[f"{label.split()[0]} {verdict}"] += 1
    return outcomes


def test_a_text_file_named_dat_is_no_siemens_raw_data_file(tmp_path):
    notes = tmp_path / "notes.dat"
    notes.write_text("patient list\nname,date\nDoe,2026-01-01\n")
    with pytest.raises(FileFormatError, match=r"notes\.dat is not a Siemens raw-data \(twix\) file: it is a text "
                                              r"file \(it starts 'patient list name,date") as error:
        read_kspace(notes)
    assert all(kind in str(error.value) for kind in (".dat", ".h5", ".cfl", ".npy", ".mat"))
    assert "truncated" not in str(error.value)
    binary = tmp_path / "image.dat"
    binary.write_bytes(np.random.default_rng(SEED).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(FileFormatError, match="image.dat is not a Siemens raw-data .* not a twix measurement header"):
        read_kspace(binary)
    tiny = tmp_path / "tiny.dat"
    tiny.write_bytes(b"\x00\x01")
    with pytest.raises(FileFormatError, match="tiny.dat is not a Siemens raw-data .* only 2 bytes"):
        read_kspace(tiny)


def test_every_real_twix_file_still_reads(shared_data):
    files = sorted((shared_data / "kspace").glob("*.dat"))
    assert len(files) >= 5
    for path in files:
        check_twix_header(path)
        kspace = read_kspace(path, allow_epi=True)
        assert kspace.metadata["format"] == "siemens-twix" and kspace.data.shape[0] >= 2


def _readout_headers(data: bytes) -> list[int]:
    """Byte offsets of the readouts (measurement data blocks) of a VD/VE twix file's first measurement."""
    start = struct.unpack_from("<Q", data, 16)[0]
    position = start + struct.unpack_from("<I", data, start)[0]
    offsets = []
    while position + 192 < len(data):
        length = struct.unpack_from("<I", data, position)[0] % (1 << 25)
        if length == 0:
            break
        offsets.append(position)
        position += length
    return offsets


def test_damaged_twix_files(shared_data, tmp_path):
    """40 cases on the real gre.dat: 20 cuts, 10 flips anywhere, 10 flips in readout headers (counters, flags,
    sizes). A flip inside a readout or its counters may change up to two lines (twix has no checksum)."""
    source = shared_data / "kspace" / "gre.dat"
    data = source.read_bytes()
    reference = read_kspace(source).data
    rng = np.random.default_rng(SEED)
    copies = damaged_copies(data, rng, cuts=20, flips=10)
    headers = _readout_headers(data)
    for _ in range(10):
        start = headers[int(rng.integers(0, len(headers)))]
        copies += damaged_copies(data, rng, 0, 1, (start, start + 192))
    outcomes = run_cases(copies, tmp_path / "damaged.dat", reference, 2 * COILS * reference.shape[-1])
    assert outcomes["cut error"] >= 19, outcomes  # a cut in the padding after the measurement reads the same


# --------------------------------------------------------------------------------------------- generated files


def _kspace(rng: np.random.Generator) -> np.ndarray:
    """(coils, 1, lines, samples) complex64 k-space with a bright centre, like a real scan's."""
    ky, kx = np.meshgrid(np.arange(LINES) - LINES // 2, np.arange(SAMPLES) - SAMPLES // 2, indexing="ij")
    centre = 50.0 * np.exp(-(ky ** 2 + kx ** 2) / 8.0)
    noise = rng.normal(size=(COILS, 1, LINES, SAMPLES)) + 1j * rng.normal(size=(COILS, 1, LINES, SAMPLES))
    return (centre + noise).astype(np.complex64)


_MRD_HEAD = np.dtype([
    ("flags", "<u8"), ("number_of_samples", "<u2"), ("active_channels", "<u2"), ("center_sample", "<u2"),
    ("encoding_space_ref", "<u2"), ("sample_time_us", "<f4"), ("position", "<f4", (3,)),
    ("idx", [("kspace_encode_step_1", "<u2"), ("kspace_encode_step_2", "<u2"), ("average", "<u2"),
             ("slice", "<u2"), ("contrast", "<u2"), ("phase", "<u2"), ("repetition", "<u2"), ("set", "<u2")]),
])
_MRD_XML = ("<?xml version=\"1.0\"?><ismrmrdHeader xmlns=\"http://www.ismrm.org/ISMRMRD\"><encoding>"
            f"<encodedSpace><matrixSize><x>{SAMPLES}</x><y>{LINES}</y><z>1</z></matrixSize>"
            "<fieldOfView_mm><x>240</x><y>120</y><z>5</z></fieldOfView_mm></encodedSpace>"
            f"<reconSpace><matrixSize><x>{SAMPLES}</x><y>{LINES}</y><z>1</z></matrixSize>"
            "<fieldOfView_mm><x>240</x><y>120</y><z>5</z></fieldOfView_mm></reconSpace>"
            f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{LINES - 1}</maximum>"
            f"<center>{LINES // 2}</center></kspace_encoding_step_1></encodingLimits>"
            "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")


def _write_mrd(path: Path, kspace: np.ndarray) -> Path:
    """An ISMRMRD file (h5py, the ISMRMRD layout's fields the reader uses): one acquisition per line."""
    table = np.zeros(LINES, dtype=[("head", _MRD_HEAD), ("traj", h5py.vlen_dtype(np.float32)),
                                   ("data", h5py.vlen_dtype(np.float32))])
    for line in range(LINES):
        head = table["head"][line:line + 1]
        head["number_of_samples"], head["active_channels"], head["center_sample"] = SAMPLES, COILS, SAMPLES // 2
        head["sample_time_us"] = 5.0
        head["idx"]["kspace_encode_step_1"] = line
        table["traj"][line] = np.zeros(0, np.float32)
        table["data"][line] = np.ascontiguousarray(kspace[:, 0, line]).view(np.float32).ravel()
    with h5py.File(path, "w") as file:
        group = file.create_group("dataset")
        group.create_dataset("xml", data=np.array([_MRD_XML.encode()], dtype=object), dtype=h5py.string_dtype())
        group.create_dataset("data", data=table)
    return path


def test_damaged_ismrmrd_files(tmp_path):
    """40 cases: 20 cuts and 20 flips of a generated ISMRMRD (HDF5) file. HDF5 raw data carry no checksum: a flip in
    a sample changes it, one in an acquisition's counters moves its line (up to two lines change)."""
    rng = np.random.default_rng(SEED + 1)
    kspace = _kspace(rng)
    data = _write_mrd(tmp_path / "whole.h5", kspace).read_bytes()
    np.testing.assert_array_equal(read_kspace(tmp_path / "whole.h5").data, kspace)
    outcomes = run_cases(damaged_copies(data, rng, 20, 20), tmp_path / "damaged.h5", kspace, 2 * COILS * SAMPLES)
    assert outcomes["cut error"] >= 19, outcomes


def test_damaged_bart_files(tmp_path):
    """40 cases: 10 cuts and 10 flips of the .cfl data, 10 cuts and 10 flips of the .hdr text."""
    rng = np.random.default_rng(SEED + 2)
    kspace = _kspace(rng)
    header, cfl = write_cfl(tmp_path / "k", kspace_to_bart(kspace))
    np.testing.assert_array_equal(read_kspace(cfl).data, kspace)
    data, text = cfl.read_bytes(), header.read_bytes()
    outcomes = run_cases(damaged_copies(data, rng, 10, 10), cfl, kspace, 1)
    assert outcomes["cut error"] == 10, outcomes  # the data no longer fill the header's sizes
    cfl.write_bytes(data)
    outcomes = run_cases(damaged_copies(text, rng, 10, 10), header, kspace, 0, read_path=cfl)
    assert outcomes["cut same"] < 10, outcomes  # only a cut that drops trailing sizes of 1 reads the same array


def test_damaged_numpy_files(tmp_path):
    """40 cases: 20 cuts and 20 flips of a .npy file (10 of them in its text header)."""
    rng = np.random.default_rng(SEED + 3)
    kspace = _kspace(rng)
    path = tmp_path / "whole.npy"
    np.save(path, kspace)
    data = path.read_bytes()
    copies = damaged_copies(data, rng, 20, 10) + damaged_copies(data, rng, 0, 10, (0, 128))
    outcomes = run_cases(copies, tmp_path / "damaged.npy", kspace, 1)
    assert outcomes["cut error"] >= 19, outcomes
