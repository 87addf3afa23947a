"""Bulk tag edits as values: what to do to one caption's tags, and which captions it cannot change.

`DatasetIndex` (which writes at once) and `EditSession` (which keeps edits in memory until
saved) run the very same edits: an `EditSpec` built here is planned over either one's tags
by `plan_edit`, so "add at the front" or "replace by regex" means exactly one thing.
"""

import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

from lora_trainer.dataset import tags as T
from lora_trainer.errors import DatasetError

Keys = FrozenSet[str]


@dataclass(frozen=True)
class EditSpec:
    """One bulk edit. `change(tags)` (or `change(tags, keys)` when `keyed`) returns the new tags,
    equal to the input when there is nothing to do; `skip(keys)` true means the edit cannot
    change a caption with those tag keys, so `change` need not even be called (10,000-caption
    edits stay cheap)."""

    description: str
    change: Callable
    skip: Optional[Callable[[Keys], bool]] = None
    keyed: bool = False

    def apply(self, tags: List[str], keys: Keys) -> List[str]:
        return self.change(tags, keys) if self.keyed else self.change(tags)


def _tag_list(tags: Union[str, Sequence[str]], what: str) -> List[str]:
    """`"a, b"` or `["a", "b"]` as normalised tags; at least one, or a clear error."""
    items = T.parse_tags(tags) if isinstance(tags, str) else [t for t in (T.normalize_tag(x) for x in tags) if t]
    if not items:
        raise DatasetError(f"the tag to {what} is empty: give the tag text")
    return T.dedupe(items)


def add(tags: Union[str, Sequence[str]], position: Union[str, int] = "back") -> EditSpec:
    """Add each tag; "front" also moves a tag already present to the front (the trigger-word case).
    Several tags keep their given order (`add("a, b", "front")` gives `a, b, ...`)."""
    new = _tag_list(tags, "add")
    new_keys = [T.tag_key(t) for t in new]
    label = ", ".join(new)

    def change(current: List[str], keys: Keys) -> List[str]:
        if position in ("front", "back") and keys.isdisjoint(new_keys):  # none there yet: the common case
            return new + list(current) if position == "front" else list(current) + new
        out = current
        if position == "front":
            for tag, key in zip(reversed(new), reversed(new_keys)):
                out = T.add_tag(out, tag, "front", absent=out is current and key not in keys)
            return out
        for tag, key in zip(new, new_keys):
            out = T.add_tag(out, tag, position, absent=out is current and key not in keys)
        return out

    skip = None if position == "front" else (lambda keys: all(k in keys for k in new_keys))
    return EditSpec(f"add {label!r}" + (" at the front" if position == "front" else ""), change, skip, keyed=True)


def remove(tags: Union[str, Sequence[str]]) -> EditSpec:
    targets = _tag_list(tags, "remove")
    target_keys = frozenset(T.tag_key(t) for t in targets)

    def change(current: List[str]) -> List[str]:
        kept = [t for t in current if T.tag_key(t) not in target_keys]
        return kept if len(kept) != len(current) else list(current)

    return EditSpec(f"remove {', '.join(targets)!r}", change, lambda keys: target_keys.isdisjoint(keys))


def replace(old: str, new: str, regex: bool = False, whole: bool = True) -> EditSpec:
    """Whole tags equal to `old` (or matching the regex) become `new` (see `tags.replace_tag`)."""
    if not old or not old.strip():
        raise DatasetError("the tag to replace is empty: give the tag (or regular expression) to find")
    if regex:
        try:
            re.compile(old)
        except re.error as exc:
            raise DatasetError(f"regular expression {old!r} is not valid ({exc}); fix it or turn regex off") from exc
    key = T.tag_key(old)
    plain_whole = whole and not regex
    return EditSpec(f"replace {old!r} with {new!r}" + (" (regex)" if regex else ""),
                    lambda tags: T.replace_tag(tags, old, new, regex=regex, whole=whole),
                    (lambda keys: key not in keys) if plain_whole else None)


def move_to_front(targets: Union[str, Sequence[str]]) -> EditSpec:
    items = _tag_list(targets, "move")
    target_keys = frozenset(T.tag_key(t) for t in items)
    return EditSpec(f"move {', '.join(items)} to the front", lambda tags: T.move_to_front(tags, items),
                    lambda keys: target_keys.isdisjoint(keys))


def sort(keep: int = 0, frequency: Optional[Dict[str, int]] = None) -> EditSpec:
    """Alphabetical, or most frequent first with `frequency` (tag key -> count); the first
    `keep` tags stay where they are."""
    return EditSpec("sort tags" + (" by frequency" if frequency is not None else ""),
                    lambda tags: T.sort_tags(tags, max(0, int(keep)), frequency))


def dedupe() -> EditSpec:
    return EditSpec("remove duplicate tags", T.dedupe)


@dataclass
class Planned:
    """What a bulk edit would do: the new tags per caption index, and what it left alone and why."""

    changes: List[Tuple[int, List[str]]]
    unchanged: int
    skipped_unreadable: List[str]  # the read error of each caption that cannot be read
    skipped_non_utf8: List[int]  # indices of captions that are not valid UTF-8


def plan_edit(spec: EditSpec, captions: Sequence, tags: Sequence[List[str]], keys: Sequence[Keys],
              indices: Optional[Iterable[int]] = None) -> Planned:
    """Run `spec` over the chosen captions' tags (all when `indices` is None) without writing
    anything. Unreadable and non-UTF-8 captions are never changed by a bulk edit (a non-UTF-8
    caption is only rewritten by an explicit edit of that one caption)."""
    planned = Planned([], 0, [], [])
    for i in (range(len(tags)) if indices is None else indices):
        caption = captions[i]
        if caption.error:
            planned.skipped_unreadable.append(caption.error)
            continue
        if caption.non_utf8:
            planned.skipped_non_utf8.append(i)
            continue
        if spec.skip is not None and spec.skip(keys[i]):
            planned.unchanged += 1
            continue
        new_tags = spec.apply(list(tags[i]), keys[i])
        if new_tags == tags[i]:
            planned.unchanged += 1
            continue
        planned.changes.append((i, new_tags))
    return planned
