"""The dataset as the tag editor and the CLI see it: every caption loaded once, tags parsed
once, lowercase tag sets ready for filtering, and bulk edits with undo.

`DatasetIndex.load(folder)` scans and reads every caption; `filter("a AND NOT b")` returns
indices; `add/remove/replace/...(..., indices=...)` edit the chosen captions, write only the
ones that changed (atomically, after recording an undo step) and return an `EditReport`
that says what changed and what was skipped and why. Captions that are not UTF-8, that
cannot be read, or that changed on disk since they were loaded are never touched by a bulk
edit.
"""

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Union

from lora_trainer.dataset import edits
from lora_trainer.dataset import tags as T
from lora_trainer.dataset.captions import (Caption, CaptionConflict, atomic_write, decode_caption, encode_caption,
                                           link_target, read_caption, unchanged_on_disk, write_caption)
from lora_trainer.dataset.edits import EditSpec, plan_edit
from lora_trainer.dataset.history import DEFAULT_LIMIT, Change, History
from lora_trainer.dataset.scan import STATE_FOLDER, ImageEntry, ScanResult, scan
from lora_trainer.dataset.tag_filter import compile_filter
from lora_trainer.dataset.training_captions import fallback_caption
from lora_trainer.errors import DatasetError
from lora_trainer.files import clean_stale_temp_files

TagEdit = Callable[[List[str]], List[str]]


