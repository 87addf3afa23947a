"""Finding a dataset's images and their caption files.

kohya layout: `<repeats>_<name>/` subfolders of the dataset folder (`10_mychar/img.png` +
`img.txt`); otherwise the folder itself is one concept with 1 repeat. Dot-folders (our own
`.lora_trainer/` history among them) are never scanned; symlink loops are not followed twice.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

from lora_trainer.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
STATE_FOLDER = ".lora_trainer"  # undo history and caches, beside the dataset


@dataclass(frozen=True)
class ImageEntry:
    image: Path
    caption: Path  # where its caption lives (or would be written)
    folder: str  # kohya folder name, e.g. "10_mychar"
    repeats: int
    is_reg: bool = False

    @property
    def class_token(self) -> str:
        """kohya's fallback caption: the name part of the folder."""
        match = KOHYA_FOLDER.match(self.folder)
        return (match.group(2) if match else self.folder).replace("_", " ")


def concept_folders(root: Path) -> List[Tuple[Path, str, int]]:
    """(folder, kohya name, repeats) of each concept; a flat folder is one concept repeated once."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and KOHYA_FOLDER.match(p.name))
    if subfolders:
        return [(p, p.name, int(KOHYA_FOLDER.match(p.name).group(1))) for p in subfolders]
    return [(root, f"1_{root.name}", 1)]


def _walk_images(folder: Path, recursive: bool) -> Iterator[Path]:
    seen: Set[Tuple[int, int]] = set()
    for current, dirs, files in os.walk(folder, followlinks=recursive):
        try:
            stat = os.stat(current)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(current) / name


def scan(root: Path, caption_extension: str = ".txt", recursive: bool = False, reg_dir: Optional[Path] = None) -> List[ImageEntry]:
    """Every image of the dataset (and of the regularization folder), in a stable order."""
    entries: List[ImageEntry] = []
    for base, is_reg in [(Path(root), False)] + ([(Path(reg_dir), True)] if reg_dir else []):
        if not base.is_dir():
            what = "regularization folder" if is_reg else "dataset folder"
            raise DatasetError(f"{what} {base} does not exist or is not a folder")
        for folder, name, repeats in concept_folders(base):
            for image in _walk_images(folder, recursive):
                entries.append(ImageEntry(image, image.with_suffix(caption_extension), name, repeats, is_reg))
    return entries


def require_images(entries: List[ImageEntry], root: Path) -> None:
    if not any(not e.is_reg for e in entries):
        raise DatasetError(
            f"no images in {root}: put images (png, jpg, webp, bmp, gif) there, or in kohya subfolders "
            f"named <repeats>_<name> such as 10_mychar"
        )
