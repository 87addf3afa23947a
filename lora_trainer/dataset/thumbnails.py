"""Thumbnails made on first view and kept in memory, most recently used first.

A 10,000-image dataset is browsed a page at a time: only the thumbnails of the pages
actually looked at are ever decoded, each once, and the cache is bounded in bytes (the
least recently viewed go first). Entries are keyed by the image's size and mtime, so an
image replaced on disk gets a fresh thumbnail. An image that cannot be decoded gets no
thumbnail but a problem message, remembered like a thumbnail (and listed by `problems`),
so a bad file costs one failed decode, not one per page view.

A thumbnail is kept as JPEG bytes (a few KB), and also as a small file in the cache's own
temporary folder, removed when it leaves the cache: a web page is sent that file as it
is, where handing over a picture object would have it encoded again on every page view.
"""

import hashlib
import io
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lora_trainer.dataset.images import DEFAULT_MAX_PIXELS, ImageProblem, open_preview
from lora_trainer.files import pid_alive

DEFAULT_SIZE = 200  # pixels on the longer side
DEFAULT_MAX_BYTES = 96 * 1024 * 1024


JPEG_QUALITY = 85


@dataclass(frozen=True)
class Thumbnail:
    data: Optional[bytes]  # JPEG; None when the file cannot be shown
    size: Optional[Tuple[int, int]] = None  # (width, height) of the thumbnail
    problem: Optional[str] = None
    path: Optional[Path] = None  # the JPEG as a file (while the thumbnail is cached)

    @property
    def image(self):
        """The thumbnail as a PIL image (decoded from its bytes), or None."""
        if self.data is None:
            return None
        from PIL import Image

        return Image.open(io.BytesIO(self.data))

    @property
    def nbytes(self) -> int:
        return 256 + (len(self.data) if self.data else 0)


TEMP_PREFIX = "lora_trainer_thumbs_"


def own_temp_folder() -> Path:
    """A new temp folder named after this process (`lora_trainer_thumbs_<pid>_<random>`). The
    folders of processes that are gone are removed first: a killed server never ran its cleanup."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(TEMP_PREFIX + "*_*"):
        pid = old.name[len(TEMP_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}_"))


def _key(path: Path) -> Tuple[str, Optional[int], Optional[int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return (os.fspath(path), None, None)
    return (os.fspath(path), stat.st_size, stat.st_mtime_ns)


class ThumbnailCache:
    """Thumbnails of image files, made lazily, bounded by `max_bytes`; safe to use from
    several threads (gradio handlers and the background prefetch)."""

    def __init__(self, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES, workers: int = 2,
                 max_pixels: int = DEFAULT_MAX_PIXELS, folder: Optional[Path] = None):
        self.size = int(size)
        if folder is None:  # our own temporary folder, removed with the cache (or at exit)
            folder = own_temp_folder()
            weakref.finalize(self, shutil.rmtree, str(folder), True)
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self.workers = max(1, int(workers))
        self.max_pixels = max_pixels
        self._items: "OrderedDict[Tuple, Thumbnail]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._problems: Dict[str, str] = {}
        self._wanted: List[Path] = []
        self._wake = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._busy = False  # the prefetch is making one now
        self.made = 0  # thumbnails decoded so far (tests and the bench read it)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def problems(self) -> Dict[str, str]:
        """Image path -> why it cannot be shown, for every bad image seen so far."""
        with self._lock:
            return dict(self._problems)

    def _make(self, path: Path) -> Thumbnail:
        try:
            image = open_preview(path, self.size, max_pixels=self.max_pixels)
        except ImageProblem as exc:
            return Thumbnail(None, problem=str(exc))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return Thumbnail(buffer.getvalue(), image.size)

    def _file(self, key, thumbnail: Thumbnail) -> Thumbnail:
        """The thumbnail with its bytes also written as a file in the cache's folder."""
        if thumbnail.data is None:
            return thumbnail
        name = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=12).hexdigest() + ".jpg"
        target = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = target.with_suffix(f".{threading.get_ident()}.tmp")
            temp.write_bytes(thumbnail.data)
            os.replace(temp, target)
        except OSError:
            return thumbnail  # no file (a full temp disk): callers fall back to the bytes
        return Thumbnail(thumbnail.data, thumbnail.size, thumbnail.problem, target)

    @staticmethod
    def _unlink(thumbnail: Thumbnail) -> None:
        if thumbnail.path is not None:
            try:
                os.unlink(thumbnail.path)
            except OSError:
                pass

    def _lookup(self, key) -> Optional[Thumbnail]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def _store(self, key, thumbnail: Thumbnail) -> Thumbnail:
        thumbnail = self._file(key, thumbnail)
        with self._lock:
            self.made += 1
            if thumbnail.problem:
                self._problems[key[0]] = thumbnail.problem
            else:
                self._problems.pop(key[0], None)
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                if old.path != thumbnail.path:
                    self._unlink(old)
            self._items[key] = thumbnail
            self._bytes += thumbnail.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
                self._unlink(dropped)
        return thumbnail

    def get(self, path: Path) -> Thumbnail:
        return self.get_many([path])[0]

    def get_many(self, paths: Sequence[Path]) -> List[Thumbnail]:
        """The thumbnails of `paths`, in order; misses are decoded in parallel (Pillow's
        decoders release the GIL)."""
        keys = [_key(Path(p)) for p in paths]
        found: List[Optional[Thumbnail]] = [self._lookup(k) for k in keys]
        missing = [n for n, hit in enumerate(found) if hit is None]
        if missing:
            def make(n: int) -> Thumbnail:
                return self._make(Path(paths[n]))

            if len(missing) == 1 or self.workers == 1:
                made = [make(n) for n in missing]
            else:
                with ThreadPoolExecutor(max_workers=min(self.workers, len(missing))) as pool:
                    made = list(pool.map(make, missing))
            for n, thumbnail in zip(missing, made):
                found[n] = self._store(keys[n], thumbnail)
        return found  # type: ignore[return-value]

    def prefetch(self, paths: Sequence[Path]) -> None:
        """Make these thumbnails in the background (the next page, while this one is looked
        at). A newer request replaces one not yet done."""
        with self._lock:
            self._wanted = [Path(p) for p in paths]
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._prefetch_loop, name="lora-trainer-thumbnails", daemon=True)
                self._worker.start()
        self._wake.set()

    def _prefetch_loop(self) -> None:
        while True:
            if not self._wake.wait(timeout=30):
                with self._lock:
                    if not self._wanted:
                        self._worker = None
                        return
                continue
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._wanted:
                        self._busy = False
                        break
                    path = self._wanted.pop(0)
                    self._busy = True
                key = _key(path)
                if self._lookup(key) is None:
                    self._store(key, self._make(path))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Whether the background prefetch finished within `timeout` seconds (tests, bench)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._wanted and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    def clear(self) -> None:
        with self._lock:
            for thumbnail in self._items.values():
                self._unlink(thumbnail)
            self._items.clear()
            self._bytes = 0
            self._problems.clear()
            self._wanted = []
