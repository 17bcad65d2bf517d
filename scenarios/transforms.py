"""Pure tensor transforms that turn one source into the tasks of a stream."""

from __future__ import annotations

import numpy as np
import torch

INTERPOLATIONS = ("bilinear", "nearest")


def task_generator(seed: int, purpose: int, task: int) -> torch.Generator:
    """A generator for one (seed, purpose, task): task k's draw does not depend on n_tasks,
    so a stream of 10 tasks is the prefix of the same stream with 20."""
    state = np.random.SeedSequence([seed, purpose, task]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def pixel_permutation(n_pixels: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation of ``n_pixels`` positions."""
    return torch.randperm(n_pixels, generator=generator)


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Apply one permutation of pixel positions to every example.

    Images ``(N, C, H, W)`` have their H*W positions permuted, the channels of one position
    moving together; flat vectors ``(N, D)`` have their D features permuted.
    """
    if x.dim() == 2:
        return x[:, perm].contiguous()
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w).contiguous()


def rotate_images(x: torch.Tensor, angle: float, *, interpolation: str = "bilinear") -> torch.Tensor:
    """Rotate every image ``(N, C, H, W)`` by ``angle`` degrees counter-clockwise about its
    centre; pixels that come from outside the image are 0. Multiples of 90 degrees are
    exact (``torch.rot90``), so 0 degrees is the identity to the bit."""
    quarter_turns, rest = divmod(float(angle), 90.0)
    if rest == 0.0 and x.shape[-1] == x.shape[-2]:
        return torch.rot90(x, int(quarter_turns) % 4, dims=(-2, -1)).contiguous()
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate

    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.NEAREST
    return rotate(x, float(angle), interpolation=mode, fill=0.0).contiguous()
