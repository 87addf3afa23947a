"""Caption tags as pure functions: parse, normalise, add, remove, replace, sort, count.

A caption is comma-separated tags. Parsing keeps backslash escapes (`\\(`), prompt weights
(`(tag:1.2)`) and commas inside brackets intact. Matching is by whole tag, ignoring case and
extra spaces (`tag_key`). Every operation returns a new list; nothing here touches files.
"""

import random
import re
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Union

_SPACES = re.compile(r"\s+")
_OPEN, _CLOSE = "([{", ")]}"


def normalize_tag(tag: str) -> str:
    return _SPACES.sub(" ", tag).strip()


def tag_key(tag: str) -> str:
    """What two tags must share to be "the same tag": case and spacing ignored."""
    return normalize_tag(tag).lower()


def parse_tags(caption: str) -> List[str]:
    """Split on commas outside brackets, keeping escapes; empty tags are dropped."""
    tags, current, depth, escaped = [], [], 0, False
    for ch in caption:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch in _OPEN:
            depth += 1
            current.append(ch)
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
            current.append(ch)
        elif ch == "," and depth == 0:
            tags.append("".join(current))
            current = []
        else:
            current.append(ch)
    tags.append("".join(current))
    return [t for t in (normalize_tag(t) for t in tags) if t]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def normalize_caption(caption: str) -> str:
    return join_tags(parse_tags(caption))


def dedupe(tags: Sequence[str]) -> List[str]:
    """First occurrence of each tag wins."""
    seen, out = set(), []
    for tag in tags:
        key = tag_key(tag)
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def add_tag(tags: Sequence[str], new: str, position: Union[str, int] = "back") -> List[str]:
    """Add `new` at the front, the back or an index; "front" also moves an existing copy first."""
    new = normalize_tag(new)
    if not new:
        return list(tags)
    present = any(tag_key(t) == tag_key(new) for t in tags)
    if present and position != "front":
        return list(tags)
    rest = [t for t in tags if tag_key(t) != tag_key(new)]
    if position == "front":
        return [new] + rest
    if position == "back":
        return rest + [new]
    index = max(0, min(int(position), len(rest)))
    return rest[:index] + [new] + rest[index:]


def remove_tag(tags: Sequence[str], target: str) -> List[str]:
    key = tag_key(target)
    return [t for t in tags if tag_key(t) != key]


def replace_tag(tags: Sequence[str], old: str, new: str, regex: bool = False, whole: bool = True) -> List[str]:
    """Replace whole tags equal to `old` (or matching the regex `old`); an empty result removes the tag.

    With `whole=False`, a regex or plain text may also match inside a tag.
    """
    out = []
    if regex:
        pattern = re.compile(old, re.IGNORECASE)
    for tag in tags:
        if regex:
            if whole:
                replaced = pattern.sub(new, tag) if pattern.fullmatch(tag) else tag
            else:
                replaced = pattern.sub(new, tag)
        elif whole:
            replaced = new if tag_key(tag) == tag_key(old) else tag
        else:
            replaced = re.sub(re.escape(old), new.replace("\\", "\\\\"), tag, flags=re.IGNORECASE)
        out.extend(parse_tags(replaced))
    return dedupe(out)


def move_to_front(tags: Sequence[str], targets: Sequence[str]) -> List[str]:
    keys = [tag_key(t) for t in targets]
    front = [t for key in keys for t in tags if tag_key(t) == key]
    return dedupe(front + [t for t in tags if tag_key(t) not in keys])


def sort_tags(tags: Sequence[str], keep: int = 0, frequency: Optional[Dict[str, int]] = None) -> List[str]:
    """Alphabetical, or by dataset frequency (most common first), after the first `keep` tags."""
    fixed, rest = list(tags[:keep]), list(tags[keep:])
    if frequency is None:
        rest.sort(key=tag_key)
    else:
        rest.sort(key=lambda t: (-frequency.get(tag_key(t), 0), tag_key(t)))
    return fixed + rest


def frequency(captions: Iterable[Sequence[str]]) -> Counter:
    """In how many captions each tag (by key) appears."""
    counts: Counter = Counter()
    for tags in captions:
        counts.update({tag_key(t) for t in tags})
    return counts


def token_count(tokenizer, caption: str) -> int:
    """Tokens of the caption for a CLIP tokenizer (BOS/EOS excluded): the 75/150/225 budget."""
    return len(tokenizer(caption, add_special_tokens=False)["input_ids"])


def training_caption(caption: str, keep_tokens: int = 0, shuffle: bool = False, tag_dropout: float = 0.0,
                     caption_dropout: float = 0.0, rng: Optional[random.Random] = None) -> str:
    """The caption one training step sees: caption dropout, then tag dropout and shuffle after `keep_tokens`."""
    rng = rng or random.Random()
    if caption_dropout and rng.random() < caption_dropout:
        return ""
    tags = parse_tags(caption)
    keep = max(0, int(keep_tokens))
    fixed, rest = tags[:keep], tags[keep:]
    if tag_dropout:
        rest = [t for t in rest if rng.random() >= tag_dropout]
    if shuffle:
        rng.shuffle(rest)
    return join_tags(fixed + rest)
