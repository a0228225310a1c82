"""Exact frame averages of exponentials convolved with a piecewise-linear input function (:class:`FrameConvolver`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

_TAYLOR_TERMS = 16
_TAYLOR_LIMIT = 0.5


def _namespace(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def _phis(x: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``φk(x) = Σ_n (-x)^n / (n + k)!`` for k = 1, 2, 3 (elementwise; real or complex; x >= 0 real part).

    φ1 = (1 - e^{-x}) / x, φ2 = (1 - φ1) / x, φ3 = (1/2 - φ2) / x; a Taylor series is used where |x| < 0.5.
    numpy: each branch only where it is used, with as many Taylor terms as the largest |x| needs.
    """
    if xp is np:
        return _phis_numpy(np.asarray(x))
    small = xp.abs(x) < _TAYLOR_LIMIT
    safe = xp.where(small, xp.ones_like(x), x)
    e = xp.exp(-safe)
    d1 = (1.0 - e) / safe
    d2 = (1.0 - d1) / safe
    d3 = (0.5 - d2) / safe
    factorials = [1.0]
    for n in range(1, _TAYLOR_TERMS + 4):
        factorials.append(factorials[-1] * n)
    taylor = []
    for k in (1, 2, 3):
        value = 0.0 * x + 1.0 / factorials[_TAYLOR_TERMS - 1 + k]
        for n in range(_TAYLOR_TERMS - 2, -1, -1):
            value = value * (-x) + 1.0 / factorials[n + k]
        taylor.append(value)
    return (xp.where(small, taylor[0], d1), xp.where(small, taylor[1], d2), xp.where(small, taylor[2], d3))


def _taylor(x: np.ndarray, terms: int) -> list[np.ndarray]:
    """φ1, φ2, φ3 of ``x`` by their Taylor series with ``terms`` terms (Horner)."""
    factorials = [1.0]
    for n in range(1, terms + 4):
        factorials.append(factorials[-1] * n)
    out = []
    for k in (1, 2, 3):
        value = np.full_like(x, 1.0 / factorials[terms - 1 + k])
        for n in range(terms - 2, -1, -1):
            value *= -x
            value += 1.0 / factorials[n + k]
        out.append(value)
    return out


