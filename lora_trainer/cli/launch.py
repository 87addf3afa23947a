"""`train --num-processes N`: N data-parallel processes started by accelerate's own launcher.

This runs, from this process, exactly what the user could type:
`accelerate launch --multi_gpu --num_processes N --main_process_port PORT -m lora_trainer train ...`
(`--multi_gpu` selects torch's multi-process launcher; without GPUs the processes train on the
CPU and join over gloo). Being the launcher ourselves lets us pass rank 0's exit code through
(0 done, 2 bad config or input, 3 interrupted with a state, 1 other), where `accelerate launch`
reports every non-zero worker code as 1.
"""

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from lora_trainer.errors import UserError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for the rendezvous of the processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accelerate_argv(count: int, port: int, argv: Sequence[str]) -> List[str]:
    """`accelerate launch` arguments for `python -m lora_trainer ARGV` in `count` processes on this machine."""
    return ["--multi_gpu", "--num_processes", str(count), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "lora_trainer", *argv]


def exit_code_of(failures: Dict[int, Any]) -> int:
    """The run's exit code from the failed workers (rank -> failure with `.exitcode`): rank 0's if it failed."""
    failure = failures.get(0) or failures[min(failures)]
    code = int(getattr(failure, "exitcode", 1))
    return code if code in (1, 2, 3) else 1


def _uses_cpu(config) -> bool:
    import torch

    return config.train.device == "cpu" or not torch.cuda.is_available()


def _check_devices(config, count: int) -> None:
    import torch

    if _uses_cpu(config):
        return
    gpus = torch.cuda.device_count()
    if gpus < count:
        raise UserError(f"--num-processes {count} needs {count} GPUs (one per process) and this machine has {gpus}; "
                        f"use --num-processes {gpus}, or set train.device = \"cpu\"")


@contextmanager
def _environment(values: Dict[str, str]) -> Iterator[None]:
    """Set environment variables for the launched processes, restoring ours afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _mtime(path: Path) -> Optional[float]:
    return path.stat().st_mtime if path.exists() else None


def launch_processes(config, count: int, argv: Sequence[str]) -> int:
    """Run `python -m lora_trainer ARGV` in `count` processes; the run's exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from lora_trainer.training.outputs import OutputWriter

    output = OutputWriter(Path(config.output.dir), config.output.name, config.logs_dir, bool(config.output.overwrite))
    output.check_target()  # one clear message now rather than one per process
    _check_devices(config, count)
    env = {}
    if _uses_cpu(config) and "OMP_NUM_THREADS" not in os.environ:  # share the cores, not 1 thread each (torchrun's default)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
    state_file = output.state_dir / "state.json"
    saved_before = _mtime(state_file)
    launch_args = launch_command_parser().parse_args(accelerate_argv(count, free_port(), argv))
    try:
        with _environment(env):
            launch_command(launch_args)
    except ChildFailedError as failed:
        return exit_code_of(failed.failures)
    except (SignalException, KeyboardInterrupt):
        # The launcher forwarded the signal and waited for the processes: they stop together after
        # a step and rank 0 writes the state (and says so). No new state: they were stopped before.
        if _mtime(state_file) != saved_before:
            return 3
        print("interrupted before a resumable state was saved", file=sys.stderr)
        return 1
    return 0
