"""`train CONFIG`: run one training job headless, with progress suited to a terminal or a log."""

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a LoRA from a TOML/JSON config",
                           description="Exit codes: 0 done, 2 bad config or input, 3 interrupted (resumable state saved), 1 other failure.")
    train.add_argument("config", type=Path, help="config file (.toml or .json)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. --set train.max_steps=500 (repeatable)")
    train.add_argument("--preset", help="apply a named preset under the file's settings")
    train.add_argument("--resume", type=Path, help="continue from a state folder (<logs_dir>/state)")
    train.add_argument("--quiet", action="store_true", help="only warnings, errors and the result")
    train.add_argument("--json-events", action="store_true", help="print every event as one JSON line on stdout")
    train.set_defaults(handler=_train)


def _listeners(args, config) -> list:
    from lora_trainer.training.listeners import ConsoleProgress, JsonEvents, TensorBoardWriter

    listeners = []
    if args.json_events:
        listeners.append(JsonEvents(sys.stdout))
    else:
        listeners.append(ConsoleProgress(sys.stderr, quiet=args.quiet))
    if config.output.tensorboard:
        listeners.append(TensorBoardWriter(config.logs_dir))
    return listeners


def _train(args) -> int:
    from lora_trainer.config import load_config
    from lora_trainer.config import preset
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.trainer import train

    base = preset(args.preset) if args.preset else None
    config = load_config(args.config, args.overrides, base=base)
    result = train(config, events=EventBus(_listeners(args, config)), resume=args.resume)
    if result.status == "done":
        return 0
    if result.status == "interrupted":
        print(f"interrupted at step {result.step}; resume with: --resume {result.state_dir}", file=sys.stderr)
        return 3
    return 1
