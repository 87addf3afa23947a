"""Caption edits held in memory until saved, with undo and redo across the whole dataset.

The tag editor works on an `EditSession` over a loaded `DatasetIndex`: every batch action,
per-image edit or auto-tag run changes only the in-memory *working* captions and is one
step that `undo()` and `redo()` move through. `save()` writes only the captions whose working
text differs from the file, atomically, as one step of the dataset's on-disk history (so the
CLI's `tags undo` can revert a save too), optionally with backups. A caption that changed on
disk since it was loaded is never overwritten: it stays unsaved and is listed in `conflicts`
until the user takes the disk version or explicitly keeps theirs.

Steps remember whole caption texts (not "clean"/"dirty" marks), so undoing a step after a
save makes that caption differ from the saved file again: a save is not an edit and does not
cut the history. Nothing here touches a file except `save`, `refresh` and `resolve_conflicts`.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

from lora_trainer.dataset import autotag, edits
from lora_trainer.dataset import tags as T
from lora_trainer.dataset.captions import encode_caption
from lora_trainer.dataset.edits import EditSpec, plan_edit
from lora_trainer.dataset.library import DatasetIndex, EditReport
from lora_trainer.dataset.tag_filter import compile_filter
from lora_trainer.errors import DatasetError

MAX_STEPS = 200  # undo steps kept; the oldest go first
MAX_STEP_CHANGES = 2_000_000  # caption changes kept over all steps (memory bound for huge datasets)


@dataclass(frozen=True)
class State:
    """One caption's working state: its text, its parsed tags, and whether it is held as an
    explicit edit (only matters for a non-UTF-8 caption, which an explicit edit converts)."""

    text: str
    tags: Tuple[str, ...]
    explicit: bool = False


@dataclass
class Step:
    description: str
    changes: List[Tuple[int, State, State]] = field(default_factory=list)  # (index, before, after)


class EditSession:
    """The working captions of one dataset: edit in memory, undo/redo, save what changed."""

    def __init__(self, index: DatasetIndex, max_steps: int = MAX_STEPS, max_step_changes: int = MAX_STEP_CHANGES):
        self.index = index
        self.tags: List[List[str]] = list(index.tags)
        self.keys: List[FrozenSet[str]] = list(index.keys)
        self.pending: Dict[int, str] = {}  # index -> working text, for every caption that differs from its file
        self.explicit: Set[int] = set()  # pending because the user edited a non-UTF-8 caption on its own
        self.conflicts: Set[int] = set()  # pending captions whose file changed on disk since loaded
        self.max_steps, self.max_step_changes = max(1, max_steps), max(1, max_step_changes)
        self._undo: List[Step] = []
        self._redo: List[Step] = []
        self._frequency: Counter = index.frequency()
        self.version = 0  # bumps on every change of a working caption (views re-filter on it)

    @classmethod
    def open(cls, root: Union[str, Path], caption_extension: str = ".txt", recursive: bool = False) -> "EditSession":
        return cls(DatasetIndex.load(root, caption_extension, recursive))

    def __len__(self) -> int:
        return len(self.index)

    # --- reading ---------------------------------------------------------------------------

    def text(self, i: int) -> str:
        """The working caption of image `i`."""
        return self.pending.get(i, self.index.captions[i].text)

    def state(self, i: int) -> State:
        return State(self.text(i), tuple(self.tags[i]), i in self.explicit)

    @property
    def unsaved(self) -> int:
        return len(self.pending)

    def is_unsaved(self, i: int) -> bool:
        return i in self.pending

    def filter(self, expression: str) -> List[int]:
        """Indices whose working tags match (see `tag_filter`); an empty expression: all."""
        predicate = compile_filter(expression)
        return [i for i, keys in enumerate(self.keys) if predicate(keys)]

    def frequency(self, indices: Optional[Iterable[int]] = None) -> Counter:
        """Tag key -> number of working captions holding it (of `indices`, or of all)."""
        if indices is None:
            return Counter(self._frequency)
        counts: Counter = Counter()
        for i in indices:
            counts.update(self.keys[i])
        return counts

    def untagged(self, indices: Optional[Iterable[int]] = None) -> List[int]:
        """Images (of `indices`, or all) whose working caption has no tags and can be edited."""
        chosen = range(len(self)) if indices is None else indices
        return [i for i in chosen if not self.tags[i] and self.index.captions[i].error is None]

    def why_not_editable(self, i: int) -> Optional[str]:
        """Why caption `i` cannot be edited at all (it could not be read), else None."""
        return self.index.captions[i].error

    # --- the one place working captions change -----------------------------------------------

    def _is_clean(self, i: int, text: str, explicit: bool) -> bool:
        base = self.index.captions[i]
        if not base.exists:
            return text == ""
        if base.non_utf8 and explicit:
            return False  # converting it to UTF-8 is a change even where the text reads the same
        return text == base.text or encode_caption(base, text) == base.raw

    def _assign(self, i: int, state: State) -> None:
        old_keys = self.keys[i]
        if self._is_clean(i, state.text, state.explicit):
            self.pending.pop(i, None)
            self.explicit.discard(i)
            self.conflicts.discard(i)
            self.tags[i], self.keys[i] = self.index.tags[i], self.index.keys[i]
        else:
            self.pending[i] = state.text
            if state.explicit:
                self.explicit.add(i)
            else:
                self.explicit.discard(i)
            self.tags[i] = list(state.tags)
            self.keys[i] = T.tag_keys(self.tags[i])
        new_keys = self.keys[i]
        if new_keys is not old_keys and new_keys != old_keys:
            frequency = self._frequency
            for key in old_keys - new_keys:
                frequency[key] -= 1
                if frequency[key] <= 0:
                    del frequency[key]
            for key in new_keys - old_keys:
                frequency[key] += 1

    def _tags_state(self, i: int, new_tags: List[str]) -> State:
        """The state for new tags from a tag operation: back to the file's exact text when the
        tags are the file's again (a bulk edit never reformats a caption it leaves as it was)."""
        if new_tags == self.index.tags[i]:
            return State(self.index.captions[i].text, tuple(new_tags))
        return State(T.join_tags(new_tags), tuple(new_tags))

    def _commit(self, description: str, targets: List[Tuple[int, State]]) -> Step:
        step = Step(description)
        for i, after in targets:
            before = self.state(i)
            if before == after:
                continue
            step.changes.append((i, before, after))
            self._assign(i, after)
        if step.changes:
            self._undo.append(step)
            self._redo.clear()
            self._trim()
            self.version += 1
        return step

    def _trim(self) -> None:
        total = sum(len(s.changes) for s in self._undo)
        while len(self._undo) > 1 and (len(self._undo) > self.max_steps or total > self.max_step_changes):
            total -= len(self._undo.pop(0).changes)

    def _report(self, description: str, step: Step, unchanged: int = 0) -> EditReport:
        report = EditReport(description, unchanged=unchanged)
        report.changed = [self.index.entries[i].caption for i, _, _ in step.changes]
        return report

    # --- edits (each is one undo step) ------------------------------------------------------

    def apply(self, spec: EditSpec, indices: Optional[Iterable[int]] = None) -> EditReport:
        """Run a bulk edit (see `edits`) over the chosen working captions (all when None)."""
        planned = plan_edit(spec, self.index.captions, self.tags, self.keys, indices)
        step = self._commit(spec.description, [(i, self._tags_state(i, tags)) for i, tags in planned.changes])
        report = self._report(spec.description, step, planned.unchanged + len(planned.changes) - len(step.changes))
        report.skipped_unreadable = planned.skipped_unreadable
        report.skipped_non_utf8 = [self.index.captions[i].path for i in planned.skipped_non_utf8]
        return report

    def add(self, tags: Union[str, Sequence[str]], position: Union[str, int] = "back",
            indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.add(tags, position), indices)

    def remove(self, tags: Union[str, Sequence[str]], indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.remove(tags), indices)

    def replace(self, old: str, new: str, regex: bool = False, whole: bool = True,
                indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.replace(old, new, regex, whole), indices)

    def move_to_front(self, targets: Union[str, Sequence[str]], indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.move_to_front(targets), indices)

    def sort(self, keep: int = 0, by_frequency: bool = False, indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.sort(keep, dict(self._frequency) if by_frequency else None), indices)

    def dedupe(self, indices: Optional[Iterable[int]] = None) -> EditReport:
        return self.apply(edits.dedupe(), indices)

    def set_text(self, i: int, text: str) -> EditReport:
        """An explicit edit of one caption's raw text. Allowed for a non-UTF-8 caption (it is
        then saved as UTF-8, its original bytes backed up), never for an unreadable one."""
        caption = self.index.captions[i]
        description = f"edit {caption.path.name}"
        if caption.error:
            raise DatasetError(f"{caption.error}; it cannot be edited here")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        explicit = caption.non_utf8
        step = self._commit(description, [(i, State(text, tuple(T.parse_tags(text)), explicit))])
        return self._report(description, step, unchanged=0 if step.changes else 1)

    def set_tags(self, i: int, new_tags: Sequence[str], description: str = "") -> EditReport:
        """One caption's tags as a list (the per-image tag editor: add, remove, reorder)."""
        caption = self.index.captions[i]
        description = description or f"edit tags of {caption.path.name}"
        if caption.error:
            raise DatasetError(f"{caption.error}; it cannot be edited here")
        new_tags = [t for t in (T.normalize_tag(x) for x in new_tags) if t]
        state = self._tags_state(i, new_tags)
        if caption.non_utf8:
            state = State(state.text, state.tags, True)
        step = self._commit(description, [(i, state)])
        return self._report(description, step, unchanged=0 if step.changes else 1)

    def merge_tags(self, new_tags: Dict[int, Sequence[str]], mode: str, description: str,
                   keep_first: Sequence[str] = ()) -> EditReport:
        """Merge tags from an auto-tagger (index -> tags, already thresholded and filtered) into
        the working captions, as one step; see `autotag.merge` for the modes. Unreadable and
        non-UTF-8 captions are skipped, as by any bulk edit."""
        autotag.check_mode(mode)
        report = EditReport(description)
        targets = []
        for i, tags in new_tags.items():
            caption = self.index.captions[i]
            if caption.error:
                report.skipped_unreadable.append(caption.error)
                continue
            if caption.non_utf8:
                report.skipped_non_utf8.append(caption.path)
                continue
            merged = autotag.merge(self.tags[i], list(tags), mode, keep_first)
            if merged == self.tags[i]:
                report.unchanged += 1
                continue
            targets.append((i, self._tags_state(i, merged)))
        step = self._commit(description, targets)
        report.changed = self._report(description, step).changed
        report.unchanged += len(targets) - len(step.changes)
        return report

    # --- undo / redo -----------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_label(self) -> Optional[str]:
        """What `undo()` would undo, e.g. "add 'x' (5000 captions)"; None when nothing."""
        return _label(self._undo[-1]) if self._undo else None

    def redo_label(self) -> Optional[str]:
        return _label(self._redo[-1]) if self._redo else None

    def undo(self) -> EditReport:
        """Put back what the newest step changed (in memory; Save writes it)."""
        if not self._undo:
            raise DatasetError("nothing to undo")
        step = self._undo.pop()
        for i, before, _ in reversed(step.changes):
            self._assign(i, before)
        self._redo.append(step)
        self.version += 1
        return self._report(f"undo {step.description}", step)

    def redo(self) -> EditReport:
        """Do again the step `undo()` last put back."""
        if not self._redo:
            raise DatasetError("nothing to redo")
        step = self._redo.pop()
        for i, _, after in step.changes:
            self._assign(i, after)
        self._undo.append(step)
        self.version += 1
        return self._report(f"redo {step.description}", step)

    # --- disk ------------------------------------------------------------------------------

    def save(self, backup: bool = False, indices: Optional[Iterable[int]] = None) -> EditReport:
        """Write the unsaved captions (of `indices`, or all), atomically, as one step of the
        dataset's history. A file changed on disk since loaded is not overwritten: it stays
        unsaved and joins `conflicts`; one that could not be written stays unsaved too
        (`report.failed` says why)."""
        chosen = sorted(self.pending if indices is None else (i for i in indices if i in self.pending))
        if not chosen:
            return EditReport("save")
        before = {i: self.index.captions[i] for i in chosen}
        report = self.index.write_texts(f"save {len(chosen)} caption(s) from the tag editor",
                                        {i: self.pending[i] for i in chosen}, backup=backup)
        report.action = "save"
        for i in chosen:
            caption = self.index.captions[i]
            if caption is not before[i] or self._is_clean(i, self.pending[i], i in self.explicit):
                self.pending.pop(i, None)  # written (or already what the file holds)
                self.explicit.discard(i)
                self.conflicts.discard(i)
                self.tags[i], self.keys[i] = self.index.tags[i], self.index.keys[i]
        conflicted = {Path(p) for p in report.conflicts}
        self.conflicts |= {i for i in chosen if self.index.entries[i].caption in conflicted}
        self.version += 1
        return report

    def refresh(self) -> Tuple[List[int], List[int]]:
        """Check every caption file against what was loaded. Saved (clean) captions that
        changed on disk are re-read and shown as they are now; unsaved ones that changed are
        not touched and become `conflicts`. Returns (re-read indices, new conflict indices)."""
        stale = self.index.changed_on_disk()
        clean = [i for i in stale if i not in self.pending]
        self.index.reload(clean)
        for i in clean:
            self._assign(i, State(self.index.captions[i].text, tuple(self.index.tags[i])))
        new_conflicts = [i for i in stale if i in self.pending and i not in self.conflicts]
        self.conflicts.update(new_conflicts)
        if clean:
            self.version += 1
        return clean, new_conflicts

    def resolve_conflicts(self, keep: str, backup: bool = False) -> EditReport:
        """`keep="disk"`: drop the unsaved edits of the conflicting captions and show the files
        as they are now (one undo step, so the edits can be brought back). `keep="mine"`: write
        the working captions over the files (the user has seen the conflict and chosen)."""
        if keep not in ("disk", "mine"):
            raise ValueError(f"keep must be 'disk' or 'mine', not {keep!r}")
        chosen = sorted(self.conflicts)
        if not chosen:
            return EditReport("resolve conflicts")
        self.index.reload(chosen)  # the files as they are now become the loaded versions
        self.conflicts.difference_update(chosen)
        if keep == "mine":
            report = self.save(backup=backup, indices=chosen)
            report.action = "overwrite with my version"
            return report
        step = self._commit("take the disk version",
                            [(i, State(self.index.captions[i].text, tuple(self.index.tags[i]))) for i in chosen])
        return self._report("take the disk version", step)


def _label(step: Step) -> str:
    return f"{step.description} ({len(step.changes)} caption{'s' if len(step.changes) != 1 else ''})"