def _phis_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_phis` for numpy arrays (real or complex)."""
    magnitude = np.abs(x)
    small = magnitude < _TAYLOR_LIMIT
    everything = bool(small.all())
    result = [np.empty_like(x, dtype=np.result_type(x, 1.0)) for _ in range(3)]
    if small.any():
        xs = x if everything else x[small]
        largest = float(magnitude.max() if everything else magnitude[small].max())
        terms, bound = 2, largest * largest / 2.0
        while bound >= 1e-18 and terms < _TAYLOR_TERMS:  # truncation error |x|^N / N!
            terms += 1
            bound *= largest / terms
        for out, value in zip(result, _taylor(xs, terms), strict=True):
            if everything:
                out[...] = value
            else:
                out[small] = value
    if not everything:
        xl = x[~small]
        d1 = (1.0 - np.exp(-xl)) / xl
        d2 = (1.0 - d1) / xl
        d3 = (0.5 - d2) / xl
        for out, value in zip(result, (d1, d2, d3), strict=True):
            out[~small] = value
    return result[0], result[1], result[2]


@dataclass(frozen=True, eq=False)
class FrameConvolver:
    """Exact frame averages of ``y_a(t) = ∫_0^t Cp(τ) e^{-a (t - τ)} dτ`` for one input function and timing.

    The input function is linear between its samples (ramp from 0 at injection, constant after the last
    sample), so on each segment between the merged time points (input samples and frame boundaries) y obeys
    ``y' = Cp - a y`` with a closed-form solution. Segment contributions are combined per interval between
    frame boundaries with decaying exponentials only (no overflow, no cancellation, valid at a = 0), then a
    short recurrence over the intervals gives ``∫ y`` over each frame. Cost: O(N M) for N exponents and M
    merged segments.

    Arrays (times in min): ``h``, ``a``, ``s``, ``tail`` (M,) segment length, Cp at its start, Cp slope, time
    from its end to the end of its interval; ``interval`` (M,) interval index; ``starts`` (K,) first segment of
    each interval; ``lengths`` (K,) interval lengths; ``frame_begin``/``frame_end`` (T,) boundary indices.
    """

    h: np.ndarray
    a: np.ndarray
    s: np.ndarray
    tail: np.ndarray
    interval: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    frame_begin: np.ndarray
    frame_end: np.ndarray
    duration_min: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, input_function: InputFunction, timing: FrameTiming) -> FrameConvolver:
        """Merge the input function's samples with the frame boundaries (up to the last frame's end)."""
        boundaries_s = np.unique(np.concatenate([[0.0], timing.start_s, timing.end_s]))
        end_s = boundaries_s[-1]
        knots = input_function.t_s[(input_function.t_s > 0) & (input_function.t_s < end_s)]
        points_s = np.unique(np.concatenate([boundaries_s, knots]))
        cp = input_function.value_at(points_s)
        t = points_s / 60.0
        h = np.diff(t)
        slope = np.diff(cp) / h
        boundaries = boundaries_s / 60.0
        interval = np.searchsorted(boundaries, t[:-1], side="right") - 1
        tail = boundaries[interval + 1] - t[1:]
        starts = np.searchsorted(interval, np.arange(boundaries.size - 1))
        frame_begin = np.searchsorted(boundaries_s, timing.start_s)
        frame_end = np.searchsorted(boundaries_s, timing.end_s)
        return cls(h, cp[:-1], slope, np.maximum(tail, 0.0), interval, starts, np.diff(boundaries), frame_begin,
                   frame_end, timing.duration_s / 60.0)

    def _arrays(self, like: Any) -> dict[str, Any]:
        """The segment arrays in ``like``'s array library (numpy, or torch on ``like``'s device)."""
        if isinstance(like, np.ndarray):
            return {name: getattr(self, name) for name in ("h", "a", "s", "tail", "lengths")}
        key = (str(like.device),)
        if key not in self._cache:
            import torch

            self._cache[key] = {name: torch.as_tensor(getattr(self, name), dtype=torch.float64, device=like.device)
                                for name in ("h", "a", "s", "tail", "lengths")}
            self._cache[key]["interval"] = torch.as_tensor(self.interval, device=like.device)
        return self._cache[key]

    def frame_means(self, alpha: Any) -> Any:
        """Frame averages (N, T) of ``e^{-a t} ⊗ Cp`` (activity·min) for exponents ``alpha`` (N,) in 1/min.

        ``alpha`` may be a numpy array or a torch tensor, real or complex (complex-step derivatives).
        """
        xp = _namespace(alpha)
        arrays = self._arrays(alpha)
        h, a, s, tail, lengths = (arrays[k] for k in ("h", "a", "s", "tail", "lengths"))
        rate = alpha[:, None]
        p1, p2, p3 = _phis(rate * h, xp)
        end_value = a * h * p1 + s * h * h * p2                       # y at the segment end, from this segment
        t1, _, _ = _phis(rate * tail, xp)
        to_boundary = end_value * xp.exp(-rate * tail)               # its part of y at the interval's end
        area = a * h * h * p2 + s * h**3 * p3 + end_value * tail * t1  # its part of ∫ y over the interval
        if xp is np:
            reach = np.add.reduceat(to_boundary, self.starts, axis=1)
            integral = np.add.reduceat(area, self.starts, axis=1)
        else:
            shape = (alpha.shape[0], self.lengths.size)
            reach = xp.zeros(shape, dtype=to_boundary.dtype, device=alpha.device).index_add_(
                1, arrays["interval"], to_boundary)
            integral = xp.zeros(shape, dtype=area.dtype, device=alpha.device).index_add_(1, arrays["interval"], area)
        q1, _, _ = _phis(rate * lengths, xp)
        decay = xp.exp(-rate * lengths)
        carried = lengths * q1
        y = 0.0 * alpha
        cumulative = [0.0 * alpha]
        for k in range(self.lengths.size):
            cumulative.append(cumulative[-1] + y * carried[:, k] + integral[:, k])
            y = y * decay[:, k] + reach[:, k]
        stacked = xp.stack(cumulative, 1)
        begin, end = self.frame_begin, self.frame_end
        if xp is not np:
            begin, end = (xp.as_tensor(v, device=alpha.device) for v in (begin, end))
            duration = xp.as_tensor(self.duration_min, dtype=xp.float64, device=alpha.device)
        else:
            duration = self.duration_min
        return (stacked[:, end] - stacked[:, begin]) / duration
