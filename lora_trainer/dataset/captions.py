"""The caption store: read every caption once, edit in memory, save only what changed, safely.

- Reads UTF-8 with or without BOM. Bytes that are not UTF-8 are shown with replacement
  characters, and such a caption is skipped by bulk actions (reported); only an explicit edit
  of that caption rewrites it, as UTF-8, after backing up the original bytes.
- Writes are atomic (temp file in the same folder + `os.replace`), keep the file's line
  endings and BOM, optionally keep a `.bak` of the previous content, and never clobber a file
  that changed on disk since it was read: that caption is reported as a conflict.
- Every change is an undo step; the history (50+ steps) lives in `<dataset>/.lora_trainer/`.
"""

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from lora_trainer.dataset.scan import STATE_FOLDER, ImageEntry
from lora_trainer.dataset.tags import join_tags, parse_tags, tag_key

HISTORY_LIMIT = 100
HISTORY_FILE = "caption_history.json"


@dataclass
class Caption:
    path: Path
    text: str = ""
    exists: bool = False
    valid_utf8: bool = True
    bom: bool = False
    newline: str = "\n"
    trailing_newline: bool = False
    disk_signature: Optional[Tuple[int, int]] = None  # (mtime_ns, size) when read or last written
    disk_bytes: bytes = b""
    dirty: bool = False
    _keys: Optional[FrozenSet[str]] = None

    @property
    def tags(self) -> List[str]:
        return parse_tags(self.text)

    @property
    def keys(self) -> FrozenSet[str]:
        """Lower-cased tag keys, cached: filters run over thousands of captions."""
        if self._keys is None:
            self._keys = frozenset(tag_key(t) for t in parse_tags(self.text))
        return self._keys

    def set(self, text: str) -> None:
        self.text, self._keys, self.dirty = text, None, True


def _signature(path: Path) -> Optional[Tuple[int, int]]:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def read_caption(path: Path) -> Caption:
    caption = Caption(Path(path))
    try:
        data = caption.path.read_bytes()
    except FileNotFoundError:
        return caption
    caption.exists, caption.disk_bytes, caption.disk_signature = True, data, _signature(caption.path)
    caption.bom = data.startswith(b"\xef\xbb\xbf")
    body = data[3:] if caption.bom else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        caption.valid_utf8 = False
        text = body.decode("utf-8", errors="replace")
    caption.newline = "\r\n" if "\r\n" in text else "\n"
    caption.trailing_newline = text.endswith(("\n", "\r"))
    caption.text = text.rstrip("\r\n")
    return caption


def encode_caption(caption: Caption) -> bytes:
    text = caption.text.replace("\r\n", "\n").replace("\n", caption.newline)
    if caption.trailing_newline:
        text += caption.newline
    return (b"\xef\xbb\xbf" if caption.bom else b"") + text.encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        raise


@dataclass
class ChangeReport:
    action: str
    changed: int = 0
    unchanged: int = 0
    skipped_non_utf8: List[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.action}: changed {self.changed} caption{'s' if self.changed != 1 else ''}, {self.unchanged} unchanged"
        if self.skipped_non_utf8:
            text += f"; skipped {len(self.skipped_non_utf8)} not-UTF-8 caption(s): {', '.join(self.skipped_non_utf8[:5])}"
        return text


