"""Real image and caption files for the dataset tests, including a hostile set.

Every file is made with Pillow (or raw bytes) in a folder the test owns; nothing is mocked.
"""

import io
import os
from pathlib import Path
from typing import Dict

from PIL import Image


def png(path: Path, size=(64, 48), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def jpeg_bytes(size=(64, 48), color=(30, 200, 30), mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 60x20 landscape, EXIF orientation 6: shown (and trained) as 20x60 portrait."""
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def palette_png_with_transparency(path: Path) -> Path:
    """Palette PNG: index 0 transparent (left half), index 1 solid blue (right half)."""
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    image.paste(1, (4, 0, 8, 8))
    image.save(path, transparency=0)
    return path


def sixteen_bit_png(path: Path) -> Path:
    """16-bit greyscale, value 32768 (half brightness)."""
    Image.new("I", (16, 16), 32768).save(path)
    return path


def hostile_set(folder: Path) -> Dict[str, Path]:
    """One of each troublesome file in `folder` (a kohya `<n>_<name>` folder); name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    full = jpeg_bytes((128, 128), (10, 120, 200))
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    files["truncated"] = folder / "truncated.jpg"
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes((32, 32), (0, 255, 255, 0), mode="CMYK"))
    files["cmyk"] = folder / "cmyk.jpg"
    files["sixteen_bit"] = sixteen_bit_png(folder / "sixteen.png")
    files["palette"] = palette_png_with_transparency(folder / "palette.png")
    files["exif"] = exif_rotated_jpeg(folder / "rotated.jpg")
    files["tiny"] = png(folder / "one.png", (1, 1))
    (folder / "zero.png").write_bytes(b"")
    files["zero"] = folder / "zero.png"
    (folder / "text.png").write_text("this is not a picture\n")
    files["text"] = folder / "text.png"
    files["unicode"] = png(folder / "ünï cødé  spaced ☃.png", (40, 40))
    files["unreadable"] = png(folder / "locked.png", (20, 20))
    os.chmod(files["unreadable"], 0)
    Image.new("LA", (10, 10), (128, 0)).save(folder / "la.png")
    files["la"] = folder / "la.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(folder / "rgba.png")
    files["rgba"] = folder / "rgba.png"
    frames = [Image.new("P", (12, 12), i) for i in (1, 2)]
    frames[0].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    frames[1].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    files["gif"] = folder / "anim.gif"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(folder / "plain.bmp")
    files["bmp"] = folder / "plain.bmp"
    Image.new("RGB", (16, 16), (4, 5, 6)).save(folder / "plain.webp")
    files["webp"] = folder / "plain.webp"
    (folder / "loop.png").symlink_to(folder / "loop.png")
    files["symlink_loop_file"] = folder / "loop.png"
    return files


def snapshot(root: Path) -> Dict[str, bytes]:
    """Every regular readable file under `root` (dot-folders excluded): relative path -> bytes."""
    out = {}
    for current, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(current) / name
            if path.is_symlink() or not os.access(path, os.R_OK):
                continue
            out[str(path.relative_to(root))] = path.read_bytes()
    return out
