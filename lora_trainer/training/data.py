"""The training set: images turned into cached latents by bucket, captions per step, batch order.

Scanning, captions, images and buckets come from the dataset library; this module only
arranges them for the loop: encode every (image, flip) once with the VAE, then hand out
batches of same-bucket items in a seeded order that a resume can reproduce.
"""

import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

Bucket = Tuple[int, int]  # (width, height)


@dataclass
class TrainItem:
    image_path: str
    caption: str
    folder: str  # kohya folder name, e.g. "10_mychar"
    repeats: int
    is_reg: bool
    bucket: Bucket
    original_size: Tuple[int, int]  # (height, width) before resizing, for SDXL's time ids
    crop_top_left: Tuple[int, int] = (0, 0)
    latents: Dict[bool, torch.Tensor] = field(default_factory=dict)  # flipped? -> [4, h/8, w/8]


def epoch_batches(items: Sequence[TrainItem], batch_size: int, rng: random.Random) -> List[List[int]]:
    """One epoch: every item `repeats` times, batched within buckets, batches shuffled."""
    by_bucket: Dict[Bucket, List[int]] = {}
    for index, item in enumerate(items):
        by_bucket.setdefault(item.bucket, []).extend([index] * max(1, item.repeats))
    batches: List[List[int]] = []
    for bucket in sorted(by_bucket):
        indices = by_bucket[bucket]
        rng.shuffle(indices)
        batches.extend(indices[i:i + batch_size] for i in range(0, len(indices), batch_size))
    rng.shuffle(batches)
    return batches


def steps_per_epoch(items: Sequence[TrainItem], batch_size: int, grad_accum: int) -> int:
    by_bucket: Dict[Bucket, int] = {}
    for item in items:
        by_bucket[item.bucket] = by_bucket.get(item.bucket, 0) + max(1, item.repeats)
    batches = sum(math.ceil(n / batch_size) for n in by_bucket.values())
    return max(1, math.ceil(batches / grad_accum))


def collate_latents(items: Sequence[TrainItem], flips: Sequence[bool]) -> torch.Tensor:
    return torch.stack([item.latents[flip] for item, flip in zip(items, flips)])


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> scaled latents [B, 4, H/8, W/8] (a sample of the posterior, as kohya)."""
    param = next(vae.parameters())
    dist = vae.encode(pixels.to(param.device, param.dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(dist.mean.device, dist.mean.dtype)
    latents = dist.mean + dist.std * noise
    return (latents * vae.config.scaling_factor).float().cpu()
