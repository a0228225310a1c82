"""The classical chest detector: thresholds, morphology, edges and a few mean shapes, no network.

:class:`ClassicalDetector` is the baseline beside the network (same :class:`~scanai.chest.detection.Detector`
interface). It works on a copy of the radiograph resampled to ``work_size`` pixels on the long side and returns
masks on the input grid. Image convention as in :mod:`scanai.chest.detection`: (rows, cols), row 0 = head,
column 0 = image left = patient right, bright = dense.

What it finds, and how:

* **body** (the patent's "chest area"): :func:`~scanai.chest.detection.body_mask` of the working image, united
  with the lungs and heart found below, holes filled.
* **lungs**: the dark regions inside the body. Grey values are rescaled by the body's 1st/99th percentiles. A
  two-class model (lung / not lung, Gaussians whose means follow the image locally, one-sided so that very dark
  pixels always favour lung and very bright ones never do) is fitted by four EM rounds started from Otsu's
  threshold inside the body, with a soft spatial prior (the mean lung outline of the Wingspan training images,
  in image-fraction coordinates, blurred) that keeps the neck, axillae and abdomen out. The result is split at
  the mediastinal line (per-row brightest column of the central band); on each side the largest region is kept,
  closed and filled. Then each outline is moved along rays from the lung centroid to where the grey value has
  just climbed to the bright rim (ribs, diaphragm, mediastinum), by dynamic programming around the rays so the
  outline stays smooth. Patient right lung = image left.
* **heart**: the mean heart outline of the training images scaled into a box. The box's top and bottom rows are
  linear in the lungs' top, bottom and medial-bottom rows; its left and right columns make the outline's sides
  meet the medial lung borders row by row (least absolute gap, over- and undershoot weighted alike), then the
  right side is moved out by 2 % of the lung width (the reference hearts reach under the left lung's border).
  Its horizontal extent at the widest row is the heart width of the cardiothoracic ratio.
* **spine**: the bright vertical ridge in the mediastinal band between the lungs: per row, the brightest column
  of a vertically smoothed image within the band; a robust straight-line fit (outliers beyond 2.5 MAD dropped,
  lean limited to 0.1 column per row); a mask of fixed width (``spine_width`` of the lung-union width) over the
  lung height.
* **foreign objects** (metal): pixels brighter than a very high percentile of the body (``fo_percentile``) and
  well above their local background (top-hat) that form compact blobs (area, elongation and fill limits), or
  chains of at least three small beads (a necklace, reported as one object). A blob whose surroundings are air
  (a side marker next to the patient) does not count. The pseudo-confidence is a sigmoid of the blob's contrast
  to a ring around it, in units of the body's 1-99 % range; candidates pass
  :func:`~scanai.chest.detection.non_maximum_suppression`. A marker lying on the body is found like any other
  metal object.

Not provided: scapulae, clavicles and the abnormal parts (pneumothorax, effusion): grey levels alone do not find
them reliably. Use the network backend (or oracle masks in tests) for them.

The constants below (mean outlines as radii at 48 angles, the heart-row fits and the heart widening) were
measured once on the 207 Wingspan *training* images (the heart fits on this detector's own lungs); they are
statistics of the training masks, not learned weights. Scores on the 52 validation images: see
:mod:`scanai.chest.evaluate` and the README.

Where each part lives: :mod:`scanai.chest.classical_lungs`, :mod:`scanai.chest.classical_mediastinum` (heart and
spine), :mod:`scanai.chest.classical_foreign` (foreign objects; :func:`tissue_mask` is re-exported here) and
:mod:`scanai.chest.classical_grid` (the working grid); the detector that combines them is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.chest.classical_foreign import _foreign_candidates, _sigmoid, tissue_mask
from scanai.chest.classical_grid import _dice, _largest, _mask_to_input, _radial_mask, _resample, _work_shape
from scanai.chest.classical_lungs import (
    _LEFT_LUNG_IMAGE,
    _RIGHT_LUNG_IMAGE,
    _em_lungs,
    _lung_prior,
    _mediastinal_line,
    _snap_outline,
    _split_lungs,
)
from scanai.chest.classical_mediastinum import _find_spine, _fit_heart
from scanai.chest.detection import (
    FOREIGN,
    Box,
    Detections,
    Found,
    body_mask,
    check_radiograph_array,
    non_maximum_suppression,
    otsu_threshold,
)
from scanai.core.progress import Progress


@dataclass
class ClassicalDetector:
    """Classical chest detector (no network). See the module docstring for the method.

    work_size:       long side of the working grid (px); masks are returned on the input grid. The pixel
                     settings below (snap_*) are in working-grid pixels.
    prior_blur:      blur of the mean lung outline, as a fraction of the working long side.
    em_local:        reach of the local class means in the lung EM, as a fraction of the working long side.
    spine_width:     spine mask width as a fraction of the lung-union width.
    snap_inner, snap_outer: the lung outline search runs from this far inside to this far outside (px).
    snap_cost:       penalty per ``snap_outer`` px moved, against the (scaled) edge strength.
    snap_reach:      the edge strength is the grey-value rise over this many px along the ray.
    snap_jump:       largest change of the outline radius between neighbouring rays (px).
    snap_rays:       number of rays around each lung.
    fo_percentile:   foreign-object candidates are brighter than this percentile of the body.
    fo_min_area, fo_max_area: blob area limits as fractions of the body area.
    fo_max_elongation: longest / shortest axis limit of a single blob's moment ellipse.
    fo_contrast_mid, fo_contrast_scale: confidence = sigmoid((contrast - mid) / scale), contrast in units of
                     the body's 1-99 % intensity range.
    fo_min_confidence: candidates below this confidence are not reported.
    """

    name: str = "classical"
    work_size: int = 256
    prior_blur: float = 0.045
    em_local: float = 0.1
    spine_width: float = 0.1
    snap_inner: float = 6.0
    snap_outer: float = 30.0
    snap_cost: float = 0.05
    snap_reach: float = 4.0
    snap_jump: float = 3.0
    snap_rays: int = 192
    fo_percentile: float = 99.7
    fo_min_area: float = 2e-5
    fo_max_area: float = 0.01
    fo_max_elongation: float = 3.0
    fo_contrast_mid: float = 0.5
    fo_contrast_scale: float = 0.1
    fo_min_confidence: float = 0.1

    def detect(self, image: np.ndarray, progress: Progress | None = None) -> Detections:
        """Detect body, lungs, heart, spine and foreign objects on a (rows, cols) radiograph (raw intensities,
        any range, bright = dense; the input is not modified).

        Returns :class:`Detections` on the input grid; objects that were not found are absent (no heart or spine
        unless both lungs were found). Confidences: lungs, the Dice overlap with the mean lung outline (0.2 when
        only one lung was found); heart, 0.5 + 0.5 x the fraction of its rows bordered by a lung; spine, the
        fraction of rows agreeing with the fitted line; foreign objects, the contrast sigmoid. InputError for a
        non-2-D, tiny, non-finite or blank image.
        """
        from scipy import ndimage

        progress = Progress.ensure(progress)
        array = check_radiograph_array(image)
        shape = array.shape
        progress(0.0, "classical detector: preparing")
        work_shape = _work_shape(shape, self.work_size)
        scale = work_shape[0] / shape[0]
        source = ndimage.gaussian_filter(array, 0.4 / scale) if scale < 0.75 else array
        raw = _resample(source, work_shape)
        body = body_mask(raw)
        if body.sum() < 0.05 * body.size:
            body = np.ones(work_shape, dtype=bool)
        low, high = np.percentile(raw[body], [1.0, 99.0])
        if high <= low:
            low, high = float(raw.min()), float(raw.max())
        rescaled = (raw - low) / (high - low)
        grey = np.clip(ndimage.gaussian_filter(rescaled, 1.0), 0.0, 1.0)

        progress(0.15, "classical detector: lungs")
        right, left = self._lungs(grey, body)
        candidates: list[tuple[str, np.ndarray, float]] = []
        heart = np.zeros(work_shape, dtype=bool)
        progress(0.55, "classical detector: heart and spine")
        if right.sum() > 0.002 * right.size and left.sum() > 0.002 * left.size:
            box = (0.0, 0.0, float(work_shape[0]), float(work_shape[1]))
            for name, mask, outline in (("lung_right", right, _RIGHT_LUNG_IMAGE),
                                        ("lung_left", left, _LEFT_LUNG_IMAGE)):
                candidates.append((name, mask, _dice(mask, _radial_mask(work_shape, outline, box))))
            heart, heart_support = _fit_heart(right, left)
            spine, spine_support = _find_spine(grey, right, left, self.spine_width)
            candidates += [("heart", heart, 0.5 + 0.5 * heart_support), ("spine", spine, spine_support)]
        else:  # one lung at most: no heart or spine without both medial borders
            candidates += [(name, mask, 0.2) for name, mask in (("lung_right", right), ("lung_left", left))
                           if mask.sum() > 0.002 * mask.size]
        objects: dict[str, Found] = {}
        for name, mask, confidence in candidates:
            found = self._found(name, mask, shape, confidence) if mask.any() else None
            if found is not None:
                objects[name] = found
        whole_body = ndimage.binary_fill_holes(body | right | left | heart)
        tissue = ndimage.binary_fill_holes(tissue_mask(raw) | right | left | heart)

        progress(0.8, "classical detector: foreign objects")
        foreign = self._foreign_objects(rescaled, whole_body, tissue, shape)
        progress(1.0, "classical detector: done")
        return Detections(tuple(shape), objects, tuple(foreign), _mask_to_input(whole_body, shape), self.name)

    @staticmethod
    def _found(name: str, work_mask: np.ndarray, shape: tuple[int, int], confidence: float) -> Found | None:
        """The object on the input grid, or None when nothing of it is left there."""
        mask = _mask_to_input(work_mask, shape)
        if not mask.any():  # a sliver lost in resampling: keep the nearest pixels
            mask = _resample(work_mask.astype(np.float64), shape, order=0) > 0.5
        if not mask.any():
            return None
        return Found(name, mask, Box.of_mask(mask), float(np.clip(confidence, 0.0, 1.0)))

    def _lungs(self, grey: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(right, left) lung masks on the working grid (possibly empty)."""
        from scipy import ndimage

        prior = _lung_prior(grey.shape, self.prior_blur)
        roi = ndimage.binary_fill_holes(body | (prior > 0.3)) & (prior > 0.02)
        inside = grey[roi]
        threshold = otsu_threshold(inside[None, :]) if inside.size > 100 else 0.5
        lung = _em_lungs(grey, prior, roi, (grey < threshold) & (prior > 0.5) & roi,
                         local_px=self.em_local * max(grey.shape))
        right, left = _split_lungs(grey, lung)
        smooth = ndimage.gaussian_filter(grey, 1.5)
        snapped = []
        for mask in (right, left):
            if mask.sum() >= 30:
                mask = _largest(_snap_outline(smooth, mask, rays=self.snap_rays, inner=self.snap_inner,
                                              outer=self.snap_outer, max_jump=self.snap_jump,
                                              deviation_cost=self.snap_cost, reach=self.snap_reach))
            snapped.append(mask)
        line = _mediastinal_line(grey)[:, None]
        column = np.arange(grey.shape[1])[None, :]
        return snapped[0] & (column < line), snapped[1] & (column > line)

    def _foreign_objects(self, rescaled: np.ndarray, body: np.ndarray, tissue: np.ndarray,
                         shape: tuple[int, int]) -> list[Found]:
        """Foreign objects (metal) on the working grid -> Found objects on the input grid, highest confidence
        first, after non-maximum suppression."""
        found = []
        for mask, contrast in _foreign_candidates(rescaled, body, tissue, self.fo_percentile, self.fo_min_area,
                                                  self.fo_max_area, self.fo_max_elongation):
            confidence = _sigmoid((contrast - self.fo_contrast_mid) / self.fo_contrast_scale)
            candidate = self._found(FOREIGN, mask, shape, confidence) if confidence >= self.fo_min_confidence else None
            if candidate is not None:
                found.append(candidate)
        kept = non_maximum_suppression([f.box for f in found], [f.confidence for f in found], 0.3)
        return [found[k] for k in kept]
