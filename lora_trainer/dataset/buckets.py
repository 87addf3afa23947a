"""kohya-compatible aspect-ratio buckets: choose one per image, resize to cover it, crop.

Buckets are the (width, height) pairs on a 64-pixel grid between the min and max side whose
area fits resolution^2 (plus the square). Each image goes to the bucket of closest aspect
ratio; with `no_upscale`, small images get a bucket no larger than themselves instead.
"""

import math
import random
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

Bucket = Tuple[int, int]  # (width, height)
STEP = 64


def make_buckets(resolution: int, min_side: int = 256, max_side: int = 1024, step: int = STEP) -> List[Bucket]:
    area = resolution * resolution
    side = max(step, resolution // step * step)
    buckets = {(side, side)}
    for width in range(-(-min_side // step) * step, max_side + 1, step):
        height = min(max_side, (area // width) // step * step)
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def choose_bucket(size: Tuple[int, int], buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to (width, height); ties go to the larger one."""
    ratio = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def no_upscale_bucket(size: Tuple[int, int], resolution: int, step: int = STEP) -> Bucket:
    """For an image smaller than the training area: its own size, rounded down to the grid."""
    width, height = size
    scale = min(1.0, math.sqrt(resolution * resolution / (width * height)))
    return (max(step, int(width * scale) // step * step), max(step, int(height * scale) // step * step))


def assign_bucket(size: Tuple[int, int], buckets: Sequence[Bucket], resolution: int, no_upscale: bool = False) -> Bucket:
    if no_upscale and size[0] * size[1] < resolution * resolution:
        return no_upscale_bucket(size, resolution)
    return choose_bucket(size, buckets)


def fit_to_bucket(image, bucket: Bucket, flip: bool = False, random_crop: bool = False, rng: Optional[random.Random] = None):
    """Resize `image` (PIL) to cover the bucket, crop to it; returns (image, (top, left))."""
    from PIL import Image

    width, height = bucket
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.LANCZOS) if size != image.size else image
    spare_x, spare_y = resized.width - width, resized.height - height
    if random_crop:
        rng = rng or random.Random()
        left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
    else:
        left, top = spare_x // 2, spare_y // 2
    cropped = resized.crop((left, top, left + width, top + height))
    if flip:
        cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
    return cropped, (top, left)


def bucket_report(buckets: Iterable[Bucket]) -> Dict[str, int]:
    """{"512x768": count} sorted by resolution."""
    counts = Counter(f"{w}x{h}" for w, h in buckets)
    return dict(sorted(counts.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("x"))))
