"""Pure tensor transforms that turn one source into the tasks of a stream."""

from __future__ import annotations

import numpy as np
import torch

INTERPOLATIONS = ("nearest", "bilinear")


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


def rotate_images(x: torch.Tensor, angle: float, *, interpolation: str = "nearest") -> torch.Tensor:
    """Rotate every image ``(N, C, H, W)`` by ``angle`` degrees counter-clockwise about its
    centre, channel by channel, with PIL's ``Image.rotate`` (same size, pixels from outside the
    image are 0), as GEM's ``data/mnist_rotations.py`` makes the Rotations data that MER and
    La-MAML use: ``nearest`` is PIL's default resampling (the papers' data), ``bilinear`` the
    smooth alternative. Nearest neighbour only selects pixels, so rotating float images gives
    the very pixels a uint8 ('L') rotation gives. Multiples of 90 degrees are exact
    (PIL transposes), so 0 degrees is the identity to the bit."""
    from PIL import Image

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    resample = Image.Resampling.NEAREST if interpolation == "nearest" else Image.Resampling.BILINEAR
    arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
    out = np.empty_like(arr)
    for n in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            out[n, c] = np.asarray(Image.fromarray(np.ascontiguousarray(arr[n, c])).rotate(float(angle), resample=resample))
    return torch.from_numpy(out)