@dataclass
class SaveReport:
    written: List[str] = field(default_factory=list)
    conflicts: List[str] = field(default_factory=list)  # changed on disk since read: not overwritten
    errors: List[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"saved {len(self.written)} caption{'s' if len(self.written) != 1 else ''}"
        if self.conflicts:
            text += f"; NOT saved, changed on disk meanwhile: {', '.join(self.conflicts[:5])}"
        if self.errors:
            text += f"; errors: {'; '.join(self.errors[:5])}"
        return text


class CaptionStore:
    """Captions of a scanned dataset, with dataset-wide undo/redo."""

    def __init__(self, root: Path, entries: Sequence[ImageEntry], backup: bool = False):
        self.root = Path(root)
        self.entries = list(entries)
        self.backup = backup
        self.captions: List[Caption] = [read_caption(e.caption) for e in self.entries]
        self._index = {str(c.path): i for i, c in enumerate(self.captions)}
        self.history: List[Dict] = self._load_history()
        self.redo_stack: List[Dict] = []

    # --- reading ------------------------------------------------------------------------
    def problems(self) -> Dict[str, List[str]]:
        return {
            "captions_missing": [str(c.path) for c in self.captions if not c.exists],
            "captions_empty": [str(c.path) for c in self.captions if c.exists and not c.text.strip()],
            "non_utf8": [str(c.path) for c in self.captions if not c.valid_utf8],
        }

    def select(self, predicate: Callable[[FrozenSet[str]], bool]) -> List[int]:
        return [i for i, c in enumerate(self.captions) if predicate(c.keys)]

    @property
    def unsaved(self) -> int:
        return sum(1 for c in self.captions if c.dirty)

    # --- editing ------------------------------------------------------------------------
    def apply(self, action: str, indices: Sequence[int], change: Callable[[List[str]], List[str]]) -> ChangeReport:
        """Run a tag operation over some captions as one undo step (not-UTF-8 ones are skipped)."""
        report, step = ChangeReport(action), {"action": action, "changes": {}}
        for index in indices:
            caption = self.captions[index]
            if not caption.valid_utf8:
                report.skipped_non_utf8.append(caption.path.name)
                continue
            new = join_tags(change(caption.tags))
            if new == caption.text:
                report.unchanged += 1
                continue
            step["changes"][str(caption.path)] = [caption.text, new]
            caption.set(new)
            report.changed += 1
        if step["changes"]:
            self._push(step)
        return report

    def set_text(self, index: int, text: str) -> bool:
        """An explicit edit of one caption (the only way a not-UTF-8 caption gets rewritten)."""
        caption = self.captions[index]
        text = text.rstrip("\r\n")
        if text == caption.text and caption.valid_utf8:
            return False
        self._push({"action": "edit", "changes": {str(caption.path): [caption.text, text]}})
        caption.set(text)
        return True

    def _push(self, step: Dict) -> None:
        self.history = (self.history + [step])[-HISTORY_LIMIT:]
        self.redo_stack.clear()

    def undo(self) -> Optional[str]:
        return self._move(self.history, self.redo_stack, 0)

    def redo(self) -> Optional[str]:
        return self._move(self.redo_stack, self.history, 1)

    def _move(self, source: List[Dict], target: List[Dict], pick: int) -> Optional[str]:
        """Apply a history step backwards or forwards; captions edited since then are left alone."""
        if not source:
            return None
        step = source.pop()
        moved = skipped = 0
        for path, pair in step["changes"].items():
            index = self._index.get(path)
            if index is None or self.captions[index].text != pair[1 - pick]:
                skipped += 1
                continue
            self.captions[index].set(pair[pick])
            moved += 1
        target.append(step)
        verb = "undid" if pick == 0 else "redid"
        note = f" ({skipped} caption(s) changed since were left as they are)" if skipped else ""
        return f"{verb} {step['action']!r} on {moved} caption(s){note}"

    # --- saving -------------------------------------------------------------------------
    def save(self) -> SaveReport:
        """Write the changed captions atomically; captions changed on disk meanwhile are left alone."""
        report = SaveReport()
        for caption in self.captions:
            if not caption.dirty:
                continue
            if _signature(caption.path) != caption.disk_signature and self._changed_on_disk(caption):
                report.conflicts.append(str(caption.path))
                continue
            try:
                self._write(caption)
                report.written.append(str(caption.path))
            except OSError as exc:
                report.errors.append(f"{caption.path.name}: {exc.strerror or exc}")
        self._save_history()
        return report

    def _changed_on_disk(self, caption: Caption) -> bool:
        try:
            return caption.path.read_bytes() != caption.disk_bytes or not caption.exists
        except FileNotFoundError:
            return caption.exists

    def _write(self, caption: Caption) -> None:
        if caption.exists and (self.backup or not caption.valid_utf8):
            # a not-UTF-8 original is always kept: its bytes cannot be shown faithfully
            shutil.copy2(caption.path, caption.path.with_name(caption.path.name + ".bak"))
        if not caption.valid_utf8:
            caption.valid_utf8, caption.bom = True, False
        data = encode_caption(caption)
        write_atomic(caption.path, data)
        caption.exists, caption.dirty, caption.disk_bytes = True, False, data
        caption.disk_signature = _signature(caption.path)

    # --- history file -------------------------------------------------------------------
    @property
    def history_path(self) -> Path:
        return self.root / STATE_FOLDER / HISTORY_FILE

    def _load_history(self) -> List[Dict]:
        try:
            return json.loads(self.history_path.read_text(encoding="utf-8"))[-HISTORY_LIMIT:]
        except (OSError, ValueError):
            return []

    def _save_history(self) -> None:
        try:
            self.history_path.parent.mkdir(exist_ok=True)
            write_atomic(self.history_path, json.dumps(self.history, ensure_ascii=False).encode("utf-8"))
        except OSError:
            pass  # a read-only dataset can still be edited and saved elsewhere; history is best effort
