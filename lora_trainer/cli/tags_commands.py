"""`tags`: dataset stats and bulk caption edits from the shell (the same functions as the tab).

    python -m lora_trainer tags stats DIR [--json]
    python -m lora_trainer tags add DIR TAG [--front] [--filter EXPR]
    python -m lora_trainer tags remove DIR TAG [--filter EXPR]
    python -m lora_trainer tags replace DIR OLD NEW [--regex] [--filter EXPR]
    python -m lora_trainer tags undo DIR
"""

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    tags = sub.add_parser("tags", help="dataset stats and bulk caption edits")
    actions = tags.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def common(parser, with_filter=True):
        parser.add_argument("dir", type=Path, help="dataset folder")
        parser.add_argument("--caption-extension", default=".txt")
        parser.add_argument("--recursive", action="store_true")
        if with_filter:
            parser.add_argument("--filter", default="", help='act only on matching images, e.g. "red hair AND NOT hat"')
            parser.add_argument("--backup", action="store_true", help="keep <caption>.bak copies of what is changed")

    stats = actions.add_parser("stats", help="counts, problems and tag frequency")
    common(stats, with_filter=False)
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--tokens", action="store_true", help="also count CLIP tokens (needs transformers)")
    add = actions.add_parser("add", help="add a tag to every (matching) caption")
    common(add)
    add.add_argument("tag")
    add.add_argument("--front", action="store_true", help="put it first (moving it if present)")
    remove = actions.add_parser("remove", help="remove a tag")
    common(remove)
    remove.add_argument("tag")
    replace = actions.add_parser("replace", help="replace a whole tag (or a regex over whole tags)")
    common(replace)
    replace.add_argument("old")
    replace.add_argument("new")
    replace.add_argument("--regex", action="store_true")
    undo = actions.add_parser("undo", help="undo the last caption change of this dataset")
    common(undo, with_filter=False)
    for parser in (stats, add, remove, replace, undo):
        parser.set_defaults(handler=_run)


def _open(args, backup=False):
    from lora_trainer.dataset.captions import CaptionStore
    from lora_trainer.dataset.scan import require_images, scan

    entries = scan(args.dir, args.caption_extension, args.recursive)
    require_images(entries, args.dir)
    return CaptionStore(args.dir, entries, backup=backup)


def _stats(args) -> int:
    from lora_trainer.dataset.check import check_dataset

    store = _open(args)
    tokenizer = None
    if args.tokens:
        from lora_trainer.models.tokenizers import load_clip_tokenizer

        tokenizer = load_clip_tokenizer("clip_l")
    report = check_dataset(args.dir, store.entries, store, tokenizer)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"{report['images']} images in {len(report['folders'])} folder(s)")
    for name, folder in report["folders"].items():
        print(f"  {name}: {folder['images']} images x {folder['repeats']} repeats")
    for key in ("captions_missing", "captions_empty", "non_utf8", "unreadable"):
        if report[key]:
            print(f"{key.replace('_', ' ')}: {len(report[key])}, e.g. {report[key][0]}")
    if report["duplicates"]:
        print(f"duplicate images: {len(report['duplicates'])} groups, e.g. {report['duplicates'][0]}")
    top = list(report["tag_frequency"].items())[:15]
    print("top tags: " + ", ".join(f"{tag} ({n})" for tag, n in top))
    return 0


def _edit(args) -> int:
    from lora_trainer.dataset import tags as ops
    from lora_trainer.dataset.tag_filter import compile_filter

    store = _open(args, backup=args.backup)
    selected = store.select(compile_filter(args.filter))
    if args.action == "add":
        report = store.apply(f"add {args.tag}", selected, lambda t: ops.add_tag(t, args.tag, "front" if args.front else "back"))
    elif args.action == "remove":
        report = store.apply(f"remove {args.tag}", selected, lambda t: ops.remove_tag(t, args.tag))
    else:
        report = store.apply(f"replace {args.old} -> {args.new}", selected, lambda t: ops.replace_tag(t, args.old, args.new, regex=args.regex))
    saved = store.save()
    print(f"{len(selected)} of {len(store.captions)} images matched; {report.summary()}; {saved.summary()}")
    return 1 if saved.conflicts or saved.errors else 0


def _undo(args) -> int:
    store = _open(args)
    message = store.undo()
    if message is None:
        print("nothing to undo")
        return 0
    saved = store.save()
    print(f"{message}; {saved.summary()}")
    return 1 if saved.conflicts or saved.errors else 0


def _run(args) -> int:
    if args.action == "stats":
        return _stats(args)
    if args.action == "undo":
        return _undo(args)
    return _edit(args)
