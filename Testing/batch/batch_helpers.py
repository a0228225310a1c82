"""Entry points that the batch tests hand to Dask workers in place of ``scanai.cli.main`` (the workers import this
module by name, so the tests put its folder on ``sys.path`` before the worker processes start), and the tiny
generated studies of each command."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np

from scanai.cli import main

#: Phases (% of R-R) of the simulated multi-phase CT.
PHASES = [62.0, 66.0, 70.0, 74.0, 78.0, 82.0]


def _die_before_commit() -> None:
    """From now on, this process kills itself when a command's results are written and not yet moved into place."""
    from scanai.core import outputs

    real = outputs.results_folder

    @contextlib.contextmanager
    def dying(out):
        with real(out) as partial:
            yield partial
            os.kill(os.getpid(), signal.SIGKILL)

    outputs.results_folder = dying


def _out(argv: list[str]) -> Path:
    return Path(argv[argv.index("--out") + 1])


def kill_some(argv: list[str]) -> int:
    """``main``, except that a study whose id starts with ``victim`` kills its worker the first time (a marker file
    beside the batch folder remembers it) and one whose id starts with ``doomed`` every time; each dies after its
    results are written and before they are moved into place."""
    out = _out(argv)
    marker = out.parent.parent / f"{out.parent.name}-{out.name}.killed"
    if out.name.startswith("doomed") or (out.name.startswith("victim") and not marker.exists()):
        marker.touch()
        _die_before_commit()
    return main(argv)


# ---------------------------------------------------------------------------------------------- studies


def write_studies(command: str, folder: Path) -> Path:
    """Two tiny studies of ``command`` (generated with the domain's own phantom) in ``folder`` and their manifest
    (relative paths, per-study options as columns); returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = WRITERS[command](folder)
    header = sorted({key for row in rows for key in row} - {"study_id"})
    lines = [",".join(["study_id", *header])] + [",".join([row["study_id"], *(str(row.get(k, "")) for k in header)])
                                                 for row in rows]
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _chest(folder: Path) -> list[dict]:
    from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom

    write_phantom_dicom(make_chest_phantom(size=192, spacing_mm=0.9, seed=2), folder / "a.dcm")
    write_phantom_dicom(make_chest_phantom(size=192, spacing_mm=0.9, seed=3), folder / "b.dcm", "MONOCHROME1")
    corrupt = b"DICM" + bytes(range(256)) * 8
    (folder / "corrupt.dcm").write_bytes(corrupt)
    (folder / "mixed").mkdir(exist_ok=True)
    write_phantom_dicom(make_chest_phantom(size=192, spacing_mm=0.9, seed=4), folder / "mixed" / "c.dcm")
    (folder / "mixed" / "d.dcm").write_bytes(corrupt)
    return [{"study_id": "chest-a", "input": "a.dcm", "backend": "classical"},
            {"study_id": "chest-b", "input": "b.dcm", "backend": "classical", "experimental": "yes"},
            {"study_id": "chest-corrupt", "input": "corrupt.dcm", "backend": "classical"},  # error: nothing written
            {"study_id": "chest-mixed", "input": "mixed", "backend": "classical"}]  # failed: one image of two


def _pet(folder: Path) -> list[dict]:
    from scanai.pet.dynamic import DynamicPet
    from scanai.pet.phantom import DEFAULT_REGIONS, pet_phantom
    from scanai.pet.study import write_dynamic_pet

    regions = {name: DEFAULT_REGIONS[name] for name in ("white matter", "grey matter")}
    phantom = pet_phantom((1, 8, 8), regions=regions)
    write_dynamic_pet(DynamicPet(phantom.sequence, phantom.timing, unit="kBq/mL"), folder / "dynamic.nii.gz")
    t_s = np.arange(0.0, 3601.0, 10.0)
    (folder / "plasma.csv").write_text("time_s,Cp\n" + "\n".join(
        f"{t},{v}" for t, v in zip(t_s, phantom.input_function.value_at(t_s), strict=True)))
    return [{"study_id": "pet-patlak", "image": "dynamic.nii.gz", "input-function": "plasma.csv",
             "t-star-min": "30"},
            {"study_id": "pet-logan", "image": "dynamic.nii.gz", "input-function": "plasma.csv", "method": "logan"}]


def _kspace(folder: Path) -> list[dict]:
    from scanai.kspace.io import write_kspace_npz
    from scanai.kspace.phantom import make_phantom
    from scanai.kspace.simulate import inject_spikes

    case = make_phantom(size=32, n_coils=2, noise_std=0.002, seed=0)
    write_kspace_npz(case.kspace, folder / "clean.npz")
    spiked, _truth = inject_spikes(case.kspace.data, n_events=3, seed=1)
    from dataclasses import replace

    write_kspace_npz(replace(case.kspace, data=spiked), folder / "spiked.npz")
    return [{"study_id": "kspace-clean", "input": "clean.npz"},
            {"study_id": "kspace-spiked", "input": "spiked.npz", "detect-only": "1"}]


def _motion(folder: Path) -> list[dict]:
    from scanai.io.sequence_file import write_sequence
    from scanai.motion.phantom import smooth_motion_phantom

    sequence, _truth = smooth_motion_phantom(n_frames=3, shape=(1, 32, 32), spacing_mm=(1.5, 1.5, 8.0),
                                             amplitude_px=2.0, seed=1)
    write_sequence(sequence, folder / "cine.seq.nrrd")
    return [{"study_id": "motion-demons", "input": "cine.seq.nrrd", "method": "demons"},
            {"study_id": "motion-ref1", "input": "cine.seq.nrrd", "method": "demons", "reference": "1"}]


def _motion_correct(folder: Path) -> list[dict]:
    from scanai.artifact_correction.simulator import simulate_phase_sequence
    from scanai.io.sitk_image import write_image

    sequence, _r_peaks, _truth = simulate_phase_sequence(np.random.default_rng(11), PHASES, slices=1)
    names = []
    for index in range(len(sequence)):
        names.append(f"phase{index}.nrrd")
        write_image(sequence.frame(index), folder / names[-1])
    common = {"inputs": ";".join(names), "phases": '"' + ",".join(f"{p:g}" for p in PHASES) + '"',
              "window": "0.15", "rr": "1.0", "method": "mean"}
    return [{"study_id": "ct-first1", **common, "count": "4", "first": "1"},
            {"study_id": "ct-best", **common, "method": "best-phase"}]


WRITERS = {"chest": _chest, "pet": _pet, "kspace": _kspace, "motion": _motion, "motion-correct": _motion_correct}
