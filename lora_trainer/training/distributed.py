"""The processes a run is made of: one (WebUI, notebook, plain CLI) or several (data-parallel).

A single process uses `SingleProcess`: no accelerate import, no collective, no overhead; that is
what the WebUI and every run without a launcher get. Several processes are started by a launcher
(`accelerate launch`, torchrun, or `train --num-processes N`, which calls accelerate's launcher);
`processes_for` sees the launcher's environment and joins them through HF accelerate's
`Accelerator` (gloo on CPU, NCCL on GPUs). The trainer then needs only the operations below.

How gradients are combined (why not a DDP-wrapped UNet): only the small peft adapter tensors train
and the base is frozen. Wrapping the UNet (and the text encoders) in DistributedDataParallel would
change how the trainer, the exporter and the sampler reach the modules, needs `no_sync` for
gradient accumulation and `find_unused_parameters` for adapters that get no gradient (clip skip
leaves the text encoder's last layers unused). Instead each rank computes its share of the global
batch's mean loss (per-sample losses summed and divided by the *global* batch size), and after the
last micro-batch of a step one flat all-reduce (`Accelerator.reduce`, sum) adds up the adapter
gradients. The sum is then exactly the gradient of the global-batch mean, also when the shards are
uneven, and every rank takes the same optimizer step. With GradScaler the scaled gradients are
summed before unscaling, so every rank sees the same inf/NaN and skips or steps together.
The price is no overlap of communication with the backward pass, small for adapter-sized
gradients (one all-reduce per optimizer step; accumulation micro-batches communicate nothing).
"""

import os
import signal
import threading
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, ContextManager, Iterator, List, Protocol, Sequence

import torch

# How long a rank waits in a collective (all-reduce, barrier) before it fails. A crashed rank ends
# the others at once (the launcher stops them); this bounds a rank that hangs, and must exceed the
# longest work one rank does alone: rank 0 caching latents before the others start, or rendering samples.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)

# Environment variables through which launchers give the number of processes (torchrun/accelerate, MPI).
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class Processes(Protocol):
    """What the trainer asks of the processes of a run (see `SingleProcess` for the meaning)."""

    rank: int
    world_size: int
    is_main: bool
    device: torch.device

    def shard(self, count: int) -> List[int]: ...
    def sum(self, value: float) -> float: ...
    def any(self, flag: bool) -> bool: ...
    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None: ...
    def gather(self, value: Any) -> List[Any]: ...
    def barrier(self) -> None: ...
    def main_first(self) -> ContextManager: ...
    def close(self) -> None: ...


class SingleProcess:
    """The whole run in this process: every operation is the identity."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, device: torch.device):
        self.device = device

    def shard(self, count: int) -> List[int]:
        """Positions in a global batch of `count` items that this rank trains on."""
        return list(range(count))

    def sum(self, value: float) -> float:
        """`value` summed over the ranks (every rank gets the total)."""
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (a stop that all ranks take at the same step)."""
        return flag

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each `.grad` by the sum over the ranks."""

    def gather(self, value: Any) -> List[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        return [value]

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def main_first(self) -> ContextManager:
        """Rank 0 runs the block first (e.g. fills a disk cache), then the others."""
        return nullcontext()

    def close(self) -> None:
        """Leave the process group (at the end of the process that joined it)."""


class AcceleratedProcesses(SingleProcess):
    """One of several processes started by a launcher, joined through accelerate's `Accelerator`.

    Each rank trains on a strided slice of every global batch; `shard` gives its positions.
    """

    def __init__(self, cpu: bool = False, timeout: timedelta = COLLECTIVE_TIMEOUT):
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        # Precision is the trainer's (config train.mixed_precision); accelerate's own autocast stays off.
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])
        self.rank = int(self.accelerator.process_index)
        self.world_size = int(self.accelerator.num_processes)
        self.is_main = bool(self.accelerator.is_main_process)
        super().__init__(self.accelerator.device)

    def shard(self, count: int) -> List[int]:
        return list(range(self.rank, count, self.world_size))

    def sum(self, value: float) -> float:
        total = self.accelerator.reduce(torch.tensor([float(value)], dtype=torch.float64, device=self.device), reduction="sum")
        return float(total[0])

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0) > 0

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        params = list(params)
        if not params:
            return
        # One flat buffer: every gradient (zeros where this rank has none), then one flag per
        # parameter saying whether this rank had a gradient, so that a parameter no rank touched
        # keeps `.grad = None` (the optimizer then leaves it alone, as in a single process).
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float() for p in params]
        parts.append(torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=parts[0].device))
        total = self.accelerator.reduce(torch.cat(parts), reduction="sum")
        had_grad = total[-len(params):]
        offset = 0
        for index, param in enumerate(params):
            count = param.numel()
            if had_grad[index] > 0:
                param.grad = total[offset:offset + count].view_as(param).to(param.dtype)
            offset += count

    def gather(self, value: Any) -> List[Any]:
        from accelerate.utils import gather_object

        return list(gather_object([value]))

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def main_first(self) -> ContextManager:
        return self.accelerator.main_process_first()

    def close(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launched_world_size() -> int:
    """How many processes a launcher started for this run (1 without a launcher)."""
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def pick_device(requested: str = "auto") -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():  # ROCm builds report as CUDA too
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def processes_for(device: str = "auto") -> Processes:
    """This process's place in the run: alone, or one rank of a launched data-parallel run.

    Under a launcher each process takes the device accelerate gives it (its own GPU, by local
    rank); `device = "cpu"` keeps every process on the CPU.
    """
    if launched_world_size() > 1:
        return AcceleratedProcesses(cpu=device == "cpu")
    return SingleProcess(pick_device(device))


@contextmanager
def stop_on_signals(processes: Processes) -> Iterator[threading.Event]:
    """While a multi-process run trains, SIGINT/SIGTERM ask for a stop instead of raising.

    Ranks get the signal at different moments (the launcher forwards it to each); a
    KeyboardInterrupt in the middle of a collective would leave the others waiting. The event is
    checked once per step and agreed on by all ranks (`Processes.any`), so every rank stops after
    the same step and saves one consistent state. A second signal raises KeyboardInterrupt.
    A single process keeps Python's usual Ctrl-C behaviour (the event is never set).
    """
    requested = threading.Event()
    if processes.world_size == 1 or threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):  # noqa: ARG001
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

