"""The dataset check: what a user should know before training, in one report.

Counts per folder with repeats, a resolution histogram, missing/empty/not-UTF-8 captions,
duplicate images (same bytes), unreadable images (a real decode, truncation included) and,
given a tokenizer, captions over 75 and 225 tokens, plus the tag frequency. The decode pass
is cached by file size and mtime in `<dataset>/.lora_trainer/`, so a second check is fast.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from lora_trainer.dataset.captions import CaptionStore, write_atomic
from lora_trainer.dataset.images import ImageProblem, open_rgb
from lora_trainer.dataset.scan import STATE_FOLDER, ImageEntry
from lora_trainer.dataset.tags import frequency, token_count

VERIFY_CACHE = "verify_cache.json"


def _verify(path: Path) -> Dict:
    """Decode once: size, content hash and whether the image is usable."""
    data = path.read_bytes()
    record = {"sha1": hashlib.sha1(data).hexdigest(), "problem": None, "size": None}
    try:
        image = open_rgb(path)
        record["size"] = [image.width, image.height]
    except ImageProblem as exc:
        record["problem"] = str(exc)
    return record


def verify_images(root: Path, entries: List[ImageEntry]) -> Dict[str, Dict]:
    """{image path: record}, reusing cached records whose file size and mtime are unchanged."""
    cache_path = Path(root) / STATE_FOLDER / VERIFY_CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    records, fresh = {}, {}
    for entry in entries:
        key = str(entry.image)
        try:
            stat = entry.image.stat()
        except OSError as exc:
            records[key] = {"sha1": None, "problem": f"{entry.image.name}: cannot be read ({exc.strerror})", "size": None}
            continue
        stamp = [stat.st_size, stat.st_mtime_ns]
        cached = cache.get(key)
        if cached and cached.get("stamp") == stamp:
            records[key] = cached
        else:
            try:
                record = _verify(entry.image)
            except OSError as exc:
                record = {"sha1": None, "problem": f"{entry.image.name}: cannot be read ({exc.strerror})", "size": None}
            record["stamp"] = stamp
            records[key] = fresh[key] = record
    if fresh:
        try:
            cache_path.parent.mkdir(exist_ok=True)
            write_atomic(cache_path, json.dumps(records).encode("utf-8"))
        except OSError:
            pass  # read-only dataset: the check still works, just without the cache
    return records


def check_dataset(root: Path, entries: List[ImageEntry], store: CaptionStore, tokenizer=None) -> Dict:
    records = verify_images(root, entries)
    folders: Dict[str, Dict] = {}
    for entry in entries:
        folder = folders.setdefault(entry.folder, {"repeats": entry.repeats, "images": 0, "regularization": entry.is_reg})
        folder["images"] += 1
    by_hash: Dict[str, List[str]] = {}
    for path, record in records.items():
        if record.get("sha1"):
            by_hash.setdefault(record["sha1"], []).append(path)
    resolutions = Counter(f"{r['size'][0]}x{r['size'][1]}" for r in records.values() if r.get("size"))
    report = {
        "images": len(entries),
        "folders": folders,
        "resolutions": dict(resolutions.most_common()),
        **store.problems(),
        "unreadable": [r["problem"] for r in records.values() if r.get("problem")],
        "duplicates": [sorted(paths) for paths in by_hash.values() if len(paths) > 1],
        "tag_frequency": dict(frequency(c.tags for c in store.captions if c.valid_utf8).most_common()),
    }
    if tokenizer is not None:
        counts = {str(c.path): token_count(tokenizer, c.text) for c in store.captions if c.exists}
        report["captions_over_75_tokens"] = sorted(p for p, n in counts.items() if n > 75)
        report["captions_over_225_tokens"] = sorted(p for p, n in counts.items() if n > 225)
    return report
