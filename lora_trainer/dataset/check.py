"""Dataset check: what a person should know before training on a folder.

Counts per folder with repeats, resolution histogram, missing/empty/non-UTF-8 captions,
duplicate images (same bytes), unreadable images (a real full decode, so truncated files
are found), captions over 75 and 225 tokens, tag frequency. Decoding 10,000 images takes
a while, so each image's facts are cached in `.lora_trainer/image_check.json` by size and
mtime: a second check of an unchanged dataset only stats the files.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lora_trainer.dataset.buckets import BucketSettings, bucket_report, bucket_resolutions, choose_bucket
from lora_trainer.dataset.captions import atomic_write
from lora_trainer.dataset.images import DEFAULT_MAX_PIXELS, inspect_image
from lora_trainer.dataset.library import DatasetIndex, in_parallel
from lora_trainer.dataset.tags import token_counts

CACHE_NAME = "image_check.json"
CACHE_VERSION = 1


@dataclass
class ImageFacts:
    size: Optional[Tuple[int, int]]  # (width, height) after EXIF rotation; None if unreadable
    hash: Optional[str]  # content hash of the file's bytes
    problem: Optional[str]  # why it cannot be used, or None


@dataclass
class DatasetReport:
    images: int
    folders: Dict[str, dict]
    captions_missing: List[str] = field(default_factory=list)
    captions_empty: List[str] = field(default_factory=list)
    non_utf8: List[str] = field(default_factory=list)  # caption files
    captions_unreadable: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)  # images that cannot be decoded
    unreadable_reasons: Dict[str, str] = field(default_factory=dict)  # image -> why
    duplicates: List[List[str]] = field(default_factory=list)
    resolutions: Dict[str, int] = field(default_factory=dict)
    buckets: Dict[str, int] = field(default_factory=dict)
    tokens_over_75: List[str] = field(default_factory=list)
    tokens_over_225: List[str] = field(default_factory=list)
    tag_frequency: Dict[str, int] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):  # read like the dict callers of the first API expect
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)


def _stat_key(path: Path) -> Optional[List[int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, os.access(path, os.R_OK)]  # readability: chmod changes no mtime


def _examine(path: Path, max_pixels: int) -> ImageFacts:
    size, digest, problem = inspect_image(path, max_pixels)
    return ImageFacts(size, None if problem else digest, problem)


def image_facts(index: DatasetIndex, max_pixels: int = DEFAULT_MAX_PIXELS, workers: Optional[int] = None,
                use_cache: bool = True) -> List[ImageFacts]:
    """Facts of every image of `index`, decoding only those new or changed since the last check."""
    cache_path = index.state_dir / CACHE_NAME
    cached: Dict[str, list] = {}
    if use_cache and cache_path.is_file():
        try:
            document = json.loads(cache_path.read_text(encoding="utf-8"))
            if document.get("version") == CACHE_VERSION and document.get("max_pixels") == max_pixels:
                cached = document.get("images", {})
        except (OSError, ValueError):
            cached = {}  # a damaged cache is only a slower check
    results: List[Optional[ImageFacts]] = [None] * len(index)
    keys = [index.relative(i) for i in range(len(index))]
    stats = in_parallel(lambda entry: _stat_key(entry.image), index.entries)
    todo = []
    for i, (key, stat) in enumerate(zip(keys, stats)):
        hit = cached.get(key)
        if stat is not None and hit and hit[0] == stat:
            size, digest, problem = hit[1], hit[2], hit[3]
            results[i] = ImageFacts(tuple(size) if size else None, digest, problem)
        else:
            todo.append(i)
    # Threads only where each decode is slow (large images: Pillow decodes without the GIL); for
    # small files they contend for the GIL and are slower than one thread.
    decoded = in_parallel(lambda i: _examine(index.entries[i].image, max_pixels), todo,
                          workers=workers or min(8, (os.cpu_count() or 2)), slow_s=0.002)
    for i, facts in zip(todo, decoded):
        results[i] = facts
    if use_cache and (todo or len(cached) != len(keys)):
        images = {key: [stat, list(f.size) if f.size else None, f.hash, f.problem]
                  for key, stat, f in zip(keys, stats, results) if stat is not None}
        try:
            index.state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_path, json.dumps({"version": CACHE_VERSION, "max_pixels": max_pixels, "images": images}).encode("utf-8"))
        except OSError:
            pass  # a read-only dataset can still be checked, only not cached
    return results  # type: ignore[return-value]


def check_dataset(index, entries=None, store=None, tokenizer=None, buckets: Optional[BucketSettings] = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, workers: Optional[int] = None) -> DatasetReport:
    """The report for a `DatasetIndex` (or for a folder: `check_dataset(root, entries, store)`);
    token limits only with a `tokenizer`, buckets only with settings."""
    if not isinstance(index, DatasetIndex):
        index = store if isinstance(store, DatasetIndex) else (
            DatasetIndex.from_entries(index, entries) if entries is not None else DatasetIndex.load(index))
    facts = image_facts(index, max_pixels, workers)
    folders: Dict[str, dict] = {}
    for entry in index.entries:
        folder = folders.setdefault(entry.folder, {"repeats": entry.repeats, "images": 0, "regularization": entry.is_reg})
        folder["images"] += 1
    report = DatasetReport(images=len(index), folders=folders, problems=list(index.problems))
    report.captions_missing = [index.relative(i) for i in index.missing_captions()]
    report.captions_empty = [index.relative(i) for i in index.empty_captions()]
    report.non_utf8 = [index.relative(i, caption=True) for i in index.non_utf8_captions()]
    report.captions_unreadable = [index.captions[i].error or "" for i in index.unreadable_captions()]
    by_hash: Dict[str, List[str]] = {}
    resolutions: Dict[str, int] = {}
    usable: List[int] = []
    for i, f in enumerate(facts):
        if f.problem:
            report.unreadable.append(index.relative(i))
            report.unreadable_reasons[index.relative(i)] = f.problem
            continue
        usable.append(i)
        by_hash.setdefault(f.hash, []).append(index.relative(i))
        label = f"{f.size[0]}x{f.size[1]}"
        resolutions[label] = resolutions.get(label, 0) + 1
    report.duplicates = [group for group in by_hash.values() if len(group) > 1]
    report.resolutions = dict(sorted(resolutions.items(), key=lambda kv: (-kv[1], kv[0])))
    if buckets is not None:
        grid = bucket_resolutions(buckets)
        report.buckets = bucket_report([choose_bucket(facts[i].size, buckets, grid).bucket for i in usable],
                                       [index.entries[i].repeats for i in usable])
    if tokenizer is not None:
        texts = [index.training_caption(i) for i in range(len(index))]
        for i, count in enumerate(token_counts(tokenizer, texts)):
            if count > 75:
                report.tokens_over_75.append(index.relative(i))
            if count > 225:
                report.tokens_over_225.append(index.relative(i))
    report.tag_frequency = dict(sorted(index.frequency().items(), key=lambda kv: (-kv[1], kv[0])))
    return report


def format_report(report: DatasetReport, top_tags: int = 20) -> str:
    """The report as a few readable lines (the CLI's default output)."""
    lines = [f"{report.images} image(s)"]
    for name, folder in report.folders.items():
        kind = " (regularization)" if folder.get("regularization") else ""
        lines.append(f"  {name}: {folder['images']} image(s) x {folder['repeats']} repeat(s){kind}")
    for label, items in (("captions missing (training uses the folder name)", report.captions_missing),
                         ("captions empty (training uses the folder name)", report.captions_empty),
                         ("captions not valid UTF-8 (bulk edits skip them)", report.non_utf8),
                         ("captions unreadable", report.captions_unreadable),
                         ("captions over 75 tokens", report.tokens_over_75),
                         ("captions over 225 tokens (the rest is cut off)", report.tokens_over_225),
                         ("notes from the scan", report.problems)):
        if items:
            lines.append(f"{len(items)} {label}: " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
    if report.unreadable:
        lines.append(f"{len(report.unreadable)} unreadable image(s), skipped in training:")
        lines.extend(f"  {report.unreadable_reasons[u]}" for u in report.unreadable[:20])
    if report.duplicates:
        lines.append(f"{len(report.duplicates)} group(s) of identical images: " + "; ".join(" = ".join(g) for g in report.duplicates[:5]))
    if report.resolutions:
        lines.append("resolutions: " + ", ".join(f"{k} ({v})" for k, v in list(report.resolutions.items())[:10]))
    if report.buckets:
        lines.append("buckets: " + ", ".join(f"{k} ({v})" for k, v in report.buckets.items()))
    if report.tag_frequency:
        lines.append("top tags: " + ", ".join(f"{k} ({v})" for k, v in list(report.tag_frequency.items())[:top_tags]))
    return "\n".join(lines)
