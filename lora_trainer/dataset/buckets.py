"""kohya-compatible aspect-ratio buckets, the resize/crop/flip that fits an image to its bucket,
and the bucket report (resolution -> count).

Follows sd-scripts' `make_bucket_resolutions` and `BucketManager.select_bucket`, so that a
dataset lands in the same buckets as with kohya (and LoRA metadata `ss_bucket_info` agrees).
"""

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

Size = Tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class BucketSettings:
    resolution: Size = (512, 512)  # the training area is width * height
    min_size: int = 256
    max_size: int = 1024
    step: int = 64
    no_upscale: bool = False  # bucket each image at or below its own size

    def __post_init__(self):
        if self.step <= 0 or self.min_size <= 0 or self.max_size < self.min_size:
            raise ValueError(f"bucket sizes must satisfy 0 < min_size <= max_size and step > 0 (got {self})")
        if min(self.resolution) < self.step:
            raise ValueError(f"resolution {self.resolution} is smaller than the bucket step {self.step}")


@dataclass(frozen=True)
class BucketChoice:
    bucket: Size  # the training size (width, height)
    resized: Size  # the size the image is resized to before cropping to `bucket`
    aspect_error: float


def bucket_resolutions(settings: BucketSettings) -> List[Size]:
    """Every (w, h) on the step grid within [min_size, max_size] whose area fits the resolution."""
    max_area = settings.resolution[0] * settings.resolution[1]
    step = settings.step
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    width = settings.min_size
    while width <= settings.max_size:
        height = min(settings.max_size, int((max_area // width) // step) * step)
        if height >= settings.min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def _round_to_step(value: float, step: int) -> int:
    value = int(value + 0.5)
    return value - value % step


def choose_bucket(size: Size, settings: BucketSettings, resolutions: Optional[Sequence[Size]] = None) -> BucketChoice:
    """kohya's choice for an image of `size` (width, height, after EXIF rotation)."""
    width, height = size
    aspect = width / height
    step = settings.step
    if not settings.no_upscale:
        resolutions = list(resolutions) if resolutions is not None else bucket_resolutions(settings)
        if (width, height) in resolutions:
            bucket = (width, height)
        else:
            bucket = min(resolutions, key=lambda r: abs(r[0] / r[1] - aspect))  # first of equals, as argmin
        resized = cover_size(size, bucket)
    else:
        max_area = settings.resolution[0] * settings.resolution[1]
        if width * height > max_area:
            resized_width = math.sqrt(max_area * aspect)
            resized_height = max_area / resized_width
            w_rounded = _round_to_step(resized_width, step)
            h_in_w = _round_to_step(w_rounded / aspect, step)
            h_rounded = _round_to_step(resized_height, step)
            w_in_h = _round_to_step(h_rounded * aspect, step)
            ar_w = w_rounded / h_in_w if h_in_w else float("inf")
            ar_h = w_in_h / h_rounded if h_rounded else float("inf")
            if abs(ar_w - aspect) < abs(ar_h - aspect):
                resized = (w_rounded, int(w_rounded / aspect + 0.5))
            else:
                resized = (int(h_rounded * aspect + 0.5), h_rounded)
        else:
            resized = (width, height)
        bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
        if bucket[0] > resized[0] or bucket[1] > resized[1]:  # smaller than one step: upscale just to it
            scale = max(bucket[0] / resized[0], bucket[1] / resized[1])
            resized = (max(bucket[0], int(resized[0] * scale + 0.5)), max(bucket[1], int(resized[1] * scale + 0.5)))
    return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect)


def crop_box(resized: Size, bucket: Size, random_crop: bool = False, rng: Optional[random.Random] = None) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of the bucket inside the resized image: centred, or random."""
    extra_w, extra_h = resized[0] - bucket[0], resized[1] - bucket[1]
    if random_crop:
        rng = rng or random.Random()
        left, top = rng.randint(0, max(0, extra_w)), rng.randint(0, max(0, extra_h))
    else:
        left, top = extra_w // 2, extra_h // 2
    return (left, top, left + bucket[0], top + bucket[1])


def cover_size(size: Size, bucket: Size) -> Size:
    """The smallest resize of `size` (aspect kept) that covers `bucket`, as kohya computes it."""
    width, height = size
    scale = bucket[1] / height if width / height > bucket[0] / bucket[1] else bucket[0] / width
    return (max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5)))


def fit_to_bucket(image, bucket: Size, flip: bool = False, random_crop: bool = False,
                  rng: Optional[random.Random] = None, resized: Optional[Size] = None):
    """The RGB image resized to `resized` (default: just covering the bucket; area filter when
    shrinking, Lanczos when enlarging), cropped to the bucket (centre or random) and optionally
    mirrored. Returns (image, (top, left) of the crop), the crop for SDXL's time ids."""
    from PIL import Image

    bucket = (int(bucket[0]), int(bucket[1]))
    resized = tuple(resized) if resized else cover_size(image.size, bucket)
    if image.size != resized:
        shrinking = resized[0] < image.size[0]
        image = image.resize(resized, Image.BOX if shrinking else Image.LANCZOS)
    box = crop_box(resized, bucket, random_crop, rng)
    if box != (0, 0) + tuple(image.size):
        image = image.crop(box)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image, (box[1], box[0])


def make_buckets(resolution: int, min_side: int = 256, max_side: int = 1024, step: int = 64) -> List[Size]:
    """`bucket_resolutions` for a square training resolution (the form training and the UI use)."""
    return bucket_resolutions(BucketSettings((resolution, resolution), min_side, max(max_side, min_side), step))


def assign_bucket(size: Size, buckets: Sequence[Size], resolution: int, no_upscale: bool = False, step: int = 64) -> Size:
    """The bucket of an image of `size` among `buckets` (from `make_buckets`), kohya's choice."""
    if no_upscale:
        settings = BucketSettings((resolution, resolution), step, max(resolution * 4, step), step, no_upscale=True)
        return choose_bucket(size, settings).bucket
    settings = BucketSettings((resolution, resolution), step=step)
    return choose_bucket(size, settings, buckets).bucket


def bucket_report(buckets: Iterable[Size], repeats: Optional[Iterable[int]] = None) -> Dict[str, int]:
    """"WxH" -> number of images (times repeats, if given), largest count first."""
    counts: Counter = Counter()
    for index, (bucket, times) in enumerate(zip(buckets, repeats if repeats is not None else iter(lambda: 1, None))):
        counts[f"{bucket[0]}x{bucket[1]}"] += times
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
