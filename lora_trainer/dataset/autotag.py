"""What auto-tagging does to captions, independent of the tagger: threshold, blacklist, merge.

A tagger (the WebUI's DeepDanbooru or BLIP, reached through the host) returns, per image,
scored tags: `[(tag, probability), ...]` (a BLIP caption is one "tag" with score 1.0). This
module decides which of them to keep (`select_tags`: at or over the threshold, not
blacklisted, most probable first) and how they join the caption already there (`merge`):

- append: the new tags after the existing ones;
- prepend: the new tags first (after the trigger word, which stays first);
- fill_empty: only captions without tags get the new tags;
- overwrite: the new tags replace the caption (the trigger word is kept first).

Tags already in the caption are never added twice, and the blacklist only filters the new
tags: auto-tagging never removes a tag the user wrote, except in overwrite mode, which the
UI asks about first.
"""

import fnmatch
import re
from typing import Callable, List, Optional, Sequence, Tuple

from lora_trainer.dataset import tags as T
from lora_trainer.errors import DatasetError

MODES = ("append", "prepend", "fill_empty", "overwrite")
MODE_LABELS = {"append": "append", "prepend": "prepend", "fill_empty": "fill empty only", "overwrite": "overwrite"}
Scored = Sequence[Tuple[str, float]]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DatasetError(f"auto-tag mode {mode!r} is not known; use one of {', '.join(MODES)}")


def _blacklist_key(tag: str) -> str:
    """Taggers write `long_hair` or `long hair` depending on a setting: match either way."""
    return T.tag_key(tag).replace("_", " ")


def parse_blacklist(text: str) -> Callable[[str], bool]:
    """A predicate "is this tag blacklisted" from comma- or newline-separated entries: a plain
    tag (case, spaces/underscores and prompt escapes ignored), a wildcard (`*hair*`), or a
    regular expression between slashes (`/^rating:/`)."""
    plain, wildcards, patterns = set(), [], []
    for entry in re.split(r"[,\n]", text or ""):
        entry = entry.strip()
        if not entry:
            continue
        if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
            try:
                patterns.append(re.compile(entry[1:-1], re.IGNORECASE))
            except re.error as exc:
                raise DatasetError(f"blacklist entry {entry!r} is not a valid regular expression ({exc})") from exc
        elif any(ch in entry for ch in "*?["):
            wildcards.append(re.compile(fnmatch.translate(_blacklist_key(entry))))
        else:
            plain.add(_blacklist_key(entry))

    def blacklisted(tag: str) -> bool:
        key = _blacklist_key(tag)
        return (key in plain or any(w.match(key) for w in wildcards)
                or any(p.search(T.tag_key(tag)) or p.search(key) for p in patterns))

    return blacklisted


def select_tags(scored: Scored, threshold: float, blacklist: Optional[Callable[[str], bool]] = None,
                limit: Optional[int] = None) -> List[str]:
    """The tags worth keeping: score at or over `threshold`, not blacklisted, each once, most
    probable first (ties keep the tagger's order), at most `limit`. A tag may itself hold
    several comma-separated tags (a BLIP caption with commas): each becomes a tag."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise DatasetError(f"the threshold must be between 0 and 1, not {threshold}")
    ranked = sorted(((float(score), position, tag) for position, (tag, score) in enumerate(scored)
                     if float(score) >= threshold), key=lambda item: (-item[0], item[1]))
    out: List[str] = []
    seen = set()
    for _, _, text in ranked:
        for tag in T.parse_tags(text):
            key = T.tag_key(tag)
            if key in seen or (blacklist is not None and blacklist(tag)):
                continue
            seen.add(key)
            out.append(tag)
    return out[:limit] if limit else out


def _head(existing: Sequence[str], keep_first: Sequence[str]) -> int:
    """How many leading tags of `existing` are among `keep_first` (the trigger words)."""
    keys = {T.tag_key(t) for t in keep_first if T.normalize_tag(t)}
    count = 0
    while count < len(existing) and T.tag_key(existing[count]) in keys:
        count += 1
    return count


def merge(existing: Sequence[str], new: Sequence[str], mode: str, keep_first: Sequence[str] = ()) -> List[str]:
    """The caption's tags after auto-tagging in `mode` (see the module text). `keep_first`: tags
    that stay first where the caption starts with them (the trigger word)."""
    check_mode(mode)
    existing = list(existing)
    have = {T.tag_key(t) for t in existing}
    head = _head(existing, keep_first)
    if mode == "fill_empty":
        return existing if existing else T.dedupe(new)
    if mode == "overwrite":
        kept = existing[:head]
        kept_keys = {T.tag_key(t) for t in kept}
        return kept + T.dedupe([t for t in new if T.tag_key(t) not in kept_keys])
    fresh = T.dedupe([t for t in new if T.tag_key(t) not in have])
    if not fresh:
        return existing
    if mode == "append":
        return existing + fresh
    return existing[:head] + fresh + existing[head:]
