"""Atomic writes, clear errors when storage fails, and the leftovers of a killed writer.

Every file the engine writes goes to a hidden temp sibling (`.<name>.<pid>[.<n>].tmp`) that is
renamed over the target, so a reader or a crash sees the old file or the new one, never half.
A process killed mid-write leaves that temp behind; the next start removes it with
`clean_stale_temp_files`, keeping the temps of writers that are still alive.
"""

import errno
import os
import shutil
from pathlib import Path
from typing import Iterator, Union

from lora_trainer.errors import StorageError

PathLike = Union[str, Path]
LEFTOVER_SUFFIXES = (".tmp", ".old")  # ".old": a state folder being replaced when the writer died
PID_MAX = 1 << 22  # Linux's limit; larger numbers in a temp name are counters, not pids
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or choose another output folder",
    errno.EDQUOT: "the disk quota is used up: free some space or choose another output folder",
    errno.EFBIG: "the file is larger than this system allows (file-size limit or filesystem): raise the limit or "
                 "choose another output folder",
    errno.EACCES: "no permission to write there: make the folder writable or choose another one",
    errno.EPERM: "no permission to write there: make the folder writable or choose another one",
    errno.EROFS: "the filesystem is read-only: choose another output folder",
}


def storage_error(path: PathLike, exc: OSError) -> StorageError:
    """A `StorageError` naming the file, what went wrong and what to do; the old file is untouched."""
    advice = _ADVICE.get(exc.errno or 0, "check the folder and the disk")
    return StorageError(f"could not write {path}: {exc.strerror or exc} ({advice}). "
                        f"Any previous version of that file is unchanged.")


def temp_sibling(path: PathLike, tag: str = "tmp") -> Path:
    """The hidden temp name beside `path` that this process writes before renaming."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}")


def write_atomically(path: PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write `data` to a temp file beside `path`, fsync, then rename over: never a half file.

    The folder is created if missing. A failure (full disk, file-size limit, permissions)
    raises `StorageError` and leaves the previous file and no temp file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(path.parent, exc) from exc
    temp = temp_sibling(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(path, exc) from exc
        raise
    return path


def _writer_pids(name: str) -> Iterator[int]:
    """The pids a leftover's name may carry: `.<name>.<pid>.tmp` or `.<name>.<pid>.<n>.tmp`."""
    parts = name.split(".")
    for index in (-2, -3):
        if len(parts) >= 2 - index and parts[index].isdigit() and 0 < int(parts[index]) <= PID_MAX:
            yield int(parts[index])


def is_stale(path: Path) -> bool:
    """A leftover temp whose writer is gone (no pid in its name that is still running)."""
    name = path.name
    if not name.startswith(".") or not name.endswith(LEFTOVER_SUFFIXES):
        return False
    pids = list(_writer_pids(name))
    return bool(pids) and not any(pid == os.getpid() or pid_alive(pid) for pid in pids)


def clean_stale_temp_files(folder: PathLike) -> int:
    """Remove the temp files and folders that killed writers left in `folder`; returns how many."""
    removed = 0
    try:  # names first: a caption folder holds thousands of entries, few of them hidden
        candidates = [Path(entry.path) for entry in os.scandir(folder)
                      if entry.name.startswith(".") and entry.name.endswith(LEFTOVER_SUFFIXES)]
    except OSError:  # missing or unreadable folder: nothing of ours to clean
        return 0
    for path in candidates:
        if not is_stale(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError:
            pass  # not ours to remove after all (permissions): leave it
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (someone else's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
