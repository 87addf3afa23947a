"""Caption tags as pure functions: parse, normalise, add, remove, replace, sort, count.

A caption is comma-separated tags. Parsing keeps backslash escapes (`\\(`), prompt weights
(`(tag:1.2)`) and commas inside brackets intact, so `poster \\(object\\)` and
`(red, blue:1.2)` stay one tag each. Matching is by whole tag, ignoring case and extra
spaces (`tag_key`). Every operation returns a new list and leaves its input alone; an
operation with nothing to do returns a list equal to its input, which is how callers know
that a caption did not change (and must not be rewritten).
"""

import re
from collections import Counter
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Union

_SPECIAL = re.compile(r"[\\(\[{]")
_ESCAPED_BRACKET = re.compile(r"\\([()\[\]])")
_OPEN, _CLOSE = "([{", ")]}"


def normalize_tag(tag: str) -> str:
    """One tag with runs of whitespace made one space and the ends trimmed."""
    return " ".join(tag.split())


def tag_key(tag: str) -> str:
    """What two tags must share to be "the same tag": case, spacing and prompt escapes of
    brackets ignored (`Poster \\(object\\)` is `poster (object)`)."""
    return normalized_key(normalize_tag(tag))


def normalized_key(tag: str) -> str:
    """`tag_key` of a tag already normalised (as `parse_tags` returns them): the fast path."""
    key = tag.lower()
    return _ESCAPED_BRACKET.sub(r"\1", key) if "\\" in key else key


def tag_keys(tags: Sequence[str]) -> FrozenSet[str]:
    """The set of `normalized_key`s of tags as `parse_tags` returns them (whitespace already
    normalised, so no newlines), in one pass over their joined text: the index keeps one such
    set per caption and rebuilds it on every edit, 5,000 at a time in a batch."""
    if not tags:
        return frozenset()
    joined = "\n".join(tags)
    if "\\" in joined:
        return frozenset(map(normalized_key, tags))
    return frozenset(joined.lower().split("\n"))


def _closing(caption: str, start: int) -> int:
    """Index of the bracket closing the one at `start` (nesting and escapes respected), or -1."""
    depth, position, length = 0, start, len(caption)
    while position < length:
        ch = caption[position]
        if ch == "\\":
            position += 2
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return -1


def parse_tags(caption: str) -> List[str]:
    """Split on commas, except inside a bracket group; whitespace normalised, empty tags dropped.

    A group is an opening bracket at the start of a tag or after a space (`(red, blue:1.2)`,
    `girl (a, b)`) that is closed later; emoticon tags such as `:(` or `>_<` stay literal.
    Backslash escapes (`\\(`) are kept as written.
    """
    if "," not in caption:
        tag = normalize_tag(caption)
        return [tag] if tag else []
    if not _SPECIAL.search(caption):  # no brackets or escapes: a plain split (the common case)
        return [t for t in (" ".join(part.split()) for part in caption.split(",")) if t]
    tags: List[str] = []
    start, position, length = 0, 0, len(caption)
    while position < length:
        ch = caption[position]
        if ch == "\\":
            position += 2
            continue
        if ch == ",":
            tags.append(caption[start:position])
            start = position + 1
        elif ch in _OPEN and (position == start or caption[position - 1].isspace() or caption[position - 1] in _OPEN):
            close = _closing(caption, position)
            if close > 0:
                position = close
        position += 1
    tags.append(caption[start:])
    return [t for t in (normalize_tag(t) for t in tags) if t]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def normalize_caption(caption: str) -> str:
    """Whitespace normalised and `, ` between tags (duplicates kept: see `dedupe`)."""
    return join_tags(parse_tags(caption))


def dedupe(tags: Sequence[str]) -> List[str]:
    """First occurrence of each tag wins (case and spacing ignored)."""
    seen, out = set(), []
    for tag in tags:
        key = tag_key(tag)
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def has_tag(tags: Sequence[str], tag: str) -> bool:
    key = tag_key(tag)
    return any(tag_key(t) == key for t in tags)


