"""Train the multi-pair motion network (seeded, reproducible on the CPU):

    python -m scanai.motion.train --out scanai/models --seed 0

Training data
- **Textured analytic phantoms** (:func:`scanai.motion.phantom.smooth_motion_phantom`) with random size,
  contraction, twist, texture, noise, reference frame and crop offset, and a random intensity transform. In
  half of the clips one or two frames are corrupted (strong noise, blur or an intensity drop): there only the
  other pairs can tell the motion, which is what the joint refinement is for.
- **Real-texture videos** (:func:`real_texture_video`): a frame of a real cine moved by the same analytic
  heart motion about the LV found in that frame (:func:`find_heart`: a bright round blood pool whose response
  changes over the cycle, voted over the whole short-axis stack), with the ring's size taken from it and a
  shift of the whole heart over the cycle, mostly at half the cine's resolution (as the network's first pass
  sees a 256² cine; with ``--native`` mostly at its own, as its passes on the heart see it), and with the signal
  changes that through-plane motion brings (:func:`through_plane_change`: blood-pool and myocardial intensity
  changing over the cycle, new structure entering the cavity, slight blur): real anatomy and noise with an exact
  field.
- **Real cine MR**: every slice of every cine folder in ``../shared/data/cardiac/sunnybrook/dicoms`` (today the
  one case SCD0000101, the only real cine the shared data holds; images only: the manual contours are never used
  for training, they are the test of propagation), cropped about the heart found in it, at its own resolution and
  at half of it (``--native``: its own only).

Loss per clip (digest §4.2): local NCC between each pair's first image and its warped second image
(¶0043 similarity), + smoothness of the field, + temporal consistency (the acceleration of each point's
trajectory reference -> t, small for cardiac motion), + for consecutive pairs the composed long-range term
(¶0043) and, when the clip spans the whole cycle, cycle closure (composition around the cycle = identity; in
joint steps the network's loop constraint already removes the first-order part); on
phantoms also the supervised end-point error against the exact field (¶0042; whole image plus myocardium) and
the Dice of the warped myocardium mask. A quarter of the steps run the pairs independently (``joint=False``) so
that the same weights
serve the pair-by-pair ablation.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.catalog import MODELS_DIR, ModelCard, save_model
from scanai.core.paths import shared_data_dir
from scanai.motion.network import (
    DEFAULT_ARCHITECTURE,
    MODEL_NAME,
    build_motion_network,
    local_ncc_loss,
    normalise_video,
    smoothness_loss,
)
from scanai.motion.pairs import make_pairs
from scanai.motion.phantom import contraction_profile, heart_motion_on_image, myocardium_mask, smooth_motion_phantom

TRAINING_COMMAND = "python -m scanai.motion.train --out scanai/models --seed 0"
#: Share of the real-texture videos made at half the cine's resolution (as the network's first pass sees a 256²
#: cine); the rest are at its own (as the heart passes see it). ``--native`` uses NATIVE_HALVED_SHARE.
HALVED_SHARE = 0.7
NATIVE_HALVED_SHARE = 0.5


@dataclass(frozen=True)
class Video:
    """One cine slice for training. frames (T, H, W) float32 raw; truth (T, H, W, 2) pull-back pixels (dy, dx)
    relative to ``reference`` or None; masks (T, H, W) bool myocardium or None; centre (row, column) pixels of
    the heart (real cines: crops are taken about it) or None (the image centre)."""

    frames: np.ndarray
    truth: np.ndarray | None
    masks: np.ndarray | None
    reference: int
    centre: tuple[float, float] | None = None


@dataclass(frozen=True)
class Clip:
    """Frames in visiting order from the clip's reference (index 0). video (N, H, W) in [0, 1]; truth (N, H, W, 2)
    or None; masks (N, H, W) float32 or None; closed: the clip spans whole cycles (its last frame precedes the
    first)."""

    video: np.ndarray
    truth: np.ndarray | None
    masks: np.ndarray | None
    closed: bool


# ---------------------------------------------------------------------------------------------- data
def random_phantom(rng: np.random.Generator, size: int, n_frames: int | None = None,
                   corrupt: bool = False) -> Video:
    """A textured beating-ring phantom with random parameters (see the module docstring), cropped to size²."""
    n_frames = n_frames or int(rng.integers(12, 25))
    render = size + 16
    r_endo = 0.16 * render
    amplitude = float(rng.uniform(0.12, 0.42) * r_endo)
    twist = float(rng.uniform(-10.0, 10.0))
    reference = int(rng.integers(0, n_frames)) if rng.random() < 0.3 else 0
    sequence, truth = smooth_motion_phantom(n_frames=n_frames, shape=(1, render, render), amplitude_px=amplitude,
                                            twist_deg=twist, noise=float(rng.uniform(0.005, 0.04)),
                                            reference_index=reference, seed=int(rng.integers(1 << 30)))
    masks = np.stack([myocardium_mask(sequence, t, amplitude, twist)[0] for t in range(n_frames)])
    top, left = (int(v) for v in rng.integers(0, 17, size=2))
    window = (slice(top, top + size), slice(left, left + size))
    frames = sequence.frames[:, 0][(slice(None), *window)]
    pixels = truth[:, 0][(slice(None), *window)][..., [1, 0]].astype(np.float32)  # RAS = (i, j) here -> (dy, dx)
    frames = _intensity_transform(frames, rng)
    if corrupt:
        frames = _corrupt_frames(frames, reference, rng)
    return Video(frames.astype(np.float32), pixels, masks[(slice(None), *window)], reference)


#: Scales (pixels) of the blob filter that finds the LV blood pool: radii of about 7-18 px at a 256² cine's 1.4 mm.
HEART_SCALES_PX = (5.0, 7.0, 9.0, 11.0, 13.0)


def find_heart(stack: list[np.ndarray]) -> list[np.ndarray]:
    """The LV blood pool in every frame of every slice of one short-axis stack, from the images alone.

    stack: slices (T, H, W) on one grid. The pool is a bright disc in a darker ring (the myocardium): the
    scale-normalised Laplacian of Gaussian (scales :data:`HEART_SCALES_PX`) answers it most, and its answer
    changes over the cycle as the pool fills and empties (the chest wall and the liver do not beat). Each slice
    scores every pixel by the mean response over the cycle times its standard deviation; the slices' scores are
    summed (the LV axis crosses every slice near one point), each slice takes its best point within 16 px of the
    stack's, and each frame its strongest response within 6 px of that. Returns per slice (T, 3): row, column
    and radius (pixels, sqrt(2) x the best scale).
    """
    from scipy import ndimage

    scales = np.asarray(HEART_SCALES_PX)
    responses, scores = [], []
    for frames in stack:
        scaled = np.asarray(frames, dtype=np.float64) / max(float(np.percentile(frames, 99)), 1e-6)
        response = np.stack([[-s * s * ndimage.gaussian_laplace(frame, s) for s in scales] for frame in scaled])
        best = response.max(axis=1)  # (T, H, W)
        score = ndimage.gaussian_filter(np.clip(best.mean(axis=0), 0.0, None) * best.std(axis=0), 2.0)
        responses.append(response)
        scores.append(score / max(float(score.max()), 1e-12))
    axis = np.unravel_index(np.argmax(np.sum(scores, axis=0)), scores[0].shape)
    tracks = []
    for response, score in zip(responses, scores, strict=True):
        centre = _best_near(score[None], axis, 16)[1:]
        track = []
        for frame_response in response:
            scale, row, column = _best_near(frame_response, centre, 6)
            track.append((row, column, float(np.sqrt(2.0) * scales[scale])))
        tracks.append(np.asarray(track, dtype=np.float64))
    return tracks


def _best_near(maps: np.ndarray, point, radius: int) -> tuple[int, int, int]:
    """(map, row, column) of the largest value of ``maps`` (N, H, W) within ``radius`` px of ``point`` (a
    square window, clipped to the image)."""
    rows = slice(max(int(point[0]) - radius, 0), int(point[0]) + radius + 1)
    columns = slice(max(int(point[1]) - radius, 0), int(point[1]) + radius + 1)
    window = maps[:, rows, columns]
    k, i, j = np.unravel_index(np.argmax(window), window.shape)
    return int(k), rows.start + int(i), columns.start + int(j)


def _reduced(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H // factor, W // factor) by factor x factor block averages (factor 1: the image itself)."""
    if factor == 1:
        return image
    image = image[: image.shape[0] // factor * factor, : image.shape[1] // factor * factor]
    return image.reshape(image.shape[0] // factor, factor, image.shape[1] // factor, factor).mean(axis=(1, 3))


def real_texture_video(frames: np.ndarray, rng: np.random.Generator, size: int = 96,
                       heart: np.ndarray | None = None, halved_share: float = HALVED_SHARE) -> Video:
    """One frame of a real cine, moved by the analytic heart motion about the LV found in it: real-image texture
    with exact truth.

    frames (T, H, W); heart (T, 3) row, column, radius in pixels from :func:`find_heart` (None: a point near the
    image centre with a random radius). The ring's endocardium is the found pool's radius (x 0.8-1.2), it
    contracts by 12-42 % of it while the whole heart shifts by up to 30 % of it (:func:`_translated`), with the
    signal changes of :func:`through_plane_change`; in ``halved_share`` of the videos at half the cine's
    resolution (2 x 2 averages, as the network's first pass sees a 256² cine; not when the cine is no larger
    than :data:`~scanai.motion.network.WORKING_SIZE`), else at its own (as its passes on
    the heart see it, :func:`~scanai.motion.network.predict_fields`). Cropped to size² about the
    ring (at most the image).
    """
    from scanai.motion.network import WORKING_SIZE

    t = int(rng.integers(len(frames)))
    image = frames[t].astype(np.float64)
    factor = 2 if rng.random() < halved_share and max(image.shape) > WORKING_SIZE else 1
    image = _reduced(image, factor)
    height, width = image.shape
    if heart is not None:
        centre = (heart[t, 0] / factor + rng.uniform(-1.0, 1.0), heart[t, 1] / factor + rng.uniform(-1.0, 1.0))
        r_endo = float(heart[t, 2] / factor * rng.uniform(0.8, 1.2))
    else:
        centre = (height / 2 + rng.uniform(-0.1, 0.1) * height, width / 2 + rng.uniform(-0.1, 0.1) * width)
        r_endo = float(rng.uniform(8.0, 20.0)) / factor
    r_endo = max(r_endo, 4.0)
    n_frames = int(rng.integers(12, 25))
    moved, truth, masks = heart_motion_on_image(image, n_frames, centre, r_endo, rng.uniform(0.12, 0.42) * r_endo,
                                                rng.uniform(-10.0, 10.0))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    moved, truth, masks = _translated(moved, truth, masks, rng.uniform(0.0, 0.3 * r_endo) * np.array(
        [np.sin(angle), np.cos(angle)]))
    moved = through_plane_change(moved, masks, rng)
    size = min(size, height, width) // 16 * 16
    top = int(np.clip(round(centre[0]) - size // 2 + rng.integers(-12, 13), 0, height - size))
    left = int(np.clip(round(centre[1]) - size // 2 + rng.integers(-12, 13), 0, width - size))
    window = (slice(None), slice(top, top + size), slice(left, left + size))
    moved = moved[window] + rng.normal(0.0, rng.uniform(0.0, 0.02) * float(np.percentile(image, 99)),
                                       size=moved[window].shape)
    return Video(moved.astype(np.float32), truth[window], masks[window], 0)


def _translated(frames: np.ndarray, truth: np.ndarray, masks: np.ndarray,
                shift_px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole heart moved in the slice with the contraction, as real hearts are (by 0 at end-diastole, frame 0,
    up to ``shift_px`` (dy, dx) at end-systole): frames (T, H, W) and masks (T, H, W) shifted, the pull-back truth
    (T, H, W, 2) pixels gaining the shift (``frame_t(x + u_t(x) + d_t) = frame_0(x)``). Returns new arrays."""
    from scipy import ndimage

    frames, truth, masks = frames.copy(), truth.copy(), masks.copy()
    for t, s in enumerate(contraction_profile(len(frames))):
        if s > 0:
            shift = s * np.asarray(shift_px, dtype=np.float64)
            frames[t] = ndimage.shift(frames[t], shift, order=3, mode="mirror")
            masks[t] = ndimage.shift(masks[t].astype(np.float32), shift, order=1) > 0.5
            truth[t] += shift.astype(np.float32)
    return frames, truth, masks


def through_plane_change(frames: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The signal changes that through-plane motion and inflow bring to a short-axis slice, growing with the
    contraction (none at end-diastole, frame 0, most at end-systole): the blood pool's intensity changes by
    -25..+15 % and the myocardium's by ±15 %, structure with its own texture (papillary muscles, trabeculae,
    the wall moving into the plane) appears in the cavity with up to 20 % contrast, and the frame blurs by up to
    0.8 px (partial volume). The geometry, and so the exact field, is unchanged.

    frames (T, H, W) moved images; masks (T, H, W) bool the ring (myocardium) in each frame. Returns (T, H, W).
    """
    from scipy import ndimage

    profile = contraction_profile(len(frames))  # 0 at ED -> 1 at ES -> 0
    level = float(np.percentile(frames[0], 99))
    cavity = np.stack([ndimage.binary_fill_holes(mask) & ~mask for mask in masks])
    pool = ndimage.gaussian_filter(cavity.astype(np.float64), (0.0, 1.0, 1.0))
    wall = ndimage.gaussian_filter(masks.astype(np.float64), (0.0, 1.0, 1.0))
    texture = ndimage.gaussian_filter(rng.normal(size=frames.shape[1:]), rng.uniform(1.0, 3.0))
    texture *= rng.uniform(0.0, 0.2) * level / (np.abs(texture).max() + 1e-12)
    pool_gain, wall_gain, blur = rng.uniform(-0.25, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.0, 0.8)
    out = np.empty(frames.shape, dtype=np.float64)
    for t, s in enumerate(profile):
        frame = frames[t] * (1.0 + s * (pool_gain * pool[t] + wall_gain * wall[t])) - s * pool[t] * texture
        out[t] = ndimage.gaussian_filter(frame, blur * s) if blur * s > 0.05 else frame
    return out.astype(np.float32)


def _intensity_transform(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same random gamma, gain, offset and smooth bias field for every frame."""
    from scipy import ndimage

    gamma = rng.uniform(0.7, 1.5)
    bias = ndimage.gaussian_filter(rng.normal(size=frames.shape[1:]), sigma=frames.shape[1] / 4)
    bias = 1.0 + 0.3 * bias / (np.abs(bias).max() + 1e-6)
    return rng.uniform(0.7, 1.3) * np.clip(frames, 0, None) ** gamma * bias + rng.uniform(-0.1, 0.1)


def _corrupt_frames(frames: np.ndarray, reference: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt one or two non-reference frames: strong noise, blur, or an intensity drop."""
    from scipy import ndimage

    out = frames.copy()
    candidates = [t for t in range(len(frames)) if t != reference]
    for t in rng.choice(candidates, size=min(len(candidates), int(rng.integers(1, 3))), replace=False):
        kind = rng.integers(3)
        if kind == 0:
            out[t] = out[t] + rng.normal(0.0, rng.uniform(0.08, 0.15), size=out[t].shape)
        elif kind == 1:
            out[t] = ndimage.gaussian_filter(out[t], rng.uniform(1.5, 2.5))
        else:
            out[t] = out[t] * rng.uniform(0.5, 0.8) + rng.uniform(0.0, 0.1)
    return out


def real_cines(data_dir: Path | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every slice of every cine folder under ``data_dir/cardiac/sunnybrook/dicoms`` (images only) with
    the heart found in it: [(frames (T, H, W) float32, heart (T, 3) from :func:`find_heart`)], [] without the
    data folder."""
    from scanai.io.cine import list_cine_slices, read_sunnybrook_cine

    if data_dir is None:
        return []
    cines: list[tuple[np.ndarray, np.ndarray]] = []
    for folder in sorted((data_dir / "cardiac" / "sunnybrook" / "dicoms").glob("*")):
        stack = [read_sunnybrook_cine(folder, slice_index=s).frames[:, 0].astype(np.float32)
                 for s in range(len(list_cine_slices(folder)))]
        cines += list(zip(stack, find_heart(stack), strict=True))
    return cines


def real_videos(cines: list[tuple[np.ndarray, np.ndarray]], halved: bool = True) -> list[Video]:
    """The real cines as unsupervised training videos centred on their heart, at their own resolution and, with
    ``halved``, also at half of it (as the network's first pass sees a 256² cine)."""
    from scanai.motion.network import WORKING_SIZE

    videos = []
    for frames, heart in cines:
        centre = (float(heart[:, 0].mean()), float(heart[:, 1].mean()))
        videos.append(Video(frames, None, None, 0, centre))
        if halved and max(frames.shape[1:]) > WORKING_SIZE:
            videos.append(Video(np.stack([_reduced(f, 2) for f in frames]).astype(np.float32), None, None, 0,
                                (centre[0] / 2, centre[1] / 2)))
    return videos


def make_clip(video: Video, rng: np.random.Generator, max_frames: int, crop: int | None, closed: bool) -> Clip:
    """Frames of ``video`` from its reference in cyclic order with a random stride; a crop (real data) about the
    heart (``video.centre``, else the image centre) ± 16 px."""
    count = len(video.frames)
    if closed:
        strides = [s for s in (1, 2, 3) if count % s == 0 and count // s <= max_frames] or [count // 4]
        stride = int(rng.choice(strides))
        order = [(video.reference + k * stride) % count for k in range(count // stride)]
    else:
        stride = int(rng.integers(1, 3))
        length = int(rng.integers(4, max_frames + 1))
        order = [(video.reference + k * stride) % count for k in range(min(length, count // stride))]
    frames = video.frames[order]
    if crop is not None:
        height, width = frames.shape[1:]
        crop = min(crop, height, width) // 16 * 16
        centre = video.centre or (height / 2, width / 2)
        top = int(np.clip(round(centre[0]) - crop // 2 + int(rng.integers(-16, 17)), 0, height - crop))
        left = int(np.clip(round(centre[1]) - crop // 2 + int(rng.integers(-16, 17)), 0, width - crop))
        frames = frames[:, top:top + crop, left:left + crop]
    truth = video.truth[order] if video.truth is not None else None
    masks = video.masks[order].astype(np.float32) if video.masks is not None else None
    return Clip(normalise_video(frames), truth, masks, closed)


# ---------------------------------------------------------------------------------------------- losses
def soft_dice_loss(a, b):
    """1 - soft Dice of [N, 1, H, W] masks in [0, 1]."""
    return 1.0 - (2 * (a * b).sum() + 1.0) / (a.sum() + b.sum() + 1.0)


def lagrangian_fields(fields, pairs: list[tuple[int, int]]):
    """Pair fields [K, 2, H, W] -> {frame: reference -> frame field}: directly for reference pairs, composed along
    consecutive pairs (the last entry of a closed cycle is keyed by the reference frame 0)."""
    from scanai.motion.layers import compose

    if all(a == pairs[0][0] for a, _ in pairs):
        return {b: fields[k:k + 1] for k, (_, b) in enumerate(pairs)}
    out, total = {}, None
    for k, (_, b) in enumerate(pairs):
        total = fields[k:k + 1] if total is None else compose(total, fields[k:k + 1])
        out[b] = total
    return out


def clip_loss(model, clip: Clip, scheme: str, joint: bool, weights: dict[str, float]):
    """Training loss of one clip and its terms (floats) for logging."""
    import torch

    from scanai.motion.layers import warp

    video = torch.from_numpy(clip.video)[:, None]  # [N, 1, H, W]
    pairs = make_pairs(len(video), 0, scheme, closed=clip.closed and scheme == "consecutive")
    fields = model(video[None], pairs, joint=joint)[0]  # [K, 2, H, W]
    first = video[[a for a, _ in pairs]]
    second = video[[b for _, b in pairs]]
    terms = {"similarity": local_ncc_loss(first, warp(second, fields)), "smoothness": smoothness_loss(fields)}
    lagrangian = lagrangian_fields(fields, pairs)
    if len(lagrangian) >= 3:  # cardiac motion is smooth in time: penalise the trajectories' acceleration
        ordered = torch.cat([lagrangian[t] for t in sorted(t for t in lagrangian if t != 0)])
        ordered = torch.cat([torch.zeros_like(ordered[:1]), ordered])
        terms["temporal"] = (ordered[2:] - 2 * ordered[1:-1] + ordered[:-2]).pow(2).sum(dim=1).add(1e-6).sqrt().mean()
    if scheme == "consecutive":
        frames = [t for t in lagrangian if t != 0]
        composed = torch.cat([lagrangian[t] for t in frames])
        terms["long_range"] = local_ncc_loss(video[[0] * len(frames)], warp(video[frames], composed))
        if 0 in lagrangian:
            terms["cycle"] = (lagrangian[0] ** 2).sum(dim=1).add(1e-6).sqrt().mean()  # finite gradient at 0
    if clip.truth is not None:
        frames = [t for t in lagrangian if t != 0]
        estimate = torch.cat([lagrangian[t] for t in frames])
        truth = torch.from_numpy(clip.truth[frames]).permute(0, 3, 1, 2)
        masks = torch.from_numpy(clip.masks)[:, None]
        error = ((estimate - truth) ** 2).sum(dim=1).add(1e-6).sqrt()  # [F, H, W] pixels
        terms["endpoint"] = error.mean() + (error * masks[0]).sum() / (masks[0].sum() * len(frames) + 1.0)
        terms["dice"] = soft_dice_loss(masks[[0] * len(frames)], warp(masks[frames], estimate))
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_set(seed: int, count: int, corrupt: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out phantoms like the acceptance case (96², 20 frames, 3-6 px contraction, ±8° twist, noise 0.01):
    (frames (T, H, W), truth (T, H, W, 2) pixels, ED myocardium mask (H, W))."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        sequence, truth = smooth_motion_phantom(n_frames=20, shape=(1, 96, 96), amplitude_px=rng.uniform(3, 6),
                                                twist_deg=rng.uniform(-8, 8), noise=0.01,
                                                seed=int(rng.integers(1 << 30)))
        frames = sequence.frames[:, 0].copy()
        if corrupt:
            frames = _corrupt_frames(frames, 0, rng)
        cases.append((frames, truth[:, 0][..., [1, 0]].astype(np.float32), myocardium_mask(sequence, 0)[0]))
    return cases


def evaluate(model, cases, joint: bool, scheme: str = "reference") -> dict[str, float]:
    """Mean myocardial end-point error at end-systole and over all frames (pixels) on ``cases``."""
    from scanai.motion.network import _lagrangian_from_pairs, predict_pair_fields

    es_errors, all_errors = [], []
    for frames, truth, mask in cases:
        pairs = make_pairs(len(frames), 0, scheme)
        fields = _lagrangian_from_pairs(predict_pair_fields(model, normalise_video(frames), pairs, joint), pairs,
                                        len(frames), scheme)
        error = np.linalg.norm(fields - truth, axis=-1)[:, mask]  # (T, P)
        es = int(np.argmax(contraction_profile(len(frames))))
        es_errors.append(error[es].mean())
        all_errors.append(error[1:].mean())
    return {"es_epe_px": float(np.mean(es_errors)), "mean_epe_px": float(np.mean(all_errors))}


# ---------------------------------------------------------------------------------------------- main
WEIGHTS = {"similarity": 1.0, "smoothness": 0.5, "long_range": 0.5, "cycle": 0.2, "temporal": 0.2, "endpoint": 1.0,
           "dice": 0.5}


def run_steps(model, step_loss, steps: int, max_lr: float, log_every: int, started: float) -> None:
    """Train ``model`` for ``steps`` Adam steps (one-cycle schedule up to ``max_lr``, gradients clipped at norm 2) on
    ``step_loss()`` -> (loss, {term: float}) of a fresh clip each step, printing the terms' running means every
    ``log_every`` steps (seconds since ``started``)."""
    import torch

    optimiser = torch.optim.Adam(model.parameters(), lr=max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=max_lr, total_steps=steps, pct_start=0.05)
    running: dict[str, float] = {}
    for step in range(steps):
        loss, terms = step_loss()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimiser.step()
        schedule.step()
        for name, value in terms.items():
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        if step % log_every == 0 or step == steps - 1:
            text = " ".join(f"{k} {v:.3f}" for k, v in sorted(running.items()))
            print(f"step {step} ({time.perf_counter() - started:.0f} s): {text}", flush=True)


def training_parser(description: str, steps: int, pool: int, pool_help: str) -> argparse.ArgumentParser:
    """The options every motion training command takes: --out, --seed, --steps, --pool, --threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for the weights and model card")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--pool", type=int, default=pool, help=pool_help)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = training_parser("Train the multi-pair cardiac motion network.", 9000, 120,
                             "phantom videos generated for training")
    parser.add_argument("--native", action="store_true",
                        help=f"real-texture videos {round(100 * (1 - NATIVE_HALVED_SHARE))}%% at the cine's own "
                             "resolution (as the network's passes on the heart see it) instead of "
                             f"{round(100 * (1 - HALVED_SHARE))}%%, real cines at their own resolution only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard:
    from scanai.core.device import set_determinism

    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    phantoms = [random_phantom(rng, int(rng.choice([64, 80])), corrupt=bool(rng.random() < 0.5))
                for _ in range(args.pool)]
    cines = real_cines(shared_data_dir())
    halved_share = NATIVE_HALVED_SHARE if args.native else HALVED_SHARE
    real = real_videos(cines, halved=not args.native)
    textured = []
    for _ in range(args.pool if cines else 0):
        frames, heart = cines[int(rng.integers(len(cines)))]
        textured.append(real_texture_video(frames, rng, heart=heart, halved_share=halved_share))
    print(f"{len(phantoms)} phantom videos, {len(real)} real cine slices, {len(textured)} real-texture videos "
          f"({time.perf_counter() - started:.0f} s)")
    model = build_motion_network(DEFAULT_ARCHITECTURE)

    def step_loss():
        source = rng.random()
        use_real = bool(real) and source < 0.3
        scheme = "consecutive" if rng.random() < 0.3 else "reference"
        closed = scheme == "consecutive" and rng.random() < 0.5
        pool = real if use_real else textured if textured and source < 0.6 else phantoms
        video = pool[int(rng.integers(len(pool)))]
        clip = make_clip(video, rng, max_frames=10, crop=96 if use_real else None,
                         closed=closed)
        joint = rng.random() >= 0.25
        return clip_loss(model, clip, scheme, joint, WEIGHTS)

    run_steps(model, step_loss, args.steps, 3e-4, 100, started)
    model.eval()
    held_out = evaluation_set(args.seed + 1000, 8, corrupt=False)
    corrupted = evaluation_set(args.seed + 2000, 8, corrupt=True)
    metrics = {}
    for name, cases in (("clean", held_out), ("corrupted", corrupted)):
        for joint in (True, False):
            for key, value in evaluate(model, cases, joint).items():
                metrics[f"{name}_{'joint' if joint else 'pairwise'}_{key}"] = round(value, 4)
    print(metrics)
    card = ModelCard(
        name=MODEL_NAME, version="1.0", task="cardiac cine motion estimation (multi-pair, US 2025/0259316)",
        architecture=DEFAULT_ARCHITECTURE,
        input_contract={"dimensions": 2, "min_frames": 2, "size_multiple": 16, "intensity": "cine percentile 1-99"},
        training_data=(f"{args.pool} textured analytic beating-ring phantoms (64-80 px, 12-24 frames, random "
                       "contraction, twist, texture, noise, intensity transform; half with 1-2 corrupted frames), "
                       f"{len(textured)} real-texture videos (a Sunnybrook frame moved by the same analytic motion "
                       "about the LV blood pool found in that frame, ring sized from it, whole-heart shift up to "
                       f"30 % of its radius, {halved_share:.0%} at half the cine's resolution, the rest at its "
                       "own, with through-plane signal "
                       "change: pool and myocardial intensity, "
                       "structure entering the cavity, blur; exact truth) and the "
                       f"{len(cines)} real Sunnybrook SCD0000101 cine slices ({len(real)} videos: "
                       f"{'own resolution' if args.native else 'own and half resolution'}, cropped about the "
                       "heart found in them; images only, unsupervised; "
                       "contours never used)."),
        training_command=TRAINING_COMMAND + (" --native" if args.native else "") + f" --threads {args.threads}",
        metrics=metrics, sha256="",
        notes=(f"{args.steps} Adam steps, one clip per step, seed {args.seed}; metrics on 8 + 8 held-out phantoms "
               "(96², 20 frames, 3-6 px, ±8° twist; the second set with 1-2 corrupted frames), myocardial end-point "
               f"error in pixels. Trained in {time.perf_counter() - started:.0f} s on {args.threads} CPU threads."))
    final = save_model(model, card, args.out)
    print(f"saved {args.out / (MODEL_NAME + '.pt')} sha256 {final.sha256[:12]}")
    return final


if __name__ == "__main__":
    main()
