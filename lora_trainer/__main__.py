"""Command line: `python -m lora_trainer <command> ...`.

Each command lives in its own module under `lora_trainer.cli` and registers itself with
`register(subparsers)`; its handler returns the process exit code.
Exit codes: 0 done, 2 bad config/input, 3 interrupted with resumable state, 1 other failure.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from lora_trainer.errors import UserError

# Command modules, imported lazily so that `tags` works without torch.
COMMAND_MODULES = [
    "lora_trainer.cli.model_commands",
    "lora_trainer.cli.tags_commands",
    "lora_trainer.cli.demo_command",
    "lora_trainer.cli.train_command",
    "lora_trainer.cli.ui_command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_trainer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("lora_trainer"):
                continue  # a command that is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
