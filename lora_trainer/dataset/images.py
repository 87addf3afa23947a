"""Opening training images robustly: any mode to RGB, EXIF orientation, one bad file at a time.

Image files are only ever read. A file that cannot be used raises `ImageProblem` with the
reason (truncated, not an image, too large, unreadable) for the caller to report and skip.
"""

from pathlib import Path
from typing import Tuple

from lora_trainer.errors import DatasetError

DEFAULT_MAX_PIXELS = 8192 * 8192  # larger is refused as a decompression bomb (per image)


class ImageProblem(DatasetError):
    """One image that cannot be used; the message says why."""


def _flatten(image, background: Tuple[int, int, int]):
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray((array / top * 255.0).clip(0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        base = Image.new("RGBA", image.size, background + (255,))
        return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: Path, background: Tuple[int, int, int] = (255, 255, 255), max_pixels: int = DEFAULT_MAX_PIXELS):
    """The image as an RGB PIL image (first frame, EXIF-rotated, transparency on `background`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ImageProblem(f"{path.name}: {image.width}x{image.height} is larger than allowed ({max_pixels} pixels); refused as a possible decompression bomb")
            image.seek(0)
            image.load()
            rotated = ImageOps.exif_transpose(image)
            return _flatten(rotated, background)
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem(f"{path.name}: refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageProblem(f"{path.name}: not an image file (or a format Pillow cannot read)") from exc
    except PermissionError as exc:
        raise ImageProblem(f"{path.name}: cannot be read (permission denied)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated or corrupt" if "truncated" in str(exc) or isinstance(exc, (SyntaxError, ValueError)) else str(exc)
        raise ImageProblem(f"{path.name}: cannot be decoded ({reason})") from exc


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
