"""The multi-pair motion network's torch modules and its field operations (imports torch; built by
:func:`scanai.motion.network.build_motion_network`, see that module for the architecture).

Fields are pull-back displacements ``[N, 2, H, W]`` in pixels, channels (dy, dx) = (rows, columns); with
``dims=3`` volumes ``[N, 1, K, J, I]`` and fields ``[N, 3, K, J, I]`` in voxels, channels (dk, dj, di).
"""

from __future__ import annotations

from scanai.motion.pairs import closes_cycle
from scanai.nn.backend import functional, nn, torch


def convolution(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for ``dims`` spatial axes."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def conv(cin: int, cout: int, stride: int = 1, dims: int = 2) -> nn.Module:
    """3x3 (x3) convolution (padding 1, bias) and LeakyReLU(0.2): [N, cin, *S] -> [N, cout, *S / stride]."""
    return nn.Sequential(convolution(dims)(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, *s] resized (bi/trilinearly, align_corners=False) to the spatial size of ``like`` [N, *, *S]."""
    size = like.shape[2:]
    return functional.interpolate(x, size=size, mode="bilinear" if len(size) == 2 else "trilinear",
                                  align_corners=False)


def warp(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """image [N, C, H, W] (or [N, C, K, J, I]) sampled at x + u(x), (tri)linearly; displacement [N, 2, H, W]
    (dy, dx) (or [N, 3, K, J, I], (dk, dj, di)) in pixels; border values outside the grid."""
    sizes = image.shape[2:]
    coordinates = []
    for axis, size in enumerate(sizes):
        shape = [1] * (len(sizes) + 1)
        shape[axis + 1] = size
        index = torch.arange(size, device=image.device, dtype=image.dtype).view(shape)
        coordinates.append((index + displacement[:, axis]) * (2.0 / max(size - 1, 1)) - 1.0)
    # grid_sample takes the coordinates fastest axis first: (x, y) or (i, j, k)
    return functional.grid_sample(image, torch.stack(coordinates[::-1], dim=-1), mode="bilinear",
                                  padding_mode="border", align_corners=True)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Field of 'first, then second' for pull-back fields [N, D, *S] (D = 2 or 3 spatial axes S):
    u(x) = first(x) + second(x + first(x))."""
    return first + warp(second, first)


def integrate(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Scaling and squaring of a stationary velocity field [N, D, *S] (pixels) -> displacement."""
    displacement = velocity / (2**steps)
    for _ in range(steps):
        displacement = compose(displacement, displacement)
    return displacement


class SiameseEncoder(nn.Module):
    """One encoder for every image (claim 5): [N, 1, *S] -> features at 1/2, 1/4, 1/8, 1/16 resolution."""

    def __init__(self, widths: tuple[int, ...], dims: int = 2):
        super().__init__()
        levels, cin = [], 1
        for width in widths:
            levels.append(nn.Sequential(conv(cin, width, 2, dims), conv(width, width, dims=dims)))
            cin = width
        self.levels = nn.ModuleList(levels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], images
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class ConvGRU(nn.Module):
    """Convolutional GRU over the pair axis: [B, K, C, *s] -> hidden states [B, K, hidden, *s]."""

    def __init__(self, cin: int, hidden: int, dims: int = 2):
        super().__init__()
        self.hidden = hidden
        self.gates = convolution(dims)(cin + hidden, 2 * hidden, 3, padding=1)
        self.candidate = convolution(dims)(cin + hidden, hidden, 3, padding=1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        update, reset = torch.sigmoid(self.gates(torch.cat([x, state], 1))).chunk(2, 1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * state], 1)))
        return (1 - update) * state + update * candidate

    def forward(self, sequence: torch.Tensor, joint: bool = True, reverse: bool = False) -> torch.Tensor:
        batch, pairs, _, *spatial = sequence.shape
        if not joint:  # every pair on its own: one step from a zero state, all pairs at once
            flat = sequence.reshape(batch * pairs, *sequence.shape[2:])
            state = flat.new_zeros(batch * pairs, self.hidden, *spatial)
            return self.step(flat, state).reshape(batch, pairs, self.hidden, *spatial)
        state = sequence.new_zeros(batch, self.hidden, *spatial)
        outputs: list[torch.Tensor] = [state] * pairs
        for k in (reversed(range(pairs)) if reverse else range(pairs)):
            state = self.step(sequence[:, k], state)
            outputs[k] = state
        return torch.stack(outputs, dim=1)


class TemporalRefiner(nn.Module):
    """Forward (and backward) ConvGRU over the pairs at one scale; output channels 2 * hidden (or hidden)."""

    def __init__(self, cin: int, hidden: int, bidirectional: bool, dims: int = 2):
        super().__init__()
        self.forward_gru = ConvGRU(cin, hidden, dims)
        self.backward_gru = ConvGRU(cin, hidden, dims) if bidirectional else None
        self.out_channels = hidden * (2 if bidirectional else 1)

    def forward(self, pair_features: torch.Tensor, joint: bool) -> torch.Tensor:
        refined = self.forward_gru(pair_features, joint)
        if self.backward_gru is not None:
            refined = torch.cat([refined, self.backward_gru(pair_features, joint, reverse=True)], dim=2)
        return refined


class MultiPairMotionNet(nn.Module):
    """See :mod:`scanai.motion.network`. forward(video [B, T, 1, *S], pairs, joint) -> [B, K, D, *S] pixels
    (voxels), D = ``dims`` = len(S), 2 or 3."""

    def __init__(self, encoder_widths=(16, 32, 48, 64), gru_hidden=(32, 48), decoder_widths=(64, 48, 32, 16),
                 bidirectional: bool = True, diffeomorphic: bool = True, integration_steps: int = 7, dims: int = 2):
        super().__init__()
        e0, e1, e2, e3 = encoder_widths
        d3, d2, d1, d0 = decoder_widths
        self.dims = dims
        self.diffeomorphic = diffeomorphic
        self.integration_steps = integration_steps
        self.encoder = SiameseEncoder(tuple(encoder_widths), dims)
        self.refine2 = TemporalRefiner(2 * e2, gru_hidden[0], bidirectional, dims)
        self.refine3 = TemporalRefiner(2 * e3, gru_hidden[1], bidirectional, dims)
        self.decode3 = nn.Sequential(conv(2 * e3 + self.refine3.out_channels, d3, dims=dims),
                                     conv(d3, d3, dims=dims))
        self.decode2 = nn.Sequential(conv(d3 + 2 * e2 + self.refine2.out_channels, d2, dims=dims),
                                     conv(d2, d2, dims=dims))
        self.decode1 = nn.Sequential(conv(d2 + 2 * e1, d1, dims=dims), conv(d1, d1, dims=dims))
        self.decode0 = nn.Sequential(conv(d1 + 2 * e0, d0, dims=dims), conv(d0, d0, dims=dims))
        self.head = convolution(dims)(d0, dims, 3, padding=1)
        for module in self.modules():  # variance-preserving start, so the recurrent path carries signal
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, a=0.2)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, video: torch.Tensor, pairs: list[tuple[int, int]], joint: bool = True) -> torch.Tensor:
        batch, frames = video.shape[:2]
        features = self.encoder(video.reshape(batch * frames, *video.shape[2:]))
        first = [a for a, _ in pairs]
        second = [b for _, b in pairs]
        count = len(pairs)

        def pair_features(level: torch.Tensor) -> torch.Tensor:  # [B, K, 2C, h, w]
            per_frame = level.reshape(batch, frames, *level.shape[1:])
            return torch.cat([per_frame[:, first], per_frame[:, second]], dim=2)

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch * count, *x.shape[2:])

        p0, p1, p2, p3 = (pair_features(level) for level in features)
        r2, r3 = self.refine2(p2, joint), self.refine3(p3, joint)
        x = self.decode3(torch.cat([flat(p3), flat(r3)], 1))
        x = self.decode2(torch.cat([upsample(x, flat(p2)), flat(p2), flat(r2)], 1))
        x = self.decode1(torch.cat([upsample(x, flat(p1)), flat(p1)], 1))
        x = self.decode0(torch.cat([upsample(x, flat(p0)), flat(p0)], 1))
        field = self.head(x)  # at 1/2 resolution, in half-resolution pixels (voxels)
        if joint and closes_cycle(pairs):
            field = field.reshape(batch, count, *field.shape[1:])
            field = (field - field.mean(dim=1, keepdim=True)).flatten(0, 1)
        if self.diffeomorphic:
            field = integrate(field, self.integration_steps)
        size = video.shape[3:]
        field = 2.0 * functional.interpolate(field, size=size, mode="bilinear" if self.dims == 2 else "trilinear",
                                             align_corners=True)
        return field.reshape(batch, count, self.dims, *size)