def add_tag(tags: Sequence[str], new: str, position: Union[str, int] = "back", absent: bool = False) -> List[str]:
    """Add `new` at "front", "back" or an index. A tag already present stays where it is,
    except with "front", which moves it first (the trigger-word case). `absent=True` is a
    caller's promise that the tag is not there yet (it knows from its index): no search."""
    new = normalize_tag(new)
    if not new:
        return list(tags)
    key = tag_key(new)
    keys = [] if absent else [tag_key(t) for t in tags]
    if key in keys:
        if position != "front" or keys[0] == key:
            return list(tags)
        keep = tags[keys.index(key)]  # the user's spelling of the existing tag
        return [keep] + [t for t, k in zip(tags, keys) if k != key]
    if position == "front":
        return [new] + list(tags)
    if position == "back":
        return list(tags) + [new]
    index = max(0, min(int(position), len(tags)))
    return list(tags[:index]) + [new] + list(tags[index:])


def remove_tag(tags: Sequence[str], target: str) -> List[str]:
    key = tag_key(target)
    return [t for t in tags if tag_key(t) != key]


def replace_tag(tags: Sequence[str], old: str, new: str, regex: bool = False, whole: bool = True) -> List[str]:
    """Replace tags equal to `old` (or matching the regex `old`) with `new`.

    Whole tags only by default: `red` does not touch `red hair`. With `whole=False` the text or
    regex may also match inside a tag. `new` may hold several comma-separated tags; an empty
    result removes the tag; a replacement that duplicates a tag already present is dropped.
    Regexes are case-insensitive and may use groups (`\\1`).
    """
    pattern = re.compile(old if regex else re.escape(normalize_tag(old)), re.IGNORECASE)
    replacement = new if regex else new.replace("\\", "\\\\")
    out: List[str] = []
    changed = False
    for tag in tags:
        if whole:
            if regex:
                hit = pattern.fullmatch(tag) is not None
            else:
                hit = tag_key(tag) == tag_key(old)
            replaced = pattern.sub(replacement, tag, count=1) if hit else tag
        else:
            replaced = pattern.sub(replacement, tag)
            hit = replaced != tag
        if hit:
            changed = True
            out.extend(("\0", t) for t in parse_tags(replaced))  # marked: new, deduped below
        else:
            out.append(("", tag))
    if not changed:
        return list(tags)
    seen = {tag_key(t) for mark, t in out if not mark}
    result: List[str] = []
    for mark, tag in out:
        if mark:
            if tag_key(tag) in seen:
                continue
            seen.add(tag_key(tag))
        result.append(tag)
    return result


def move_to_front(tags: Sequence[str], targets: Sequence[str]) -> List[str]:
    """The `targets` present in `tags`, in the order given, then the other tags in their order."""
    keys = [tag_key(t) for t in targets]
    front = [t for key in keys for t in tags if tag_key(t) == key]
    return front + [t for t in tags if tag_key(t) not in keys]


def sort_tags(tags: Sequence[str], keep: int = 0, frequency: Optional[Dict[str, int]] = None,
              reverse: bool = False) -> List[str]:
    """Alphabetical, or by dataset frequency (most common first), leaving the first `keep` tags
    (trigger words, kohya's keep_tokens) where they are."""
    fixed, rest = list(tags[:keep]), list(tags[keep:])
    if frequency is None:
        rest.sort(key=tag_key, reverse=reverse)
    else:
        rest.sort(key=lambda t: (-frequency.get(tag_key(t), 0), tag_key(t)), reverse=reverse)
    return fixed + rest


def frequency(captions: Iterable[Sequence[str]]) -> Counter:
    """In how many captions each tag (by `tag_key`) appears."""
    counts: Counter = Counter()
    for tags in captions:
        counts.update({tag_key(t) for t in tags})
    return counts


def token_count(tokenizer, caption: str) -> int:
    """Tokens of the caption for a CLIP-style tokenizer, BOS/EOS excluded: what the 75-token
    chunks (75 / 150 / 225) are counted in. `tokenizer` has transformers' call interface."""
    return len(tokenizer(caption, add_special_tokens=False)["input_ids"])


def token_counts(tokenizer, captions: Sequence[str]) -> List[int]:
    """`token_count` for many captions in one batched tokenizer call."""
    if not captions:
        return []
    return [len(ids) for ids in tokenizer(list(captions), add_special_tokens=False)["input_ids"]]
