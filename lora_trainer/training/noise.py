"""Noise and timesteps for one training step, from the model's own schedule.

Noise offset and multi-resolution ("pyramid") noise follow kohya sd-scripts' definitions;
zero-terminal-SNR rescales the schedule's betas (Lin et al. 2023) through diffusers.
"""

from typing import Optional

import torch
import torch.nn.functional as F


def sample_noise(latents: torch.Tensor, generator: Optional[torch.Generator], offset: float = 0.0,
                 multires_iterations: int = 0, multires_discount: float = 0.3) -> torch.Tensor:
    """Gaussian noise shaped like `latents`, with optional offset and multi-resolution noise."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
    if offset:
        b, c = latents.shape[:2]
        noise = noise + offset * torch.randn((b, c, 1, 1), generator=generator, device=latents.device)
    if multires_iterations:
        noise = _add_multires_noise(noise, generator, multires_iterations, multires_discount)
    return noise.to(latents.dtype)


def _add_multires_noise(noise: torch.Tensor, generator: Optional[torch.Generator], iterations: int, discount: float) -> torch.Tensor:
    b, c, h, w = noise.shape
    for i in range(iterations):
        factor = 2 ** (i + 1)
        size = (max(1, h // factor), max(1, w // factor))
        if size == (1, 1) and i > 0:
            break
        low = torch.randn((b, c) + size, generator=generator, device=noise.device)
        noise = noise + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * discount ** (i + 1)
    return noise / noise.std()


def sample_timesteps(batch: int, generator: Optional[torch.Generator], low: int, high: int, device) -> torch.Tensor:
    """Uniform integer timesteps in [low, high)."""
    return torch.randint(low, high, (batch,), generator=generator, device=device, dtype=torch.long)


def zero_terminal_snr(scheduler) -> None:
    """Rescale the scheduler's betas so the last timestep has zero SNR (in place)."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = rescale_zero_terminal_snr(scheduler.betas)
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
