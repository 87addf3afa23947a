"""Caption files: read without loss, write atomically, never over someone else's change.

A caption is read as bytes and remembered as loaded (bytes, size, mtime), so that a later
write can tell whether the file changed on disk in between (another editor, a tagger, the
user in a text editor) and refuse to clobber it. UTF-8 with or without BOM is read; a file
that is not valid UTF-8 is shown with replacement characters and flagged `non_utf8`, and only
an explicit edit may rewrite it (as UTF-8, after a backup). A rewrite keeps the file's style:
BOM, line endings and final newline.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from lora_trainer.errors import DatasetError

BOM = b"\xef\xbb\xbf"


class CaptionConflict(DatasetError):
    """The caption file changed on disk since it was loaded; it was not overwritten."""


@dataclass(frozen=True)
class Caption:
    path: Path
    exists: bool
    raw: bytes = b""  # the bytes on disk when loaded
    text: str = ""  # decoded, BOM and final newline removed; U+FFFD where not UTF-8
    non_utf8: bool = False
    bom: bool = False
    newline: str = "\n"  # the file's line-ending style
    final_newline: bool = False
    stamp: Optional[Tuple[int, int]] = None  # (size, mtime_ns) when loaded
    error: Optional[str] = None  # could not be read at all (permission, not a file...)
    mode: int = 0o644  # permission bits, kept when the file is rewritten

    @property
    def empty(self) -> bool:
        return not self.text.strip()

    @property
    def editable_in_bulk(self) -> bool:
        return self.error is None and not self.non_utf8


def _stamp(stat: os.stat_result) -> Tuple[int, int]:
    return (stat.st_size, stat.st_mtime_ns)


def decode_caption(path: Path, raw: bytes, stamp: Optional[Tuple[int, int]], mode: int = 0o644) -> Caption:
    """The `Caption` for bytes read from `path`."""
    bom = raw.startswith(BOM)
    body = raw[len(BOM):] if bom else raw
    try:
        text, non_utf8 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, non_utf8 = body.decode("utf-8", errors="replace"), True
    newline = "\r\n" if "\r\n" in text else ("\r" if "\r" in text else "\n")
    final_newline = text.endswith(("\n", "\r"))
    if final_newline:
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return Caption(path, True, raw, text, non_utf8, bom, newline, final_newline, stamp, None, mode)


def read_caption(path: Path) -> Caption:
    """The caption at `path`; a missing file is a `Caption` with `exists=False`, an unreadable
    one carries `error` (never an exception: one bad file must not stop a 10,000-image load)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            raw = handle.read()
    except FileNotFoundError:
        return Caption(path, False)
    except IsADirectoryError:
        return Caption(path, True, error=f"{path.name}: is a folder, not a caption file")
    except OSError as exc:
        return Caption(path, True, error=f"{path.name}: caption cannot be read ({exc.strerror}); check its permissions")
    return decode_caption(path, raw, _stamp(stat), stat.st_mode & 0o7777)


def encode_caption(caption: Caption, text: str) -> bytes:
    """`text` as the bytes of this caption file, in its style (BOM, line endings, final newline).
    A caption that was not UTF-8 is written as plain UTF-8."""
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if caption.newline != "\n":
        body = body.replace("\n", caption.newline)
    if caption.final_newline and body:
        body += caption.newline
    data = body.encode("utf-8")
    return BOM + data if caption.bom and not caption.non_utf8 else data


def unchanged_on_disk(caption: Caption) -> bool:
    """True when the file is still what was loaded (same bytes, or still absent)."""
    try:
        stat = os.stat(caption.path)
    except FileNotFoundError:
        return not caption.exists
    except OSError:
        return False
    if not caption.exists:
        return False
    if caption.stamp == _stamp(stat):
        return True
    try:  # touched but maybe not changed: compare the content
        return caption.path.read_bytes() == caption.raw
    except OSError:
        return False


def link_target(path: Path) -> Path:
    """Where a rewrite of `path` must go: a symlinked caption is rewritten at its target, so
    that the link (and whatever else shares that file) stays intact."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def atomic_write(path: Path, data: bytes, fsync: bool = False, mode: Optional[int] = None) -> os.stat_result:
    """Write through a temp file in the same folder and `os.replace`: a reader (or a crash) sees
    the old file or the new one, never half of it. `mode`: permission bits (default: those of
    the file replaced, else 0o644). Returns the new file's stat (taken before the rename,
    which changes neither its size nor its mtime)."""
    target = os.fspath(path)
    if mode is None:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except OSError:
            mode = 0o644
    folder, name = os.path.split(target)
    temp = os.path.join(folder or ".", f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return stat


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_caption(caption: Caption, text: str, backup_dir: Optional[Path] = None, allow_non_utf8: bool = False,
                  fsync: bool = False) -> Caption:
    """Write `text` to the caption file if it is still as loaded; returns the caption as now on disk.

    Raises `CaptionConflict` if the file changed since it was loaded, and `DatasetError` for a
    non-UTF-8 caption unless `allow_non_utf8` (an explicit edit of that one caption; its
    original bytes are then always backed up). `backup_dir` keeps a copy of the old bytes.
    """
    if caption.error:
        raise DatasetError(caption.error)
    if caption.non_utf8 and not allow_non_utf8:
        raise DatasetError(f"{caption.path.name}: caption is not valid UTF-8; edit it on its own to rewrite it as UTF-8 (the original is backed up)")
    if not unchanged_on_disk(caption):
        raise CaptionConflict(f"{caption.path}: changed on disk since it was loaded; not overwritten. Reload the dataset and edit again")
    data = encode_caption(caption, text)
    if caption.exists and data == caption.raw:
        return caption
    if caption.exists and (backup_dir is not None or caption.non_utf8):
        if backup_dir is None:
            raise DatasetError(f"{caption.path.name}: a non-UTF-8 caption is only rewritten with a backup folder")
        backup(caption, backup_dir)
    stat = atomic_write(link_target(caption.path), data, fsync=fsync, mode=caption.mode if caption.exists else 0o644)
    return decode_caption(caption.path, data, _stamp(stat), stat.st_mode & 0o7777)


def backup(caption: Caption, backup_dir: Path) -> Path:
    """A copy of the caption's loaded bytes under `backup_dir`, named after it and the time."""
    backup_dir = Path(backup_dir)
    backup_dir.mkdir(parents=True, exist_ok=True)
    target = backup_dir / f"{caption.path.name}.{time.strftime('%Y%m%d-%H%M%S')}.{time.monotonic_ns() % 10**9}.bak"
    atomic_write(target, caption.raw)
    return target


def CaptionStore(root: Path, entries, backup: bool = False):
    """The captions of scanned `entries` with bulk edits and undo: a `library.DatasetIndex`
    (kept under this name for callers written against the first API)."""
    from lora_trainer.dataset.library import DatasetIndex

    return DatasetIndex.from_entries(root, entries, backup=backup)
