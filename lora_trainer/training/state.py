"""Resumable run state: adapter weights, optimizer, LR schedule, RNG states, step, data order.

A state folder holds `adapters.safetensors` (the trainable tensors), `optimizer.safetensors`
(the optimizer's and scheduler's state dicts: tensors as tensors, the rest as JSON in the
file's metadata; no pickle) and `state.json` (step, RNG states, data order, the config it
was made with), written last. The folder is built under a temp name and renamed into place;
a process killed between the two renames of a replacement leaves a complete folder under a
temp name, which `recover_state` puts back, so a kill never loses the last good state.

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
from typing import Any, Dict, List, Optional, Tuple

import torch

from lora_trainer.errors import UserError
from lora_trainer.files import clean_stale_temp_files, is_stale, storage_error, temp_sibling

STATE_FILES = ("adapters.safetensors", "optimizer.safetensors", "state.json")
LEGACY_OPTIMIZER = "optimizer.pt"  # states written before optimizer.safetensors: read with weights_only=True


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


def encode_tree(value: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of a state dict; its tensors move into `tensors` (keyed `t<N>`)."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[key, encode_tree(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [encode_tree(item, tensors) for item in value]}
    if isinstance(value, list):
        return [encode_tree(item, tensors) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a training state")


def decode_tree(value: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """The inverse of `encode_tree`."""
    if isinstance(value, list):
        return [decode_tree(item, tensors) for item in value]
    if isinstance(value, dict):
        if "tensor" in value:
            return tensors[value["tensor"]]
        if "tuple" in value:
            return tuple(decode_tree(item, tensors) for item in value["tuple"])
        return {key: decode_tree(item, tensors) for key, item in value["dict"]}
    return value


def _optimizer_blob(optimizer, scheduler) -> bytes:
    from safetensors.torch import save

    tensors: Dict[str, torch.Tensor] = {}
    tree = encode_tree({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tensors)
    return save(tensors, metadata={"tree": json.dumps(tree)})


def _read_optimizer(folder: Path) -> Dict[str, Any]:
    from safetensors import safe_open

    path = folder / "optimizer.safetensors"
    if not path.is_file() and (folder / LEGACY_OPTIMIZER).is_file():
        return torch.load(folder / LEGACY_OPTIMIZER, map_location="cpu", weights_only=True)
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        tree = json.loads(handle.metadata()["tree"])
    return decode_tree(tree, tensors)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def save_state(folder: Path, adapters_tensors: Dict[str, torch.Tensor], optimizer, scheduler, state: RunState) -> Path:
    """Write the state folder atomically (temp folder, then rename); `StorageError` if the disk
    refuses, with the previous state left as it was."""
    from safetensors.torch import save

    folder = Path(folder)
    temp = temp_sibling(folder)
    try:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        _write(temp / "adapters.safetensors", save({k: v.detach().cpu().contiguous() for k, v in adapters_tensors.items()}))
        _write(temp / "optimizer.safetensors", _optimizer_blob(optimizer, scheduler))
        _write(temp / "state.json", json.dumps(state.__dict__).encode("utf-8"))  # last: a whole state.json marks it complete
        _swap_in(temp, folder)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise storage_error(folder, exc) from exc
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
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


def _swap_in(new: Path, folder: Path) -> None:
    """Replace `folder` by the complete folder `new` (two renames; see `recover_state`)."""
    old = temp_sibling(folder, "old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _complete_step(folder: Path) -> Optional[int]:
    """The step of a complete state folder, else None."""
    if not all((folder / name).is_file() for name in STATE_FILES):
        return None
    try:
        return int(json.loads((folder / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover_state(folder: Path) -> Optional[Path]:
    """Put back the newest complete state a killed writer left under a temp name, if `folder`
    itself is missing; then remove the leftovers. Returns the recovered folder or None."""
    folder = Path(folder)
    recovered = None
    if not folder.exists() and folder.parent.is_dir():
        prefix = f".{folder.name}."
        leftovers: List[Tuple[int, Path]] = []
        for path in folder.parent.iterdir():
            step = _complete_step(path) if path.name.startswith(prefix) and is_stale(path) else None
            if step is not None:
                leftovers.append((step, path))
        if leftovers:
            max(leftovers, key=lambda item: item[0])[1].rename(folder)
            recovered = folder
    clean_stale_temp_files(folder.parent)
    return recovered


def load_state(folder: Path):
    """(adapter tensors, optimizer+scheduler state dicts, RunState) of a state folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    recover_state(folder)
    missing = [name for name in STATE_FILES if not (folder / name).is_file()
               and not (name == "optimizer.safetensors" and (folder / LEGACY_OPTIMIZER).is_file())]
    if missing:
        raise UserError(f"{folder} is not a resumable state folder (missing {', '.join(missing)}); "
                        f"point --resume at the run's state folder in its logs_dir")
    tensors = load_file(str(folder / "adapters.safetensors"))
    optim = _read_optimizer(folder)
    state = RunState(**json.loads((folder / "state.json").read_text()))
    return tensors, optim, state
