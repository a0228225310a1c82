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


def contoured_stack(shared_data, margin: int = 24):
    """The shared Sunnybrook cine as one 3-D+t stack, cropped in-plane to the contours plus ``margin`` pixels (as
    a user crops around the heart before 3-D motion): (the cropped stack (T, K, J, I), the (K, J, I) label map of
    the contoured slices on the experts' ED frame (1 = cavity, 2 = myocardium, 0 elsewhere and on the other
    slices), the ED frame index, and {slice index: (ES frame index, cropped (J, I) ES endocardium)})."""
    from dataclasses import replace

    from scanai.core.image import VolumeSequence
    from scanai.io.cine import read_cine_stack

    stack = read_cine_stack(shared_data / "cardiac" / "sunnybrook" / "dicoms" / "SCD0000101")
    labels = np.zeros(stack.frames.shape[1:], dtype=np.uint8)
    ends, ed = {}, None
    for slice_index, _sequence, drawn, endo_ed, endo_es in contoured_slices(shared_data):
        labels[slice_index] = drawn[0]
        ends[slice_index] = (endo_es.phase_index, endo_es.mask)
        ed = endo_ed.phase_index
    rows, columns = np.nonzero(labels.max(axis=0))
    top, left = max(int(rows.min()) - margin, 0), max(int(columns.min()) - margin, 0)
    crop = (slice(top, int(rows.max()) + margin + 1), slice(left, int(columns.max()) + margin + 1))
    origin = stack.geometry.ras_of_ijk(np.array([left, top, 0], dtype=np.float64))
    sequence = VolumeSequence(np.ascontiguousarray(stack.frames[(slice(None), slice(None), *crop)]),
                              replace(stack.geometry, origin_mm=tuple(float(v) for v in origin)),
                              stack.index_values, stack.index_name, stack.index_unit)
    return (sequence, np.ascontiguousarray(labels[(slice(None), *crop)]), ed,
            {index: (es, mask[crop]) for index, (es, mask) in ends.items()})
