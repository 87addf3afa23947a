"""From a dataset folder to `TrainItem`s with cached latents, plus the facts for the metadata.

Scanning, captions, image decoding and buckets are the dataset library's; one unreadable image
is reported as a warning and skipped, never fatal. Latents are encoded once per (image, flip).
"""

import random
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import torch

from lora_trainer.dataset import tags as tag_ops
from lora_trainer.dataset.buckets import assign_bucket, fit_to_bucket, make_buckets
from lora_trainer.dataset.caches import LatentCache, content_hash, vae_identity
from lora_trainer.dataset.captions import read_caption
from lora_trainer.dataset.images import ImageProblem, open_rgb
from lora_trainer.dataset.scan import STATE_FOLDER, require_images, scan
from lora_trainer.networks.metadata import DatasetFacts
from lora_trainer.training.data import TrainItem, encode_latents


def _pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def prepare_items(config, bundle, device: torch.device, events, should_stop: Callable[[], bool]) -> Tuple[List[TrainItem], DatasetFacts]:
    """Scan, decode, bucket and VAE-encode the dataset once; returns items and metadata facts."""
    data = config.dataset
    resolution = int(data.resolution)
    buckets = make_buckets(resolution, int(data.min_bucket_reso), int(data.max_bucket_reso)) if data.buckets else [(resolution, resolution)]
    entries = scan(Path(data.dir), data.caption_extension, bool(data.recursive), Path(data.reg_dir) if data.reg_dir else None)
    require_images(entries, Path(data.dir))
    crop_rng = random.Random(int(config.train.seed))
    cache = LatentCache(vae_identity(bundle.vae), Path(data.dir) / STATE_FOLDER / "latents" if data.cache_latents else None)
    vae_device = next(bundle.vae.parameters()).device
    bundle.vae.to(device)
    items: List[TrainItem] = []
    facts = DatasetFacts()
    try:
        for entry in entries:
            if should_stop():
                break
            caption = read_caption(entry.caption)
            text = caption.text.strip()
            if not text:
                text = entry.class_token
                events.warning(f"{entry.image.name}: {'empty' if caption.exists else 'no'} caption; using the folder's class token {text!r}")
            try:
                image = open_rgb(entry.image)
            except ImageProblem as problem:
                events.warning(f"skipped {problem}")
                continue
            bucket = assign_bucket(image.size, buckets, resolution, bool(data.bucket_no_upscale))
            item = TrainItem(str(entry.image), text, entry.folder, entry.repeats, entry.is_reg, bucket, (image.height, image.width))
            image_hash = content_hash(entry.image)
            for flip in ([False, True] if data.flip else [False]):
                fitted, crop = fit_to_bucket(image, bucket, flip, bool(data.random_crop), crop_rng)
                item.crop_top_left = crop
                generator = _latent_generator(int(config.train.seed), image_hash, bucket, flip)
                item.latents[flip] = cache.get(image_hash, bucket, flip, lambda: encode_latents(bundle.vae, _pixels(fitted)[None], generator)[0])
            items.append(item)
            _count(facts, item)
    finally:
        bundle.vae.to(vae_device)
    if not any(not item.is_reg for item in items):
        from lora_trainer.errors import DatasetError

        raise DatasetError(f"none of the images in {data.dir} could be read; see the warnings above")
    return items, facts


def _latent_generator(seed: int, image_hash: str, bucket, flip: bool) -> torch.Generator:
    """The posterior sample of one (image, bucket, flip) draws from its own seed, so a latent is
    the same whether it was encoded now or read from the disk cache another run (with flips, or
    other images) wrote: results never depend on what ran on the dataset before."""
    import hashlib

    key = f"{seed}:{image_hash}:{bucket[0]}x{bucket[1]}:{int(flip)}".encode()
    return torch.Generator().manual_seed(int(hashlib.sha1(key).hexdigest()[:15], 16))


def _count(facts: DatasetFacts, item: TrainItem) -> None:
    entry = facts.dirs.setdefault(item.folder, {"n_repeats": item.repeats, "img_count": 0})
    entry["img_count"] += 1
    key = f"{item.bucket[0]}x{item.bucket[1]}"
    facts.buckets[key] = facts.buckets.get(key, 0) + 1
    if item.is_reg:
        facts.num_reg_images += item.repeats
        return
    facts.num_train_images += item.repeats
    counts = facts.tag_frequency.setdefault(item.folder, {})
    for tag in tag_ops.parse_tags(item.caption):
        counts[tag] = counts.get(tag, 0) + 1