@dataclass
class EditReport:
    action: str
    changed: List[Path] = field(default_factory=list)
    created: List[Path] = field(default_factory=list)  # caption files that did not exist before
    unchanged: int = 0
    skipped_non_utf8: List[Path] = field(default_factory=list)
    skipped_unreadable: List[str] = field(default_factory=list)
    conflicts: List[Path] = field(default_factory=list)  # changed on disk since loaded: left alone
    failed: List[str] = field(default_factory=list)  # could not be written (message)

    def summary(self) -> str:
        """What a person needs to know, in a few lines."""
        lines = [f"{self.action}: {len(self.changed)} caption(s) changed"
                 + (f" ({len(self.created)} new file(s))" if self.created else "")
                 + f", {self.unchanged} unchanged"]
        for label, items in (("skipped, not valid UTF-8 (edit each on its own to convert it)", self.skipped_non_utf8),
                             ("skipped, cannot be read", self.skipped_unreadable),
                             ("not overwritten, changed on disk since loaded (reload, then edit again)", self.conflicts),
                             ("could not be written", self.failed)):
            if items:
                shown = ", ".join(str(i) for i in items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                lines.append(f"  {len(items)} {label}: {shown}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"action": self.action, "changed": [str(p) for p in self.changed], "created": [str(p) for p in self.created],
                "unchanged": self.unchanged, "skipped_non_utf8": [str(p) for p in self.skipped_non_utf8],
                "skipped_unreadable": list(self.skipped_unreadable), "conflicts": [str(p) for p in self.conflicts],
                "failed": list(self.failed)}


def in_parallel(function, items: Sequence, workers: int = 4, probe: int = 64, slow_s: float = 0.0004) -> List:
    """`[function(x) for x in items]` for many small file operations, in order. They run in
    this thread, `probe` at a time and timed: on a fast local disk that is the fastest way. Once
    a batch is slow (each one waits on storage: a network share, a disk busy writing back), the
    rest is spread over a few threads, which overlap those waits; storage can turn slow half way
    through 10,000 writes, so every batch is timed, not only the first."""
    items = list(items)
    done: List = []
    while len(done) < len(items):
        batch = items[len(done):len(done) + probe]
        started = time.perf_counter()
        done.extend(function(item) for item in batch)
        if (time.perf_counter() - started) / len(batch) >= slow_s and len(done) < len(items):
            with ThreadPoolExecutor(max_workers=workers) as pool:
                done.extend(pool.map(function, items[len(done):], chunksize=64))
    return done


def read_captions(entries: Sequence[ImageEntry]) -> List[Caption]:
    """The caption of every entry (file reads overlapped: 10,000 small files)."""
    return in_parallel(lambda entry: read_caption(entry.caption), list(entries))


def clean_leftovers(scanned: ScanResult) -> int:
    """Remove the temp files of an edit killed mid-write (captions, undo steps); returns how many.
    Each caption is whole (old or new bytes) and the undo step lists every planned change."""
    folders = {scanned.root, scanned.root / STATE_FOLDER / "history"} | {entry.caption.parent for entry in scanned}
    return sum(clean_stale_temp_files(folder) for folder in folders)


class DatasetIndex:
    """All images and captions of one dataset folder, in memory."""

    def __init__(self, scanned: ScanResult, captions: List[Caption], history_limit: int = DEFAULT_LIMIT,
                 backup: bool = False):
        self.root = scanned.root
        self.entries: List[ImageEntry] = scanned.entries
        self.problems: List[str] = scanned.problems
        self.captions: List[Caption] = captions
        self.tags: List[List[str]] = [T.parse_tags(c.text) for c in captions]
        self.keys: List[FrozenSet[str]] = [T.tag_keys(t) for t in self.tags]
        self.state_dir = self.root / STATE_FOLDER
        self.history = History(self.state_dir, self.root, history_limit)
        self.backup = backup  # keep a copy of every caption before it is rewritten
        self._frequency: Optional[Counter] = None
        self._before: dict = {}  # step number -> {index: (bytes, tags, keys) before that step}

    @classmethod
    def load(cls, root: Union[str, Path], caption_extension: str = ".txt", recursive: bool = False,
             reg_dir: Optional[Path] = None, history_limit: int = DEFAULT_LIMIT, backup: bool = False) -> "DatasetIndex":
        scanned = scan(Path(root), caption_extension, recursive, reg_dir)
        clean_leftovers(scanned)
        return cls(scanned, read_captions(scanned), history_limit, backup)

    @classmethod
    def from_entries(cls, root: Union[str, Path], entries: Sequence[ImageEntry], backup: bool = False,
                     history_limit: int = DEFAULT_LIMIT) -> "DatasetIndex":
        """The index of entries already scanned (e.g. by training's preparation)."""
        scanned = entries if isinstance(entries, ScanResult) else ScanResult(Path(root), entries)
        scanned.root = Path(root)
        return cls(scanned, read_captions(scanned), history_limit, backup)

    def __len__(self) -> int:
        return len(self.entries)

    # --- reading ---------------------------------------------------------------------------

    def filter(self, expression: str) -> List[int]:
        """Indices of the images whose tags match `expression` (see `tag_filter`)."""
        predicate = compile_filter(expression)
        return [i for i, keys in enumerate(self.keys) if predicate(keys)]

    def frequency(self, indices: Optional[Iterable[int]] = None) -> Counter:
        """Tag key -> number of captions holding it (of `indices`, or of all)."""
        if indices is not None:
            counts: Counter = Counter()
            for i in indices:
                counts.update(self.keys[i])
            return counts
        if self._frequency is None:
            counts = Counter()
            for keys in self.keys:
                counts.update(keys)
            self._frequency = counts
        return Counter(self._frequency)

    def missing_captions(self) -> List[int]:
        return [i for i, c in enumerate(self.captions) if not c.exists]

    def empty_captions(self) -> List[int]:
        return [i for i, c in enumerate(self.captions) if c.exists and c.error is None and c.empty]

    def non_utf8_captions(self) -> List[int]:
        return [i for i, c in enumerate(self.captions) if c.non_utf8]

    def unreadable_captions(self) -> List[int]:
        return [i for i, c in enumerate(self.captions) if c.error]

    def training_caption(self, index: int) -> str:
        """What training uses: the caption, or the folder's class token when missing or empty."""
        caption = self.captions[index]
        return fallback_caption(None if caption.error else caption.text, self.entries[index].class_token)

    def relative(self, index: int, caption: bool = False) -> str:
        """The image's (or its caption's) path relative to the dataset folder, for reports."""
        path = self.entries[index].caption if caption else self.entries[index].image
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # --- editing ---------------------------------------------------------------------------

    def edit(self, action: str, change: TagEdit, indices: Optional[Iterable[int]] = None,
             skip: Optional[Callable[[FrozenSet[str]], bool]] = None, keyed: bool = False) -> EditReport:
        """Apply `change` (tags -> tags) to the chosen captions, write those that changed.

        The index's tag sets make 10,000-caption edits cheap: `skip(keys)` true means the edit
        cannot change that caption (it is not even called); with `keyed=True`, `change` is
        called as `change(tags, keys)`.
        """
        return self.apply(EditSpec(action, change, skip, keyed), indices)

    def apply(self, spec: EditSpec, indices: Optional[Iterable[int]] = None) -> EditReport:
        """Run one bulk edit (see `edits`) over the chosen captions and write those it changed."""
        report = EditReport(spec.description)
        planned = plan_edit(spec, self.captions, self.tags, self.keys, indices)
        report.unchanged = planned.unchanged
        report.skipped_unreadable = planned.skipped_unreadable
        report.skipped_non_utf8 = [self.captions[i].path for i in planned.skipped_non_utf8]
        self._write(report, [(i, T.join_tags(tags)) for i, tags in planned.changes], spec.description)
        return report

    def write_texts(self, action: str, texts: Dict[int, str], backup: Optional[bool] = None) -> EditReport:
        """Write the given caption texts (index -> text) as one undo step, non-UTF-8 captions
        included (an editor's explicit edits: their originals are backed up). Captions changed
        on disk since loaded are not overwritten (`report.conflicts`). `backup` overrides the
        index's own setting for this write."""
        report = EditReport(action)
        previous = self.backup
        if backup is not None:
            self.backup = backup
        try:
            self._write(report, sorted(texts.items()), action, allow_non_utf8=True)
        finally:
            self.backup = previous
        return report

    def set_caption(self, index: int, text: str) -> EditReport:
        """An explicit edit of one caption, written as given. This is the only way a non-UTF-8
        caption is rewritten (as UTF-8; its original bytes are backed up first)."""
        caption = self.captions[index]
        report = EditReport(f"edit {caption.path.name}")
        if caption.error:
            report.skipped_unreadable.append(caption.error)
            return report
        if caption.exists and not caption.non_utf8 and text == caption.text:
            report.unchanged += 1
            return report
        self._write(report, [(index, text)], report.action, allow_non_utf8=True)
        return report

    def _backup_dir(self, stamp: str, path: Path) -> Path:
        try:
            relative = path.parent.relative_to(self.root)
        except ValueError:
            relative = Path("_outside") / path.parent.name
        return self.state_dir / "backups" / stamp / relative

    def _write(self, report: EditReport, planned, action: str, allow_non_utf8: bool = False) -> None:
        ready = []
        for i, text in planned:  # conflicts are found by write_caption, just before each write
            caption = self.captions[i]
            data = encode_caption(caption, text)
            if caption.exists and data == caption.raw:
                report.unchanged += 1
                continue
            ready.append((i, text, data))
        if not ready:
            return
        changes = [Change(self.captions[i].path, self.captions[i].raw if self.captions[i].exists else None, data)
                   for i, _, data in ready]
        try:
            step = self.history.push(action, changes)
        except OSError as exc:  # no undo record, no edit: a caption is never changed without one
            raise DatasetError(f"cannot record the undo step in {self.history.folder} ({exc.strerror or exc}); "
                               f"nothing was changed. Make the dataset folder writable") from exc
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{step.number}"
        # the parsed tags before this edit, so that an undo in this session need not parse again
        self._before = {step.number: {i: (self.captions[i].raw, self.tags[i], self.keys[i]) for i, _, _ in ready}}

        def write(item):
            i, text, _ = item
            caption = self.captions[i]
            backup_dir = self._backup_dir(stamp, caption.path) if (self.backup or caption.non_utf8) else None
            try:
                return write_caption(caption, text, backup_dir=backup_dir, allow_non_utf8=allow_non_utf8)
            except (OSError, DatasetError) as exc:
                return exc

        written = []
        for (i, _, _), new in zip(ready, in_parallel(write, ready)):
            caption = self.captions[i]
            if isinstance(new, CaptionConflict):
                report.conflicts.append(caption.path)
                continue
            if isinstance(new, Exception):
                report.failed.append(f"{caption.path}: {getattr(new, 'strerror', None) or new}")
                continue
            report.changed.append(caption.path)
            if not caption.exists:
                report.created.append(caption.path)
            self._set(i, new)
            written.append(i)
        if len(written) != len(ready):  # keep the undo step truthful: only what was written
            kept = {self.captions[i].path for i in written}
            step.changes = [c for c in step.changes if c.path in kept]
            if step.changes:
                self.history.save(step)
            else:
                self.history.drop(step)

    def _set(self, index: int, caption: Caption) -> None:
        self.captions[index] = caption
        self.tags[index] = T.parse_tags(caption.text)
        self.keys[index] = T.tag_keys(self.tags[index])
        self._frequency = None

    def add(self, tag: Union[str, Sequence[str]], position: Union[str, int] = "back",
            indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.add(tag, position), indices)

    def remove(self, tag: Union[str, Sequence[str]], indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.remove(tag), indices)

    def replace(self, old: str, new: str, regex: bool = False, whole: bool = True,
                indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.replace(old, new, regex, whole), indices)

    def move_to_front(self, targets: Sequence[str], indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.move_to_front(targets), indices)

    def sort(self, keep: int = 0, by_frequency: bool = False, indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.sort(keep, dict(self.frequency()) if by_frequency else None), indices)

    def dedupe(self, indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.dedupe(), indices)

    def normalize(self, indices: Optional[Iterable[int]] = None) -> EditReport:
        """Rewrite captions whose text differs from their normalised form (`, ` between tags)."""
        report = EditReport("normalise whitespace")
        planned = []
        for i in (range(len(self)) if indices is None else indices):
            caption = self.captions[i]
            if caption.error or caption.non_utf8:
                (report.skipped_unreadable.append(caption.error) if caption.error else report.skipped_non_utf8.append(caption.path))
                continue
            text = T.join_tags(self.tags[i])
            if not caption.exists or text == caption.text:
                report.unchanged += 1
                continue
            planned.append((i, text))
        self._write(report, planned, report.action)
        return report

    # --- undo / redo -------------------------------------------------------------------------

    def undo(self) -> EditReport:
        """Undo the newest step: restore each caption that still holds what that step wrote.
        The step is kept for `redo()` until the next edit."""
        step = self.history.last()
        if step is None:
            raise DatasetError(f"nothing to undo in {self.root}: no edits are recorded there")
        report = self._replay(step, f"undo {step.description!r}", backwards=True)
        self.history.shelve(step)
        self._before.pop(step.number, None)
        return report

    def redo(self) -> EditReport:
        """Do again the step `undo()` last undid: rewrite each caption that still holds what
        the undo put back (anything changed since is reported, never overwritten)."""
        step = self.history.last_undone()
        if step is None:
            raise DatasetError(f"nothing to redo in {self.root}: no undone edit is recorded there "
                               f"(a new edit after an undo ends what can be redone)")
        report = self._replay(step, f"redo {step.description!r}", backwards=False)
        self.history.unshelve(step)
        return report

    def _replay(self, step, action: str, backwards: bool) -> EditReport:
        """Write one side of a step (`before` when undoing, `after` when redoing) to each caption
        that holds the other side; the rest are conflicts."""
        report = EditReport(action)
        by_path = {os.fspath(e.caption): i for i, e in enumerate(self.entries)}
        remembered = self._before.get(step.number, {}) if backwards else {}

        def sides(change: Change):
            return (change.after, change.before) if backwards else (change.before, change.after)

        def restore(change: Change):
            expected, wanted = sides(change)
            position = by_path.get(os.fspath(change.path))
            loaded = self.captions[position] if position is not None else None
            if loaded is not None and loaded.error is None and unchanged_on_disk(loaded):
                current = loaded  # what is on disk is what this index holds: no need to read it again
            else:
                current = read_caption(Path(change.path))
            holds = (current.exists and current.raw == expected) if expected is not None else not current.exists
            if current.error or not holds:
                return None  # changed since: a conflict
            try:
                if wanted is None:
                    os.unlink(change.path)
                    return Caption(current.path, False)
                stat = atomic_write(link_target(change.path), wanted, mode=current.mode if current.exists else 0o644)
                return decode_caption(current.path, wanted, (stat.st_size, stat.st_mtime_ns), stat.st_mode & 0o7777)
            except OSError as exc:
                return exc

        for change, restored in zip(step.changes, in_parallel(restore, step.changes)):
            position = by_path.get(os.fspath(change.path))
            path = self.entries[position].caption if position is not None else Path(change.path)
            if restored is None:
                report.conflicts.append(path)
                continue
            if isinstance(restored, OSError):
                report.failed.append(f"{path}: {restored.strerror or restored}")
                continue
            report.changed.append(path)
            if position is None:
                continue
            before = remembered.get(position)
            if before is not None and before[0] == restored.raw:  # parsed before the edit: reuse
                self.captions[position], self.tags[position], self.keys[position] = restored, before[1], before[2]
                self._frequency = None
            else:
                self._set(position, restored)
        return report

    def changed_on_disk(self, indices: Optional[Iterable[int]] = None) -> List[int]:
        """Indices of the captions (of `indices`, or all) whose file is no longer what was loaded."""
        chosen = list(range(len(self)) if indices is None else indices)
        stale = in_parallel(lambda i: not unchanged_on_disk(self.captions[i]), chosen)
        return [i for i, is_stale in zip(chosen, stale) if is_stale]

    def refresh(self, indices: Optional[Iterable[int]] = None) -> List[int]:
        """Re-read the captions (of `indices`, or all) that changed on disk, e.g. after a
        conflict; their indices."""
        changed = self.changed_on_disk(indices)
        self.reload(changed)
        return changed

    def reload(self, indices: Iterable[int]) -> None:
        """Re-read the given captions from disk, as they are now."""
        for i in indices:
            self._set(i, read_caption(self.captions[i].path))
