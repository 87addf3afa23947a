"""Finding a dataset's images and their caption files.

kohya layout: `<repeats>_<name>/` subfolders of the dataset folder (`10_mychar/img.png` +
`img.txt`); a folder without such subfolders is one concept, repeated as its own name says
(`10_mychar` picked directly) or once. Dot-folders (our `.lora_trainer/` state among them)
and dot-files are never scanned; symlink loops are followed at most once. Nothing is opened
here: reading images and captions is for `images` and `captions`.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Set, Tuple

from lora_trainer.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
STATE_FOLDER = ".lora_trainer"  # undo history, backups and caches, beside the dataset


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
        return class_token(self.folder)


class ScanResult(list):
    """The `ImageEntry`s found (it is a list of them), plus the scanned root and notes about
    folders that could not be listed or images that are left out."""

    def __init__(self, root: Path, entries: Iterable[ImageEntry] = (), problems: Optional[List[str]] = None):
        super().__init__(entries)
        self.root = Path(root)
        self.problems: List[str] = list(problems or [])

    @property
    def entries(self) -> List[ImageEntry]:
        return self


def class_token(folder_name: str) -> str:
    match = KOHYA_FOLDER.match(folder_name)
    return (match.group(2) if match else folder_name).replace("_", " ")


def caption_suffix(extension: str) -> str:
    """`txt`, `.txt` and `.caption` style settings as a suffix with its dot."""
    extension = extension.strip()
    if not extension or extension in (".",) or "/" in extension or "\\" in extension:
        raise DatasetError(f"caption extension {extension!r} is not usable: give one such as .txt or .caption")
    return extension if extension.startswith(".") else "." + extension


def concept_folders(root: Path) -> List[Tuple[Path, str, int]]:
    """(folder, kohya name, repeats) of each concept, in name order."""
    subfolders = sorted(p for p in root.iterdir() if not p.name.startswith(".") and KOHYA_FOLDER.match(p.name) and p.is_dir())
    if subfolders:
        return [(p, p.name, int(KOHYA_FOLDER.match(p.name).group(1))) for p in subfolders]
    match = KOHYA_FOLDER.match(root.name)
    if match:
        return [(root, root.name, int(match.group(1)))]
    return [(root, f"1_{root.name}", 1)]


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _walk_images(folder: Path, recursive: bool, problems: List[str]) -> Iterator[Path]:
    seen: Set[Tuple[int, int]] = set()

    def on_error(error: OSError) -> None:
        problems.append(f"{error.filename}: folder cannot be listed ({error.strerror}); its images are left out")

    for current, dirs, files in os.walk(folder, followlinks=recursive, onerror=on_error):
        try:
            stat = os.stat(current)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            problems.append(f"{current}: a link back to a folder already scanned (symlink loop); not scanned again")
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if is_image_name(name):
                yield Path(current) / name


def scan(root: Path, caption_extension: str = ".txt", recursive: bool = False,
         reg_dir: Optional[Path] = None) -> ScanResult:
    """Every image of the dataset (then of the regularization folder), in a stable order."""
    suffix = caption_suffix(caption_extension)
    result = ScanResult(Path(root))
    for base, is_reg in [(Path(root), False)] + ([(Path(reg_dir), True)] if reg_dir else []):
        what = "regularization folder" if is_reg else "dataset folder"
        if not base.is_dir():
            raise DatasetError(f"{what} {base} does not exist or is not a folder: check the path")
        try:
            folders = concept_folders(base)
        except OSError as exc:
            raise DatasetError(f"{what} {base} cannot be listed ({exc.strerror}): check its permissions") from exc
        if folders[0][0] != base:
            loose = [n for n in sorted(os.listdir(base)) if is_image_name(n)]
            if loose:
                result.problems.append(f"{base}: {len(loose)} image(s) beside the <repeats>_<name> folders are not used "
                                       f"(e.g. {loose[0]}); move them into one of those folders")
        for folder, name, repeats in folders:
            for image in _walk_images(folder, recursive, result.problems):
                result.append(ImageEntry(image, image.with_suffix(suffix), name, repeats, is_reg))
    return result


def require_images(entries: List[ImageEntry], root: Optional[Path] = None) -> None:
    """Training needs at least one (non-regularization) image."""
    if not any(not e.is_reg for e in entries):
        where = root if root is not None else getattr(entries, "root", "the dataset folder")
        raise DatasetError(
            f"no images in {where}: put images (png, jpg, webp, bmp, gif) there, or in kohya subfolders "
            f"named <repeats>_<name> such as 10_mychar"
        )
