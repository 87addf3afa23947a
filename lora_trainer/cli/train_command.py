"""`train CONFIG`: run one training job headless, with progress suited to a terminal or a log.

With `--num-processes N` (N > 1) this process starts N data-parallel copies of the same command
through accelerate's launcher and waits for them; `accelerate launch -m lora_trainer train ...`
does the same. Under a launcher only rank 0 prints progress and the result.
"""

import argparse
import sys
from pathlib import Path
from typing import List

EXIT_CODES = "Exit codes: 0 done, 2 bad config or input, 3 interrupted (resumable state saved), 1 other failure."


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a LoRA from a TOML/JSON config", description=EXIT_CODES)
    train.add_argument("config", type=Path, help="config file (.toml or .json)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. --set train.max_steps=500 (repeatable)")
    train.add_argument("--preset", help="apply a named preset under the file's settings")
    train.add_argument("--resume", type=Path, help="continue from a state folder (<logs_dir>/state)")
    train.add_argument("--quiet", action="store_true", help="only warnings, errors and the result")
    train.add_argument("--json-events", action="store_true", help="print every event as one JSON line on stdout")
    train.add_argument("--num-processes", type=int, default=1, metavar="N",
                       help="data-parallel training in N processes (one per GPU; accelerate's launcher); "
                            "each process takes train.batch_size images per step, so a step sees batch_size x N")
    train.set_defaults(handler=_train)


def worker_argv(args) -> List[str]:
    """This command line without --num-processes: what each launched process runs."""
    argv = ["train", str(args.config)]
    for override in args.overrides:
        argv += ["--set", override]
    if args.preset:
        argv += ["--preset", args.preset]
    if args.resume:
        argv += ["--resume", str(args.resume)]
    argv += ["--quiet"] * bool(args.quiet) + ["--json-events"] * bool(args.json_events)
    return argv


def _listeners(args) -> list:
    from lora_trainer.training.listeners import ConsoleProgress, JsonEvents

    if args.json_events:
        return [JsonEvents(sys.stdout)]
    return [ConsoleProgress(sys.stderr, quiet=args.quiet)]


def _load(args):
    from lora_trainer.config import load_config, preset, raise_for, validate

    base = preset(args.preset) if args.preset else None
    config = load_config(args.config, args.overrides, base=base)
    raise_for(validate(config))
    return config


def _train(args) -> int:
    from lora_trainer.training.distributed import launched_world_size

    from lora_trainer.errors import UserError

    config = _load(args)
    launched = launched_world_size()
    if args.num_processes < 1:
        raise UserError("--num-processes must be at least 1")
    if args.num_processes > 1 and launched not in (1, args.num_processes):
        raise UserError(f"--num-processes {args.num_processes}, but the launcher started {launched} processes; give one of the two")
    if args.num_processes > 1 and launched == 1:
        from lora_trainer.cli.launch import launch_processes

        if args.resume:
            from lora_trainer.training.state import check_world_size, read_run_state

            check_world_size(read_run_state(args.resume), args.resume, args.num_processes)

        return launch_processes(config, args.num_processes, worker_argv(args))
    return _run(args, config)


def _run(args, config) -> int:
    """Train in this process (alone, or as one rank of a launched run); rank 0's code is the run's."""
    from lora_trainer.errors import UserError
    from lora_trainer.training.distributed import processes_for
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.trainer import train

    processes = processes_for(config.train.device)
    try:
        result = train(config, events=EventBus(_listeners(args)), resume=args.resume, processes=processes)
    except UserError as exc:
        if processes.is_main:
            raise
        print(f"[rank {processes.rank}] error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        processes.close()
    if not processes.is_main:
        return 0  # rank 0 reports the outcome; a non-zero code here would make the launcher stop rank 0
    if result.status == "done":
        return 0
    if result.status == "interrupted":
        print(f"interrupted at step {result.step}; resume with: --resume {result.state_dir}", file=sys.stderr)
        return 3
    return 1
