"""The shared Sunnybrook cine's contoured slices, as the motion tests and benchmarks use them (the data lives in
``../shared/data``; tests take the ``shared_data`` fixture, which skips without it)."""

from __future__ import annotations

import numpy as np


def contoured_slices(shared_data):
    """Each contoured slice of the shared Sunnybrook cine, basal to apical: (slice index, its cine, the (1, rows,
    columns) label map drawn on the experts' ED frame (1 = cavity, 2 = myocardium), the ED and the ES endocardium
    contours)."""
    from scanai.io.cine import read_sunnybrook_cine
    from scanai.io.contours import read_sunnybrook_contours

    root = shared_data / "cardiac" / "sunnybrook"
    dicoms = root / "dicoms" / "SCD0000101"
    contours = read_sunnybrook_contours(root / "contourfiles" / "SC-HF-I-1", dicoms)
    for slice_index in sorted({c.slice_index for c in contours}):
        mine = [c for c in contours if c.slice_index == slice_index]
        epicardium = next(c for c in mine if c.kind == "epicardium")  # drawn at end-diastole only
        ed = epicardium.phase_index
        endo_ed = next(c for c in mine if c.kind == "endocardium" and c.phase_index == ed)
        endo_es = next(c for c in mine if c.kind == "endocardium" and c.phase_index != ed)
        sequence = read_sunnybrook_cine(dicoms, slice_index=slice_index)
        labels = np.zeros(sequence.frames.shape[1:], dtype=np.uint8)
        labels[0][epicardium.mask] = 2
        labels[0][endo_ed.mask] = 1
        yield slice_index, sequence, labels, endo_ed, endo_es
