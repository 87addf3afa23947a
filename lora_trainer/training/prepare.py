"""From a dataset folder to `TrainItem`s with cached latents, plus the facts for the metadata.

Folder layout, captions and image decoding follow the dataset library's conventions (kohya
`<repeats>_<name>/` folders, `.txt` captions, EXIF orientation, transparency on white); one
unreadable image or caption is reported as a warning and skipped, never fatal.
"""

import math
import random
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from lora_trainer.errors import DatasetError
from lora_trainer.networks.metadata import DatasetFacts
from lora_trainer.training.data import Bucket, TrainItem, encode_latents

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")


def kohya_buckets(resolution: int, min_side: int = 256, max_side: int = 1024, step: int = 64) -> List[Bucket]:
    """Every (w, h) on the step grid within [min_side, max_side] whose area fits resolution^2."""
    area = resolution * resolution
    side = resolution // step * step
    buckets = {(side, side)}
    for width in range(-(-min_side // step) * step, max_side + 1, step):
        height = min(max_side, (area // width) // step * step)
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def choose_bucket(size: Tuple[int, int], buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (width, height)."""
    ratio = size[0] / size[1]
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - math.log(ratio)), -b[0] * b[1]))


def _folders(root: Path, is_reg: bool) -> List[Tuple[Path, str, int]]:
    """(folder, kohya name, repeats): `<n>_<name>/` subfolders, else the folder itself once."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _KOHYA_FOLDER.match(p.name))
    if subfolders:
        return [(p, p.name, int(_KOHYA_FOLDER.match(p.name).group(1))) for p in subfolders]
    return [(root, f"1_{root.name}", 1)]


def _class_token(folder_name: str) -> str:
    match = _KOHYA_FOLDER.match(folder_name)
    return (match.group(2) if match else folder_name).replace("_", " ")


def _read_caption(image: Path, extension: str) -> Optional[str]:
    path = image.with_suffix(extension)
    if not path.is_file():
        return None
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return " ".join(text.split()) or None


def _load_rgb(path: Path):
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def _to_pixels(image, bucket: Bucket, flip: bool) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Resize to cover the bucket, centre-crop; returns ([3, H, W] in [-1, 1], crop top-left)."""
    import numpy as np
    from PIL import Image

    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.LANCZOS)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    if flip:
        cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
    array = torch.from_numpy(np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    return array, (top, left)


def scan_items(config, warn: Callable[[str], None]) -> List[Tuple[Path, str, str, int, bool]]:
    """(image, caption, folder name, repeats, is_reg) for the dataset and the optional reg folder."""
    roots = [(Path(config.dataset.dir), False)]
    if getattr(config.dataset, "reg_dir", ""):
        roots.append((Path(config.dataset.reg_dir), True))
    found = []
    for root, is_reg in roots:
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
        for folder, name, repeats in _folders(root, is_reg):
            pattern = "**/*" if getattr(config.dataset, "recursive", False) else "*"
            for image in sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
                caption = _read_caption(image, config.dataset.caption_extension)
                if caption is None:
                    caption = _class_token(name)
                    warn(f"{image.name}: no caption ({config.dataset.caption_extension}); using the folder's class token {caption!r}")
                found.append((image, caption, name, repeats, is_reg))
    if not any(not entry[4] for entry in found):
        raise DatasetError(
            f"no training images in {config.dataset.dir}: put images (png, jpg, webp, bmp, gif) there, "
            f"or in kohya subfolders named <repeats>_<name> such as 10_mychar"
        )
    return found


def prepare_items(config, bundle, device: torch.device, events, should_stop: Callable[[], bool]) -> Tuple[List[TrainItem], DatasetFacts]:
    """Scan, decode, bucket and VAE-encode the dataset once; returns items and metadata facts."""
    resolution = int(config.dataset.resolution)
    if config.dataset.buckets:
        buckets = kohya_buckets(resolution, int(getattr(config.dataset, "min_bucket_reso", 256)),
                                int(getattr(config.dataset, "max_bucket_reso", max(1024, resolution))))
    else:
        buckets = [(resolution, resolution)]
    generator = torch.Generator().manual_seed(int(config.train.seed))
    vae_device = next(bundle.vae.parameters()).device
    bundle.vae.to(device)
    items: List[TrainItem] = []
    facts = DatasetFacts()
    try:
        for image_path, caption, folder, repeats, is_reg in scan_items(config, events.warning):
            if should_stop():
                break
            try:
                image = _load_rgb(image_path)
            except Exception as exc:  # one unreadable file must not end the run
                events.warning(f"{image_path.name}: skipped, the image cannot be read ({exc})")
                continue
            bucket = choose_bucket(image.size, buckets)
            item = TrainItem(str(image_path), caption, folder, repeats, is_reg, bucket, (image.height, image.width))
            for flip in ([False, True] if config.dataset.flip else [False]):
                pixels, crop = _to_pixels(image, bucket, flip)
                item.crop_top_left = crop
                item.latents[flip] = encode_latents(bundle.vae, pixels[None], generator)[0]
            items.append(item)
            _count(facts, item)
    finally:
        bundle.vae.to(vae_device)
    return items, facts


def _count(facts: DatasetFacts, item: TrainItem) -> None:
    entry = facts.dirs.setdefault(item.folder, {"n_repeats": item.repeats, "img_count": 0})
    entry["img_count"] += 1
    key = f"{item.bucket[0]}x{item.bucket[1]}"
    facts.buckets[key] = facts.buckets.get(key, 0) + 1
    if item.is_reg:
        facts.num_reg_images += item.repeats
        return
    facts.num_train_images += item.repeats
    tags = facts.tag_frequency.setdefault(item.folder, {})
    for tag in (t.strip() for t in item.caption.split(",")):
        if tag:
            tags[tag] = tags.get(tag, 0) + 1


def training_caption(caption: str, dataset, rng: random.Random) -> str:
    """The caption as seen in one step: caption dropout, tag dropout and shuffling after keep_tokens."""
    if dataset.caption_dropout and rng.random() < float(dataset.caption_dropout):
        return ""
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    keep = max(0, int(dataset.keep_tokens))
    fixed, rest = tags[:keep], tags[keep:]
    if dataset.tag_dropout:
        rest = [t for t in rest if rng.random() >= float(dataset.tag_dropout)]
    if dataset.shuffle_tags:
        rng.shuffle(rest)
    return ", ".join(fixed + rest)
