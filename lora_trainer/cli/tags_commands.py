"""`python -m lora_trainer tags ...`: dataset statistics and bulk caption edits with undo.

The same library functions as the tag editor tab (`lora_trainer.dataset`). Every edit prints
what changed and what was skipped; `tags undo DIR` reverts the last edit, `tags redo DIR`
does again what the last undo reverted. Exit codes: 0 done,
1 some captions could not be written or changed on disk meanwhile (named in the output),
2 bad input.
"""

import argparse
import json
import sys
from pathlib import Path


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="dataset folder (kohya <repeats>_<name> subfolders, or a flat folder)")
    parser.add_argument("--caption-ext", default=".txt", help="caption file extension (default .txt; e.g. .caption)")
    parser.add_argument("--recursive", action="store_true", help="also scan subfolders of each concept folder")


def _edit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", default="", metavar="EXPR",
                        help='act only on images whose tags match, e.g. "red hair AND NOT (solo OR 1boy)"')
    parser.add_argument("--backup", action="store_true", help="keep a copy of each caption before rewriting it (in DIR/.lora_trainer/backups)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers) -> None:
    tags = subparsers.add_parser("tags", help="dataset statistics and bulk caption edits (with undo)",
                                 description=__doc__.splitlines()[0])
    sub = tags.add_subparsers(dest="tags_command", metavar="ACTION")
    sub.required = True

    stats = sub.add_parser("stats", help="images per folder, caption problems, unreadable and duplicate images, tag frequency")
    _common(stats)
    stats.add_argument("--json", action="store_true", help="print the full report as JSON")
    stats.add_argument("--reg-dir", type=Path, default=None, help="regularization folder to include")
    stats.add_argument("--tokens", action="store_true", help="count CLIP tokens per caption (flags > 75 and > 225)")
    stats.add_argument("--resolution", type=int, default=0, help="also show the kohya buckets for this training resolution")
    stats.set_defaults(handler=_stats)

    add = sub.add_parser("add", help="add a tag to every (or every filtered) caption")
    _common(add)
    add.add_argument("tag")
    add.add_argument("--front", action="store_true", help="put it first (moves it there if already present)")
    _edit_options(add)
    add.set_defaults(handler=_add)

    remove = sub.add_parser("remove", help="remove a tag (whole tag, any case)")
    _common(remove)
    remove.add_argument("tag")
    _edit_options(remove)
    remove.set_defaults(handler=_remove)

    rep = sub.add_parser("replace", help="replace a tag (whole tags only) or, with --regex, tags matching a pattern")
    _common(rep)
    rep.add_argument("old")
    rep.add_argument("new", help="replacement (empty removes the tag; may hold several tags: \"a, b\")")
    rep.add_argument("--regex", action="store_true", help="OLD is a regular expression matched against whole tags")
    rep.add_argument("--partial", action="store_true", help="also replace inside tags, not only whole tags")
    _edit_options(rep)
    rep.set_defaults(handler=_replace)

    undo = sub.add_parser("undo", help="undo the last edit of this dataset")
    _common(undo)
    undo.add_argument("--json", action="store_true", help="print the result as JSON")
    undo.set_defaults(handler=_undo)

    redo = sub.add_parser("redo", help="do again the edit the last undo reverted")
    _common(redo)
    redo.add_argument("--json", action="store_true", help="print the result as JSON")
    redo.set_defaults(handler=_redo)

    history = sub.add_parser("history", help="list the edits that can be undone, newest first")
    _common(history)
    history.set_defaults(handler=_history)


def _load(args, backup: bool = False):
    from lora_trainer.dataset.library import DatasetIndex

    return DatasetIndex.load(args.dir, args.caption_ext, args.recursive, getattr(args, "reg_dir", None), backup=backup)


def _stats(args) -> int:
    from lora_trainer.dataset.buckets import BucketSettings
    from lora_trainer.dataset.check import check_dataset, format_report

    index = _load(args)
    tokenizer = None
    if args.tokens:
        from lora_trainer.models.families import CLIP_L
        from lora_trainer.models.tokenizers import load_clip_tokenizer

        tokenizer = load_clip_tokenizer(CLIP_L)
    buckets = BucketSettings((args.resolution, args.resolution)) if args.resolution else None
    report = check_dataset(index, tokenizer=tokenizer, buckets=buckets)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    else:
        print(format_report(report))
    return 0


def _run_edit(args, action) -> int:
    index = _load(args, backup=args.backup)
    indices = index.filter(args.filter) if args.filter else None
    if indices is not None and not indices:
        print(f"no image matches the filter {args.filter!r}; nothing changed", file=sys.stderr)
        return 0
    report = action(index, indices)
    _print(report, args)
    return 1 if (report.conflicts or report.failed) else 0


def _print(report, args) -> None:
    if getattr(args, "json", False):
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    else:
        print(report.summary())


def _add(args) -> int:
    return _run_edit(args, lambda index, sel: index.add(args.tag, "front" if args.front else "back", sel))


def _remove(args) -> int:
    return _run_edit(args, lambda index, sel: index.remove(args.tag, sel))


def _replace(args) -> int:
    return _run_edit(args, lambda index, sel: index.replace(args.old, args.new, regex=args.regex, whole=not args.partial, indices=sel))


def _undo(args) -> int:
    report = _load(args).undo()
    _print(report, args)
    return 1 if (report.conflicts or report.failed) else 0


def _redo(args) -> int:
    report = _load(args).redo()
    _print(report, args)
    return 1 if (report.conflicts or report.failed) else 0


def _history(args) -> int:
    from lora_trainer.dataset.history import History
    from lora_trainer.dataset.scan import STATE_FOLDER

    lines = History(args.dir / STATE_FOLDER, args.dir).summaries()
    print("\n".join(lines) if lines else f"no edits recorded for {args.dir}")
    return 0
