"""Opening training images robustly: any mode to RGB, EXIF orientation, one bad file at a time.

Image files are only ever opened for reading. A file that cannot be used raises
`ImageProblem` with the reason (truncated, not an image, too large, unreadable) for the
caller to report and skip; nothing here lets one bad file end a run. Truncated files are
refused even where another extension has set Pillow's global `LOAD_TRUNCATED_IMAGES`.
"""

import hashlib
import io
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Tuple

from lora_trainer.errors import DatasetError

DEFAULT_MAX_PIXELS = 8192 * 8192  # larger is refused as a possible decompression bomb (per image)
WHITE = (255, 255, 255)
_TRUNCATED_LOCK = threading.Lock()


class ImageProblem(DatasetError):
    """One image that cannot be used; the message says which and why."""


@contextmanager
def _strict_truncation():
    from PIL import ImageFile

    if not ImageFile.LOAD_TRUNCATED_IMAGES and not _TRUNCATED_LOCK.locked():  # the default: no lock to share
        yield
        return
    with _TRUNCATED_LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def to_rgb(image, background: Tuple[int, int, int] = WHITE, sixteen_bit: bool = False):
    """Any Pillow mode as RGB: 16-bit scaled down, palette and alpha composited on `background`."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if (sixteen_bit or image.mode.startswith("I;16") or array.max() > 255) else 255.0
        image = Image.fromarray((array / top * 255.0 + 0.5).clip(0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "L" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGB" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        base = Image.new("RGBA", image.size, tuple(background) + (255,))
        return Image.alpha_composite(base, image).convert("RGB")
    return image.convert("RGB")


def _open_checked(path: Path, max_pixels: int, finish: Callable, keep_bytes: Optional[list] = None,
                  prepare: Optional[Callable] = None):
    """Open the image, refuse bombs and empty images, decode it completely (truncation is an
    error), and return `finish(image)`; every failure becomes an `ImageProblem` naming the file.
    With `keep_bytes`, the file's bytes are read once and appended to it (for hashing);
    `prepare(image)` runs before the decode (e.g. `draft` for a reduced-size JPEG decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open(path, "rb") as handle:
                source = handle
                if keep_bytes is not None:
                    data = handle.read()
                    keep_bytes.append(data)
                    source = io.BytesIO(data)
                with Image.open(source) as image:
                    if image.width * image.height > max_pixels:
                        raise ImageProblem(f"{path.name}: {image.width}x{image.height} is more than the {max_pixels} pixels "
                                           f"allowed; refused as a possible decompression bomb (resize it, or raise the limit)")
                    if image.width < 1 or image.height < 1:
                        raise ImageProblem(f"{path.name}: has no pixels ({image.width}x{image.height})")
                    image.seek(0)
                    if prepare is not None:
                        prepare(image)
                    with _strict_truncation():
                        image.load()
                    return finish(image)
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem(f"{path.name}: refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageProblem(f"{path.name}: not an image Pillow can read (empty, another kind of file, or an unsupported format)") from exc
    except PermissionError as exc:
        raise ImageProblem(f"{path.name}: cannot be read (permission denied); check the file's permissions") from exc
    except FileNotFoundError as exc:
        raise ImageProblem(f"{path.name}: file not found (moved, deleted, or a broken link)") from exc
    except IsADirectoryError as exc:
        raise ImageProblem(f"{path.name}: is a folder, not an image") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise ImageProblem(f"{path.name}: a symbolic link that points to itself (symlink loop)") from exc
        raise ImageProblem(_decode_failure(path, exc)) from exc
    except Exception as exc:  # any decoder failure is about this one file
        raise ImageProblem(_decode_failure(path, exc)) from exc


def open_rgb(path: Path, background: Tuple[int, int, int] = WHITE, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The image as an RGB PIL image: first frame, EXIF orientation applied, transparency on
    `background`. Raises `ImageProblem` for a file that cannot be used."""
    from PIL import ImageOps

    def finish(image):
        sixteen_bit = image.mode == "I" and image.format in ("PNG", "TIFF")
        return to_rgb(ImageOps.exif_transpose(image), background, sixteen_bit)

    return _open_checked(Path(path), max_pixels, finish)


def open_preview(path: Path, max_side: int, background: Tuple[int, int, int] = WHITE,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
    """The image as RGB, oriented, at most `max_side` pixels on its longer side, for showing
    it (thumbnails, the editor's large view). JPEGs are decoded at a reduced scale, so a
    page of camera photos is quick; the decode is still complete (truncation is found).
    Raises `ImageProblem` for a file that cannot be used."""
    from PIL import Image, ImageOps

    def prepare(image):
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))

    def finish(image):
        sixteen_bit = image.mode == "I" and image.format in ("PNG", "TIFF")
        rgb = to_rgb(ImageOps.exif_transpose(image), background, sixteen_bit)
        if max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.LANCZOS, reducing_gap=2.0)
        return rgb

    return _open_checked(Path(path), max_pixels, finish, prepare=prepare)


def _oriented_size(image) -> Tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make a readable image unusable
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def inspect_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[Optional[Tuple[int, int]], Optional[str], Optional[str]]:
    """(size as trained, content hash, problem) with one read and one full decode of the file:
    what the dataset check needs, without converting pixels."""
    kept: list = []
    try:
        size = _open_checked(Path(path), max_pixels, _oriented_size, kept)
    except ImageProblem as exc:
        return None, (_hash_bytes(kept[0]) if kept else None), str(exc)
    return size, _hash_bytes(kept[0]), None


def _decode_failure(path: Path, exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    reason = "truncated" if "truncat" in lowered or "broken data stream" in lowered else (text or type(exc).__name__)
    return f"{path.name}: cannot be decoded ({reason}); re-export or remove it"


def image_problem(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    """None if the image decodes completely, else the reason (a real decode, not a header check)."""
    try:
        open_rgb(path, max_pixels=max_pixels)
    except ImageProblem as exc:
        return str(exc)
    return None


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) as trained, i.e. after EXIF rotation, read from the header only."""
    from PIL import Image

    with open(path, "rb") as handle, Image.open(handle) as image:
        return _oriented_size(image)


def _hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def content_hash(path: Path) -> str:
    """A hash of the file's bytes: names duplicates and keys caches (renames do not matter)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
