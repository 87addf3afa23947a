"""Resumable run state: adapter weights, optimizer, LR schedule, RNG states, step, data order.

A state folder holds `adapters.safetensors` (the trainable tensors), `optimizer.pt` (optimizer
and scheduler state dicts, read back with `weights_only=True`) and `state.json` (step, RNG
states, data order, the config it was made with). It is written to a temp folder and renamed
into place, so an interrupted save never leaves a half state.

A multi-process run writes one state (rank 0 writes it): the trainer's own generators are the same
on every rank, the global RNGs (dropout) are kept per rank in `rank_rngs`, and `world_size`
says how many processes it needs to resume.
"""

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from lora_trainer.errors import UserError

STATE_FILES = ("adapters.safetensors", "optimizer.pt", "state.json")


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    position: int = 0  # index of the next batch within the epoch's order
    order: List[List[int]] = field(default_factory=list)  # this epoch's batches (item indices)
    torch_rng: Optional[List[int]] = None
    python_rng: Optional[Any] = None
    torch_global_rng: Optional[List[int]] = None  # states saved before `rank_rngs`: the one process's global RNG
    rank_rngs: List[Dict[str, List[int]]] = field(default_factory=list)  # per rank: global CPU (and CUDA) RNG
    world_size: int = 1  # processes of the run that saved it; a resume needs as many
    losses: List[float] = field(default_factory=list)  # recent losses, for the UI's plot after a resume
    config: Dict[str, Any] = field(default_factory=dict)


def capture_rng(generator: torch.Generator, rng: random.Random, state: RunState) -> None:
    state.torch_rng = generator.get_state().tolist()
    state.python_rng = _jsonable(rng.getstate())


def restore_rng(generator: torch.Generator, rng: random.Random, state: RunState) -> None:
    if state.torch_rng is not None:
        generator.set_state(torch.tensor(state.torch_rng, dtype=torch.uint8))
    if state.python_rng is not None:
        version, internal, gauss = state.python_rng
        rng.setstate((version, tuple(internal), gauss))


def process_rng(device: torch.device) -> Dict[str, List[int]]:
    """This process's global RNG states, which dropout draws from: the CPU's, and its CUDA device's."""
    saved = {"cpu": torch.get_rng_state().tolist()}
    if device.type == "cuda":
        saved["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return saved


def restore_process_rng(state: RunState, rank: int, device: torch.device) -> None:
    if state.rank_rngs:
        saved = state.rank_rngs[rank]
        torch.set_rng_state(torch.tensor(saved["cpu"], dtype=torch.uint8))
        if "cuda" in saved and device.type == "cuda":
            torch.cuda.set_rng_state(torch.tensor(saved["cuda"], dtype=torch.uint8), device)
    elif state.torch_global_rng is not None:
        torch.set_rng_state(torch.tensor(state.torch_global_rng, dtype=torch.uint8))


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def save_state(folder: Path, adapters_tensors: Dict[str, torch.Tensor], optimizer, scheduler, state: RunState) -> Path:
    """Write the state folder atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    temp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapters_tensors.items()}, str(temp / "adapters.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, temp / "optimizer.pt")
    (temp / "state.json").write_text(json.dumps(state.__dict__))
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    if folder.exists():
        folder.rename(old)
    temp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def read_run_state(folder: Path) -> RunState:
    """The step, RNG states and data order of a state folder (state.json only)."""
    path = Path(folder) / "state.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a resumable state folder (no state.json); "
                        f"point --resume at the run's state folder in its logs_dir")
    return RunState(**json.loads(path.read_text()))


def check_world_size(state: RunState, folder: Path, world_size: int) -> None:
    """A state resumes only with the number of processes that saved it: its batches are theirs."""
    if state.world_size != world_size:
        saved = f"{state.world_size} process" + ("es" if state.world_size != 1 else "")
        raise UserError(f"{folder} was saved by a run of {saved}; resume it with as many "
                        f"(train --num-processes {state.world_size}), not {world_size}")


def load_state(folder: Path):
    """(adapter tensors, optimizer+scheduler state dicts, RunState) of a state folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [name for name in STATE_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder} is not a resumable state folder (missing {', '.join(missing)}); "
                        f"point --resume at the run's state folder in its logs_dir")
    tensors = load_file(str(folder / "adapters.safetensors"))
    optim = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    state = RunState(**json.loads((folder / "state.json").read_text()))
    return tensors, optim, state
